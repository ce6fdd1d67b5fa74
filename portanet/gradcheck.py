"""Gradient checking: is the backward pass really the derivative of the forward pass?

Every activation, loss and layer in portanet comes with a hand-written derivative. This module
checks one against the definition of the derivative itself, on any backend::

    f'(x) = lim_{h -> 0} (f(x + h) - f(x)) / h                    the limit definition
    f'(x) ~ (f(x + h) - f(x - h)) / 2h                             central difference, error O(h^2)

For a scalar function L of many numbers theta, entry i of the gradient is approximated by
moving theta_i alone::

    dL/dtheta_i ~ (L(theta + h_i e_i) - L(theta - h_i e_i)) / 2 h_i
    h_i = eps^(1/3) * max(1, |theta_i|)

with eps = 2^-52 (float64), so h_i ~ 6.1e-6: the step that balances the truncation error
(~h^2 |L'''| / 6) against the rounding error (~eps |L| / h). Everything runs in float64: in
float32 (eps = 2^-23) the best achievable relative error is only ~eps^(2/3) ~ 4e-5.
``docs/gradcheck.md`` derives all of this.

What is checked, by target (L: the scalar function differentiated; a: the analytic gradient):

* an elementwise activation ("tanh"): f itself, entry by entry; a = ``tanh_derivative(x)``,
  and the backprop that layers run (``activations.get("tanh")(x)[1]``);
* softmax, log-softmax: L = <f(x), r>; a = ``softmax_vjp(f(x), r)``, and the backprop;
* a loss: L = sum(loss(y_pred, y_true)[0]); a = ``loss(y_pred, y_true)[1]``, wrt y_pred;
* a layer: L = <layer.forward(x)[0], r>; a = backprop(r) (dL/dx) and every entry of
  ``layer.gradients`` (dL/dp for each trainable parameter p);
* a model (``pn.Sequential`` with a loss): L = loss(model.forward(x), y) plus the
  regularization penalties, the value ``model.value_and_gradients(x, y)`` returns (checked to
  agree); a = its gradients, every trainable parameter.

A random projection r (seeded normal draws) turns a vector output into one number whose
gradient a single backprop gives: d<y, r>/dtheta = backprop(r). An entry passes when its
analytic value a and numerical value n agree, ``|a - n| <= atol`` or
``|a - n| / max(|a|, |n|) <= rtol``. Tensors larger than ``max_checks`` entries are checked on a
seeded random subset of that size (the report says so).

The check never touches the target: a layer or model is copied in float64 (from its config,
its parameters and buffers cast), on the target's backend and device. During the check every
random generator inside it (Dropout's, attention dropout's) restarts from the same seed before
each evaluation, so every evaluation draws the same dropout mask, and buffers (BatchNorm's
running statistics) are put back before each evaluation.

Non-smooth points (ReLU at exactly 0, tied maxima in max-pooling) have no derivative, and a
finite difference across the kink disagrees with either one-sided derivative. An entry outside
the tolerance is therefore looked at again: its one-sided slopes (L(theta + h) - L(theta)) / h
and (L(theta) - L(theta - h)) / h differ at a kink by the jump of the derivative (twice the
central difference's error), and stay the same at the step h / 16; at a smooth point they
differ only by ~h |L''|. Such an entry is reported as non-smooth (a "kink"), not as a failure.
An objective that changes between two evaluations at the same point (randomness that is not
frozen) fails the check with that reason. Default inputs (activations without an input) stay
0.05 away from the kinks of the built-in activations.

``pn.gradcheck`` is this module's :func:`gradcheck` function (as ``torch.autograd.gradcheck``
is the function of the module of the same name); the module's other names import as
``from portanet.gradcheck import GradcheckReport, main_check``.

Examples:
    >>> import portanet as pn
    >>> report = pn.gradcheck("tanh")
    >>> report.passed
    True
    >>> layer = pn.layers.Dense(3, 2, activation="tanh").build(seed=0)
    >>> x = pn.asarray(pn.random.host_normal(0, (4, 3)), dtype="float32")
    >>> report = pn.gradcheck(layer, x)       # checked on a float64 copy
    >>> report.verdict
    'passed'
    >>> [(p.name, p.checked) for p in report.parameters]
    [('x', 12), ('kernel', 6), ('bias', 2)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat as compat

from . import activations
from ._typing import Array, Shape
from .backend import Backend, adapter_of, get_backend, make_backend, use_backend
from .devices import asarray, device_of, to_numpy
from .layers.base import Layer, dtype_name
from .losses import Loss
from .plotting import guess_input_shape
from .random import Generator, host_generator, host_normal, host_uniform

__all__ = [
    "ATOL",
    "EPS",
    "MAX_CHECKS",
    "RTOL",
    "STEP",
    "GradcheckReport",
    "TensorCheck",
    "gradcheck",
    "main_check",
]

EPS = 2.0 ** -52
"""Machine epsilon of float64: the spacing of floats just above 1."""

STEP = EPS ** (1.0 / 3.0)
"""h / max(1, |theta|) = eps^(1/3) ~ 6.06e-6, the step that minimizes the central difference's
total error h^2 |f'''| / 6 + eps |f| / h (see docs/gradcheck.md)."""

RTOL = 1e-6
"""Default relative tolerance, |a - n| / max(|a|, |n|). Measured worst, over every built-in
layer, activation and loss and a small model in float64 on the test inputs of
tests/test_gradcheck.py (numpy, torch, jax, array-api-strict; entries with max(|a|, |n|) > 0.01):
2.4e-8 (TransformerEncoderBlock's attention output kernel, torch); most tensors stay below 3e-9."""

ATOL = 1e-8
"""Default absolute tolerance, for entries near 0 whose relative error is all rounding. Measured
worst absolute error among entries not within RTOL: 5.6e-17 (attention's key bias, whose true
gradient is exactly 0: softmax ignores a shift shared by all keys). The rounding in a numerical
entry is ~eps |L| / h ~ 4e-11 |L|: raise atol for objectives with |L| far above 1."""

MAX_CHECKS = 256
"""Default number of entries checked per tensor; larger tensors are checked on a seeded sample."""

_TINY = 2.2250738585072014e-308  # the smallest normal float64: 0 / 0 relative errors read as 0

# Points where a built-in activation has no derivative: default inputs keep away from them.
_KINKS = (-3.0, 0.0, 3.0, 6.0)


# =============================================================================================
# The report
# =============================================================================================
@dataclass
class TensorCheck:
    """How one tensor's analytic gradient compares with central differences.

    Attributes:
        name: what was differentiated: "x", a parameter name ("kernel", "0.bias"), "y_pred",
            or the derivative function ("tanh_derivative", "backprop").
        shape: the tensor's shape.
        checked: how many entries were compared; ``size`` how many it has.
        sampled: True when ``checked < size`` (a seeded random subset of ``max_checks``).
        max_abs_error: max |a - n| over the checked smooth entries.
        max_rel_error: max |a - n| / max(|a|, |n|, tiny) over the same entries.
        worst_index: the index (into ``shape``) of the entry furthest outside the tolerance
            (or closest to it, when all pass); ``worst_analytic`` and ``worst_numeric`` its a, n.
        failed: how many checked entries are outside the tolerance; ``failed_indices`` the first
            ten of them.
        nonsmooth: how many entries sit at a kink (one-sided slopes disagree), not counted as
            failures; ``nonsmooth_indices`` the first ten.
        missing: why there is no analytic gradient to compare with (None when there is one).
    """

    name: str
    shape: Shape
    size: int
    checked: int
    sampled: bool
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst_index: tuple[int, ...] | None = None
    worst_analytic: float = math.nan
    worst_numeric: float = math.nan
    failed: int = 0
    failed_indices: list[tuple[int, ...]] = field(default_factory=list)
    nonsmooth: int = 0
    nonsmooth_indices: list[tuple[int, ...]] = field(default_factory=list)
    missing: str | None = None

    @property
    def passed(self) -> bool:
        """True when every checked smooth entry is within the tolerance."""
        return self.missing is None and self.failed == 0

    def describe_failure(self) -> str:
        """One line naming the tensor, the worst entry and its numbers (for the verdict)."""
        if self.missing is not None:
            return f"{self.name!r}: {self.missing}"
        return (f"{self.name!r} at index {self.worst_index}: analytic {self.worst_analytic:.10g} "
                f"vs numeric {self.worst_numeric:.10g} (abs error "
                f"{abs(self.worst_analytic - self.worst_numeric):.2e}, rel error "
                f"{_relative(self.worst_analytic, self.worst_numeric):.2e}); {self.failed} of "
                f"{self.checked} checked entries outside the tolerance")


@dataclass
class GradcheckReport:
    """The result of :func:`gradcheck`: one :class:`TensorCheck` per tensor, and a verdict.

    ``str(report)`` is a readable table; ``report.passed`` (also ``bool(report)``) the verdict.

    Attributes:
        target: what was checked, e.g. "layer Dense" or "activation tanh".
        backend: the backend name; ``device`` its device; the check ran in float64 there.
        rtol, atol, max_checks: the settings used.
        parameters: the per-tensor results, in order (the input first, where there is one).
        notes: remarks worth reading with the numbers (sampling, frozen randomness, ...).
        problems: what makes the whole check fail besides a tensor, e.g. an objective that is
            not deterministic (two evaluations at the same point differ).
        value: L at the point (the rounding in each numerical entry is about eps |L| / h, so
            ``atol`` should grow with |L| when L is far from O(1)); None for activations.
    """

    target: str
    backend: str
    device: str
    rtol: float
    atol: float
    max_checks: int | None
    parameters: list[TensorCheck]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    value: float | None = None

    @property
    def passed(self) -> bool:
        """True when every tensor passed and nothing else went wrong."""
        return not self.problems and all(p.passed for p in self.parameters)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list[TensorCheck]:
        """The tensors that did not pass."""
        return [p for p in self.parameters if not p.passed]

    @property
    def verdict(self) -> str:
        """"passed", or "FAILED: " and one clause per failing tensor with its worst entry."""
        if self.passed:
            return "passed"
        return "FAILED: " + "; ".join([*self.problems,
                                       *(p.describe_failure() for p in self.failures)])

    def __getitem__(self, name: str) -> TensorCheck:
        """The check of one tensor by name: ``report["kernel"]``."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(f"no tensor {name!r} in this report; it has "
                       f"{[p.name for p in self.parameters]}.")

    def __str__(self) -> str:
        header = ("tensor", "shape", "checked", "max abs err", "max rel err", "worst index",
                  "analytic", "numeric", "")
        rows = [header]
        for p in self.parameters:
            if p.missing is not None:
                rows.append((p.name, str(p.shape), "-", "-", "-", "-", "-", "-", "MISSING"))
                continue
            checked = f"{p.checked}/{p.size}" + ("*" if p.sampled else "")
            kinks = f" ({p.nonsmooth} kink)" if p.nonsmooth == 1 else (
                f" ({p.nonsmooth} kinks)" if p.nonsmooth else "")
            rows.append((p.name, str(p.shape), checked, f"{p.max_abs_error:.2e}",
                         f"{p.max_rel_error:.2e}", str(p.worst_index),
                         f"{p.worst_analytic:.6g}", f"{p.worst_numeric:.6g}",
                         ("ok" if p.passed else f"FAILED ({p.failed})") + kinks))
        widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
        right = {3, 4, 6, 7}
        lines = [f"gradcheck of {self.target} on {self.backend} ({self.device}), float64",
                 f"central differences, h = {STEP:.2e} * max(1, |theta|)"
                 + ("" if self.value is None else f", at L = {self.value:.10g}"),
                 f"an entry passes if |a - n| <= {self.atol:g} or |a - n| / max(|a|, |n|) <= "
                 f"{self.rtol:g} (a: analytic, n: numeric)"]
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines.append(rule)
        for j, r in enumerate(rows):
            cells = [f"{c:>{w}}" if i in right else f"{c:<{w}}"
                     for i, (c, w) in enumerate(zip(r, widths, strict=True))]
            lines.append("  ".join(cells).rstrip())
            if j == 0:
                lines.append(rule)
        lines.append(rule)
        if any(p.sampled for p in self.parameters):
            lines.append(f"* a seeded random subset of max_checks={self.max_checks} entries")
        if any(p.nonsmooth for p in self.parameters):
            lines.append("kink: an entry at a non-smooth point (the one-sided slopes differ); "
                         "not counted as a failure")
        lines += self.notes
        lines.append(self.verdict)
        return "\n".join(lines)


def _relative(a: float, n: float) -> float:
    return abs(a - n) / max(abs(a), abs(n), _TINY)


def _unravel(flat: int, shape: Shape) -> tuple[int, ...]:
    index = []
    for n in reversed(shape):
        flat, i = divmod(flat, n)
        index.append(i)
    return tuple(reversed(index))


def _within(a: float, n: float, rtol: float, atol: float) -> bool:
    err = abs(a - n)
    return err <= atol or err <= rtol * max(abs(a), abs(n))


class _Probe:
    """Finite differences of L along the entries of one tensor, at step h / shrink (cached).

    ``compute(indices, shrink)`` returns three lists aligned with ``indices``: the central
    difference and the forward and backward one-sided slopes.
    """

    def __init__(self, compute: Callable[[list[int], int], tuple[list, list, list]]):
        self._compute = compute
        self._cache: dict[tuple[tuple[int, ...], int], tuple[list, list, list]] = {}

    def slopes(self, indices: Sequence[int], shrink: int = 1) -> tuple[list, list, list]:
        key = (tuple(indices), shrink)
        if key not in self._cache:
            self._cache[key] = self._compute(list(indices), shrink)
        return self._cache[key]


_SHRINK = 16  # the second, smaller step that tells a kink from a wrong derivative


def _is_kink(a: float, err: float, up: float, down: float, fine: tuple[float, float, float],
             rtol: float, atol: float) -> bool:
    """Whether an entry outside the tolerance sits at (or within h of) a kink of L.

    At a kink L is continuous but its slope jumps by J: the one-sided slopes ``up`` and
    ``down`` differ by ~J, twice the central difference's error when ``a`` is one of them, and
    they stay the same at the smaller step (``fine``: central, up, down at h / 16); ``a`` is
    one of them or between (a subgradient). A kink within h but not within h / 16 of the point
    shows instead as a smaller step that agrees with ``a``. A wrong derivative at a smooth point
    has up ~ down (they differ by ~h |L''|), and a jump or noise in L (a dropout mask drawn
    anew) gives slopes that grow like 1 / h: neither passes.
    """
    n_fine, up_fine, down_fine = fine
    spread = abs(up - down)
    if not spread >= err:
        return False
    if _within(a, n_fine, rtol, atol):
        return True
    steady = abs(up_fine - up) <= 0.25 * spread and abs(down_fine - down) <= 0.25 * spread
    between = min(up, down) - 0.25 * spread <= a <= max(up, down) + 0.25 * spread
    return steady and between


def _summarize(name: str, shape: Shape, size: int, indices: Sequence[int],
               analytic: Sequence[float], probe: _Probe, rtol: float,
               atol: float) -> TensorCheck:
    """Compare analytic values (aligned with ``indices``) with the probe's, entry by entry.

    An entry outside the tolerance is looked at again with the step h / 16: it is counted as
    non-smooth when :func:`_is_kink` says so, and fails otherwise.
    """
    check = TensorCheck(name, tuple(shape), size, len(indices), len(indices) < size)
    numeric, forward, backward = probe.slopes(indices)
    suspects = [j for j, (a, n) in enumerate(zip(analytic, numeric, strict=True))
                if not _within(a, n, rtol, atol)]
    finer = {}
    if suspects:
        fine = probe.slopes([indices[j] for j in suspects], _SHRINK)
        finer = dict(zip(suspects, zip(*fine, strict=True), strict=True))
    worst_score = -1.0
    for j, (i, a, n) in enumerate(zip(indices, analytic, numeric, strict=True)):
        err = abs(a - n)
        rel = _relative(a, n)
        if j in finer and math.isfinite(err) and _is_kink(a, err, forward[j], backward[j],
                                                          finer[j], rtol, atol):
            check.nonsmooth += 1
            if len(check.nonsmooth_indices) < 10:
                check.nonsmooth_indices.append(_unravel(i, shape))
            continue
        if not math.isfinite(err):  # NaN or inf on either side is always a failure
            err = rel = math.inf
        check.max_abs_error = max(check.max_abs_error, err)
        check.max_rel_error = max(check.max_rel_error, rel)
        if j in finer:
            check.failed += 1
            if len(check.failed_indices) < 10:
                check.failed_indices.append(_unravel(i, shape))
        # How far outside the tolerance (> 1 fails): the smaller of the two ratios decides.
        score = min(err / max(atol, _TINY), rel / max(rtol, _TINY))
        if score > worst_score:
            worst_score = score
            check.worst_index, check.worst_analytic, check.worst_numeric = (
                _unravel(i, shape), a, n)
    return check


# =============================================================================================
# Central differences
# =============================================================================================
def _host_list(x: Array) -> list[float]:
    """The entries of ``x`` as Python floats, in C order (one host read)."""
    xp = compat.array_namespace(x)
    return to_numpy(xp.reshape(x, (-1,))).tolist()


def _sample(size: int, max_checks: int | None, seed: int, stream: tuple[int, ...]) -> list[int]:
    """Every flat index, or ``max_checks`` of them drawn without replacement (sorted)."""
    if max_checks is None or size <= max_checks:
        return list(range(size))
    chosen = host_generator(seed, stream).choice(size, size=max_checks, replace=False)
    return sorted(int(i) for i in chosen.tolist())


def _entry_probe(theta: Array, install: Callable[[Array], None],
                 objective: Callable[[], float], base: float) -> _Probe:
    """Differences moving one entry of ``theta`` at a time, by +-h, h = STEP max(1, |theta_i|).

    ``install(array)`` puts a value in place of ``theta``; ``objective()`` evaluates L there;
    ``base`` is L at ``theta``. The step actually taken, (theta_i + h) - (theta_i - h), is
    computed on the host from the two float64 values that were installed, so rounding in
    theta_i +- h does not bias the quotient. ``theta`` is installed again after each use.
    """
    xp = compat.array_namespace(theta)
    device = compat.device(theta)
    shape = tuple(theta.shape)
    flat = xp.reshape(theta, (-1,))
    positions = xp.arange(flat.shape[0], device=device)
    values = _host_list(theta)

    def moved(i: int, v: float) -> Array:
        return xp.reshape(xp.where(positions == i,
                                   xp.asarray(v, dtype=xp.float64, device=device), flat), shape)

    def compute(indices: list[int], shrink: int):
        numeric, forward, backward = [], [], []
        try:
            for i in indices:
                t = values[i]
                h = STEP * max(1.0, abs(t)) / shrink
                up, down = t + h, t - h
                install(moved(i, up))
                l_up = objective()
                install(moved(i, down))
                l_down = objective()
                numeric.append((l_up - l_down) / (up - down))
                forward.append((l_up - base) / (up - t))
                backward.append((base - l_down) / (t - down))
        finally:
            install(theta)
        return numeric, forward, backward

    return _Probe(compute)


def _elementwise_probe(f: Callable[[Array], Array], x: Array) -> _Probe:
    """Differences of an elementwise ``f``: each output depends on its own input only, so every
    entry moves at once and one pair of evaluations gives every slope (of f, not of a sum)."""
    xp = compat.array_namespace(x)

    def compute(indices: list[int], shrink: int):
        h = (STEP / shrink) * xp.maximum(xp.abs(x), 1.0)
        up, down = x + h, x - h
        f_up, f_x, f_down = f(up), f(x), f(down)
        slopes = [_host_list((f_up - f_down) / (up - down)), _host_list((f_up - f_x) / (up - x)),
                  _host_list((f_x - f_down) / (x - down))]
        return tuple([s[i] for i in indices] for s in slopes)

    return _Probe(compute)


def _check_entries(name: str, theta: Array, analytic: Array, install: Callable[[Array], None],
                   objective: Callable[[], float], base: float, indices: Sequence[int],
                   rtol: float, atol: float) -> TensorCheck:
    """Central differences along ``indices`` of ``theta`` against the ``analytic`` gradient."""
    flat = _host_list(analytic)
    return _summarize(name, tuple(theta.shape), math.prod(theta.shape), indices,
                      [flat[i] for i in indices], _entry_probe(theta, install, objective, base),
                      rtol, atol)


def _projection(y: Array, seed: int, k: int) -> Array:
    """Fixed random weights r (standard normal, seeded) like ``y``: L = <y, r>."""
    host = host_normal(seed, tuple(y.shape), stream=(7, k))
    return adapter_of(y).from_numpy(host, compat.device(y))


def _inner(ys: Sequence[Array], rs: Sequence[Array]) -> float:
    """sum_k <y_k, r_k> as a Python float (one host read)."""
    xp = compat.array_namespace(ys[0])
    total = xp.sum(ys[0] * rs[0])
    for y, r in zip(ys[1:], rs[1:], strict=True):
        total = total + xp.sum(y * r)
    return float(total)


def _as_float64(x: Array) -> Array:
    """``x`` cast to float64 in its own namespace and device (integers and booleans kept)."""
    xp = compat.array_namespace(x)
    if xp.isdtype(x.dtype, "real floating") and x.dtype != xp.float64:
        return xp.astype(x, xp.float64)
    return x


def _to_array(x: Any, what: str) -> Array:
    """Arrays pass through; host data (lists, scalars) goes onto the active backend in float64."""
    if compat.is_array_api_obj(x):
        return x
    try:
        return asarray(x, dtype="float64")
    except (TypeError, ValueError) as err:
        raise TypeError(f"gradcheck: {what} must be an array or nested lists of numbers, "
                        f"received {type(x).__name__} ({err}).") from None


def _is_float(x: Array) -> bool:
    return compat.array_namespace(x).isdtype(x.dtype, "real floating")


# =============================================================================================
# Activations
# =============================================================================================
def _default_activation_input(seed: int) -> Array:
    """12 values in [-4, 4], each at least 0.05 from the kinks -3, 0, 3 and 6, on the active
    backend in float64."""
    values = host_uniform(seed, (12,), -4.0, 4.0, stream=(7, 0)).tolist()
    values = [v + 0.1 if any(abs(v - k) < 0.05 for k in _KINKS) else v for v in values]
    backend = get_backend()
    return backend.xp.reshape(
        backend.xp.asarray(values, dtype=backend.xp.float64, device=backend.device), (3, 4))


def _check_activation(target: Any, inputs: tuple, rtol: float, atol: float,
                      max_checks: int | None, seed: int) -> GradcheckReport:
    act = activations.get(target)
    if len(inputs) > 1:
        raise TypeError(f"gradcheck of an activation takes one input x, received {len(inputs)} "
                        "inputs. Call gradcheck('tanh', x).")
    x = _as_float64(_to_array(inputs[0], "x")) if inputs else _default_activation_input(seed)
    if not _is_float(x):
        raise TypeError(f"gradcheck of activation {act.name!r}: x must be floating point, "
                        f"received dtype {x.dtype}.")
    xp = compat.array_namespace(x)
    params = act.params
    # The documented pair, looked up by the fixed naming pattern at call time (so the module's
    # current function is checked, e.g. one a test has replaced).
    documented = getattr(activations, f"{act.name}_derivative", None)
    vjp = getattr(activations, f"{act.name}_vjp", None)
    checks = []
    notes = []
    derivative = documented(x, **params) if documented is not None else None
    if derivative is None:
        try:  # a custom elementwise activation brings its own derivative
            derivative = act.derivative(x)
        except TypeError:  # not elementwise (softmax): no derivative, a vjp
            derivative = None
    value = None  # elementwise: f itself is compared, there is no one scalar L
    if derivative is not None:
        probe = _elementwise_probe(act.forward, x)
        name = f"{act.name}_derivative" if documented is not None else "derivative"
        _, backprop = act(x)
        size = math.prod(x.shape)
        for label, d in ((name, derivative), ("backprop", backprop(xp.ones_like(x)))):
            checks.append(_summarize(label, tuple(x.shape), size, range(size), _host_list(d),
                                     probe, rtol, atol))
        notes.append("elementwise: every entry moved at once, f'(x) compared entry by entry "
                     "(backprop of ones)")
    else:
        r = _projection(x, seed, 0)
        y, backprop = act(x)
        base = _inner([y], [r])
        indices = _sample(math.prod(x.shape), max_checks, seed, (7, 1))
        current = {"x": x}

        def install(v: Array) -> None:
            current["x"] = v

        def objective() -> float:
            return _inner([act.forward(current["x"])], [r])

        probe = _entry_probe(x, install, objective, base)
        derivatives = []
        if vjp is not None:
            derivatives.append((f"{act.name}_vjp", vjp(y, r, **params)))
        derivatives.append(("backprop", backprop(r)))
        for label, d in derivatives:
            flat = _host_list(d)
            checks.append(_summarize(label, tuple(x.shape), math.prod(x.shape), indices,
                                     [flat[i] for i in indices], probe, rtol, atol))
        notes.append("not elementwise: L = <f(x), r> with r a fixed random projection")
        value = base
    return GradcheckReport(f"activation {act.name}", adapter_of(x).name, device_of(x), rtol,
                           atol, max_checks, checks, notes, [], value)


# =============================================================================================
# Losses
# =============================================================================================
def _check_loss(loss: Loss, inputs: tuple, rtol: float, atol: float, max_checks: int | None,
                seed: int) -> GradcheckReport:
    if len(inputs) != 2:
        raise TypeError(f"gradcheck of a loss takes (y_pred, y_true), received {len(inputs)} "
                        f"inputs. Call gradcheck({type(loss).__name__}(), y_pred, y_true).")
    y_pred = _as_float64(_to_array(inputs[0], "y_pred"))
    y_true = _as_float64(_to_array(inputs[1], "y_true"))
    if not _is_float(y_pred):
        raise TypeError(f"gradcheck of {type(loss).__name__}: y_pred must be floating point, "
                        f"received dtype {y_pred.dtype}.")
    xp = compat.array_namespace(y_pred)
    value, grad = loss(y_pred, y_true)
    base = float(xp.sum(value))  # "none" gives per-sample values; its gradient is their sum's
    current = {"y_pred": y_pred}

    def install(v: Array) -> None:
        current["y_pred"] = v

    def objective() -> float:
        return float(xp.sum(loss(current["y_pred"], y_true)[0]))

    indices = _sample(math.prod(y_pred.shape), max_checks, seed, (7, 2))
    check = _check_entries("y_pred", y_pred, grad, install, objective, base, indices, rtol, atol)
    notes = [] if loss.reduction != "none" else [
        "reduction 'none': L = sum of the per-sample losses"]
    return GradcheckReport(f"loss {type(loss).__name__}", adapter_of(y_pred).name,
                           device_of(y_pred), rtol, atol, max_checks, [check], notes, [], base)


# =============================================================================================
# Layers and models: a float64 copy, frozen randomness, one tensor at a time
# =============================================================================================
def _float64_copy(layer: Layer, like: Array) -> Layer:
    """A float64 twin of ``layer`` on its backend and device: same config, same values.

    An unbuilt layer is built (seed 0) on the backend and device of ``like``.
    """
    backend: Backend = layer.backend if layer.built else make_backend(
        adapter_of(like).name, compat.device(like))
    config = layer.get_config()
    if "dtype" in config:  # a Sequential builds itself in its config's dtype
        config = {**config, "dtype": "float64"}
    try:
        with use_backend(backend.name, backend.device):
            twin = type(layer).from_config(config)
    except Exception as err:
        raise TypeError(
            f"gradcheck checks a float64 copy of the layer, rebuilt with "
            f"{type(layer).__name__}.from_config(layer.get_config()), and that failed: {err}. "
            "Make get_config() return the constructor's arguments.") from err
    if not twin.built or twin.dtype != "float64" or twin.backend != backend:
        twin.build(seed=0, dtype="float64", backend=backend)
    if layer.built:
        twin.set_named_parameters({k: _as_float64(v) for k, v in
                                   layer.named_parameters().items()})
        twin.set_named_buffers({k: _as_float64(v) for k, v in layer.named_buffers().items()})
    for (_, leaf), (_, twin_leaf) in zip(layer.named_leaves(), twin.named_leaves(),
                                         strict=True):
        if not leaf.trainable:
            twin_leaf.trainable = False
    return twin


class _Frozen:
    """Makes every evaluation of a layer see the same randomness and the same buffers."""

    def __init__(self, layer: Layer, seed: int):
        self.layer = layer
        self.random = [leaf for _, leaf in layer.named_leaves()
                       if isinstance(getattr(leaf, "generator", None), Generator)]
        self.seeds = [int(host_generator(seed, (7, 3, k)).integers(2**62))
                      for k in range(len(self.random))]
        # Copies: a layer may update a buffer in place, and the snapshot must not move with it.
        self.buffers = {k: compat.array_namespace(v).asarray(v, copy=True)
                        for k, v in layer.named_buffers().items()}

    def reset(self) -> None:
        for leaf, seed in zip(self.random, self.seeds, strict=True):
            leaf.generator = Generator(seed, backend=leaf.backend)
        if self.buffers:
            self.layer.set_named_buffers(self.buffers)


def _parameter_checks(twin: Layer, grads: dict[str, Array], objective: Callable[[], float],
                      base: float, max_checks: int | None, seed: int, rtol: float,
                      atol: float) -> list[TensorCheck]:
    checks = []
    for k, (name, theta) in enumerate(twin.named_trainable_parameters().items()):
        size = math.prod(theta.shape)
        indices = _sample(size, max_checks, seed, (7, 4, k))
        if name not in grads:
            checks.append(TensorCheck(name, tuple(theta.shape), size, 0, False,
                                      missing="backprop stored no gradient for it"))
            continue

        def install(v: Array, name=name) -> None:
            twin.set_named_parameters({name: v})

        checks.append(_check_entries(name, theta, grads[name], install, objective, base,
                                     indices, rtol, atol))
    return checks


def _repeatable(objective: Callable[[], float], base: float) -> list[str]:
    """One more evaluation at the point: a problem if L moved (randomness that was not frozen,
    state that changes between calls), since finite differences then measure the noise."""
    again = objective()
    if abs(again - base) <= 64 * EPS * max(1.0, abs(base)):
        return []
    return [f"L is not deterministic: two evaluations at the same point gave {base!r} and "
            f"{again!r}, so the differences measure noise. Make the forward pass repeatable "
            "(seed every random draw through a layer generator, or pass training=False)"]


def _layer_notes(twin: Layer, frozen: _Frozen, training: bool) -> list[str]:
    notes = [f"checked on a float64 copy, training={training}"]
    if frozen.random and training:
        notes.append(f"randomness frozen: {len(frozen.random)} generator(s) restart from one "
                     "seed before every evaluation (the same dropout mask each time)")
    frozen_names = [p.rstrip(".") or type(leaf).__name__ for p, leaf in twin.named_leaves()
                    if not leaf.trainable and leaf.parameters]
    if frozen_names:
        notes.append(f"frozen layers (trainable=False) not checked: {frozen_names}")
    return notes


def _check_layer(layer: Layer, inputs: tuple, training: bool, forward_kwargs: dict,
                 rtol: float, atol: float, max_checks: int | None, seed: int) -> GradcheckReport:
    if len(inputs) != 1:
        raise TypeError(f"gradcheck of a layer takes one input x, received {len(inputs)} inputs. "
                        f"Call gradcheck(layer, x) (extra forward arguments such as a mask go "
                        "in forward_kwargs={'mask': mask}).")
    x = _as_float64(_to_array(inputs[0], "x"))
    twin = _float64_copy(layer, x)
    frozen = _Frozen(twin, seed)

    def run(x_in: Array) -> tuple[list[Array], Any, bool]:
        frozen.reset()
        y, backprop = twin.forward(x_in, training, **forward_kwargs)
        several = isinstance(y, tuple)
        return (list(y) if several else [y]), backprop, several

    ys, backprop, several = run(x)
    rs = [_projection(y, seed, k) for k, y in enumerate(ys)]
    base = _inner(ys, rs)
    dx = backprop(tuple(rs) if several else rs[0])
    if isinstance(dx, tuple):  # (dx, d_initial_state) when an initial state was given
        dx = dx[0]
    grads = dict(twin.named_gradients())
    current = {"x": x}

    def objective() -> float:
        return _inner(run(current["x"])[0], rs)

    checks = []
    if _is_float(x) and dx is not None:
        def install(v: Array) -> None:
            current["x"] = v

        size = math.prod(x.shape)
        indices = _sample(size, max_checks, seed, (7, 5))
        checks.append(_check_entries("x", x, dx, install, objective, base, indices, rtol,
                                     atol))
    problems = _repeatable(objective, base)
    checks += _parameter_checks(twin, grads, objective, base, max_checks, seed, rtol, atol)
    notes = _layer_notes(twin, frozen, training)
    if not _is_float(x):
        notes.append(f"input of dtype {dtype_name(x.dtype)}: no input gradient to check")
    notes.append("L = <y, r>, r a fixed random projection of the output")
    return GradcheckReport(f"layer {type(layer).__name__}", twin.backend.name,
                           twin.backend.device_name, rtol, atol, max_checks, checks, notes,
                           problems, base)


def _check_model(model: Layer, inputs: tuple, training: bool, rtol: float, atol: float,
                 max_checks: int | None, seed: int) -> GradcheckReport:
    if len(inputs) != 2:
        raise TypeError(f"gradcheck of a model takes (x, y), received {len(inputs)} inputs. "
                        "Call gradcheck(model, x, y).")
    if getattr(model, "loss", None) is None:
        raise ValueError("gradcheck of a model checks the gradient of its loss, and this model "
                         "has none; pass loss=... to Sequential(...) or call "
                         "model.compile(loss=...).")
    x = _as_float64(_to_array(inputs[0], "x"))
    y = _as_float64(_to_array(inputs[1], "y"))
    twin = _float64_copy(model, x)
    frozen = _Frozen(twin, seed)

    frozen.reset()
    value, grads = twin.value_and_gradients(x, y, training=training)

    def objective() -> float:
        # The same value as value_and_gradients' without its backward pass (half the cost).
        frozen.reset()
        y_pred, _ = twin.forward(x, training)
        return float(twin.loss(y_pred, y)[0] + twin.regularization_loss())

    base = objective()
    problems = []
    if abs(float(value) - base) > 64 * EPS * max(1.0, abs(base)):
        problems.append(f"value_and_gradients gave L = {float(value)!r}, but the loss of the "
                        f"forward pass plus the penalties is {base!r}: they must be one function")
    problems += _repeatable(objective, base)
    checks = _parameter_checks(twin, dict(grads), objective, base, max_checks, seed, rtol, atol)
    notes = _layer_notes(twin, frozen, training)
    notes.append(f"L = the loss ({type(twin.loss).__name__}) plus regularization penalties; "
                 "analytic gradients from value_and_gradients")
    return GradcheckReport(f"model {type(model).__name__}", twin.backend.name,
                           twin.backend.device_name, rtol, atol, max_checks, checks, notes,
                           problems, base)


# =============================================================================================
# The entry points
# =============================================================================================
def _check_settings(rtol: Any, atol: Any, max_checks: Any, seed: Any) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                0.0 <= value < math.inf):
            raise ValueError(f"gradcheck: {name} must be a finite number >= 0, received "
                             f"{name}={value!r}.")
    if max_checks is not None and (isinstance(max_checks, bool) or not isinstance(
            max_checks, int) or max_checks < 1):
        raise ValueError(f"gradcheck: max_checks must be a positive int or None (every entry), "
                         f"received max_checks={max_checks!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"gradcheck: seed must be an int >= 0, received seed={seed!r}.")


def gradcheck(target: Any, *inputs: Any, training: bool = True,
              forward_kwargs: dict[str, Any] | None = None, rtol: float = RTOL,
              atol: float = ATOL, max_checks: int | None = MAX_CHECKS,
              seed: int = 0) -> GradcheckReport:
    """Compare ``target``'s analytic gradient with central finite differences, in float64.

    Formula: dL/dtheta_i ~ (L(theta + h e_i) - L(theta - h e_i)) / 2h,
    h = eps^(1/3) * max(1, |theta_i|), eps = 2^-52. See the module docstring for what L is.

    Args:
        target: what to check, and what ``inputs`` it takes:

            * an activation: a name (``"tanh"``), a function of :mod:`portanet.activations`,
              or an ``activations.Activation`` (with parameters, ``activations.get("elu",
              alpha=0.5)``); inputs ``x`` (optional: 12 values in [-4, 4] away from kinks);
            * a loss (``losses.MeanSquaredError()``): inputs ``y_pred, y_true``;
            * a layer: input ``x``; its input gradient and every trainable parameter;
            * a model (a layer with a loss and ``value_and_gradients``, e.g. ``pn.Sequential``):
              inputs ``x, y``; every trainable parameter of the loss. With the one input ``x``
              a model is checked as a layer (L = <model(x), r>, input gradient included).
        *inputs: arrays of the target's backend and device (any float dtype: cast to float64
            for the check), or nested lists (put on the active backend).
        training: the mode of a layer's or model's forward pass (default True: the path that
            backpropagation serves; Dropout's mask is frozen, see the module docstring).
        forward_kwargs: extra arguments of ``layer.forward``, e.g. ``{"mask": mask}``.
        rtol: relative tolerance per entry (default :data:`RTOL`).
        atol: absolute tolerance per entry (default :data:`ATOL`).
        max_checks: at most this many entries per tensor (a seeded random subset beyond);
            None checks every entry.
        seed: seeds the projection, the subsets and the frozen dropout masks.

    Returns:
        A :class:`GradcheckReport`: ``print(report)`` shows the table, ``report.passed`` the
        verdict, ``report["kernel"]`` one tensor's numbers.

    Raises:
        TypeError: a target of another kind, or the wrong number of inputs.
        ValueError: settings out of range; a model without a loss.

    Examples:
        >>> import portanet as pn
        >>> loss = pn.losses.MeanSquaredError()
        >>> report = pn.gradcheck(loss, [[0.5, -1.0]], [[0.0, 1.0]])
        >>> report["y_pred"].worst_analytic, round(report["y_pred"].worst_numeric, 8)
        (-2.0, -2.0)
    """
    _check_settings(rtol, atol, max_checks, seed)
    rtol, atol = float(rtol), float(atol)
    if forward_kwargs is not None and not isinstance(forward_kwargs, dict):
        raise TypeError("gradcheck: forward_kwargs must be a dict of extra arguments of "
                        f"layer.forward, received {type(forward_kwargs).__name__}.")
    if not isinstance(training, bool):
        raise TypeError(f"gradcheck: training must be True or False, received {training!r}.")
    if isinstance(target, Layer) and callable(getattr(target, "value_and_gradients", None)) \
            and len(inputs) != 1:  # with one input a model is checked as the layer it also is
        return _check_model(target, inputs, training, rtol, atol, max_checks, seed)
    if isinstance(target, Layer):
        return _check_layer(target, inputs, training, dict(forward_kwargs or {}), rtol, atol,
                            max_checks, seed)
    if isinstance(target, Loss):
        return _check_loss(target, inputs, rtol, atol, max_checks, seed)
    if isinstance(target, (str, activations.Activation)) or callable(target):
        try:
            activations.get(target)
        except (TypeError, ValueError) as err:
            raise TypeError(f"gradcheck cannot check {target!r}: {err}") from None
        return _check_activation(target, inputs, rtol, atol, max_checks, seed)
    raise TypeError(f"gradcheck checks an activation (a name, function or Activation), a loss, "
                    f"a layer or a model; received {type(target).__name__}.")


def main_check(model: Layer, x: Any = None, y: Any = None, *,
               input_shape: Sequence[int] | None = None, batch_size: int = 4,
               training: bool = True, rtol: float = RTOL, atol: float = ATOL,
               max_checks: int | None = MAX_CHECKS, seed: int = 0) -> tuple[GradcheckReport,
                                                                          bool]:
    """What ``portanet gradcheck --model ...`` runs: check a whole model on a small batch.

    Without data, a batch of ``batch_size`` samples is generated: standard normal inputs of
    ``input_shape`` (default: ``(in_features,)`` of a first Dense-like layer; integer ids for a
    model that starts with an Embedding), and targets that suit the loss: class ids in [0, C)
    for losses that take them, values in [0.05, 0.95] otherwise (valid probabilities, counts
    and regression targets alike).

    Returns:
        ``(report, ok)``: the :class:`GradcheckReport` and whether it passed (the command's exit
        status is 0 when ``ok``).

    Examples:
        >>> import portanet as pn
        >>> model = pn.Sequential([pn.layers.Dense(3, 4, activation="tanh"),
        ...                        pn.layers.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
        >>> report, ok = main_check(model)
        >>> ok, [p.name for p in report.parameters]
        (True, ['0.kernel', '0.bias', '1.kernel', '1.bias'])
    """
    if not isinstance(model, Layer) or not callable(getattr(model, "value_and_gradients",
                                                            None)):
        raise TypeError("main_check expects a model with a loss (pn.Sequential), received "
                        f"{type(model).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received {batch_size!r}.")
    backend = model.backend
    if x is None:
        x = _sample_inputs(model, input_shape, batch_size, seed, backend)
    if y is None:
        y = _sample_targets(model, _to_array(x, "x"), seed)
    report = gradcheck(model, x, y, training=training, rtol=rtol, atol=atol,
                       max_checks=max_checks, seed=seed)
    return report, report.passed


def _sample_inputs(model: Layer, input_shape: Sequence[int] | None, batch_size: int,
                   seed: int, backend: Backend) -> Array:
    leaves = model.named_leaves()
    first = leaves[0][1] if leaves else None
    if input_shape is None:
        input_shape = guess_input_shape(model)
        if input_shape is None:
            raise ValueError(f"main_check cannot tell the input shape of a model that starts "
                             f"with {type(first).__name__}; pass input_shape=(...) (one "
                             "sample's shape, e.g. (1, 28, 28)) or the data x.")
    shape = (batch_size, *tuple(input_shape))
    if first is not None and getattr(first, "integer_input", False):
        ids = host_generator(seed, (7, 6)).integers(0, first.num_embeddings, size=shape)
        return backend.adapter.from_numpy(ids.astype("int64"), backend.device)
    host = host_normal(seed, shape, stream=(7, 6))
    return backend.adapter.from_numpy(host, backend.device)


def _sample_targets(model: Layer, x: Array, seed: int) -> Array:
    shape = (x.shape[0], *tuple(model.output_shape(tuple(x.shape[1:]))))
    backend = model.backend
    if model.loss.takes_class_ids:
        ids = host_generator(seed, (7, 7)).integers(0, shape[-1], size=shape[:-1])
        return backend.adapter.from_numpy(ids.astype("int64"), backend.device)
    host = host_uniform(seed, shape, 0.05, 0.95, stream=(7, 7))
    return backend.adapter.from_numpy(host, backend.device)
