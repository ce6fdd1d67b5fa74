"""Activation functions, each forward next to its derivative, written once for every backend.

Every elementwise activation ``f`` is a pair of plain functions that work on any array API array
of any shape, keep its dtype and device, and read like the formula in their docstring:

    ``f(x, ...)``             the activation, y = f(x)
    ``f_derivative(x, ...)``  its derivative dy/dx, evaluated at the *input* x

so the chain rule through an activation is ``dx = dy * f_derivative(x)``. Where the output
gives the derivative more cheaply, a third function sits next to the pair:

    ``f_derivative_from_output(y)``  the same derivative from y = f(x) (relu, sigmoid, tanh,
                                     softplus), so the backward pass needs no x
    ``gelu_derivative_from_output_and_input(y, x)``  GELU's, from y and x (no second ``erf``)

These are what layers train with: an :class:`Activation`'s backward pass calls the
``from_output`` form where there is one, else ``f_derivative(x)`` (the table is in
:class:`Activation`).

Softmax and log-softmax are not elementwise (every output depends on the whole slice along
``axis``): they come with a vector-Jacobian product from the output (``softmax_vjp``,
``log_softmax_vjp``), which is what backpropagation needs (and what layers call), and with the
full Jacobian (``softmax_jacobian``, ``log_softmax_jacobian``) to look at while learning.
Softmax takes a ``temperature`` tau > 0: softmax(x / tau), whose vjp is the plain one divided
by tau (``get("softmax", temperature=2.0)``, or
``{"class_name": "softmax", "config": {"temperature": 2.0}}`` in a layer config).

Layers use :func:`get`, which turns a name, a config dict or a function into an
:class:`Activation`: ``y, backprop = act(x)`` and ``dx = backprop(dy)``. The names are kept in a
:class:`portanet.registry.Registry`, like every other kind's.

Conventions at kinks (where the derivative does not exist) follow PyTorch, so gradients agree
with ``torch.autograd`` everywhere: ``relu_derivative(0) = 0``, ``relu6_derivative`` is 0 at 0
and 6, ``hard_sigmoid_derivative`` is 0 at +-3, ``leaky_relu_derivative(0) = alpha``,
``elu_derivative(0) = alpha``, ``hard_swish_derivative(-3) = -0.5`` and ``(3) = 1.5``.

Examples:
    >>> import numpy as np
    >>> from portanet import activations
    >>> x = np.asarray([-1.0, 0.5, 2.0])
    >>> act = activations.get("relu")
    >>> y, backprop = act(x)
    >>> y.tolist(), backprop(np.ones(3)).tolist()
    ([0.0, 0.5, 2.0], [0.0, 1.0, 1.0])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import array_api_compat as compat

from . import fused, ops
from ._typing import Array
from .backend import adapter_of
from .registry import Registry, make_config

__all__ = [
    "Activation",
    "elu",
    "elu_derivative",
    "gelu",
    "gelu_derivative",
    "gelu_derivative_from_output_and_input",
    "gelu_tanh",
    "gelu_tanh_derivative",
    "get",
    "hard_sigmoid",
    "hard_sigmoid_derivative",
    "hard_swish",
    "hard_swish_derivative",
    "identity",
    "identity_derivative",
    "known_names",
    "leaky_relu",
    "leaky_relu_derivative",
    "linear",
    "linear_derivative",
    "log_softmax",
    "log_softmax_jacobian",
    "log_softmax_vjp",
    "mish",
    "mish_derivative",
    "register",
    "relu",
    "relu6",
    "relu6_derivative",
    "relu_derivative",
    "relu_derivative_from_output",
    "selu",
    "selu_derivative",
    "sigmoid",
    "sigmoid_derivative",
    "sigmoid_derivative_from_output",
    "silu",
    "silu_derivative",
    "softmax",
    "softmax_jacobian",
    "softmax_vjp",
    "softplus",
    "softplus_derivative",
    "softplus_derivative_from_output",
    "softsign",
    "softsign_derivative",
    "swish",
    "swish_derivative",
    "tanh",
    "tanh_derivative",
    "tanh_derivative_from_output",
]


def _xp(x: Array):
    """The array's namespace. The backend adapter's per-type cache gives the same namespace as
    ``array_namespace`` in ~0.08 instead of ~0.7 us, which counts for small layers (every
    function here asks once per call); arrays of another array API library still work."""
    try:
        return adapter_of(x).xp
    except TypeError:
        return compat.array_namespace(x)


# =============================================================================================
# Identity (linear)
# =============================================================================================
def identity(x: Array) -> Array:
    """The identity, f(x) = x: a layer with no activation.

    Formula: f(x) = x;  f'(x) = 1.  Range: (-inf, inf).

    Examples:
        >>> import numpy as np
        >>> identity(np.asarray([-1.0, 2.0])).tolist()
        [-1.0, 2.0]
    """
    return x


def identity_derivative(x: Array) -> Array:
    """Derivative of :func:`identity`: 1 everywhere (same shape, dtype and device as ``x``).

    Examples:
        >>> import numpy as np
        >>> identity_derivative(np.asarray([-1.0, 2.0])).tolist()
        [1.0, 1.0]
    """
    return _xp(x).ones_like(x)


linear = identity
linear_derivative = identity_derivative


# =============================================================================================
# ReLU family: relu, leaky_relu, relu6, elu, selu
# =============================================================================================
def relu(x: Array) -> Array:
    """Rectified linear unit: keep positive values, zero out the rest.

    Formula: f(x) = max(x, 0);  f'(x) = 1 if x > 0 else 0 (0 at the kink x = 0, as in PyTorch).
    Range: [0, inf). NaN stays NaN.

    Computed by :func:`portanet.fused.relu`: ``maximum(x, 0)``, or the library's own kernel for
    the same values where it has one (``torch.relu``; on NumPy, ``maximum`` against a row of
    zeros, which runs NumPy's SIMD loop).

    Args:
        x: real floating array, any shape.

    Returns:
        Array like ``x``.

    Examples:
        >>> import numpy as np
        >>> relu(np.asarray([-2.0, 0.0, 3.0])).tolist()
        [0.0, 0.0, 3.0]
    """
    return fused.relu(x)


def relu_derivative(x: Array) -> Array:
    """Derivative of :func:`relu`: f'(x) = 1 for x > 0, else 0.

    Examples:
        >>> import numpy as np
        >>> relu_derivative(np.asarray([-2.0, 0.0, 3.0])).tolist()
        [0.0, 0.0, 1.0]
    """
    xp = _xp(x)
    return xp.astype(x > 0, x.dtype)


def relu_derivative_from_output(y: Array) -> Array:
    """:func:`relu_derivative` from the output y = relu(x): 1 where y > 0, else 0.

    y > 0 exactly where x > 0, so the backward pass needs only the output. Layers backpropagate
    with it, as ``dy * relu_derivative_from_output(y)``, which :func:`portanet.fused.relu_backward`
    computes in one kernel where the library has one (torch's ``threshold_backward``).

    Examples:
        >>> import numpy as np
        >>> relu_derivative_from_output(relu(np.asarray([-2.0, 0.0, 3.0]))).tolist()
        [0.0, 0.0, 1.0]
    """
    xp = _xp(y)
    return xp.astype(y > 0, y.dtype)


def leaky_relu(x: Array, alpha: float = 0.01) -> Array:
    """Leaky ReLU: like ReLU, but negative inputs keep a small slope ``alpha``.

    Formula: f(x) = x if x > 0 else alpha * x;  f'(x) = 1 if x > 0 else alpha.
    Range: (-inf, inf) for alpha > 0. The default alpha = 0.01 is PyTorch's ``negative_slope``.

    Examples:
        >>> import numpy as np
        >>> leaky_relu(np.asarray([-2.0, 3.0]), alpha=0.1).tolist()
        [-0.2, 3.0]
    """
    return _xp(x).where(x > 0, x, alpha * x)


def leaky_relu_derivative(x: Array, alpha: float = 0.01) -> Array:
    """Derivative of :func:`leaky_relu`: f'(x) = 1 for x > 0, else alpha.

    Examples:
        >>> import numpy as np
        >>> leaky_relu_derivative(np.asarray([-2.0, 3.0]), alpha=0.1).tolist()
        [0.1, 1.0]
    """
    xp = _xp(x)
    positive = xp.astype(x > 0, x.dtype)
    return alpha + (1.0 - alpha) * positive


def relu6(x: Array) -> Array:
    """ReLU capped at 6 (MobileNet): min(max(x, 0), 6).

    Formula: f(x) = min(max(x, 0), 6);  f'(x) = 1 if 0 < x < 6 else 0.  Range: [0, 6].

    Examples:
        >>> import numpy as np
        >>> relu6(np.asarray([-1.0, 3.0, 9.0])).tolist()
        [0.0, 3.0, 6.0]
    """
    return _xp(x).clip(x, min=0.0, max=6.0)


def relu6_derivative(x: Array) -> Array:
    """Derivative of :func:`relu6`: 1 on the open interval (0, 6), 0 elsewhere.

    Examples:
        >>> import numpy as np
        >>> relu6_derivative(np.asarray([-1.0, 3.0, 9.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    xp = _xp(x)
    return xp.astype((x > 0) & (x < 6.0), x.dtype)


def elu(x: Array, alpha: float = 1.0) -> Array:
    """Exponential linear unit: smooth for x < 0, saturating at -alpha.

    Formula: f(x) = x if x > 0 else alpha * (exp(x) - 1);
    f'(x) = 1 if x > 0 else alpha * exp(x).  Range: (-alpha, inf).

    ``exp(x) - 1`` is computed as ``expm1`` (accurate near 0) on ``min(x, 0)``, so the branch that
    ``where`` discards never overflows for large positive x.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in elu(np.asarray([-1.0, 2.0])).tolist()]
        [-0.632121, 2.0]
    """
    xp = _xp(x)
    return xp.where(x > 0, x, alpha * xp.expm1(ops.minimum(x, 0.0)))


def elu_derivative(x: Array, alpha: float = 1.0) -> Array:
    """Derivative of :func:`elu`: 1 for x > 0, alpha * exp(x) for x <= 0.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in elu_derivative(np.asarray([-1.0, 2.0])).tolist()]
        [0.367879, 1.0]
    """
    xp = _xp(x)
    return xp.where(x > 0, 1.0, alpha * xp.exp(ops.minimum(x, 0.0)))


# The fixed point constants of Klambauer et al., "Self-Normalizing Neural Networks" (2017).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu(x: Array) -> Array:
    """Scaled ELU: scale * elu(x, alpha) with the self-normalizing constants.

    Formula: f(x) = scale * (x if x > 0 else alpha * (exp(x) - 1));
    f'(x) = scale * (1 if x > 0 else alpha * exp(x)),
    alpha = 1.6732632423543772, scale = 1.0507009873554805.
    Range: (-scale * alpha, inf) = (-1.7581, inf).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in selu(np.asarray([-1.0, 2.0])).tolist()]
        [-1.111331, 2.101402]
    """
    return SELU_SCALE * elu(x, SELU_ALPHA)


def selu_derivative(x: Array) -> Array:
    """Derivative of :func:`selu`: scale for x > 0, scale * alpha * exp(x) for x <= 0.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in selu_derivative(np.asarray([-1.0, 2.0])).tolist()]
        [0.646769, 1.050701]
    """
    return SELU_SCALE * elu_derivative(x, SELU_ALPHA)


# =============================================================================================
# Sigmoid family: sigmoid, hard_sigmoid, tanh, softsign
# =============================================================================================
def sigmoid(x: Array) -> Array:
    """The logistic function, squashing any real number into (0, 1).

    Formula: f(x) = 1 / (1 + exp(-x));  f'(x) = f(x) * (1 - f(x)).  Range: (0, 1)
    (exactly 1 after rounding for x beyond ~37 in float64, ~17 in float32; exactly 0 only where
    exp(x) underflows, x below ~-745 in float64, ~-104 in float32).

    Stable form: f(x) = exp(min(x, 0)) / (1 + exp(-|x|)), which is 1 / (1 + exp(-x)) for
    x >= 0 and exp(x) / (1 + exp(x)) for x < 0. ``exp`` only ever sees non-positive numbers, so
    sigmoid(-1000) is 0 with no overflow, and small values keep full relative precision. (One
    formula for both signs, not ``where(x >= 0, ...)``: a data-dependent ``where`` over a
    random sign pattern is several times slower than two ``exp`` in NumPy and PyTorch.)

    Examples:
        >>> import numpy as np
        >>> sigmoid(np.asarray([-1000.0, 0.0, 1000.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    xp = _xp(x)
    return xp.exp(ops.minimum(x, 0.0)) / (1.0 + xp.exp(-xp.abs(x)))


def sigmoid_derivative(x: Array) -> Array:
    """Derivative of :func:`sigmoid`: f'(x) = f(x) * (1 - f(x)), at most 1/4 (at x = 0).

    Examples:
        >>> import numpy as np
        >>> sigmoid_derivative(np.asarray([0.0, -1000.0])).tolist()
        [0.25, 0.0]
    """
    s = sigmoid(x)
    return s * (1.0 - s)


def sigmoid_derivative_from_output(y: Array) -> Array:
    """:func:`sigmoid_derivative` from the output y = sigmoid(x): y * (1 - y).

    The textbook form of the derivative, and the one layers backpropagate with: the forward
    pass has y already, so no ``exp`` is computed again.

    Examples:
        >>> import numpy as np
        >>> sigmoid_derivative_from_output(sigmoid(np.asarray([0.0, -1000.0]))).tolist()
        [0.25, 0.0]
    """
    return y * (1.0 - y)


def hard_sigmoid(x: Array) -> Array:
    """A piecewise-linear sigmoid: cheap, and exactly 0 or 1 outside [-3, 3].

    Formula: f(x) = clip(x / 6 + 1/2, 0, 1) = relu6(x + 3) / 6;
    f'(x) = 1/6 if -3 < x < 3 else 0.  Range: [0, 1].

    This is PyTorch's ``hardsigmoid`` (and MobileNetV3's); Keras 2 used clip(0.2 x + 0.5, 0, 1).

    Examples:
        >>> import numpy as np
        >>> hard_sigmoid(np.asarray([-4.0, 0.0, 1.5, 4.0])).tolist()
        [0.0, 0.5, 0.75, 1.0]
    """
    return _xp(x).clip(x / 6.0 + 0.5, min=0.0, max=1.0)


def hard_sigmoid_derivative(x: Array) -> Array:
    """Derivative of :func:`hard_sigmoid`: 1/6 on the open interval (-3, 3), 0 elsewhere.

    Examples:
        >>> import numpy as np
        >>> hard_sigmoid_derivative(np.asarray([-4.0, 0.0, 4.0])).tolist()
        [0.0, 0.16666666666666666, 0.0]
    """
    xp = _xp(x)
    return xp.astype((x > -3.0) & (x < 3.0), x.dtype) / 6.0


def tanh(x: Array) -> Array:
    """Hyperbolic tangent, a zero-centred sigmoid: tanh(x) = 2 * sigmoid(2x) - 1.

    Formula: f(x) = (exp(x) - exp(-x)) / (exp(x) + exp(-x));  f'(x) = 1 - f(x)^2.
    Range: (-1, 1).

    Examples:
        >>> import numpy as np
        >>> tanh(np.asarray([0.0, 1000.0])).tolist()
        [0.0, 1.0]
    """
    return _xp(x).tanh(x)


def tanh_derivative(x: Array) -> Array:
    """Derivative of :func:`tanh`: f'(x) = 1 - tanh(x)^2.

    Examples:
        >>> import numpy as np
        >>> tanh_derivative(np.asarray([0.0, 1000.0])).tolist()
        [1.0, 0.0]
    """
    t = _xp(x).tanh(x)
    return 1.0 - t * t


def tanh_derivative_from_output(y: Array) -> Array:
    """:func:`tanh_derivative` from the output y = tanh(x): 1 - y^2 (no second ``tanh``).

    Examples:
        >>> import numpy as np
        >>> tanh_derivative_from_output(tanh(np.asarray([0.0, 1000.0]))).tolist()
        [1.0, 0.0]
    """
    return 1.0 - y * y


def softsign(x: Array) -> Array:
    """Softsign: a sigmoid-shaped curve with polynomial (not exponential) tails.

    Formula: f(x) = x / (1 + |x|);  f'(x) = 1 / (1 + |x|)^2.  Range: (-1, 1).

    Examples:
        >>> import numpy as np
        >>> softsign(np.asarray([-3.0, 1.0])).tolist()
        [-0.75, 0.5]
    """
    return x / (1.0 + _xp(x).abs(x))


def softsign_derivative(x: Array) -> Array:
    """Derivative of :func:`softsign`: f'(x) = 1 / (1 + |x|)^2.

    Examples:
        >>> import numpy as np
        >>> softsign_derivative(np.asarray([-3.0, 1.0])).tolist()
        [0.0625, 0.25]
    """
    d = 1.0 + _xp(x).abs(x)
    return 1.0 / (d * d)


# =============================================================================================
# Softplus
# =============================================================================================
def softplus(x: Array) -> Array:
    """Softplus, a smooth ReLU: log(1 + exp(x)).

    Formula: f(x) = log(1 + exp(x));  f'(x) = sigmoid(x).  Range: (0, inf).

    Stable form: f(x) = max(x, 0) + log1p(exp(-|x|)). ``exp`` never sees a positive number, so
    large x gives x (not inf) and very negative x gives exp(x) to full relative precision.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in softplus(np.asarray([-1000.0, 0.0, 1000.0])).tolist()]
        [0.0, 0.693147, 1000.0]
    """
    xp = _xp(x)
    return ops.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))


def softplus_derivative(x: Array) -> Array:
    """Derivative of :func:`softplus`: f'(x) = exp(x) / (1 + exp(x)) = sigmoid(x).

    Examples:
        >>> import numpy as np
        >>> softplus_derivative(np.asarray([0.0])).tolist()
        [0.5]
    """
    return sigmoid(x)


def softplus_derivative_from_output(y: Array) -> Array:
    """:func:`softplus_derivative` from the output y = softplus(x): 1 - exp(-y).

    From y = log(1 + exp(x)): exp(y) = 1 + exp(x), so sigmoid(x) = exp(x) / (1 + exp(x))
    = 1 - exp(-y). Written ``-expm1(-y)``: for very negative x, y ~ exp(x) is tiny and
    ``1 - exp(-y)`` would cancel to 0, while ``expm1`` keeps its relative precision. One
    ``expm1`` instead of the two ``exp`` of :func:`sigmoid`.

    Examples:
        >>> import numpy as np
        >>> softplus_derivative_from_output(softplus(np.asarray([0.0, -1000.0]))).tolist()
        [0.5, 0.0]
    """
    return -_xp(y).expm1(-y)


# =============================================================================================
# Self-gated: swish / silu, mish, hard_swish
# =============================================================================================
def swish(x: Array, beta: float = 1.0) -> Array:
    """Swish: the input gated by its own sigmoid, x * sigmoid(beta * x).

    Formula: f(x) = x * s,  s = sigmoid(beta * x);
    f'(x) = s + beta * x * s * (1 - s).
    Range: about [-0.2785 / beta, inf) for beta > 0. With beta = 1 this is SiLU (:func:`silu`).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in swish(np.asarray([-1.0, 2.0])).tolist()]
        [-0.268941, 1.761594]
    """
    return x * sigmoid(beta * x)


def swish_derivative(x: Array, beta: float = 1.0) -> Array:
    """Derivative of :func:`swish`: s + beta * x * s * (1 - s), s = sigmoid(beta * x).

    Examples:
        >>> import numpy as np
        >>> swish_derivative(np.asarray([0.0]), beta=2.0).tolist()
        [0.5]
    """
    s = sigmoid(beta * x)
    return s + beta * x * s * (1.0 - s)


def silu(x: Array) -> Array:
    """Sigmoid linear unit, x * sigmoid(x): :func:`swish` with beta = 1.

    Formula: f(x) = x * sigmoid(x);  f'(x) = s + x * s * (1 - s), s = sigmoid(x).
    Range: about [-0.2785, inf).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in silu(np.asarray([-1.0, 2.0])).tolist()]
        [-0.268941, 1.761594]
    """
    return swish(x, 1.0)


def silu_derivative(x: Array) -> Array:
    """Derivative of :func:`silu`: s + x * s * (1 - s), s = sigmoid(x).

    Examples:
        >>> import numpy as np
        >>> silu_derivative(np.asarray([0.0])).tolist()
        [0.5]
    """
    return swish_derivative(x, 1.0)


def mish(x: Array) -> Array:
    """Mish (Misra, 2019): x * tanh(softplus(x)).

    Formula: f(x) = x * t,  t = tanh(softplus(x));
    f'(x) = t + x * (1 - t^2) * sigmoid(x)      (since softplus'(x) = sigmoid(x)).
    Range: about [-0.3088, inf).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in mish(np.asarray([-1.0, 1.0])).tolist()]
        [-0.303401, 0.865098]
    """
    return x * _xp(x).tanh(softplus(x))


def mish_derivative(x: Array) -> Array:
    """Derivative of :func:`mish`: t + x * (1 - t^2) * sigmoid(x), t = tanh(softplus(x)).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in mish_derivative(np.asarray([0.0, 1.0])).tolist()]
        [0.6, 1.049036]
    """
    t = _xp(x).tanh(softplus(x))
    return t + x * (1.0 - t * t) * sigmoid(x)


def hard_swish(x: Array) -> Array:
    """Hard swish (MobileNetV3): x * hard_sigmoid(x), swish with a piecewise-linear gate.

    Formula: f(x) = x * clip(x / 6 + 1/2, 0, 1), i.e. 0 for x <= -3, x for x >= 3,
    x * (x + 3) / 6 in between;  f'(x) = 0 for x < -3, (2x + 3) / 6 for -3 <= x <= 3,
    1 for x > 3.  Range: [-0.375, inf) (minimum at x = -1.5).

    Examples:
        >>> import numpy as np
        >>> hard_swish(np.asarray([-4.0, 1.0, 4.0])).tolist()
        [-0.0, 0.6666666666666666, 4.0]
    """
    return x * hard_sigmoid(x)


def hard_swish_derivative(x: Array) -> Array:
    """Derivative of :func:`hard_swish`: 0 below -3, (2x + 3) / 6 on [-3, 3], 1 above 3.

    Examples:
        >>> import numpy as np
        >>> hard_swish_derivative(np.asarray([-4.0, 0.0, 4.0])).tolist()
        [0.0, 0.5, 1.0]
    """
    xp = _xp(x)
    middle = x / 3.0 + 0.5
    return xp.where(x < -3.0, 0.0, xp.where(x <= 3.0, middle, 1.0))


# =============================================================================================
# GELU: exact (erf) and the tanh approximation
# =============================================================================================
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_CUBIC = 0.044715


def gelu(x: Array) -> Array:
    """Gaussian error linear unit (Hendrycks & Gimpel, 2016), exact: x * Phi(x).

    Formula: f(x) = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt(2))) / 2, the standard normal CDF;
    f'(x) = Phi(x) + x * phi(x),  phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the normal density.
    Range: about [-0.17, inf). ``erf`` is :func:`portanet.ops.erf` (native where the library
    has one). See :func:`gelu_tanh` for the tanh approximation.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in gelu(np.asarray([-1.0, 0.0, 1.0])).tolist()]
        [-0.158655, 0.0, 0.841345]
    """
    return x * (0.5 * (1.0 + ops.erf(x * _INV_SQRT2)))


def gelu_derivative(x: Array) -> Array:
    """Derivative of :func:`gelu`: Phi(x) + x * phi(x).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in gelu_derivative(np.asarray([0.0, 1.0])).tolist()]
        [0.5, 1.083315]
    """
    cdf = 0.5 * (1.0 + ops.erf(x * _INV_SQRT2))
    return cdf + x * _normal_pdf(x)


# Phi(x) = y / x = x y / x^2, with t^2 = 1e-36 added below and t^2 / 2 above: x = 0 then gives
# Phi = 1/2 (no 0 / 0), and Phi moves by t^2 |1/2 - Phi| / (x^2 + t^2) < 2e-19 anywhere, far
# under the rounding of the Phi the forward pass computed (1 + erf rounds to ~1e-16 in float64,
# ~6e-8 in float32). t^2 is a normal float32 number, so subnormal x are no trouble.
_GELU_T2 = 1e-36


def gelu_derivative_from_output_and_input(y: Array, x: Array) -> Array:
    """:func:`gelu_derivative` from the output y = gelu(x) and the input: y / x + x * phi(x).

    GELU is not one-to-one, so its output alone does not give x; with x it gives Phi(x) without
    a second ``erf``: y = x * Phi(x), so Phi(x) = y / x, and f'(x) = Phi(x) + x * phi(x) becomes
    y / x + x * phi(x). ``erf`` is the costly part of GELU (a rational approximation where the
    library has none, ~1 ms for 65,536 float32 numbers on NumPy), and layers backpropagate
    with this form. It agrees with :func:`gelu_derivative` to a few roundings
    (tests/test_derivatives_on_hot_path.py).

    Written as (x y + t^2/2) / (x^2 + t^2) with t^2 = 1e-36, which is y / x to better than 2e-19
    and 1/2 at x = 0. Finite for |x| below ~1e19 in float32 (~1e154 in float64), where x^2
    overflows; the input form has no such limit.

    Args:
        y: gelu(x), as :func:`gelu` returned it.
        x: the input, the same shape.

    Examples:
        >>> import numpy as np
        >>> x = np.asarray([0.0, 1.0])
        >>> [round(v, 6) for v in gelu_derivative_from_output_and_input(gelu(x), x).tolist()]
        [0.5, 1.083315]
    """
    cdf = (x * y + 0.5 * _GELU_T2) / (x * x + _GELU_T2)
    return cdf + x * _normal_pdf(x)


def _normal_pdf(x: Array) -> Array:
    return _INV_SQRT_2PI * _xp(x).exp(-0.5 * x * x)


def gelu_tanh(x: Array) -> Array:
    """GELU's tanh approximation (as in GPT-2 and BERT): close to :func:`gelu`, not equal.

    Formula: f(x) = x * (1 + tanh(u)) / 2,  u = sqrt(2/pi) * (x + 0.044715 x^3);
    f'(x) = (1 + t) / 2 + x * (1 - t^2) * u'(x) / 2,  t = tanh(u),
    u'(x) = sqrt(2/pi) * (1 + 3 * 0.044715 x^2).
    Range: about [-0.17, inf); |gelu_tanh - gelu| < 5e-4 everywhere. PyTorch's
    ``gelu(approximate="tanh")``.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in gelu_tanh(np.asarray([-1.0, 1.0])).tolist()]
        [-0.158808, 0.841192]
    """
    t = _xp(x).tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x))
    return 0.5 * x * (1.0 + t)


def gelu_tanh_derivative(x: Array) -> Array:
    """Derivative of :func:`gelu_tanh`: (1 + t) / 2 + x (1 - t^2) u'(x) / 2.

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in gelu_tanh_derivative(np.asarray([0.0, 1.0])).tolist()]
        [0.5, 1.082964]
    """
    x2 = x * x
    t = _xp(x).tanh(_SQRT_2_OVER_PI * (x + _GELU_CUBIC * x2 * x))
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * x2)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du


# =============================================================================================
# Softmax and log-softmax: not elementwise, so a vector-Jacobian product and a Jacobian
# =============================================================================================
def _check_temperature(temperature: Any) -> float:
    """A temperature is a Python number > 0 (a host value: checking it reads no array)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            0.0 < temperature < math.inf):
        raise ValueError(f"softmax temperature must be a finite number > 0, received "
                         f"temperature={temperature!r}. (tau -> 0 approaches argmax, tau -> inf "
                         "the uniform distribution.)")
    return float(temperature)


