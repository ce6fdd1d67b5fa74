"""The shared test harness: the ``backend`` fixture and the parity helpers.

Every math, layer, optimizer and training test takes the ``backend`` fixture and so runs on:
numpy; array_api_strict on CPU_DEVICE and on device1 (a fake device that catches arrays created
on the default device by mistake); torch-cpu and jax when installed; cupy and torch-cuda, marked
``gpu``, when a CUDA device is usable. Skips say why.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can `from helpers import ...`

import portanet as pn
from portanet.backends import ADAPTERS
from portanet.fused import KERNELS


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


if _installed("array_api_strict"):
    import array_api_strict

    # Rule 4 of DESIGN.md: no boolean-mask indexing or data-dependent shapes on the hot path.
    array_api_strict.set_array_api_strict_flags(boolean_indexing=False,
                                                data_dependent_shapes=False)


if _installed("torch"):
    import torch

    # Tests use tiny arrays: one intra-op thread avoids OpenMP spin-waits that made tiny torch
    # ops ~50x slower on the 2-core CI machine while NumPy's BLAS threads were busy.
    torch.set_num_threads(1)


@dataclass
class BackendCase:
    """One backend/device the suite runs on, with helpers to move NumPy data there and back."""

    id: str
    name: str
    device_spec: Any
    backend: pn.Backend = field(init=False, repr=False)

    def __post_init__(self):
        self.backend = pn.backend.make_backend(self.name, self.device_spec)

    @property
    def xp(self):
        return self.backend.xp

    @property
    def device(self):
        return self.backend.device

    def dtype(self, name: str):
        return getattr(self.xp, name)

    def asarray(self, a, dtype: str | None = None):
        """A NumPy array (or nested list) onto this backend and device, cast to ``dtype``."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        return self.backend.adapter.from_numpy(np.array(a, order="C"), self.device)

    def to_numpy(self, x):
        return pn.to_numpy(x)


def _cases() -> list:
    params = [pytest.param(("numpy", "numpy", None), id="numpy")]
    if _installed("array_api_strict"):
        params += [
            pytest.param(("strict-cpu", "array_api_strict", "CPU_DEVICE"), id="strict-cpu"),
            pytest.param(("strict-device1", "array_api_strict", "device1"), id="strict-device1"),
        ]
    else:
        params.append(pytest.param(("strict", "array_api_strict", None), id="strict",
                                   marks=pytest.mark.skip("array-api-strict is not installed")))
    for module, case in (("torch", ("torch-cpu", "torch", "cpu")), ("jax", ("jax", "jax", None))):
        marks = () if _installed(module) else pytest.mark.skip(f"{module} is not installed")
        params.append(pytest.param(case, id=case[0], marks=marks))
    cupy_ok = ADAPTERS["cupy"].is_installed() and bool(ADAPTERS["cupy"].devices())
    params.append(pytest.param(
        ("cupy", "cupy", None), id="cupy",
        marks=[pytest.mark.gpu] + ([] if cupy_ok else [pytest.mark.skip(
            "cupy is not installed or no CUDA device is usable")]),
    ))
    torch_cuda_ok = _installed("torch") and any(
        getattr(d, "type", "") == "cuda" for d in ADAPTERS["torch"].devices())
    params.append(pytest.param(
        ("torch-cuda", "torch", "cuda:0"), id="torch-cuda",
        marks=[pytest.mark.gpu] + ([] if torch_cuda_ok else [pytest.mark.skip(
            "torch is not installed or has no usable CUDA device")]),
    ))
    return params


@pytest.fixture(params=_cases())
def backend(request):
    """A :class:`BackendCase`, active (``pn.use_backend``) for the duration of the test."""
    case = BackendCase(*request.param)
    with pn.use_backend(case.name, case.device):
        yield case


@pytest.fixture
def portable_kernels(monkeypatch):
    """Switch every adapter's fused kernels off: portanet/fused.py then runs its portable forms
    (for tests that compare code paths bit for bit, which a fused multiply-add would not be)."""
    for adapter in ADAPTERS.values():
        for kernel in KERNELS:
            monkeypatch.setattr(type(adapter), kernel, None)
