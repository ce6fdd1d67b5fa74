"""MPI through mpi4py: ``mpiexec -n N python script.py``.

Every collective is MPI's non-blocking form (``Iallreduce``, ``Iallgather``, ``Ibcast``,
``Ibarrier``) on a private duplicate of ``COMM_WORLD``, polled until a deadline, so a dead or
stuck rank becomes a :class:`~portanet.distributed.comm.DistributedError` after ``timeout``
seconds instead of a hang. (MPI cannot cancel a started collective: after that error the
communicator is unusable, and ``abort`` ends the job.)

Buffers. NumPy arrays go to MPI as they are, reduced in place where they are writeable and
contiguous; torch CPU tensors as ``.numpy()`` views of their memory (no copy). CuPy arrays and
torch CUDA tensors go directly where the MPI library is CUDA-aware, and through host memory
otherwise. How that is known: mpi4py 4.1 has no wrapper of Open MPI's
``MPIX_Query_cuda_support``; MPI 4.1 (section 11.4.3, "memory allocation kinds") has every
library list what memory it takes in the info key ``mpi_memory_alloc_kinds`` of
``COMM_WORLD``, where ``cuda`` or ``cuda:device`` means CUDA device buffers (MPICH 5.0 here
reports ``mpi,system``: host memory only). ``PORTANET_MPI_CUDA_AWARE=1`` (or ``0``) overrides
the answer for libraries that do not report it. JAX, array-api-strict and anything else are
staged through host memory and come back on their device.

Examples:
    Under ``mpiexec -n 2 python script.py``::

        from portanet.distributed.mpi import MPICommunicator
        comm = MPICommunicator(timeout=30)
        with comm.stop_all_on_error():
            total = comm.allreduce_sum(np.full(3, comm.rank + 1.0))   # [3., 3., 3.]
"""

from __future__ import annotations

import os
import time
from typing import Any

import array_api_compat as compat
import numpy as np

from ..backend import adapter_of
from .comm import (
    MPI_HINT,
    Communicator,
    DistributedError,
    check_timeout,
    host_buffer,
    like_input,
)

__all__ = ["MPICommunicator", "cuda_aware", "kinds_take_cuda"]

ABORT_GRACE_SECONDS = 0.3
"""How long an aborting rank waits after its message before MPI_Abort (measured: without it
mpiexec dropped the message of a rank that aborted while another was aborting too)."""


