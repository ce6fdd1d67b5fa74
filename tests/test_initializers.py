"""Initializers: the distributions they promise (NumPy statistics as the independent reference),
identical values on every backend, configs and errors.

The draws happen on the host; the backend part is the transfer (cast on the host, then moved),
so each test builds a layer on the backend and reads its weights back.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import initializers as I
from portanet import layers as L
from portanet.random import host_generator


def built_kernel(backend, init, shape=(400, 300), dtype="float64", seed=0):
    """A Dense (2-D) or Conv2D (4-D) kernel drawn by ``init`` and built on ``backend``."""
    if len(shape) == 2:
        layer = L.Dense(*shape, kernel_initializer=init)
    else:
        layer = L.Conv2D(shape[1], shape[0], tuple(shape[2:]), kernel_initializer=init)
    layer.build(seed=seed, dtype=dtype)
    w = layer.parameters["kernel"]
    assert_on_backend(w, backend, dtype)
    return backend.to_numpy(w).astype(np.float64)


def test_compute_fans():
    assert I.compute_fans(()) == (1, 1)
    assert I.compute_fans((7,)) == (7, 7)
    assert I.compute_fans((3, 5)) == (3, 5)  # Dense (in, out)
    assert I.compute_fans((16, 8, 3, 3)) == (72, 144)  # Conv (out, in, kh, kw)


# Expected (kind, limit or std) for fan_in = 400, fan_out = 300, written from the papers.
FAN_IN, FAN_OUT = 400, 300
VARIANCE_CASES = [
    ("glorot_uniform", "uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("xavier_uniform", "uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("glorot_normal", "normal", math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("he_uniform", "uniform", math.sqrt(6 / FAN_IN)),
    ("kaiming_normal", "normal", math.sqrt(2 / FAN_IN)),
    ("lecun_uniform", "uniform", math.sqrt(3 / FAN_IN)),
    ("lecun_normal", "normal", math.sqrt(1 / FAN_IN)),
]


@pytest.mark.parametrize("name, kind, scale", VARIANCE_CASES, ids=[c[0] for c in VARIANCE_CASES])
def test_variance_scaling_distributions(backend, name, kind, scale):
    w = built_kernel(backend, name)
    n = w.size
    if kind == "uniform":  # U[-a, a]: bounded by a, variance a^2 / 3
        assert np.abs(w).max() <= scale
        assert np.abs(w).max() > 0.99 * scale
        expected_var = scale**2 / 3
    else:
        expected_var = scale**2
    assert abs(w.mean()) < 5 * math.sqrt(expected_var / n)
    # the sample variance of n draws has relative std ~ sqrt(2 / n) (normal) or less (uniform)
    assert abs(w.var() / expected_var - 1) < 5 * math.sqrt(2 / n)


def test_conv_kernel_fans(backend):
    w = built_kernel(backend, "he_normal", shape=(8, 16, 3, 3))
    expected_std = math.sqrt(2 / (16 * 9))
    assert abs(w.std() / expected_std - 1) < 5 * math.sqrt(1 / (2 * w.size))


def test_fixed_distributions(backend):
    w = built_kernel(backend, I.Uniform(-0.2, 0.3))
    assert w.min() >= -0.2 and w.max() < 0.3
    assert abs(w.mean() - 0.05) < 5 * 0.5 / math.sqrt(12 * w.size)
    w = built_kernel(backend, I.Normal(1.0, 0.1))
    assert abs(w.mean() - 1.0) < 5 * 0.1 / math.sqrt(w.size)
    assert abs(w.std() / 0.1 - 1) < 0.02
    w = built_kernel(backend, I.TruncatedNormal(0.5, 0.2))
    assert w.min() >= 0.5 - 0.4 and w.max() <= 0.5 + 0.4
    # a normal truncated at +-2 sigma has std 0.8796 sigma
    assert abs(w.std() / (0.2 * 0.87962566103423978) - 1) < 0.02
    np.testing.assert_array_equal(built_kernel(backend, "zeros", (3, 4)), np.zeros((3, 4)))
    np.testing.assert_array_equal(built_kernel(backend, "ones", (3, 4)), np.ones((3, 4)))
    np.testing.assert_array_equal(built_kernel(backend, I.Constant(0.25), (3, 4)),
                                  np.full((3, 4), 0.25))


def test_variance_scaling_truncated_normal_has_the_target_variance(backend):
    init = I.VarianceScaling(2.0, "fan_out", "truncated_normal")
    w = built_kernel(backend, init)
    target = 2.0 / FAN_OUT
    s = math.sqrt(target) / 0.87962566103423978
    assert np.abs(w).max() <= 2 * s
    assert abs(w.var() / target - 1) < 0.03


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (3, 2, 2, 2)])
def test_orthogonal(backend, shape):
    w = built_kernel(backend, I.Orthogonal(gain=2.0), shape=shape)
    m = w.reshape(shape[0], -1)
    rows, cols = m.shape
    gram = m @ m.T if rows <= cols else m.T @ m
    np.testing.assert_allclose(gram, 4.0 * np.eye(min(rows, cols)), atol=1e-12)


def test_same_seed_same_values_on_every_backend(backend):
    """float32 weights equal the host float64 draw cast to float32, bit for bit."""
    for name in ("glorot_uniform", "he_normal", "truncated_normal", "orthogonal"):
        w = built_kernel(backend, name, shape=(5, 7), dtype="float32", seed=11)
        host = I.get(name)((5, 7), host_generator(11, (0,)))
        np.testing.assert_array_equal(w, host.astype(np.float32), err_msg=name)


def test_get_names_configs_and_errors():
    assert isinstance(I.get("kaiming_uniform"), I.HeUniform)
    assert isinstance(I.get("Xavier_Normal"), I.GlorotNormal)
    for init in (I.Constant(0.3), I.Uniform(-1, 2), I.TruncatedNormal(0, 2), I.Orthogonal(3),
                 I.VarianceScaling(0.5, "fan_avg", "uniform"), I.LecunNormal(), I.Zeros()):
        again = I.get(json.loads(json.dumps(init.get_config())))
        assert again == init
        np.testing.assert_array_equal(again((3, 4), 5), init((3, 4), 5))
    custom = I.get(lambda shape, rng: rng.uniform(size=shape) * 0)
    assert custom((2, 2), 0).shape == (2, 2)
    with pytest.raises(TypeError, match="cannot be saved in a config"):
        custom.get_config()
    with pytest.raises(ValueError, match="unknown initializer 'glorot'"):
        I.get("glorot")
    with pytest.raises(ValueError, match="unknown mode 'fan_max'"):
        I.VarianceScaling(mode="fan_max")
    with pytest.raises(ValueError, match="Uniform needs low < high, received low=1, high=1"):
        I.Uniform(1, 1)
    with pytest.raises(ValueError, match="needs std > 0"):
        I.Normal(std=0)
    with pytest.raises(ValueError, match=r"at least 2 axes, received \(5,\)"):
        I.Orthogonal()((5,), 0)
    with pytest.raises(TypeError, match="needs a host generator"):
        I.HeNormal()((2, 2), "seed")
    with pytest.raises(ValueError, match="non-negative ints"):
        I.Zeros()((2, -1), 0)


# ---------------------------------------------------------------------------------------------
# kernel_initializer="auto": the initializer follows the activation.
# ---------------------------------------------------------------------------------------------
# The documented rule, written out independently of initializers.for_activation: every
# registered activation must appear here, so a new activation forces a decision.
HE, GLOROT, LECUN = "he", "glorot", "lecun"
AUTO_RULE = {
    "relu": HE, "leaky_relu": HE, "relu6": HE, "elu": HE, "gelu": HE, "gelu_tanh": HE,
    "silu": HE, "swish": HE, "mish": HE, "hard_swish": HE,
    "selu": LECUN,
    "identity": GLOROT, "linear": GLOROT, "none": GLOROT, "sigmoid": GLOROT,
    "hard_sigmoid": GLOROT, "tanh": GLOROT, "softplus": GLOROT, "softsign": GLOROT,
    "softmax": GLOROT, "log_softmax": GLOROT,
}
# Var(w) and the relative variance of one squared draw (Var(w^2) / E[w^2]^2: 4/5 for a
# uniform U[-a, a], 2 for a normal) for a kernel with these fans.
THEORY = {
    HE: (lambda fi, fo: 2 / fi, 0.8),
    GLOROT: (lambda fi, fo: 2 / (fi + fo), 0.8),
    LECUN: (lambda fi, fo: 1 / fi, 2.0),
}
EXPECTED_CLASS = {HE: I.HeUniform, GLOROT: I.GlorotUniform, LECUN: I.LecunNormal}


def _registered_activations():
    from portanet import activations

    return activations.known_names()


# Read when this module is collected, before any test runs: the built-in activations only, not
# the ones tests and doctests register as examples (activations.register's doctest: "square").
BUILT_IN_ACTIVATIONS = _registered_activations()


def test_auto_rule_covers_every_registered_activation():
    missing = sorted(set(BUILT_IN_ACTIVATIONS) - set(AUTO_RULE))
    assert not missing, f"decide 'auto' for {missing} (docs/initializers.md) and add them here"


@pytest.mark.parametrize("activation", _registered_activations())
def test_auto_resolves_by_activation(activation):
    family = AUTO_RULE[activation]
    for layer in (L.Dense(4, 3, activation=activation),
                  L.Conv2D(2, 3, kernel_size=3, activation=activation)):
        init = layer.kernel_initializer
        if activation == "leaky_relu":  # He with the PReLU gain 2 / (1 + alpha^2)
            assert init == I.VarianceScaling(2 / (1 + 0.01**2), "fan_in", "uniform")
        else:
            assert type(init) is EXPECTED_CLASS[family], (activation, init)
        assert layer.get_config()["kernel_initializer"] == "auto"


def test_auto_without_activation_and_for_custom_activations_is_glorot():
    from portanet import activations

    assert type(L.Dense(4, 3).kernel_initializer) is I.GlorotUniform
    cube = activations.Activation(lambda x: x * x * x, lambda x: 3.0 * x * x, name="cube")
    assert type(L.Dense(4, 3, activation=cube).kernel_initializer) is I.GlorotUniform
    assert type(L.Maxout(4, 3, kernel_initializer="auto").kernel_initializer) is I.GlorotUniform
    assert I.for_activation(None) == I.GlorotUniform()
    assert I.for_activation("LeakyReLU", alpha=0.5) == I.VarianceScaling(1.6, "fan_in", "uniform")


def test_leaky_relu_default_slope_is_the_activation_default():
    """'auto' assumes leaky_relu's default alpha when the layer does not set one."""
    import inspect

    from portanet import activations

    alpha = inspect.signature(activations.leaky_relu).parameters["alpha"].default
    assert L.Dense(4, 3, activation="leaky_relu").kernel_initializer.scale == 2 / (1 + alpha**2)
    layer = L.Dense(4, 3, activation=activations.get("leaky_relu", alpha=0.3))
    assert layer.kernel_initializer.scale == 2 / (1 + 0.3**2)


