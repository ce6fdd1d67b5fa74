"""Preprocessing fitted on the training data only, then applied unchanged to validation/test data.

Fitting a scaler on the whole data set leaks the test set's statistics into training; every
transformer here therefore has ``fit`` (learn from training data), ``transform`` (apply) and
``fit_transform``. Scalers compute on the data's own backend and device; label encoding and
class balancing read labels on the host, once, while the data is prepared.

Examples:
    >>> import numpy as np
    >>> from portanet.data import StandardScaler
    >>> x_train = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> scaler = StandardScaler().fit(x_train)
    >>> scaler.transform(np.array([[2.0, 20.0]])).tolist()
    [[0.0, 0.0]]
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import array_api_extra as xpx
import numpy as np

from .. import ops
from .._typing import Array
from ..backend import adapter_of
from ..random import host_generator
from ._util import as_array, check_same_length, host_labels, take_rows

__all__ = [
    "LabelEncoder",
    "MinMaxScaler",
    "OneHotEncoder",
    "StandardScaler",
    "balance_classes",
    "class_weights",
    "flatten",
    "one_hot",
]


def _float_input(x: Any, name: str = "x") -> Array:
    """``x`` as a floating array on its backend (integers become the default float dtype)."""
    x = as_array(x, name)
    xp = compat.array_namespace(x)
    if xp.isdtype(x.dtype, "real floating"):
        return x
    if xp.isdtype(x.dtype, ("integral", "bool")):
        return xp.astype(x, xpx.default_dtype(xp, device=compat.device(x)))
    raise TypeError(f"{name} must hold real numbers, received dtype {x.dtype}.")


def _check_finite(x: Array, name: str) -> None:
    """Refuse NaN/Inf in data being fitted (one read of a boolean, outside any hot loop)."""
    xp = compat.array_namespace(x)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or Inf values; a scaler fitted on them would turn "
                         "every sample into NaN. Clean or impute the data first.")


def _axes(x: Array, axis: int | tuple[int, ...]) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes or any(not -x.ndim <= a < x.ndim for a in axes):
        raise ValueError(f"axis {axis!r} is out of range for input of shape {tuple(x.shape)}.")
    return tuple(a % x.ndim for a in axes)


def _safe_scale(scale: Array) -> Array:
    """Replace (near) zero scales by 1, so a constant feature maps to 0 instead of NaN."""
    xp = compat.array_namespace(scale)
    tiny = 10.0 * float(xp.finfo(scale.dtype).eps)
    return xp.where(scale < tiny, xp.ones_like(scale), scale)


class _Fitted:
    """Shared bits: refuse ``transform`` before ``fit``."""

    _fitted_attr = "scale_"

    def _check_fitted(self) -> None:
        if getattr(self, self._fitted_attr, None) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(x_train) "
                               "first, then transform.")

    def fit_transform(self, x: Array) -> Array:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)


class StandardScaler(_Fitted):
    """Z-score each feature: z = (x - mean) / std, with mean and std from the training data.

    ``std`` is the population standard deviation (divide by N); a constant feature (std ~ 0)
    gets scale 1 so it maps to 0. ``inverse_transform`` gives x = z * std + mean back.

    Args:
        axis: the axis (or axes) statistics are taken over. 0 (default) gives one mean/std per
            feature; (0, 2, 3) on NCHW images gives one per channel.

    Examples:
        >>> import numpy as np
        >>> StandardScaler().fit_transform(np.array([[0.0], [2.0]])).tolist()
        [[-1.0], [1.0]]
    """

    def __init__(self, axis: int | tuple[int, ...] = 0):
        self.axis = axis
        self.mean_: Array | None = None
        self.scale_: Array | None = None

    def fit(self, x: Array) -> StandardScaler:
        x = _float_input(x)
        _check_finite(x, "x")
        xp = compat.array_namespace(x)
        axes = _axes(x, self.axis)
        self.mean_ = xp.mean(x, axis=axes, keepdims=True)
        self.scale_ = _safe_scale(xp.sqrt(xp.mean((x - self.mean_) ** 2, axis=axes,
                                                  keepdims=True)))
        return self

    def transform(self, x: Array) -> Array:
        self._check_fitted()
        x = _float_input(x)
        return (x - self.mean_) / self.scale_

    def inverse_transform(self, z: Array) -> Array:
        self._check_fitted()
        return _float_input(z, "z") * self.scale_ + self.mean_


class MinMaxScaler(_Fitted):
    """Rescale each feature linearly so the training data spans ``feature_range``.

    x' = lo + (x - min) * (hi - lo) / (max - min), with min and max from the training data; a
    constant feature (max = min) maps to ``lo``. Test data may fall outside the range.

    Examples:
        >>> import numpy as np
        >>> MinMaxScaler().fit_transform(np.array([[1.0], [3.0], [2.0]])).tolist()
        [[0.0], [1.0], [0.5]]
    """

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0),
                 axis: int | tuple[int, ...] = 0):
        lo, hi = feature_range
        if not lo < hi:
            raise ValueError(f"feature_range must be (low, high) with low < high, received "
                             f"{feature_range!r}.")
        self.feature_range = (float(lo), float(hi))
        self.axis = axis
        self.data_min_: Array | None = None
        self.scale_: Array | None = None

    def fit(self, x: Array) -> MinMaxScaler:
        x = _float_input(x)
        _check_finite(x, "x")
        xp = compat.array_namespace(x)
        axes = _axes(x, self.axis)
        self.data_min_ = xp.min(x, axis=axes, keepdims=True)
        data_range = _safe_scale(xp.max(x, axis=axes, keepdims=True) - self.data_min_)
        lo, hi = self.feature_range
        self.scale_ = (hi - lo) / data_range
        return self

    def transform(self, x: Array) -> Array:
        self._check_fitted()
        return (_float_input(x) - self.data_min_) * self.scale_ + self.feature_range[0]

    def inverse_transform(self, z: Array) -> Array:
        self._check_fitted()
        return (_float_input(z, "z") - self.feature_range[0]) / self.scale_ + self.data_min_


class LabelEncoder(_Fitted):
    """Map arbitrary class labels (ints, strings) to 0..K-1 in sorted order, and back.

    Runs on the host (labels are read once); numeric results are int64 on the input's backend.

    Examples:
        >>> enc = LabelEncoder().fit(["cat", "dog", "cat", "bird"])
        >>> enc.classes_.tolist(), enc.transform(["dog", "bird"]).tolist()
        (['bird', 'cat', 'dog'], [2, 0])
    """

    _fitted_attr = "classes_"

    def __init__(self):
        self.classes_: np.ndarray | None = None

    @staticmethod
    def _host(y: Any) -> tuple[np.ndarray, Any]:
        if hasattr(y, "shape") and not isinstance(y, np.ndarray):
            try:
                adapter = adapter_of(y)
            except TypeError:
                adapter = None
            if adapter is not None:
                return np.asarray(adapter.to_numpy(y)), y
        return np.asarray(y), None

    def fit(self, y: Any) -> LabelEncoder:
        labels, _ = self._host(y)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"LabelEncoder expects a non-empty 1-d sequence of labels, received "
                             f"shape {labels.shape}.")
        self.classes_ = np.unique(labels)
        return self

    def transform(self, y: Any) -> Array:
        self._check_fitted()
        labels, original = self._host(y)
        index = np.searchsorted(self.classes_, labels)
        index = np.clip(index, 0, len(self.classes_) - 1)
        unknown = labels[self.classes_[index] != labels]
        if unknown.size:
            raise ValueError(f"labels {sorted(set(unknown.tolist()))[:10]} were not seen in fit; "
                             f"known classes: {self.classes_.tolist()[:20]}.")
        index = index.astype(np.int64)
        if original is not None:
            return adapter_of(original).from_numpy(index, compat.device(original))
        return index

    def fit_transform(self, y: Any) -> Array:
        return self.fit(y).transform(y)

    def inverse_transform(self, index: Any) -> np.ndarray:
        self._check_fitted()
        idx, _ = self._host(index)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self.classes_)):
            raise ValueError(f"class indices must be in [0, {len(self.classes_) - 1}], received "
                             f"values from {idx.min()} to {idx.max()}.")
        return self.classes_[idx.astype(np.int64)]


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = "float32") -> Array:
    """Integer labels (N,) -> one-hot rows (N, num_classes) on the labels' device.

    The label range is checked once here (a read of min and max), so the result is never
    silently wrong; ``num_classes`` defaults to max(label) + 1.

    Examples:
        >>> import numpy as np
        >>> one_hot(np.array([1, 0, 2])).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    labels = as_array(labels, "labels")
    xp = compat.array_namespace(labels)
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"one_hot expects integer labels, received dtype {labels.dtype}; use "
                        "LabelEncoder for strings or floats that are class ids.")
    if labels.ndim != 1:
        raise ValueError(f"one_hot expects labels of shape (N,), received {tuple(labels.shape)}.")
    low, high = int(xp.min(labels)), int(xp.max(labels))
    if num_classes is None:
        num_classes = high + 1
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must be in [0, {num_classes - 1}] for num_classes="
                         f"{num_classes}, received values from {low} to {high}.")
    from ..devices import resolve_dtype

    return ops.one_hot(labels, num_classes, dtype=resolve_dtype(xp, dtype))


