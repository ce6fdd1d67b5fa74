"""losses.py: every loss value and gradient, on every backend, against independent references.

References: central finite differences in float64 (relative error < 1e-6) for every loss and
reduction; PyTorch (torch.nn.functional + autograd; float64 rtol 1e-10, float32 rtol 1e-5) for
every loss torch has; float64 NumPy formulas written here for the others (RMSE, log-cosh, hinge,
squared hinge).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend, numerical_gradient, relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import portanet as pn
from portanet import losses as L

N, C = 3, 4  # small: finite differences evaluate the loss twice per element


# ---------------------------------------------------------------------------------------------
# Test data, away from every kink (|r| = delta, margins = 0, clip points)
# ---------------------------------------------------------------------------------------------
def rng(seed):
    return np.random.default_rng(seed)


def regression(seed):
    r = rng(seed)
    pred, true = r.normal(size=(N, C)), r.normal(size=(N, C))
    diff = pred - true
    pred = np.where(np.abs(diff) < 0.05, pred + 0.2, pred)  # MAE's kink at 0
    diff = pred - true
    pred = np.where(np.abs(np.abs(diff) - 0.7) < 0.05, pred + 0.2 * np.sign(diff), pred)
    return pred, true  # and Huber(0.7)'s at |r| = 0.7


def binary_scores(seed, zero_one=False):
    r = rng(seed)
    z = r.uniform(-2.5, 2.5, size=(N, C))
    z = np.where(np.abs(np.abs(z) - 1.0) < 0.1, z * 1.3, z)  # margin 1 - y z = 0 at |z| = 1
    y = r.choice([-1.0, 1.0], size=(N, C))
    return z, (y + 1) / 2 if zero_one else y


def probabilities(seed):
    r = rng(seed)
    return r.uniform(0.05, 0.95, size=(N, C)), r.uniform(0.0, 1.0, size=(N, C))


def binary_logits(seed):
    r = rng(seed)
    return r.normal(size=(N, C)) * 3, r.uniform(0.0, 1.0, size=(N, C))


def class_ids(seed, n=N):
    return rng(seed).integers(0, C, size=n)


def logits_ids(seed):
    return rng(seed).normal(size=(N, C)) * 2, class_ids(seed + 100)


def logits_onehot(seed):
    z, ids = logits_ids(seed)
    return z, np.eye(C)[ids]


def logits_soft(seed):
    z = rng(seed).normal(size=(N, C)) * 2
    t = rng(seed + 1).uniform(0.1, 1.0, size=(N, C))
    return z, t / t.sum(axis=1, keepdims=True)


def distributions(seed):
    r = rng(seed)
    q = r.uniform(0.1, 1.0, size=(N, C))
    p = r.uniform(0.0, 1.0, size=(N, C))
    p[0, 1] = 0.0  # a zero target probability: the 0 log 0 = 0 limit
    return q / q.sum(axis=1, keepdims=True), p / p.sum(axis=1, keepdims=True)


def multiclass_scores(seed):
    """Scores whose every margin 1 - z_t + z_j stays at least 0.05 from 0."""
    r = rng(seed)
    while True:
        z, ids = r.normal(size=(N, C)) * 1.5, r.integers(0, C, size=N)
        margins = 1.0 - z[np.arange(N), ids][:, None] + z
        margins[np.arange(N), ids] = 1.0
        if np.all(np.abs(margins) > 0.05):
            return z, ids


def counts(seed):
    r = rng(seed)
    return r.uniform(0.2, 3.0, size=(N, C)), r.poisson(1.5, size=(N, C)).astype(np.float64)


def log_counts(seed):
    rate, y = counts(seed)
    return np.log(rate), y


# ---------------------------------------------------------------------------------------------
# Independent references: torch per-sample losses (autograd gives gradients), or NumPy formulas
# ---------------------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch")


def per_sample_mean(t):
    """Elementwise terms (N, ...) -> per-sample mean (N,), portanet's documented reduction."""
    return t.reshape(t.shape[0], -1).mean(dim=1)


def t_l1(p, t):
    return per_sample_mean(_torch().nn.functional.l1_loss(p, t, reduction="none"))


def t_mse(p, t):
    return per_sample_mean(_torch().nn.functional.mse_loss(p, t, reduction="none"))


def t_huber(p, t):
    return per_sample_mean(_torch().nn.functional.huber_loss(p, t, reduction="none", delta=0.7))


def t_bce(p, t):
    return per_sample_mean(_torch().nn.functional.binary_cross_entropy(p, t, reduction="none"))


def t_bce_logits(p, t):
    return per_sample_mean(_torch().nn.functional.binary_cross_entropy_with_logits(
        p, t, reduction="none"))


