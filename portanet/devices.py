"""Putting arrays where the user wants them, and refusing to mix them silently.

Examples:
    >>> import portanet as pn
    >>> x = pn.asarray([[1, 2], [3, 4]], dtype="float32")      # onto the active backend
    >>> y = pn.to_backend(x, "array_api_strict", device="device1")
    >>> pn.device_of(y)
    'device1'
    >>> pn.to_numpy(y).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from ._typing import Array, Namespace
from .backend import Backend, adapter_of, get_backend, make_backend
from .errors import MixedArraysError

_DTYPE_NAMES = ("float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8",
                "bool", "complex64", "complex128")


def resolve_dtype(xp: Namespace, dtype: Any):
    """``"float32"``, ``numpy.float32`` or a namespace dtype -> the namespace's dtype object."""
    if dtype is None:
        return None
    name = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or str(dtype)
    name = name.rsplit(".", 1)[-1]
    if name not in _DTYPE_NAMES:
        raise TypeError(f"unknown dtype {dtype!r}; expected one of {list(_DTYPE_NAMES)}.")
    return getattr(xp, name)


def asarray(obj: Any, dtype: Any = None, device: Any = None, *,
            backend: str | None = None) -> Array:
    """Convert ``obj`` (nested lists, NumPy or any backend's array) onto the active backend.

    Args:
        obj: data to convert. An array of another backend is moved with :func:`to_backend`.
        dtype: "float32", "float64", "int64", ... or a namespace dtype; None keeps the data's.
        device: a device of the backend; None for the active backend's device.
        backend: a backend name to use instead of the active one.

    Returns:
        An array of the backend's namespace, on its device.
    """
    if backend is None and device is None:
        target = get_backend()
    else:
        target = make_backend(backend or get_backend().name, device)
    try:
        source = adapter_of(obj)
    except TypeError:
        source = None
    if source is not None:
        obj = to_backend(obj, target.name, target.device)
    xp = target.xp
    return xp.asarray(obj, dtype=resolve_dtype(xp, dtype), device=target.device)


def to_numpy(x: Array):
    """A NumPy array with the values of ``x`` (a copy for device arrays, a view on the host)."""
    return adapter_of(x).to_numpy(x)


def device_of(x: Array) -> str:
    """The device of ``x`` as a readable string ("cpu", "cuda:0", "device1", ...)."""
    return adapter_of(x).device_name(compat.device(x))


def _dlpack_move(x: Array, target: Backend) -> Array | None:
    """Zero-copy exchange through DLPack where both ends live on the same physical device."""
    source = adapter_of(x)
    if "array_api_strict" in (source.name, target.name):
        return None  # strict's fake devices are not DLPack devices
    try:
        moved = target.xp.from_dlpack(x)
    except Exception:  # different device kinds, unsupported dtype, old library: copy instead
        return None
    return moved if compat.device(moved) == target.device else None


def to_backend(x: Array, name: str, device: Any = None) -> Array:
    """Move ``x`` to backend ``name`` on ``device`` (its default device when None).

    Within one library this is ``to_device``; between libraries it is a zero-copy DLPack
    exchange where both live on the same device (the result may share memory with ``x``), and a
    copy through host memory otherwise. Dtype and shape are kept.
    """
    target = make_backend(name, device)
    source = adapter_of(x)
    if source.name == target.name:
        if compat.device(x) == target.device:
            return x
        return compat.to_device(x, target.device)
    moved = _dlpack_move(x, target)
    if moved is not None:
        return moved
    return target.adapter.from_numpy(source.to_numpy(x), target.device)


def namespace_of(*arrays: Array) -> Namespace:
    """The array API namespace shared by ``arrays``; a clear error if they mix libraries or devices.

    portanet never copies between libraries or devices behind your back: move one side first.
    """
    try:
        xp = compat.array_namespace(*arrays)
    except TypeError:
        described = sorted({f"{adapter_of(a).name} ({device_of(a)})" for a in arrays})
        raise MixedArraysError(
            f"arrays from different backends were combined: {', '.join(described)}. Move them "
            f"to one backend first, e.g. pn.to_backend(x, {adapter_of(arrays[0]).name!r}, "
            f"device={device_of(arrays[0])!r})."
        ) from None
    if len(arrays) > 1:
        first = compat.device(arrays[0])
        for a in arrays[1:]:
            if compat.device(a) != first:
                raise MixedArraysError(
                    f"arrays on different devices were combined: {device_of(arrays[0])} and "
                    f"{device_of(a)}. Move one with pn.to_backend(x, "
                    f"{adapter_of(a).name!r}, device={device_of(arrays[0])!r})."
                )
    return xp


def synchronize(x_or_backend: Any = None, outputs: Any = None) -> None:
    """Block until work on a device is done, e.g. before reading a timer.

    Args:
        x_or_backend: an array, or a dict/list/tuple of arrays (``model.parameters()``), whose
            computation to wait for, on their device; or a :class:`Backend`; or None for the
            active backend.
        outputs: more arrays (or a pytree of them) to wait for on that device.

    CUDA backends wait for everything queued on the device. JAX has no device-wide barrier: it
    waits for exactly the arrays given (``x_or_backend`` when it is arrays, and ``outputs``),
    so give it what the timed code produced; with a Backend or None and no ``outputs`` it does a
    best effort (see ``Adapter.synchronize``).
    """
    if x_or_backend is None:
        x_or_backend = get_backend()
    if isinstance(x_or_backend, Backend):
        x_or_backend.synchronize(outputs)
        return

    def first_array(tree):  # the array whose library and device the wait goes to
        if isinstance(tree, dict):
            tree = list(tree.values())
        if isinstance(tree, (list, tuple)):
            return next((a for a in map(first_array, tree) if a is not None), None)
        return tree if compat.is_array_api_obj(tree) else None

    x = first_array(x_or_backend)
    if x is None:  # an empty pytree: nothing of its own to wait for
        get_backend().synchronize(outputs)
        return
    waited = x_or_backend if outputs is None else (x_or_backend, outputs)
    adapter_of(x).synchronize(compat.device(x), waited)

