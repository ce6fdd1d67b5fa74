"""Small helpers the data modules share: accepting array-likes, and checking lengths once."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import numpy as np

from .._typing import Array, Namespace
from ..backend import adapter_of
from ..devices import namespace_of


def is_backend_array(a: Any) -> bool:
    """True for an array of a backend portanet knows (NumPy, CuPy, torch, JAX, strict)."""
    try:
        adapter_of(a)
    except TypeError:
        return False
    return True


def as_array(a: Any, name: str) -> Array:
    """``a`` itself when it is a backend array, else a NumPy array of it (lists, scalars)."""
    if is_backend_array(a):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or a nested list of numbers, received "
                        f"{type(a).__name__}: {err}") from None


def namespace_and_device(*arrays: Array) -> tuple[Namespace, Any]:
    """The shared namespace and device of ``arrays`` (a clear error if they are mixed)."""
    xp = namespace_of(*arrays)
    return xp, compat.device(arrays[0])


def check_same_length(**named: Array) -> int:
    """All arrays have the same (non-zero) first dimension; returns it.

    Examples:
        >>> check_same_length(x=np.zeros((3, 2)), y=np.zeros(3))
        3
    """
    lengths = {}
    for key, a in named.items():
        if a is None:
            continue
        if a.ndim == 0:
            raise ValueError(f"{key} must have a sample axis, received a 0-d array (a scalar).")
        lengths[key] = a.shape[0]
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        raise ValueError(f"arrays must have the same number of samples (first dimension): "
                         f"{described}. Pass matching inputs and targets.")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("received empty arrays (0 samples); there is nothing to split or batch.")
    return n


def host_labels(y: Array) -> np.ndarray:
    """Class labels on the host as a 1-d NumPy int array (one-hot rows become their argmax).

    This reads values back from the device, so it is only used once, while preparing data.
    """
    labels = np.asarray(adapter_of(y).to_numpy(y))
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels = labels.argmax(axis=1)
    elif labels.ndim == 2:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"expected class labels of shape (N,) or one-hot (N, C), received shape "
                         f"{labels.shape}.")
    return labels


def take_rows(a: Array, indices: np.ndarray) -> Array:
    """Rows ``indices`` (host int array) of ``a``, gathered on ``a``'s device."""
    xp = compat.array_namespace(a)
    idx = adapter_of(a).from_numpy(np.ascontiguousarray(indices, dtype=np.int64),
                                   compat.device(a))
    return xp.take(a, idx, axis=0)


def as_numeric(a: Any, name: str) -> Array:
    """``a`` as a backend array of numbers: lists become NumPy; strings and objects are refused.

    NumPy inputs are made C-contiguous, so every backend can take them without a copy that
    depends on strides.
    """
    a = as_array(a, name)
    if isinstance(a, np.ndarray):
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, received dtype {a.dtype}. Encode labels "
                            "with pn.data.LabelEncoder first.")
        a = np.ascontiguousarray(a)
    return a


def nonfinite_rows(a: Array) -> tuple[int, int]:
    """(number of samples with a NaN/Inf value, index of the first) -- read on the host."""
    host = np.asarray(adapter_of(a).to_numpy(a))
    bad = np.flatnonzero(~np.isfinite(host.reshape(host.shape[0], -1)).all(axis=1))
    return len(bad), int(bad[0]) if len(bad) else -1
