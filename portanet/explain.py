"""A traced batch: one training step of a small network, every formula with its numbers.

``pn.explain(model, x, y)`` runs one training step of ``model`` on the batch ``(x, y)`` and
returns a :class:`Trace` of everything that happened, in the order it happened::

    1. forward   z1 = x·W1 + b1,  h1 = σ(z1), ... ŷ        each layer, with the actual numbers
    2. loss      L = (1/(N·D)) Σ (ŷ − y)²,  dL/dŷ         the loss and the gradient it returns
    3. backward  dL/dz2 = dL/dŷ ⊙ σ'(z2),  dL/dW2 = h1ᵀ·dL/dz2,  dL/db2 = Σₙ dL/dz2,
                 dL/dh1 = dL/dz2·W2ᵀ, ...                 each layer in reverse
    4. update    W1 ← W1 − η·dL/dW1, ...                  every parameter: old, gradient, new

The formulas are the textbook ones; the numbers are what portanet computed. They are not
recomputed here: the step runs through the real code path (``model.train_step``: the engine, the
layers' ``forward`` and ``backprop``, the loss, the optimizer's ``update``) on a copy of the
model, and the trace records what passes through it. Each top-level layer's ``forward`` and the
``backprop`` it returns are wrapped on the copy; a Dense layer's activation is wrapped so that
both its input z and its output h = f(z) are seen (Dense computes ``z = x @ W + b`` and then
calls its activation object, portanet/layers/dense.py); the loss and the optimizer's ``update``
are wrapped the same way. ``model`` itself is not changed: ``trace.model`` is the copy after
the step, and its parameters are bit for bit those ``model.train_step(x, y)`` gives (with the
eager executor; a compiled step, ``jax.jit`` under ``jit_compile="auto"``, agrees with the eager
one to rounding).

Dense and Activation layers are shown number by number. Any other layer (Conv2D, Dropout,
BatchNorm, a nested Sequential, ...) is shown generically: the shapes and norms of what went in,
what came out and its gradients. The kernel of a Dense layer is stored (in, out), so a batch
of rows x (N, in) gives ``z = x·W + b`` (N, out): the transpose of the textbook's ``W·x``.

Big models are refused: a trace prints every number of the arrays it shows, so an array with
more than ``max_values`` entries raises a ``ValueError`` that says which array it was (pass a
larger ``max_values``, or explain a smaller network or batch).

``pn.explain`` is this module's :func:`explain` function. The module keeps its other names
(``from portanet.explain import Trace``); since the package attribute ``portanet.explain`` is
the function, reach the module itself with ``importlib.import_module("portanet.explain")``
(``import portanet.explain as m`` binds the function too, as with ``torch.autograd.gradcheck``).

Examples:
    The 2-2-2 sigmoid network of Matt Mazur's "A Step by Step Backpropagation Example":

    >>> import numpy as np, portanet as pn
    >>> model = pn.Sequential([pn.layers.Dense(2, 2, activation="sigmoid"),
    ...                        pn.layers.Dense(2, 2, activation="sigmoid")],
    ...                       loss="mse", optimizer=pn.optimizers.SGD(0.5), dtype="float64")
    >>> model.set_parameters({"0.kernel": np.asarray([[0.15, 0.25], [0.20, 0.30]]),
    ...                       "0.bias": np.asarray([0.35, 0.35]),
    ...                       "1.kernel": np.asarray([[0.40, 0.50], [0.45, 0.55]]),
    ...                       "1.bias": np.asarray([0.60, 0.60])})
    >>> trace = pn.explain(model, [[0.05, 0.10]], [[0.01, 0.99]])
    >>> print(trace.find("z1"))
    z1 = x·W1 + b1
       = [[0.05, 0.1]]·[[0.15, 0.25], [0.2, 0.3]] + [0.35, 0.35]
       = [[0.3775, 0.3925]]
    >>> round(trace.loss, 9)
    0.298371109
    >>> trace.parameters_after["1.kernel"].round(8).tolist()
    [[0.35891648, 0.51130127], [0.40866619, 0.56137012]]
"""

from __future__ import annotations

import copy
import html
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat as compat

from . import activations
from ._typing import Array
from .backend import use_backend
from .devices import device_of, to_numpy
from .layers.activation import Activation
from .layers.base import deserialize, serialize
from .layers.dense import Dense
from .model import Sequential
from .optimizers.sgd import SGD
from .training import to_model

__all__ = ["Step", "Trace", "Value", "explain"]

_TITLES = {"forward": "1. Forward pass", "loss": "2. Loss",
           "backward": "3. Backward pass (the chain rule, last layer first)",
           "update": "4. Parameter update"}

# The textbook symbol of an activation where it has one (others print under their name).
_SYMBOLS = {"sigmoid": "σ", "identity": "id"}


