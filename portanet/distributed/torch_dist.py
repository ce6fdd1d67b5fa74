"""torch.distributed: ``torchrun --nproc-per-node N script.py`` (gloo on CPU, NCCL on CUDA).

The process group is torch's own: ``init_process_group(backend, init_method="env://")`` with
the rank, size and rendezvous (``MASTER_ADDR``, ``MASTER_PORT``) that torchrun sets, unless the
script already made one (then it is used as it is, and left open by ``close``).

Every collective is started with ``async_op=True`` and waited for with
``work.wait(timeout=...)``; on CUDA, where that only orders the streams, a CUDA event is then
polled until the deadline. torch's errors become
:class:`~portanet.distributed.comm.DistributedError`. What torch reports (gloo, 2 ranks on
loopback, torch 2.13, measured): a peer that died gives "Connection closed by peer" (or
"Connection reset by peer") within milliseconds; a peer that is stuck gives "Operation timed
out!" after the timeout. On NCCL torch's own watchdog also ends a process whose collective
outlives the group's timeout (the same ``timeout``).

Buffers. torch tensors on the group's device go in as they are (reduced in place); NumPy arrays
through ``torch.from_numpy`` (no copy on gloo); everything else through host memory, back on its
device.

Teardown. A group this module made is destroyed by ``close()`` or, failing that, at the
interpreter's exit (an ``atexit`` handler, waiting at most 5 s for torch): left to Python's
own teardown, gloo's threads can abort the finished process.

Examples:
    Under ``torchrun --nproc-per-node 2 script.py``::

        from portanet.distributed.torch_dist import TorchCommunicator
        comm = TorchCommunicator(timeout=30)           # comm.name == "torch-gloo"
        with comm.stop_all_on_error():
            total = comm.allreduce_sum(torch.full((3,), comm.rank + 1.0))   # [3., 3., 3.]
"""

from __future__ import annotations

import atexit
import datetime
import os
import threading
from typing import Any

import numpy as np

from .comm import (
    TORCH_HINT,
    Communicator,
    DistributedError,
    check_timeout,
    host_buffer,
    is_cuda_device,
    launch_environment,
    like_input,
)

__all__ = ["TorchCommunicator"]


def _import_torch_distributed():
    try:
        import torch
        import torch.distributed as dist
    except ImportError as err:
        raise ImportError(f"the torch communicator needs PyTorch ({err}). Install it with: "
                          f"{TORCH_HINT}") from err
    if not dist.is_available():
        raise ImportError(f"this PyTorch build ({torch.__version__}) has no torch.distributed. "
                          f"Install a standard build: {TORCH_HINT}")
    return torch, dist