def softmax(x: Array, axis: int = -1, temperature: float = 1.0) -> Array:
    """Turn scores into a probability distribution along ``axis``, sharpened or flattened by a
    temperature.

    Formula: s_i = exp(x_i / tau) / sum_j exp(x_j / tau);
    ds_i/dx_j = s_i * (delta_ij - s_j) / tau.  Range: (0, 1), each slice sums to 1.
    tau = 1 (the default) is the plain softmax; tau < 1 sharpens towards argmax, tau > 1 flattens
    towards uniform (Hinton et al.'s distillation, sampling from language models).

    Stable form: x is shifted by its maximum first (softmax(x) = softmax(x - c) for any c), so the
    largest exponent is exp(0) = 1: no overflow for logits of +-1000, even in float32.

    Args:
        x: real floating array, any shape.
        axis: the axis that holds the classes.
        temperature: tau > 0, a Python number.

    Returns:
        Array like ``x``.

    Examples:
        >>> import numpy as np
        >>> softmax(np.asarray([[1000.0, 1000.0], [0.0, -1000.0]])).tolist()
        [[0.5, 0.5], [1.0, 0.0]]
        >>> [round(v, 4) for v in softmax(np.asarray([0.0, 1.0]), temperature=0.5).tolist()]
        [0.1192, 0.8808]
    """
    xp = _xp(x)
    tau = _check_temperature(temperature)
    if tau != 1.0:
        x = x / tau
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def softmax_vjp(y: Array, g: Array, axis: int = -1, temperature: float = 1.0) -> Array:
    """Backpropagate ``g = dL/ds`` through softmax: the vector-Jacobian product g^T J.

    Formula: (g^T J)_j = sum_i g_i s_i (delta_ij - s_j) / tau = s_j * (g_j - sum_i g_i s_i) / tau
    (the chain rule through x / tau). O(n) per slice, never forms the n x n Jacobian.

    Args:
        y: the softmax output s (what :func:`softmax` returned, with the same temperature).
        g: the upstream gradient dL/ds, same shape as ``y``.
        axis: the axis softmax was taken over.
        temperature: tau, as given to :func:`softmax`.

    Returns:
        dL/dx, same shape as ``y``.

    Examples:
        >>> import numpy as np
        >>> s = softmax(np.asarray([0.0, 0.0]))
        >>> softmax_vjp(s, np.asarray([1.0, 0.0])).tolist()
        [0.25, -0.25]
        >>> softmax_vjp(s, np.asarray([1.0, 0.0]), temperature=2.0).tolist()
        [0.125, -0.125]
    """
    xp = _xp(y)
    tau = _check_temperature(temperature)
    dx = y * (g - xp.sum(g * y, axis=axis, keepdims=True))
    return dx if tau == 1.0 else dx / tau


