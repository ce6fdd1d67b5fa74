"""Full training steps: the 784-512-512-10 MLP (batch 128 and 1024) and the LeNet-5-sized CNN
(batch 128), each next to the PyTorch eager+autograd+torch.optim baseline and the matmul floor.

Every backend times its eager step (``jit_compile=False``); JAX also its compiled step
(``jit_compile=True``, ``jax.jit``) as ``jax jit``, next to its matmul floor compiled as one
program (``jax jit matmul floor``). The compile happens in the untimed first call and is stated
in ``extra_info`` (``compile_s``, ``compilations``); a compilation in the timed rounds fails the
benchmark. (``torch.compile`` takes ~17 s per case on a 2-core machine: its compiled step is in
``portanet bench --jit-compile``.) Every timed call waits for its outputs
(``Backend.synchronize``): the step's loss and updated parameters, the floor's products.

Run one backend per process so thread pools do not fight (``nox -s bench`` does this):

    PORTANET_BENCH_BACKEND=numpy python -m pytest benchmarks --benchmark-enable
    PORTANET_BENCH_BACKEND=torch python -m pytest benchmarks --benchmark-enable

Without the variable every available backend runs in this one process (quick, less fair). The
PyTorch baseline runs in the torch process (or the one process); there ``extra_info["vs_torch"]``
of each step and floor is its median over the baseline's. Threads: all cores
(``PORTANET_BENCH_THREADS`` to change it), pinned for BLAS and torch alike; XLA's pool is fixed
per process by ``_common.py`` (1 thread, for the micro-benchmarks), stated in ``extra_info``
as ``xla_threads``. The full table with all three comparisons comes from ``portanet bench``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _common import RUN_BASELINE, backends, run

import portanet as pn
from portanet import bench

THREADS = int(os.environ.get("PORTANET_BENCH_THREADS", os.cpu_count() or 1))
BASELINE = "torch eager+autograd+optim"
# every backend this process may time, CUDA last
BACKENDS = sorted(backends(), key=lambda b: b == "cupy")
COMPILED = [b for b in BACKENDS if b == "jax"]  # backends whose compiled step is timed too
STEPS = [(b, False) for b in BACKENDS] + [(b, True) for b in COMPILED]
CASES = [("mlp", 128), ("mlp", 1024), ("cnn", 128)]


def _label(name, jit):
    return f"{name} jit" if jit else name


STEP_IDS = [_label(*s).replace(" ", "-") for s in STEPS]


def _data(model, batch, dtype="float32"):
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, *bench.input_shape(model))).astype(dtype)
    return x, rng.integers(0, 10, size=batch).astype(np.int64)


@pytest.mark.parametrize("name, jit", STEPS, ids=STEP_IDS)
@pytest.mark.parametrize("model, batch", CASES)
def test_portanet_step(benchmark, name, jit, model, batch):
    with pn.use_backend(name) as b:
        net = bench.build_portanet(model, "float32", jit_compile=jit)
        x_host, y_host = _data(model, batch)
        x, y = pn.asarray(x_host), pn.asarray(y_host)

        def step():
            # the loss is ready before the update is: wait for the new parameters too
            b.synchronize((net.train_step(x, y), net.parameters()))

        extra = {"executor": net.engine.executor}
        if jit:
            step()  # compiles: untimed, and stated
            extra.update(compile_s=net.engine.compile_seconds,
                         compilations=net.engine.compilations)
        run(benchmark, step, group=f"{model} step b{batch}", implementation=_label(name, jit),
            **extra)
        if jit:
            assert net.engine.compilations == extra["compilations"], (
                f"the compiled step compiled again during the timed rounds "
                f"({extra['compilations']} -> {net.engine.compilations} compilations): "
                "its time would include compiling")


@pytest.mark.parametrize("name, jit", STEPS, ids=STEP_IDS)
@pytest.mark.parametrize("model, batch", CASES)
def test_matmul_floor(benchmark, name, jit, model, batch):
    """The step's matmuls alone (forward, dW, dX) on the same backend: the floor (for the
    compiled step, the matmuls compiled as one program)."""
    with pn.use_backend(name) as b:
        products = bench.floor_products(bench.floor_shapes(model, batch), b, "float32",
                                        compiled=jit)

        def matmuls():
            b.synchronize(products())

        run(benchmark, matmuls, group=f"{model} step b{batch}",
            implementation=f"{_label(name, jit)} matmul floor")


@pytest.mark.skipif(not RUN_BASELINE, reason="the baseline runs in the torch process")
@pytest.mark.parametrize("model, batch", CASES)
def test_torch_baseline_step(benchmark, model, batch):
    torch = pytest.importorskip("torch")
    step = bench.build_torch(model, "float32", "cpu")
    x_host, y_host = _data(model, batch)
    x, y = torch.from_numpy(x_host), torch.from_numpy(y_host)
    run(benchmark, lambda: step(x, y), group=f"{model} step b{batch}", implementation=BASELINE,
        baseline=True)
