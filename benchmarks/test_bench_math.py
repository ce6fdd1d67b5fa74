"""Micro-benchmarks of the math core, forward + backward, on every available CPU backend.

* fused softmax cross-entropy (value and d/dlogits) at (512, 10) and (512, 1000) logits;
* relu and gelu (exact, erf-based) forward and backprop at (512, 1024).

Each group also times the PyTorch equivalent, ``torch.nn.functional`` forward plus
``torch.autograd.grad`` (what a PyTorch user pays for the same value and gradient), as the
baseline; ``extra_info["vs_torch"]`` holds each backend's median time divided by the baseline's
and the module prints the ratios at the end. Baselines skip cleanly when torch is missing.

Threads: ONE, everywhere, so the ratios compare implementations, not thread pools (on this 2-core
machine NumPy's BLAS and torch's OpenMP pools fight otherwise): ``threadpoolctl`` limits the BLAS
and OpenMP pools, ``torch.set_num_threads(1)``, and ``XLA_FLAGS`` single-threads JAX's CPU
client when this module is imported before JAX. float32 throughout; timed functions wait for
JAX's asynchronous dispatch (``block_until_ready``) before returning.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_math.py --benchmark-enable
"""

from __future__ import annotations

import importlib.util
import os

# Before anything imports jax: one intra-op thread for XLA's CPU backend.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import numpy as np
import pytest

import portanet as pn
from portanet import activations, losses

BASELINE = "torch.nn.functional"
BACKENDS = [b for b in ("numpy", "torch", "jax", "array_api_strict")
            if b in pn.available_backends()]
IMPLEMENTATIONS = [BASELINE, *BACKENDS]  # the baseline first: its time is the ratio's divisor
SCE_SHAPES = [(512, 10), (512, 1000)]
ELEMENTWISE_SHAPE = (512, 1024)

_baseline_median: dict[str, float] = {}
_ratios: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Pin every thread pool to one thread for the module; restore afterwards."""
    from threadpoolctl import threadpool_limits

    torch_threads = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    if _ratios:
        print("\nportanet time / torch.nn.functional+autograd time (median, 1 thread):")
        for group, row in _ratios.items():
            print(f"  {group:<28} " + "  ".join(f"{k}={v:.2f}x" for k, v in row.items()))


def _wait(x):
    """Block until ``x`` is computed (JAX dispatches asynchronously; others are synchronous)."""
    if hasattr(x, "block_until_ready"):
        x.block_until_ready()
    return x


def _record(benchmark, group: str, implementation: str) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once, nothing measured
        return
    median = stats.stats.median
    if implementation == BASELINE:
        _baseline_median[group] = median
    elif group in _baseline_median:
        ratio = median / _baseline_median[group]
        benchmark.extra_info["vs_torch"] = ratio
        _ratios.setdefault(group, {})[implementation] = ratio


def _run(benchmark, group: str, implementation: str, fn) -> None:
    benchmark.group = group
    benchmark.extra_info["threads"] = 1
    fn()  # warm-up outside the timer: JAX compiles each operation on its first call
    benchmark.pedantic(fn, warmup_rounds=2, rounds=30, iterations=1)
    _record(benchmark, group, implementation)


# ---------------------------------------------------------------------------------------------
# Fused softmax cross-entropy: value and gradient
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", SCE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_cross_entropy(benchmark, shape, implementation):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)
    group = f"softmax_xent {shape[0]}x{shape[1]}"

    if implementation == BASELINE:
        torch = pytest.importorskip("torch")
        z = torch.from_numpy(logits).requires_grad_()
        y = torch.from_numpy(labels)

        def step():
            value = torch.nn.functional.cross_entropy(z, y)
            return torch.autograd.grad(value, z)[0]
    else:
        with pn.use_backend(implementation):
            z, y = pn.asarray(logits), pn.asarray(labels)
        loss = losses.SoftmaxCrossEntropy()

        def step():
            value, grad = loss(z, y)
            return _wait(grad), _wait(value)

    _run(benchmark, group, implementation, step)


# ---------------------------------------------------------------------------------------------
# relu and gelu: forward and backprop through the Activation object the layers use
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_activation(benchmark, name, implementation):
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal(ELEMENTWISE_SHAPE).astype(np.float32)
    dy_host = rng.standard_normal(ELEMENTWISE_SHAPE).astype(np.float32)
    group = f"{name} {ELEMENTWISE_SHAPE[0]}x{ELEMENTWISE_SHAPE[1]}"

    if implementation == BASELINE:
        torch = pytest.importorskip("torch")
        fn = {"relu": torch.nn.functional.relu,
              "gelu": lambda t: torch.nn.functional.gelu(t, approximate="none")}[name]
        x = torch.from_numpy(x_host).requires_grad_()
        dy = torch.from_numpy(dy_host)

        def step():
            return torch.autograd.grad(fn(x), x, dy)[0]
    else:
        with pn.use_backend(implementation):
            x, dy = pn.asarray(x_host), pn.asarray(dy_host)
        act = activations.get(name)

        def step():
            y, backprop = act(x)
            return _wait(backprop(dy)), _wait(y)

    _run(benchmark, group, implementation, step)
