"""Metrics: how good a model is, in numbers people compare (they match scikit-learn's).

Two kinds, by where they run:

* **On the device** (array API code, any backend): accuracy, top-k accuracy, the confusion
  matrix, precision / recall / F1 (binary by default, as in scikit-learn; macro, micro,
  weighted, per class), MAE, MSE, RMSE, R^2 and accuracy-within-a-tolerance. They return 0-d
  float64 arrays on the inputs' device, so a training loop can gather several and read them to
  the host in one transfer.
  Where the number of classes is not given it is read once (``max(label) + 1``).
* **On the host**: the precision-recall curve, average precision, the ROC curve and its AUC.
  Their output length depends on the data (one point per distinct score), which devices avoid,
  so the scores are copied to the host once and the curve is computed there with NumPy's array
  API namespace. They return NumPy arrays / Python floats.

Conventions (as in scikit-learn): rows of a confusion matrix are true classes, columns predicted;
an undefined ratio (0/0, e.g. the precision of a class never predicted) is ``zero_division``
(0.0 by default); macro averages run over the classes present in ``y_true`` or ``y_pred``.

Inputs: class labels (N,) of integers; or scores (N, C) (probabilities, logits or one-hot rows),
which are turned into labels by argmax; or binary scores (N,) / (N, 1) of floats, turned into
labels by ``score >= threshold``.

Examples:
    >>> import numpy as np
    >>> from portanet import metrics
    >>> y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 2])
    >>> float(metrics.accuracy(y_true, y_pred))
    0.75
    >>> metrics.confusion_matrix(y_true, y_pred).tolist()
    [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    >>> round(float(metrics.f1_score(y_true, y_pred, average="macro")), 4)
    0.6

    By default precision, recall and F1 are those of class 1 of two (scikit-learn's
    ``average="binary"``, ``pos_label=1``); more than two classes need an average:

    >>> t, p = np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 1, 1, 1, 0])
    >>> float(metrics.f1_score(t, p)), float(metrics.f1_score(t, p, average="macro"))
    (0.75, 0.625)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat as compat

from ._typing import Array, Namespace
from .backend import adapter_of
from .devices import namespace_of, to_numpy
from .registry import Registry

__all__ = [
    "Metric",
    "accuracy",
    "average_precision",
    "confusion_matrix",
    "f1_score",
    "format_confusion_matrix",
    "get",
    "mean_absolute_error",
    "mean_squared_error",
    "plot_confusion_matrix",
    "precision_recall_curve",
    "precision_recall_f1",
    "precision_score",
    "r2_score",
    "recall_score",
    "roc_auc",
    "roc_curve",
    "root_mean_squared_error",
    "top_k_accuracy",
    "within_tolerance",
]

AVERAGES = ("binary", "macro", "micro", "weighted", None)


# ---------------------------------------------------------------------------------------------
# Inputs: arrays of one backend, labels from scores
# ---------------------------------------------------------------------------------------------
def _array(a: Any, name: str) -> Array:
    """A backend array as is; lists and scalars through the active backend's ``asarray``."""
    try:
        adapter_of(a)
        return a
    except TypeError:
        from .devices import asarray

        try:
            return asarray(a)
        except Exception as err:
            raise TypeError(f"{name} must be an array or a list of numbers, received "
                            f"{type(a).__name__} ({err}).") from None


def _pair(y_true: Any, y_pred: Any) -> tuple[Namespace, Array, Array]:
    y_true, y_pred = _array(y_true, "y_true"), _array(y_pred, "y_pred")
    xp = namespace_of(y_true, y_pred)
    if y_true.ndim == 0 or y_pred.ndim == 0:
        raise ValueError(f"metrics need arrays with a sample axis, received shapes "
                         f"{tuple(y_true.shape)} and {tuple(y_pred.shape)}.")
    if y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(f"y_true has {y_true.shape[0]} samples but y_pred has "
                         f"{y_pred.shape[0]}; they must describe the same samples.")
    if y_true.shape[0] == 0:
        raise ValueError("metrics of 0 samples are undefined; received empty arrays.")
    return xp, y_true, y_pred


