"""Initial values for parameters, drawn on the host so every backend starts from the same numbers.

An initializer is a small object: calling it with a shape and a host random generator returns a
float64 NumPy array of that shape. Layers cast it to the model's dtype on the host and move it
to the active backend (``Layer.build``), so the same seed gives bit-identical initial weights on
NumPy, CuPy, PyTorch, JAX and array-api-strict.

Why the scale matters: with ``n_in`` inputs of unit variance, a unit ``z = sum_i w_i x_i`` has
variance ``n_in * Var(w)``. Keeping that near 1 layer after layer (so signals neither vanish nor
explode) is what the *variance scaling* family does:

=====================  =====================  ===========================================
name                   Var(w)                 reference
=====================  =====================  ===========================================
glorot / xavier        2 / (fan_in + fan_out) Glorot & Bengio, AISTATS 2010 (tanh, sigmoid)
he / kaiming           2 / fan_in             He et al., ICCV 2015 (ReLU halves the variance)
lecun                  1 / fan_in             LeCun et al., "Efficient BackProp" 1998 (SELU)
=====================  =====================  ===========================================

A uniform U[-a, a] has variance a^2 / 3, so its limit is ``a = sqrt(3 * Var)``; a normal has
``std = sqrt(Var)``.

``kernel_initializer="auto"`` (the default of Dense and Conv2D; Maxout accepts it) picks the
variance by the layer's activation (:func:`for_activation`): He for the ReLU family, LeCun
normal for SELU, Glorot for everything else (tanh, sigmoid, softmax, linear, custom ones).

Fans (:func:`compute_fans`): a Dense kernel has shape ``(in_features, out_features)``, so
``fan_in = shape[0]``, ``fan_out = shape[1]``. A convolution kernel has shape
``(out_channels, in_channels, kh, kw)`` (PyTorch's layout) and each output sees
``in_channels * kh * kw`` inputs: ``fan_in = shape[1] * kh * kw``, ``fan_out = shape[0] * kh * kw``.

Examples:
    >>> from portanet import initializers
    >>> from portanet.random import host_generator
    >>> init = initializers.get("he_normal")
    >>> w = init((784, 128), host_generator(seed=0, stream=(0, 0)))   # NumPy float64
    >>> w.shape
    (784, 128)
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from ._config import Configurable
from ._typing import Array, Shape
from .random import host_generator
from .registry import Registry, key

__all__ = [
    "AUTO",
    "RELU_FAMILY",
    "Constant",
    "GlorotNormal",
    "GlorotUniform",
    "HeNormal",
    "HeUniform",
    "Initializer",
    "LecunNormal",
    "LecunUniform",
    "Normal",
    "Ones",
    "Orthogonal",
    "TruncatedNormal",
    "Uniform",
    "VarianceScaling",
    "Zeros",
    "compute_fans",
    "deserialize",
    "for_activation",
    "get",
    "is_auto",
    "serialize",
]


def compute_fans(shape: Shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel of ``shape``.

    * 0-d: (1, 1). 1-d ``(n,)``: (n, n).
    * 2-d Dense kernel ``(in, out)``: (in, out).
    * k-d convolution kernel ``(out, in, *window)``: (in * prod(window), out * prod(window)).

    Examples:
        >>> compute_fans((3, 5)), compute_fans((16, 8, 3, 3))
        ((3, 5), (72, 144))
    """
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _generator(generator: Any):
    """Accept a host generator, or an int seed (stream ()) for quick standalone use."""
    if generator is None:
        raise TypeError("an initializer needs a host generator, e.g. "
                        "portanet.random.host_generator(seed, stream); received None.")
    if isinstance(generator, int) and not isinstance(generator, bool):
        return host_generator(generator)
    if not hasattr(generator, "standard_normal"):
        raise TypeError("an initializer needs a host generator "
                        "(portanet.random.host_generator(seed, stream)) or an int seed, received "
                        f"{type(generator).__name__}.")
    return generator


def _check_shape(shape: Any) -> Shape:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise ValueError(f"an initializer shape must be non-negative ints, received {shape!r}.")
    return shape


