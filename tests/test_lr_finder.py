"""lr_finder, the learning-rate range test, on every backend, with a model that implements
exactly the protocol it needs (``train_step``, ``parameters``, ``set_parameters``, ``optimizer``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import optimizers
from portanet.lr_finder import lr_finder
from portanet.schedules import CosineAnnealing


def test_its_home_is_the_training_floor():
    """pn.lr_finder is the function of portanet/lr_finder.py (it left schedules: issue 16)."""
    assert pn.lr_finder is lr_finder
    assert lr_finder.__module__ == "portanet.lr_finder"


class LinearRegression:
    """y = x w + b with the mean squared error, trained by ``optimizer``.

    loss = mean((x w + b - y)^2); dloss/dw = 2/N x^T (x w + b - y), dloss/db = 2 mean(...).
    """

    def __init__(self, case, n_features: int, optimizer):
        self.params = {"w": case.asarray(np.zeros((n_features, 1)), "float64"),
                       "b": case.asarray(np.zeros(1), "float64")}
        self.optimizer = optimizer
        self.xp = case.xp

    def parameters(self):
        return dict(self.params)

    def set_parameters(self, params):
        self.params = dict(params)

    def train_step(self, x, y):
        xp = self.xp
        err = x @ self.params["w"] + self.params["b"] - y
        n = x.shape[0]
        grads = {"w": (2.0 / n) * (x.T @ err), "b": 2.0 * xp.mean(err, axis=0)}
        self.params = self.optimizer.step(self.params, grads)
        return xp.mean(err * err)


def _regression_data(n=256, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * np.array([1.0, 2.0, 0.5, 1.5])
    w = rng.normal(size=(d, 1))
    y = x @ w + 0.3 + 0.01 * rng.normal(size=(n, 1))
    return x, y


def test_lr_finder_finds_a_stable_rate_and_leaves_no_trace(backend):
    """SGD on least squares is stable for lr < 2 / lambda_max(2/N X^T X) (the Hessian's largest
    eigenvalue, with the bias column). The suggested rate must be below that limit, and the test
    must stop once the loss explodes beyond it."""
    x_np, y_np = _regression_data()
    design = np.hstack([x_np, np.ones((len(x_np), 1))])
    limit = 2.0 / np.linalg.eigvalsh(2.0 / len(x_np) * design.T @ design).max()
    opt = optimizers.SGD(0.01, momentum=0.5)
    model = LinearRegression(backend, 4, opt)
    x, y = backend.asarray(x_np, "float64"), backend.asarray(y_np, "float64")
    for _ in range(3):  # some history to be restored: weights, momentum buffers, step count
        model.train_step(x[:32, ...], y[:32, ...])
    before = {k: pn.to_numpy(v).copy() for k, v in model.parameters().items()}
    state_before = {n: {k: pn.to_numpy(a).copy() for k, a in s.items()}
                    for n, s in opt.state_dict()["slots"].items()}

    lrs, losses, suggested = lr_finder(model, x, y, start_lr=1e-5, end_lr=10.0, num_steps=120,
                                       batch_size=32)

    assert len(lrs) == len(losses) < 120, "the loss explodes past the stability limit: stop"
    assert all(type(v) is float for v in lrs + losses + [suggested])
    expected = 1e-5 * (10.0 / 1e-5) ** (np.arange(len(lrs)) / 119)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[-1] > limit / 2, f"stopped at {lrs[-1]:.3g}, long before the limit {limit:.3g}"
    assert 1e-3 < suggested < limit, (suggested, limit)
    # no trace: weights, state, step count and rate are back
    for k, v in model.parameters().items():
        assert_on_backend(v, backend, "float64")
        np.testing.assert_array_equal(pn.to_numpy(v), before[k])
    after = opt.state_dict()
    assert after["step"] == 3 and opt.learning_rate == 0.01
    for n, s in after["slots"].items():
        for k, a in s.items():
            assert_on_backend(a, backend, "float64")
            np.testing.assert_array_equal(pn.to_numpy(a), state_before[n][k])


def test_lr_finder_restores_a_fresh_optimizer_and_a_schedule(backend):
    x_np, y_np = _regression_data(n=64)
    cosine = CosineAnnealing(0.05, decay_steps=100)
    opt = optimizers.Adam(cosine)
    model = LinearRegression(backend, 4, opt)
    x, y = backend.asarray(x_np, "float64"), backend.asarray(y_np, "float64")
    lrs, _, suggested = lr_finder(model, x, y, num_steps=30, batch_size=16, end_lr=1.0)
    assert len(lrs) >= 3 and math.isfinite(suggested)
    assert opt.learning_rate is cosine and opt.iterations == 0
    assert opt.state_dict()["slots"] == {}
    for v in model.parameters().values():
        np.testing.assert_array_equal(pn.to_numpy(v), 0.0)


def test_lr_finder_bad_input(backend):
    x_np, y_np = _regression_data(n=16)
    model = LinearRegression(backend, 4, optimizers.SGD(0.1))
    x, y = backend.asarray(x_np, "float64"), backend.asarray(y_np, "float64")
    with pytest.raises(ValueError, match=r"needs 0 < start_lr < end_lr, received start_lr=1.0"):
        lr_finder(model, x, y, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match=r"same, non-zero number of samples; received "
                                         r"x.shape=\(16, 4\) and y.shape=\(8, 1\)"):
        lr_finder(model, x, y[:8, ...])
    with pytest.raises(TypeError, match=r"lr_finder needs a model with 'train_step'"):
        lr_finder(object(), x, y)
    with pytest.raises(ValueError, match=r"num_steps must be an int >= 3, received 2"):
        lr_finder(model, x, y, num_steps=2)