def _to_labels(xp: Namespace, y: Array, threshold: float = 0.5) -> Array:
    """Class labels (N,) int64 from labels, one-hot/score rows (argmax) or binary scores."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return xp.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"expected class labels (N,) or scores (N, C), received shape "
                         f"{tuple(y.shape)}.")
    if xp.isdtype(y.dtype, "integral"):
        return xp.astype(y, xp.int64)
    if xp.isdtype(y.dtype, "bool"):
        return xp.astype(y, xp.int64)
    return xp.astype(y >= threshold, xp.int64)


def _true_labels(xp: Namespace, y: Array) -> Array:
    """Targets as labels: integer labels kept, float-coded labels (0.0, 1.0, ...) cast."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        return xp.argmax(y, axis=1)
    if y.ndim != 1:
        raise ValueError(f"expected y_true as labels (N,) or one-hot (N, C), received shape "
                         f"{tuple(y.shape)}.")
    return xp.astype(y, xp.int64)


def _mean(xp: Namespace, a: Array) -> Array:
    return xp.mean(xp.astype(a, xp.float64))


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------
def accuracy(y_true: Any, y_pred: Any, threshold: float = 0.5) -> Array:
    """Fraction of samples whose predicted class is the true class: (1/N) sum [y_hat_i = y_i].

    Args:
        y_true: labels (N,) or one-hot (N, C).
        y_pred: labels (N,), scores (N, C) (argmax taken) or binary scores (N,) floats.
        threshold: binary scores at or above it count as class 1.

    Returns:
        0-d float64 array on the inputs' device.
    """
    xp, y_true, y_pred = _pair(y_true, y_pred)
    return _mean(xp, _true_labels(xp, y_true) == _to_labels(xp, y_pred, threshold))


def top_k_accuracy(y_true: Any, y_score: Any, k: int = 5) -> Array:
    """Fraction of samples whose true class is among the ``k`` highest scores.

    The true class's rank is the number of classes with a strictly higher score, so a sample
    counts when that rank is below k (ties are resolved in the sample's favour).

    Args:
        y_true: labels (N,) or one-hot (N, C).
        y_score: scores (N, C), C >= 2.
    """
    xp, y_true, y_score = _pair(y_true, y_score)
    if y_score.ndim != 2 or y_score.shape[1] < 2:
        raise ValueError(f"top_k_accuracy needs scores of shape (N, C) with C >= 2, received "
                         f"{tuple(y_score.shape)}.")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, received {k!r}.")
    labels = _true_labels(xp, y_true)
    true_score = xp.take_along_axis(y_score, xp.reshape(labels, (-1, 1)), axis=1)
    rank = xp.sum(xp.astype(y_score > true_score, xp.int64), axis=1)
    return _mean(xp, rank < k)


# ---------------------------------------------------------------------------------------------
# Confusion matrix and the metrics derived from it
# ---------------------------------------------------------------------------------------------
def _num_classes(xp: Namespace, true: Array, pred: Array, num_classes: int | None,
                 scores: Array | None = None) -> int:
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, received {num_classes!r}.")
        return num_classes
    if scores is not None and scores.ndim == 2 and scores.shape[1] > 1:
        return int(scores.shape[1])
    # One read of two integers: the label range decides the matrix size.
    return int(xp.max(xp.stack([xp.max(true), xp.max(pred)]))) + 1


def _confusion(xp: Namespace, true: Array, pred: Array, num_classes: int) -> Array:
    """C[i, j] = #{samples with true class i and predicted class j}, as a float64 matmul.

    One-hot(true)^T @ one-hot(pred) counts every (i, j) pair without a scatter; float64 counts
    are exact up to 2^53 samples. Labels outside [0, C) have all-zero one-hot rows and are not
    counted; :func:`confusion_matrix` checks the range first.
    """
    dev = compat.device(true)
    classes = xp.arange(num_classes, dtype=xp.int64, device=dev)
    t = xp.astype(xp.reshape(true, (-1, 1)) == classes, xp.float64)
    p = xp.astype(xp.reshape(pred, (-1, 1)) == classes, xp.float64)
    return xp.matmul(xp.permute_dims(t, (1, 0)), p)