def t_poisson(log_input):
    def f(p, t):
        return per_sample_mean(_torch().nn.functional.poisson_nll_loss(
            p, t, log_input=log_input, full=False, eps=1e-7, reduction="none"))
    return f


def t_cce(p, t):
    torch = _torch()
    if t.dtype == torch.int64:
        return torch.nn.functional.nll_loss(torch.log(p), t, reduction="none")
    return -(t * torch.log(p)).sum(dim=-1)


def t_cross_entropy(**kwargs):
    def f(z, t):
        weight = kwargs.get("weight")
        torch = _torch()
        w = None if weight is None else torch.tensor(weight, dtype=z.dtype)
        return torch.nn.functional.cross_entropy(
            z, t, weight=w, label_smoothing=kwargs.get("label_smoothing", 0.0), reduction="none")
    return f


def t_multi_margin(z, t):
    return _torch().nn.functional.multi_margin_loss(z, t, margin=1.0, reduction="none")


def t_kl(q, p):
    torch = _torch()
    return torch.nn.functional.kl_div(torch.log(q), p, reduction="none").sum(dim=-1)


# NumPy: per-sample value and the gradient of the sum of per-sample values, derived by hand.
def np_log_cosh(p, t):
    r = p - t
    return np.log(np.cosh(r)).mean(axis=1), np.tanh(r) / r.shape[1]


def np_hinge(p, t):
    y = np.where(np.all((t == 0) | (t == 1)), 2 * t - 1, t)
    m = 1 - y * p
    return np.maximum(m, 0).mean(axis=1), np.where(m > 0, -y, 0.0) / p.shape[1]


def np_squared_hinge(p, t):
    y = np.where(np.all((t == 0) | (t == 1)), 2 * t - 1, t)
    m = np.maximum(1 - y * p, 0)
    return (m**2).mean(axis=1), -2 * y * m / p.shape[1]


def np_rmse(p, t):
    r = p - t
    root = np.sqrt((r**2).mean(axis=1))
    return root, r / (r.shape[1] * root[:, None])


@dataclass
class Case:
    id: str
    make: Callable  # (reduction) -> Loss
    data: Callable  # (seed) -> (y_pred, y_true) NumPy float64 (int64 class ids)
    torch_per_sample: Callable | None = None  # (y_pred tensor, y_true tensor) -> (N,) tensor
    numpy_per_sample: Callable | None = None  # (y_pred, y_true) -> (per-sample, grad of sum)
    torch_mean: Callable | None = None  # torch's own reduction="mean", when it differs

    def __repr__(self):
        return self.id


SCE_W = [0.5, 2.0, 1.0, 3.0]
CASES = [
    Case("mae", lambda r: L.MeanAbsoluteError(reduction=r), regression, t_l1),
    Case("mse", lambda r: L.MeanSquaredError(reduction=r), regression, t_mse),
    Case("rmse", lambda r: L.RootMeanSquaredError(reduction=r), regression, None, np_rmse),
    Case("huber", lambda r: L.Huber(delta=0.7, reduction=r), regression, t_huber),
    Case("log_cosh", lambda r: L.LogCosh(reduction=r), regression, None, np_log_cosh),
    Case("hinge", lambda r: L.Hinge(reduction=r), binary_scores, None, np_hinge),
    Case("hinge01", lambda r: L.Hinge(reduction=r), lambda s: binary_scores(s, True), None,
         np_hinge),
    Case("squared_hinge", lambda r: L.SquaredHinge(reduction=r), binary_scores, None,
         np_squared_hinge),
    Case("categorical_hinge", lambda r: L.CategoricalHinge(reduction=r), multiclass_scores,
         t_multi_margin),
    Case("bce", lambda r: L.BinaryCrossEntropy(reduction=r), probabilities, t_bce),
    Case("bce_logits", lambda r: L.BinaryCrossEntropyWithLogits(reduction=r), binary_logits,
         t_bce_logits),
    Case("cce_ids", lambda r: L.CategoricalCrossEntropy(reduction=r),
         lambda s: (distributions(s)[0], class_ids(s)), t_cce),
    Case("cce_soft", lambda r: L.CategoricalCrossEntropy(reduction=r), distributions, t_cce),
    Case("sce_ids", lambda r: L.SoftmaxCrossEntropy(reduction=r), logits_ids,
         t_cross_entropy()),
    Case("sce_onehot", lambda r: L.SoftmaxCrossEntropy(reduction=r), logits_onehot,
         t_cross_entropy()),
    Case("sce_soft", lambda r: L.SoftmaxCrossEntropy(reduction=r), logits_soft,
         t_cross_entropy()),
    Case("sce_smooth", lambda r: L.SoftmaxCrossEntropy(label_smoothing=0.1, reduction=r),
         logits_ids, t_cross_entropy(label_smoothing=0.1)),
    Case("sce_weighted_smooth",
         lambda r: L.SoftmaxCrossEntropy(label_smoothing=0.2, class_weights=SCE_W, reduction=r),
         logits_ids, t_cross_entropy(weight=SCE_W, label_smoothing=0.2)),
    Case("kl", lambda r: L.KLDivergence(reduction=r), distributions, t_kl),
    Case("poisson", lambda r: L.Poisson(reduction=r), counts, t_poisson(False)),
    Case("poisson_log", lambda r: L.Poisson(log_input=True, reduction=r), log_counts,
         t_poisson(True)),
]
TORCH_CASES = [c for c in CASES if c.torch_per_sample is not None]
NUMPY_CASES = [c for c in CASES if c.numpy_per_sample is not None]


