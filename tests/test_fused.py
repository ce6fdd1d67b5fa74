"""The fused kernels (portanet/fused.py): each against a float64 NumPy reference on every backend,
and the library's fused call against the portable form on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend

import portanet as pn
from portanet import fused
from portanet.backend import adapter_of
from portanet.backends import ADAPTERS
from portanet.fused import KERNELS

DTYPES = ["float32", "float64"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"z": rng.standard_normal((6, 4)),
            "dy": rng.standard_normal((6, 4)), "p": rng.standard_normal((4, 6)),
            "d": rng.standard_normal((4, 6))}


# ---------------------------------------------------------------------------------------------
# Against float64 NumPy references written here
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_its_backward_match_reference(backend, dtype):
    v = _data()
    z = v["z"].copy()
    z[0, :4] = [0.0, -np.inf, np.inf, np.nan]  # the kink, both infinities, NaN
    z = z.astype(dtype)
    y = fused.relu(backend.asarray(z, dtype))
    expected = np.where(np.isnan(z), np.nan, np.maximum(z, 0.0)).astype(np.float64)
    assert_on_backend(y, backend, dtype)
    np.testing.assert_array_equal(pn.to_numpy(y).astype(np.float64), expected)
    dx = pn.to_numpy(fused.relu_backward(backend.asarray(v["dy"], dtype), y))
    # derivative 1 where x > 0, else 0 (0 at the kink, as in PyTorch)
    expected_dx = np.where(z > 0, v["dy"].astype(dtype), 0.0)
    number = ~np.isnan(z)
    np.testing.assert_array_equal(dx[number].astype(np.float64), expected_dx[number])
    # at a NaN activation torch's kernel passes dy on, the portable form 0 * dy (documented)
    assert dx[0, 3] in (0.0, v["dy"].astype(dtype)[0, 3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_scaled_writes_into_p_and_never_into_d(backend, dtype):
    v = _data()
    p, d = backend.asarray(v["p"], dtype), backend.asarray(v["d"], dtype)
    out = fused.add_scaled_(p, d, -0.25)
    assert_matches(out, v["p"] - 0.25 * v["d"], backend, dtype)
    np.testing.assert_array_equal(pn.to_numpy(d), v["d"].astype(dtype))
    if backend.name != "jax":  # JAX arrays cannot be written: the result is a new array
        assert out is p


# ---------------------------------------------------------------------------------------------
# The library's own kernel against the portable form, on the same arrays
# ---------------------------------------------------------------------------------------------
def _both(kernel, args_of, backend, monkeypatch):
    """Run ``kernel`` with the adapter's fused call, then with the portable form."""
    got = pn.to_numpy(getattr(fused, kernel)(*args_of())).astype(np.float64)
    for adapter in ADAPTERS.values():
        monkeypatch.setattr(type(adapter), kernel, None)
    portable = pn.to_numpy(getattr(fused, kernel)(*args_of())).astype(np.float64)
    monkeypatch.undo()
    return got, portable


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_relu_kernels_equal_the_portable_form_exactly(backend, dtype, monkeypatch):
    """No rounding happens in relu or its mask, so the two forms agree bit for bit (on numbers:
    at NaN activations they differ as fused.relu_backward documents)."""
    v = _data()
    z = backend.asarray(v["z"], dtype)
    got, portable = _both("relu", lambda: (z,), backend, monkeypatch)
    np.testing.assert_array_equal(got, portable)
    y = fused.relu(z)
    dy = backend.asarray(v["dy"], dtype)
    got, portable = _both("relu_backward", lambda: (dy, y), backend, monkeypatch)
    np.testing.assert_array_equal(got, portable)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_scaled_is_within_one_rounding_of_the_portable_form(backend, dtype,
                                                                     monkeypatch):
    """torch's add_ uses a fused multiply-add: p + alpha*d rounded once instead of
    twice. The two results then differ by at most one rounding of alpha*d plus one of the sum."""
    v = _data(seed=3)
    alpha = -0.1

    def args():
        return backend.asarray(v["p"], dtype), backend.asarray(v["d"], dtype), alpha

    got, portable = _both("add_scaled_", args, backend, monkeypatch)
    p32, d32 = v["p"].astype(dtype), v["d"].astype(dtype)
    step = np.abs(alpha * d32.astype(np.float64))
    bound = np.spacing(step.astype(dtype)) + np.spacing(np.abs(portable).astype(dtype))
    assert np.all(np.abs(got - portable) <= bound.astype(np.float64)), (got - portable)
    exact = p32.astype(np.float64) + alpha * d32.astype(np.float64)
    assert np.all(np.abs(got - exact) <= bound)


def test_adapters_offer_only_known_kernels():
    """Every kernel an adapter names is one fused.py dispatches to (a typo would be ignored)."""
    for adapter in ADAPTERS.values():
        for kernel in KERNELS:
            assert getattr(adapter, kernel) is None or callable(getattr(adapter, kernel))


def test_adapter_of_caches_by_type_and_still_refuses_foreign_objects():
    assert adapter_of(np.zeros(2)) is ADAPTERS["numpy"]
    assert adapter_of(np.zeros(2)) is ADAPTERS["numpy"]  # from the cache
    with pytest.raises(TypeError, match="Convert it with pn.asarray"):
        adapter_of([1.0, 2.0])