def _check_label_range(xp: Namespace, true: Array, pred: Array, num_classes: int) -> None:
    both = xp.concat([true, pred])
    low, high = int(xp.min(both)), int(xp.max(both))
    if low < 0 or high >= num_classes:
        raise ValueError(f"class labels must be in [0, {num_classes - 1}] for num_classes="
                         f"{num_classes}, received labels from {low} to {high}.")


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None,
                     normalize: str | None = None, threshold: float = 0.5) -> Array:
    """The (C, C) confusion matrix: entry [i, j] counts samples of true class i predicted as j.

    Args:
        y_true: labels (N,) or one-hot (N, C).
        y_pred: labels, scores (N, C) or binary scores.
        num_classes: C; by default max label + 1 (or the score width).
        normalize: None (counts, int64), "true" (rows sum to 1), "pred" (columns sum to 1) or
            "all" (the matrix sums to 1), as float64.

    Returns:
        (C, C) array on the inputs' device.
    """
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', received "
                         f"{normalize!r}.")
    xp, y_true, y_pred = _pair(y_true, y_pred)
    true, pred = _true_labels(xp, y_true), _to_labels(xp, y_pred, threshold)
    c = _num_classes(xp, true, pred, num_classes, y_pred)
    _check_label_range(xp, true, pred, c)
    cm = _confusion(xp, true, pred, c)
    if normalize is None:
        return xp.astype(cm, xp.int64)
    if normalize == "all":
        return cm / xp.sum(cm)
    axis = 1 if normalize == "true" else 0
    total = xp.sum(cm, axis=axis, keepdims=True)
    return xp.where(total == 0.0, 0.0, cm / xp.where(total == 0.0, 1.0, total))


def _ratio(xp: Namespace, num: Array, den: Array, zero_division: float) -> Array:
    """num / den, with ``zero_division`` where den is 0 (no division-by-zero warning)."""
    safe = xp.where(den == 0.0, xp.ones_like(den), den)
    return xp.where(den == 0.0, zero_division, num / safe)


def _labels_and_classes(y_true: Any, y_pred: Any, num_classes: int | None,
                        threshold: float) -> tuple[Namespace, Array, Array, int]:
    """(xp, true labels, predicted labels, C) for the metrics of a confusion matrix."""
    xp, y_true, y_pred = _pair(y_true, y_pred)
    true, pred = _true_labels(xp, y_true), _to_labels(xp, y_pred, threshold)
    return xp, true, pred, _num_classes(xp, true, pred, num_classes, y_pred)


def _check_average(average: str | None) -> None:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, received {average!r}.")


def _precision_recall_f1(xp: Namespace, true: Array, pred: Array, c: int, average: str | None,
                         pos_label: int, zero_division: float,
                         check_range: bool) -> tuple[Array, Array, Array]:
    """:func:`precision_recall_f1` on labels, with C already known."""
    if average == "binary":
        if c > 2:
            # scikit-learn's words, so that a search for either library's message finds both
            raise ValueError(f"Target is multiclass ({c} classes) but average='binary'. Please "
                             "choose another average setting, one of [None, 'micro', 'macro', "
                             "'weighted'].")
        if pos_label not in (0, 1):
            raise ValueError(f"pos_label must be 0 or 1 for binary labels, received "
                             f"{pos_label!r}.")
        c = 2  # a single-class input still has a positive class (with zero counts)
    if check_range:
        _check_label_range(xp, true, pred, c)
    cm = _confusion(xp, true, pred, c)
    eye = xp.eye(c, dtype=xp.float64, device=compat.device(true))
    tp = xp.sum(cm * eye, axis=1)
    predicted = xp.sum(cm, axis=0)
    support = xp.sum(cm, axis=1)
    if average == "micro":
        tp, predicted, support = xp.sum(tp), xp.sum(predicted), xp.sum(support)
    precision = _ratio(xp, tp, predicted, zero_division)
    recall = _ratio(xp, tp, support, zero_division)
    f1 = _ratio(xp, 2.0 * tp, predicted + support, zero_division)
    if average in (None, "micro"):
        return precision, recall, f1
    if average == "binary":
        return precision[pos_label], recall[pos_label], f1[pos_label]
    if average == "weighted":
        weights = support / xp.sum(support)
    else:  # macro: the classes that occur in y_true or y_pred, each with the same weight
        present = xp.astype((support + predicted) > 0.0, xp.float64)
        weights = present / xp.sum(present)
    return tuple(xp.sum(m * weights) for m in (precision, recall, f1))


