"""backend.py: selecting, scoping and validating backends and devices."""

from __future__ import annotations

import asyncio
import threading

import array_api_compat.numpy
import pytest

import portanet as pn
from portanet import backend as backend_module
from portanet.backends import ADAPTERS


@pytest.fixture(autouse=True)
def restore_process_default(monkeypatch):
    """Each test starts from the environment's default and leaves no choice behind."""
    monkeypatch.delenv("PORTANET_BACKEND", raising=False)
    monkeypatch.delenv("PORTANET_DEVICE", raising=False)
    saved = list(backend_module._process_default)
    token = backend_module._active.set(None)
    backend_module._process_default.clear()
    yield
    backend_module._active.reset(token)
    backend_module._process_default[:] = saved


def test_default_is_numpy_on_cpu():
    b = pn.get_backend()
    assert (b.name, b.device_name) == ("numpy", "cpu")
    assert b.xp is array_api_compat.numpy  # what array_namespace(np_array) returns too


def test_set_backend_changes_active_and_returns_it():
    b = pn.set_backend("array_api_strict", device="device1")
    assert pn.get_backend() == b
    assert b.device_name == "device1"
    assert repr(b) == "Backend(name='array_api_strict', device='device1')"


def test_use_backend_restores_previous_even_on_error():
    pn.set_backend("numpy")
    with pytest.raises(RuntimeError), pn.use_backend("array_api_strict") as inner:
        assert pn.get_backend() is inner
        with pn.use_backend("array_api_strict", "device1"):
            assert pn.get_backend().device_name == "device1"
        assert pn.get_backend().device_name == "CPU_DEVICE"
        raise RuntimeError("boom")
    assert pn.get_backend().name == "numpy"


def test_use_backend_is_thread_local():
    seen = {}
    barrier = threading.Barrier(2)

    def worker(name, device):
        with pn.use_backend(name, device):
            barrier.wait()  # both threads are inside their blocks at once
            seen[name] = pn.get_backend().name

    threads = [threading.Thread(target=worker, args=("numpy", None)),
               threading.Thread(target=worker, args=("array_api_strict", "device1"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"numpy": "numpy", "array_api_strict": "array_api_strict"}
    assert pn.get_backend().name == "numpy"


def test_use_backend_is_task_local():
    async def task(name, device, started, other_started):
        with pn.use_backend(name, device):
            started.set()
            await other_started.wait()
            return pn.get_backend().device_name

    async def main():
        a, b = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(task("array_api_strict", "device1", a, b),
                                    task("array_api_strict", "device2", b, a))

    assert asyncio.run(main()) == ["device1", "device2"]


def test_set_backend_is_seen_by_new_threads():
    pn.set_backend("array_api_strict", "device1")
    seen = []
    t = threading.Thread(target=lambda: seen.append(pn.get_backend().device_name))
    t.start()
    t.join()
    assert seen == ["device1"]


def test_environment_variables_pick_backend_and_device(monkeypatch):
    monkeypatch.setenv("PORTANET_BACKEND", "array_api_strict")
    monkeypatch.setenv("PORTANET_DEVICE", "device2")
    assert pn.get_backend().device_name == "device2"


def test_bad_environment_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv("PORTANET_BACKEND", "tensorflow")
    with pytest.raises(pn.BackendError, match="PORTANET_BACKEND='tensorflow'.*valid names"):
        pn.get_backend()


@pytest.mark.parametrize("alias, name", [("NumPy", "numpy"), ("strict", "array_api_strict"),
                                         ("array-api-strict", "array_api_strict")])
def test_name_aliases(alias, name):
    assert pn.set_backend(alias).name == name


def test_auto_picks_numpy_without_gpu_and_cupy_with(monkeypatch):
    monkeypatch.setattr(backend_module, "_cuda_usable", lambda: False)
    assert backend_module.make_backend("auto").name == "numpy"
    # With a usable GPU "auto" must choose cupy: simulate it and check the resolution path.
    monkeypatch.setattr(backend_module, "_cuda_usable", lambda: True)
    if not ADAPTERS["cupy"].is_installed():
        with pytest.raises(pn.BackendError, match="'cupy' is not installed"):
            backend_module.make_backend("auto")


def test_unknown_backend_lists_valid_names():
    with pytest.raises(pn.BackendError) as err:
        pn.set_backend("tensorflow")
    message = str(err.value)
    assert "unknown backend 'tensorflow'" in message
    for name in ("numpy", "cupy", "torch", "jax", "array_api_strict", "auto"):
        assert repr(name) in message


def test_non_string_name_is_rejected():
    with pytest.raises(pn.BackendError, match="must be a string, received 3"):
        pn.set_backend(3)


def test_bad_device_lists_existing_devices():
    with pytest.raises(pn.DeviceError, match=r"no device 'device9'.*'CPU_DEVICE', 'device1'"):
        pn.set_backend("array_api_strict", device="device9")
    with pytest.raises(pn.DeviceError, match=r"no device 'cuda:0'.*\['cpu'\]"):
        pn.set_backend("numpy", device="cuda:0")


def test_cupy_without_usable_gpu_says_how_to_fall_back(monkeypatch):
    adapter = ADAPTERS["cupy"]
    monkeypatch.setattr(type(adapter), "is_installed", lambda self: True)
    monkeypatch.setattr(type(adapter), "devices", lambda self: [])
    with pytest.raises(pn.BackendError, match=r"no usable CUDA device.*set_backend\('numpy'\)"):
        pn.set_backend("cupy")


def test_missing_library_says_how_to_install(monkeypatch):
    adapter = ADAPTERS["jax"]
    monkeypatch.setattr(type(adapter), "is_installed", lambda self: False)
    with pytest.raises(pn.BackendError, match=r"'jax' is not installed.*pip install jax"):
        pn.set_backend("jax")


def test_torch_cuda_without_gpu_is_a_clear_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the error path is for machines without it")
    with pytest.raises(pn.BackendError, match="sees no usable CUDA device.*device='cpu'"):
        pn.set_backend("torch", device="cuda:0")
    with pytest.raises(pn.DeviceError, match="usable devices are"):
        pn.set_backend("torch", device="not-a-device")


def test_available_backends_are_installed_and_usable():
    found = pn.available_backends()
    assert "numpy" in found and "array_api_strict" in found
    for name in found:
        assert ADAPTERS[name].is_installed() and ADAPTERS[name].devices()
        pn.set_backend(name)  # each one listed can actually be selected


def test_jax_backend_keeps_float64():
    pytest.importorskip("jax")
    b = pn.set_backend("jax")
    x = b.xp.asarray([1.0], dtype=b.xp.float64)
    assert x.dtype == b.xp.float64
