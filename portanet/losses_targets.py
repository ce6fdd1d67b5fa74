"""The checks of a loss's targets ``y_true``: shapes and dtypes on every call, values once.

Each loss call checks what costs nothing, the shapes and dtypes (held on the host), and raises
clear errors: prediction/target shape mismatch, the wrong number of classes, integer class ids
for a loss that needs a distribution per sample, float class ids (:func:`same_shape`,
:func:`for_classes`). Checking target *values* (is every label in [0, C)? are BCE targets in
[0, 1]? all finite?) means reading the data back to the host, which on a GPU stalls the
pipeline; rule 4 of DESIGN.md forbids that on the hot path. So:

* ``loss.check_targets(y_true, num_classes)`` and :func:`check_labels` do the value checks with
  one host read each (:func:`require_finite`, :func:`require_range`, :func:`check_classes`,
  :func:`check_binary`): the training loop calls them once per dataset, before the first epoch;
* inside the hot path, integer labels outside [0, C) make their sample's loss NaN (the
  ``valid`` mask of :func:`for_classes`: a comparison and a ``where`` on N labels, no sync), so
  a bad label can never train silently.

Every function takes ``name``, the loss's class name, to start its messages with.
:func:`check_labels` is public as ``pn.losses.check_labels``.
"""

from __future__ import annotations

import math

import array_api_compat as compat

from ._typing import Array, Namespace
from .devices import namespace_of

__all__ = ["are_class_ids", "cast", "check_binary", "check_classes", "check_labels",
           "for_classes", "require_finite", "require_range", "same_shape"]


# =============================================================================================
# Checks of shapes and dtypes (free: shapes and dtypes live on the host)
# =============================================================================================
def _shape(x: Array) -> tuple[int, ...]:
    return tuple(x.shape)


def cast(xp: Namespace, y_true: Array, like: Array, name: str) -> Array:
    """``y_true`` in the dtype of ``like`` (the predictions); bools and integers are cast."""
    if y_true.dtype == like.dtype:
        return y_true
    if not xp.isdtype(y_true.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{name}: y_true must be real numbers, integers or booleans, received "
                        f"dtype {y_true.dtype}.")
    return xp.astype(y_true, like.dtype)  # targets follow the predictions' dtype


def same_shape(xp: Namespace, y_pred: Array, y_true: Array, name: str) -> Array:
    """Targets with one value per prediction, cast to y_pred's dtype.

    (N,) targets are accepted for (N, 1) predictions: that is how a one-output model's targets
    usually arrive.
    """
    if _shape(y_true) != _shape(y_pred):
        if y_pred.shape[-1] == 1 and _shape(y_true) == _shape(y_pred)[:-1]:
            y_true = xp.reshape(y_true, _shape(y_pred))
        else:
            hint = " Reshape one of them to match."
            if (xp.isdtype(y_true.dtype, "integral") and _shape(y_true) == _shape(y_pred)[:-1]):
                hint = (f" These look like integer class ids: {name} needs one target per "
                        "prediction. Use SoftmaxCrossEntropy (on logits) or "
                        "CategoricalCrossEntropy (on probabilities), which take class ids, or "
                        f"convert them with pn.ops.one_hot(y_true, {y_pred.shape[-1]}).")
            raise ValueError(f"{name} expects y_true with the shape of y_pred "
                             f"{_shape(y_pred)}, received y_true of shape {_shape(y_true)}."
                             + hint)
    return cast(xp, y_true, y_pred, name)


def for_classes(xp: Namespace, y_pred: Array, y_true: Array, name: str,
                allow_ids: bool = True) -> tuple[Array, Array | None]:
    """Targets for a loss over the class axis (the last): one-hot/probabilities or class ids.

    Returns:
        ``(y, valid)``: ``y`` has y_pred's shape and dtype; ``valid`` is a boolean array over
        the samples when ``y_true`` held class ids (False where an id is outside [0, C)), else
        None.
    """
    n_classes = y_pred.shape[-1]
    batch = _shape(y_pred)[:-1]
    received = _shape(y_true)
    if are_class_ids(xp, y_pred, y_true, name):
        if not allow_ids:
            raise TypeError(
                f"{name} needs a probability distribution per sample, y_true of shape "
                f"{_shape(y_pred)}, received integer class ids of shape {received}. Convert "
                f"them with pn.ops.one_hot(y_true, {n_classes}).")
        # One-hot by comparing each id with 0..C-1: no scatter, no host read. An id outside
        # [0, C) matches no class; `valid` remembers it so the loss can turn NaN.
        classes = xp.arange(n_classes, dtype=y_true.dtype, device=compat.device(y_true))
        y = xp.astype(xp.expand_dims(y_true, axis=-1) == classes, y_pred.dtype)
        return y, (y_true >= 0) & (y_true < n_classes)
    if received == _shape(y_pred):
        return cast(xp, y_true, y_pred, name), None
    if len(received) == len(batch) + 1 and received[:-1] == batch:
        raise ValueError(
            f"{name}: y_pred has {n_classes} classes (shape {_shape(y_pred)}) but y_true has "
            f"{received[-1]} (shape {received}). Give the model's last layer {received[-1]} "
            "outputs, or encode the targets with the model's number of classes.")
    raise ValueError(
        f"{name} expects y_true of shape {_shape(y_pred)} (one-hot or probabilities)"
        + (f" or integer class ids of shape {batch}" if allow_ids else "")
        + f", received shape {received} for y_pred of shape {_shape(y_pred)}.")