def precision_recall_f1(y_true: Any, y_pred: Any, average: str | None = "binary",
                        num_classes: int | None = None, pos_label: int = 1,
                        zero_division: float = 0.0, threshold: float = 0.5,
                        check_range: bool = True) -> tuple[Array, Array, Array]:
    """Precision, recall and F1 from one confusion matrix.

    For class c with tp_c true positives, P_c samples predicted as c and S_c samples of class c
    (its support):

        precision_c = tp_c / P_c       recall_c = tp_c / S_c
        F1_c = 2 precision_c recall_c / (precision_c + recall_c) = 2 tp_c / (P_c + S_c)

    Averages: "binary" (the default, as in scikit-learn's ``precision_score``/``recall_score``/
    ``f1_score``: class ``pos_label`` only; labels in {0, 1}, and more than two classes raise
    ValueError), "macro" (unweighted mean over the classes present in y_true or y_pred),
    "weighted" (mean weighted by support), "micro" (from the summed counts: sum tp / sum P,
    which equals accuracy for single-label data), None (per class, an array of length C;
    the default of scikit-learn's ``precision_recall_fscore_support``).

    ``check_range`` reads the label range once to refuse labels outside [0, C); ``evaluate``
    turns it off (with ``num_classes`` given, nothing is read) because ``fit`` checked the
    targets once before training and argmax predictions are in range by construction.

    Returns:
        (precision, recall, f1): 0-d float64 arrays (or (C,) arrays for average=None).

    Examples:
        >>> import numpy as np
        >>> t, p = np.array([0, 0, 1, 1, 1, 1]), np.array([0, 1, 1, 1, 1, 0])
        >>> [float(m) for m in precision_recall_f1(t, p)]  # class 1: 3 of 4 found, 3 of 4 right
        [0.75, 0.75, 0.75]
    """
    _check_average(average)
    xp, true, pred, c = _labels_and_classes(y_true, y_pred, num_classes, threshold)
    return _precision_recall_f1(xp, true, pred, c, average, pos_label, zero_division,
                                check_range)


def precision_score(y_true: Any, y_pred: Any, average: str | None = "binary",
                    **kw: Any) -> Array:
    """Precision tp / (tp + fp): of the samples predicted as a class, the fraction that are.

    ``average`` as in :func:`precision_recall_f1` ("binary" by default: class 1 of two).
    """
    return precision_recall_f1(y_true, y_pred, average, **kw)[0]


def recall_score(y_true: Any, y_pred: Any, average: str | None = "binary", **kw: Any) -> Array:
    """Recall tp / (tp + fn): of the samples of a class, the fraction found.

    ``average`` as in :func:`precision_recall_f1` ("binary" by default: class 1 of two).
    """
    return precision_recall_f1(y_true, y_pred, average, **kw)[1]


def f1_score(y_true: Any, y_pred: Any, average: str | None = "binary", **kw: Any) -> Array:
    """F1 = 2 tp / (2 tp + fp + fn), the harmonic mean of precision and recall.

    ``average`` as in :func:`precision_recall_f1` ("binary" by default: class 1 of two).
    """
    return precision_recall_f1(y_true, y_pred, average, **kw)[2]


def format_confusion_matrix(cm: Any, class_names: list[str] | None = None) -> str:
    """The confusion matrix as an aligned text table (rows: true class, columns: predicted).

    Examples:
        >>> import numpy as np
        >>> print(format_confusion_matrix(np.array([[5, 1], [0, 4]]), ["cat", "dog"]))
        true \\ pred  cat  dog
                cat    5    1
                dog    0    4
    """
    table = to_numpy(_array(cm, "cm"))
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"a confusion matrix is square (C, C), received shape {table.shape}.")
    names = [str(n) for n in (class_names or range(table.shape[0]))]
    if len(names) != table.shape[0]:
        raise ValueError(f"{len(names)} class names for a {table.shape[0]}-class matrix.")
    cells = [[f"{v:.3g}" if table.dtype.kind == "f" else str(v) for v in row] for row in table]
    width = max(len(s) for s in names + [c for row in cells for c in row])
    corner = "true \\ pred"
    lines = [corner + "  " + "  ".join(n.rjust(width) for n in names)]
    for name, row in zip(names, cells, strict=True):
        lines.append(name.rjust(len(corner)) + "  " + "  ".join(c.rjust(width) for c in row))
    return "\n".join(lines)


