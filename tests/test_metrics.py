"""portanet.metrics against scikit-learn (the independent reference), on every backend.

Random inputs and the edge cases scikit-learn defines: a class that is never predicted, a
class absent from y_true, a single class, perfect and constant predictions.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import metrics

sk = pytest.importorskip("sklearn.metrics")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

RTOL = 1e-12


def _value(x) -> float:
    return float(pn.to_numpy(x))


def _labels(backend, a):
    return backend.asarray(np.asarray(a), "int64")


def _close(got, expected, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(pn.to_numpy(got), dtype=np.float64),
                               np.asarray(expected, dtype=np.float64), rtol=rtol, atol=1e-14)


def _sk_prf(t, p, average, labels=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero_division warnings: we pass zero_division=0
        return sk.precision_recall_fscore_support(t, p, average=average, zero_division=0,
                                                  labels=labels)[:3]


RNG = np.random.default_rng(0)
T4 = RNG.integers(0, 4, 60)
P4 = RNG.integers(0, 4, 60)
P4_NEVER_3 = np.where(P4 == 3, 1, P4)  # class 3 is never predicted
T_NO_2 = np.where(T4 == 2, 0, T4)  # class 2 never occurs in y_true (but is predicted)
CASES = {
    "random": (T4, P4),
    "never-predicted": (T4, P4_NEVER_3),
    "absent-from-truth": (T_NO_2, P4),
    "single-class": (np.zeros(10, dtype=int), np.zeros(10, dtype=int)),
    "single-class-wrong": (np.zeros(10, dtype=int), np.array([0] * 7 + [1] * 3)),
    "perfect": (T4, T4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accuracy_and_confusion_matrix(backend, case):
    t, p = CASES[case]
    acc = metrics.accuracy(_labels(backend, t), _labels(backend, p))
    assert_on_backend(acc, backend, "float64")
    _close(acc, sk.accuracy_score(t, p))
    c = int(max(t.max(), p.max())) + 1
    cm = metrics.confusion_matrix(_labels(backend, t), _labels(backend, p))
    assert_on_backend(cm, backend, "int64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns when only one label occurs
        ref = sk.confusion_matrix(t, p, labels=range(c))
    np.testing.assert_array_equal(pn.to_numpy(cm), ref)


@pytest.mark.parametrize("normalize", ["true", "pred", "all"])
def test_confusion_matrix_normalized(backend, normalize):
    t, p = CASES["never-predicted"]
    got = metrics.confusion_matrix(_labels(backend, t), _labels(backend, p), normalize=normalize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.nan_to_num(sk.confusion_matrix(t, p, labels=range(4), normalize=normalize))
    _close(got, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_precision_recall_f1_match_sklearn(backend, case):
    t, p = CASES[case]
    for average in ("macro", "micro", "weighted", None):
        got = metrics.precision_recall_f1(_labels(backend, t), _labels(backend, p), average)
        if average is None:  # per class over 0..max label (scikit-learn: the labels it sees)
            c = int(max(t.max(), p.max())) + 1
            ref = _sk_prf(t, p, None, labels=list(range(c)))
        else:
            ref = _sk_prf(t, p, average)
        for g, r in zip(got, ref, strict=True):
            assert_on_backend(g, backend, "float64")
            _close(g, r)


@pytest.mark.parametrize("case", ["binary", "never-positive", "all-negative"])
def test_binary_average(backend, case):
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    if case == "never-positive":
        p = np.zeros(40, dtype=int)
    if case == "all-negative":
        t = p = np.zeros(40, dtype=int)
    got = metrics.precision_recall_f1(_labels(backend, t), _labels(backend, p), "binary")
    for g, r in zip(got, _sk_prf(t, p, "binary"), strict=True):
        _close(g, r)
    _close(metrics.f1_score(_labels(backend, t), _labels(backend, p), average="binary"),
           sk.f1_score(t, p, zero_division=0))


def test_scores_and_one_hot_inputs(backend):
    rng = np.random.default_rng(2)
    scores = rng.random((50, 5))
    t = rng.integers(0, 5, 50)
    onehot = np.eye(5)[t]
    pred = scores.argmax(1)
    _close(metrics.accuracy(backend.asarray(onehot, "float32"), backend.asarray(scores,
                                                                                "float32")),
           sk.accuracy_score(t, pred))
    _close(metrics.f1_score(_labels(backend, t), backend.asarray(scores, "float64"), "weighted"),
           sk.f1_score(t, pred, average="weighted"))
    # binary probabilities are thresholded at 0.5
    prob = rng.random(30)
    tb = rng.integers(0, 2, 30)
    _close(metrics.accuracy(_labels(backend, tb), backend.asarray(prob, "float64")),
           sk.accuracy_score(tb, prob >= 0.5))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k_accuracy(backend, k):
    rng = np.random.default_rng(3)
    scores, t = rng.random((80, 6)), rng.integers(0, 6, 80)
    got = metrics.top_k_accuracy(_labels(backend, t), backend.asarray(scores, "float32"), k=k)
    _close(got, sk.top_k_accuracy_score(t, scores, k=k, labels=range(6)))


def test_classification_bad_input(backend):
    y3, y4 = _labels(backend, [0, 1, 2]), _labels(backend, [0, 1, 2, 1])
    with pytest.raises(ValueError, match="y_true has 3 samples but y_pred has 4"):
        metrics.accuracy(y3, y4)
    with pytest.raises(ValueError, match="average='binary' is for two classes, but the labels "
                                         "have 3"):
        metrics.f1_score(y3, y3, average="binary")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\] for num_classes=2, "
                                         r"received labels from 0 to 2"):
        metrics.confusion_matrix(y3, y3, num_classes=2)
    with pytest.raises(ValueError, match="average must be one of"):
        metrics.precision_score(y3, y3, average="samples")
    with pytest.raises(ValueError, match=r"scores of shape \(N, C\) with C >= 2, received "
                                         r"\(3,\)"):
        metrics.top_k_accuracy(y3, backend.asarray([0.1, 0.2, 0.3], "float32"))
    with pytest.raises(ValueError, match="empty arrays"):
        metrics.accuracy(_labels(backend, []), _labels(backend, []))


# ---------------------------------------------------------------------------------------------
# Ranking curves (computed on the host from any backend's arrays)
# ---------------------------------------------------------------------------------------------
def _ranking_case(kind: str):
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, 60)
    if kind == "random":
        s = rng.random(60)
    elif kind == "ties":  # few distinct scores: thresholds must move ties together
        s = rng.integers(0, 5, 60) / 4.0
    else:  # perfect separation
        s = t + 0.1 * rng.random(60)
    return t, s


@pytest.mark.parametrize("kind", ["random", "ties", "perfect"])
def test_ranking_metrics_match_sklearn(backend, kind):
    t, s = _ranking_case(kind)
    td, sd = _labels(backend, t), backend.asarray(s, "float64")
    for got, ref in zip(metrics.precision_recall_curve(td, sd), sk.precision_recall_curve(t, s),
                        strict=True):
        np.testing.assert_allclose(got, ref, rtol=RTOL)
    for got, ref in zip(metrics.roc_curve(td, sd), sk.roc_curve(t, s), strict=True):
        np.testing.assert_allclose(got, ref, rtol=RTOL)
    for got, ref in zip(metrics.roc_curve(td, sd, drop_intermediate=False),
                        sk.roc_curve(t, s, drop_intermediate=False), strict=True):
        np.testing.assert_allclose(got, ref, rtol=RTOL)
    assert metrics.roc_auc(td, sd) == pytest.approx(sk.roc_auc_score(t, s), rel=RTOL)
    assert metrics.average_precision(td, sd) == pytest.approx(
        sk.average_precision_score(t, s), rel=RTOL)


@pytest.mark.parametrize("average", ["macro", "weighted"])
def test_multiclass_one_vs_rest(backend, average):
    rng = np.random.default_rng(5)
    scores = rng.random((90, 4))
    scores /= scores.sum(1, keepdims=True)  # scikit-learn's OvR AUC wants probabilities
    t = rng.integers(0, 4, 90)
    sd = backend.asarray(scores, "float64")
    assert metrics.roc_auc(_labels(backend, t), sd, average=average) == pytest.approx(
        sk.roc_auc_score(t, scores, multi_class="ovr", average=average), rel=RTOL)
    assert metrics.average_precision(_labels(backend, t), sd, average=average) == \
        pytest.approx(sk.average_precision_score(np.eye(4)[t], scores, average=average),
                      rel=RTOL)


def test_ranking_edge_cases(backend):
    t = _labels(backend, [0, 0, 0])
    s = backend.asarray([0.1, 0.5, 0.9], "float64")
    with pytest.raises(ValueError, match="y_true has no positive sample"):
        metrics.roc_auc(t, s)
    _, recall, _ = metrics.precision_recall_curve(t, s)
    np.testing.assert_array_equal(recall[:-1], 1.0)  # scikit-learn's convention
    with pytest.raises(ValueError, match="NaN or Inf"):
        metrics.roc_auc(_labels(backend, [0, 1]), backend.asarray([0.1, np.nan], "float64"))


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------
REGRESSION = {
    "random": (RNG.normal(size=40), RNG.normal(size=40)),
    "multioutput": (RNG.normal(size=(30, 3)), RNG.normal(size=(30, 3))),
    "constant-perfect": (np.full(10, 2.0), np.full(10, 2.0)),
    "constant-wrong": (np.full(10, 2.0), np.linspace(0, 1, 10)),
    "perfect": (np.arange(10.0), np.arange(10.0)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_regression_metrics_match_sklearn(backend, dtype):
    pairs = [(metrics.mean_absolute_error, sk.mean_absolute_error),
             (metrics.mean_squared_error, sk.mean_squared_error),
             (metrics.root_mean_squared_error, sk.root_mean_squared_error),
             (metrics.r2_score, sk.r2_score)]
    for t, p in REGRESSION.values():
        td, pd = backend.asarray(t, dtype), backend.asarray(p, dtype)
        # the reference sees the same rounded inputs, in float64
        t64, p64 = t.astype(dtype).astype(np.float64), p.astype(dtype).astype(np.float64)
        for ours, theirs in pairs:
            got = ours(td, pd)
            assert_on_backend(got, backend, "float64")
            _close(got, theirs(t64, p64))


def test_within_tolerance(backend):
    t = np.array([1.0, 2.0, 3.0, 10.0])
    p = np.array([1.05, 2.5, 3.0, 11.0])
    td, pd = backend.asarray(t, "float64"), backend.asarray(p, "float64")
    _close(metrics.within_tolerance(td, pd, tolerance=0.1), np.mean(np.abs(t - p) <= 0.1))
    _close(metrics.within_tolerance(td, pd, tolerance=0.1, relative=0.1),
           np.mean(np.abs(t - p) <= 0.1 + 0.1 * np.abs(t)))
    with pytest.raises(ValueError, match="same number of outputs"):
        metrics.mean_squared_error(td, backend.asarray(np.zeros((4, 2)), "float64"))


# ---------------------------------------------------------------------------------------------
# Names, formatting, properties
# ---------------------------------------------------------------------------------------------
def test_get_by_name():
    assert metrics.get("acc").name == "accuracy"
    assert metrics.get("f1_macro").kind == "classes"
    assert metrics.get("rmse").higher_is_better is False
    assert metrics.get("top5").kind == "scores"
    with pytest.raises(ValueError, match="unknown metric 'accuracyy'; known names: .*accuracy"):
        metrics.get("accuracyy")


def test_format_and_plot_confusion_matrix(tmp_path):
    cm = metrics.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
    text = metrics.format_confusion_matrix(cm, ["a", "b", "c"])
    lines = text.splitlines()
    assert lines[0].split()[-3:] == ["a", "b", "c"]
    assert lines[2].split() == ["b", "0", "1", "1"]
    pytest.importorskip("matplotlib")
    path = metrics.plot_confusion_matrix(cm, str(tmp_path / "cm.png"))
    assert (tmp_path / "cm.png").stat().st_size > 1000 and path.endswith("cm.png")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_f1_property_matches_sklearn(pairs):
    t = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    for average in ("macro", "micro", "weighted"):
        got = metrics.precision_recall_f1(t, p, average)
        for g, r in zip(got, _sk_prf(t, p, average), strict=True):
            _close(g, r)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(t, p, num_classes=4), sk.confusion_matrix(t, p, labels=range(4)))