def are_class_ids(xp: Namespace, y_pred: Array, y_true: Array, name: str) -> bool:
    """Whether ``y_true`` holds one integer class id per sample of ``y_pred`` (..., C)."""
    received = _shape(y_true)
    if received != _shape(y_pred)[:-1] or received == _shape(y_pred):
        return False
    if not xp.isdtype(y_true.dtype, "integral"):
        raise TypeError(
            f"{name}: y_true of shape {received} for y_pred {_shape(y_pred)} looks like class "
            f"ids, but has dtype {y_true.dtype}. Pass integer ids "
            "(pn.asarray(y, dtype='int64')) or one-hot targets of y_pred's shape.")
    return True


# =============================================================================================
# Checks of target values (host reads, once per dataset)
# =============================================================================================
def check_labels(labels: Array, num_classes: int) -> None:
    """Check that integer class ids are in [0, num_classes); raise ``ValueError`` if not.

    One host read (a device sync). Call it once per dataset, before training, never per batch:
    during training an out-of-range id makes its sample's loss NaN instead (no sync).

    Args:
        labels: integer class ids, any shape.
        num_classes: the number of classes (the model's outputs).

    Examples:
        >>> import numpy as np
        >>> check_labels(np.asarray([0, 2, 1]), 3)
        >>> check_labels(np.asarray([0, 3]), 3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: 1 of 2 class labels are outside [0, 2] for 3 classes (received min 0, ...
    """
    xp = namespace_of(labels)
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"check_labels expects integer class ids, received dtype {labels.dtype}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, received {num_classes!r}.")
    total = math.prod(labels.shape)
    if total == 0:
        return
    bad = int(xp.count_nonzero((labels < 0) | (labels >= num_classes)))  # the one host read
    if bad:
        low, high = int(xp.min(labels)), int(xp.max(labels))
        raise ValueError(
            f"{bad} of {total} class labels are outside [0, {num_classes - 1}] for {num_classes} "
            f"classes (received min {low}, max {high}). Class ids must run from 0 to "
            f"{num_classes - 1}: if yours start at 1, subtract 1; if the model has too few "
            f"outputs, give its last layer {max(high + 1, num_classes)} units.")


def require_finite(xp: Namespace, y: Array, name: str) -> None:
    """No NaN or infinity in floating ``y`` (one host read)."""
    if xp.isdtype(y.dtype, "real floating") and not bool(xp.all(xp.isfinite(y))):
        count = int(xp.count_nonzero(~xp.isfinite(y)))
        raise ValueError(f"{name}: y_true holds {count} NaN or infinite values; clean or drop "
                         "those samples before training.")


def require_range(xp: Namespace, y: Array, low: float, high: float | None, name: str,
                  why: str) -> None:
    """Finite, and within [low, high] (``high`` None: >= low); ``why`` names what the values
    are ("probabilities", "counts") in the message. Two host reads at most."""
    require_finite(xp, y, name)
    if math.prod(y.shape) == 0 or xp.isdtype(y.dtype, "bool"):
        return
    y_min, y_max = float(xp.min(y)), float(xp.max(y))
    if y_min < low or (high is not None and y_max > high):
        expected = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ValueError(f"{name}: y_true must be {expected} ({why}); received values from "
                         f"{y_min:g} to {y_max:g}.")


def check_classes(xp: Namespace, y_true: Array, num_classes: int | None, name: str,
                  allow_ids: bool = True) -> None:
    """Targets of a loss over the class axis: valid class ids, or non-negative finite
    probabilities with ``num_classes`` entries on the last axis."""
    # Integer targets are class ids unless they are 2-d or more with num_classes on the last
    # axis (integer one-hot). Without y_pred, a 1-d array of length C counts as C class ids.
    if xp.isdtype(y_true.dtype, "integral") and (
            num_classes is None or y_true.ndim < 2 or y_true.shape[-1] != num_classes):
        if not allow_ids:
            raise TypeError(f"{name} needs a probability distribution per sample, received "
                            f"integer class ids of shape {_shape(y_true)}; one-hot encode them.")
        if num_classes is None:
            raise ValueError(f"{name}.check_targets: pass num_classes (the model's number of "
                             "outputs) to check integer class ids.")
        check_labels(y_true, num_classes)
        return
    if num_classes is not None and (y_true.ndim == 0 or y_true.shape[-1] != num_classes):
        raise ValueError(f"{name}: y_true has shape {_shape(y_true)}, expected {num_classes} "
                         "classes on its last axis.")
    require_range(xp, y_true, 0.0, None, name, "class probabilities")


def check_binary(xp: Namespace, y: Array, name: str) -> None:
    """Labels of a margin loss: finite, and all in {-1, 1} or all in {0, 1}."""
    require_finite(xp, y, name)
    pm_one = bool(xp.all((y == -1) | (y == 1)))
    zero_one = bool(xp.all((y == 0) | (y == 1)))
    if not (pm_one or zero_one):
        raise ValueError(f"{name}: labels must all be in {{-1, 1}} or all in {{0, 1}}; received "
                         f"values from {float(xp.min(y)):g} to {float(xp.max(y)):g} outside "
                         "those sets.")