# (activation, family, extra variance factor); leaky_relu with a large slope so that its gain
# is visibly not He's (1 + 0.5^2 = 1.25: 20% less variance).
VARIANCE_AUTO_CASES = [("relu", HE, 1.0), ("gelu", HE, 1.0), ("tanh", GLOROT, 1.0),
                       (None, GLOROT, 1.0), ("sigmoid", GLOROT, 1.0), ("selu", LECUN, 1.0),
                       ("leaky_relu_0.5", HE, 1 / 1.25)]


@pytest.mark.parametrize("activation, family, factor", VARIANCE_AUTO_CASES,
                         ids=[str(c[0]) for c in VARIANCE_AUTO_CASES])
@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_auto_kernel_variance_matches_theory(backend, activation, family, factor, kind):
    """The drawn kernel's mean square vs the theoretical variance, within 5 standard errors.

    With k independent zero-mean draws, m = mean(w^2) estimates Var(w) with standard error
    Var(w) sqrt(r / k), r = Var(w^2) / Var(w)^2 (4/5 uniform, 2 normal). He, Glorot and LeCun
    differ by far more than 5 such errors for these fans (k = 120,000 or 73,728).
    """
    from portanet import activations

    act = activations.get("leaky_relu", alpha=0.5) if activation == "leaky_relu_0.5" \
        else activation
    if kind == "dense":
        layer, (fan_in, fan_out) = L.Dense(400, 300, activation=act), (400, 300)
    else:  # (out, in, kh, kw) = (64, 128, 3, 3)
        layer = L.Conv2D(128, 64, kernel_size=3, activation=act)
        fan_in, fan_out = 128 * 9, 64 * 9
    layer.build(seed=3, dtype="float64")
    w = layer.parameters["kernel"]
    assert_on_backend(w, backend, "float64")
    w = backend.to_numpy(w).astype(np.float64)
    variance_of, r = THEORY[family]
    expected = variance_of(fan_in, fan_out) * factor
    k = w.size
    assert abs(np.mean(w**2) / expected - 1) < 5 * math.sqrt(r / k), (activation, kind)
    assert abs(w.mean()) < 5 * math.sqrt(expected / k)


