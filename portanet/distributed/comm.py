"""Communicators: the few collectives data-parallel training needs, over engines that exist.

N processes train one model. After each backward pass they sum their gradients, at the start
they take rank 0's parameters, and now and then they compare small Python objects. A
*communicator* is the handle that does this, one small adapter per engine people already launch
with; portanet does not carry a transport of its own::

    name        engine                                    launched by
    local       none: one process, collectives return     python script.py
                their input
    mpi         mpi4py (mpi.py)                           mpiexec -n N python script.py
    torch-gloo  torch.distributed, gloo (CPU)             torchrun --nproc-per-node N ...
    torch-nccl  torch.distributed, NCCL (CUDA tensors)    torchrun --nproc-per-node N ...
    nccl        cupyx.distributed, NCCL (CuPy arrays)     either

The contract every communicator keeps (``rank`` r of ``size`` N)::

    allreduce_sum(a)      sum_r a_r, elementwise          a's namespace, dtype, device, shape
    allgather(a)          stack_r a_r  -> (N, *a.shape)   in rank order
    broadcast(a, root)    a_root on every rank
    allgather_object(o)   [o_0, ..., o_{N-1}]             small picklable objects
    broadcast_object(o)   o_root
    barrier()             returns once every rank has arrived

Arrays of any backend are accepted (NumPy, torch, CuPy, JAX, array-api-strict); what an engine
cannot take directly is staged through host memory and comes back on the input's device.
Callers treat an array handed to ``allreduce_sum`` or ``broadcast`` as consumed: the result may
live in its buffer.

Faults. Every collective waits at most ``timeout`` seconds for the other ranks, then raises
:class:`DistributedError` naming the rank, the collective (the ``what`` label the caller
passes) and the wait. ``stop_all_on_error()`` turns an exception on one rank into the end of
every rank (``abort``), so a job never hangs on a rank that already failed.

Examples:
    >>> import numpy as np
    >>> from portanet.distributed.comm import launch_environment
    >>> from portanet.distributed.launch import communicator
    >>> launch_environment().kind is None          # not started by mpiexec or torchrun
    True
    >>> comm = communicator("local")
    >>> comm.name, comm.rank, comm.size
    ('local', 0, 1)
    >>> comm.allreduce_sum(np.array([1.0, 2.0])).tolist()
    [1.0, 2.0]
    >>> comm.allgather(np.array([1.0, 2.0])).shape
    (1, 2)
    >>> comm.allgather_object({"seed": 7})
    [{'seed': 7}]
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import array_api_compat as compat
import numpy as np

from .._typing import Array
from ..backend import adapter_of
from ..devices import to_numpy

__all__ = [
    "Communicator", "DistributedError", "LaunchEnvironment", "LocalCommunicator",
    "launch_environment",
]

MPI_HINT = ('pip install "portanet[mpi]"  (mpi4py and the mpich wheel; or, with conda: '
            'conda install -c conda-forge mpi4py mpich)')
TORCH_HINT = ('pip install torch  (CPU-only build: pip install torch --index-url '
              'https://download.pytorch.org/whl/cpu)')
CUPY_HINT = 'pip install "portanet[cuda]"  (cupy-cuda12x, which brings NCCL through cupyx)'


class DistributedError(RuntimeError):
    """A collective that could not complete: a rank died, hangs, or the launch is incomplete;
    or ranks that cannot train together (they disagree on what to train).

    ``on_every_rank``: True when every rank raises this same error (a check whose answer they
    all computed from the same gathered values): :meth:`Communicator.stop_all_on_error` then
    lets it propagate on each rank instead of aborting the job, so every rank reports it.
    """

    def __init__(self, message: str, on_every_rank: bool = False):
        super().__init__(message)
        self.on_every_rank = on_every_rank


# -- the launch ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchEnvironment:
    """Who started this process: ``kind`` ("mpi", "torchrun" or None), and its place in the job.

    ``rank`` is this process's index among ``size`` processes; ``local_rank`` its index among
    those on this machine (the GPU it should use). ``size`` is 0 where an MPI launcher gives
    a rank but no size (a bare PMIx launch); the MPI communicator then knows it.
    """

    kind: str | None
    rank: int
    size: int
    local_rank: int


# (rank, size, local rank) variables per launcher, in the order they are tried. MPICH's hydra
# (the mpich wheel's mpiexec) sets PMI_RANK, PMI_SIZE and MPI_LOCALRANKID (checked: `mpiexec -n 2
# env`); Open MPI sets OMPI_COMM_WORLD_* (and PMIX_RANK); other PMIx launchers set PMIX_RANK,
# with Slurm's task count and local id under srun --mpi=pmix.
_MPI_VARIABLES = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("PMIX_RANK", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def launch_environment(environ: Mapping[str, str] | None = None) -> LaunchEnvironment:
    """Read the launcher's variables: torchrun first, then MPI, else one process.

    torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and ``MASTER_ADDR`` /
    ``MASTER_PORT`` for the rendezvous); MPI launchers set ``PMI_RANK`` / ``PMI_SIZE`` (MPICH),
    ``OMPI_COMM_WORLD_RANK`` / ``_SIZE`` / ``_LOCAL_RANK`` (Open MPI) or ``PMIX_RANK``. This only
    reads the environment: it never imports mpi4py (importing it starts MPI).

    Args:
        environ: the variables to read; ``os.environ`` when None.

    Returns:
        A :class:`LaunchEnvironment`; ``kind`` None, rank 0 of 1, when no launcher is found.

    Examples:
        >>> launch_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        LaunchEnvironment(kind='torchrun', rank=1, size=2, local_rank=1)
        >>> launch_environment({"PMI_RANK": "0", "PMI_SIZE": "4"})
        LaunchEnvironment(kind='mpi', rank=0, size=4, local_rank=0)
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return _launch("torchrun", env, "RANK", "WORLD_SIZE", "LOCAL_RANK")
    for rank, size, local in _MPI_VARIABLES:
        if rank in env:
            if size not in env:  # PMIx has no size variable of its own; MPI knows it
                return LaunchEnvironment("mpi", _int(env, rank), 0, _int(env, local, 0))
            return _launch("mpi", env, rank, size, local)
    return LaunchEnvironment(None, 0, 1, 0)