# =============================================================================================
# What a trace holds: values, steps
# =============================================================================================
@dataclass(frozen=True)
class Value:
    """An array of the traced step, copied to the host.

    Attributes:
        shape: the array's shape.
        dtype: its dtype name ("float64").
        norm: its Euclidean norm (None for integer arrays, such as class ids).
        array: the values as a NumPy array on the host, or None where only the shape and the
            norm were kept (the layers shown generically).
        summarize: True to print the shape and the norm instead of every number.
    """

    shape: tuple[int, ...]
    dtype: str
    norm: float | None
    array: Any = None
    summarize: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def format(self, precision: int) -> str:
        """Every number (nested lists, ``precision`` significant digits), or a summary."""
        if self.summarize or self.array is None:
            shape = "×".join(str(n) for n in self.shape) or "scalar"
            norm = "" if self.norm is None else f", norm {_number(self.norm, precision)}"
            return f"[{shape} {self.dtype}{norm}]"
        return _nested(self.array.tolist(), precision)


@dataclass(frozen=True)
class Step:
    """One formula of the trace: ``lhs = formula`` with its operands and its result.

    ``formula`` is a template in which ``{0}``, ``{1}``, ... stand for the operands: the first
    printed line fills them with the operands' names (the textbook formula), the second with
    their numbers, and the last line is the result portanet computed::

        z1 = x·W1 + b1                                          formula "{0}·{1} + {2}"
           = [[0.05, 0.1]]·[[0.15, 0.25], [0.2, 0.3]] + [0.35, 0.35]
           = [[0.3775, 0.3925]]                                 result

    Attributes:
        phase: "forward", "loss", "backward" or "update".
        where: what computed it ("layer 1: Dense(2 → 2, sigmoid)", "loss: MeanSquaredError",
            "parameter 0.kernel").
        lhs: the symbol computed ("z1", "dL/dW1"); empty for a note line.
        formula: the template ("" for a value shown as it is).
        operands: (name, Value or Python number) for each placeholder.
        result: the Value computed (None when nothing was computed: see ``note``).
        relation: "=" or "←" (an update).
        definition: what a function in the formula means ("σ(x) = 1 / (1 + exp(-x))").
        note: a remark in words.
        extra: more (label, Value) lines shown under the result (an optimizer's state).
        substitute: False to list the operands' numbers under the formula instead of writing
            them into it (where they would not read well, such as class ids).
    """

    phase: str
    where: str
    lhs: str
    formula: str = ""
    operands: tuple[tuple[str, Any], ...] = ()
    result: Value | None = None
    relation: str = "="
    definition: str = ""
    note: str = ""
    extra: tuple[tuple[str, Any], ...] = ()
    substitute: bool = True

    def lines(self, precision: int = 6) -> list[str]:
        """The printed lines (no indentation of the block itself)."""
        if not self.lhs:
            return [f"({self.note})"] if self.note else []
        head = f"{self.lhs} {self.relation} "
        pad = " " * (len(self.lhs) + 1) + "= "
        names = [name for name, _ in self.operands]
        numbers = [_operand(v, precision) for _, v in self.operands]
        out = []
        if self.formula:
            out.append(head + self.formula.format(*names))
            if self.operands and self.substitute:
                out.append(pad + self.formula.format(*numbers))
            elif self.operands:
                out += [f"{' ' * len(pad)}{name} = {number}"
                        for name, number in zip(names, numbers, strict=True)]
            if self.result is not None:
                out.append(pad + self.result.format(precision))
        elif self.result is not None:
            out.append(head + self.result.format(precision))
        else:  # nothing computed: the note says why
            return [f"{self.lhs}: {self.note}"]
        indent = " " * len(pad)
        out += [f"{indent}{label} = {_operand(v, precision)}" for label, v in self.extra]
        if self.definition:
            out.append(f"{indent}where {self.definition}")
        if self.note and self.lhs:
            out.append(f"{indent}({self.note})")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class Trace:
    """Everything one training step computed, formula by formula (what :func:`explain` returns).

    Print it (``str(trace)``), or render it for a notebook or a page: :meth:`to_markdown`,
    :meth:`to_html` (self-contained, no JavaScript; Jupyter shows it by itself).

    Attributes:
        steps: the :class:`Step` list, in the order the training step ran them.
        header: lines describing the model, the batch, the loss and the optimizer.
        loss: the value ``model.train_step`` returned (the loss plus any regularization
            penalties), as a Python float.
        parameters_before, parameters_after: {parameter name: NumPy array} around the step.
        gradients: {parameter name: NumPy array}: what the optimizer received (including the
            regularizers' gradients).
        model: the copy of the model that took the step; continue training it, or compare it.
        precision: significant digits printed (change it with ``to_text(precision=...)``).
    """

    def __init__(self, steps: list[Step], header: list[str], loss: float,
                 parameters_before: dict[str, Any], parameters_after: dict[str, Any],
                 gradients: dict[str, Any], model: Sequential, precision: int):
        self.steps = steps
        self.header = header
        self.loss = loss
        self.parameters_before = parameters_before
        self.parameters_after = parameters_after
        self.gradients = gradients
        self.model = model
        self.precision = precision

    # -- looking things up ---------------------------------------------------------------------
    @property
    def symbols(self) -> list[str]:
        """The symbols the forward, loss and backward steps computed ("z1", "dL/dW2", ...)."""
        return [s.lhs for s in self.steps
                if s.lhs and s.phase != "update" and s.result is not None]

    def find(self, symbol: str) -> Step:
        """The step that computed ``symbol``: "z1", "dL/dW2", or for an update the parameter's
        symbol or name ("W1" or "0.kernel")."""
        for s in self.steps:
            if s.lhs == symbol and s.phase != "update":
                return s
        for s in self.steps:
            if s.phase == "update" and (s.lhs == symbol or
                                        s.where.split(" ")[1] == symbol):
                return s
        raise KeyError(f"no step computed {symbol!r}; the trace has {self.symbols} and the "
                       f"updates of {list(self.parameters_after)}.")

    def __getitem__(self, symbol: str):
        """The host (NumPy) array of ``symbol``: ``trace["h1"]``, ``trace["dL/dW2"]``."""
        value = self.find(symbol).result
        if value is None or value.array is None:
            raise KeyError(f"{symbol!r} was not kept number by number (a layer shown "
                           "generically keeps shapes and norms only).")
        return value.array

    # -- rendering -------------------------------------------------------------------------------
    def _blocks(self):
        """(phase, where, [steps]) groups: consecutive steps of one layer in one phase."""
        groups: list[tuple[str, str, list[Step]]] = []
        for s in self.steps:
            if groups and groups[-1][0] == s.phase and groups[-1][1] == s.where:
                groups[-1][2].append(s)
            else:
                groups.append((s.phase, s.where, [s]))
        return groups

    def _lines(self, precision: int, steps: list[Step]) -> list[str]:
        out: list[str] = []
        for s in steps:
            out += s.lines(precision)
        return out

    def to_text(self, precision: int | None = None) -> str:
        """The trace as plain text (what ``str(trace)`` prints)."""
        precision = _check_precision(self.precision if precision is None else precision)
        out = list(self.header)
        phase = None
        for group_phase, where, steps in self._blocks():
            if group_phase != phase:
                phase = group_phase
                out += ["", _TITLES[phase], "-" * len(_TITLES[phase])]
            out.append(f"{where}:")
            out += ["    " + line for line in self._lines(precision, steps)]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return (f"<Trace of one training step: {len(self.steps)} steps, loss "
                f"{_number(self.loss, self.precision)}; print it to read it>")

    def to_markdown(self, precision: int | None = None, heading_level: int = 3) -> str:
        """The trace as Markdown: a heading per phase, a code block per layer."""
        precision = _check_precision(self.precision if precision is None else precision)
        if isinstance(heading_level, bool) or not isinstance(heading_level, int) or \
                not 1 <= heading_level <= 5:
            raise ValueError(f"heading_level must be an int from 1 to 5, received "
                             f"{heading_level!r}.")
        hashes = "#" * heading_level
        out = [line + "  " for line in self.header[:-1]] + self.header[-1:]
        phase = None
        for group_phase, where, steps in self._blocks():
            if group_phase != phase:
                phase = group_phase
                out += ["", f"{hashes} {_TITLES[phase]}"]
            out += ["", f"**{where}**", "", "```text", *self._lines(precision, steps), "```"]
        return "\n".join(out) + "\n"

    def to_html(self, precision: int | None = None) -> str:
        """The trace as one self-contained HTML fragment (inline style, no JavaScript)."""
        precision = _check_precision(self.precision if precision is None else precision)
        esc = html.escape
        out = ['<div class="portanet-trace" style="font-family: sans-serif; line-height: 1.4">',
               "<p>" + "<br>".join(esc(line) for line in self.header) + "</p>"]
        phase = None
        for group_phase, where, steps in self._blocks():
            if group_phase != phase:
                phase = group_phase
                out.append(f'<h3 style="margin: 1em 0 0.3em">{esc(_TITLES[phase])}</h3>')
            out.append(f'<p style="margin: 0.6em 0 0.2em"><b>{esc(where)}</b></p>')
            body = esc("\n".join(self._lines(precision, steps)))
            out.append('<pre style="margin: 0; padding: 0.4em 0.6em; background: #f6f8fa; '
                       f'overflow-x: auto">{body}</pre>')
        out.append("</div>")
        return "\n".join(out)

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


