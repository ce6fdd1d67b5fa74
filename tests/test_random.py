"""random.py: host draws identical on every backend; on-device generators reproducible per seed."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import random as pnr


def test_host_draws_are_bit_identical_on_every_backend(backend):
    """Initial values: float64 host draw, cast on the host, moved: the same bits everywhere."""
    w = pnr.host_normal(seed=42, shape=(4, 3), stream=(2,)).astype(np.float32)
    on_backend = pn.to_numpy(backend.asarray(w))
    np.testing.assert_array_equal(on_backend, w)
    # the reference is NumPy's own SeedSequence-seeded PCG64, independently constructed
    ref = np.random.Generator(np.random.PCG64(np.random.SeedSequence(42, spawn_key=(2,))))
    np.testing.assert_array_equal(on_backend, ref.normal(0.0, 1.0, size=(4, 3)).astype(np.float32))


def test_host_streams_are_independent_of_each_other():
    a = pnr.host_uniform(0, (5,), stream=(0,))
    b = pnr.host_uniform(0, (5,), stream=(1,))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, pnr.host_uniform(0, (5,), stream=(0,)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_device_generator_is_reproducible_and_stays_on_device(backend, dtype):
    draws = []
    for _ in range(2):
        gen = pn.random.Generator(seed=7)
        u = gen.uniform((1000,), dtype=dtype)
        z = gen.normal((1000,), dtype=dtype)
        assert_on_backend(u, backend, dtype)
        assert_on_backend(z, backend, dtype)
        draws.append((pn.to_numpy(u), pn.to_numpy(z)))
    np.testing.assert_array_equal(draws[0][0], draws[1][0])
    np.testing.assert_array_equal(draws[0][1], draws[1][1])
    other = pn.to_numpy(pn.random.Generator(seed=8).uniform((1000,), dtype=dtype))
    assert not np.array_equal(other, draws[0][0])


def test_successive_draws_differ(backend):
    gen = pn.random.Generator(seed=1)
    a, b = pn.to_numpy(gen.uniform((50,))), pn.to_numpy(gen.uniform((50,)))
    assert not np.array_equal(a, b)


def test_distributions_have_the_right_statistics(backend):
    """100k draws: means within 5 standard errors of their expectations."""
    n = 100_000
    gen = pn.random.Generator(seed=3)
    u = pn.to_numpy(gen.uniform((n,), low=-2.0, high=4.0, dtype="float64"))
    assert u.min() >= -2.0 and u.max() < 4.0
    assert abs(u.mean() - 1.0) < 5 * 6 / np.sqrt(12 * n)
    z = pn.to_numpy(gen.normal((n,), mean=3.0, std=2.0, dtype="float64"))
    assert abs(z.mean() - 3.0) < 5 * 2 / np.sqrt(n)
    assert abs(z.std() - 2.0) < 0.05
    m = gen.bernoulli((n,), p=0.3, dtype="float32")
    assert_on_backend(m, backend, "float32")
    m = pn.to_numpy(m)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert abs(m.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / n)
    mask = gen.bernoulli((10,), p=0.5, dtype="bool")
    assert mask.dtype == backend.dtype("bool")


def test_permutation(backend):
    gen = pn.random.Generator(seed=5)
    p = gen.permutation(100)
    assert_on_backend(p, backend, "int64")
    p = pn.to_numpy(p)
    np.testing.assert_array_equal(np.sort(p), np.arange(100))
    assert not np.array_equal(p, np.arange(100))
    np.testing.assert_array_equal(pn.to_numpy(pn.random.Generator(seed=5).permutation(100)), p)


def test_generator_for_a_named_backend_and_device():
    gen = pn.random.Generator(seed=0, backend="array_api_strict", device="device1")
    assert pn.device_of(gen.uniform((3,))) == "device1"
    assert "seed=0" in repr(gen)


def test_bad_arguments_are_clear_errors():
    gen = pn.random.Generator(seed=0, backend="numpy")
    with pytest.raises(ValueError, match=r"bernoulli probability must be in \[0, 1\], received"):
        gen.bernoulli((2,), p=1.5)
    with pytest.raises(ValueError, match="shape must be non-negative ints, received"):
        gen.uniform((2, -1))
    with pytest.raises(TypeError, match="need dtype float32 or float64, received 'int64'"):
        gen.normal((2,), dtype="int64")
    with pytest.raises(ValueError, match="seed must be a non-negative int or None"):
        pn.random.Generator(seed=-1)
    with pytest.raises(ValueError, match="permutation length"):
        gen.permutation(-3)


def test_seed_none_draws_fresh_entropy():
    a = pn.random.Generator(backend="numpy")
    b = pn.random.Generator(backend="numpy")
    assert a.seed != b.seed
