"""Training on several processes: data-parallel ``fit`` over MPI, torch.distributed or NCCL.

Launch a script with the tools people use, and pass ``distributed=True`` to ``fit``::

    mpiexec -n 2 python train.py                  # MPI (pip install "portanet[mpi]")
    torchrun --nproc-per-node 2 train.py          # torch.distributed (gloo; nccl on CUDA)

    model.fit(x, y, batch_size=256, distributed=True)   # 128 rows per process per step

In one process ``distributed=True`` changes nothing, so the same script runs everywhere.

* :mod:`.parallel`: :class:`DataParallel`, what ``fit`` does on each process.
* :mod:`.comm`: the :class:`Communicator` contract and :func:`launch_environment`;
  :mod:`.mpi`, :mod:`.torch_dist`, :mod:`.nccl`: one small adapter per engine;
  :mod:`.launch`: :func:`communicator`, the one the launcher implies.
* ``portanet.replicas``: what a layer sees of the other processes inside a step (a
  synchronized BatchNorm).
"""

from ..replicas import Replicas
from .comm import Communicator, DistributedError, LocalCommunicator, launch_environment
from .launch import communicator
from .parallel import DataParallel, data_parallel

__all__ = [
    "Communicator",
    "DataParallel",
    "DistributedError",
    "LocalCommunicator",
    "Replicas",
    "communicator",
    "data_parallel",
    "is_chief",
    "launch_environment",
    "rank",
    "world_size",
]


def rank() -> int:
    """This process's rank in the launch (``mpiexec``/``torchrun``), 0 outside one."""
    env = launch_environment()
    return env.rank if env.kind else 0


def world_size() -> int:
    """The number of processes in the launch, 1 outside one."""
    env = launch_environment()
    return env.size if env.kind else 1


def is_chief() -> bool:
    """Rank 0: the process that prints and writes files (e.g. ``if is_chief(): model.save``)."""
    return rank() == 0