# =============================================================================================
# explain: run the step on a copy, with the layers, the loss and the optimizer wrapped
# =============================================================================================
def explain(model: Sequential, x: Any, y: Any, *, precision: int = 6,
            max_values: int = 64) -> Trace:
    """Trace one training step of ``model`` on ``(x, y)``, every formula with its numbers.

    The step runs through ``model.train_step``'s own code path on a copy of the model (same
    architecture, parameters, buffers, optimizer state and random state; the eager executor),
    so ``model`` is not changed. See the module docstring for what is shown and how.

    Args:
        model: a ``pn.Sequential`` with a loss and an optimizer.
        x: the batch of inputs, (N, ...): an array of the model's backend and device, or host
            data (NumPy, nested lists), converted as ``fit`` converts it.
        y: the targets, (N, ...).
        precision: significant digits printed (default 6); ``trace.to_text(precision=...)``
            prints again with another.
        max_values: the largest array (number of entries) the trace may print in full
            (default 64). A larger array raises a ``ValueError`` before anything is printed.

    Returns:
        The :class:`Trace`.

    Raises:
        TypeError: ``model`` is not a ``Sequential``, or an argument has the wrong type.
        ValueError: the model has no loss or optimizer, or an array to print in full has more
            than ``max_values`` entries.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"explain traces a pn.Sequential, received {type(model).__name__}. "
                        "Wrap the layers: pn.Sequential([...], loss=..., optimizer=...).")
    missing = [what for what in ("loss", "optimizer") if getattr(model, what) is None]
    if missing:
        raise ValueError(f"explain runs one training step, but this model has no "
                         f"{' and no '.join(missing)}; pass "
                         f"{', '.join(f'{m}=...' for m in missing)} to pn.Sequential(...) or "
                         "call model.compile(...).")
    precision = _check_precision(precision)
    if isinstance(max_values, bool) or not isinstance(max_values, int):
        raise TypeError(f"max_values must be a positive int, received {max_values!r}.")
    if max_values < 1:
        raise ValueError(f"max_values must be a positive int, received {max_values!r}.")
    x = to_model(model, x, "x")
    y = to_model(model, y, "y", role="y")
    capture = _Capture(max_values)
    for i, layer in enumerate(model.layers, start=1):
        if _shown_in_full(layer):
            for key, p in layer.parameters.items():
                capture.check(p, f"the {_param_symbol(layer, key, i)} of layer {i} "
                                 f"({_describe(layer)})")
    capture.check(x, "x, the batch of inputs")
    capture.check(y, "y, the batch of targets")

    clone = _copy_of(model)
    before = {name: capture.host(p) for name, p in clone.named_parameters().items()}
    penalties = clone.named_regularizers()
    penalty = float(clone.regularization_loss()) if penalties else 0.0
    records = [_LayerRecord(i, layer) for i, layer in enumerate(clone.layers, start=1)]
    loss_record: dict[str, Any] = {}
    update_record: dict[str, Any] = {}
    undo = _instrument(clone, records, loss_record, update_record, capture)
    try:
        total = clone.train_step(x, y)
    finally:
        undo()
    after = {name: capture.host(p) for name, p in clone.named_parameters().items()}
    slots_after = {name: {k: capture.host(v) for k, v in slots.items()}
                   for name, slots in clone.optimizer.state().slots.items()}

    steps: list[Step] = []
    n_layers = len(records)
    for r in records:
        steps += _forward_steps(r, before)
    steps += _loss_steps(clone.loss, loss_record, n_layers, penalty,
                         capture.full(total, "the loss"))
    stop = next((i for i, layer in enumerate(clone.layers)
                 if layer.num_trainable_parameters > 0), len(clone.layers))
    for r in reversed(records):
        steps += _backward_steps(r, before, n_layers, stop)
    symbols, full = {}, {}
    for i, layer in enumerate(clone.layers, start=1):
        for name in layer.named_parameters():
            symbols[f"{i - 1}.{name}"] = _param_symbol(layer, name, i)
            full[f"{i - 1}.{name}"] = _shown_in_full(layer)
    steps += _update_steps(clone.optimizer, update_record, before, after, slots_after,
                           symbols, full, penalties)
    header = _header(model, x, y)
    gradients = {name: v.array for name, v in update_record.get("grads", {}).items()}
    return Trace(steps, header, float(total), before, after, gradients, clone, precision)


# ---------------------------------------------------------------------------------------------
# The copy
# ---------------------------------------------------------------------------------------------
def _copy_of(model: Sequential) -> Sequential:
    """The same model, eager: its layers (rebuilt from their configs), parameters, buffers,
    random state, and copies of its loss and optimizer (with the optimizer's state)."""
    backend = model.backend
    with use_backend(backend.name, backend.device):
        layers = [deserialize(serialize(layer)) for layer in model.layers]
        # deep copies, not configs: a learning rate may be any callable, and the optimizer's
        # slots and step count must be exactly the model's
        clone = type(model)(layers, loss=copy.deepcopy(model.loss),
                            optimizer=copy.deepcopy(model.optimizer), seed=model.seed,
                            dtype=model.dtype, name=model.name, jit_compile=False)
    clone.set_parameters(model.parameters())
    buffers = model.buffers()
    if buffers:
        clone.set_buffers(buffers)
    # Dropout and the other random layers draw what the model's next step would draw
    clone.load_random_state(model.random_state())
    clone.train(model.training)
    return clone


# ---------------------------------------------------------------------------------------------
# Capturing values
# ---------------------------------------------------------------------------------------------
class _Capture:
    """Copies arrays to the host as :class:`Value` objects (a tool, not the hot path: here the
    host reads are the point), refusing arrays too big to print."""

    def __init__(self, max_values: int):
        self.max_values = max_values

    def check(self, a: Array, what: str) -> None:
        n = math.prod(a.shape)
        if n > self.max_values:
            raise ValueError(
                f"explain prints every number of the arrays it traces, and {what} has {n:,} "
                f"values (shape {tuple(a.shape)}), more than max_values={self.max_values}. "
                f"Explain a smaller network or batch (for example x[:1], y[:1]), or pass "
                f"max_values={n} to print them all.")

    @staticmethod
    def host(a: Array):
        # to_numpy may return a view of host memory: copy, since the optimizer updates in place
        return to_numpy(a).copy()

    def full(self, a: Array, what: str) -> Value:
        self.check(a, what)
        return _value_of(self.host(a))

    @staticmethod
    def summary(a: Array) -> Value:
        xp = compat.array_namespace(a)
        norm = None
        if xp.isdtype(a.dtype, "real floating"):
            norm = float(xp.sqrt(xp.sum(a * a)))
        return Value(tuple(a.shape), _dtype(a), norm)


def _value_of(h: Any, summarize: bool = False) -> Value:
    """A Value from a host (NumPy) array."""
    flat = _flat(h.tolist())
    floating = h.dtype.kind == "f"
    norm = math.sqrt(math.fsum(v * v for v in flat)) if floating else None
    return Value(tuple(h.shape), str(h.dtype), norm, h, summarize)


def _dtype(a: Array) -> str:
    return str(a.dtype).rsplit(".", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Wrapping the copy's layers, loss and optimizer (only the copy's; undone after the step)
# ---------------------------------------------------------------------------------------------
class _LayerRecord:
    """What passed through one top-level layer."""

    def __init__(self, index: int, layer: Any):
        self.index = index
        self.layer = layer
        self.full = _shown_in_full(layer)
        frozen = "" if layer.trainable else " (frozen: trainable=False, not updated)"
        self.label = f"layer {index}: {_describe(layer)}{frozen}"
        self.values: dict[str, Any] = {}
        self.backward = False  # reached by the backward pass
        self.input_gradient = True

    def value(self, capture: _Capture, a: Array | None, what: str) -> Value | None:
        """``a`` number by number (Dense, Activation) or by shape and norm (other layers)."""
        if a is None:
            return None
        if self.full:
            return capture.full(a, f"{what} of {self.label}")
        return capture.summary(a)

    def keep(self, capture: _Capture, key: str, a: Array | None, what: str) -> None:
        self.values[key] = self.value(capture, a, what)


class _TracedActivation:
    """Stands in for a Dense layer's activation object: calls it, keeps z, f'(z) and dL/dz."""

    def __init__(self, act: Any, record: _LayerRecord, capture: _Capture):
        self._act, self._record, self._capture = act, record, capture

    def __getattr__(self, name: str) -> Any:
        return getattr(self._act, name)

    def __call__(self, z: Array):
        record, capture = self._record, self._capture
        record.keep(capture, "z", z, "z")
        record.keep(capture, "derivative", _derivative(self._act, z), "f'(z)")
        h, backprop = self._act(z)

        def traced_backprop(dh: Array) -> Array:
            dz = backprop(dh)
            record.keep(capture, "dz", dz, "dL/dz")
            return dz

        return h, traced_backprop

    def with_bias(self, z: Array, b: Array):
        # Dense's act(z + b), which a fused kernel would compute without z + b ever existing:
        # the explanation shows z = x·W + b, so the bias is added here and z traced as above.
        z += b
        return self(z)


class _TracedLoss:
    """Stands in for the model's loss: calls it, keeps ŷ, y, the value and dL/dŷ."""

    def __init__(self, loss: Any, record: dict[str, Any], capture: _Capture):
        self._loss, self._record, self._capture = loss, record, capture

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loss, name)

    def __call__(self, y_pred: Array, y_true: Array):
        value, grad = self._loss(y_pred, y_true)
        c = self._capture
        self._record.update(y_pred=c.full(y_pred, "ŷ, the model's output"),
                            y_true=c.full(y_true, "y, the targets"),
                            value=c.full(value, "the loss"),
                            grad=c.full(grad, "dL/dŷ"))
        return value, grad