class Initializer(Configurable):
    """Base class: ``init(shape, generator)`` returns a float64 host (NumPy) array of ``shape``.

    Subclasses implement :meth:`draw`. ``generator`` is a host generator from
    :func:`portanet.random.host_generator` (or an int seed).
    """

    name: str = "initializer"

    def __call__(self, shape: Shape, generator: Any = None) -> Array:
        shape = _check_shape(shape)
        return self.draw(shape, _generator(generator))

    def draw(self, shape: Shape, rng: Any) -> Array:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Constants: w = c. Zeros is the usual bias start; never use constants for kernels (every unit
# in a layer would compute the same thing and receive the same gradient: symmetry never breaks).
# ---------------------------------------------------------------------------------------------
class Constant(Initializer):
    """w = value everywhere.

    Examples:
        >>> Constant(0.5)((2,), 0).tolist()
        [0.5, 0.5]
    """

    name = "constant"

    def __init__(self, value: float = 0.0):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"Constant value must be a number, received {value!r}.")
        self.value = float(value)

    def draw(self, shape, rng):
        # Draw nothing; a uniform over an empty range gives exact constants and a float64 array.
        return rng.uniform(self.value, self.value, size=shape)

    def _config(self):
        return {"value": self.value}


class Zeros(Constant):
    """w = 0 (the default bias initializer)."""

    name = "zeros"

    def __init__(self):
        super().__init__(0.0)

    def _config(self):
        return {}


class Ones(Constant):
    """w = 1 (the default BatchNorm/LayerNorm scale)."""

    name = "ones"

    def __init__(self):
        super().__init__(1.0)

    def _config(self):
        return {}


# ---------------------------------------------------------------------------------------------
# Fixed-scale random draws.
# ---------------------------------------------------------------------------------------------
class Uniform(Initializer):
    """w ~ U[low, high).

    Examples:
        >>> w = Uniform(-0.1, 0.1)((1000,), 0); bool(abs(w).max() <= 0.1)
        True
    """

    name = "uniform"

    def __init__(self, low: float = -0.05, high: float = 0.05):
        if not float(low) < float(high):
            raise ValueError(f"Uniform needs low < high, received low={low!r}, high={high!r}.")
        self.low, self.high = float(low), float(high)

    def draw(self, shape, rng):
        return rng.uniform(self.low, self.high, size=shape)

    def _config(self):
        return {"low": self.low, "high": self.high}


class Normal(Initializer):
    """w ~ N(mean, std^2)."""

    name = "normal"

    def __init__(self, mean: float = 0.0, std: float = 0.05):
        if not float(std) > 0.0:
            raise ValueError(f"Normal needs std > 0, received std={std!r}.")
        self.mean, self.std = float(mean), float(std)

    def draw(self, shape, rng):
        return rng.normal(self.mean, self.std, size=shape)

    def _config(self):
        return {"mean": self.mean, "std": self.std}


def _truncated_standard_normal(shape: Shape, rng: Any) -> Array:
    """N(0, 1) conditioned on |z| <= 2, by redrawing the values that fall outside.

    Each pass redraws the whole array and keeps the old values that were inside, so only
    ~4.6% of the values are replaced per pass; a handful of passes finishes any realistic shape.
    """
    z = rng.standard_normal(size=shape)
    xp = compat.array_namespace(z)
    for _ in range(100):
        outside = xp.abs(z) > 2.0
        if not bool(xp.any(outside)):  # host array: reading a value here is free
            return z
        z = xp.where(outside, rng.standard_normal(size=shape), z)
    raise RuntimeError("truncated normal draw did not converge; the host generator is broken.")


# The standard deviation of N(0, 1) truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)).
_TRUNCATED_STD = 0.87962566103423978


class TruncatedNormal(Initializer):
    """w ~ N(mean, std^2) truncated to [mean - 2 std, mean + 2 std] (values beyond are redrawn).

    Note the truncated draws have a smaller spread than ``std`` (0.88 std); this keeps ``std``
    as the parameter of the untruncated normal, as Keras does (PyTorch's ``trunc_normal_`` also
    takes the untruncated std, but cuts at the absolute bounds a=-2, b=2, not at mean ± 2 std).
    """

    name = "truncated_normal"

    def __init__(self, mean: float = 0.0, std: float = 0.05):
        if not float(std) > 0.0:
            raise ValueError(f"TruncatedNormal needs std > 0, received std={std!r}.")
        self.mean, self.std = float(mean), float(std)

    def draw(self, shape, rng):
        return _truncated_standard_normal(shape, rng) * self.std + self.mean

    def _config(self):
        return {"mean": self.mean, "std": self.std}