def test_relu_family_keeps_about_half_the_second_moment():
    """The rationale of the rule (docs/initializers.md): for z ~ N(0, 1), E[f(z)^2] of every
    He-family activation is within [0.3, 0.7] (ReLU: exactly 1/2), SELU's is 1."""
    from portanet import activations

    z = np.linspace(-12.0, 12.0, 240_001)
    density = np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    dz = z[1] - z[0]

    def second_moment(name):
        f = np.asarray(activations.get(name).forward(z))
        return float(np.sum(f * f * density) * dz)

    assert abs(second_moment("relu") - 0.5) < 1e-9
    for name in sorted(I.RELU_FAMILY):
        assert 0.3 < second_moment(name) < 0.7, name
    assert abs(second_moment("selu") - 1.0) < 1e-3


def test_auto_keeps_the_signal_through_a_deep_relu_stack(backend):
    """What the rule is for: through 20 square ReLU layers each layer multiplies E[z^2] by
    n Var(w) E[f^2] = 1 with He, but by n (2 / 2n) (1/2) = 1/2 with Glorot, so the output's mean
    square is ~1/2 with "auto" and ~2^-21 = 5e-7 with Glorot. The bounds allow a factor of 10
    for the finite width (64) and 100 the other way, far apart from each other."""
    x = backend.asarray(np.random.default_rng(0).normal(size=(512, 64)), "float64")
    mean_square = {}
    for init in ("auto", "glorot_uniform"):
        model = pn.Sequential([L.Dense(64, 64, activation="relu", kernel_initializer=init)
                               for _ in range(20)], seed=0, dtype="float64")
        y = model.predict(x)
        assert_on_backend(y, backend, "float64")
        mean_square[init] = float(np.mean(backend.to_numpy(y) ** 2))
    assert 0.05 < mean_square["auto"] < 5.0, mean_square
    assert mean_square["glorot_uniform"] < 0.5 * 2.0**-20 * 100, mean_square


