"""The engine: a model's training step and forward pass, run by an executor on the state.

Each call of :meth:`Engine.train_step` does::

    state   = layout.gather(optimizer)         the model's arrays, as TrainState (no copies)
    scalars = optimizer.scalars(state.opt.step)  host floats: learning rate, bias corrections
    loss, arrays = executor(step)(state.arrays(), x, y, scalars)
    layout.scatter(new state)                  the new arrays become the model's

Gathering and scattering move references, not data. Between steps the model, its layers and
its optimizer hold the current arrays as before, so saving, ``model.to``, callbacks and
``model.parameters()`` see the state as it is; the step in between is a pure function that a
compiler can take whole.

With donation (``jax.jit``) the compiled step reuses the buffers of the state it is given. The
engine donates only arrays it produced itself: any array that came from elsewhere (the initial
weights, ``set_parameters``, a loaded checkpoint, a callback restoring a snapshot) is copied
once first, so no array a user holds is ever invalidated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat as compat

from .._typing import Array
from ..backend import adapter_of
from ..layers.base import Layer
from .executors import Compiled, Eager, check_jit_compile, resolve
from .state import StateLayout, TrainState
from .step import make_forward, make_train_step

__all__ = ["Engine"]


class Engine:
    """Runs ``model``'s steps eagerly or compiled, as ``jit_compile`` says.

    Args:
        model: a built ``Sequential`` with a loss and an optimizer (for training).
        jit_compile: "auto" (compile where it measures faster: JAX), True (compile, or raise
            where the backend has no compiler) or False (eager).

    Attributes:
        compiled: whether steps on the model's current backend are compiled.
        executor: "eager", "jax.jit" or "torch.compile".
        compilations: how many step and forward signatures were compiled so far.
        compile_seconds: time spent in those first calls (trace + compile + one run each).
    """

    def __init__(self, model: Any, jit_compile: Any = "auto"):
        self.model = model
        self.jit_compile = check_jit_compile(jit_compile)
        self.reset()

    def reset(self) -> None:
        """Forget the compiled functions and their counters (after the model's structure,
        backend, loss or optimizer changed)."""
        self._layout: StateLayout | None = None
        self._steps: dict[int, Any] = {}  # id(augment) (0: none) -> executor (which keeps the
        # augment itself alive, so its id cannot be reused by another object)
        self._forward = None
        self._produced: TrainState | None = None
        self._frozen_at = Layer.trainable_version
        self._compiles_well: bool | None = None

    # -- what it runs ------------------------------------------------------------------------
    def _adapter(self):
        backend = self.model.backend
        return backend.adapter

    @property
    def compiled(self) -> bool:
        if self.jit_compile != "auto":
            return resolve(self.jit_compile, self._adapter())
        if self._compiles_well is None:  # a property of the structure: once per reset
            self._compiles_well = all(leaf.compiles_well for _, leaf in self.model.named_leaves())
        return resolve("auto", self._adapter(), self._compiles_well)

    @property
    def executor(self) -> str:
        return self._adapter().compiler if self.compiled else "eager"

    def _executors(self) -> list:
        found = list(self._steps.values())
        return found + ([self._forward] if self._forward is not None else [])

    @property
    def compilations(self) -> int:
        return sum(e.compilations for e in self._executors())

    @property
    def compile_seconds(self) -> float:
        return sum(e.compile_seconds for e in self._executors())

    def _make(self, fn: Callable, donate: tuple[int, ...], varying: tuple[int, ...]):
        if not self.compiled:
            return Eager(fn)
        adapter = self._adapter()
        device = self.model.backend.device
        return Compiled(fn, adapter, donate_argnums=donate,
                        wait=lambda out: adapter.synchronize(device, out),
                        varying_argnums=varying)

    def layout(self) -> StateLayout:
        """Where the model's arrays live (the structure; computed once)."""
        if self._layout is None:
            self._layout = StateLayout(self.model)
        return self._layout

    # -- training ----------------------------------------------------------------------------
    def train_step(self, x: Array, y: Array, augment: Any = None) -> Array:
        """One optimizer step on (x, y); returns the loss, a 0-d array on the device.

        ``augment``: a ``pn.data.Augment`` runs inside the step (its keys threaded through a
        compiled step); any other callable runs on the batch before the step.
        """
        model = self.model
        optimizer = model.optimizer
        if self._frozen_at != Layer.trainable_version:  # another set of parameters trains
            self.reset()
        threaded = augment if _is_augment(augment) else None
        if augment is not None and threaded is None:
            x = augment(x)
        key = 0 if threaded is None else id(threaded)
        run = self._steps.get(key)
        if run is not None and run.augment is not threaded:
            run = None
        if threaded is not None:
            threaded.ensure_generator(adapter_of(x).name, model.backend.device)
        if run is None:
            layout = StateLayout(model, {"augment": threaded.generator} if threaded else None)
            fn = make_train_step(model, layout, threaded, traced=self.compiled)
            run = self._make(fn, donate=(0,), varying=(1, 2))  # (state, x, y, scalars)
            run.layout, run.augment = layout, threaded
            self._steps[key] = run
        layout = run.layout
        state = layout.gather(optimizer)
        if run.compiled:
            state = self._owned(state)
        loss, (params, slots, buffers, rng) = run(state.arrays(), x, y,
                                                  optimizer.scalars(state.opt.step))
        new = TrainState(params, state.opt._replace(step=state.opt.step + 1, slots=slots),
                         buffers, rng)
        layout.scatter(new, optimizer)
        if run.compiled:
            self._produced = new
        return loss

    def _owned(self, state: TrainState) -> TrainState:
        """``state`` with every array the engine did not produce replaced by a copy (donation
        may only consume the engine's own buffers)."""
        mine = self._produced

        def own(current: dict, produced: dict | None) -> dict:
            out = {}
            for k, a in current.items():
                p = None if produced is None else produced.get(k)
                if a is p:
                    out[k] = a
                elif isinstance(a, dict):
                    out[k] = own(a, p if isinstance(p, dict) else None)
                else:
                    out[k] = _copy(a)
            return out

        return TrainState(own(state.params, mine and mine.params),
                          state.opt._replace(slots=own(state.opt.slots,
                                                       mine and mine.opt.slots)),
                          own(state.buffers, mine and mine.buffers),
                          state.rng)  # keys live in the generators only: nobody else holds them

    # -- inference ---------------------------------------------------------------------------
    def forward(self, x: Array) -> Array:
        """The model's output for ``x`` in evaluation mode (compiled like the step)."""
        if not self.compiled:
            return self.model._forward(x, False)[0]
        if self._forward is None:
            layout = self.layout()
            self._forward = self._make(make_forward(self.model, layout), donate=(),
                                       varying=(2,))  # (params, buffers, x)
        layout = self.layout()
        params = {name: leaf.parameters[k] for name, leaf, k in layout.params}
        buffers = {name: leaf.buffers[k] for name, leaf, k in layout.buffers}
        return self._forward(params, buffers, x)


def _is_augment(augment: Any) -> bool:
    return hasattr(augment, "ensure_generator") and hasattr(augment, "generator")


def _copy(a: Array) -> Array:
    return compat.array_namespace(a).asarray(a, copy=True)
