"""Whole training steps of sequence models, eager and compiled: ``model.train_step`` (forward,
MSE loss, backward, SGD update) against the same step written in PyTorch in the same run.

=====================  ==========================================  ===========================
group                  portanet                                    baseline (torch eager)
=====================  ==========================================  ===========================
LSTM step b64 T50      ``Sequential([LSTM(64, 128,                 ``nn.LSTM(64, 128,
64->128                return_sequences=True)])``                  batch_first=True)``
Transformer step b32   ``Sequential([TransformerEncoderBlock(128,  ``nn.TransformerEncoderLayer
T64 E128 h4 ff512      4, 512, dropout=0)])``                      (norm_first=True, gelu)``
=====================  ==========================================  ===========================

Each backend runs eagerly; ``jax-jit`` is the JAX backend with ``jit_compile=True`` (the engine's
``jax.jit`` of the whole step, state donated; compile time is outside the timed rounds: the
first call compiles). Every step waits for its loss and new parameters. Threads: one.

Run (collected only when asked for):

    python -m pytest benchmarks/test_bench_sequence_steps.py --benchmark-enable

Measured figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet import layers as L

BASELINE = "torch-autograd"
PORTANET = backends(CPU_BACKENDS)
IMPLEMENTATIONS = with_baseline(BASELINE, PORTANET + (["jax-jit"] if "jax" in PORTANET else []))

GROUPS = {  # group -> (input shape, output width, portanet layer, torch module)
    "LSTM step b64 T50 64->128": ((64, 50, 64), 128,
                                  lambda: L.LSTM(64, 128, return_sequences=True),
                                  lambda nn: nn.LSTM(64, 128, batch_first=True)),
    "Transformer step b32 T64 E128": ((32, 64, 128), 128,
                                      lambda: L.TransformerEncoderBlock(128, 4, 512, dropout=0.0),
                                      lambda nn: nn.TransformerEncoderLayer(
                                          128, 4, 512, dropout=0.0, activation="gelu",
                                          batch_first=True, norm_first=True)),
}


def _data(shape, width):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal((*shape[:2], width)).astype(np.float32)
    return x, y


def _portanet_step(implementation, group):
    shape, width, make, _ = GROUPS[group]
    backend = "jax" if implementation == "jax-jit" else implementation
    with pn.use_backend(backend):
        model = pn.Sequential([make()], loss="mse", optimizer=pn.optimizers.SGD(1e-3), seed=0,
                              jit_compile=implementation == "jax-jit")
        x, y = (pn.asarray(a) for a in _data(shape, width))

    def step():
        loss = model.train_step(x, y)
        return wait((loss, model.parameters()))

    return step


def _torch_step(group):
    torch = pytest.importorskip("torch")
    shape, width, _, make = GROUPS[group]
    module = make(torch.nn)
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-3)
    x, y = (torch.from_numpy(a) for a in _data(shape, width))

    def step():
        optimizer.zero_grad()
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.mse_loss(out, y)
        loss.backward()
        optimizer.step()
        return loss

    return step


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_sequence_train_step(benchmark, group, implementation):
    step = _torch_step(group) if implementation == BASELINE else \
        _portanet_step(implementation, group)
    run(benchmark, step, group=group, implementation=implementation,
        baseline=implementation == BASELINE)
