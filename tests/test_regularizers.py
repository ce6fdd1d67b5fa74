"""Regularizers: penalty and gradient against a NumPy float64 reference and finite differences,
on every backend, dtype kept; configs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_matches, numerical_gradient, relative_error

from portanet import regularizers as R

CASES = [
    (R.L1(0.3), lambda w: 0.3 * np.abs(w).sum(), lambda w: 0.3 * np.sign(w)),
    (R.L2(0.2), lambda w: 0.2 * (w ** 2).sum(), lambda w: 0.4 * w),
    (R.L1L2(0.1, 0.05), lambda w: 0.1 * np.abs(w).sum() + 0.05 * (w ** 2).sum(),
     lambda w: 0.1 * np.sign(w) + 0.1 * w),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reg, penalty, gradient", CASES, ids=["L1", "L2", "L1L2"])
def test_penalty_and_gradient(backend, reg, penalty, gradient, dtype):
    w = np.random.default_rng(0).normal(size=(4, 3))
    w[0, 0] = 0.0  # the L1 subgradient at 0 is 0
    w = w.astype(dtype).astype(np.float64)
    value, grad = reg(backend.asarray(w, dtype))
    assert value.ndim == 0
    assert_matches(value, penalty(w), backend, dtype)
    assert_matches(grad, gradient(w), backend, dtype)


@pytest.mark.parametrize("reg", [c[0] for c in CASES], ids=["L1", "L2", "L1L2"])
def test_gradient_matches_finite_differences(backend, reg):
    w = np.random.default_rng(1).normal(size=(3, 4))  # no entry within eps of the kink at 0

    def f(v):
        return float(backend.to_numpy(reg.penalty(backend.asarray(v, "float64"))))

    numeric = numerical_gradient(f, w)
    analytic = backend.to_numpy(reg.gradient(backend.asarray(w, "float64")))
    assert relative_error(analytic, numeric) < 1e-6


def test_get_config_and_errors():
    for reg in (R.L1(0.5), R.L2(1e-4), R.L1L2(0.1, 0.2)):
        assert R.get(json.loads(json.dumps(reg.get_config()))) == reg
    assert R.get(None) is None
    assert R.get("l2") == R.L2(0.01)
    assert R.get("elastic_net") == R.L1L2(0.01, 0.01)
    assert R.serialize(None) is None
    with pytest.raises(ValueError, match="l2 must be a number >= 0, received l2=-1"):
        R.L2(-1)
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        R.get("l3")
    with pytest.raises(ValueError,
                       match=r"unknown regularizer 'L0'\. Known: elastic_net, L1, L1L2, L2"):
        R.get({"class_name": "L0"})
    with pytest.raises(TypeError, match=r"cannot make a regularizer from 0\.1 \(float\)"):
        R.get(0.1)