def softmax_jacobian(x: Array, axis: int = -1, temperature: float = 1.0) -> Array:
    """The full Jacobian of :func:`softmax`, for teaching and checking: J = (diag(s) - s s^T) / tau.

    Formula: J_ij = ds_i/dx_j = s_i * (delta_ij - s_j) / tau. Backpropagation uses
    :func:`softmax_vjp` instead, which costs O(n), not O(n^2).

    Args:
        x: real floating array; the classes are along ``axis``.
        axis: the softmax axis.
        temperature: tau > 0.

    Returns:
        Array of shape ``batch + (n, n)``: ``batch`` is ``x``'s shape without ``axis``, and
        ``n = x.shape[axis]``; entry ``[..., i, j]`` is ds_i/dx_j.

    Examples:
        >>> import numpy as np
        >>> softmax_jacobian(np.asarray([0.0, 0.0])).tolist()
        [[0.25, -0.25], [-0.25, 0.25]]
    """
    xp = _xp(x)
    s = xp.moveaxis(softmax(x, axis=axis, temperature=temperature), axis, -1)
    n = s.shape[-1]
    eye = xp.eye(n, dtype=x.dtype, device=compat.device(x))
    j = xp.expand_dims(s, axis=-1) * (eye - xp.expand_dims(s, axis=-2))
    return j if temperature == 1.0 else j / float(temperature)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """The logarithm of :func:`softmax`, computed without taking the log of a rounded 0.

    Formula: l_i = x_i - log(sum_j exp(x_j));  dl_i/dx_j = delta_ij - s_j, s = softmax(x).
    Range: (-inf, 0].

    Stable form: l = z - log(sum(exp(z))) with z = x - max(x): no overflow, and very unlikely
    classes get a large negative number (-2000 for logits +-1000) instead of log(0) = -inf.

    Examples:
        >>> import numpy as np
        >>> log_softmax(np.asarray([1000.0, -1000.0])).tolist()
        [0.0, -2000.0]
    """
    xp = _xp(x)
    z = x - xp.max(x, axis=axis, keepdims=True)
    return z - xp.log(xp.sum(xp.exp(z), axis=axis, keepdims=True))