def _numpy_reference(seed, stream, shape, kind):
    """The host draw written directly with NumPy: SeedSequence(seed, spawn_key) -> PCG64."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=stream)))
    fan_in, fan_out = shape
    a = {"glorot": math.sqrt(6 / (fan_in + fan_out)), "he": math.sqrt(6 / fan_in)}[kind]
    return rng.uniform(-a, a, size=shape)


def test_explicit_initializers_stay_exact(backend):
    """An explicit "glorot_uniform" on a ReLU layer gives the old weights bit for bit; "auto"
    on the same layer gives He's draw from the same stream."""
    for init, kind in (("glorot_uniform", "glorot"), ("auto", "he")):
        model = pn.Sequential([L.Dense(5, 7, activation="relu", kernel_initializer=init),
                               L.Dense(7, 3, kernel_initializer=init)], seed=11)
        w0 = backend.to_numpy(model.layers[0].parameters["kernel"])
        np.testing.assert_array_equal(
            w0, _numpy_reference(11, (0, 0), (5, 7), kind).astype(np.float32), err_msg=init)
        # no activation: "auto" is Glorot, so the second layer is the same either way
        w1 = backend.to_numpy(model.layers[1].parameters["kernel"])
        np.testing.assert_array_equal(
            w1, _numpy_reference(11, (1, 0), (7, 3), "glorot").astype(np.float32))


