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
the baseline's median, and the session ends with the ratio table.

Threads: ONE everywhere (BLAS/OpenMP, torch and XLA), so ratios compare implementations rather
than thread pools; see ``_common.py``. JAX results are waited for inside the timed function.
Without torch the baselines skip and the backends still run. ``PORTANET_BENCH_BACKEND`` picks
one backend.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_layers.py --benchmark-enable
"""

from __future__ import annotations

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet import bench
from portanet import layers as L

THREADS = 1
BASELINE = "torch-autograd"
IMPLEMENTATIONS = with_baseline(BASELINE, backends(CPU_BACKENDS))


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
        return wait((dx, y, layer.gradients))

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
    if implementation == BASELINE:
        torch = pytest.importorskip("torch")
        step = _torch_step(make_torch(torch), x_host)
    else:
        step = _portanet_step(implementation, make_layer(), x_host)
    run(benchmark, step, group=group, implementation=implementation,
        baseline=implementation == BASELINE, input_shape=list(shape))


# The floor of each group with matrix products: the same products alone on the backend
# (forward, weight gradient, input gradient; a convolution as its im2col-sized GEMMs), laid out
# as Dense lays them out (bench.floor_products).
FLOOR_SHAPES = {
    "Dense 784->512 b128": [("forward", 128, 784, 512), ("weight_gradient", 128, 784, 512),
                            ("input_gradient", 128, 784, 512)],
    "Conv2D 6->16 5x5 b128": [(product, 128 * 10 * 10, 6 * 25, 16) for product in
                              ("forward", "weight_gradient", "input_gradient")],
}


@pytest.mark.parametrize("implementation", backends(CPU_BACKENDS))
@pytest.mark.parametrize("group", list(FLOOR_SHAPES))
def test_matmul_floor(benchmark, group, implementation):
    with pn.use_backend(implementation) as b:
        products = bench.floor_products(FLOOR_SHAPES[group], b, "float32")

    def step():
        return wait(products())

    run(benchmark, step, group=group, implementation=f"{implementation} floor",
        baseline=False, input_shape=[])