def log_softmax_vjp(y: Array, g: Array, axis: int = -1) -> Array:
    """Backpropagate ``g = dL/dl`` through log-softmax (``y`` is the log-softmax output).

    Formula: (g^T J)_j = sum_i g_i (delta_ij - s_j) = g_j - s_j * sum_i g_i,  s = exp(y).

    Examples:
        >>> import numpy as np
        >>> y = log_softmax(np.asarray([0.0, 0.0]))
        >>> log_softmax_vjp(y, np.asarray([1.0, 0.0])).tolist()
        [0.5, -0.5]
    """
    xp = _xp(y)
    return g - xp.exp(y) * xp.sum(g, axis=axis, keepdims=True)


def log_softmax_jacobian(x: Array, axis: int = -1) -> Array:
    """The full Jacobian of :func:`log_softmax`: J_ij = delta_ij - s_j, s = softmax(x).

    Returns:
        Array of shape ``batch + (n, n)`` as in :func:`softmax_jacobian`.

    Examples:
        >>> import numpy as np
        >>> log_softmax_jacobian(np.asarray([0.0, 0.0])).tolist()
        [[0.5, -0.5], [-0.5, 0.5]]
    """
    xp = _xp(x)
    s = xp.moveaxis(softmax(x, axis=axis), axis, -1)
    eye = xp.eye(s.shape[-1], dtype=x.dtype, device=compat.device(x))
    return eye - xp.expand_dims(s, axis=-2)