# A ReLU Dense layer's config as a checkpoint written before "auto" stores it.
OLD_DENSE_CONFIG = {
    "class_name": "Dense",
    "config": {"in_features": 2, "out_features": 4, "use_bias": True, "activation": "relu",
               "kernel_initializer": {"class_name": "GlorotUniform", "config": {}},
               "bias_initializer": {"class_name": "Zeros", "config": {}},
               "kernel_regularizer": None, "bias_regularizer": None, "name": None}}


def test_old_configs_keep_their_initializer(backend):
    model = pn.Sequential.from_config({"layers": [OLD_DENSE_CONFIG], "seed": 0,
                                       "dtype": "float64"})
    assert type(model.layers[0].kernel_initializer) is I.GlorotUniform
    np.testing.assert_array_equal(backend.to_numpy(model.layers[0].parameters["kernel"]),
                                  _numpy_reference(0, (0, 0), (2, 4), "glorot"))
    assert model.get_config()["layers"][0]["config"]["kernel_initializer"] == {
        "class_name": "GlorotUniform", "config": {}}


def test_auto_round_trips_through_config_and_checkpoint(backend, tmp_path):
    def weights(model):
        return {k: backend.to_numpy(v) for k, v in model.named_parameters().items()}

    model = pn.Sequential([
        L.Conv2D(1, 2, kernel_size=3, padding="same", activation="relu"), L.Flatten(),
        L.Dense(32, 6, activation="selu"), L.Dense(6, 5, activation="tanh"), L.Dense(5, 2),
    ], loss="softmax_cross_entropy", optimizer="sgd", seed=4)
    config = json.loads(json.dumps(model.get_config()))
    kinds = [c["config"].get("kernel_initializer") for c in config["layers"]]
    assert kinds == ["auto", None, "auto", "auto", "auto"]
    again = pn.Sequential.from_config(config)
    assert [type(layer.kernel_initializer) for layer in again.layers if
            hasattr(layer, "kernel_initializer")] == [I.HeUniform, I.LecunNormal,
                                                      I.GlorotUniform, I.GlorotUniform]
    for (k, a), (_, b) in zip(weights(model).items(), weights(again).items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=k)
    path = tmp_path / "auto.safetensors"
    model.save(path)
    loaded = pn.load(path, backend=backend.name, device=backend.device)
    for (k, a), (_, b) in zip(weights(model).items(), weights(loaded).items(), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert loaded.get_config()["layers"] == config["layers"]


def test_auto_errors():
    with pytest.raises(ValueError, match="'auto' depends on the activation.*for_activation"):
        I.get("auto")
    with pytest.raises(TypeError, match=r"activation name \(str\) or None, received 3"):
        I.for_activation(3)