# ---------------------------------------------------------------------------------------------
# Variance scaling: Var(w) = scale / n, n = fan_in, fan_out or their mean.
# ---------------------------------------------------------------------------------------------
_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("uniform", "normal", "truncated_normal")


class VarianceScaling(Initializer):
    """Draws with variance ``scale / n``; n = fan_in, fan_out or (fan_in + fan_out) / 2.

    * ``uniform``: U[-a, a] with a = sqrt(3 * scale / n).
    * ``normal``: N(0, scale / n).
    * ``truncated_normal``: N(0, s^2) truncated at 2 s, with s = sqrt(scale / n) / 0.8796 so
      the *truncated* values have variance scale / n.

    Args:
        scale: the numerator (2 for ReLU nets, 1 otherwise).
        mode: "fan_in", "fan_out" or "fan_avg".
        distribution: "uniform", "normal" or "truncated_normal".
    """

    name = "variance_scaling"

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "normal"):
        if not float(scale) > 0.0:
            raise ValueError(f"VarianceScaling needs scale > 0, received scale={scale!r}.")
        if mode not in _MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {list(_MODES)}.")
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"unknown distribution {distribution!r}; expected one of "
                             f"{list(_DISTRIBUTIONS)}.")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def variance(self, shape: Shape) -> float:
        """The target variance scale / n for a kernel of ``shape``."""
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale / max(1.0, float(n))

    def draw(self, shape, rng):
        var = self.variance(shape)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            return rng.uniform(-limit, limit, size=shape)
        if self.distribution == "normal":
            return rng.normal(0.0, math.sqrt(var), size=shape)
        return _truncated_standard_normal(shape, rng) * (math.sqrt(var) / _TRUNCATED_STD)

    def _config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution}


class _NamedVarianceScaling(VarianceScaling):
    """A variance-scaling preset: its arguments are fixed, so its config is empty."""

    preset: tuple[float, str, str]

    def __init__(self):
        super().__init__(*self.preset)

    def _config(self):
        return {}


class GlorotUniform(_NamedVarianceScaling):
    """Glorot (Xavier) uniform: U[-a, a], a = sqrt(6 / (fan_in + fan_out)). Keras' default."""

    name = "glorot_uniform"
    preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_NamedVarianceScaling):
    """Glorot (Xavier) normal: N(0, 2 / (fan_in + fan_out)) (untruncated, as PyTorch)."""

    name = "glorot_normal"
    preset = (1.0, "fan_avg", "normal")


class HeUniform(_NamedVarianceScaling):
    """He (Kaiming) uniform for ReLU: U[-a, a], a = sqrt(6 / fan_in)."""

    name = "he_uniform"
    preset = (2.0, "fan_in", "uniform")


class HeNormal(_NamedVarianceScaling):
    """He (Kaiming) normal for ReLU: N(0, 2 / fan_in) (untruncated, as PyTorch)."""

    name = "he_normal"
    preset = (2.0, "fan_in", "normal")


class LecunUniform(_NamedVarianceScaling):
    """LeCun uniform: U[-a, a], a = sqrt(3 / fan_in)."""

    name = "lecun_uniform"
    preset = (1.0, "fan_in", "uniform")


class LecunNormal(_NamedVarianceScaling):
    """LeCun normal: N(0, 1 / fan_in) (the SELU initialization)."""

    name = "lecun_normal"
    preset = (1.0, "fan_in", "normal")