def _instrument(clone: Sequential, records: list[_LayerRecord], loss_record: dict[str, Any],
                update_record: dict[str, Any], capture: _Capture) -> Callable[[], None]:
    """Wrap the copy's layers, loss and optimizer update; returns the function that unwraps."""
    activations_of = {}
    for r in records:
        layer = r.layer
        if isinstance(layer, Dense) and layer.activation is not None:
            activations_of[r.index] = layer.activation
            layer.activation = _TracedActivation(layer.activation, r, capture)
        layer.forward = _traced_forward(layer.forward, r, capture)
    loss = clone.loss
    clone.loss = _TracedLoss(loss, loss_record, capture)
    optimizer = clone.optimizer
    original_update = optimizer.update

    def update(grads, state, params, scalars=None, inplace=None, flat=None):
        # before the call: the in-place path writes into the parameters
        update_record["grads"] = {k: _value_of(capture.host(g)) for k, g in grads.items()}
        update_record["scalars"] = dict(scalars or optimizer.scalars(state.step))
        return original_update(grads, state, params, scalars, inplace, flat)

    optimizer.update = update

    def undo() -> None:
        for r in records:
            del r.layer.forward  # the class's method again
            if r.index in activations_of:
                r.layer.activation = activations_of[r.index]
        clone.loss = loss
        del optimizer.update

    return undo


