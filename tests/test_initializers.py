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