def as_backend(case, a, dtype):
    """Predictions in ``dtype``; integer class ids stay int64."""
    return case.asarray(a, "int64" if a.dtype.kind == "i" else dtype)


def torch_reference(c: Case, reduction: str, y_pred, y_true):
    """(value, gradient) from torch autograd in float64, reduced as portanet documents."""
    torch = _torch()
    p = torch.tensor(y_pred, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(y_true)
    per_sample = c.torch_per_sample(p, t)
    if reduction == "none":
        value, total = per_sample, per_sample.sum()
    elif reduction == "sum":
        value = total = per_sample.sum()
    elif c.id == "sce_weighted_smooth":  # torch's own weighted mean: sum / sum_i w[t_i]
        value = total = torch.nn.functional.cross_entropy(
            p, t, weight=torch.tensor(SCE_W, dtype=torch.float64), label_smoothing=0.2)
    else:
        value = total = per_sample.mean()
    (grad,) = torch.autograd.grad(total, p)
    return value.detach().numpy(), grad.numpy()


def numpy_reference(c: Case, reduction: str, y_pred, y_true):
    per_sample, grad_of_sum = c.numpy_per_sample(y_pred, y_true)
    if reduction == "none":
        return per_sample, grad_of_sum
    if reduction == "sum":
        return per_sample.sum(), grad_of_sum
    if c.id == "rmse":  # the RMSE of the whole batch: sqrt(mean r^2), grad r / (N D sqrt(.))
        r = y_pred - y_true
        root = np.sqrt(np.mean(r**2))
        return root, r / (r.size * root)
    return per_sample.mean(), grad_of_sum / len(per_sample)


REDUCTIONS = ["mean", "sum", "none"]


# ---------------------------------------------------------------------------------------------
# Finite differences: every loss, every reduction, every backend (float64)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", CASES, ids=repr)
def test_gradient_matches_finite_differences(backend, c):
    """"mean" and "none" here; "sum" has exactly the gradient of "none" (next test)."""
    y_pred, y_true = c.data(0)
    yt = as_backend(backend, y_true, "float64")
    for reduction in ("mean", "none"):
        loss = c.make(reduction)

        def total(a, loss=loss):  # "none": the gradient is that of the sum
            value, _ = loss(backend.asarray(a, "float64"), yt)
            return float(np.sum(backend.to_numpy(value)))

        _, grad = loss(backend.asarray(y_pred, "float64"), yt)
        assert_on_backend(grad, backend, "float64")
        numeric = numerical_gradient(total, y_pred)
        err = relative_error(backend.to_numpy(grad), numeric)
        assert err < 1e-6, (reduction, err)


# ---------------------------------------------------------------------------------------------
# PyTorch (forward and autograd) and NumPy references, float64 and float32, every backend
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", TORCH_CASES, ids=repr)
def test_matches_torch(backend, c):
    """Value and gradient, every reduction, float64 (rtol 1e-10) and float32 (rtol 1e-5)."""
    y_pred, y_true = c.data(1)
    for reduction in REDUCTIONS:
        value_ref, grad_ref = torch_reference(c, reduction, y_pred, y_true)
        for dtype in ("float64", "float32"):
            value, grad = c.make(reduction)(backend.asarray(y_pred, dtype),
                                            as_backend(backend, y_true, dtype))
            assert value.shape == (() if reduction != "none" else (N,))
            msg = f"{dtype} {reduction}"
            assert_matches(value, value_ref, backend, dtype, err_msg=f"{msg} value")
            assert_matches(grad, grad_ref, backend, dtype, err_msg=f"{msg} gradient")


@pytest.mark.parametrize("c", NUMPY_CASES, ids=repr)
def test_matches_numpy_reference(backend, c):
    """Losses torch lacks, against float64 NumPy formulas written above."""
    y_pred, y_true = c.data(2)
    for reduction in REDUCTIONS:
        value_ref, grad_ref = numpy_reference(c, reduction, y_pred, y_true)
        for dtype in ("float64", "float32"):
            value, grad = c.make(reduction)(backend.asarray(y_pred, dtype),
                                            as_backend(backend, y_true, dtype))
            msg = f"{dtype} {reduction}"
            assert_matches(value, value_ref, backend, dtype, err_msg=f"{msg} value")
            assert_matches(grad, grad_ref, backend, dtype, err_msg=f"{msg} gradient")


@pytest.mark.parametrize("c", TORCH_CASES, ids=repr)
def test_mean_is_torch_mean(backend, c):
    """The docstrings' claim: portanet's "mean" is torch's own reduction="mean"."""
    torch = _torch()
    F = torch.nn.functional
    y_pred, y_true = c.data(3)
    p, t = torch.tensor(y_pred), torch.tensor(y_true)
    direct = {
        "mae": lambda: F.l1_loss(p, t), "mse": lambda: F.mse_loss(p, t),
        "huber": lambda: F.huber_loss(p, t, delta=0.7),
        "bce": lambda: F.binary_cross_entropy(p, t),
        "bce_logits": lambda: F.binary_cross_entropy_with_logits(p, t),
        "categorical_hinge": lambda: F.multi_margin_loss(p, t),
        "cce_ids": lambda: F.nll_loss(torch.log(p), t),
        "cce_soft": lambda: -(t * torch.log(p)).sum(dim=1).mean(),
        "sce_ids": lambda: F.cross_entropy(p, t), "sce_onehot": lambda: F.cross_entropy(p, t),
        "sce_soft": lambda: F.cross_entropy(p, t),
        "sce_smooth": lambda: F.cross_entropy(p, t, label_smoothing=0.1),
        "sce_weighted_smooth": lambda: F.cross_entropy(
            p, t, weight=torch.tensor(SCE_W, dtype=torch.float64), label_smoothing=0.2),
        "kl": lambda: F.kl_div(torch.log(p), t, reduction="batchmean"),
        "poisson": lambda: F.poisson_nll_loss(p, t, log_input=False, eps=1e-7),
        "poisson_log": lambda: F.poisson_nll_loss(p, t, log_input=True),
    }[c.id]()
    ours = float(c.make("mean")(backend.asarray(y_pred, "float64"),
                                as_backend(backend, y_true, "float64"))[0])
    assert ours == pytest.approx(float(direct), rel=1e-12)


def test_weighted_one_hot_equals_class_ids(backend):
    """With class weights, one-hot targets give the class-id loss (torch's probability-target
    path divides by N instead, see the SoftmaxCrossEntropy docstring)."""
    z, ids = logits_ids(4)
    loss = L.SoftmaxCrossEntropy(class_weights=SCE_W, label_smoothing=0.1)
    v_ids, g_ids = loss(backend.asarray(z, "float64"), backend.asarray(ids, "int64"))
    v_hot, g_hot = loss(backend.asarray(z, "float64"), backend.asarray(np.eye(C)[ids], "float64"))
    assert_matches(v_hot, backend.to_numpy(v_ids), backend, "float64")
    assert_matches(g_hot, backend.to_numpy(g_ids), backend, "float64")


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_reductions_are_consistent(backend, c):
    """sum == sum(none) with the same gradient; mean == mean(none) with gradient / N (except
    RMSE's batch root and the class-weighted mean, checked against their references above)."""
    y_pred, y_true = c.data(5)
    p, t = backend.asarray(y_pred, "float64"), as_backend(backend, y_true, "float64")
    none, g_none = (backend.to_numpy(a) for a in c.make("none")(p, t))
    total, g_sum = (backend.to_numpy(a) for a in c.make("sum")(p, t))
    np.testing.assert_allclose(total, none.sum(), rtol=1e-12)
    np.testing.assert_allclose(g_sum, g_none, rtol=1e-15)
    if c.id not in ("rmse", "sce_weighted_smooth"):
        mean, g_mean = (backend.to_numpy(a) for a in c.make("mean")(p, t))
        np.testing.assert_allclose(mean, none.mean(), rtol=1e-12)
        np.testing.assert_allclose(g_mean, g_none / N, rtol=1e-12, atol=1e-16)


def test_hinge_label_conventions_agree(backend):
    z, y = binary_scores(6)
    loss = L.Hinge()
    a = loss(backend.asarray(z, "float64"), backend.asarray(y, "float64"))
    b = loss(backend.asarray(z, "float64"), backend.asarray((y + 1) / 2, "int64"))
    for x, ref in zip(b, a, strict=True):
        assert_matches(x, backend.to_numpy(ref), backend, "float64")


def test_column_targets_for_single_output(backend):
    """(N,) targets for (N, 1) predictions, e.g. a one-output regression or binary model."""
    p = backend.asarray([[0.2], [0.9]], "float32")
    value, grad = L.BinaryCrossEntropy()(p, backend.asarray([0, 1], "int64"))
    assert grad.shape == (2, 1)
    assert_matches(value, -(math.log(0.8) + math.log(0.9)) / 2, backend, "float32")


def test_higher_rank_class_losses(backend):
    """Class axis last, any batch shape: (2, 3, C) logits with (2, 3) ids."""
    torch = _torch()
    z = rng(7).normal(size=(2, 3, C))
    ids = rng(8).integers(0, C, size=(2, 3))
    tz = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(tz.permute(0, 2, 1), torch.tensor(ids))
    (g_ref,) = torch.autograd.grad(ref, tz)
    value, grad = L.SoftmaxCrossEntropy()(backend.asarray(z, "float64"),
                                          backend.asarray(ids, "int64"))
    assert_matches(value, ref.item(), backend, "float64")
    assert_matches(grad, g_ref.numpy(), backend, "float64")
    none, _ = L.SoftmaxCrossEntropy(reduction="none")(backend.asarray(z, "float64"),
                                                      backend.asarray(ids, "int64"))
    assert none.shape == (2, 3)


# ---------------------------------------------------------------------------------------------
# Stability at +-1000 (float32), probabilities of exactly 0 and 1; dtype and device kept
# ---------------------------------------------------------------------------------------------
def test_softmax_cross_entropy_at_plus_minus_1000(backend):
    z = np.array([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]])
    ids = np.array([0, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = L.SoftmaxCrossEntropy(reduction="none")(backend.asarray(z, "float32"),
                                                              backend.asarray(ids, "int64"))
        smooth, g_smooth = L.SoftmaxCrossEntropy(label_smoothing=0.3, class_weights=[1, 2, 3])(
            backend.asarray(z, "float32"), backend.asarray(ids, "int64"))
    # -log softmax: 0 for the winning class, 2000 for the -1000 class; softmax is one-hot
    assert_matches(value, [0.0, 2000.0, 2000.0], backend, "float32")
    s = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    assert_matches(grad, s - np.eye(3)[ids], backend, "float32")
    for out in (smooth, g_smooth):
        assert_on_backend(out, backend, "float32")
        assert np.all(np.isfinite(backend.to_numpy(out)))


def test_bce_with_logits_at_plus_minus_1000(backend):
    z = np.array([-1000.0, -1000.0, 1000.0, 1000.0])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = L.BinaryCrossEntropyWithLogits(reduction="none")(
            backend.asarray(z, "float32"), backend.asarray(y, "float32"))
    assert_matches(value, [0.0, 1000.0, 1000.0, 0.0], backend, "float32")
    assert_matches(grad, [0.0, -1.0, 1.0, 0.0], backend, "float32")


def test_probability_losses_finite_at_exactly_0_and_1(backend):
    dtype = "float32"
    p = np.array([[0.0, 1.0], [1.0, 0.0]])
    y = np.array([[0.0, 1.0], [0.0, 1.0]])  # row 0 perfect, row 1 confidently wrong
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs = [
            L.BinaryCrossEntropy(reduction="none")(backend.asarray(p, dtype),
                                                   backend.asarray(y, dtype)),
            L.CategoricalCrossEntropy(reduction="none")(backend.asarray(p, dtype),
                                                        backend.asarray(y, dtype)),
            L.KLDivergence(reduction="none")(backend.asarray(p, dtype),
                                             backend.asarray(y, dtype)),
            L.Poisson(reduction="none")(backend.asarray(p, dtype), backend.asarray(y, dtype)),
        ]
    for value, grad in outputs:
        for out in (value, grad):
            assert_on_backend(out, backend, dtype)
            assert np.all(np.isfinite(backend.to_numpy(out)))
    bce = backend.to_numpy(outputs[0][0])
    # the wrong row costs about -log(1e-7) = 16.1 per element (float32 rounds 1 - 1e-7 to
    # 1 - 1.19e-7, so its side costs -log(1.19e-7) = 15.9)
    assert bce[0] < 1e-6 and 15.8 < bce[1] < 16.2
    cce = backend.to_numpy(outputs[1][0])
    assert cce[0] == pytest.approx(0.0, abs=1e-6) and cce[1] == pytest.approx(-math.log(1e-7),
                                                                               rel=1e-5)


@pytest.mark.parametrize("c", CASES, ids=repr)
def test_dtype_and_device_kept(backend, c):
    y_pred, y_true = c.data(9)
    for reduction in REDUCTIONS:
        value, grad = c.make(reduction)(backend.asarray(y_pred, "float32"),
                                        as_backend(backend, y_true, "float32"))
        assert_on_backend(value, backend, "float32")
        assert_on_backend(grad, backend, "float32")
        assert grad.shape == y_pred.shape
        assert value.shape == ((N,) if reduction == "none" else ())


def test_out_of_range_ids_make_the_loss_nan_without_a_host_read(backend):
    z = backend.asarray(rng(10).normal(size=(3, C)), "float32")
    for loss in (L.SoftmaxCrossEntropy(reduction="none"), L.CategoricalCrossEntropy(
            reduction="none"), L.CategoricalHinge(reduction="none")):
        value, grad = loss(z, backend.asarray([0, C, -1], "int64"))
        got = backend.to_numpy(value)
        assert np.isfinite(got[0]) and np.isnan(got[1]) and np.isnan(got[2])
        assert_on_backend(grad, backend, "float32")


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------
PROPERTY_SETTINGS = settings(max_examples=15, deadline=None,
                             suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 30.0, 1000.0]),
       smoothing=st.sampled_from([0.0, 0.25]))
