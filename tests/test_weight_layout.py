"""Memory layout of Dense kernels (``Adapter.weight_order``) and ``Adapter.copy_like``.

The layout never changes a value; these tests check that it is the backend's choice wherever a
kernel is made or replaced (build, set_parameters, moving backends), that the gradient and the
optimizer's state follow it (the in-place update then reads them in one pass), and that the
column-order gradient formula (dz^T @ x)^T gives what the row-order x^T @ dz gives on NumPy.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend

import portanet as pn
from portanet import layers as L
from portanet.backend import adapter_of


def _by_columns(a) -> bool:
    """Whether the 2-D array ``a`` is stored column by column (and not also row by row)."""
    host = pn.to_numpy(a)  # numpy and torch keep their strides in to_numpy
    return bool(host.flags.f_contiguous and not host.flags.c_contiguous)


def _expected_by_columns(a) -> bool:
    return adapter_of(a).weight_order == "F"


def _model(dtype="float64", momentum=0.9):
    return pn.Sequential([L.Dense(5, 4, activation="relu"), L.Dense(4, 3)],
                         loss=pn.losses.SoftmaxCrossEntropy(),
                         optimizer=pn.optimizers.SGD(0.1, momentum=momentum), seed=3,
                         dtype=dtype)


def _batch(backend, dtype="float64"):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 5))
    y = rng.integers(0, 3, size=6)
    return backend.asarray(x, dtype), backend.asarray(y, "int64")


def _kernels(model) -> dict:
    return {k: v for k, v in model.parameters().items() if k.endswith("kernel")}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_copy_like_takes_dtype_and_layout_of_like_and_shares_nothing(backend, dtype):
    rng = np.random.default_rng(1)
    a_host = rng.standard_normal((4, 3))
    a = backend.asarray(a_host, "float64")
    adapter = adapter_of(a)
    like = adapter.in_weight_order(backend.asarray(np.zeros((4, 3)), dtype))
    copy = adapter.copy_like(a, like)
    assert_on_backend(copy, backend, dtype)
    assert_matches(copy, a_host.astype(dtype), backend, dtype, rtol=0, atol=0)
    assert _by_columns(copy) == _by_columns(like) == _expected_by_columns(like)
    assert copy is not a
    if dtype == "float64" and adapter.name != "jax":  # JAX arrays cannot be written
        copy[...] = 0.0
        np.testing.assert_array_equal(pn.to_numpy(a), a_host)  # the source is untouched


def test_dense_kernel_gradient_and_optimizer_state_follow_weight_order(backend):
    model = _model()
    x, y = _batch(backend)
    for name, w in _kernels(model).items():
        assert _by_columns(w) == _expected_by_columns(w), name
    _, grads = model.value_and_gradients(x, y)
    for name, w in _kernels(model).items():
        assert _by_columns(grads[name]) == _by_columns(w), name
    model.train_step(x, y)  # the in-place update keeps the layout
    state = model.optimizer.state_dict()["slots"]
    for name, w in _kernels(model).items():
        assert _by_columns(w) == _expected_by_columns(w), name
        assert _by_columns(state[name]["momentum_buffer"]) == _by_columns(w), name


def test_column_order_gradient_equals_numpy_row_order_gradient(backend):
    # Two formulas for dL/dW: (dz^T @ x)^T where the backend keeps kernels by column (torch),
    # x^T @ dz on NumPy. Same model, same float64 batch: the gradients agree to rounding.
    reference = _model().to("numpy")
    rng = np.random.default_rng(0)
    x_host, y_host = rng.standard_normal((6, 5)), rng.integers(0, 3, size=6)
    _, expected = reference.value_and_gradients(np.asarray(x_host), np.asarray(y_host))
    model = _model()
    x, y = _batch(backend)
    _, grads = model.value_and_gradients(x, y)
    for name, g in expected.items():
        assert_matches(grads[name], pn.to_numpy(g), backend, "float64", err_msg=name)


def test_set_parameters_and_load_keep_the_backend_layout(backend, tmp_path):
    model = _model()
    rng = np.random.default_rng(2)
    fresh = {k: backend.asarray(rng.standard_normal(tuple(v.shape)), "float64")
             for k, v in model.parameters().items()}  # C-ordered, as from a checkpoint
    model.set_parameters(fresh)
    for name, w in _kernels(model).items():
        assert _by_columns(w) == _expected_by_columns(w), name
        assert_matches(w, pn.to_numpy(fresh[name]), backend, "float64", rtol=0, atol=0)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = pn.load(path, backend=backend.name, device=backend.device)
    for name, w in _kernels(loaded).items():
        assert _by_columns(w) == _expected_by_columns(w), name
        assert_matches(w, pn.to_numpy(fresh[name]), backend, "float64", rtol=0, atol=0)


def test_optimizer_state_loaded_from_numpy_takes_the_parameter_layout(backend):
    model = _model()
    x, y = _batch(backend)
    model.train_step(x, y)
    saved = model.optimizer.state_dict()
    host = {"step": saved["step"], "config": saved["config"],
            "slots": {n: {k: np.ascontiguousarray(pn.to_numpy(v)) for k, v in s.items()}
                      for n, s in saved["slots"].items()}}
    model.optimizer.load_state_dict(host)
    model.train_step(x, y)  # the first step after a load moves the state next to the parameters
    state = model.optimizer.state_dict()["slots"]
    for name, w in _kernels(model).items():
        assert_on_backend(state[name]["momentum_buffer"], backend, "float64")
        assert _by_columns(state[name]["momentum_buffer"]) == _by_columns(w), name


def test_moving_a_model_lays_kernels_out_for_the_new_backend(backend):
    model = _model().to("numpy")
    model.to(backend.name, backend.device)
    for name, w in _kernels(model).items():
        assert_on_backend(w, backend, "float64")
        assert _by_columns(w) == _expected_by_columns(w), name
