"""The processes that train one model together, as the layers see them during a step.

In data-parallel training every process (a *replica*) runs the same step on its slice of the
global batch. Almost every layer needs nothing from the others: each replica's gradients are
averaged after backward. A layer whose forward pass itself depends on the whole global batch (a
synchronized BatchNorm: the mean and variance of all N samples) asks :func:`current` for the
replicas of the step in progress and sums per-channel vectors over them.

Weights. Replica r holds n_r of the global batch's N samples, and its loss is the mean over
its own samples, L_r. The global mean loss is::

    L = sum_r w_r * L_r,     w_r = n_r / N

so every gradient a replica computes is scaled by its ``weight`` w_r before the sum over
replicas. A layer that sums backward quantities across replicas scales them the same way.

One process (no data parallelism): :func:`current` is None and layers compute locally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

from ._typing import Array

__all__ = ["Replicas", "across", "current"]


class Replicas:
    """The replicas of one step: how to sum over them and this replica's share of the batch.

    Args:
        communicator: a ``portanet.distributed.comm.Communicator`` (its ``allreduce_sum``).
        weight: w_r = n_r / N, this replica's samples over the global batch's.
        global_rows: N, the global batch size (a host int: counts never need a device read).
        what: where the step is, for the messages of a collective that times out.
    """

    def __init__(self, communicator: Any, weight: float, global_rows: int, what: str = "a step"):
        self.communicator = communicator
        self.weight = float(weight)
        self.global_rows = int(global_rows)
        self.what = what

    def sum(self, a: Array, what: str) -> Array:
        """sum_r a_r over the replicas (a's namespace, dtype and device)."""
        return self.communicator.allreduce_sum(a, f"{what} ({self.what})")


_current: ContextVar[Replicas | None] = ContextVar("portanet_replicas", default=None)


def current() -> Replicas | None:
    """The replicas of the data-parallel step in progress, or None (one process)."""
    return _current.get()


@contextlib.contextmanager
def across(replicas: Replicas | None) -> Iterator[None]:
    """Run the body (one training step) with ``replicas`` as :func:`current`."""
    token = _current.set(replicas)
    try:
        yield
    finally:
        _current.reset(token)