# ---------------------------------------------------------------------------------------------
# Orthogonal (Saxe, McClelland & Ganguli, ICLR 2014): W^T W = I (or W W^T = I), so a linear
# map preserves norms exactly; good for deep linear stacks and recurrent weights.
# ---------------------------------------------------------------------------------------------
class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix times ``gain``, from the QR factorization of a normal matrix.

    The kernel is viewed as a matrix of ``shape[0]`` rows and ``prod(shape[1:])`` columns. With
    A ~ N(0, 1) of the taller orientation, A = QR and Q's columns are orthonormal; multiplying
    each column by sign(R_jj) makes Q uniformly distributed (Haar measure; Mezzadri 2007).
    Afterwards ``W @ W.T = gain^2 I`` if rows <= cols, else ``W.T @ W = gain^2 I``.
    """

    name = "orthogonal"

    def __init__(self, gain: float = 1.0):
        if not float(gain) > 0.0:
            raise ValueError(f"Orthogonal needs gain > 0, received gain={gain!r}.")
        self.gain = float(gain)

    def draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal needs a shape with at least 2 axes, received {shape}.")
        rows, cols = shape[0], math.prod(shape[1:])
        a = rng.standard_normal(size=(max(rows, cols), min(rows, cols)))
        xp = compat.array_namespace(a)  # the host namespace: QR is in the linalg extension
        q, r = xp.linalg.qr(a)
        q = q * xp.sign(xp.linalg.diagonal(r))[None, :]
        if rows < cols:
            q = q.T
        # Flattening first gives a C-ordered copy (q.T is a transposed view), then the shape.
        return xp.reshape(xp.reshape(q * self.gain, (-1,)), shape)

    def _config(self):
        return {"gain": self.gain}


# ---------------------------------------------------------------------------------------------
# "auto": the initializer follows the activation (seed 000 section 16).
#
# The He argument: z = sum_i w_i x_i over n inputs x_i = f(z'_i) of the previous layer, so
# Var(z) = n Var(w) E[f(z')^2]. Keeping Var(z) = Var(z') needs Var(w) = 1 / (n E[f(z')^2]).
# For z' ~ N(0, 1), numerically:
#
#   f             E[f(z')^2]      f             E[f(z')^2]      f             E[f(z')^2]
#   relu, relu6   0.500           gelu          0.425           identity      1.000
#   leaky_relu    (1 + a^2) / 2   mish          0.452           selu          1.000
#   elu           0.645           silu, swish   0.356           softplus      0.921
#   hard_swish    0.332           tanh          0.394           sigmoid       0.293 (mean 0.5)
#
# The ReLU family keeps about half of the second moment: He's 2 / fan_in gives it back.
# SELU is built to keep mean 0 and variance 1 when Var(w) = 1 / fan_in, drawn from a normal
# (Klambauer et al., 2017, section "Initialization"): LeCun normal. For tanh and sigmoid Glorot
# & Bengio's fan average is the classic choice (their derivation is for the near-linear regime
# around 0), and it stays the choice for everything else, so a model without a ReLU-like or
# SELU activation gets exactly the weights it got before "auto" existed.
# ---------------------------------------------------------------------------------------------
AUTO = "auto"

#: Activations for which "auto" picks He: ReLU and the functions shaped like it (identity for
#: large positive inputs, a small bounded value for negative ones).
RELU_FAMILY = frozenset({"relu", "leaky_relu", "relu6", "elu", "gelu", "gelu_tanh", "silu",
                         "swish", "mish", "hard_swish"})

# The default slope of activations.leaky_relu; a Leaky ReLU built without alpha uses it.
_LEAKY_RELU_ALPHA = 0.01


def _activation_key(name: str) -> str:
    """The spelling-insensitive key activations.get uses: "LeakyReLU" == "leaky_relu"."""
    return key(name)


_RELU_KEYS = frozenset(_activation_key(n) for n in RELU_FAMILY)


def is_auto(identifier: Any) -> bool:
    """True for the string "auto" (any case): the layer resolves it from its activation."""
    return isinstance(identifier, str) and identifier.strip().lower() == AUTO


def for_activation(activation: str | None = None, **params: Any) -> Initializer:
    """The kernel initializer that ``kernel_initializer="auto"`` picks for ``activation``.

    ====================================================  ==========================  ==========
    activation                                            initializer                 Var(w)
    ====================================================  ==========================  ==========
    relu, relu6, elu, gelu, gelu_tanh, silu, swish,       He uniform                  2 / fan_in
    mish, hard_swish
    leaky_relu (slope alpha, default 0.01)                He uniform with the PReLU   2 / ((1 +
                                                          gain (He et al. 2015,       alpha^2)
                                                          eq. 15)                     fan_in)
    selu                                                  LeCun normal                1 / fan_in
    anything else: None / linear, tanh, sigmoid,          Glorot uniform (the         2 / (fan_in
    hard_sigmoid, softsign, softplus, softmax,            default before "auto")      + fan_out)
    log_softmax, custom activations
    ====================================================  ==========================  ==========

    Args:
        activation: an activation name as :func:`portanet.activations.get` spells it (case,
            "-" and "_" ignored), or None for no activation.
        **params: the activation's parameters; only leaky_relu's ``alpha`` changes the choice.

    Returns:
        The :class:`Initializer` (a fresh instance).

    Examples:
        >>> for_activation("relu"), for_activation("tanh"), for_activation("selu")
        (HeUniform(), GlorotUniform(), LecunNormal())
        >>> for_activation("leaky_relu", alpha=0.2)
        VarianceScaling(scale=1.923076923076923, mode='fan_in', distribution='uniform')
    """
    if activation is None:
        return GlorotUniform()
    if not isinstance(activation, str):
        raise TypeError(f"for_activation takes an activation name (str) or None, received "
                        f"{activation!r} ({type(activation).__name__}).")
    key = _activation_key(activation)
    if key == _activation_key("leaky_relu"):
        alpha = float(params.get("alpha", _LEAKY_RELU_ALPHA))
        # A leaky ReLU keeps (1 + alpha^2) / 2 of the second moment instead of 1/2.
        return VarianceScaling(2.0 / (1.0 + alpha * alpha), "fan_in", "uniform")
    if key in _RELU_KEYS:
        return HeUniform()
    if key == "selu":
        return LecunNormal()
    return GlorotUniform()


# ---------------------------------------------------------------------------------------------
# Lookup by name and (de)serialization.
# ---------------------------------------------------------------------------------------------
def _wrap(fn: Any, **params: Any) -> Initializer:
    """A user function ``f(shape, generator) -> host array`` as an initializer."""
    if params:
        raise TypeError(f"initializer {fn!r} is a function; it takes no parameters, received "
                        f"{sorted(params)}.")
    return _Callable(fn)


_REGISTRY = Registry("initializer", base=Initializer, wrap=_wrap,
                     accepts="a name, a config dict, an Initializer or a callable "
                             "f(shape, generator)")
"""The initializers by class name (what configs write), with their usual other names."""
for _cls, _aliases in (
        (Constant, ()), (Zeros, ("zero",)), (Ones, ("one",)),
        (Uniform, ("random_uniform",)), (Normal, ("random_normal",)), (TruncatedNormal, ()),
        (VarianceScaling, ()), (GlorotUniform, ("xavier_uniform",)),
        (GlorotNormal, ("xavier_normal",)), (HeUniform, ("kaiming_uniform",)),
        (HeNormal, ("kaiming_normal",)), (LecunUniform, ()), (LecunNormal, ()),
        (Orthogonal, ())):
    _REGISTRY.register(_cls.__name__, _cls, _aliases)


def serialize(initializer: Initializer) -> dict:
    """The JSON-able config of ``initializer`` (see :meth:`Initializer.get_config`)."""
    return initializer.get_config()


def deserialize(config: dict) -> Initializer:
    """Rebuild an initializer from ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(config, dict):
        raise ValueError("an initializer config is a dict {'class_name': ..., 'config': {...}}, "
                         f"received {config!r:.200}.")
    return _REGISTRY.resolve(config)


