"""Which communicator a launch implies: :func:`communicator`, the one factory.

``mpiexec`` sets MPI's variables, ``torchrun`` its own (``launch_environment``); the factory
turns them into the communicator of that engine. The engines import their libraries (mpi4py,
torch.distributed, cupyx) only when one is made, so importing this module starts nothing.
"""

from __future__ import annotations

from typing import Any

from .comm import Communicator, LocalCommunicator, check_timeout, launch_environment
from .mpi import MPICommunicator
from .nccl import NCCLCommunicator
from .torch_dist import TorchCommunicator

__all__ = ["KINDS", "communicator"]

_ENGINES = {"mpi": MPICommunicator, "torch": TorchCommunicator, "nccl": NCCLCommunicator}
_MADE: dict[tuple, Communicator] = {}


KINDS = ("auto", "local", "mpi", "torch", "nccl")


def communicator(kind: Any = "auto", *, device: Any = None, timeout: float = 60.0
                 ) -> Communicator:
    """The communicator of this process's job.

    Args:
        kind: "auto" (started by torchrun -> torch.distributed; by mpiexec -> MPI; neither ->
            one process), "local", "mpi", "torch", "nccl" (CuPy arrays over cupyx's NCCL), or a
            :class:`Communicator`, returned as is.
        device: the model's device, a hint: a CUDA device makes "torch" use NCCL (gloo
            otherwise) and tells "nccl" which GPU to use.
        timeout: seconds any collective waits for the other ranks before it raises
            :class:`DistributedError`.

    Returns:
        A :class:`Communicator`. A missing package raises ImportError with the command that
        installs it.

    Examples:
        >>> communicator().name          # a plain `python script.py`
        'local'
    """
    if isinstance(kind, Communicator):
        return kind
    if not isinstance(kind, str) or kind.strip().lower() not in KINDS:
        raise ValueError(f"unknown communicator {kind!r}; expected one of {list(KINDS)} or a "
                         "Communicator instance.")
    timeout = check_timeout(timeout)
    key = kind.strip().lower()
    if key == "auto":
        key = {"torchrun": "torch", "mpi": "mpi", None: "local"}[launch_environment().kind]
    if key == "local":
        return LocalCommunicator(timeout=timeout)
    # one per kind, device and timeout in a process: fit after fit reuses the engine's setup
    # (MPI's duplicated communicator, torch's process group) instead of making another
    made = (key, str(device), timeout)
    if made not in _MADE:
        _MADE[made] = _ENGINES[key](**({} if key == "mpi" else {"device": device}),
                                    timeout=timeout)
    return _MADE[made]
