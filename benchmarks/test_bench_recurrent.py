"""Recurrent benchmarks: LSTM and GRU forward + backward (BPTT) on every CPU backend, with the
same PyTorch module (forward + autograd backward; on the CPU its fused oneDNN/MKL kernels) as
the baseline in the same run, and the step's matrix products alone as its floor.

=====================  ============================================  =========================
group                  portanet                                      baseline
=====================  ============================================  =========================
LSTM b64 T50 64->128   ``LSTM(64, 128, return_sequences=True)`` on   ``torch.nn.LSTM(64, 128,
                       (64, 50, 64)                                  batch_first=True)``
GRU b64 T50 64->128    ``GRU(64, 128, return_sequences=True)``       ``torch.nn.GRU(...)``
=====================  ============================================  =========================

Both sides compute every step's output, dL/dx (the torch input ``requires_grad``) and every
parameter gradient, for dL/dy = 1, in float32. The floor ("<backend> floor") is the products a
step cannot avoid, timed alone on the backend: x @ W, dL/dW and dL/dx for all T*N rows at
once, and per step h @ U and dz @ U^T (dL/dU is one (T*N)-row product), about 1.9 GFLOP for
the LSTM. ``extra_info["vs_torch"]`` holds each median divided by the baseline's median, and
the session ends with the ratio table.

Threads: ONE everywhere (BLAS/OpenMP, torch and XLA), see ``_common.py``. JAX runs eagerly
(each op dispatched on its own) and its results are waited for inside the timed function.
``PORTANET_BENCH_BACKEND`` picks one backend.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_recurrent.py --benchmark-enable

Measured figures are in docs/recurrent.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet.layers.gru import GRU
from portanet.layers.lstm import LSTM

THREADS = 1
BASELINE = "torch-autograd"
IMPLEMENTATIONS = with_baseline(BASELINE, backends(CPU_BACKENDS))
N, T, F, H = 64, 50, 64, 128

CASES = {  # group -> (portanet layer, torch module name, gates)
    "LSTM b64 T50 64->128": (LSTM, "LSTM", 4),
    "GRU b64 T50 64->128": (GRU, "GRU", 3),
}


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((N, T, F)).astype(np.float32)


def _portanet_step(implementation, layer_cls):
    with pn.use_backend(implementation):
        layer = layer_cls(F, H, return_sequences=True).build(seed=0, dtype="float32")
        x = pn.asarray(_inputs())
        dy = pn.asarray(np.ones((N, T, H), dtype=np.float32))

    def step():
        y, backprop = layer.forward(x, training=True)
        dx = backprop(dy)
        return wait((dx, y, layer.gradients))

    return step


def _torch_step(name):
    torch = pytest.importorskip("torch")
    module = getattr(torch.nn, name)(F, H, batch_first=True)
    x = torch.from_numpy(_inputs()).requires_grad_()
    dy = torch.ones((N, T, H))
    params = list(module.parameters())

    def step():
        y, _ = module(x)
        return torch.autograd.grad(y, [x, *params], dy)

    return step


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group", list(CASES))
def test_recurrent_forward_backward(benchmark, group, implementation):
    layer_cls, torch_name, _ = CASES[group]
    if implementation == BASELINE:
        step = _torch_step(torch_name)
    else:
        step = _portanet_step(implementation, layer_cls)
    run(benchmark, step, group=group, implementation=implementation,
        baseline=implementation == BASELINE, input_shape=[N, T, F], hidden_size=H)


def floor_products(backend, gates: int):
    """The products of one forward + backward, laid out as the layer computes them: the
    (T*N)-row products once, and the per-step pair T times on the same operands (U stays in
    cache, as in the layer's loop)."""
    adapter = backend.adapter
    rng = np.random.default_rng(0)
    width = gates * H

    def random(*shape):
        return adapter.from_numpy(rng.standard_normal(shape).astype(np.float32), backend.device)

    xs, w, dxw, hs = random(N * T, F), random(F, width), random(N * T, width), random(N * T, H)
    h, u, dz, ut = random(N, H), random(H, width), random(N, width), random(width, H)

    def products():
        out = [xs @ w, xs.T @ dxw, dxw @ w.T, hs.T @ dxw]
        for _ in range(T):
            out.append(h @ u)
            out.append(dz @ ut)
        return out

    return products


@pytest.mark.parametrize("implementation", backends(CPU_BACKENDS))
@pytest.mark.parametrize("group", list(CASES))
def test_recurrent_matmul_floor(benchmark, group, implementation):
    with pn.use_backend(implementation) as b:
        products = floor_products(b, CASES[group][2])

    def step():
        return wait(products())

    run(benchmark, step, group=group, implementation=f"{implementation} floor",
        baseline=False, input_shape=[])