def _import_mpi():
    """mpi4py's MPI module (importing it starts MPI), or an ImportError that says the fix."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as err:  # no mpi4py, or no MPI library for it
        raise ImportError(f"the MPI communicator needs mpi4py and an MPI library ({err}). "
                          f"Install them with: {MPI_HINT}") from err
    return MPI


def cuda_aware(comm: Any = None, environ: Any = None) -> bool:
    """Whether the MPI library takes CUDA device buffers (see the module's notes).

    Args:
        comm: an mpi4py communicator whose info to read; ``COMM_WORLD`` when None.
        environ: where to read ``PORTANET_MPI_CUDA_AWARE``; ``os.environ`` when None.
    """
    env = os.environ if environ is None else environ
    forced = env.get("PORTANET_MPI_CUDA_AWARE", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    MPI = _import_mpi()
    query = getattr(MPI, "Query_cuda_support", None)  # a future mpi4py may wrap MPIX's query
    if query is not None:
        return bool(query())
    info = (comm or MPI.COMM_WORLD).Get_info()
    try:
        return kinds_take_cuda(info.Get("mpi_memory_alloc_kinds") or "")
    finally:
        info.Free()


def kinds_take_cuda(kinds: str) -> bool:
    """Whether an ``mpi_memory_alloc_kinds`` value lists CUDA device memory: ``cuda`` (every
    CUDA kind) or ``cuda:device``; ``cuda:host`` alone is pinned host memory only.

    Examples:
        >>> kinds_take_cuda("mpi,system"), kinds_take_cuda("system,cuda:device")
        (False, True)
    """
    return any(k.strip().lower() in ("cuda", "cuda:device") for k in kinds.split(","))


class MPICommunicator(Communicator):
    """Collectives over mpi4py (``name`` "mpi"); see the module's notes.

    Args:
        comm: the mpi4py communicator of the processes that train together; ``COMM_WORLD``
            when None. It is duplicated, so portanet's messages never meet the script's own.
        timeout: seconds a collective waits for the other ranks before it raises
            :class:`~portanet.distributed.comm.DistributedError`.
    """

    name = "mpi"

    def __init__(self, comm: Any = None, *, timeout: float = 60.0):
        self.timeout = check_timeout(timeout)
        MPI = self._MPI = _import_mpi()
        base = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = base.Get_rank(), base.Get_size()
        self._comm, request = base.Idup()
        self._wait(request.Test, "the start of the MPI communicator (duplicating the "
                                 "communicator: every rank must create one)")
        self.cuda_aware = cuda_aware(self._comm)

    # -- buffers -------------------------------------------------------------------------------
    def _on_device(self, a) -> bool:
        """A CUDA buffer that this MPI takes directly."""
        if not self.cuda_aware:
            return False
        return compat.is_cupy_array(a) or (compat.is_torch_array(a) and a.device.type == "cuda")

    def _buffer(self, a):
        """What MPI reads and writes for ``a``: (buffer, back), ``back(buffer)`` being the
        result in ``a``'s namespace and device."""
        if type(a) is np.ndarray and a.flags.c_contiguous and a.flags.writeable:
            return a, _itself  # the common case first: MPI takes it as it is
        if self._on_device(a):
            xp = compat.array_namespace(a)
            buf = a if _contiguous(a) else xp.asarray(a, copy=True)
            # MPI reads the memory from the host thread: the kernels writing it must be done
            adapter_of(a).synchronize(compat.device(a), buf)
            return buf, _itself
        n = host_buffer(a)
        return n, _itself if isinstance(a, np.ndarray) else (lambda b: like_input(b, a))

    # -- collectives ---------------------------------------------------------------------------
    def _allreduce_sum(self, a, what):
        buf, back = self._buffer(a)
        self._wait(self._comm.Iallreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM).Test, what)
        return back(buf)

    def _allgather(self, a, what):
        buf, back = self._buffer(a)
        if self._on_device(a):
            xp = compat.array_namespace(a)
            out = xp.empty((self.size, *a.shape), dtype=a.dtype, device=compat.device(a))
        else:
            out = np.empty((self.size, *buf.shape), dtype=buf.dtype)
        self._wait(self._comm.Iallgather(buf, out).Test, what)
        return back(out)

    def _broadcast(self, a, root, what):
        buf, back = self._buffer(a)
        self._wait(self._comm.Ibcast(buf, root=root).Test, what)
        return back(buf)

    def _barrier(self, what):
        self._wait(self._comm.Ibarrier().Test, what)

    def _end_all(self, code):
        # MPI_Abort ends every process of COMM_WORLD (mpiexec reports the code). mpiexec
        # forwards each process's stderr through a pipe and stops forwarding when it kills
        # the job: a moment first lets the message just written reach the user.
        time.sleep(ABORT_GRACE_SECONDS)
        self._MPI.COMM_WORLD.Abort(code)

    def close(self):
        comm, self._comm = getattr(self, "_comm", None), None
        if comm is not None and not self._MPI.Is_finalized():
            try:
                comm.Free()
            except self._MPI.Exception as err:
                raise DistributedError(f"rank {self.rank} of {self.size} could not free the "
                                       f"MPI communicator: {err}") from err


def _itself(b):
    return b


def _contiguous(a) -> bool:
    if compat.is_torch_array(a):
        return a.is_contiguous()
    return bool(a.flags.c_contiguous)