# =============================================================================================
# The Activation object: the documented functions, ready for a layer
# =============================================================================================
# The chain rule dy * f_derivative_from_output(y) (relu) or dy * f_derivative_from_output_and_
# input(y, x) (gelu) as one library call, where fused.py has one: torch's threshold_backward and
# gelu_backward there, and that product, calling the documented function, everywhere else.
_CHAIN_KERNELS: dict[str, Callable] = {"relu": fused.relu_backward, "gelu": fused.gelu_backward}
# A layer's bias add and the activation, f(z + b), as one library call where fused.py has one
# (CuPy's kernel; NumPy's writes into z), for activations whose backward needs only the output.
_BIAS_KERNELS: dict[str, Callable] = {"relu": fused.bias_relu}


def _own_name(fn: Any) -> str | None:
    """The name ``fn`` is defined under in this module, or None for a function from elsewhere."""
    name = getattr(fn, "__name__", None)
    return name if getattr(fn, "__module__", None) == __name__ and name in globals() else None


def _documented_forms(forward: Callable, derivative: Callable | None) -> dict[str, Any]:
    """The functions an :class:`Activation` runs, found by the naming pattern for this module's.

    For ``forward`` = this module's ``f`` (and ``derivative`` None or this module's
    ``f_derivative``), each form is looked up in this module *now*, by name: ``f``,
    ``f_derivative``, ``f_derivative_from_output``, ``f_derivative_from_output_and_input``,
    ``f_vjp``. Any other function is used as given, with no faster form (a derivative of the
    user's own must not be bypassed).
    """
    base = _own_name(forward)
    if base is None or (derivative is not None and _own_name(derivative) != f"{base}_derivative"):
        return {"forward": forward, "derivative": derivative}
    module = globals()
    return {"forward": module[base], "derivative": module.get(f"{base}_derivative"),
            "from_output": module.get(f"{base}_derivative_from_output"),
            "from_output_and_input": module.get(f"{base}_derivative_from_output_and_input"),
            "vjp": module.get(f"{base}_vjp"), "chain_kernel": _CHAIN_KERNELS.get(base),
            "bias_kernel": _BIAS_KERNELS.get(base)}