def plot_confusion_matrix(cm: Any, path: str, class_names: list[str] | None = None,
                          title: str = "Confusion matrix") -> str:
    """Save the confusion matrix as an annotated heat map (needs matplotlib). Returns ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'portanet[plot]' (or pip "
                          "install matplotlib). format_confusion_matrix gives a text table.") \
            from None
    table = to_numpy(_array(cm, "cm"))
    names = [str(n) for n in (class_names or range(table.shape[0]))]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(names), 1 + 0.6 * len(names)))
    image = ax.imshow(table, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names,
           yticklabels=names, xlabel="predicted", ylabel="true", title=title)
    limit = table.max() / 2 if table.size else 0
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, f"{table[i, j]:.3g}", ha="center", va="center",
                    color="white" if table[i, j] > limit else "black", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Ranking curves, on the host (their length depends on the data)
# ---------------------------------------------------------------------------------------------
def _host_binary(y_true: Any, y_score: Any, pos_label: int) -> tuple[Namespace, Array, Array]:
    """Host copies: 1-d float64 scores and 0/1 float64 truth (1 where y_true == pos_label)."""
    _, y_true, y_score = _pair(y_true, y_score)
    t, s = to_numpy(y_true), to_numpy(y_score)
    xp = compat.array_namespace(t)  # NumPy's namespace, without naming NumPy
    if s.ndim == 2 and s.shape[1] == 2:
        s = s[:, 1]
    elif s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or t.ndim not in (1, 2):
        raise ValueError(f"binary ranking metrics need scores (N,), (N, 1) or (N, 2) and labels "
                         f"(N,), received {s.shape} and {t.shape}.")
    if t.ndim == 2:
        t = t[:, 0] if t.shape[1] == 1 else xp.argmax(t, axis=1)
    if not bool(xp.all(xp.isfinite(xp.astype(s, xp.float64)))):
        raise ValueError("y_score contains NaN or Inf; ranking metrics need finite scores.")
    truth = xp.astype(t == pos_label, xp.float64)
    return xp, truth, xp.astype(s, xp.float64)


def _binary_counts(xp: Namespace, truth: Array, score: Array):
    """Cumulative true/false positives at each distinct threshold, scores in decreasing order.

    Thresholding at the k-th largest distinct score s_k predicts positive every sample with
    score >= s_k: tps_k positives and fps_k negatives among them.
    """
    order = xp.argsort(-score, stable=True)
    score, truth = score[order], truth[order]
    # the last index of each run of equal scores (ties move together)
    change = xp.nonzero(score[1:] != score[:-1])[0]
    last = xp.concat([change, xp.asarray([score.shape[0] - 1])])
    tps = xp.cumulative_sum(truth)[last]
    fps = xp.astype(last, xp.float64) + 1.0 - tps
    return tps, fps, score[last]


def precision_recall_curve(y_true: Any, y_score: Any, pos_label: int = 1):
    """Precision and recall at every distinct score threshold (binary task, on the host).

    Returns:
        precision (K+1,), recall (K+1,), thresholds (K,) as NumPy arrays; thresholds
        increase, recall decreases, and the last point is (precision 1, recall 0) by
        convention. With no positive sample, recall is 1 everywhere.
    """
    xp, truth, score = _host_binary(y_true, y_score, pos_label)
    tps, fps, thresholds = _binary_counts(xp, truth, score)
    predicted = tps + fps
    precision = tps / predicted  # predicted >= 1 at every threshold
    recall = tps / tps[-1] if float(tps[-1]) > 0 else xp.ones_like(tps)
    return (xp.concat([xp.flip(precision), xp.asarray([1.0])]),
            xp.concat([xp.flip(recall), xp.asarray([0.0])]), xp.flip(thresholds))


def _one_vs_rest(y_true: Any, y_score: Any, binary: Callable, average: str | None) -> float:
    """Average a binary ranking metric over classes, each class against all others."""
    if average not in ("macro", "weighted"):  # before any work
        raise ValueError(f"multiclass average must be 'macro' or 'weighted', received "
                         f"{average!r}.")
    _, y_true, y_score = _pair(y_true, y_score)
    t, s = to_numpy(y_true), to_numpy(y_score)
    xp = compat.array_namespace(s)
    labels = t if t.ndim == 1 else xp.argmax(t, axis=1)
    scores, weights = [], []
    for c in range(s.shape[1]):
        count = float(xp.sum(xp.astype(labels == c, xp.float64)))
        if count == 0:
            continue  # a class absent from y_true has no defined curve
        scores.append(binary(labels, s[:, c], c))
        weights.append(count)
    if average == "macro":
        return sum(scores) / len(scores)
    return sum(v * w for v, w in zip(scores, weights, strict=True)) / sum(weights)


def average_precision(y_true: Any, y_score: Any, pos_label: int = 1,
                      average: str | None = "macro") -> float:
    """Average precision AP = sum_k (R_k - R_{k-1}) P_k: the area under the step PR curve.

    Binary scores (N,) rank the ``pos_label`` class; scores (N, C) with C > 2 give the
    one-vs-rest average over classes ("macro" or "weighted" by support).
    """
    scores = _array(y_score, "y_score")
    if scores.ndim == 2 and scores.shape[1] > 2:
        return _one_vs_rest(y_true, y_score, lambda t, s, c: average_precision(t, s, c),
                            average)
    precision, recall, _ = precision_recall_curve(y_true, y_score, pos_label)
    xp = compat.array_namespace(precision)
    return float(-xp.sum((recall[1:] - recall[:-1]) * precision[:-1]))


def roc_curve(y_true: Any, y_score: Any, pos_label: int = 1, drop_intermediate: bool = True):
    """The ROC curve: false positive rate vs true positive rate as the threshold decreases.

    FPR = FP / (all negatives), TPR = TP / (all positives). The curve starts at (0, 0) with
    threshold +inf. ``drop_intermediate`` drops points that lie on a straight segment between
    their neighbours (they do not change the curve's shape or area).

    Returns:
        fpr, tpr, thresholds as NumPy arrays (thresholds decreasing).
    """
    xp, truth, score = _host_binary(y_true, y_score, pos_label)
    tps, fps, thresholds = _binary_counts(xp, truth, score)
    if drop_intermediate and tps.shape[0] > 2:
        # keep a point when the slope changes there (second differences non-zero) and the ends
        bend = ((fps[2:] - 2 * fps[1:-1] + fps[:-2]) != 0) | \
            ((tps[2:] - 2 * tps[1:-1] + tps[:-2]) != 0)
        keep = xp.concat([xp.asarray([True]), bend, xp.asarray([True])])
        tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
    tps = xp.concat([xp.asarray([0.0]), tps])
    fps = xp.concat([xp.asarray([0.0]), fps])
    thresholds = xp.concat([xp.asarray([math.inf]), thresholds])
    if float(tps[-1]) == 0 or float(fps[-1]) == 0:
        missing = "positive" if float(tps[-1]) == 0 else "negative"
        raise ValueError(f"the ROC curve needs both classes, but y_true has no {missing} "
                         "sample.")
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(y_true: Any, y_score: Any, pos_label: int = 1, average: str | None = "macro"
            ) -> float:
    """Area under the ROC curve (trapezoidal rule): the probability that a random positive
    sample is scored above a random negative one (ties count half).

    Scores (N, C) with C > 2 give the one-vs-rest average ("macro" or "weighted").
    """
    scores = _array(y_score, "y_score")
    if scores.ndim == 2 and scores.shape[1] > 2:
        return _one_vs_rest(y_true, y_score, lambda t, s, c: roc_auc(t, s, c), average)
    fpr, tpr, _ = roc_curve(y_true, y_score, pos_label, drop_intermediate=False)
    xp = compat.array_namespace(fpr)
    return float(xp.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2.0))


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------
def _regression_pair(y_true: Any, y_pred: Any) -> tuple[Namespace, Array, Array]:
    """Both as (N, K) float64 with equal K (a (N,) target is one output)."""
    xp, y_true, y_pred = _pair(y_true, y_pred)
    t = xp.reshape(y_true, (y_true.shape[0], -1))
    p = xp.reshape(y_pred, (y_pred.shape[0], -1))
    if t.shape != p.shape:
        raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} must "
                         "have the same number of outputs.")
    return xp, xp.astype(t, xp.float64), xp.astype(p, xp.float64)


def mean_absolute_error(y_true: Any, y_pred: Any) -> Array:
    """MAE = (1/N) sum |y_i - y_hat_i| (averaged over outputs too)."""
    xp, t, p = _regression_pair(y_true, y_pred)
    return xp.mean(xp.abs(t - p))


def mean_squared_error(y_true: Any, y_pred: Any) -> Array:
    """MSE = (1/N) sum (y_i - y_hat_i)^2 (averaged over outputs too)."""
    xp, t, p = _regression_pair(y_true, y_pred)
    return xp.mean((t - p) ** 2)


def root_mean_squared_error(y_true: Any, y_pred: Any) -> Array:
    """RMSE = sqrt(MSE), per output, then averaged over outputs (as scikit-learn does)."""
    xp, t, p = _regression_pair(y_true, y_pred)
    return xp.mean(xp.sqrt(xp.mean((t - p) ** 2, axis=0)))


def r2_score(y_true: Any, y_pred: Any) -> Array:
    """Coefficient of determination R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean(y))^2.

    1 is a perfect fit, 0 is as good as predicting the mean, negative is worse. For a constant
    target (zero denominator) it is 1 for a perfect prediction and 0 otherwise. Per output,
    then averaged.
    """
    xp, t, p = _regression_pair(y_true, y_pred)
    residual = xp.sum((t - p) ** 2, axis=0)
    total = xp.sum((t - xp.mean(t, axis=0, keepdims=True)) ** 2, axis=0)
    safe = xp.where(total == 0.0, xp.ones_like(total), total)
    perfect = xp.astype(residual == 0.0, xp.float64)  # constant target: 1 if exact, else 0
    r2 = xp.where(total == 0.0, perfect, 1.0 - residual / safe)
    return xp.mean(r2)


def within_tolerance(y_true: Any, y_pred: Any, tolerance: float = 0.1,
                     relative: float = 0.0) -> Array:
    """Regression "accuracy": the fraction of predictions with |y - y_hat| <= tol + rel * |y|.

    Counted per predicted value (each output of each sample).
    """
    if tolerance < 0 or relative < 0:
        raise ValueError(f"tolerance and relative must be >= 0, received {tolerance!r} and "
                         f"{relative!r}.")
    xp, t, p = _regression_pair(y_true, y_pred)
    return _mean(xp, xp.abs(t - p) <= float(tolerance) + float(relative) * xp.abs(t))


# ---------------------------------------------------------------------------------------------
# Lookup by name (what fit/evaluate accept)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    """A named metric for ``evaluate``/``fit``.

    ``kind`` says what it needs as y_pred: "classes" (predicted labels), "scores" (class
    probabilities) or "values" (raw regression outputs). ``higher_is_better`` guides
    EarlyStopping/ModelCheckpoint's "auto" mode.
    """

    name: str
    fn: Callable[..., Any]
    kind: str = "classes"
    higher_is_better: bool = True
    takes_num_classes: bool = False  # fn(y_true, y_pred, num_classes=C): no host read
    max_classes: int | None = None  # the binary averages: 2 (None: any class count)

    def check_classes(self, num_classes: int) -> None:
        """Refuse a class count the metric is not defined for (``fit`` asks before training)."""
        if self.max_classes is not None and num_classes > self.max_classes:
            raise _binary_only(self.name, num_classes)

    def __call__(self, y_true: Any, y_pred: Any, num_classes: int | None = None) -> Any:
        if self.takes_num_classes and num_classes is not None:
            return self.fn(y_true, y_pred, num_classes=num_classes)
        return self.fn(y_true, y_pred)


_BINARY_OR_MACRO = "binary-or-macro"  # what the bare names "precision", "recall", "f1" mean


def _named(name: str, average: str, which: int) -> Metric:
    """The named precision (which=0), recall (1) or F1 (2) with this average.

    The bare names ("f1") take the average from the class count: "binary" (class 1) for two
    classes, as scikit-learn's default, and "macro" for more, where scikit-learn would refuse
    ``average='binary'``: so ``fit(metrics=["f1"])`` works on any classifier and never gives
    another number than scikit-learn where scikit-learn gives one. "f1_binary" insists on two.
    The class count is ``num_classes`` (``evaluate`` passes the model's output width), else
    max label + 1.
    """

    def fn(t: Any, p: Any, num_classes: int | None = None) -> Array:
        xp, true, pred, c = _labels_and_classes(t, p, num_classes, 0.5)
        chosen = ("binary" if c <= 2 else "macro") if average == _BINARY_OR_MACRO else average
        if chosen == "binary" and c > 2:
            raise _binary_only(name, c)
        return _precision_recall_f1(xp, true, pred, c, chosen, pos_label=1, zero_division=0.0,
                                    check_range=num_classes is None)[which]

    return Metric(name, fn, takes_num_classes=True,
                  max_classes=2 if average == "binary" else None)


def _binary_only(name: str, classes: int) -> ValueError:
    # a name has no average to change: name the fix
    base = name.split("_")[0]
    return ValueError(f"metric {name!r} is for two classes, but there are {classes}. Use "
                      f"{base + '_macro'!r}, {base + '_micro'!r} or {base + '_weighted'!r} "
                      f"(or {base!r}: binary for two classes, macro for more).")


def _wrap(fn: Callable[..., Any]) -> Metric:
    """A plain function as a "classes" metric named after it."""
    return Metric(getattr(fn, "__name__", "metric"), fn)


_REGISTRY = Registry("metric", base=Metric, wrap=_wrap, factory=False,
                     accepts="a metric name such as 'accuracy', a Metric, or a function "
                             "f(y_true, y_pred)")
"""The named metrics (the objects themselves: they have no parameters)."""
_REGISTRY.update({
    "accuracy": Metric("accuracy", accuracy),
    "top_k_accuracy": Metric("top_k_accuracy", top_k_accuracy, "scores"),
    "top5_accuracy": Metric("top5_accuracy", lambda t, s: top_k_accuracy(t, s, 5), "scores"),
    "top3_accuracy": Metric("top3_accuracy", lambda t, s: top_k_accuracy(t, s, 3), "scores"),
    "roc_auc": Metric("roc_auc", roc_auc, "scores"),
    "average_precision": Metric("average_precision", average_precision, "scores"),
    "mae": Metric("mae", mean_absolute_error, "values", False),
    "mse": Metric("mse", mean_squared_error, "values", False),
    "rmse": Metric("rmse", root_mean_squared_error, "values", False),
    "r2": Metric("r2", r2_score, "values"),
    "within_tolerance": Metric("within_tolerance", within_tolerance, "values"),
})
for _which, _base in enumerate(("precision", "recall", "f1")):
    _REGISTRY[_base] = _named(_base, _BINARY_OR_MACRO, _which)
    for _avg in ("binary", "macro", "micro", "weighted"):
        _REGISTRY[f"{_base}_{_avg}"] = _named(f"{_base}_{_avg}", _avg, _which)
for _alias, _name in {"acc": "accuracy", "top5": "top5_accuracy", "top3": "top3_accuracy",
                      "auc": "roc_auc", "ap": "average_precision", "r2_score": "r2",
                      "mean_absolute_error": "mae", "mean_squared_error": "mse",
                      "root_mean_squared_error": "rmse", "f1_score": "f1"}.items():
    _REGISTRY.alias(_name, _alias)


def get(metric: str | Callable | Metric) -> Metric:
    """A :class:`Metric` from a name ("accuracy", "f1_macro", "rmse", ...) or a function.

    "precision", "recall" and "f1" are class 1's for two classes (scikit-learn's
    ``average="binary"``) and the macro average for more; "f1_binary", "f1_macro",
    "f1_micro" and "f1_weighted" (and the same for precision and recall) fix the average.
    Names ignore case, ``_``, ``-`` and spaces ("F1-Macro").

    A plain function ``f(y_true, y_pred)`` is wrapped as a "classes" metric named after it;
    wrap it in ``Metric(name, f, kind=...)`` to choose what it receives.

    Raises:
        ValueError: an unknown name (the message suggests the closest known ones).
    """
    return _REGISTRY.resolve(metric)