def test_softmax_cross_entropy_properties(backend, seed, scale, smoothing):
    """L >= 0 and equals -log softmax at the label; each gradient row sums to 0."""
    z = rng(seed).normal(size=(N, C)) * scale
    ids = rng(seed + 1).integers(0, C, size=N)
    value, grad = L.SoftmaxCrossEntropy(label_smoothing=smoothing, reduction="none")(
        backend.asarray(z, "float64"), backend.asarray(ids, "int64"))
    value, grad = backend.to_numpy(value), backend.to_numpy(grad)
    assert np.all(value >= 0) and np.all(np.isfinite(value))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-12)
    m = z.max(axis=1, keepdims=True)
    log_s = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    target = (1 - smoothing) * np.eye(C)[ids] + smoothing / C
    np.testing.assert_allclose(value, -(target * log_s).sum(axis=1), rtol=1e-12, atol=1e-12)


@PROPERTY_SETTINGS
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.5, 3.0, 8.0]))
def test_bce_with_logits_equals_bce_of_sigmoid(backend, seed, scale):
    # |z| <= 12 keeps sigmoid(z) inside BCE's clip [1e-7, 1 - 1e-7], where the two agree
    z = np.clip(rng(seed).normal(size=(N, C)) * scale, -12.0, 12.0)
    y = rng(seed + 1).uniform(size=(N, C))
    a = L.BinaryCrossEntropyWithLogits()(backend.asarray(z, "float64"),
                                         backend.asarray(y, "float64"))
    b_value, b_grad = L.BinaryCrossEntropy()(backend.asarray(1 / (1 + np.exp(-z)), "float64"),
                                             backend.asarray(y, "float64"))
    np.testing.assert_allclose(backend.to_numpy(a[0]), backend.to_numpy(b_value), rtol=1e-9)
    # chain rule through the sigmoid: dL/dz = dL/dp * p (1 - p)
    p = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(backend.to_numpy(a[1]), backend.to_numpy(b_grad) * p * (1 - p),
                               rtol=1e-8, atol=1e-15)


