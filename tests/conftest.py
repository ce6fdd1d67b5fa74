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


# -- JAX in the test session -----------------------------------------------------------------
# Eager JAX compiles every primitive once per new shape, dtype and static argument: about 85% of
# JAX's time in this suite went to XLA (tracing, lowering to MLIR, compiling), ~5,700
# compilations of one or a few ops each. These settings make those compilations cheaper. They
# are the test session's, not portanet's: users and benchmarks/ keep JAX's defaults.
# PORTANET_TEST_JAX_DEFAULTS=1 turns off the two that change XLA's code generation (kept: the
# cache, which never changes a result), to run the suite exactly as users compile.
#
# Measured 2026-12-02, one quiet 2-core machine, one session: the 644 JAX cases that existed
# before the engine (commit 9ac946b, where JAX was 248 of the suite's 356 s) took 194.8 s of
# test time at that commit and 120.9 s now (0.62x: these settings, and the engine's compiled
# step where a test trains). What is left is still compiling: 2,669 compilations in those 644
# cases (JAX_LOG_COMPILES=1), led by multiply 217, subtract 157, add 149, transpose 140, sum
# 138, matmul 125: generic ops at new shapes, no one expression a fused kernel would remove.
# Per new op signature ~14 ms of XLA and ~14 ms of lowering, half of it MLIR context setup.
# Tried and not kept (within noise on a 4-op, 80-shape probe):
# JAX_INCLUDE_FULL_TRACEBACKS_IN_LOCATIONS=0, JAX_TRACEBACK_IN_LOCATIONS_LIMIT=0,
# --xla_cpu_parallel_codegen_split_count=1, --xla_cpu_use_xnnpack=false,
# --xla_cpu_enable_concurrency_optimized_scheduler=false.
_XLA_TEST_FLAG = "--xla_cpu_use_fusion_emitters=false"
# XLA aborts the whole process on an XLA_FLAGS entry it does not know, and it is retiring the
# CPU emitters this flag selects: add a jaxlib series here only after checking the flag in it.
_XLA_TEST_FLAG_JAXLIB = ("0.10.",)
_JAX_CONFIG_TYPES = {  # the settings above that jax.config holds, and their types
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": float,
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": int,
    "JAX_COMPILATION_CACHE_DIR": str,
    "JAX_DISABLE_MOST_OPTIMIZATIONS": lambda v: v not in ("", "0"),
}
_own_jax_cache: list[str] = []  # a temporary cache directory this process made (removed at exit)


def _jax_test_settings(config) -> dict[str, str]:
    """The environment variables that configure JAX for the session (see the comment above).

    * ``JAX_DISABLE_MOST_OPTIMIZATIONS``: LLVM at -O0 with its expensive passes off, and
    * ``--xla_cpu_use_fusion_emitters=false`` (XLA_FLAGS): XLA's direct LLVM emitters instead of
      its MLIR fusion pipeline. Each alone cut compile time by about a third; together, over
      the suite's ~5,750 JAX compilations, XLA took 91 s instead of 246 s (JAX's cases 242 s
      instead of 403 s in all, on a quiet 2-core machine). Results still agree with the
      default build to within rounding (FMA contraction, tanh/exp polynomials): the tests
      compare with tolerances, and the bit-for-bit ones compare JAX with JAX in one session.
    * the persistent compilation cache, keyed by the compiled program and the compiler options:
      a model rebuilt with the same shapes (test_resume trains three identical ones per test)
      loads its step in a few ms instead of compiling it again. It lives in pytest's cache
      directory (.pytest_cache, git-ignored; ``--cache-clear`` empties it), so a second local
      run leaves XLA almost nothing to compile (tracing and lowering still run: test_layers
      and test_attention on jax, 43 s then 29 s); under ``-p no:cacheprovider`` (and so for
      timing runs) it is a temporary directory removed at the end, and CI, from a fresh clone,
      starts empty either way. No size limit: a limited cache rescans the whole directory on
      every write. Unlimited, JAX writes entries without a lock; pytest-xdist workers share the
      directory, and a read that races a write costs a warning and a compile, never a result
      (JAX catches a bad entry and compiles instead).
    """
    settings = {
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # eager ops compile in ~20 ms
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = getattr(config, "cache", None)
        if cache is not None:
            settings["JAX_COMPILATION_CACHE_DIR"] = str(cache.mkdir("jax-compilation-cache"))
        else:
            import tempfile

            _own_jax_cache.append(tempfile.mkdtemp(prefix="portanet-jax-cache-"))
            settings["JAX_COMPILATION_CACHE_DIR"] = _own_jax_cache[0]
    if os.environ.get("PORTANET_TEST_JAX_DEFAULTS", "") not in ("", "0"):
        return settings
    settings["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
    from importlib.metadata import PackageNotFoundError, version

    try:
        jaxlib = version("jaxlib")
    except PackageNotFoundError:
        jaxlib = ""
    flags = os.environ.get("XLA_FLAGS", "")
    if jaxlib.startswith(_XLA_TEST_FLAG_JAXLIB) and "xla_cpu_use_fusion_emitters" not in flags:
        settings["XLA_FLAGS"] = f"{flags} {_XLA_TEST_FLAG}".strip()
    return settings


def pytest_configure(config):
    # Through the environment, so that `portanet` subprocesses and xdist workers (started
    # later, with a copy of it) compile the same way and share the cache directory.
    for name, value in _jax_test_settings(config).items():
        if name == "XLA_FLAGS" or name not in os.environ:
            os.environ[name] = value
    if "jax" in sys.modules:  # imported already (by a plugin): its config read the old values
        import jax

        for name, parse in _JAX_CONFIG_TYPES.items():
            if name in os.environ:
                jax.config.update(name.lower(), parse(os.environ[name]))


# Tests that start processes of their own (two MPI or gloo ranks, a process pool, Dask workers)
# run one after another on one pytest-xdist worker (README's test command: -n auto --dist
# loadgroup). Two of them side by side would put four busy processes on CI's two cores, against
# the deadlines the distributed tests check.
_PROCESS_TESTS = ("test_distributed.py", "test_distributed_comm.py", "test_tuning.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in _PROCESS_TESTS:
            item.add_marker(pytest.mark.xdist_group("processes"))


def pytest_unconfigure(config):
    import shutil

    for path in _own_jax_cache:
        shutil.rmtree(path, ignore_errors=True)


def pytest_report_header(config):
    if not _installed("jax"):
        return None
    shown = ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS", "JAX_COMPILATION_CACHE_DIR")
    return "jax test settings: " + ", ".join(f"{k}={os.environ.get(k, '')!r}" for k in shown)


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
