"""Optimizer step time for a ~1M-parameter model on every available CPU backend (and CuPy where a
GPU is usable), vs torch.optim on the CPU.

The model is four weight matrices and their biases, 1000-500-500-500-10 (1,006,510 parameters,
float32); the gradients are fixed random arrays. One timed call is one full update of all eight
arrays: ``params = opt.step(params, grads)`` for portanet, ``opt.step()`` on tensors with
``.grad`` set for the baseline, ``torch.optim.<Name>(..., foreach=True)`` (the multi-tensor
implementation, torch's fastest on CPU).

Groups: plain SGD, SGD with momentum 0.9, Adam (the three updates most training runs use) and
Adam with global-norm clipping. Each backend runs the portable path and, where arrays are
writeable, the in-place path (``<backend>+inplace``, ``inplace=True``) and the in-place path over
one buffer of all eight arrays (``<backend>+inplace+flat``, ``flat=True``, optimizers/flat.py:
a dozen library calls per update instead of a dozen per array, plus one copy of the gradients;
the default only where a call costs more than that copy, a GPU). ``extra_info["vs_torch"]``
is each implementation's median divided by the baseline's; the session ends with the ratio
table.

Threads: ONE, everywhere (BLAS/OpenMP, torch and XLA), so the ratios compare implementations,
not thread pools; see ``_common.py``. Timed functions wait for JAX's asynchronous dispatch
before returning. ``PORTANET_BENCH_BACKEND`` picks one backend.

Run (collected only when asked for; the default test run collects ``tests/``):

    python -m pytest benchmarks/test_bench_optimizers.py --benchmark-enable
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _common import CPU_BACKENDS, backends, run, wait, with_baseline

import portanet as pn
from portanet import optimizers

THREADS = 1
BASELINE = "torch.optim(foreach)"
BACKENDS = backends((*CPU_BACKENDS, "cupy"))  # cupy: where a GPU is usable (the flat rows)
# The in-place path where arrays are writeable (JAX's are not: it would time the portable path).
INPLACE = [f"{b}+inplace" for b in BACKENDS if b != "jax"]
FLAT = [f"{b}+flat" for b in INPLACE]
IMPLEMENTATIONS = with_baseline(BASELINE, [*BACKENDS, *INPLACE, *FLAT])

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


def _host_arrays(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(s) * 0.01).astype(np.float32) for n, s in SHAPES.items()}


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
        backend, *options = implementation.split("+")
        with pn.use_backend(backend):
            state = {"params": {n: pn.asarray(v) for n, v in params_host.items()}}
            grads = {n: pn.asarray(v) for n, v in grads_host.items()}
        opt = make()
        opt.inplace, opt.flat = "inplace" in options, "flat" in options

        def step():
            state["params"] = wait(opt.step(state["params"], grads))

    run(benchmark, step, group=f"{group} ({N_PARAMETERS:,} params)",
        implementation=implementation, baseline=implementation == BASELINE,
        dtype="float32", parameters=N_PARAMETERS)
