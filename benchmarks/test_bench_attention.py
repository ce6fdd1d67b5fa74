"""Attention benchmarks: forward + backward of the Transformer encoder block and of multi-head
attention on every CPU backend, with the same PyTorch module (forward + autograd backward) as
the baseline in the same run.

===============================  ==================================  ==============================
group                            portanet                            baseline
===============================  ==================================  ==============================
TransformerEncoderBlock          ``TransformerEncoderBlock(128, 4,   ``nn.TransformerEncoderLayer(
E128 h4 ff512 b32 T64            512, dropout=0.0)``                 128, 4, 512, dropout=0.0,
                                                                     activation="gelu",
                                                                     norm_first=True,
                                                                     batch_first=True)``
MultiHeadAttention               ``MultiHeadAttention(128, 4)``      ``nn.MultiheadAttention(128,
E128 h4 b32 T64                                                      4, batch_first=True)``,
                                                                     ``need_weights=False``
===============================  ==================================  ==============================

Both sides compute the output, the input gradient and every parameter gradient, in float32,
on (32, 64, 128) inputs. The portanet layer gets the torch module's weights (``from_torch``),
so both compute the same function. ``extra_info["vs_torch"]`` holds each backend's median over
the baseline's; the session ends with the ratio table. The goal (DESIGN.md, "Performance") is
the block within 1.5x PyTorch eager on numpy and torch.

Threads: ``PORTANET_BENCH_THREADS`` (default 1) for BLAS/OpenMP and torch alike; see
``_common.py``. ``PORTANET_BENCH_BACKEND`` picks one backend (one process per backend is the
fair way: ``nox -s bench``).

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_attention.py --benchmark-enable
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet.layers.attention import MultiHeadAttention
from portanet.layers.transformer import TransformerEncoderBlock

THREADS = int(os.environ.get("PORTANET_BENCH_THREADS", "1"))
BASELINE = "torch-autograd"
IMPLEMENTATIONS = with_baseline(BASELINE, backends(CPU_BACKENDS))
N, T, E, HEADS, FF = 32, 64, 128, 4, 512
ROUNDS = {"array_api_strict": 5, "jax": 10}  # the slow eager ones: fewer rounds


def _torch_module(torch, group):
    torch.manual_seed(0)
    if group.startswith("TransformerEncoderBlock"):
        return torch.nn.TransformerEncoderLayer(E, HEADS, FF, dropout=0.0, activation="gelu",
                                                norm_first=True, batch_first=True)
    mha = torch.nn.MultiheadAttention(E, HEADS, batch_first=True)
    return lambda x: mha(x, x, x, need_weights=False)[0], mha


def _modules(torch, group):
    made = _torch_module(torch, group)
    return made if isinstance(made, tuple) else (made, made)


GROUPS = {
    f"TransformerEncoderBlock E{E} h{HEADS} ff{FF} b{N} T{T}": TransformerEncoderBlock,
    f"MultiHeadAttention E{E} h{HEADS} b{N} T{T}": MultiHeadAttention,
}


def _portanet_step(implementation, layer_class, module, x_host):
    with pn.use_backend(implementation):
        layer = layer_class.from_torch(module)
        x = pn.asarray(x_host)
        dy = pn.asarray(np.ones(x_host.shape, dtype=np.float32))

    def step():
        y, backprop = layer.forward(x, training=True)
        dx = backprop(dy)
        grads = layer.named_gradients()
        return wait((dx, y, grads))

    return step


def _torch_step(torch, call, module, x_host):
    x = torch.from_numpy(x_host).requires_grad_()
    dy = torch.ones_like(x)
    params = list(module.parameters())

    def step():
        y = call(x)
        return torch.autograd.grad(y, [x, *params], dy)

    return step


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_attention_forward_backward(benchmark, group, implementation):
    torch = pytest.importorskip("torch")  # the weights come from the torch module
    call, module = _modules(torch, group)
    x_host = np.random.default_rng(0).standard_normal((N, T, E)).astype(np.float32)
    if implementation == BASELINE:
        step = _torch_step(torch, call, module, x_host)
    else:
        step = _portanet_step(implementation, GROUPS[group], module, x_host)
    run(benchmark, step, group=group, implementation=implementation,
        baseline=implementation == BASELINE, rounds=ROUNDS.get(implementation, 20),
        input_shape=[N, T, E])