@PROPERTY_SETTINGS
@given(shape=st.sampled_from([(1,), (5,), (2, 3), (2, 3, 2)]), seed=st.integers(0, 2**16),
       name=st.sampled_from(["mse", "mae", "huber", "log_cosh"]))
def test_regression_losses_any_shape(backend, shape, seed, name):
    """Non-negative, zero at a perfect fit, mean == sum / N, gradient shaped like y_pred."""
    p, t = rng(seed).normal(size=shape), rng(seed + 1).normal(size=shape)
    mean, grad = L.get(name)(backend.asarray(p, "float64"), backend.asarray(t, "float64"))
    total, _ = L.get(name, reduction="sum")(backend.asarray(p, "float64"),
                                            backend.asarray(t, "float64"))
    assert grad.shape == shape and float(mean) >= 0
    np.testing.assert_allclose(float(total), float(mean) * shape[0], rtol=1e-12)
    zero, zero_grad = L.get(name)(backend.asarray(t, "float64"), backend.asarray(t, "float64"))
    assert abs(float(zero)) <= 1e-15 and np.all(backend.to_numpy(zero_grad) == 0.0)


# ---------------------------------------------------------------------------------------------
# get(), configs
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", CASES, ids=repr)
def test_config_round_trip_through_json(c):
    loss = c.make("sum")
    config = json.loads(json.dumps(loss.get_config()))
    for again in (L.get(config), L.from_config(config), type(loss).from_config(config)):
        assert type(again) is type(loss) and again == loss
        assert again.get_config() == loss.get_config()