class Activation:
    """An activation ready for a layer: ``y, backprop = act(x)``, then ``dx = backprop(dy)``.

    ``act(x)`` computes y = f(x); ``backprop`` is the chain rule through the activation's
    documented functions, the first of these it has (chosen once, when the Activation is built):

    ============================================  =============================================
    the activation has                            ``backprop(dy)``
    ============================================  =============================================
    ``f_vjp`` (softmax, log_softmax)              ``f_vjp(y, dy)``
    ``f_derivative_from_output`` (relu, sigmoid,  ``dy * f_derivative_from_output(y)``, x is not
    tanh, softplus)                               kept (relu: ``fused.relu_backward``, one kernel
                                                  on torch)
    ``f_derivative_from_output_and_input``        ``dy * f_derivative_from_output_and_input(y,
    (gelu)                                        x)`` (``fused.gelu_backward``, one kernel on
                                                  torch)
    ``f_derivative`` (every other one)            ``dy * f_derivative(x)``
    ============================================  =============================================

    For this module's functions these are found by the naming pattern, in this module, when the
    Activation is built, so what runs is the function the module holds at that moment (one a
    test has replaced by a spy included: that is how tests/test_derivatives_on_hot_path.py
    checks that training calls the documented derivative). A derivative of your own is always
    the one used.

    Args:
        forward: ``forward(x, **params) -> y``.
        derivative: ``derivative(x, **params) -> dy/dx`` (elementwise), at the input x; the
            backprop is then ``dy * derivative(x)``. Found by name for this module's
            functions; needed for any other, unless ``fused`` is given.
        name: the name used by ``get_config`` and in messages (default: ``forward.__name__``).
        fused: optional ``fused(x, **params) -> (y, backprop)``: a custom activation's own
            forward and backward pass (how one that is not elementwise plugs in). The built-in
            activations have none: their backward pass is the documented functions above.
        **params: keyword arguments passed to every call, e.g. ``alpha=0.2``.

    Examples:
        >>> import numpy as np
        >>> act = Activation(leaky_relu, leaky_relu_derivative, alpha=0.5)
        >>> y, backprop = act(np.asarray([-2.0, 2.0]))
        >>> y.tolist(), backprop(np.asarray([1.0, 1.0])).tolist()
        ([-1.0, 2.0], [0.5, 1.0])
        >>> act.get_config()
        {'class_name': 'leaky_relu', 'config': {'alpha': 0.5}}
    """

    def __init__(self, forward: Callable, derivative: Callable | None = None, *,
                 name: str | None = None, fused: Callable | None = None, **params: Any):
        if not callable(forward):
            raise TypeError(f"Activation needs a callable forward function, received "
                            f"{forward!r}.")
        forms = _documented_forms(forward, derivative)
        if forms["derivative"] is None and forms.get("vjp") is None and fused is None:
            raise TypeError(
                f"activation {getattr(forward, '__name__', forward)!r} has no derivative, so it "
                "cannot be backpropagated. Pass derivative=your_derivative (dy/dx at the input x),"
                " e.g. Activation(f, f_derivative, name='f'), or register it with "
                "activations.register('f', f, f_derivative).")
        self.name = name or getattr(forward, "__name__", type(forward).__name__)
        self._forward = forms["forward"]
        self._derivative = forms["derivative"]
        self._from_output = forms.get("from_output")
        self._from_output_and_input = forms.get("from_output_and_input")
        self._vjp = forms.get("vjp")
        has_faster = self._from_output is not None or self._from_output_and_input is not None
        self._chain_kernel = forms.get("chain_kernel") if has_faster else None
        # only where the backward pass reads y alone: the kernel leaves no z + b behind
        self._bias_kernel = forms.get("bias_kernel") if self._from_output is not None else None
        self._fused = fused
        self.params = _check_params(self.name, forward, params)  # the signature as given

    def __call__(self, x: Array):
        """Forward pass: ``(y, backprop)``, ``backprop(dy) -> dx`` with dx like ``x``."""
        if self._fused is not None:
            return self._fused(x, **self.params)
        return self._with_backprop(self._forward(x, **self.params), x)

    def with_bias(self, z: Array, b: Array):
        """``self(z + b)``, a layer's bias add and activation: ``(y, backprop)``.

        ``z`` is the layer's fresh product (x @ W), which nothing else holds: it may be written
        into. For ReLU the two are one library call where fused.py has one
        (:func:`portanet.fused.bias_relu`), with the same values; every other activation adds
        ``b`` into ``z`` and calls itself.
        """
        if self._bias_kernel is not None and self._fused is None:
            return self._with_backprop(self._bias_kernel(z, b, self._forward), None)
        z += b  # into the product (on JAX's immutable arrays, a new array)
        return self(z)

    def _with_backprop(self, y: Array, x: Array | None):
        """``(y, backprop)`` for y = f(x): the first form of the chain rule the activation has
        (the table above). ``x`` may be None where the backward pass reads only y."""
        p = self.params
        if self._vjp is not None:  # not elementwise: the vector-Jacobian product, from y
            vjp = self._vjp
            return y, lambda dy: vjp(y, dy, **p)
        if self._from_output is not None:  # x is not kept
            d, kernel = self._from_output, self._chain_kernel
            if kernel is not None:  # relu: dy * relu_derivative_from_output(y), one call
                return y, lambda dy: kernel(dy, y, d)
            return y, lambda dy: dy * d(y, **p)
        if self._from_output_and_input is not None:
            d, kernel = self._from_output_and_input, self._chain_kernel
            if kernel is not None:  # gelu: dy * gelu_derivative_from_output_and_input(y, x)
                return y, lambda dy: kernel(dy, y, x, d)
            return y, lambda dy: dy * d(y, x, **p)
        d = self._derivative
        return y, lambda dy: dy * d(x, **p)

    def forward(self, x: Array) -> Array:
        """Just y = f(x)."""
        return self._forward(x, **self.params)

    def derivative(self, x: Array) -> Array:
        """dy/dx at ``x`` for elementwise activations (softmax: use the vjp or the Jacobian)."""
        if self._derivative is None:
            raise TypeError(f"{self.name} is not elementwise: it has no elementwise derivative. "
                            f"Backpropagate with `y, backprop = act(x)`; see {self.name}_vjp and "
                            f"{self.name}_jacobian in portanet.activations.")
        return self._derivative(x, **self.params)

    def get_config(self) -> dict[str, Any]:
        """``{"class_name": name, "config": params}``, which :func:`get` turns back into this
        activation (JSON-able)."""
        return make_config(self.name, self.params)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Activation({self.name!r}{args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.params.items()))))


