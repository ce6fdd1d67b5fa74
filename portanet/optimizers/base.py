"""What every optimizer shares: the update pipeline, the learning rate, and the state.

One call ``new_params = opt.step(params, grads)`` performs, for each parameter ``p`` with
gradient ``g`` (``t`` counts updates from 1, ``lr`` is the learning rate for this update)::

    1. clip   g <- clip(g)                    by value, per-parameter norm, global norm (optional)
    2. L2     g <- g + lambda * p             coupled weight decay: the gradient of lambda/2 ||p||^2
    3. rule   d, state <- rule(g, state, t)   the algorithm: momentum, squared averages, moments
    4. move   p <- p - lr * d                 decoupled decay (AdamW): p <- p (1 - lr lambda) - lr d

Steps 1, 2 and 4 live here; each subclass writes step 3 as its textbook equations. With norm
clipping (``clip_norm``, ``global_clip_norm``), a gradient whose norm is NaN or Inf cannot be
clipped, so the whole update is skipped on the device: parameters and slots keep their values
(``where(finite, new, old)``, no host read); the step count still advances. The state
is a dict of arrays per parameter ("slots") and the step count. The learning rate and the bias
corrections are Python floats computed on the host from the step count (:meth:`scalars`): a
step queues array work only and never reads an array back to the host.

Two ways to call the same arithmetic:

* the pure form, optax's shape, which a compiled training step uses (portanet/engine)::

      state = opt.init(params)                                # OptState(step=0, slots)
      params, state = opt.update(grads, state, params)        # nothing stored in opt

* the stateful form, ``params = opt.step(params, grads)``, which keeps the state in the
  optimizer (created lazily on a parameter's first gradient) for ``state_dict``, ``to`` and
  checkpoints. ``opt.state()`` / ``opt.set_state(state)`` hand it to and from the pure form.

Two paths compute the same arithmetic in the same order:

* the portable path (``_rule``) rebinds every array (``p = p - lr * d``) and never writes into
  one, so it runs on JAX's immutable arrays; it is the reference;
* the in-place path (``_rule_inplace``, the default where arrays are writeable: NumPy, CuPy,
  torch, array-api-strict) writes into the parameter and state arrays, as ``torch.optim`` and
  Keras do. It saves a parameter-sized allocation per operation (an Adam step on 1M float32
  parameters takes 40% less time on NumPy, docs/optimizers.md), and on torch the update is one
  fused ``add_`` (portanet/fused.py). ``inplace=False`` asks for the portable path everywhere.

The tests check that both paths give bit-identical trajectories (within one rounding per update
where a fused multiply-add runs).

Either path runs once per parameter array or, with ``flat``, once over one buffer holding all of
them (``flat.py``): the same numbers in a dozen library calls instead of a dozen per array, the
default where a call costs more than the arithmetic (a GPU's kernel launch).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import array_api_compat as compat

from .. import clipping, fused, schedules
from .._typing import Array
from ..backend import adapter_of
from ..devices import device_of, to_backend
from ..registry import make_config
from .flat import FlatGroup

LearningRate = float | Callable[[int], float]


class OptState(NamedTuple):
    """An optimizer's state as data (what :meth:`Optimizer.init` makes and
    :meth:`Optimizer.update` returns)."""

    step: int
    """Updates done so far: a host int (the schedule and the bias corrections read it on the
    host, so a compiled step never needs it on the device)."""
    slots: dict[str, dict[str, Array]]
    """{parameter name: {slot name: array}}: momentum buffers, moment estimates."""


# ---------------------------------------------------------------------------------------------
# Argument checks shared by the optimizers (messages say what was received and what is expected)
# ---------------------------------------------------------------------------------------------
def check_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, received {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, received {value!r}.")
    return float(value)


def check_non_negative(name: str, value: Any) -> float:
    value = check_number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, received {value!r}.")
    return value


def check_beta(name: str, value: Any) -> float:
    """A decay rate of a moving average: in [0, 1) (at 1 the average never moves)."""
    value = check_number(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), received {value!r}. It is the decay of a "
                         f"moving average: 0.9 or 0.999 are typical.")
    return value


def _check_learning_rate(value: Any) -> LearningRate:
    if callable(value):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)  # a Python or NumPy scalar: a host value, nothing to sync
    elif hasattr(value, "shape"):
        raise TypeError(f"learning_rate must be a Python number or a schedule, received an array "
                        f"({type(value).__name__}); reading it would sync with the device. Pass "
                        f"float(...) of it once, outside the training loop.")
    value = check_number("learning_rate", value)
    if value < 0:
        raise ValueError(f"learning_rate must be >= 0, received {value!r}. To climb a function "
                         f"instead of descending it, negate its gradient.")
    return value


def _check_clip(name: str, value: Any) -> float | None:
    if value is None:
        return None
    value = check_number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0 (or None for no clipping), received {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------
class Optimizer:
    """Base class of portanet's optimizers (see the module docstring for the pipeline).

    Args:
        learning_rate: a number >= 0, or a schedule ``step -> float`` called with the number of
            updates done so far (0 for the first). Assignable at any time.
        weight_decay: lambda >= 0 of the coupled L2 penalty, added to the gradient (step 2).
        clip_value: clip each gradient entry into [-clip_value, clip_value].
        clip_norm: scale each gradient array down to this norm if it is longer.
        global_clip_norm: scale all gradients by one factor so that their joint norm is at most
            this (``torch.nn.utils.clip_grad_norm_``). The three clippings apply in this order.
            With either norm clipping, an update whose gradient norm is NaN or Inf is skipped
            (parameters and state unchanged, on the device; the step count still advances),
            where torch would write NaN into the parameters.
        inplace: update writeable parameter and state arrays in place (default True; see the
            module docstring). ``step`` then returns the arrays it was given, updated, so copy
            a parameter to keep its old value. False: ``step`` returns new arrays and leaves its
            inputs alone. Gradients are never modified. With norm clipping the update is
            computed out of place (the old values must survive until a non-finite step is
            skipped), so ``step`` returns new arrays then too.
        flat: run the update over one buffer holding all parameters of a dtype and device
            (``optimizers/flat.py``): the same numbers in a dozen library calls instead of a
            dozen per parameter. None (default): where the backend says that measures faster
            and the in-place path runs (``Adapter.flat_update_on``: CuPy, torch on CUDA; not on
            the host, where it measured slower). The first flat update moves the parameters
            into the buffer and returns views of it, so the arrays given to that first call
            are no longer the model's (later calls update the views in place). A compiled
            training step (jax.jit, torch.compile, a CUDA graph) updates one array at a time:
            the compiler or the graph has removed the launches already.

    Subclasses implement ``_slot_names()``, ``_rule(g, slots, c)`` (``c``: this update's host
    scalars, with what ``_coefficients(t, first)`` adds) and ``_hyperparameters()``, and may add
    ``_rule_inplace`` (same signature, same arithmetic, writing into the slots);
    ``decoupled_weight_decay`` switches step 4's form.
    """

    decoupled_weight_decay: bool = False

    def __init__(self, learning_rate: LearningRate, *, weight_decay: float = 0.0,
                 clip_value: float | None = None, clip_norm: float | None = None,
                 global_clip_norm: float | None = None, inplace: bool = True,
                 flat: bool | None = None):
        if isinstance(learning_rate, dict):  # a schedule's config, as get_config() writes it
            learning_rate = schedules.from_config(learning_rate)
        self.learning_rate = learning_rate
        self.weight_decay = check_non_negative("weight_decay", weight_decay)
        self.clip_value = _check_clip("clip_value", clip_value)
        self.clip_norm = _check_clip("clip_norm", clip_norm)
        self.global_clip_norm = _check_clip("global_clip_norm", global_clip_norm)
        self.inplace = bool(inplace)
        if flat is not None and not isinstance(flat, bool):
            raise TypeError(f"flat must be True, False or None (the backend's choice), received "
                            f"{flat!r} ({type(flat).__name__}).")
        self.flat = flat
        self._flat_groups: dict[tuple[str, ...], FlatGroup] = {}  # a cache, never state
        self.iterations = 0
        self._slots: dict[str, dict[str, Array]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}  # every parameter seen, name -> shape
        self._fresh: set[str] = set()  # slots created but not yet updated
        self._unchecked: set[str] = set()  # loaded slots not yet matched with a parameter

    # -- learning rate ---------------------------------------------------------------------
    @property
    def learning_rate(self) -> LearningRate:
        """A number or a schedule; the rate of the next update is ``current_learning_rate()``."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        self._learning_rate = _check_learning_rate(value)

    def current_learning_rate(self) -> float:
        """The rate the next ``step`` uses, as a Python float."""
        return self._learning_rate_at(self.iterations)

    def _learning_rate_at(self, step: int) -> float:
        """The rate of update number ``step + 1`` (a schedule is called with ``step``)."""
        lr = self._learning_rate
        if callable(lr):
            lr = lr(step)
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
                raise TypeError(f"the learning-rate schedule {self._learning_rate!r} returned "
                                f"{lr!r} ({type(lr).__name__}) at step {step}; a "
                                "schedule must return a Python float (an array would have to "
                                "be read back from its device at every step).")
            lr = float(lr)
            if not (math.isfinite(lr) and lr >= 0):
                raise ValueError(f"the learning-rate schedule {self._learning_rate!r} returned "
                                 f"{lr!r} at step {step}; expected a finite rate >= 0.")
        return float(lr)

    # -- what subclasses provide -----------------------------------------------------------
    def _slot_names(self) -> tuple[str, ...]:
        """The names of the per-parameter state arrays this configuration keeps."""
        return ()

    def _init_slots(self, p: Array) -> dict[str, Array]:
        """Fresh state for parameter ``p``: zeros of its shape, dtype and device."""
        xp = compat.array_namespace(p)
        return {name: xp.zeros_like(p) for name in self._slot_names()}

    def _coefficients(self, t: int, first: bool) -> dict[str, float]:
        """The Python-float coefficients of update ``t`` (bias corrections...), computed on the
        host from the step count; ``first``: the parameter's state was just created."""
        return {}

    def _rule(self, g: Array, slots: dict[str, Array],
              c: Mapping[str, Any]) -> tuple[Array, dict[str, Array]]:
        """The algorithm: direction d (p moves by -lr * d) and the new slots; ``c`` holds this
        update's scalars (:meth:`scalars`)."""
        raise NotImplementedError

    def _rule_inplace(self, g: Array, slots: dict[str, Array],
                      c: Mapping[str, Any]) -> tuple[Array, dict[str, Array]]:
        """``_rule`` writing into the slots (only called on writeable arrays). By default the
        portable rule; the in-place path then saves only the parameter's update."""
        return self._rule(g, slots, c)

    def _hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments beyond the shared ones, for ``get_config``."""
        return {}

    # -- the pure form: init / scalars / update (optax's shape) ------------------------------
    def init(self, params: Mapping[str, Array]) -> OptState:
        """Fresh state for ``params``: step 0 and zero slots of each parameter's shape, dtype and
        device. Nothing is stored in the optimizer.

        Examples:
            >>> import numpy as np
            >>> from portanet.optimizers import SGD
            >>> opt = SGD(0.1, momentum=0.9)
            >>> state = opt.init({"w": np.zeros(3)})
            >>> state.step, sorted(state.slots["w"])
            (0, ['momentum_buffer'])
        """
        return OptState(0, {name: self._init_slots(p) for name, p in params.items()})

    def scalars(self, step: int, first: bool | None = None) -> dict[str, float]:
        """The Python floats of update number ``step + 1``: the learning rate from the schedule,
        ``shrink`` = 1 - lr * lambda for decoupled decay, and the algorithm's coefficients.

        They are computed on the host from the step count, which the host always knows: a
        compiled step takes them as arguments (new values, same shapes: no recompilation), and
        nothing is read back from the device. ``first`` (default: ``step == 0``) says the
        slots are fresh zeros (SGD's classical momentum then starts from g, as torch does).
        """
        lr = self._learning_rate_at(step)
        c = {"lr": lr, "shrink": 1.0 - lr * self.weight_decay}
        c.update(self._coefficients(step + 1, step == 0 if first is None else first))
        return c

    def update(self, grads: Mapping[str, Array], state: OptState, params: Mapping[str, Array],
               scalars: Mapping[str, Any] | None = None, inplace: bool | None = None,
               flat: bool | None = None) -> tuple[dict[str, Array], OptState]:
        """One pure update: ``(new_params, new_state)`` from the gradients, the state and the
        parameters; the optimizer object itself is not changed.

        Under a compiler (``jax.jit``) pass ``scalars=opt.scalars(state.step)`` in as an argument:
        the arrays are traced, the step count stays a host int. ``inplace`` (default: the
        optimizer's setting) writes into writeable parameter and slot arrays, as :meth:`step`
        does; the result is bit-identical to the pure path (tests/test_optimizers.py).
        ``flat`` (default: the optimizer's setting) runs it over one buffer of all parameters;
        a compiled step passes False (the engine, engine/step.py).

        Examples:
            >>> import numpy as np
            >>> from portanet.optimizers import SGD
            >>> opt = SGD(0.1, momentum=0.9)
            >>> params = {"w": np.asarray([1.0])}
            >>> state = opt.init(params)
            >>> params, state = opt.update({"w": np.asarray([2.0])}, state, params)
            >>> params["w"].tolist(), state.step
            ([0.8], 1)
        """
        c = self.scalars(state.step) if scalars is None else scalars
        inplace = self.inplace if inplace is None else inplace
        grads, finite = self._clip(grads)
        updated, slots = self._update_all(params, grads, state.slots, c, inplace, finite, flat)
        return {**params, **updated}, OptState(state.step + 1, {**state.slots, **slots})

    def _update_all(self, params: Mapping[str, Array], grads: Mapping[str, Array],
                    slots: Mapping[str, dict[str, Array]], c: Mapping[str, Any], inplace: bool,
                    finite: Array | None, flat: bool | None = None
                    ) -> tuple[dict[str, Array], dict[str, dict[str, Array]]]:
        """:meth:`_update_if` for every parameter in ``grads``: one array at a time, or over one
        buffer per dtype and device (``flat``, default: the optimizer's setting). Returns the
        new parameters and slots."""
        new_params, new_slots = {}, {}
        for names in self._flat_groups_of(params, grads, inplace,
                                          self.flat if flat is None else flat):
            if len(names) == 1:
                n = names[0]
                new_params[n], new_slots[n] = self._update_if(finite, params[n], grads[n],
                                                              slots[n], c, inplace)
                continue
            group = self._flat_group(names, params)
            p, s = group.pack(params, slots)
            p, s = self._update_if(finite, p, group.flatten_gradients(grads), s, c, inplace)
            views, slot_views = group.unpack(p, s)
            new_params.update(views)
            new_slots.update(slot_views)
        return new_params, new_slots

    def _flat_groups_of(self, params: Mapping[str, Array], grads: Mapping[str, Array],
                        inplace: bool, flat: bool | None) -> list[list[str]]:
        """The parameters of ``grads`` in update groups: one per dtype and device where the
        update runs flat, else one group per parameter."""
        names = list(grads)
        if not names:
            return []
        first = params[names[0]]
        if flat is None:  # the backend's choice, for the in-place path only
            flat = (inplace and compat.is_writeable_array(first)
                    and adapter_of(first).flat_update_on(compat.device(first)))
        if not flat:
            return [[n] for n in names]
        groups: dict[tuple, list[str]] = {}
        for n in names:
            p = params[n]
            groups.setdefault((type(p), str(p.dtype), str(compat.device(p))), []).append(n)
        return list(groups.values())

    def _flat_group(self, names: list[str], params: Mapping[str, Array]) -> FlatGroup:
        """The cached :class:`FlatGroup` of these parameters (a new one if their device, dtype,
        shapes or layouts changed)."""
        key = tuple(names)
        group = self._flat_groups.get(key)
        if group is None or not group.fits(params):
            group = self._flat_groups[key] = FlatGroup(names, params)
        return group

    def _update_if(self, finite: Array | None, p: Array, g: Array, slots: dict[str, Array],
                   c: Mapping[str, Any], inplace: bool) -> tuple[Array, dict[str, Array]]:
        """:meth:`_update_one`, kept from taking effect where ``finite`` (a 0-d boolean array
        from the norm clipping) is False: ``where(finite, new, old)`` for the parameter and
        each slot, on the device. A NaN/Inf gradient norm cannot be clipped (the clipped
        gradient holds NaN), so that update is skipped instead of writing NaN into ``p``.

        The old arrays must survive until the selection, so this takes the portable path and
        returns new arrays, also where ``inplace`` would write into writeable ones (the cost:
        docs/optimizers.md, "Gradient clipping").
        """
        if finite is None:
            return self._update_one(p, g, slots, c, inplace)
        new_p, new_slots = self._update_one(p, g, slots, c, False)
        xp = compat.array_namespace(p)
        return (xp.where(finite, new_p, p),
                {k: xp.where(finite, v, slots[k]) for k, v in new_slots.items()})

    def _update_one(self, p: Array, g: Array, slots: dict[str, Array], c: Mapping[str, Any],
                    inplace: bool) -> tuple[Array, dict[str, Array]]:
        """Steps 2-4 of the pipeline for one parameter: L2, the rule, the move."""
        wd = self.weight_decay
        decoupled = wd and self.decoupled_weight_decay
        if wd and not decoupled:
            g = g + wd * p  # 2. coupled L2: d/dp of (wd / 2) * ||p||^2
        if inplace and compat.is_writeable_array(p):
            direction, slots = self._rule_inplace(g, slots, c)  # 3.
            if decoupled:
                p *= c["shrink"]
            return fused.add_scaled_(p, direction, -c["lr"]), slots  # 4., into p (one add_)
        direction, slots = self._rule(g, slots, c)  # 3.
        if decoupled:
            return p * c["shrink"] - c["lr"] * direction, slots  # 4. shrink, then step
        return p - c["lr"] * direction, slots  # 4.

    # -- the update, on the optimizer's own state ----------------------------------------------
    def step(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> dict[str, Array]:
        """One update: returns a new dict of the updated parameters. Writeable parameter arrays
        are updated in place and returned (``inplace=True``, the default); JAX arrays, and every
        array with ``inplace=False``, are replaced by new ones and the inputs are left alone.

        The same arithmetic as :meth:`update`, on state the optimizer keeps (created lazily on
        a parameter's first gradient).

        Args:
            params: {name: array} of the current parameters.
            grads: {name: array} of their gradients (same shapes and dtypes). A parameter
                without a gradient is returned unchanged and its state is left alone.

        Returns:
            {name: array}: every entry of ``params``, updated where a gradient was given.
        """
        self._check_inputs(params, grads)
        step = self.iterations
        c = self.scalars(step, first=False)
        new_params = dict(params)
        grads, finite = self._clip(grads)
        slots = {name: self._state_for(name, params[name]) for name in grads}
        fresh = {name: g for name, g in grads.items() if name in self._fresh}
        for part, coefficients in (({n: g for n, g in grads.items() if n not in fresh}, c),
                                   (fresh, None)):
            if not part:
                continue
            if coefficients is None:  # new state: the same rate, the algorithm's first-step
                coefficients = {**c, **self._coefficients(step + 1, True)}  # coefficients
            updated, new_slots = self._update_all(params, part, slots, coefficients,
                                                  self.inplace, finite)
            new_params.update(updated)
            self._slots.update(new_slots)
        self._fresh.difference_update(grads)
        self.iterations = step + 1
        return new_params

    def state(self) -> OptState:
        """The optimizer's own state as data: ``OptState(step, slots)`` (the arrays themselves,
        not copies; :meth:`state_dict` copies)."""
        return OptState(self.iterations, dict(self._slots))

    def set_state(self, state: OptState) -> None:
        """Adopt ``state`` (from :meth:`update`): the step count and the slot arrays, as they
        are. How a compiled training step hands its result back to the optimizer."""
        self._slots = dict(state.slots)
        for name, slots in self._slots.items():
            if name not in self._shapes and slots:
                self._shapes[name] = tuple(next(iter(slots.values())).shape)
        self._fresh.difference_update(self._slots)
        self.iterations = state.step

    def _check_inputs(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Names, shapes and dtypes only (metadata): nothing here reads array values."""
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError(f"step expects two dicts {{name: array}}, received "
                            f"{type(params).__name__} and {type(grads).__name__}.")
        unknown = [k for k in grads if k not in params]
        if unknown:
            raise ValueError(f"gradients for unknown parameters {unknown}; the parameters are "
                             f"{list(params)}.")
        for name, g in grads.items():
            p = params[name]
            if g.shape != p.shape or g.dtype != p.dtype:
                raise ValueError(
                    f"gradient of {name!r} has shape {tuple(g.shape)} and dtype "
                    f"{_dtype_name(g.dtype)}, but the parameter has shape {tuple(p.shape)} and "
                    f"dtype {_dtype_name(p.dtype)}; they must match.")
        if self._unchecked:
            self._adopt_loaded(params)

    def _clip(self, grads: Mapping[str, Array]) -> tuple[Mapping[str, Array], Array | None]:
        """Step 1: the clipped gradients, and whether their norms were finite (a 0-d boolean
        array, or None without norm clipping; see :func:`portanet.clipping.clip_gradients`)."""
        return clipping.clip_gradients(grads, clip_value=self.clip_value,
                                       clip_norm=self.clip_norm,
                                       global_clip_norm=self.global_clip_norm)

    def _state_for(self, name: str, p: Array) -> dict[str, Array]:
        slots = self._slots.get(name)
        if slots is None:
            self._shapes[name] = tuple(p.shape)
            if not self._slot_names():
                return {}
            slots = self._init_slots(p)
            self._fresh.add(name)
            return slots
        if slots:
            some = next(iter(slots.values()))
            if compat.device(some) != compat.device(p) or some.dtype != p.dtype:
                raise ValueError(
                    f"the optimizer state of {name!r} is {_dtype_name(some.dtype)} on "
                    f"{device_of(some)}, but the parameter is {_dtype_name(p.dtype)} on "
                    f"{device_of(p)}. Move the state with "
                    f"optimizer.to(backend, device) (model.to(...) does both)."
                )
        return slots

    def build(self, params: Mapping[str, Array]) -> Optimizer:
        """Create the state of ``params`` now (zeros) instead of on the first step.

        Useful before ``load_state_dict`` so that names and shapes are checked at once.
        """
        if self._unchecked:
            self._adopt_loaded(params)
        for name, p in params.items():
            if name not in self._slots:
                self._shapes[name] = tuple(p.shape)
                self._slots[name] = self._init_slots(p)
                self._fresh.add(name)
        return self

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"step": int, "slots": {param: {slot: Array}}, "config": get_config()}``.

        The arrays are copies (a snapshot: the in-place path would change the optimizer's own),
        on the parameters' device.
        """
        return {"step": self.iterations,
                "slots": {name: {k: _copy(a) for k, a in slots.items()}
                          for name, slots in self._slots.items()},
                "config": self.get_config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the step count and the slots with ``state`` (from ``state_dict()``).

        Names and shapes are checked against the parameters the optimizer knows (from earlier
        steps or ``build``); if it knows none yet, they are checked on the next ``step``. Arrays
        are moved to the device and cast to the dtype of the parameter they belong to.
        """
        if not isinstance(state, Mapping) or "step" not in state or "slots" not in state:
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"an optimizer state is a dict with 'step' and 'slots' (from "
                             f"state_dict()); received {got}.")
        step, loaded = state["step"], state["slots"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"state['step'] must be an int >= 0, received {step!r}.")
        config = state.get("config")
        if isinstance(config, Mapping) and config.get("class_name", type(self).__name__) != \
                type(self).__name__:
            raise ValueError(f"this state belongs to a {config['class_name']} optimizer; it "
                             f"cannot be loaded into {type(self).__name__}.")
        expected = set(self._slot_names())
        if self._shapes:
            unknown = sorted(set(loaded) - set(self._shapes))
            if unknown:
                raise ValueError(f"the state has unknown parameter names {unknown}; this "
                                 f"optimizer updates {sorted(self._shapes)}.")
        new_slots: dict[str, dict[str, Array]] = {}
        for name, slots in loaded.items():
            if set(slots) != expected:
                raise ValueError(
                    f"the state of {name!r} has slots {sorted(slots)}, but "
                    f"{type(self).__name__} with this configuration keeps {sorted(expected)}. "
                    f"Was it saved from a differently configured optimizer?")
            shapes = {tuple(a.shape) for a in slots.values()}
            if len(shapes) > 1:
                raise ValueError(f"the slots of {name!r} disagree in shape: {sorted(shapes)}.")
            if name in self._shapes and shapes and shapes != {self._shapes[name]}:
                raise ValueError(f"the state of {name!r} has shape {shapes.pop()}, but the "
                                 f"parameter has shape {self._shapes[name]}; it was saved from "
                                 f"a model with different shapes.")
            new_slots[name] = self._match(dict(slots), self._slots.get(name))
        self._slots = new_slots
        self._fresh = set()
        self._unchecked = {n for n in new_slots if n not in self._shapes}
        self.iterations = step
        self._after_load()

    def _after_load(self) -> None:
        """Recompute Python-side quantities that depend on the step count."""

    @staticmethod
    def _match(slots: dict[str, Array], like: dict[str, Array] | None) -> dict[str, Array]:
        """Move ``slots`` to the backend, device and dtype of the existing state ``like``."""
        if not like:
            return slots
        ref = next(iter(like.values()))
        return {k: _onto(v, ref) for k, v in slots.items()}

    def _adopt_loaded(self, params: Mapping[str, Array]) -> None:
        """First contact of loaded state with real parameters: check names and shapes, move."""
        unknown = sorted(self._unchecked - set(params))
        if unknown:
            raise ValueError(f"the loaded optimizer state has unknown parameter names {unknown}; "
                             f"the parameters are {sorted(params)}.")
        for name in sorted(self._unchecked):
            p = params[name]
            for slot, a in self._slots[name].items():
                if tuple(a.shape) != tuple(p.shape):
                    raise ValueError(f"the loaded state {name!r}/{slot!r} has shape "
                                     f"{tuple(a.shape)}, but the parameter has shape "
                                     f"{tuple(p.shape)}; it was saved from a model with "
                                     f"different shapes.")
            self._slots[name] = {k: _onto(v, p) for k, v in self._slots[name].items()}
            self._shapes[name] = tuple(p.shape)
        self._unchecked = set()

    def to(self, backend: str, device: Any = None) -> Optimizer:
        """Move the state to ``backend`` on ``device`` (``pn.to_backend`` for every slot)."""
        self._slots = {name: {k: to_backend(v, backend, device) for k, v in slots.items()}
                       for name, slots in self._slots.items()}
        return self

    # -- configuration -----------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """``{"class_name": ..., "config": {constructor arguments}}`` (JSON-able; a schedule as
        its own config); ``optimizers.get(config)`` builds the same optimizer (no state)."""
        lr = self._learning_rate
        config: dict[str, Any] = {
            "learning_rate": schedules._config_of(lr) if callable(lr) else lr,
        }
        config.update(self._hyperparameters())
        config.update(weight_decay=self.weight_decay, clip_value=self.clip_value,
                      clip_norm=self.clip_norm, global_clip_norm=self.global_clip_norm,
                      inplace=self.inplace, flat=self.flat)
        return make_config(type(self).__name__, config)

    def __repr__(self) -> str:
        args = {"learning_rate": self._learning_rate, **self._hyperparameters()}
        if self.weight_decay:
            args["weight_decay"] = self.weight_decay
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _dtype_name(dtype: Any) -> str:
    """``float32`` for numpy, torch, jax and array_api_strict's dtype objects alike."""
    return str(dtype).rsplit(".", 1)[-1]


def _copy(a: Array) -> Array:
    return compat.array_namespace(a).asarray(a, copy=True)


def _onto(a: Array, like: Array) -> Array:
    """A copy of ``a`` on the backend and device of ``like``, in its dtype (loading a
    checkpoint: the optimizer must own its state, since the in-place path writes into it)."""
    adapter = adapter_of(like)
    moved = to_backend(a, adapter.name, compat.device(like))
    # A copy (to_backend may return a itself, or share its memory through DLPack), in like's
    # memory layout too: the in-place update then reads state and gradient in one pass.
    return adapter.copy_like(moved, like)