class OneHotEncoder(_Fitted):
    """Labels of any kind -> one-hot rows, with the classes learned from the training labels."""

    _fitted_attr = "classes_"

    def __init__(self, dtype: Any = "float32"):
        self.dtype = dtype
        self.encoder = LabelEncoder()
        self.classes_: np.ndarray | None = None

    def fit(self, y: Any) -> OneHotEncoder:
        self.encoder.fit(y)
        self.classes_ = self.encoder.classes_
        return self

    def transform(self, y: Any) -> Array:
        self._check_fitted()
        index = self.encoder.transform(y)
        return one_hot(index, len(self.classes_), self.dtype)

    def fit_transform(self, y: Any) -> Array:
        return self.fit(y).transform(y)

    def inverse_transform(self, rows: Any) -> np.ndarray:
        self._check_fitted()
        return self.encoder.inverse_transform(host_labels(as_array(rows, "rows")))


def flatten(x: Any) -> Array:
    """(N, d1, d2, ...) -> (N, d1*d2*...), e.g. images to feature vectors for an MLP."""
    x = as_array(x, "x")
    if x.ndim < 1:
        raise ValueError("flatten needs an array with a sample axis, received a 0-d array.")
    xp = compat.array_namespace(x)
    return xp.reshape(x, (x.shape[0], -1))