def _check_params(name: str, forward: Callable, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters must be keyword arguments the function has, with plain Python values."""
    try:
        accepted = [p for p in inspect.signature(forward).parameters][1:]
    except (TypeError, ValueError):  # builtins without a signature: trust the caller
        return dict(params)
    checked = {}
    for key, value in params.items():
        if key not in accepted:
            raise TypeError(f"activation {name!r} has no parameter {key!r}; its parameters are "
                            f"{accepted or 'none'}.")
        if key == "axis":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: axis must be an int, received {value!r}.")
            checked[key] = value
        elif key == "temperature":
            checked[key] = _check_temperature(value)  # > 0, checked once, at construction
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                    value):
                raise TypeError(f"{name}: {key} must be a finite Python number, received "
                                f"{value!r} ({type(value).__name__}).")
            checked[key] = float(value)  # a Python float keeps the array's dtype (rule 3)
    return checked


def _activation(name: str, functions: tuple, params: dict[str, Any]) -> Activation:
    """The :class:`Activation` of a table entry (forward, derivative, fused)."""
    forward, derivative, fused = functions
    return Activation(forward, derivative, name=name, fused=fused, **params)


def _from_function(f: Callable, **params: Any) -> Activation:
    """A function as an activation: a registered forward gets its name and derivative, any
    other function needs a ``derivative`` attribute."""
    for name, functions in _REGISTRY.items():
        if functions[0] is f:
            return _activation(name, functions, params)
    return Activation(f, getattr(f, "derivative", None), **params)


# The names get() knows: name -> (forward, derivative, fused). Lookup, spelling, configs and the
# unknown-name message are portanet.registry's, the same for every kind. ``fused`` is a custom
# activation's own forward-and-backward pass; the built-ins have None: an Activation finds their
# faster backward forms (f_derivative_from_output, f_vjp) by the naming pattern.
_REGISTRY = Registry(
    "activation", base=Activation, factory=_activation, wrap=_from_function,
    accepts="a name such as 'relu', a config dict, a function, an Activation, or None",
    hint="Register your own with activations.register(name, forward, derivative).")
_REGISTRY.update({
    "identity": (identity, identity_derivative, None),
    "relu": (relu, relu_derivative, None),
    "leaky_relu": (leaky_relu, leaky_relu_derivative, None),
    "elu": (elu, elu_derivative, None),
    "selu": (selu, selu_derivative, None),
    "sigmoid": (sigmoid, sigmoid_derivative, None),
    "hard_sigmoid": (hard_sigmoid, hard_sigmoid_derivative, None),
    "tanh": (tanh, tanh_derivative, None),
    "softplus": (softplus, softplus_derivative, None),
    "softsign": (softsign, softsign_derivative, None),
    "swish": (swish, swish_derivative, None),
    "silu": (silu, silu_derivative, None),
    "gelu": (gelu, gelu_derivative, None),
    "gelu_tanh": (gelu_tanh, gelu_tanh_derivative, None),
    "mish": (mish, mish_derivative, None),
    "relu6": (relu6, relu6_derivative, None),
    "hard_swish": (hard_swish, hard_swish_derivative, None),
    "softmax": (softmax, None, None),
    "log_softmax": (log_softmax, None, None),
})
_REGISTRY.alias("identity", "linear", "none")


def known_names() -> list[str]:
    """Every name :func:`get` accepts (registered activations and their aliases)."""
    return _REGISTRY.names()


def register(name: str, forward: Callable, derivative: Callable | None = None, *,
             fused: Callable | None = None, overwrite: bool = False) -> None:
    """Make a custom activation available to :func:`get` (and to saved model configs).

    Examples:
        >>> import numpy as np
        >>> register("square", lambda x: x * x, lambda x: 2.0 * x, overwrite=True)
        >>> get("square").derivative(np.asarray([3.0])).tolist()
        [6.0]
    """
    if derivative is None and fused is None:
        raise TypeError(f"register({name!r}, ...) needs a derivative (or a fused "
                        "forward-and-backward function) so the activation can be backpropagated.")
    _REGISTRY.register(name, (forward, derivative, fused), overwrite=overwrite)


def get(identifier: str | Callable | dict | Activation | None = None, **params: Any) -> Activation:
    """An :class:`Activation` from a name, a config dict, a function, or None (identity).

    Args:
        identifier: ``"relu"`` (case, ``-`` and ``_`` ignored: ``"LeakyReLU"`` works),
            ``{"class_name": "leaky_relu", "config": {"alpha": 0.2}}`` (what ``get_config``
            returns; the older ``{"name": "leaky_relu", "alpha": 0.2}`` is read too), one of
            this module's functions (``activations.gelu``), an :class:`Activation` (returned as
            is), a function with a ``derivative`` attribute, or None / ``"linear"`` for the
            identity.
        **params: parameters of the activation, e.g. ``alpha=0.2`` or ``axis=1``.

    Returns:
        The :class:`Activation`.

    Raises:
        ValueError: an unknown name (the message suggests the closest known ones).
        TypeError: anything else, or parameters the activation does not have.

    Examples:
        >>> get("leaky_relu", alpha=0.2)
        Activation('leaky_relu', alpha=0.2)
        >>> get(None).name
        'identity'
        >>> get("rleu")
        Traceback (most recent call last):
        ...
        ValueError: unknown activation 'rleu'; did you mean 'relu', 'relu6'? Known: elu, ...
    """
    return _REGISTRY.resolve("identity" if identifier is None else identifier, **params)