class TorchCommunicator(Communicator):
    """Collectives over torch.distributed (``name`` "torch-gloo" or "torch-nccl").

    Args:
        device: the model's device (a hint): CUDA -> the NCCL backend on that GPU (``"cuda"``
            without an index: the GPU of ``LOCAL_RANK``); anything else -> gloo on the CPU.
        timeout: seconds a collective (and the start, waiting for the other ranks) waits
            before it raises :class:`~portanet.distributed.comm.DistributedError`.
    """

    def __init__(self, *, device: Any = None, timeout: float = 60.0):
        self.timeout = check_timeout(timeout)
        self._torch, dist = _import_torch_distributed()
        self._dist = dist
        self._wait_for = datetime.timedelta(seconds=self.timeout)
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            backend = "nccl" if is_cuda_device(device) else "gloo"
            self.device = self._device(backend, device)
            self._start(backend)
            # A group left to the interpreter's teardown can abort the process: gloo's worker
            # threads still hold finished work (and its tensors), and freeing those once
            # Python is half gone ends in "terminate called without an active exception"
            # (SIGABRT, seen on a loaded 2-core machine after the job had finished; pytorch
            # PR 179291). So the group this object made is destroyed at exit, while Python
            # is whole; ``close`` does it sooner.
            atexit.register(self._close_at_exit)
        else:  # the script's own group: its backend decides where tensors go
            backend = str(dist.get_backend()).lower()
            if "," in backend or ":" in backend:  # "cpu:gloo,cuda:nccl": one per device type
                backend = "nccl" if "nccl" in backend and is_cuda_device(device) else "gloo"
            self.device = self._device(backend, device)
        self.name = f"torch-{backend}"
        self.rank, self.size = dist.get_rank(), dist.get_world_size()

    def _device(self, backend: str, hint: Any):
        torch = self._torch
        if backend != "nccl":
            return torch.device("cpu")
        if not torch.cuda.is_available():
            raise DistributedError(
                f"the NCCL backend needs CUDA, but this torch ({torch.__version__}) sees no "
                f"usable GPU (device={hint!r}). Train on device='cpu' (gloo), or install a CUDA "
                "build of torch on a machine with an NVIDIA GPU.")
        if isinstance(hint, int) and not isinstance(hint, bool):
            hint = f"cuda:{hint}"
        dev = torch.device(hint if isinstance(hint, (str, torch.device)) else "cuda")
        if dev.index is None:
            dev = torch.device("cuda", launch_environment().local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
        return dev

    def _start(self, backend: str) -> None:
        env = launch_environment()
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if env.kind is None or missing:
            raise DistributedError(
                "torch.distributed needs the launch variables RANK, WORLD_SIZE, MASTER_ADDR "
                f"and MASTER_PORT (missing: {missing or ['RANK', 'WORLD_SIZE']}). Launch with "
                "torchrun --nproc-per-node N script.py, which sets them, or set them yourself.")
        try:
            self._dist.init_process_group(backend, init_method="env://", rank=env.rank,
                                          world_size=env.size, timeout=self._wait_for)
        except RuntimeError as err:  # DistStoreError, DistNetworkError: no rendezvous
            raise DistributedError(
                f"rank {env.rank} of {env.size} could not join the torch.distributed group "
                f"({backend}, {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}) within "
                f"{self.timeout:.0f} s: {str(err).strip()[:300]}. Every rank must start; check "
                "that MASTER_ADDR/MASTER_PORT reach rank 0.") from err

    # -- buffers -------------------------------------------------------------------------------
    def _tensor(self, a):
        """(tensor on the group's device, back): ``back(t)`` is the result like ``a``."""
        torch = self._torch
        if isinstance(a, torch.Tensor):
            t = a.detach()
            if t.device != self.device or not t.is_contiguous():
                t = t.to(self.device).contiguous()
            return t, (lambda r: r) if a.device == self.device else (lambda r: r.to(a.device))
        t = torch.from_numpy(host_buffer(a)).to(self.device)  # a view of the host buffer on gloo
        if isinstance(a, np.ndarray):
            return t, lambda r: r.cpu().numpy()
        return t, lambda r: like_input(r.cpu().numpy(), a)

    def _run(self, start, what: str) -> None:
        """Start a collective (``start()`` returns torch's Work) and wait for it."""
        try:
            work = start()
            if work.wait(timeout=self._wait_for) is False:
                raise self._timed_out(what, self.timeout)
            if self.device.type == "cuda":
                # NCCL's wait only makes the current stream wait: poll the GPU itself, so a
                # stuck peer is a DistributedError here rather than a hang at the next read
                finished = self._torch.cuda.Event()
                finished.record()
                self._wait(finished.query, what)
        except RuntimeError as err:
            if isinstance(err, DistributedError):
                raise
            if "timed out" in str(err).lower() or "timeout" in str(err).lower():
                raise self._timed_out(what, self.timeout,
                                      f" (torch: {str(err).strip()[:200]})") from err
            raise self._lost_peer(what, err) from err

    # -- collectives ---------------------------------------------------------------------------
    def _allreduce_sum(self, a, what):
        t, back = self._tensor(a)
        self._run(lambda: self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, async_op=True),
                  what)
        return back(t)

    def _allgather(self, a, what):
        t, back = self._tensor(a)
        out = self._torch.empty((self.size, *t.shape), dtype=t.dtype, device=self.device)
        # one row of `out` per rank: views, so the gathered tensor is written in place
        self._run(lambda: self._dist.all_gather(list(out.unbind(0)), t, async_op=True), what)
        return back(out)

    def _broadcast(self, a, root, what):
        t, back = self._tensor(a)
        self._run(lambda: self._dist.broadcast(t, src=root, async_op=True), what)
        return back(t)

    def _barrier(self, what):
        # a one-element all-reduce: gloo and NCCL alike, and with the same timeout
        flag = self._torch.zeros(1, dtype=self._torch.int32, device=self.device)
        self._run(lambda: self._dist.all_reduce(flag, async_op=True), what)

    def _end_all(self, code):
        # Tear the group down where that is quick (NCCL then stops the peers' kernels); a
        # group busy with a hung collective may block, so wait for it at most a second.
        # os._exit follows: the sockets close, the peers' next collective fails at once, and
        # torchrun ends the other workers when one exits with an error.
        closer = threading.Thread(target=self._destroy, daemon=True)
        closer.start()
        closer.join(1.0)
        os._exit(code)

    def _destroy(self):
        try:
            if self._dist.is_initialized():
                self._dist.destroy_process_group()
        except Exception:  # the group is already broken: the process exits anyway
            pass

    def _close_at_exit(self):
        # at most a few seconds: a peer that never finished its last collective must not
        # keep this process from exiting (the torchtitan deadlock at destroy_process_group)
        if self._owns_group:
            closer = threading.Thread(target=self._destroy, daemon=True)
            closer.start()
            closer.join(5.0)
        self._owns_group = False

    def close(self):
        atexit.unregister(self._close_at_exit)
        if self._owns_group and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._owns_group = False

