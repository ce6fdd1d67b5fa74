"""Full training steps: the 784-512-512-10 MLP (batch 128 and 1024) and the LeNet-5-sized CNN
(batch 128), each next to the PyTorch eager+autograd+torch.optim baseline and the matmul floor.

Run one backend per process so thread pools do not fight (``nox -s bench`` does this):

    PORTANET_BENCH_BACKEND=numpy python -m pytest benchmarks --benchmark-enable
    PORTANET_BENCH_BACKEND=torch python -m pytest benchmarks --benchmark-enable

Without the variable every available backend runs in this one process (quick, less fair). The
PyTorch baseline runs in the torch process (or the one process). Threads: all cores, pinned for
BLAS and torch alike (stated in the JSON's machine_info via ``extra_info``). The ratio table with
all three comparisons comes from ``portanet bench``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import portanet as pn
from portanet import bench

THREADS = int(os.environ.get("PORTANET_BENCH_THREADS", os.cpu_count() or 1))
ONLY = os.environ.get("PORTANET_BENCH_BACKEND")
BACKENDS = [ONLY] if ONLY else [b for b in pn.available_backends() if b != "cupy"] + (
    ["cupy"] if "cupy" in pn.available_backends() else [])
CASES = [("mlp", 128), ("mlp", 1024), ("cnn", 128)]


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    if "torch" in BACKENDS:
        import torch  # noqa: F401  (so its pool is pinned as well)
    return bench.set_threads(THREADS)


def _data(model, batch, dtype="float32"):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, *bench.input_shape(model))).astype(dtype)
    return x, rng.integers(0, 10, size=batch).astype(np.int64)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("model, batch", CASES)
def test_portanet_step(benchmark, name, model, batch, pinned_threads):
    benchmark.group = f"{model} step b{batch}"
    benchmark.extra_info.update(pinned_threads)
    with pn.use_backend(name) as b:
        net = bench.build_portanet(model, "float32")
        x_host, y_host = _data(model, batch)
        x, y = pn.asarray(x_host), pn.asarray(y_host)

        def step():
            net.train_step(x, y)
            b.synchronize()

        benchmark.pedantic(step, warmup_rounds=3, rounds=20, iterations=1)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("model, batch", CASES)
def test_matmul_floor(benchmark, name, model, batch, pinned_threads):
    """The step's matmuls alone (forward, dW, dX) on the same backend: the floor."""
    benchmark.group = f"{model} step b{batch}"
    with pn.use_backend(name) as b:
        rng = np.random.default_rng(0)
        pairs = [(pn.asarray(rng.standard_normal((m, k)), dtype="float32"),
                  pn.asarray(rng.standard_normal((k, n)), dtype="float32"))
                 for m, k, n in bench.floor_shapes(model, batch)]

        def matmuls():
            for a, w in pairs:
                b.xp.matmul(a, w)
            b.synchronize()

        benchmark.pedantic(matmuls, warmup_rounds=3, rounds=20, iterations=1)


@pytest.mark.skipif(ONLY not in (None, "torch"), reason="the baseline runs in the torch process")
@pytest.mark.parametrize("model, batch", CASES)
def test_torch_baseline_step(benchmark, model, batch, pinned_threads):
    torch = pytest.importorskip("torch")
    benchmark.group = f"{model} step b{batch}"
    step = bench.build_torch(model, "float32", "cpu")
    x_host, y_host = _data(model, batch)
    x, y = torch.from_numpy(x_host), torch.from_numpy(y_host)
    benchmark.pedantic(lambda: step(x, y), warmup_rounds=3, rounds=20, iterations=1)