def get(identifier: Any, **params: Any) -> Initializer:
    """An :class:`Initializer` from a name ("he_normal", "xavier_uniform", "HeNormal", ...;
    ``params`` go to its constructor), a config dict, an instance (returned as is) or a
    callable ``f(shape, generator) -> host array``.

    Examples:
        >>> get("kaiming_uniform")
        HeUniform()
        >>> get("truncated_normal", std=0.02)
        TruncatedNormal(mean=0.0, std=0.02)
    """
    if is_auto(identifier):
        raise ValueError(
            "initializer 'auto' depends on the activation, so only a layer can resolve it "
            "(Dense, Conv2D and Maxout take kernel_initializer='auto'). Outside a layer, ask "
            "for_activation(name), e.g. initializers.for_activation('relu').")
    return _REGISTRY.resolve(identifier, **params)


class _Callable(Initializer):
    """Wraps a user function ``f(shape, generator) -> host array`` (not serializable)."""

    name = "callable"

    def __init__(self, fn):
        self.fn = fn

    def draw(self, shape, rng):
        return self.fn(shape, rng)

    def get_config(self):
        raise TypeError(f"initializer {self.fn!r} is a plain function and cannot be saved in a "
                        "config; subclass portanet.initializers.Initializer instead.")

    def __eq__(self, other):
        return isinstance(other, _Callable) and self.fn is other.fn

    def __hash__(self):
        return hash(self.fn)