@pytest.mark.parametrize("name, cls", [
    ("mse", L.MeanSquaredError), ("MAE", L.MeanAbsoluteError), ("rmse", L.RMSE),
    ("huber", L.Huber), ("LogCosh", L.LogCosh), ("hinge", L.Hinge),
    ("squared-hinge", L.SquaredHinge), ("multi_margin", L.CategoricalHinge),
    ("binary_crossentropy", L.BinaryCrossEntropy), ("bce_with_logits",
                                                    L.BinaryCrossEntropyWithLogits),
    ("categorical_crossentropy", L.CategoricalCrossEntropy), ("cross_entropy",
                                                              L.SoftmaxCrossEntropy),
    ("SoftmaxCrossEntropy", L.SoftmaxCrossEntropy), ("kl_div", L.KLDivergence),
    ("poisson", L.Poisson),
])
def test_get_by_name(name, cls):
    assert type(L.get(name)) is cls
    assert type(L.get(name.upper())) is cls  # case, '_' and '-' do not matter


def test_get_instances_classes_and_parameters():
    loss = L.Huber(delta=2.0)
    assert L.get(loss) is loss
    assert L.get(L.Huber, delta=3.0).delta == 3.0
    assert L.get("huber", delta=3.0, reduction="none").reduction == "none"
    assert L.get({"name": "mse"}).reduction == "mean"


