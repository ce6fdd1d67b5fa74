"""Optimizer step time for a ~1M-parameter model on every available CPU backend, vs torch.optim.

The model is four weight matrices and their biases, 1000-500-500-500-10 (1,006,510 parameters,
float32); the gradients are fixed random arrays. One timed call is one full update of all eight
arrays: ``params = opt.step(params, grads)`` for portanet, ``opt.step()`` on tensors with
``.grad`` set for the baseline, ``torch.optim.<Name>(..., foreach=True)`` (the multi-tensor
implementation, torch's fastest on CPU).

Groups: plain SGD, SGD with momentum 0.9, Adam (the three updates most training runs use) and
Adam with global-norm clipping. Each backend runs the portable path and, where arrays are
writeable, the in-place path (``<backend>+inplace``, ``inplace=True``). ``extra_info["vs_torch"]``
is each implementation's median divided by the baseline's; the module prints the ratios at the
end.

Threads: ONE, everywhere, so the ratios compare implementations, not thread pools (on this
2-core machine NumPy's BLAS and torch's OpenMP pools fight otherwise): ``threadpoolctl`` limits
the BLAS and OpenMP pools, ``torch.set_num_threads(1)``, and ``XLA_FLAGS`` single-threads JAX's
CPU client when this module is imported before JAX. Timed functions wait for JAX's asynchronous
dispatch (``block_until_ready``) before returning.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_optimizers.py --benchmark-enable
"""

from __future__ import annotations

import importlib.util
import itertools
import os

# Before anything imports jax: one intra-op thread for XLA's CPU backend.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1")

import numpy as np
import pytest

import portanet as pn
from portanet import optimizers

BASELINE = "torch.optim(foreach)"
BACKENDS = [b for b in ("numpy", "torch", "jax", "array_api_strict")
            if b in pn.available_backends()]
# The in-place path where arrays are writeable (JAX's are not: it would time the portable path).
INPLACE = [f"{b}+inplace" for b in BACKENDS if b != "jax"]
IMPLEMENTATIONS = [BASELINE, *BACKENDS, *INPLACE]  # the baseline first: the ratios' divisor

LAYERS = (1000, 500, 500, 500, 10)
SHAPES = {}
for i, (fan_in, fan_out) in enumerate(itertools.pairwise(LAYERS)):
    SHAPES[f"{i}.kernel"] = (fan_in, fan_out)
    SHAPES[f"{i}.bias"] = (fan_out,)
N_PARAMETERS = sum(int(np.prod(s)) for s in SHAPES.values())  # 1,006,510

# group: (portanet optimizer, torch.optim class name and arguments)
OPTIMIZERS = {
    "sgd": (lambda: optimizers.SGD(0.01), ("SGD", {"lr": 0.01})),
    "sgd-momentum": (lambda: optimizers.SGD(0.01, momentum=0.9),
                     ("SGD", {"lr": 0.01, "momentum": 0.9})),
    "adam": (lambda: optimizers.Adam(1e-3), ("Adam", {"lr": 1e-3})),
    "adam-global-clip": (lambda: optimizers.Adam(1e-3, global_clip_norm=1.0),
                         ("Adam", {"lr": 1e-3})),
}

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
        print(f"\nportanet step time / torch.optim foreach step time ({N_PARAMETERS:,} float32 "
              "parameters, median, 1 thread):")
        for group, row in _ratios.items():
            print(f"  {group:<18} " + "  ".join(f"{k}={v:.2f}x" for k, v in row.items()))


def _host_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s) * 0.01).astype(np.float32) for n, s in SHAPES.items()}


def _wait(arrays: dict) -> dict:
    """Block until every array is computed (JAX dispatches asynchronously)."""
    for a in arrays.values():
        if hasattr(a, "block_until_ready"):
            a.block_until_ready()
    return arrays


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


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group", list(OPTIMIZERS))
def test_optimizer_step(benchmark, group, implementation):
    make, (torch_name, torch_kwargs) = OPTIMIZERS[group]
    params_host, grads_host = _host_arrays(0), _host_arrays(1)

    if implementation == BASELINE:
        torch = pytest.importorskip("torch")
        tensors = [torch.from_numpy(v.copy()).requires_grad_() for v in params_host.values()]
        for t, g in zip(tensors, grads_host.values(), strict=True):
            t.grad = torch.from_numpy(g.copy())
        opt = getattr(torch.optim, torch_name)(tensors, foreach=True, **torch_kwargs)
        clip = group.endswith("global-clip")

        def step():
            if clip:
                torch.nn.utils.clip_grad_norm_(tensors, 1.0, foreach=True)
            opt.step()
    else:
        backend, _, inplace = implementation.partition("+")
        with pn.use_backend(backend):
            state = {"params": {n: pn.asarray(v) for n, v in params_host.items()}}
            grads = {n: pn.asarray(v) for n, v in grads_host.items()}
        opt = make()
        opt.inplace = bool(inplace)

        def step():
            state["params"] = _wait(opt.step(state["params"], grads))

    benchmark.group = f"{group} ({N_PARAMETERS:,} params)"
    benchmark.extra_info.update(threads=1, dtype="float32", parameters=N_PARAMETERS)
    step()  # warm-up outside the timer: state creation, and JAX compiles each operation
    benchmark.pedantic(step, warmup_rounds=2, rounds=20, iterations=1)
    _record(benchmark, group, implementation)
