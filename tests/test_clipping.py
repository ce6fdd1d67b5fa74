"""clipping: by value, per-parameter norm and global norm against torch.nn.utils, on every
backend, plus properties and bad input."""

from __future__ import annotations

import math

import array_api_compat as compat
import numpy as np
import pytest
from helpers import assert_matches
from hypothesis import given, settings
from hypothesis import strategies as st

import portanet as pn
from portanet import clipping

SHAPES = {"kernel": (5, 3), "bias": (3,), "scale": ()}


def _grads(scale: float, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: np.asarray(rng.normal(size=s) * scale) for n, s in SHAPES.items()}


def _torch_clip(grads, fn):
    """Apply a torch.nn.utils clipping function to .grad of float64 tensors; returns NumPy."""
    torch = pytest.importorskip("torch")
    params = {n: torch.zeros(np.shape(g), dtype=torch.float64, requires_grad=True)
              for n, g in grads.items()}
    for n, p in params.items():
        p.grad = torch.tensor(grads[n], dtype=torch.float64)
    result = fn(torch, params)
    clipped = {n: p.grad.numpy().copy() for n, p in params.items()}
    return clipped, (None if result is None else float(result))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("scale", [0.1, 10.0], ids=["idle", "active"])
def test_global_norm_matches_torch_clip_grad_norm(backend, dtype, norm_type, scale):
    grads = _grads(scale)
    expected, expected_norm = _torch_clip(
        grads, lambda torch, p: torch.nn.utils.clip_grad_norm_(p.values(), 2.5, norm_type))
    ours = {n: backend.asarray(g, dtype) for n, g in grads.items()}
    clipped, total = clipping.clip_by_global_norm(ours, 2.5, norm_type)
    for n in SHAPES:
        assert_matches(clipped[n], expected[n], backend, dtype)
    assert_matches(total, expected_norm, backend, dtype)
    if scale == 0.1:  # under the limit: unchanged up to the factor min(1, ...) = 1 exactly
        for n in SHAPES:
            np.testing.assert_array_equal(pn.to_numpy(clipped[n]), pn.to_numpy(ours[n]))


@pytest.mark.parametrize("scale", [0.1, 10.0], ids=["idle", "active"])
def test_per_parameter_norm_matches_torch_on_each_array(backend, scale):
    grads = _grads(scale, seed=1)

    def per_array(torch, params):
        for p in params.values():
            torch.nn.utils.clip_grad_norm_([p], 1.5)

    expected, _ = _torch_clip(grads, per_array)
    clipped = clipping.clip_by_norm({n: backend.asarray(g, "float64") for n, g in grads.items()},
                                    1.5)
    for n in SHAPES:
        assert_matches(clipped[n], expected[n], backend, "float64")


def test_value_clipping_matches_torch_clip_grad_value(backend):
    grads = _grads(3.0, seed=2)
    expected, _ = _torch_clip(
        grads, lambda torch, p: torch.nn.utils.clip_grad_value_(p.values(), 2.0))
    clipped = clipping.clip_by_value({n: backend.asarray(g, "float32") for n, g in grads.items()},
                                     2.0)
    for n in SHAPES:
        assert_matches(clipped[n], expected[n], backend, "float32")


def test_zero_gradients_stay_zero(backend):
    """The 1e-6 in min(1, c / (norm + 1e-6)) keeps an all-zero gradient finite (no 0/0)."""
    zeros = {n: backend.asarray(np.zeros(s), "float64") for n, s in SHAPES.items()}
    clipped, total = clipping.clip_by_global_norm(zeros, 1.0)
    for n, s in SHAPES.items():
        assert_matches(clipped[n], np.zeros(s), backend, "float64")
    assert_matches(total, 0.0, backend, "float64")
    for n, g in clipping.clip_by_norm(zeros, 1.0).items():
        assert_matches(g, np.zeros(SHAPES[n]), backend, "float64")


def test_norm_against_numpy_linalg(backend):
    g = _grads(1.0, seed=4)["kernel"]
    x = backend.asarray(g, "float64")
    for p in (1.0, 2.0, 3.0, math.inf):
        assert_matches(clipping.norm(x, p), np.linalg.norm(g.ravel(), p), backend, "float64")
    flat = np.concatenate([v.ravel() for v in _grads(1.0, seed=4).values()])
    total = clipping.global_norm({n: backend.asarray(v, "float64")
                                  for n, v in _grads(1.0, seed=4).items()})
    assert_matches(total, np.linalg.norm(flat), backend, "float64")


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-2, 1e2), seed=st.integers(0, 99))
def test_global_clipping_bounds_the_norm_and_keeps_the_direction(scale, max_norm, seed):
    """Property (NumPy float64): ||clip(g)|| <= c, and clip(g) = k * g with one k in (0, 1]."""
    grads = _grads(scale, seed)
    clipped, total = clipping.clip_by_global_norm(grads, max_norm)
    flat = np.concatenate([np.ravel(v) for v in grads.values()])
    out = np.concatenate([np.ravel(v) for v in clipped.values()])
    assert np.linalg.norm(out) <= max_norm * (1 + 1e-12)
    k = np.linalg.norm(out) / np.linalg.norm(flat)
    assert 0 < k <= 1 + 1e-15
    np.testing.assert_allclose(out, k * flat, rtol=1e-12, atol=1e-300)
    assert float(total) == pytest.approx(np.linalg.norm(flat), rel=1e-12)


