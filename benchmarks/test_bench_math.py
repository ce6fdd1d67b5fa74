"""Micro-benchmarks of the math core, forward + backward, on every available CPU backend.

* fused softmax cross-entropy (value and d/dlogits) at (512, 10) and (512, 1000) logits;
* relu and gelu (exact, erf-based) forward and backprop at (512, 1024).

Each group also times the PyTorch equivalent, ``torch.nn.functional`` forward plus
``torch.autograd.grad`` (what a PyTorch user pays for the same value and gradient), as the
baseline; ``extra_info["vs_torch"]`` holds each backend's median time divided by the baseline's
and the session ends with the ratio table. Baselines skip cleanly when torch is missing.

Threads: ONE, everywhere (BLAS/OpenMP, torch and XLA), so the ratios compare implementations,
not thread pools; see ``_common.py``. float32 throughout; timed functions wait for JAX's
asynchronous dispatch before returning. ``PORTANET_BENCH_BACKEND`` picks one backend.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_math.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet import activations, losses

THREADS = 1
BASELINE = "torch.nn.functional"
IMPLEMENTATIONS = with_baseline(BASELINE, backends(CPU_BACKENDS))
SCE_SHAPES = [(512, 10), (512, 1000)]
ELEMENTWISE_SHAPE = (512, 1024)


# ---------------------------------------------------------------------------------------------
# Fused softmax cross-entropy: value and gradient
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("shape", SCE_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_softmax_cross_entropy(benchmark, shape, implementation):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape).astype(np.float32)
    labels = rng.integers(0, shape[1], size=shape[0]).astype(np.int64)

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
            return wait(loss(z, y))

    run(benchmark, step, group=f"softmax_xent {shape[0]}x{shape[1]}",
        implementation=implementation, baseline=implementation == BASELINE, rounds=30)


# ---------------------------------------------------------------------------------------------
# relu and gelu: forward and backprop through the Activation object the layers use
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("name", ["relu", "gelu"])
def test_activation(benchmark, name, implementation):
    rng = np.random.default_rng(1)
    x_host = rng.standard_normal(ELEMENTWISE_SHAPE).astype(np.float32)
    dy_host = rng.standard_normal(ELEMENTWISE_SHAPE).astype(np.float32)

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
            return wait((backprop(dy), y))

    run(benchmark, step, group=f"{name} {ELEMENTWISE_SHAPE[0]}x{ELEMENTWISE_SHAPE[1]}",
        implementation=implementation, baseline=implementation == BASELINE, rounds=30)