def test_class_weights_from_a_backend_array(backend):
    weights = backend.asarray(SCE_W, "float32")
    loss = L.SoftmaxCrossEntropy(class_weights=weights)
    assert loss.class_weights == SCE_W
    json.dumps(loss.get_config())


def test_check_targets_accepts_good_targets(backend):
    L.SoftmaxCrossEntropy().check_targets(backend.asarray([0, 3, 1], "int64"), num_classes=4)
    L.SoftmaxCrossEntropy().check_targets(backend.asarray(np.eye(4), "float32"), num_classes=4)
    L.Hinge().check_targets(backend.asarray([-1.0, 1.0], "float32"))
    L.Hinge().check_targets(backend.asarray([0, 1], "int64"))
    L.BinaryCrossEntropy().check_targets(backend.asarray([0.0, 0.3, 1.0], "float32"))
    L.MeanSquaredError().check_targets(backend.asarray([-5.0, 2.0], "float32"))
    L.CategoricalHinge().check_targets(backend.asarray(np.eye(3), "float32"), 3)
    L.check_labels(backend.asarray([0, 1, 2], "int64"), 3)


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors that say what was received
# ---------------------------------------------------------------------------------------------
def test_shape_and_dtype_errors(backend):
    f32 = backend.asarray(np.zeros((4, 3)), "float32")
    with pytest.raises(ValueError, match=r"shape of y_pred \(4, 3\), received y_true of shape "
                                         r"\(4, 2\)"):
        L.MeanSquaredError()(f32, backend.asarray(np.zeros((4, 2)), "float32"))
    with pytest.raises(ValueError, match=r"look like integer class ids.*one_hot\(y_true, 3\)"):
        L.BinaryCrossEntropy()(f32, backend.asarray([0, 1, 2, 1], "int64"))
    with pytest.raises(ValueError, match=r"y_pred has 3 classes \(shape \(4, 3\)\) but y_true "
                                         r"has 5"):
        L.SoftmaxCrossEntropy()(f32, backend.asarray(np.zeros((4, 5)), "float32"))
    with pytest.raises(TypeError, match=r"looks like class ids, but has dtype"):
        L.SoftmaxCrossEntropy()(f32, backend.asarray([0.0, 1.0, 2.0, 1.0], "float32"))
    with pytest.raises(TypeError, match=r"KLDivergence needs a probability distribution.*"
                                        r"received integer class ids of shape \(4,\)"):
        L.KLDivergence()(f32, backend.asarray([0, 1, 2, 1], "int64"))
    with pytest.raises(ValueError, match=r"expects y_true of shape \(4, 3\).*or integer class "
                                         r"ids of shape \(4,\), received shape \(2,\)"):
        L.CategoricalCrossEntropy()(f32, backend.asarray([0, 1], "int64"))
    with pytest.raises(ValueError, match=r"class_weights has 2 entries but y_pred has 3 "
                                         r"classes"):
        L.SoftmaxCrossEntropy(class_weights=[1.0, 2.0])(f32, backend.asarray([0, 1, 2, 1],
                                                                              "int64"))
    with pytest.raises(TypeError, match=r"y_pred must be real floating.*received dtype"):
        L.MeanSquaredError()(backend.asarray([1, 2], "int64"), backend.asarray([1, 2], "int64"))
    with pytest.raises(ValueError, match=r"empty batch, y_pred of shape \(0, 3\)"):
        L.MeanSquaredError()(backend.asarray(np.zeros((0, 3)), "float32"),
                             backend.asarray(np.zeros((0, 3)), "float32"))
    with pytest.raises(ValueError, match=r"received a 0-d array"):
        L.MeanSquaredError()(backend.asarray(1.0, "float32"), backend.asarray(1.0, "float32"))