def _traced_forward(forward: Callable, r: _LayerRecord, capture: _Capture) -> Callable:
    def traced(x, training=None, **kwargs):
        r.keep(capture, "x", x, "the input")
        y, backprop = forward(x, training, **kwargs)
        r.keep(capture, "y", y, "the output")
        if isinstance(r.layer, Activation) and r.layer.activation is not None:
            r.keep(capture, "derivative", _derivative(r.layer.activation, x), "f'(x)")

        def traced_backprop(dy, *args, **kw):
            r.backward = True
            r.keep(capture, "dy", dy, "dL/dy")
            dx = backprop(dy, *args, **kw)
            r.input_gradient = dx is not None
            r.keep(capture, "dx", dx, "dL/dx")
            r.values["gradients"] = {name: r.value(capture, g, f"the gradient of {name}")
                                     for name, g in r.layer.named_gradients().items()}
            return dx

        return y, traced_backprop

    return traced


def _derivative(act: Any, z: Array) -> Array | None:
    """f'(z) from the activation's documented derivative (``activations.<name>_derivative``);
    None for softmax and the other activations that are not elementwise."""
    try:
        return act.derivative(z)
    except TypeError:
        return None


# ---------------------------------------------------------------------------------------------
# Building the steps from the records
# ---------------------------------------------------------------------------------------------
def _shown_in_full(layer: Any) -> bool:
    return isinstance(layer, (Dense, Activation))


