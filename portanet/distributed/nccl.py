"""NCCL for CuPy arrays through ``cupyx.distributed``: one GPU per process.

``cupyx.distributed.init_process_group(n_devices, rank, host=, port=, use_mpi=)`` makes the
NCCL communicator (``NCCLBackend``); rank 0 exchanges NCCL's unique id through a small TCP
store it starts on ``host:port`` (``CUPYX_DISTRIBUTED_HOST`` / ``CUPYX_DISTRIBUTED_PORT``, by
default ``MASTER_ADDR`` or 127.0.0.1 and port 13333; not ``MASTER_PORT``, where torchrun's own
store listens), or, under ``mpiexec``, through MPI (``use_mpi=True``, in CuPy versions that
have it). That start has no timeout of its own: every rank must create its communicator.

NCCL collectives are queued on the current CUDA stream and return at once; the host then polls
a CUDA event recorded after the collective until a deadline (and NCCL's asynchronous error
check), and on a timeout aborts the NCCL communicator (``ncclCommAbort``, so the kernels stop
waiting) and raises :class:`~portanet.distributed.comm.DistributedError`; the communicator is
unusable after that, and ``abort`` ends the job.

Buffers. CuPy arrays on the communicator's GPU go to NCCL directly (reduced in place); other
arrays are moved there (DLPack where they already are on that GPU, host memory otherwise) and
the result comes back on their device.

This module imports without CuPy; the communicator refuses to start without it, with the
command that installs it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
from typing import Any

import array_api_compat as compat
import numpy as np

from ..backend import adapter_of
from ..devices import to_backend
from .comm import (
    CUPY_HINT,
    Communicator,
    DistributedError,
    check_timeout,
    is_cuda_device,
    launch_environment,
)

__all__ = ["NCCLCommunicator"]

DEFAULT_PORT = 13333  # cupyx.distributed's own default


def _import_cupyx_distributed():
    try:
        import cupy
        import cupyx.distributed as cupyx_distributed
        from cupy.cuda import nccl
    except ImportError as err:
        raise ImportError(f"the NCCL communicator needs CuPy with NCCL ({err}). Install it "
                          f"with: {CUPY_HINT}") from err
    if not getattr(nccl, "available", False):
        raise ImportError("this CuPy finds no NCCL library. Install CuPy's NCCL (pip install "
                          "nvidia-nccl-cu12, or conda install -c conda-forge nccl), or use "
                          "communicator('torch') or communicator('mpi').")
    return cupy, cupyx_distributed


def _gpu_index(device: Any, local_rank: int, count: int) -> int:
    """The GPU of this rank: the device hint's index, else ``local_rank % count``."""
    if device is None:
        return local_rank % count
    if isinstance(device, bool):
        raise ValueError(f"device={device!r} is not a GPU; pass 'cuda:N', N or a CuPy Device.")
    if isinstance(device, int):
        index = device
    elif isinstance(device, str):
        head, _, tail = device.strip().lower().partition(":")
        if head not in ("cuda", "gpu") or (tail and not tail.isdigit()):
            raise ValueError(f"the NCCL communicator runs on a CUDA GPU, received "
                             f"device={device!r}. Pass 'cuda', 'cuda:N', N or a CuPy Device, "
                             "or use communicator('mpi') / communicator('torch') on the CPU.")
        index = int(tail) if tail else local_rank % count
    elif is_cuda_device(device):  # cupy.cuda.Device (.id), torch.device (.index)
        index = getattr(device, "id", None)
        index = getattr(device, "index", None) if index is None else index
        index = local_rank % count if index is None else int(index)
    else:
        raise ValueError(f"the NCCL communicator runs on a CUDA GPU, received "
                         f"device={device!r}. Pass 'cuda:N', N or a CuPy Device.")
    if not 0 <= index < count:
        raise ValueError(f"device={device!r} asks for GPU {index}, but this process sees "
                         f"{count} GPU(s) (0 to {count - 1}).")
    return index