def test_mixed_backends_and_devices_are_refused(backend):
    y_pred = backend.asarray(np.zeros((2, 3)), "float32")
    other = (pn.to_backend(np.zeros((2, 3), np.float32), "array_api_strict", "device2")
             if backend.name == "array_api_strict"
             else pn.to_backend(np.zeros((2, 3), np.float32), "array_api_strict"))
    with pytest.raises(pn.MixedArraysError, match=r"different (backends|devices)"):
        L.MeanSquaredError()(y_pred, other)


@pytest.mark.parametrize("make, err, match", [
    (lambda: L.MeanSquaredError(reduction="avg"), ValueError,
     r"reduction must be one of \('mean', 'sum', 'none'\), received 'avg'"),
    (lambda: L.Huber(delta=0.0), ValueError, r"delta must be a number > 0, received delta=0.0"),
    (lambda: L.CategoricalHinge(margin=-1), ValueError, r"margin=-1"),
    (lambda: L.SoftmaxCrossEntropy(label_smoothing=1.0), ValueError,
     r"label_smoothing must be a number in \[0, 1\), received label_smoothing=1.0"),
    (lambda: L.SoftmaxCrossEntropy(class_weights=[1.0, -2.0]), ValueError,
     r"finite and >= 0, received \[1.0, -2.0\]"),
    (lambda: L.SoftmaxCrossEntropy(class_weights="abc"), TypeError, r"received str"),
    (lambda: L.BinaryCrossEntropy(epsilon=0.0), ValueError, r"epsilon=0.0"),
    (lambda: L.Poisson(log_input="yes"), TypeError, r"received 'yes'"),
    (lambda: L.get("nope"), ValueError, r"unknown loss 'nope'\. Known: .*Huber.*mse"),
    (lambda: L.get(3), TypeError, r"cannot make a loss from 3 \(int\)"),
    (lambda: L.get("huber", bogus=1), TypeError,
     r"loss 'Huber' received the parameters \['bogus'\]; it accepts \['delta', 'reduction'\]"),
    (lambda: L.get(L.MSE(), reduction="sum"), TypeError, r"already built"),
    (lambda: L.from_config({"reduction": "sum"}), ValueError, r"has no 'class_name' key"),
])
def test_bad_construction(make, err, match):
    with pytest.raises(err, match=match):
        make()


def test_check_targets_errors(backend):
    with pytest.raises(ValueError, match=r"1 of 3 class labels are outside \[0, 3\] for 4 "
                                         r"classes \(received min 0, max 4\)"):
        L.SoftmaxCrossEntropy().check_targets(backend.asarray([0, 4, 1], "int64"), 4)
    with pytest.raises(ValueError, match=r"received min -1, max 1.*if yours start at 1"):
        L.check_labels(backend.asarray([-1, 1], "int64"), 2)
    with pytest.raises(TypeError, match=r"integer class ids, received dtype"):
        L.check_labels(backend.asarray([0.0, 1.0], "float32"), 2)
    with pytest.raises(ValueError, match=r"num_classes must be a positive int, received 0"):
        L.check_labels(backend.asarray([0], "int64"), 0)
    with pytest.raises(ValueError, match=r"pass num_classes"):
        L.CategoricalCrossEntropy().check_targets(backend.asarray([0, 1], "int64"))
    with pytest.raises(ValueError, match=r"must be \[0, 1\] \(probabilities\); received values "
                                         r"from 0 to 1.5"):
        L.BinaryCrossEntropy().check_targets(backend.asarray([0.0, 1.5], "float32"))
    with pytest.raises(ValueError, match=r"labels must all be in \{-1, 1\} or all in \{0, 1\}"):
        L.Hinge().check_targets(backend.asarray([-1.0, 0.0, 1.0], "float32"))
    with pytest.raises(ValueError, match=r"must be >= 0 \(counts\); received values from -2"):
        L.Poisson().check_targets(backend.asarray([-2.0, 1.0], "float32"))
    with pytest.raises(ValueError, match=r"holds 1 NaN or infinite values"):
        L.MeanSquaredError().check_targets(backend.asarray([np.nan, 1.0], "float32"))
    with pytest.raises(TypeError, match=r"KLDivergence needs a probability distribution"):
        L.KLDivergence().check_targets(backend.asarray([0, 1], "int64"), 2)
    with pytest.raises(ValueError, match=r"expected 5 classes on its last axis"):
        L.SoftmaxCrossEntropy().check_targets(backend.asarray(np.eye(4), "float32"), 5)
    with pytest.raises(ValueError, match=r"float y_true must be one-hot"):
        L.CategoricalHinge().check_targets(backend.asarray(np.full((2, 2), 0.5), "float32"), 2)
