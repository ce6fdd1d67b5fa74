"""The training state as data, and how it enters and leaves a model.

A model object holds its arrays in its layers (``leaf.parameters``, ``leaf.buffers``), its
optimizer's slots, and its random generators. The engine gathers them into one value::

    TrainState(params, opt, buffers, rng)
      params   {"0.kernel": W0, "0.bias": b0, ...}          trainable arrays
      opt      OptState(step, slots)                        step: host int; slots: arrays
      buffers  {"1.running_mean": ..., ...}                 non-trainable layer state
      rng      {"2.generator": key, ...}                    keys of functional generators (JAX)

so that a training step can be a function of data: ``(state, x, y) -> (loss, state)``.

:func:`bound` runs code with a state's arrays placed in the model's layers and generators, and
puts the model's own arrays back afterwards, like ``torch.func.functional_call``: the layers keep
their math and their ``(y, backprop)`` contract, and under a tracer (``jax.jit``) they compute on
traced arrays without knowing it. Nothing of the traced run stays in the model.

Generators whose backend draws statefully (NumPy, torch, CuPy) keep advancing in place and
are not part of ``rng``: only JAX's functional keys must travel through a compiled step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from .._typing import Array
from ..optimizers.base import OptState
from ..random import Generator

__all__ = ["StateLayout", "TrainState", "bound"]


class TrainState(NamedTuple):
    """Everything a training step reads and writes, as data (dicts of arrays and one int)."""

    params: dict[str, Array]
    """Trainable parameters by dotted name."""
    opt: OptState
    """The optimizer's step count (host int) and slots ({param: {slot: array}})."""
    buffers: dict[str, Array]
    """Non-trainable layer state by dotted name (BatchNorm's running statistics)."""
    rng: dict[str, Any]
    """Keys of the functional random generators (dropout, augmentation) by name."""

    def arrays(self) -> tuple[dict, dict, dict, dict]:
        """The arrays only (what a compiler traces): (params, slots, buffers, rng)."""
        return self.params, self.opt.slots, self.buffers, self.rng


class StateLayout:
    """Where each array of a model's state lives: computed once from the structure.

    Args:
        model: a built ``Sequential`` (or any container with ``named_leaves``).
        extra_generators: more generators to thread through the step, by name (the
            ``augment`` of ``fit``).
    """

    def __init__(self, model: Any, extra_generators: dict[str, Generator] | None = None):
        leaves = model.named_leaves()
        self.params = [(p + k, leaf, k) for p, leaf in leaves for k in leaf.parameters]
        self.trainable = [p + k for p, leaf in leaves if leaf.trainable for k in leaf.parameters]
        self.buffers = [(p + k, leaf, k) for p, leaf in leaves for k in leaf.buffers]
        generators = {p + "generator": leaf.generator for p, leaf in leaves
                      if isinstance(getattr(leaf, "generator", None), Generator)}
        generators.update(extra_generators or {})
        self.generators = [(name, g) for name, g in generators.items() if g.functional]
        self.leaves = [leaf for _, leaf in leaves]

    def gather(self, optimizer: Any) -> TrainState:
        """The model's current state (its own arrays, not copies)."""
        params = {name: leaf.parameters[k] for name, leaf, k in self.params}
        missing = [name for name in self.trainable if name not in optimizer._slots]
        if missing or optimizer._unchecked:
            # zeros for new parameters (frozen ones get no state); checks a loaded state
            optimizer.build({name: params[name] for name in self.trainable})
        return TrainState(params, optimizer.state(),
                          {name: leaf.buffers[k] for name, leaf, k in self.buffers},
                          {name: g.get_state() for name, g in self.generators})

    def scatter(self, state: TrainState, optimizer: Any) -> None:
        """Make ``state`` the model's: its arrays go into the layers, optimizer and generators."""
        self._place(state)
        optimizer.set_state(state.opt)

    def _place(self, state: TrainState) -> None:
        for name, leaf, k in self.params:
            leaf.parameters[k] = state.params[name]
        for name, leaf, k in self.buffers:
            leaf.buffers[k] = state.buffers[name]
        for name, g in self.generators:
            if name in state.rng:  # an evaluation pass draws nothing and passes no keys
                g.set_state(state.rng[name])

    @contextlib.contextmanager
    def bound(self, state: TrainState, restore_gradients: bool = True) -> Iterator[None]:
        """Run the body with ``state``'s arrays in the model; restore the model's own after.

        Gradients written by the body's backward pass are restored too (they may be traced
        values that must not outlive a trace), unless ``restore_gradients=False`` (the eager
        executor: they are real arrays, and ``model.gradients()`` shows the last step's).
        """
        saved = (
            {name: leaf.parameters[k] for name, leaf, k in self.params},
            {name: leaf.buffers[k] for name, leaf, k in self.buffers},
            {name: g.get_state() for name, g in self.generators},
        )
        gradients = [dict(leaf.gradients) for leaf in self.leaves]
        self._place(state)
        try:
            yield
        finally:
            self._place(TrainState(saved[0], state.opt, saved[1], saved[2]))
            if restore_gradients:
                for leaf, grads in zip(self.leaves, gradients, strict=True):
                    leaf.gradients = grads

    def read(self) -> tuple[dict[str, Array], dict[str, Any]]:
        """The buffers and generator keys as the body left them (call inside :meth:`bound`)."""
        return ({name: leaf.buffers[k] for name, leaf, k in self.buffers},
                {name: g.get_state() for name, g in self.generators})


def bound(model: Any, state: TrainState) -> contextlib.AbstractContextManager:
    """``with bound(model, state): ...`` runs the body with ``state`` placed in ``model``."""
    return StateLayout(model).bound(state)
