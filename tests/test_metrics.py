"""portanet.metrics against scikit-learn (the independent reference), on every backend.

Random inputs and the edge cases scikit-learn defines: a class that is never predicted, a
class absent from y_true, a single class, perfect and constant predictions. The defaults of
precision / recall / F1 (binary for two classes) are also checked against counts written out
here in NumPy, so they stay checked where scikit-learn is not installed.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import metrics

if importlib.util.find_spec("sklearn") is not None:
    import sklearn.metrics as sk
else:
    sk = None
needs_sklearn = pytest.mark.skipif(sk is None, reason="scikit-learn is not installed")
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


@needs_sklearn
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


@needs_sklearn
@pytest.mark.parametrize("normalize", ["true", "pred", "all"])
def test_confusion_matrix_normalized(backend, normalize):
    t, p = CASES["never-predicted"]
    got = metrics.confusion_matrix(_labels(backend, t), _labels(backend, p), normalize=normalize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.nan_to_num(sk.confusion_matrix(t, p, labels=range(4), normalize=normalize))
    _close(got, ref)


@needs_sklearn
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


@needs_sklearn
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


@needs_sklearn
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


@needs_sklearn
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
    with pytest.raises(ValueError, match=r"Target is multiclass \(3 classes\) but "
                                         r"average='binary'. Please choose another average"):
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
# The default average: "binary" for two classes (scikit-learn's), an error for more
# ---------------------------------------------------------------------------------------------
def _counted_prf(t, p, positive):
    """float64 precision, recall, F1 of one class, counted from the definitions (no library)."""
    t, p = np.asarray(t), np.asarray(p)
    tp = float(np.sum((t == positive) & (p == positive)))
    fp = float(np.sum((t != positive) & (p == positive)))
    fn = float(np.sum((t == positive) & (p != positive)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def _counted_macro(t, p):
    """The unweighted mean over the classes present in t or p, of the counted metrics."""
    present = np.union1d(t, p)
    return tuple(np.mean([_counted_prf(t, p, c)[i] for c in present]) for i in range(3))


BINARY = {  # y_true, y_pred
    "issue": (np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 1, 1, 1, 0])),
    "random": (np.random.default_rng(7).integers(0, 2, 50),
               np.random.default_rng(8).integers(0, 2, 50)),
    "only-negatives-predicted": (np.array([0, 1, 1, 0]), np.array([0, 0, 0, 0])),
    "only-class-1": (np.ones(5, dtype=int), np.array([1, 1, 0, 1, 1])),
}


@pytest.mark.parametrize("case", list(BINARY))
def test_binary_targets_default_to_the_positive_class(backend, case):
    """precision_score, recall_score, f1_score and precision_recall_f1 without an average give
    class 1's figures, as scikit-learn's default average="binary", pos_label=1 does."""
    t, p = BINARY[case]
    td, pd = _labels(backend, t), _labels(backend, p)
    expected = _counted_prf(t, p, 1)
    got = (metrics.precision_score(td, pd), metrics.recall_score(td, pd),
           metrics.f1_score(td, pd))
    together = metrics.precision_recall_f1(td, pd)
    for g, h, e in zip(got, together, expected, strict=True):
        assert_on_backend(g, backend, "float64")
        _close(g, e)
        _close(h, e)
    # pos_label=0 is the other class's figures; "macro" stays available
    _close(metrics.f1_score(td, pd, pos_label=0), _counted_prf(t, p, 0)[2])
    _close(metrics.f1_score(td, pd, average="macro"), _counted_macro(t, p)[2])


def test_the_issue_example_is_scikit_learns_number(backend):
    """The report: the same call gave 0.708 (a macro average) where scikit-learn gives 0.75."""
    t, p = BINARY["issue"]
    assert _value(metrics.f1_score(_labels(backend, t), _labels(backend, p))) == 0.75
    assert _value(metrics.f1_score(_labels(backend, t), _labels(backend, p),
                                   average="macro")) == 0.625


@needs_sklearn
@pytest.mark.parametrize("case", list(BINARY))
def test_binary_defaults_match_sklearns_defaults(backend, case):
    t, p = BINARY[case]
    td, pd = _labels(backend, t), _labels(backend, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined ratios: both give 0
        for ours, theirs in ((metrics.precision_score, sk.precision_score),
                             (metrics.recall_score, sk.recall_score),
                             (metrics.f1_score, sk.f1_score)):
            _close(ours(td, pd), theirs(t, p))
            _close(ours(td, pd, pos_label=0), theirs(t, p, pos_label=0))


def test_binary_default_from_scores_and_one_hot_targets(backend):
    """Probabilities (N,) thresholded at 0.5, two-column scores argmaxed, one-hot targets."""
    rng = np.random.default_rng(9)
    t, prob = rng.integers(0, 2, 40), rng.random(40)
    expected = _counted_prf(t, (prob >= 0.5).astype(int), 1)
    _close(metrics.f1_score(_labels(backend, t), backend.asarray(prob, "float32")), expected[2])
    two = np.stack([1.0 - prob, prob], axis=1)
    onehot = np.eye(2)[t]
    _close(metrics.precision_score(backend.asarray(onehot, "float32"),
                                   backend.asarray(two, "float64")), expected[0])


@pytest.mark.parametrize("fn", [metrics.precision_score, metrics.recall_score,
                                metrics.f1_score, metrics.precision_recall_f1])
def test_more_than_two_classes_need_an_average(backend, fn):
    """scikit-learn's rule and words: the binary default refuses multiclass targets; the error
    names the averages to choose from."""
    t, p = _labels(backend, [0, 1, 2, 1]), _labels(backend, [0, 2, 2, 1])
    with pytest.raises(ValueError, match=r"Target is multiclass \(3 classes\) but "
                                         r"average='binary'. Please choose another average "
                                         r"setting, one of \[None, 'micro', 'macro', "
                                         r"'weighted'\]"):
        fn(t, p)
    # a score matrix with three columns is three classes even if only 0 and 1 occur
    with pytest.raises(ValueError, match="Target is multiclass"):
        fn(_labels(backend, [0, 1]), backend.asarray(np.eye(3)[:2], "float64"))
    if sk is not None:  # scikit-learn refuses the same call
        with pytest.raises(ValueError, match="Target is multiclass but average='binary'"):
            sk.f1_score([0, 1, 2, 1], [0, 2, 2, 1])


# ---------------------------------------------------------------------------------------------
# Precision, recall and F1 by name (fit / evaluate)
# ---------------------------------------------------------------------------------------------
T3 = np.array([0, 1, 2, 2, 1, 0, 2, 1])
P3 = np.array([0, 2, 2, 1, 1, 0, 2, 0])


def test_bare_names_are_binary_for_two_classes_and_macro_for_more(backend):
    t, p = BINARY["issue"]
    for i, name in enumerate(("precision", "recall", "f1")):
        named = metrics.get(name)
        _close(named(_labels(backend, t), _labels(backend, p)), _counted_prf(t, p, 1)[i])
        # evaluate passes the model's output width as the class count: no host read
        _close(named(_labels(backend, t), _labels(backend, p), num_classes=2),
               _counted_prf(t, p, 1)[i])
        _close(named(_labels(backend, T3), _labels(backend, P3)), _counted_macro(T3, P3)[i])
        _close(named(_labels(backend, T3), _labels(backend, P3), num_classes=3),
               _counted_macro(T3, P3)[i])
    assert metrics.get("f1_score") is metrics.get("f1")


def test_names_with_an_average_keep_it(backend):
    t, p = BINARY["issue"]
    td, pd = _labels(backend, t), _labels(backend, p)
    _close(metrics.get("f1_macro")(td, pd, num_classes=2), _counted_macro(t, p)[2])
    _close(metrics.get("recall_binary")(td, pd, num_classes=2), _counted_prf(t, p, 1)[1])
    _close(metrics.get("precision_micro")(_labels(backend, T3), _labels(backend, P3)),
           np.mean(T3 == P3))
    with pytest.raises(ValueError, match="metric 'f1_binary' is for two classes, but there "
                                         "are 3. Use 'f1_macro', 'f1_micro' or 'f1_weighted'"):
        metrics.get("f1_binary")(_labels(backend, T3), _labels(backend, P3), num_classes=3)


@pytest.mark.parametrize("classes", [2, 3])
def test_fit_and_evaluate_log_f1_by_name(backend, classes):
    """fit(metrics=["f1"]) works on binary and multiclass models (it raised after the first
    epoch on a multiclass one); the logged figure is the one defined above."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((24, 2))
    y = rng.integers(0, classes, 24)
    model = pn.Sequential([pn.layers.Dense(2, classes)], loss=pn.losses.SoftmaxCrossEntropy(),
                          optimizer=pn.optimizers.SGD(0.1), seed=0, jit_compile=False)
    history = model.fit(x, y, epochs=1, batch_size=8, metrics=["f1", "f1_macro"],
                        validation_data=(x, y), verbose=0)
    predicted = pn.to_numpy(model.predict_classes(backend.asarray(x, "float32")))
    expected = _counted_prf(y, predicted, 1)[2] if classes == 2 else \
        _counted_macro(y, predicted)[2]
    scores = model.evaluate(x, y, metrics=["f1", "f1_macro"])
    assert scores["f1"] == pytest.approx(expected, rel=1e-12)
    assert scores["f1_macro"] == pytest.approx(_counted_macro(y, predicted)[2], rel=1e-12)
    assert history.history["val_f1"][-1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_fit_refuses_a_binary_metric_on_more_classes_before_training(backend, width):
    """f1_binary on a 3-class model fails before the first epoch, the parameters untouched
    (it trained an epoch, then raised, before); one sigmoid column or two softmax columns are
    two classes, and train."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((24, 2))
    y = rng.integers(0, max(width, 2), 24)
    loss = "sigmoid_cross_entropy" if width == 1 else "softmax_cross_entropy"
    model = pn.Sequential([pn.layers.Dense(2, width)], loss=loss,
                          optimizer=pn.optimizers.SGD(0.1), seed=0, jit_compile=False)
    before = {k: pn.to_numpy(v).copy() for k, v in model.parameters().items()}
    fit = dict(epochs=1, batch_size=8, metrics=["f1_binary"], validation_data=(x, y), verbose=0)
    if width < 3:
        y_fit = y.reshape(-1, 1).astype("float32") if width == 1 else y
        history = model.fit(x, y_fit, **{**fit, "validation_data": (x, y_fit)})
        assert "val_f1_binary" in history.history
        return
    with pytest.raises(ValueError, match="metric 'f1_binary' is for two classes, but there "
                                         "are 3. Use 'f1_macro'"):
        model.fit(x, y, **fit)
    assert model.epoch == 0
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(pn.to_numpy(v), before[k])


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


@needs_sklearn
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


@needs_sklearn
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
    with pytest.raises(ValueError, match="multiclass average must be 'macro' or 'weighted', "
                                         "received 'micro'"):
        metrics.roc_auc(_labels(backend, [0, 1, 2]), backend.asarray(np.eye(3), "float64"),
                        average="micro")


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


@needs_sklearn
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
    with pytest.raises(ValueError, match="unknown metric 'accuracyy'; did you mean 'accuracy'"
                                         r".*\? Known: .*accuracy"):
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


@needs_sklearn
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