def _launch(kind: str, env: Mapping[str, str], rank: str, size: str,
            local: str) -> LaunchEnvironment:
    found = LaunchEnvironment(kind, _int(env, rank), _int(env, size), _int(env, local, 0))
    if found.size < 1 or not 0 <= found.rank < found.size:
        raise DistributedError(
            f"the {kind} launch variables are inconsistent: {rank}={env[rank]!r}, "
            f"{size}={env[size]!r} (expected 0 <= rank < size). Unset stray variables, or "
            "launch with mpiexec -n N / torchrun --nproc-per-node N, which set them.")
    return found


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    if name not in env and default is not None:
        return default
    try:
        return int(env[name])
    except ValueError:
        raise DistributedError(
            f"the launch variable {name}={env[name]!r} is not an integer. Unset it, or launch "
            "with mpiexec / torchrun, which set it.") from None


def is_cuda_device(device: Any) -> bool:
    """Whether a device hint (a string, torch/CuPy/JAX device, or None) names a CUDA GPU."""
    if device is None:
        return False
    if isinstance(device, str):
        return device.strip().lower().split(":")[0] in ("cuda", "gpu")
    if getattr(device, "type", None) == "cuda":  # torch.device
        return True
    if getattr(device, "platform", None) in ("gpu", "cuda"):  # a JAX device
        return True
    return type(device).__module__.startswith("cupy")  # cupy.cuda.Device


