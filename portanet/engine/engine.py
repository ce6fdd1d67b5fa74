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

import json
from collections.abc import Callable
from typing import Any

import array_api_compat as compat

from .._typing import Array
from ..backend import adapter_of
from ..layers.base import Layer
from ..random import Generator
from ..replicas import across
from .cuda_graph import CudaGraph
from .executors import Compiled, Eager, check_jit_compile, resolve
from .state import StateLayout, TrainState
from .step import make_apply_gradients, make_forward, make_loss_and_gradients, make_train_step

__all__ = ["Engine"]


class Engine:
    """Runs ``model``'s steps eagerly or compiled, as ``jit_compile`` says.

    Args:
        model: a built ``Sequential`` with a loss and an optimizer (for training).
        jit_compile: "auto" (compile where it measures faster: JAX), True (compile, or raise
            where the backend has no compiler) or False (eager).

    Attributes:
        compiled: whether steps on the model's current backend are compiled.
        executor: "eager", "jax.jit", "torch.compile" (torch on CPU) or "torch.cuda.graph"
            (torch on CUDA: the whole step recorded once and replayed, engine/cuda_graph.py).
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
        self._steps: dict[Any, Any] = {}  # (kind, id(augment) or 0) -> executor (which keeps
        # the augment itself alive, so its id cannot be reused by another object)
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
        if not self.compiled:
            return "eager"
        return self._adapter().compiler_on(self.model.backend.device)

    def _traced(self, compiled: bool) -> bool:
        """Whether the step is written for a tracer (every array a value). A CUDA graph
        records the eager step instead, in-place updates included: its buffers are static."""
        return compiled and self.executor != CudaGraph.name

    def _executors(self) -> list:
        found = list(self._steps.values())
        return found + ([self._forward] if self._forward is not None else [])

    @property
    def compilations(self) -> int:
        return sum(e.compilations for e in self._executors())

    @property
    def compile_seconds(self) -> float:
        return sum(e.compile_seconds for e in self._executors())

    def _make(self, fn: Callable, donate: tuple[int, ...], varying: tuple[int, ...],
              compiled: bool | None = None, state_out: Callable | None = None,
              augment: Any = None):
        """The executor of ``fn``: ``donate`` names its state arguments, whose new values
        ``state_out(outputs)`` gives (the CUDA graph keeps them in its static buffers)."""
        if not (self.compiled if compiled is None else compiled):
            return Eager(fn)
        adapter = self._adapter()
        device = self.model.backend.device
        if self.executor == CudaGraph.name:
            return CudaGraph(fn, adapter.graph_recorder(device), state_argnums=donate,
                             state_out=state_out, generators=lambda: self._generators(augment),
                             wait=lambda out: adapter.synchronize(device, out))
        return Compiled(fn, adapter, donate_argnums=donate,
                        wait=lambda out: adapter.synchronize(device, out),
                        varying_argnums=varying, family=self._family())

    def _family(self) -> str:
        """The model's architecture as text: what its compiled steps trace alike with (the
        layers, the loss, the optimizer's class, dtype and device; not the seed, the name or
        the learning rate, which never enter the trace as constants)."""
        model = self.model
        config = model.get_config()
        optimizer = config.get("optimizer") or {}
        return json.dumps([config["layers"], config["loss"], optimizer.get("class_name"),
                           config["dtype"], str(model.backend.device)], sort_keys=True,
                          default=str)

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
        x, threaded = self._augmented(x, augment)
        run = self._run(threaded, "step", lambda layout: self._make(
            make_train_step(self.model, layout, threaded, traced=self._traced(self.compiled),
                            compiled=self.compiled),
            donate=(0,), varying=(1, 2), state_out=lambda out: (out[1],),
            augment=threaded))  # (state, x, y, scalars) -> (loss, state)
        optimizer = self.model.optimizer
        state = self._state(run)
        loss, (params, slots, buffers, rng) = run(state.arrays(), x, y,
                                                  optimizer.scalars(state.opt.step))
        self._finish(run, state, params, slots, buffers, rng)
        return loss

    def data_parallel_step(self, x: Array, y: Array, strategy: Any, weight: float,
                           global_rows: int, augment: Any = None) -> Array:
        """One step of data-parallel training on this process's rows (x, y) of the global
        batch (``global_rows`` rows, ``weight`` = this process's share of them).

        The step in two halves with the gradient average between them::

            loss, g_r, buffers, rng = loss_and_gradients(state, x_r, y_r)   (compiled or eager)
            g = strategy.average_gradients(g_r, w_r)                       one all-reduce
            params, slots = apply_gradients(params, slots, g, scalars)     (compiled or eager)

        A process with no rows in this batch (the last batch of an epoch, smaller than the
        number of processes) adds zeros. Returns the loss of this process's rows.
        """
        x, threaded = self._augmented(x, augment)
        model, optimizer = self.model, self.model.optimizer
        compiled = self._compiles_across_processes()
        run = self._run(threaded, "gradients", lambda layout: self._make(
            make_loss_and_gradients(model, layout, threaded, traced=self._traced(compiled)),
            donate=(), varying=(1, 2), compiled=compiled, augment=threaded))  # (state, x, y)
        apply = self._steps.get(("apply", 0))
        if apply is None:
            apply = self._steps[("apply", 0)] = self._make(
                make_apply_gradients(model, traced=self._traced(compiled), compiled=compiled),
                donate=(0, 1),
                varying=(), compiled=compiled,
                state_out=lambda out: out)  # (params, slots, grads, scalars) -> (params, slots)
        state = self._state(run)
        if x.shape[0] == 0:
            xp = compat.array_namespace(next(iter(state.params.values())))
            params = state.params
            grads = {name: xp.zeros_like(params[name]) for name in run.layout.trainable}
            loss, buffers, rng = None, state.buffers, state.rng
        else:
            with across(strategy.replicas(weight, global_rows)):
                loss, grads, buffers, rng = run(state.arrays(), x, y)
        grads = strategy.average_gradients(grads, weight)
        params, slots = apply(state.params, state.opt.slots, grads,
                              optimizer.scalars(state.opt.step))
        self._finish(run, state, params, slots, buffers, rng)
        return loss

    def _compiles_across_processes(self) -> bool:
        """Whether the halves of a data-parallel step compile: not when a layer talks to the
        other processes inside the forward pass (a synchronized BatchNorm's all-reduces are
        host calls that a compiler cannot trace)."""
        talking = [name for name, leaf in self.model.named_leaves()
                   if getattr(leaf, "synchronized", False)]
        if not talking:
            return self.compiled
        if self.jit_compile is True and self._adapter().compiler is not None:
            raise ValueError(
                f"jit_compile=True, but {talking[0]!r} is a BatchNorm with synchronized=True, "
                "whose all-reduces inside the forward pass cannot be compiled. Use "
                "jit_compile='auto' or False (the step runs eagerly), or synchronized=False.")
        return False

    def _augmented(self, x: Array, augment: Any) -> tuple[Array, Any]:
        """``augment`` applied now (a plain function) or threaded into the step (an Augment)."""
        if self._frozen_at != Layer.trainable_version:  # another set of parameters trains
            self.reset()
        threaded = augment if _is_augment(augment) else None
        if augment is not None and threaded is None:
            x = augment(x)
        if threaded is not None:
            threaded.ensure_generator(adapter_of(x).name, self.model.backend.device)
        return x, threaded

    def _run(self, threaded: Any, kind: str, make: Callable) -> Any:
        """The executor of ``kind`` for this augment (made once, with its state layout)."""
        key = (kind, 0 if threaded is None else id(threaded))
        run = self._steps.get(key)
        if run is not None and run.augment is not threaded:
            run = None
        if run is not None and getattr(run, "registered", None) \
                and run.registered != self._generators(threaded):
            run = None  # a generator was reseeded: a graph draws from the one it registered
            # (a model without generators skips this walk: none can be reseeded)
        if run is None:
            layout = StateLayout(self.model,
                                 {"augment": threaded.generator} if threaded else None)
            run = make(layout)
            run.layout, run.augment = layout, threaded
            self._steps[key] = run
        return run

    def _generators(self, augment: Any = None) -> list:
        """The native generators the step draws from (dropout layers', the augment's)."""
        found = [leaf.generator.native for _, leaf in self.model.named_leaves()
                 if isinstance(getattr(leaf, "generator", None), Generator)]
        if augment is not None and isinstance(augment.generator, Generator):
            found.append(augment.generator.native)
        return found

    def _state(self, run: Any) -> TrainState:
        state = run.layout.gather(self.model.optimizer)
        return self._owned(state) if getattr(run, "donates", False) else state

    def _finish(self, run: Any, state: TrainState, params: dict, slots: dict, buffers: dict,
                rng: dict) -> None:
        """The step's new arrays become the model's."""
        new = TrainState(params, state.opt._replace(step=state.opt.step + 1, slots=slots),
                         buffers, rng)
        run.layout.scatter(new, self.model.optimizer)
        if run.compiled:
            self._produced = new

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