def _describe(layer: Any) -> str:
    """"Dense(2 → 2, sigmoid)", "Activation(tanh)", "Dropout" ..."""
    if isinstance(layer, Dense):
        act = "" if layer.activation is None else f", {layer.activation.name}"
        bias = "" if layer.use_bias else ", no bias"
        return f"Dense({layer.in_features} → {layer.out_features}{act}{bias})"
    return layer.kind


def _param_symbol(layer: Any, name: str, index: int) -> str:
    """W3 and b3 for the Dense layer number 3; the parameter's full name otherwise ("2.gamma",
    "2.block.0.kernel")."""
    if isinstance(layer, Dense):
        return {"kernel": f"W{index}", "bias": f"b{index}"}[name]
    return f"{index - 1}.{name}"


def _act_symbol(act: Any) -> str:
    return _SYMBOLS.get(act.name, act.name)


def _definition(act: Any) -> str:
    """The activation's formula and derivative as its docstring in portanet.activations states
    them ("f(x) = 1 / (1 + exp(-x)) and f'(x) = f(x) * (1 - f(x))"), with its parameters."""
    fn = getattr(activations, act.name, None)
    doc = inspect.getdoc(fn) if callable(fn) else None
    found = re.search(r"Formula:(.*?)(?:\n\s*\n|$)", doc or "", re.S)
    if not found:
        return ""
    text = " ".join(found.group(1).split())
    text = re.split(r"\.?\s+Range:", text)[0].rstrip(" .")
    parts = [p.strip() for p in text.split(";") if p.strip()]
    formula = parts[0]
    derivative = next((p for p in parts[1:] if p.startswith("f'")), "")
    symbol = _act_symbol(act)
    out = formula.replace("f(x)", f"{symbol}(x)", 1)
    if derivative:
        derivative = derivative.replace("f'(x)", f"{symbol}'(x)").replace("f(x)", f"{symbol}(x)")
        out += f" and {derivative}"
    params = ", ".join(f"{k} = {_number(v, 6)}" for k, v in getattr(act, "params", {}).items())
    source = f"portanet.activations.{act.name}"
    return f"{out}  [{source}{'; ' + params if params else ''}]"


def _forward_steps(r: _LayerRecord, before: dict[str, Any]) -> list[Step]:
    i, layer, v = r.index, r.layer, r.values
    inp = "x" if i == 1 else f"h{i - 1}"
    out = f"h{i}"
    if isinstance(layer, Dense):
        w = _value_of(before[f"{i - 1}.kernel"])
        affine = [(inp, v["x"]), (f"W{i}", w)]
        formula = "{0}·{1}"
        if layer.use_bias:
            affine.append((f"b{i}", _value_of(before[f"{i - 1}.bias"])))
            formula += " + {2}"
        if layer.activation is None:
            return [Step("forward", r.label, out, formula, tuple(affine), v["y"])]
        act = layer.activation
        symbol = _act_symbol(act)
        return [Step("forward", r.label, f"z{i}", formula, tuple(affine), v["z"]),
                Step("forward", r.label, out, symbol + "({0})", ((f"z{i}", v["z"]),), v["y"],
                     definition=_definition(act))]
    if isinstance(layer, Activation):
        if layer.activation is None:
            return [Step("forward", r.label, out, "{0}", ((inp, v["x"]),), v["y"])]
        act = layer.activation
        return [Step("forward", r.label, out, _act_symbol(act) + "({0})", ((inp, v["x"]),),
                     v["y"], definition=_definition(act))]
    return [Step("forward", r.label, out, f"{layer.kind}({{0}})", ((inp, v["x"]),), v["y"],
                 note="shown by shape and norm: explain prints Dense and Activation layers "
                      "number by number")]