def check_timeout(timeout: Any) -> float:
    """``timeout`` as positive finite seconds, or a ValueError that says what was received."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
            math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, received {timeout!r}. "
                         "Pass e.g. timeout=60.0 (how long a collective waits for the others).")
    return float(timeout)


# -- host staging, shared by the engines -----------------------------------------------------------

def host_buffer(a: Array) -> np.ndarray:
    """A C-contiguous, writeable NumPy array with ``a``'s values: ``a`` itself (NumPy), a view
    of its memory (torch CPU, strict on the CPU device), or a copy.

    JAX hands out read-only views of its buffers: those are copied, never written into.
    """
    n = np.asarray(to_numpy(a))
    if not (n.flags.c_contiguous and n.flags.writeable):
        n = np.array(n, order="C", copy=True)
    return n


def like_input(n: np.ndarray, a: Array) -> Array:
    """The NumPy result ``n`` back in ``a``'s namespace, on ``a``'s device (no copy on the host
    where the library can wrap NumPy memory: NumPy itself, torch CPU)."""
    return adapter_of(a).from_numpy(n, compat.device(a))


def dtype_name(a: Array) -> str:
    return str(a.dtype).rsplit(".", 1)[-1]


_SUMMABLE = ("float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
             "uint32", "uint64")


# -- waiting with a deadline -----------------------------------------------------------------------

SPIN_SECONDS = 0.01
"""How long a wait polls without sleeping. Non-blocking MPI collectives progress only while the
process calls into MPI, so sleeping between polls at once slows every all-reduce: on 2 ranks
(2 cores, MPICH 5.0), a 2.7 MB float32 all-reduce took 1.5 ms polling with 50 us sleeps and 6 ms
with 1 ms sleeps, against 0.5 ms blocking; spinning first matches the blocking call
(tests/distributed/bench_polling.py). After this, a stuck peer costs little CPU."""
SLEEP_SECONDS = 0.0005
"""The pause between polls after :data:`SPIN_SECONDS` (a late peer is noticed within it)."""


# -- the contract ----------------------------------------------------------------------------------

class Communicator:
    """The collectives of one job's ``size`` processes, as seen from process ``rank``.

    Subclasses implement the engine's part: ``_allreduce_sum``, ``_allgather``, ``_broadcast``,
    ``_barrier`` and ``_end_all``; this class checks the arguments, moves Python objects as
    bytes over those array collectives (so they get the same timeouts), and turns exceptions
    into the end of every rank.

    Attributes:
        name: "local", "mpi", "torch-gloo", "torch-nccl" or "nccl".
        rank: this process's index, 0 <= rank < size.
        size: the number of processes.
        timeout: seconds any collective waits for the other ranks before it raises
            :class:`DistributedError`.
    """

    name: str = "?"
    rank: int = 0
    size: int = 1
    timeout: float = 60.0

    # -- arrays --------------------------------------------------------------------------------
    def allreduce_sum(self, a: Array, what: str = "an all-reduce") -> Array:
        """The elementwise sum over ranks, sum_r a_r, on every rank.

        Args:
            a: an array of any shape (NumPy, torch, CuPy, JAX, array-api-strict), the same
                shape and dtype on every rank. Treat it as consumed: the result may be written
                into its buffer.
            what: what this collective is, for the timeout's message ("the gradient
                all-reduce of epoch 1, step 12").

        Returns:
            An array in ``a``'s namespace, dtype, device and shape.
        """
        self._check_array(a, what)
        if dtype_name(a) not in _SUMMABLE:
            raise TypeError(
                f"{self.name} communicator: {what} received an array of dtype {a.dtype}; a sum "
                f"over ranks takes one of {', '.join(_SUMMABLE)}. Cast it first, e.g. "
                "xp.astype(a, xp.float32).")
        return self._allreduce_sum(a, what)

    def allgather(self, a: Array, what: str = "an all-gather") -> Array:
        """Every rank's ``a`` stacked in rank order: shape ``(size, *a.shape)``, on every rank.

        ``a`` must have the same shape and dtype on every rank. The result is in ``a``'s
        namespace, dtype and device.
        """
        self._check_array(a, what)
        return self._allgather(a, what)

    def broadcast(self, a: Array, root: int = 0, what: str = "a broadcast") -> Array:
        """Rank ``root``'s values of ``a`` on every rank (``a`` gives the shape and dtype, the
        same on every rank; treat it as consumed). Returns an array in ``a``'s namespace,
        dtype and device."""
        self._check_array(a, what)
        self._check_root(root, what)
        return self._broadcast(a, root, what)

    # -- Python objects, as bytes over the array collectives -----------------------------------
    def allgather_object(self, obj: Any, what: str = "an all-gather of objects") -> list:
        """``[obj of rank 0, ..., obj of rank size-1]`` on every rank.

        For small picklable objects (hashes, flags, counts). They travel pickled, so only
        exchange them within one job: unpickling runs code of the sender's choosing.
        """
        data = _pickled(obj)
        lengths = self.allgather(np.array([data.size], dtype=np.int64), what)[:, 0]
        padded = np.zeros(int(lengths.max()), dtype=np.uint8)
        padded[:data.size] = data
        table = self.allgather(padded, what)
        return [pickle.loads(table[r, :lengths[r]].tobytes()) for r in range(self.size)]

    def broadcast_object(self, obj: Any, root: int = 0,
                         what: str = "a broadcast of an object") -> Any:
        """Rank ``root``'s ``obj`` on every rank (a small picklable object; the others' ``obj``
        is ignored)."""
        self._check_root(root, what)
        data = _pickled(obj) if self.rank == root else np.zeros(0, dtype=np.uint8)
        length = int(self.broadcast(np.array([data.size], dtype=np.int64), root, what)[0])
        if self.rank != root:
            data = np.zeros(length, dtype=np.uint8)
        return pickle.loads(self.broadcast(data, root, what).tobytes())

    def barrier(self, what: str = "a barrier") -> None:
        """Return once every rank has reached its barrier (or raise after ``timeout``)."""
        self._barrier(what)

    # -- faults --------------------------------------------------------------------------------
    def abort(self, message: str, code: int = 1) -> NoReturn:
        """End every rank of the job: write ``"portanet.distributed: rank R of N: <message>"``
        to stderr, then stop (MPI: ``Abort``; torch, NCCL: the process exits with ``code``
        and the launcher or the peers' next collective ends the others)."""
        self._say(message)
        self._end_all(code)
        os._exit(code)  # an engine whose abort returned: make sure this rank is gone

    @contextlib.contextmanager
    def stop_all_on_error(self) -> Iterator[Communicator]:
        """A ``with`` block in which an exception on one rank ends every rank.

        Any exception (``KeyboardInterrupt`` too; not ``SystemExit(0)``) prints its traceback
        and calls :meth:`abort` with ``"failed with <Type>: <message>; stopping all ranks"``,
        so the other ranks do not wait for a rank that is gone. On one process
        (``size == 1``), and for an error every rank raises alike (``on_every_rank``, e.g.
        the configuration check at the start of fit), the exception is simply re-raised.

        Examples:
            >>> from portanet.distributed.comm import LocalCommunicator
            >>> with LocalCommunicator().stop_all_on_error():
            ...     raise ValueError("bad batch")
            Traceback (most recent call last):
            ...
            ValueError: bad batch
        """
        try:
            yield self
        except BaseException as err:
            if self.size == 1 or (isinstance(err, SystemExit) and err.code in (0, None)) \
                    or getattr(err, "on_every_rank", False):  # all raise it: nobody waits
                raise
            traceback.print_exception(type(err), err, err.__traceback__)
            detail = f": {str(err).rstrip('. ')}" if str(err).strip() else ""
            self.abort(f"failed with {type(err).__name__}{detail}; stopping all ranks")

    def close(self) -> None:
        """Release the engine's resources (the communicator cannot be used afterwards)."""

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, rank={self.rank}, size={self.size}, "
                f"timeout={self.timeout})")

    # -- what each engine implements -----------------------------------------------------------
    def _allreduce_sum(self, a: Array, what: str) -> Array:
        raise NotImplementedError

    def _allgather(self, a: Array, what: str) -> Array:
        raise NotImplementedError

    def _broadcast(self, a: Array, root: int, what: str) -> Array:
        raise NotImplementedError

    def _barrier(self, what: str) -> None:
        raise NotImplementedError

    def _end_all(self, code: int) -> None:
        """Stop every rank (called by :meth:`abort` after the message)."""

    # -- shared helpers ------------------------------------------------------------------------
    def _check_array(self, a: Any, what: str) -> None:
        try:
            adapter_of(a)
        except TypeError:
            raise TypeError(
                f"{self.name} communicator: {what} received "
                f"{type(a).__module__}.{type(a).__qualname__}; expected an array of numpy, "
                "torch, cupy, jax or array_api_strict. Convert it first, e.g. with "
                "pn.asarray(...).") from None

    def _check_root(self, root: Any, what: str) -> None:
        if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < self.size:
            raise ValueError(f"{self.name} communicator: {what} received root={root!r}; "
                             f"expected a rank from 0 to {self.size - 1}.")

    def _say(self, message: str) -> None:
        with contextlib.suppress(Exception):  # a closed stream must not stop the abort
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.write(f"portanet.distributed: rank {self.rank} of {self.size}: "
                             f"{message}\n")
            sys.stderr.flush()

    def _timed_out(self, what: str, waited: float, detail: str = "") -> DistributedError:
        """The error of a collective that waited ``waited`` seconds for the other ranks."""
        return DistributedError(
            f"rank {self.rank} of {self.size} waited {waited:.0f} s at {what} for the other "
            f"ranks{detail}. A rank has probably died or is stuck (see its error above); "
            "raise timeout=... if steps are really this slow.")

    def _lost_peer(self, what: str, cause: BaseException) -> DistributedError:
        """The error of a collective whose engine reported a broken connection."""
        return DistributedError(
            f"rank {self.rank} of {self.size} lost the other ranks at {what} "
            f"({type(cause).__name__}: {str(cause).strip()[:300]}). A rank has probably died "
            "(see its error above).")

    def _wait(self, done: Callable[[], bool], what: str) -> None:
        """Poll ``done()`` until it is true, for at most ``timeout`` seconds.

        Spins for :data:`SPIN_SECONDS` (engines that progress only while polled stay as fast
        as a blocking call), then sleeps :data:`SLEEP_SECONDS` between polls.
        """
        if done():
            return
        start = time.monotonic()
        spin_until, deadline = start + SPIN_SECONDS, start + self.timeout
        while not done():
            now = time.monotonic()
            if now >= deadline:
                raise self._timed_out(what, now - start)
            if now >= spin_until:
                time.sleep(SLEEP_SECONDS)


def _pickled(obj: Any) -> np.ndarray:
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8)


class LocalCommunicator(Communicator):
    """One process: every collective returns its input (``allgather``: with a leading axis of 1;
    the object collectives: ``[obj]`` and ``obj``). The default where no launcher is found."""

    name = "local"

    def __init__(self, *, timeout: float = 60.0):
        self.rank, self.size, self.timeout = 0, 1, check_timeout(timeout)

    def _allreduce_sum(self, a, what):
        return a

    def _allgather(self, a, what):
        return compat.array_namespace(a).expand_dims(a, axis=0)

    def _broadcast(self, a, root, what):
        return a

    def allgather_object(self, obj, what="an all-gather of objects"):
        return [obj]

    def broadcast_object(self, obj, root=0, what="a broadcast of an object"):
        self._check_root(root, what)
        return obj

    def _barrier(self, what):
        return None

    def abort(self, message: str, code: int = 1) -> NoReturn:
        """One process: the message, then ``SystemExit(code)`` (``finally`` blocks still run)."""
        self._say(message)
        raise SystemExit(code)


# -- choosing one ----------------------------------------------------------------------------------