def test_bad_input_raises_clear_errors(backend):
    grads = {n: backend.asarray(g, "float64") for n, g in _grads(1.0).items()}
    with pytest.raises(ValueError, match=r"max_norm must be a positive, finite number, received "
                                         r"0.0"):
        clipping.clip_by_global_norm(grads, 0.0)
    with pytest.raises(ValueError, match=r"clip_value must be a positive, finite number, "
                                         r"received -1"):
        clipping.clip_by_value(grads, -1)
    with pytest.raises(TypeError, match=r"max_norm must be a positive number, received '1'"):
        clipping.clip_by_norm(grads, "1")
    with pytest.raises(ValueError, match=r"norm_type must be a positive number or math.inf, "
                                         r"received -2"):
        clipping.global_norm(grads, norm_type=-2)
    with pytest.raises(ValueError, match=r"global_norm received no gradients"):
        clipping.global_norm({})
    other = "numpy" if backend.name != "numpy" else "array_api_strict"
    mixed = {**grads, "bias": pn.to_backend(grads["bias"], other)}
    with pytest.raises(pn.MixedArraysError, match=r"combined"):
        clipping.clip_by_global_norm(mixed, 1.0)


# ---------------------------------------------------------------------------------------------
# A norm that is not finite (issue 14: [1, inf, -2] clipped to [0, nan, -0])
# ---------------------------------------------------------------------------------------------
NONFINITE = {"inf": [1.0, math.inf, -2.0], "nan": [1.0, math.nan, -2.0]}


@pytest.fixture
def quiet_numpy():
    """inf * 0 is the case under test: NumPy's "invalid value" warnings are expected."""
    with np.errstate(all="ignore"):
        yield


@pytest.mark.parametrize("kind", sorted(NONFINITE))
def test_a_nonfinite_norm_gives_what_torch_gives_or_raises(backend, kind, quiet_numpy):
    """By default the functions do what torch's clip_grad_norm_ does (NaN where the entry was
    not finite: a norm of inf gives the factor 0); error_if_nonfinite=True raises instead, as
    torch's does, and names the gradient."""
    grads = {"w": np.asarray(NONFINITE[kind]), "b": np.asarray([0.5, -0.5])}
    expected, expected_norm = _torch_clip(
        grads, lambda torch, p: torch.nn.utils.clip_grad_norm_(p.values(), 1.0))
    ours = {n: backend.asarray(g, "float64") for n, g in grads.items()}
    clipped, total = clipping.clip_by_global_norm(ours, 1.0)
    for n in grads:
        np.testing.assert_array_equal(pn.to_numpy(clipped[n]), expected[n])
    assert not math.isfinite(float(pn.to_numpy(total))) and not math.isfinite(expected_norm)
    per_array = clipping.clip_by_norm(ours, 1.0)
    assert np.isnan(pn.to_numpy(per_array["w"])[1])
    assert np.isfinite(pn.to_numpy(per_array["b"])).all()  # each array on its own
    message = r"the global 2-norm of the gradients is not finite \(NaN or Inf entries in \['w'\]\)"
    with pytest.raises(FloatingPointError, match=message):
        clipping.clip_by_global_norm(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(FloatingPointError, match=r"clip_by_norm: the 2-norm of some gradient is "
                                                 r"not finite \(NaN or Inf entries in \['w'\]"):
        clipping.clip_by_norm(ours, 1.0, error_if_nonfinite=True)
    torch = pytest.importorskip("torch")
    t = torch.tensor(grads["w"], requires_grad=True)
    t.grad = torch.tensor(grads["w"])
    with pytest.raises(RuntimeError, match="non-finite"):  # the behaviour we follow
        torch.nn.utils.clip_grad_norm_([t], 1.0, error_if_nonfinite=True)


def test_finite_gradients_pass_the_nonfinite_check(backend):
    grads = {n: backend.asarray(g, "float64") for n, g in _grads(10.0).items()}
    strict, _ = clipping.clip_by_global_norm(grads, 2.5, error_if_nonfinite=True)
    plain, _ = clipping.clip_by_global_norm(grads, 2.5)
    for n in SHAPES:
        np.testing.assert_array_equal(pn.to_numpy(strict[n]), pn.to_numpy(plain[n]))
    assert clipping.clip_by_norm(grads, 1.0, error_if_nonfinite=True).keys() == grads.keys()


@pytest.mark.parametrize("kind", sorted(NONFINITE))
def test_clip_gradients_reports_finiteness_on_the_device(backend, kind, quiet_numpy):
    """The optimizers' pipeline returns a 0-d boolean array (no host read) that is False when a
    norm rule met a NaN/Inf norm; value clipping alone maps inf to the limit and runs no norm."""
    bad = {"w": backend.asarray(NONFINITE[kind], "float32"), "b": backend.asarray([1.0], "float32")}
    good = {"w": backend.asarray([1.0, 5.0, -2.0], "float32")}
    for rule in ({"global_clip_norm": 1.0}, {"clip_norm": 1.0},
                 {"clip_norm": 2.0, "global_clip_norm": 1.0}):
        _, finite = clipping.clip_gradients(bad, **rule)
        assert finite.shape == () and not bool(finite)
        assert compat.device(finite) == backend.device
        clipped, finite = clipping.clip_gradients(good, **rule)
        assert bool(finite) and float(pn.to_numpy(clipping.global_norm(clipped))) <= 1.0 + 1e-6
    clipped, finite = clipping.clip_gradients(bad, clip_value=1.5)
    assert finite is None
    if kind == "inf":  # value clipping turns +-inf into +-c; a norm after it is finite
        np.testing.assert_array_equal(pn.to_numpy(clipped["w"]), [1.0, 1.5, -1.5])
        _, finite = clipping.clip_gradients(bad, clip_value=1.5, global_clip_norm=1.0)
        assert bool(finite)