# The textbook form of the common losses, with reduction "mean" or "sum" (ŷ and y are (N, D);
# for the class losses M is the number of rows, N times any axes between the first and the last).
_LOSSES = {
    ("MeanSquaredError", "mean"): ("(1/({0}·{1})) Σ ({2} − {3})²", "2({0} − {1})/({2}·{3})"),
    ("MeanSquaredError", "sum"): ("(1/{1}) Σ ({2} − {3})²", "2({0} − {1})/{3}"),
    ("MeanAbsoluteError", "mean"): ("(1/({0}·{1})) Σ |{2} − {3}|", "sign({0} − {1})/({2}·{3})"),
    ("MeanAbsoluteError", "sum"): ("(1/{1}) Σ |{2} − {3}|", "sign({0} − {1})/{3}"),
}
_CLASS_LOSSES = {  # name: (L, dL/dŷ, whether M counts rows of classes)
    "SoftmaxCrossEntropy": ("−(1/M) Σₘ Σ_c y_mc · log softmax(ŷ)_mc",
                            "(softmax(ŷ) − y)/M  (y one-hot: class ids become one-hot rows)", True),
    "CategoricalCrossEntropy": ("−(1/M) Σₘ Σ_c y_mc · log q_mc,  q = clip(ŷ, ε, 1)",
                                "−y/(q·M)", True),
    "BinaryCrossEntropy": ("−(1/(N·D)) Σ [y·log p + (1 − y)·log(1 − p)],  p = clip(ŷ, ε, 1 − ε)",
                           "(p − y)/(p(1 − p)·N·D)", False),
    "BinaryCrossEntropyWithLogits": ("(1/(N·D)) Σ [softplus(ŷ) − y·ŷ]", "(σ(ŷ) − y)/(N·D)",
                                     False),
}


def _loss_steps(loss: Any, rec: dict[str, Any], n_layers: int, penalty: float,
                total: Value) -> list[Step]:
    where = f"loss: {type(loss).__name__}(reduction={loss.reduction!r})"
    out_symbol = f"h{n_layers}" if n_layers else "x"
    y_pred, y_true = rec["y_pred"], rec["y_true"]
    name = type(loss).__name__
    note = f"ŷ = {out_symbol}, the output of the last layer"
    plain = not getattr(loss, "class_weights", None) and not getattr(loss, "label_smoothing", 0)
    if (name, loss.reduction) in _LOSSES:
        n = y_pred.shape[0]
        d = math.prod(y_pred.shape[1:])
        value_t, grad_t = _LOSSES[(name, loss.reduction)]
        steps = [Step("loss", where, "L", value_t, (("N", n), ("D", d), ("ŷ", y_pred),
                                                     ("y", y_true)), rec["value"], note=note),
                 Step("loss", where, "dL/dŷ", grad_t, (("ŷ", y_pred), ("y", y_true), ("N", n),
                                                        ("D", d)), rec["grad"])]
    elif name in _CLASS_LOSSES and loss.reduction == "mean" and plain:
        value_t, grad_t, by_rows = _CLASS_LOSSES[name]
        count = f"; M = {math.prod(y_pred.shape[:-1])} rows" if by_rows else ""
        steps = [Step("loss", where, "L", value_t, (("ŷ", y_pred), ("y", y_true)),
                      rec["value"], note=note + count, substitute=False),
                 Step("loss", where, "dL/dŷ", grad_t, (), rec["grad"])]
    else:
        steps = [Step("loss", where, "L", f"{name}({{0}}, {{1}})", (("ŷ", y_pred), ("y", y_true)),
                      rec["value"], note=note + "; see the class's docstring in portanet.losses",
                      substitute=False),
                 Step("loss", where, "dL/dŷ", "", (), rec["grad"])]
    if penalty:
        steps.append(Step("loss", where, "L_total", "{0} + {1}",
                          (("L", rec["value"]), ("Σ penalties", penalty)), total,
                          note="the regularizers' penalties at the parameters before the step"))
    return steps


def _backward_steps(r: _LayerRecord, before: dict[str, Any], n_layers: int,
                    stop: int) -> list[Step]:
    i, layer, v = r.index, r.layer, r.values
    if not r.backward:
        reason = ("the backward pass stops at the first layer whose parameters train"
                  if i - 1 < stop else "the backward pass did not reach it")
        return [Step("backward", r.label, "", note=f"not reached: {reason}")]
    inp = "x" if i == 1 else f"h{i - 1}"
    dy = "dL/dŷ" if i == n_layers else f"dL/dh{i}"
    skipped = Step("backward", r.label, f"dL/d{inp}",
                   note=f"not computed: nothing before layer {i} trains, so its input "
                        "gradient is skipped (Chain.chain)")
    if isinstance(layer, Dense):
        steps = []
        dz = dy
        if layer.activation is not None:
            act = layer.activation
            symbol = _act_symbol(act)
            dz = f"dL/dz{i}"
            if v["derivative"] is not None:
                steps.append(Step("backward", r.label, dz, "{0} ⊙ {1}",
                                  ((dy, v["dy"]), (f"{symbol}'(z{i})", v["derivative"])),
                                  v["dz"], note=f"{symbol}' is portanet.activations."
                                                f"{act.name}_derivative"))
            else:
                steps.append(Step("backward", r.label, dz, f"J_{symbol}(z{i})ᵀ·{{0}}",
                                  ((dy, v["dy"]),), v["dz"],
                                  note=f"the vector-Jacobian product of {act.name} (not "
                                       "elementwise): see portanet.activations"))
        dz_value = v["dz"] if layer.activation is not None else v["dy"]
        grads = v["gradients"]
        steps.append(Step("backward", r.label, f"dL/dW{i}", "{0}ᵀ·{1}",
                          ((inp, v["x"]), (dz, dz_value)), grads.get("kernel")))
        if layer.use_bias:
            steps.append(Step("backward", r.label, f"dL/db{i}", "Σₙ {0}", ((dz, dz_value),),
                              grads.get("bias"), note="the sum over the samples of the batch"))
        if r.input_gradient:
            w = _value_of(before[f"{i - 1}.kernel"])
            steps.append(Step("backward", r.label, f"dL/d{inp}", "{0}·{1}ᵀ",
                              ((dz, dz_value), (f"W{i}", w)), v["dx"]))
        else:
            steps.append(skipped)
        return steps
    if isinstance(layer, Activation):
        if not r.input_gradient:
            return [skipped]
        act = layer.activation
        if act is None:
            return [Step("backward", r.label, f"dL/d{inp}", "{0}", ((dy, v["dy"]),), v["dx"])]
        symbol = _act_symbol(act)
        if v.get("derivative") is not None:
            return [Step("backward", r.label, f"dL/d{inp}", "{0} ⊙ {1}",
                         ((dy, v["dy"]), (f"{symbol}'({inp})", v["derivative"])), v["dx"])]
        return [Step("backward", r.label, f"dL/d{inp}", f"J_{symbol}({inp})ᵀ·{{0}}",
                     ((dy, v["dy"]),), v["dx"])]
    steps = []
    for name, g in v["gradients"].items():
        steps.append(Step("backward", r.label, f"dL/d[{i - 1}.{name}]", "", (), g))
    if r.input_gradient:
        steps.append(Step("backward", r.label, f"dL/d{inp}", f"J_{layer.kind}ᵀ·{{0}}",
                          ((dy, v["dy"]),), v["dx"],
                          note="the layer's backprop: a vector-Jacobian product"))
    else:
        steps.append(skipped)
    return steps