class NCCLCommunicator(Communicator):
    """Collectives over NCCL for CuPy (``name`` "nccl"); see the module's notes.

    Args:
        device: this rank's GPU: "cuda:N", N, a CuPy Device; None or "cuda": the GPU of the
            launcher's local rank.
        timeout: seconds a collective waits for the other ranks before it raises
            :class:`~portanet.distributed.comm.DistributedError`.
        host, port: where rank 0's TCP store listens for the start (see the module's notes).
    """

    name = "nccl"

    def __init__(self, *, device: Any = None, timeout: float = 60.0, host: str | None = None,
                 port: int | None = None):
        self.timeout = check_timeout(timeout)
        if device is not None and not isinstance(device, int) and not is_cuda_device(device):
            _gpu_index(device, 0, 1)  # raises the message for a non-CUDA device
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                                 or not 0 < port < 65536):
            raise ValueError(f"port must be a TCP port number (1 to 65535), received {port!r}.")
        cupy, cupyx_distributed = _import_cupyx_distributed()
        self._cupy = cupy
        env = launch_environment()
        count = cupy.cuda.runtime.getDeviceCount()
        if count == 0:
            raise DistributedError("the NCCL communicator needs a CUDA GPU, and this process "
                                   "sees none. Use communicator('mpi') or ('torch') on the CPU.")
        self.device = cupy.cuda.Device(_gpu_index(device, env.local_rank, count))
        self.device.use()
        if env.size < 1:
            raise DistributedError(
                f"the launcher gave rank {env.rank} but no process count (a bare PMIx launch): "
                "NCCL needs both. Launch with mpiexec -n N or torchrun, or use "
                "communicator('mpi'), which asks MPI.")
        self.rank, self.size = env.rank, env.size
        self._launch = env.kind
        host = host or os.environ.get("CUPYX_DISTRIBUTED_HOST") or os.environ.get(
            "MASTER_ADDR", "127.0.0.1")
        port = port or int(os.environ.get("CUPYX_DISTRIBUTED_PORT", DEFAULT_PORT))
        options: dict[str, Any] = {"host": host, "port": port}
        if "use_mpi" in inspect.signature(cupyx_distributed.init_process_group).parameters:
            options["use_mpi"] = env.kind == "mpi"
        try:
            self._backend = cupyx_distributed.init_process_group(self.size, self.rank,
                                                                 **options)
        except Exception as err:
            raise DistributedError(
                f"rank {self.rank} of {self.size} could not start NCCL through cupyx "
                f"({host}:{port}): {type(err).__name__}: {err}") from err
        # NCCLBackend keeps its NcclCommunicator private; abort and the error check need it
        self._nccl = getattr(self._backend, "_comm", None)

    # -- buffers -------------------------------------------------------------------------------
    def _array(self, a, writes: bool):
        """(CuPy array on this GPU, back): ``back(r)`` is the result like ``a``."""
        cupy = self._cupy
        if isinstance(a, cupy.ndarray) and a.device.id == self.device.id:
            buf = a if a.flags.c_contiguous else cupy.ascontiguousarray(a)
            return buf, lambda r: r
        with self.device:
            buf = to_backend(a, "cupy", self.device)
            if writes and (compat.is_jax_array(a) or not buf.flags.c_contiguous):
                buf = cupy.array(buf, order="C", copy=True)  # never write into a JAX buffer
        name, where = adapter_of(a).name, compat.device(a)
        return buf, lambda r: to_backend(r, name, where)

    def _enqueued(self, what: str) -> None:
        """Wait until the collective just queued on the current stream has finished."""
        event = self._cupy.cuda.Event(block=False, disable_timing=True)
        event.record()

        def done() -> bool:
            if self._nccl is not None:
                self._nccl.check_async_error()  # raises NcclError for a broken peer
            return event.done

        try:
            self._wait(done, what)
        except DistributedError:
            self._abort_nccl()
            raise
        except Exception as err:  # cupy.cuda.nccl.NcclError
            self._abort_nccl()
            raise self._lost_peer(what, err) from err

    def _abort_nccl(self) -> None:
        if self._nccl is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to release
                self._nccl.abort()
            self._nccl = None

    # -- collectives ---------------------------------------------------------------------------
    def _allreduce_sum(self, a, what):
        buf, back = self._array(a, writes=True)
        with self.device:
            self._backend.all_reduce(buf, buf, "sum")
            self._enqueued(what)
        return back(buf)

    def _allgather(self, a, what):
        buf, back = self._array(a, writes=False)
        with self.device:
            out = self._cupy.empty((self.size, *buf.shape), dtype=buf.dtype)
            self._backend.all_gather(buf, out, buf.size)
            self._enqueued(what)
        return back(out)

    def _broadcast(self, a, root, what):
        buf, back = self._array(a, writes=True)
        with self.device:
            self._backend.broadcast(buf, root)
            self._enqueued(what)
        return back(buf)

    def _barrier(self, what):
        # a one-element all-reduce rather than cupyx's barrier (a TCP-store round without a
        # timeout): the same deadline as every other collective
        self._allreduce_sum(np.zeros(1, dtype=np.int32), what)

    def _end_all(self, code):
        self._abort_nccl()
        if self._launch == "mpi" and "mpi4py.MPI" in sys.modules:  # cupyx started MPI
            sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)
        os._exit(code)

    def close(self):
        nccl, self._nccl = getattr(self, "_nccl", None), None
        if nccl is not None:
            nccl.destroy()
