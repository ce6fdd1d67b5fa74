"""Layer benchmarks: forward + backward of Dense, Conv2D and MaxPool2D on every CPU backend,
with the same PyTorch layer (forward + autograd backward) as the baseline in the same run.

=====================  =================================  ===================================
group                  portanet                           baseline
=====================  =================================  ===================================
Dense 784->512 b128    ``Dense(784, 512, "relu")``        ``torch.nn.Linear`` + ``relu``
Conv2D 6->16 5x5       ``Conv2D(6, 16, 5)`` on            ``torch.nn.Conv2d(6, 16, 5)``
                       (128, 6, 14, 14) (LeNet-5 conv 2)
MaxPool2D 2x2          ``MaxPool2D(2)`` on (128, 6, 28,   ``torch.nn.functional.max_pool2d``
                       28)
=====================  =================================  ===================================

Both sides compute the output, the input gradient and the parameter gradients (the torch input
``requires_grad``), in float32. ``extra_info["vs_torch"]`` holds each backend's median divided by
the baseline's median, and the module prints the ratios at the end.

Threads: ONE everywhere, so ratios compare implementations rather than thread pools (on a
2-core machine NumPy's BLAS and torch's OpenMP pools fight otherwise): ``threadpoolctl`` limits
BLAS/OpenMP, ``torch.set_num_threads(1)``, and ``XLA_FLAGS`` single-threads JAX's CPU client
when this module is imported before JAX. JAX results are waited for (``block_until_ready``)
inside the timed function. Without torch the baselines skip and the backends still run.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_layers.py --benchmark-enable
"""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import numpy as np
import pytest

import portanet as pn
from portanet import layers as L

THREADS = 1
BASELINE = "torch"
BACKENDS = [b for b in ("numpy", "torch", "jax", "array_api_strict")
            if b in pn.available_backends()]
IMPLEMENTATIONS = [f"{BASELINE}-autograd", *BACKENDS]  # baseline first: the ratio's divisor

_baseline: dict[str, float] = {}
_ratios: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def fixed_threads():
    """Pin BLAS, OpenMP and torch to THREADS threads for the module; restore afterwards."""
    from threadpoolctl import threadpool_limits

    torch_threads = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(THREADS)
    with threadpool_limits(limits=THREADS):
        yield
    if torch_threads is not None:
        import torch

        torch.set_num_threads(torch_threads)
    if _ratios:
        print(f"\nportanet layer time / torch layer + autograd time (median, {THREADS} thread):")
        for group, row in _ratios.items():
            print(f"  {group:<24} " + "  ".join(f"{k}={v:.2f}x" for k, v in row.items()))


def _wait(*arrays):
    for a in arrays:
        if hasattr(a, "block_until_ready"):
            a.block_until_ready()


def _run(benchmark, group: str, implementation: str, step) -> None:
    benchmark.group = group
    benchmark.extra_info["threads"] = THREADS
    step()  # warm-up outside the timer (JAX compiles each operation on its first call)
    benchmark.pedantic(step, warmup_rounds=2, rounds=20, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once as a smoke test
        return
    median = stats.stats.median
    if implementation.startswith(BASELINE + "-"):
        _baseline[group] = median
    elif group in _baseline:
        benchmark.extra_info["vs_torch"] = median / _baseline[group]
        _ratios.setdefault(group, {})[implementation] = median / _baseline[group]


def _portanet_step(implementation, layer, x_host):
    """forward + backward of ``layer`` on ``implementation``; input gradient included."""
    with pn.use_backend(implementation):
        layer.build(seed=0, dtype="float32")
        x = pn.asarray(x_host)
        y, _ = layer.forward(x, training=True)
        dy = pn.asarray(np.ones(tuple(y.shape), dtype=np.float32))

    def step():
        y, backprop = layer.forward(x, training=True)
        dx = backprop(dy)
        _wait(y, dx, *layer.gradients.values())
        return dx

    return step


def _torch_step(module_or_fn, x_host):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(x_host).requires_grad_()
    with torch.no_grad():
        dy = torch.ones_like(module_or_fn(x))
    params = list(module_or_fn.parameters()) if isinstance(module_or_fn, torch.nn.Module) else []

    def step():
        y = module_or_fn(x)
        return torch.autograd.grad(y, [x, *params], dy)

    return step


CASES = {
    "Dense 784->512 b128": (
        (128, 784),
        lambda: L.Dense(784, 512, activation="relu"),
        lambda torch: torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU()),
    ),
    "Conv2D 6->16 5x5 b128": (
        (128, 6, 14, 14),
        lambda: L.Conv2D(6, 16, 5),
        lambda torch: torch.nn.Conv2d(6, 16, 5),
    ),
    "MaxPool2D 2x2 b128": (
        (128, 6, 28, 28),
        lambda: L.MaxPool2D(2),
        lambda torch: (lambda t: torch.nn.functional.max_pool2d(t, 2)),
    ),
}


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group", list(CASES))
def test_layer_forward_backward(benchmark, group, implementation):
    shape, make_layer, make_torch = CASES[group]
    x_host = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    if implementation.startswith(BASELINE + "-"):
        torch = pytest.importorskip("torch")
        step = _torch_step(make_torch(torch), x_host)
    else:
        step = _portanet_step(implementation, make_layer(), x_host)
    benchmark.extra_info["input_shape"] = list(shape)
    _run(benchmark, group, implementation, step)