def _is_plain_sgd(optimizer: Any) -> bool:
    return (isinstance(optimizer, SGD) and not optimizer.momentum
            and not optimizer.weight_decay and optimizer.clip_value is None
            and optimizer.clip_norm is None and optimizer.global_clip_norm is None)


def _update_steps(optimizer: Any, rec: dict[str, Any], before: dict[str, Any],
                  after: dict[str, Any], slots_after: dict[str, dict[str, Any]],
                  symbols: dict[str, str], full: dict[str, bool],
                  penalties: dict[str, Any]) -> list[Step]:
    steps = []
    lr = rec["scalars"]["lr"]
    kind = type(optimizer).__name__
    for name, g in rec["grads"].items():
        summarize = not full[name]
        symbol = symbols[name]
        old = _value_of(before[name], summarize)
        new = _value_of(after[name], summarize)
        g = Value(g.shape, g.dtype, g.norm, g.array, summarize)
        g_symbol = f"dL/d{symbol}" if full[name] else f"dL/d[{symbol}]"
        note = ""
        if name in penalties:
            g_symbol = f"g_{symbol}"
            note = (f"g_{symbol} = dL/d{symbol} + the gradient of {symbol}'s regularization "
                    "penalty")
        where = f"parameter {name}" + (f" ({symbol})" if symbol != name else "")
        if _is_plain_sgd(optimizer):
            steps.append(Step("update", where, symbol, "{0} − {1}·{2}",
                              ((symbol, old), ("η", lr), (g_symbol, g)), new, relation="←",
                              note=note or "plain SGD, learning rate η"))
            continue
        delta = _value_of(after[name] - before[name], summarize)
        extra = [("new − old", delta)]
        extra += [(f"{slot} (after)", _value_of(a, summarize))
                  for slot, a in slots_after.get(name, {}).items()]
        steps.append(Step("update", where, symbol, f"{kind}({{0}}, {{1}})",
                          ((symbol, old), (g_symbol, g)), new, relation="←", extra=tuple(extra),
                          definition=f"{kind} with learning rate {_number(lr, 6)} at this "
                                     f"step: its equations are in portanet.optimizers.{kind}",
                          note=note))
    return steps


def _header(model: Sequential, x: Array, y: Array) -> list[str]:
    layers = ", ".join(_describe(layer) for layer in model.layers)
    return [
        f"One training step of Sequential([{layers}]), "
        f"{model.num_parameters:,} parameters",
        f"backend {model.backend.name} on {device_of(x)}, dtype {model.dtype}; "
        f"batch x {tuple(x.shape)}, y {tuple(y.shape)}",
        f"loss {model.loss!r}; optimizer {model.optimizer!r}",
        "Dense kernels are stored (in, out): a row x (N, in) gives z = x·W + b (N, out), the "
        "transpose of the textbook's W·x.",
    ]


# ---------------------------------------------------------------------------------------------
# Number formatting
# ---------------------------------------------------------------------------------------------
def _check_precision(precision: Any) -> int:
    if isinstance(precision, bool) or not isinstance(precision, int) or \
            not 1 <= precision <= 17:
        raise ValueError(f"precision is a number of significant digits from 1 to 17, received "
                         f"{precision!r}.")
    return precision


def _number(v: Any, precision: int) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return format(float(v), f".{precision}g")


def _nested(v: Any, precision: int) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_nested(e, precision) for e in v) + "]"
    return _number(v, precision)


def _operand(v: Any, precision: int) -> str:
    return v.format(precision) if isinstance(v, Value) else _number(v, precision)


def _flat(v: Any) -> list:
    if isinstance(v, list):
        return [e for part in v for e in _flat(part)]
    return [v]