def class_weights(y: Any) -> np.ndarray:
    """"Balanced" class weights w_c = N / (K * n_c) as float64 NumPy (class c at index c).

    A class seen half as often as average gets weight 2; pass them to a loss's class weights.
    Classes 0..max(y) that never occur get weight 0.
    """
    labels = host_labels(as_array(y, "y"))
    counts = np.bincount(labels.astype(np.int64))
    present = counts > 0
    weights = np.zeros(len(counts))
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


def balance_classes(x: Any, y: Any, method: str = "oversample",
                    seed: int | None = 0) -> tuple[Array, Array]:
    """Resample so every class has the same number of samples.

    ``"undersample"`` keeps, for each class, a random subset of the size of the rarest class;
    ``"oversample"`` keeps every sample and repeats randomly chosen ones of each smaller class
    until it matches the most common class. The choice is made on the host from ``seed``; the
    rows are gathered on the data's device. Balance only the training split.

    Returns:
        ``(x_balanced, y_balanced)`` in a random order.
    """
    if method not in ("oversample", "undersample"):
        raise ValueError(f"method must be 'oversample' or 'undersample', received {method!r}.")
    x, y = as_array(x, "x"), as_array(y, "y")
    check_same_length(x=x, y=y)
    labels = host_labels(y)
    rng = host_generator(0 if seed is None else seed)
    classes, counts = np.unique(labels, return_counts=True)
    target = counts.min() if method == "undersample" else counts.max()
    chosen = []
    for cls, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == cls)
        if method == "undersample":
            chosen.append(rng.choice(members, size=target, replace=False))
        else:
            extra = rng.choice(members, size=target - count, replace=True)
            chosen.append(np.concatenate([members, extra]))
    index = np.concatenate(chosen)
    index = index[rng.permutation(len(index))]
    return take_rows(x, index), take_rows(y, index)
