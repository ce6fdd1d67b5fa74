"""devices.py: asarray, to_numpy, to_backend, device_of, namespace_of, synchronize."""

from __future__ import annotations

import importlib.util

import array_api_compat as compat
import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn

TARGETS = [("numpy", None), ("array_api_strict", "CPU_DEVICE"), ("array_api_strict", "device1")]
for _module, _target in (("torch", ("torch", "cpu")), ("jax", ("jax", None))):
    if importlib.util.find_spec(_module):
        TARGETS.append(_target)


def test_asarray_lands_on_active_backend_with_dtype(backend):
    x = pn.asarray([[1, 2], [3, 4]], dtype="float32")
    assert_on_backend(x, backend, "float32")
    np.testing.assert_array_equal(pn.to_numpy(x), [[1, 2], [3, 4]])
    assert pn.asarray(x) is not None and pn.asarray([1, 2]).dtype == backend.dtype("int64")


def test_asarray_accepts_namespace_and_numpy_dtypes(backend):
    for dtype in (np.float64, backend.dtype("float64"), "float64"):
        assert pn.asarray([1.0], dtype=dtype).dtype == backend.dtype("float64")
    with pytest.raises(TypeError, match="unknown dtype 'float128'"):
        pn.asarray([1.0], dtype="float128")


def test_asarray_moves_arrays_of_other_backends(backend):
    src = pn.to_backend(np.arange(6.0).reshape(2, 3), "array_api_strict", "device2")
    x = pn.asarray(src)
    assert_on_backend(x, backend, "float64")
    np.testing.assert_array_equal(pn.to_numpy(x), np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t[0]}-{t[1]}")
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_round_trip_between_every_pair(backend, target, dtype):
    data = np.arange(12).reshape(3, 4).astype(dtype) - 5
    x = backend.asarray(data)
    moved = pn.to_backend(x, *target)
    expected = pn.backend.make_backend(*target)
    assert compat.array_namespace(moved) is expected.xp
    assert compat.device(moved) == expected.device
    assert moved.dtype == getattr(expected.xp, dtype) and moved.shape == (3, 4)
    back = pn.to_backend(moved, backend.name, backend.device)
    assert_on_backend(back, backend, dtype)
    np.testing.assert_array_equal(pn.to_numpy(back), data)


def test_to_backend_same_place_returns_same_array(backend):
    x = backend.asarray(np.ones(3))
    assert pn.to_backend(x, backend.name, backend.device) is x


def test_to_numpy_copies_values(backend):
    x = backend.asarray(np.array([1.5, -2.0]), dtype="float32")
    out = pn.to_numpy(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [1.5, -2.0])


def test_device_of(backend):
    assert pn.device_of(backend.asarray(np.ones(2))) == backend.backend.device_name


def test_synchronize_accepts_array_backend_or_nothing(backend):
    x = backend.asarray(np.ones(2))
    pn.synchronize(x)
    pn.synchronize(backend.backend)
    pn.synchronize()


def test_namespace_of_same_backend(backend):
    a, b = backend.asarray(np.ones(2)), backend.asarray(np.zeros(2))
    assert pn.namespace_of(a, b) is compat.array_namespace(a)


def test_mixing_backends_is_an_error_naming_both(backend):
    other = ("array_api_strict", "device1") if backend.name != "array_api_strict" else ("numpy",)
    a = backend.asarray(np.ones(2))
    b = pn.to_backend(np.ones(2), *other)
    with pytest.raises(pn.MixedArraysError, match=rf"{other[0]}.*{backend.name}|"
                                                  rf"{backend.name}.*{other[0]}") as err:
        pn.namespace_of(a, b)
    assert "pn.to_backend(" in str(err.value)


def test_mixing_devices_is_an_error_naming_both():
    a = pn.to_backend(np.ones(2), "array_api_strict", "CPU_DEVICE")
    b = pn.to_backend(np.ones(2), "array_api_strict", "device1")
    with pytest.raises(pn.MixedArraysError, match="CPU_DEVICE and device1.*pn.to_backend"):
        pn.namespace_of(a, b)


def test_non_array_input_to_device_helpers():
    with pytest.raises(TypeError, match="received builtins.list.*pn.asarray"):
        pn.to_numpy([1, 2])


def test_asarray_with_explicit_backend_and_device():
    active = pn.get_backend()
    x = pn.asarray([1.0, 2.0], dtype="float32", backend="array_api_strict", device="device1")
    assert pn.device_of(x) == "device1" and pn.get_backend() == active  # nothing switched
    with pn.use_backend("array_api_strict"):
        y = pn.asarray([1.0], device="device2")  # the active backend, another of its devices
    assert pn.device_of(y) == "device2"
    with pytest.raises(pn.DeviceError, match="no device 'device9'"):
        pn.asarray([1.0], backend="array_api_strict", device="device9")
