"""Layers on every backend: finite-difference gradients (float64), PyTorch parity (float64 and
float32), shape/dtype errors, configs.

Finite differences: every layer's input gradient and every parameter gradient, for each
stride/padding/dilation configuration offered, against central differences of
L = sum(layer(x) * r) with a fixed random r (so dL/dy = r). Shapes are tiny on purpose: each
element costs two forward passes, and JAX dispatches each op eagerly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import (
    assert_matches,
    assert_on_backend,
    assert_parameter_gradients,
    numerical_gradient,
    rand,
    relative_error,
    round_to,
    set_params,
    torch_run,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from portanet import layers as L

FD_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def check_gradients(layer, x_np, case, training=False, reset=None, seed=1):
    """Compare backprop's dL/dx and dL/dp with central differences of sum(y * r), float64."""
    x_np = np.asarray(x_np, dtype=np.float64)

    def run(xn):
        if reset is not None:
            reset()
        return layer.forward(case.asarray(xn, "float64"), training)

    y, backprop = run(x_np)
    assert_on_backend(y, case, "float64")
    r = np.random.default_rng(seed).normal(size=tuple(y.shape))
    dx = backprop(case.asarray(r, "float64"))
    assert_on_backend(dx, case, "float64")
    assert tuple(dx.shape) == x_np.shape
    grads = {k: case.to_numpy(v) for k, v in layer.named_gradients().items()}

    def loss_of_x(xn):
        return float(np.sum(case.to_numpy(run(xn)[0]) * r))

    err = relative_error(case.to_numpy(dx), numerical_gradient(loss_of_x, x_np))
    assert err < FD_TOL, f"input gradient: relative error {err:.2e}"

    params = {k: case.to_numpy(v).copy() for k, v in layer.named_parameters().items()}
    assert set(grads) == set(params), f"gradients for {sorted(grads)}, params {sorted(params)}"
    assert_parameter_gradients(
        grads, params, lambda name, p: layer.set_named_parameters({name: case.asarray(p)}),
        lambda: loss_of_x(x_np), FD_TOL)


# ---------------------------------------------------------------------------------------------
# Dense
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation, use_bias, shape", [
    (None, True, (3, 4)), ("tanh", True, (3, 4)), (None, False, (2, 2, 4)),
    ("relu", True, (3, 4)),
])
def test_dense_gradients(backend, activation, use_bias, shape):
    layer = L.Dense(4, 3, activation=activation, use_bias=use_bias).build(seed=0, dtype="float64")
    check_gradients(layer, rand(*shape), backend)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dense_matches_torch_linear(backend, dtype):
    torch = pytest.importorskip("torch")
    x, w, b = (round_to(a, dtype) for a in (rand(5, 4), rand(4, 3, seed=1), rand(3, seed=2)))
    r = rand(5, 3, seed=3)
    ref_y, (ref_dx, ref_dw, ref_db) = torch_run(
        lambda x, w, b: torch.relu(torch.nn.functional.linear(x, w.T, b)), [x, w, b], r)
    layer = L.Dense(4, 3, activation="relu").build(dtype=dtype)
    set_params(layer, {"kernel": w, "bias": b}, backend, dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(dx, ref_dx, backend, dtype)
    assert_matches(layer.gradients["kernel"], ref_dw, backend, dtype)
    assert_matches(layer.gradients["bias"], ref_db, backend, dtype)


def test_dense_bad_input(backend):
    layer = L.Dense(784, 10).build(seed=0)
    with pytest.raises(ValueError, match=r"Dense expected input with 784 features, received "
                                         r"shape \(32, 777\)"):
        layer.forward(backend.asarray(np.zeros((32, 777)), "float32"))
    with pytest.raises(TypeError, match="float32 parameters, received input of dtype float64"):
        layer.forward(backend.asarray(np.zeros((2, 784)), "float64"))
    with pytest.raises(ValueError, match="out_features must be a positive int, received "
                                         "out_features=0"):
        L.Dense(3, 0)
    with pytest.raises(ValueError, match="unknown activation 'relu7'"):
        L.Dense(3, 2, activation="relu7")
    with pytest.raises(ValueError, match="unknown initializer 'glorious'"):
        L.Dense(3, 2, kernel_initializer="glorious")


def test_closures_do_not_share_state(backend):
    """Two forwards, then the two backprops in reverse order: each gives its own gradients."""
    layer = L.Dense(3, 2, activation="tanh").build(seed=0, dtype="float64")
    x1, x2, r = rand(4, 3, seed=1), rand(4, 3, seed=2), rand(4, 2, seed=3)
    _, bp1 = layer.forward(backend.asarray(x1, "float64"))
    _, bp2 = layer.forward(backend.asarray(x2, "float64"))
    bp2(backend.asarray(r, "float64"))
    dx1 = bp1(backend.asarray(r, "float64"))
    w = backend.to_numpy(layer.parameters["kernel"])
    dz = r * (1 - np.tanh(x1 @ w) ** 2)
    assert_matches(dx1, dz @ w.T, backend, "float64")
    assert_matches(layer.gradients["kernel"], x1.T @ dz, backend, "float64")


# ---------------------------------------------------------------------------------------------
# Conv2D
# ---------------------------------------------------------------------------------------------
# Every option value appears at least once: int / pair / "valid" / "same" padding (odd and even
# kernels, stride 1 and 2), strides 1, 2, 3 and a pair, dilation 1, 2 and a pair, with and
# without bias and activation.
CONV_CONFIGS = [
    dict(kernel_size=3, activation="tanh"),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, stride=2, padding="same"),
    dict(kernel_size=2, padding="same"),
    dict(kernel_size=3, dilation=2, padding="same"),
    dict(kernel_size=2, stride=3, dilation=(2, 1), padding=2, use_bias=False),
    dict(kernel_size=2, stride=2, padding="valid"),
]
CONV_SHAPE = (1, 2, 5, 5)  # one input shape for all conv tests: JAX compiles each shape once


def _conv_id(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=_conv_id)
def test_conv2d_gradients(backend, cfg):
    layer = L.Conv2D(2, 2, **cfg).build(seed=0, dtype="float64")
    check_gradients(layer, rand(*CONV_SHAPE), backend)


def torch_conv(layer, x, w, b):
    """PyTorch's conv2d with the layer's geometry; "same" and asymmetric pads via F.pad."""
    torch = pytest.importorskip("torch")
    (top, bottom), (left, right) = layer.pads(x.shape[2], x.shape[3])
    xpad = torch.nn.functional.pad(x, (left, right, top, bottom))
    z = torch.nn.functional.conv2d(xpad, w, b, stride=layer.stride, dilation=layer.dilation)
    return torch.tanh(z) if layer.activation is not None else z


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=_conv_id)
def test_conv2d_matches_torch(backend, cfg, dtype):
    layer = L.Conv2D(2, 2, **cfg).build(seed=0, dtype=dtype)
    x = round_to(rand(*CONV_SHAPE, seed=6), dtype)
    params = {"kernel": round_to(rand(2, 2, *layer.kernel_size, seed=1), dtype)}
    if layer.use_bias:
        params["bias"] = round_to(rand(2, seed=2), dtype)
    set_params(layer, params, backend, dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    r = rand(*y.shape, seed=3)
    inputs = [x, params["kernel"]] + ([params["bias"]] if layer.use_bias else [])
    ref_y, ref_grads = torch_run(
        lambda x, w, *b: torch_conv(layer, x, w, b[0] if b else None), inputs, r)
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(dx, ref_grads[0], backend, dtype)
    assert_matches(layer.gradients["kernel"], ref_grads[1], backend, dtype)
    if layer.use_bias:
        assert_matches(layer.gradients["bias"], ref_grads[2], backend, dtype)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.tuples(st.integers(3, 9), st.integers(3, 9)), k=st.integers(1, 3),
       s=st.integers(1, 3), d=st.integers(1, 2), p=st.sampled_from([0, 1, "same", "valid"]))
def test_conv2d_property_matches_torch(backend, size, k, s, d, p):
    """Output shape and values agree with PyTorch for random geometries (float64)."""
    torch = pytest.importorskip("torch")
    pad = p if isinstance(p, int) else 0
    # an input smaller than the dilated kernel is rejected (test_conv2d_bad_input)
    assume(p == "same" or min(size) + 2 * pad >= d * (k - 1) + 1)
    layer = L.Conv2D(2, 3, k, stride=s, padding=p, dilation=d).build(seed=1, dtype="float64")
    x = rand(1, 2, *size)
    y, _ = layer.forward(backend.asarray(x, "float64"))
    w = torch.tensor(backend.to_numpy(layer.parameters["kernel"]))
    ref = torch_conv(layer, torch.tensor(x), w, None).numpy()
    assert tuple(y.shape) == ref.shape
    assert layer.output_shape((2, *size)) == ref.shape[1:]
    assert_matches(y, ref, backend, "float64")


def test_conv2d_bad_input(backend):
    layer = L.Conv2D(3, 4, 3).build(seed=0)
    with pytest.raises(ValueError, match=r"C=3 \(NCHW\), received shape \(2, 5, 5, 3\)"):
        layer.forward(backend.asarray(np.zeros((2, 5, 5, 3)), "float32"))
    with pytest.raises(ValueError, match=r"received shape \(3, 5, 5\)"):
        layer.forward(backend.asarray(np.zeros((3, 5, 5)), "float32"))
    with pytest.raises(ValueError, match=r"spatial size \(2, 2\).*smaller than the dilated"):
        layer.forward(backend.asarray(np.zeros((1, 3, 2, 2)), "float32"))
    with pytest.raises(ValueError, match="padding must be an int, a pair, 'valid' or 'same'"):
        L.Conv2D(1, 1, 3, padding="full")
    with pytest.raises(ValueError, match=r"stride must be an int >= 1 or a pair of them, "
                                         r"received stride=0"):
        L.Conv2D(1, 1, 3, stride=0)
    with pytest.raises(ValueError, match=r"kernel_size .* received kernel_size=\(1, 2, 3\)"):
        L.Conv2D(1, 1, (1, 2, 3))


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
POOL_CONFIGS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1)),
]
POOL_SHAPE = (1, 2, 5, 5)


def _tie_free(shape, seed=0):
    """Distinct values far apart (no two within 1e-3), so finite differences never cross a tie."""
    n = math.prod(shape)
    return np.random.default_rng(seed).permutation(n).reshape(shape) * 0.01 + 0.1


@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=_conv_id)
@pytest.mark.parametrize("cls", [L.MaxPool2D, L.AvgPool2D])
def test_pool_gradients(backend, cls, cfg):
    check_gradients(cls(**cfg), _tie_free(POOL_SHAPE), backend)


def test_avgpool_exclude_pad_gradients(backend):
    layer = L.AvgPool2D(3, stride=2, padding=1, count_include_pad=False)
    check_gradients(layer, rand(*POOL_SHAPE), backend)


def test_global_avg_pool(backend):
    x = rand(2, 3, 4, 5)
    y, _ = L.GlobalAvgPool2D().forward(backend.asarray(x, "float64"))
    assert_matches(y, x.mean(axis=(2, 3)), backend, "float64")
    check_gradients(L.GlobalAvgPool2D(), rand(2, 2, 3, 2), backend)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cfg", POOL_CONFIGS, ids=_conv_id)
@pytest.mark.parametrize("kind", ["max", "avg", "avg_exclude_pad"])
def test_pool_matches_torch(backend, kind, cfg, dtype):
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    if kind == "max":
        layer = L.MaxPool2D(**cfg)
        ref_fn = lambda x: fn.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding)  # noqa: E731
        x = round_to(_tie_free(POOL_SHAPE, seed=4) - 0.5, dtype)  # tie-free, mixed signs
    else:
        include = kind == "avg"
        layer = L.AvgPool2D(**cfg, count_include_pad=include)
        ref_fn = lambda x: fn.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding,  # noqa: E731
                                         count_include_pad=include)
        x = round_to(rand(*POOL_SHAPE), dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    r = rand(*y.shape, seed=5)
    ref_y, (ref_dx,) = torch_run(ref_fn, [x], r)
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(backprop(backend.asarray(r, dtype)), ref_dx, backend, dtype)


def test_maxpool_ties_route_to_first_maximum(backend):
    """Equal values in a window: all the gradient goes to the first (row-major) maximum."""
    x = np.array([[[[1.0, 1.0, 0.0, 2.0],
                    [1.0, 1.0, 2.0, 2.0],
                    [5.0, 3.0, 4.0, 4.0],
                    [3.0, 5.0, 4.0, 4.0]]]])
    expected = np.array([[[[1.0, 0.0, 0.0, 2.0],
                           [0.0, 0.0, 0.0, 0.0],
                           [3.0, 0.0, 4.0, 0.0],
                           [0.0, 0.0, 0.0, 0.0]]]])
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y, backprop = L.MaxPool2D(2).forward(backend.asarray(x, "float32"))
    assert_matches(y, [[[[1.0, 2.0], [5.0, 4.0]]]], backend, "float32", atol=0)
    assert_matches(backprop(backend.asarray(dy, "float32")), expected, backend, "float32", atol=0)
    # Overlapping windows (stride 1) on a constant image: each window's gradient goes to its
    # own top-left pixel, so the gradient is dy padded with zeros on the bottom/right.
    y, backprop = L.MaxPool2D(2, stride=1).forward(backend.asarray(np.ones((1, 1, 3, 3)),
                                                                   "float64"))
    dy = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    assert_matches(backprop(backend.asarray(dy, "float64")),
                   np.pad(dy, ((0, 0), (0, 0), (0, 1), (0, 1))), backend, "float64", atol=0)


def test_maxpool_ties_match_torch(backend):
    """PyTorch's CPU kernel makes the same choice on tied data."""
    x = np.round(rand(2, 2, 6, 6) * 2) / 2  # many ties
    x[0, 0] = 1.0
    r = rand(2, 2, 3, 3, seed=1)
    torch = pytest.importorskip("torch")
    ref_y, (ref_dx,) = torch_run(lambda t: torch.nn.functional.max_pool2d(t, 2), [x], r)
    y, backprop = L.MaxPool2D(2).forward(backend.asarray(x, "float64"))
    assert_matches(y, ref_y, backend, "float64")
    assert_matches(backprop(backend.asarray(r, "float64")), ref_dx, backend, "float64")


def test_window_layers_batches_and_strided_inputs_match_torch(backend):
    """A batch of several images, passed as a non-contiguous NCHW view, through Conv2D ->
    MaxPool2D -> AvgPool2D, forward and backward, agrees with PyTorch.

    The window layers work internally on a (C, H, W, N) view with the batch innermost; the
    per-layer tests above use one image, so this checks that images never mix and that any
    strided input layout (here a transposed CHWN array, as one window layer hands the next)
    gives the same numbers.
    """
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    conv = L.Conv2D(2, 3, 3, stride=(1, 2), padding="same", dilation=(2, 1),
                    activation="tanh").build(seed=0, dtype="float64")
    pool, avg = L.MaxPool2D(2, stride=1, padding=1), L.AvgPool2D(2, count_include_pad=False)
    x = rand(3, 2, 7, 6, seed=7)
    params = {"kernel": rand(3, 2, 3, 3, seed=8), "bias": rand(3, seed=9)}
    set_params(conv, params, backend, "float64")
    x_view = backend.xp.permute_dims(
        backend.asarray(np.ascontiguousarray(x.transpose(1, 2, 3, 0)), "float64"), (3, 0, 1, 2))
    h, conv_bp = conv.forward(x_view)
    h, pool_bp = pool.forward(h)
    y, avg_bp = avg.forward(h)
    r = rand(*y.shape, seed=10)

    def reference(x, w, b):
        (top, bottom), (left, right) = conv.pads(7, 6)
        z = fn.conv2d(fn.pad(x, (left, right, top, bottom)), w, b, stride=(1, 2),
                      dilation=(2, 1))
        return fn.avg_pool2d(fn.max_pool2d(torch.tanh(z), 2, stride=1, padding=1), 2,
                             count_include_pad=False)

    ref_y, (ref_dx, ref_dw, ref_db) = torch_run(reference, [x, params["kernel"],
                                                            params["bias"]], r)
    dx = conv_bp(pool_bp(avg_bp(backend.asarray(r, "float64"))))
    assert_matches(y, ref_y, backend, "float64")
    assert_matches(dx, ref_dx, backend, "float64")
    assert_matches(conv.gradients["kernel"], ref_dw, backend, "float64")
    assert_matches(conv.gradients["bias"], ref_db, backend, "float64")


def test_pool_bad_input(backend):
    with pytest.raises(ValueError, match=r"MaxPool2D expected input of shape \(N, C, H, W\) "
                                         r"\(NCHW\), received shape \(4, 4\)"):
        L.MaxPool2D(2).forward(backend.asarray(np.zeros((4, 4)), "float32"))
    with pytest.raises(ValueError, match=r"spatial size \(1, 1\) is smaller than the pooling"):
        L.AvgPool2D(2).forward(backend.asarray(np.zeros((1, 1, 1, 1)), "float32"))
    with pytest.raises(ValueError, match=r"at most half the kernel size.*padding=\(2, 2\)"):
        L.MaxPool2D(3, padding=2)
    with pytest.raises(TypeError, match="floating-point input, received dtype"):
        L.MaxPool2D(2).forward(backend.asarray(np.zeros((1, 1, 2, 2)), "int64"))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2D expected input of shape \(N, C, H, W\)"):
        L.GlobalAvgPool2D().forward(backend.asarray(np.zeros((2, 3)), "float32"))


# ---------------------------------------------------------------------------------------------
# BatchNorm and LayerNorm
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(backend, shape, training):
    layer = L.BatchNorm(3).build(seed=0, dtype="float64")
    set_params(layer, {"gamma": rand(3, seed=1), "beta": rand(3, seed=2)}, backend, "float64")
    layer.set_named_buffers({"running_mean": backend.asarray(rand(3, seed=3), "float64"),
                             "running_var": backend.asarray(rand(3, seed=4) ** 2 + 0.5,
                                                            "float64")})
    check_gradients(layer, rand(*shape) * 2 + 1, backend, training=training)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batchnorm_matches_torch(backend, shape, dtype):
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    x1, x2 = round_to(rand(*shape) * 3 + 1, dtype), round_to(rand(*shape, seed=9) - 2, dtype)
    gamma, beta = round_to(rand(3, seed=1), dtype), round_to(rand(3, seed=2), dtype)
    layer = L.BatchNorm(3, momentum=0.2, eps=1e-3).build(dtype=dtype)
    set_params(layer, {"gamma": gamma, "beta": beta}, backend, dtype)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for step, x in enumerate((x1, x2)):  # two training steps: running stats accumulate
        r = rand(*shape, seed=10 + step)
        ref_y, ref_g = torch_run(lambda x, g, b: fn.batch_norm(
            x, rm, rv, g, b, training=True, momentum=0.2, eps=1e-3), [x, gamma, beta], r)
        y, backprop = layer.forward(backend.asarray(x, dtype), training=True)
        assert_matches(y, ref_y, backend, dtype)
        assert_matches(backprop(backend.asarray(r, dtype)), ref_g[0], backend, dtype)
        assert_matches(layer.gradients["gamma"], ref_g[1], backend, dtype)
        assert_matches(layer.gradients["beta"], ref_g[2], backend, dtype)
        assert_matches(layer.buffers["running_mean"], rm.numpy(), backend, dtype)
        assert_matches(layer.buffers["running_var"], rv.numpy(), backend, dtype)
    # evaluation mode uses the running statistics
    r = rand(*shape, seed=20)
    ref_y, ref_g = torch_run(lambda x, g, b: fn.batch_norm(
        x, rm, rv, g, b, training=False, eps=1e-3), [x1, gamma, beta], r)
    layer.eval()
    y, backprop = layer.forward(backend.asarray(x1, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(backprop(backend.asarray(r, dtype)), ref_g[0], backend, dtype)
    assert_matches(layer.gradients["gamma"], ref_g[1], backend, dtype)
    assert_matches(layer.buffers["running_var"], rv.numpy(), backend, dtype)  # unchanged


def test_batchnorm_bad_input(backend):
    layer = L.BatchNorm(3).build(seed=0)
    with pytest.raises(ValueError, match=r"C=3, received shape \(4, 5\)"):
        layer.forward(backend.asarray(np.zeros((4, 5)), "float32"))
    with pytest.raises(ValueError, match=r"more than one value per channel.*\(1, 3\)"):
        layer.forward(backend.asarray(np.zeros((1, 3)), "float32"), training=True)
    layer.forward(backend.asarray(np.zeros((1, 3)), "float32"), training=False)  # fine in eval
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0.0, 1.0\]"):
        L.BatchNorm(3, momentum=0.99 + 1)


@pytest.mark.parametrize("normalized_shape, shape", [(4, (3, 4)), ((2, 3), (2, 2, 3))])
def test_layernorm_gradients(backend, normalized_shape, shape):
    layer = L.LayerNorm(normalized_shape).build(seed=0, dtype="float64")
    ns = layer.normalized_shape
    set_params(layer, {"gamma": rand(*ns, seed=1), "beta": rand(*ns, seed=2)}, backend, "float64")
    check_gradients(layer, rand(*shape), backend)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layernorm_matches_torch(backend, dtype):
    torch = pytest.importorskip("torch")
    x = round_to(rand(2, 2, 3) * 2 + 1, dtype)
    gamma, beta = round_to(rand(2, 3, seed=1), dtype), round_to(rand(2, 3, seed=2), dtype)
    r = rand(2, 2, 3, seed=3)
    ref_y, ref_g = torch_run(lambda x, g, b: torch.nn.functional.layer_norm(
        x, (2, 3), g, b, eps=1e-5), [x, gamma, beta], r)
    layer = L.LayerNorm((2, 3)).build(dtype=dtype)
    set_params(layer, {"gamma": gamma, "beta": beta}, backend, dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(backprop(backend.asarray(r, dtype)), ref_g[0], backend, dtype)
    assert_matches(layer.gradients["gamma"], ref_g[1], backend, dtype)
    assert_matches(layer.gradients["beta"], ref_g[2], backend, dtype)


def test_layernorm_bad_input(backend):
    with pytest.raises(ValueError, match=r"ending in \(4,\), received shape \(2, 5\)"):
        L.LayerNorm(4).forward(backend.asarray(np.zeros((2, 5)), "float32"))
    with pytest.raises(ValueError, match="normalized_shape must be a positive int"):
        L.LayerNorm(())


# ---------------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------------
def test_dropout_gradients_with_fixed_mask(backend):
    layer = L.Dropout(0.4, seed=3).build(dtype="float64")
    check_gradients(layer, rand(3, 5), backend, training=True, reset=layer.on_build)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dropout_scaling_statistics_match_torch(backend, dtype):
    """Kept values are x / (1 - p), like torch's; the kept fraction is Binomial(n, 1 - p)."""
    torch = pytest.importorskip("torch")
    rate, n = 0.3, 20_000
    x = np.full((n // 100, 100), 2.0)
    layer = L.Dropout(rate, seed=0).build(dtype=dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype), training=True)
    assert_on_backend(y, backend, dtype)
    y = backend.to_numpy(y).astype(np.float64)
    t = torch.nn.functional.dropout(torch.tensor(x, dtype=getattr(torch, dtype)), rate,
                                    training=True).numpy().astype(np.float64)
    for out in (y, t):
        kept = out != 0
        assert set(np.unique(out)) <= {0.0, float(np.float32(2.0 / (1 - rate)))
                                       if dtype == "float32" else 2.0 / (1 - rate)}
        sigma = math.sqrt(n * rate * (1 - rate))
        assert abs(kept.sum() - n * (1 - rate)) < 5 * sigma
    # mean is preserved (inverted dropout): E[y] = x
    assert abs(y.mean() - 2.0) < 5 * 2.0 / (1 - rate) * math.sqrt(rate * (1 - rate) / n)
    # backward uses the same scaled mask: dx = dy * mask / (1 - p) = y / x for dy = 1
    dx = backprop(backend.asarray(np.ones_like(x), dtype))
    assert_matches(dx, y / 2.0, backend, dtype, atol=0)


def test_dropout_is_identity_in_eval_and_reproducible(backend):
    x = backend.asarray(rand(4, 6), "float32")
    layer = L.Dropout(0.5, seed=1).build()
    y, backprop = layer.forward(x)
    assert y is x and backprop(x) is x
    a = backend.to_numpy(layer.train().forward(x)[0])
    layer.on_build()  # a fresh generator with the same seed draws the same mask
    b = backend.to_numpy(layer.forward(x)[0])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\), received rate=1"):
        L.Dropout(1.0)


# ---------------------------------------------------------------------------------------------
# Shape, Activation, Residual
# ---------------------------------------------------------------------------------------------
def test_flatten_reshape(backend):
    check_gradients(L.Flatten(), rand(2, 3, 2), backend)
    check_gradients(L.Reshape((3, -1)), rand(2, 6), backend)
    y, _ = L.Reshape((2, 3)).forward(backend.asarray(rand(4, 6), "float32"))
    assert tuple(y.shape) == (4, 2, 3)
    with pytest.raises(ValueError, match=r"cannot turn per-sample shape \(7,\)"):
        L.Reshape((2, -1)).forward(backend.asarray(rand(4, 7), "float32"))
    with pytest.raises(ValueError, match="at most one -1"):
        L.Reshape((-1, -1))


@pytest.mark.parametrize("name", ["tanh", "softmax", "gelu"])
def test_activation_layer_gradients(backend, name):
    check_gradients(L.Activation(name), rand(3, 4), backend)


def test_residual_gradients_and_shape_error(backend):
    block = L.Residual([L.Dense(3, 4, activation="tanh"), L.Dense(4, 3)]).build(
        seed=0, dtype="float64")
    assert sorted(block.parameters()) == ["block.0.bias", "block.0.kernel", "block.1.bias",
                                          "block.1.kernel"]
    check_gradients(block, rand(2, 3), backend)
    bad = L.Residual(L.Dense(3, 2)).build(seed=0)
    with pytest.raises(ValueError, match=r"x of shape \(2, 3\) and block\(x\) of shape \(2, 2\)"):
        bad.forward(backend.asarray(rand(2, 3), "float32"))
    with pytest.raises(TypeError, match="Residual needs a layer"):
        L.Residual("dense")


# ---------------------------------------------------------------------------------------------
# configs, counts, moving
# ---------------------------------------------------------------------------------------------
ALL_LAYERS = [
    lambda: L.Dense(3, 2, activation={"name": "leaky_relu", "alpha": 0.2},
                    kernel_initializer="he_normal", kernel_regularizer="l2"),
    lambda: L.Conv2D(1, 2, (3, 2), stride=2, padding="same", dilation=(1, 2), use_bias=False,
                     activation="relu", bias_regularizer="l1"),
    lambda: L.MaxPool2D(3, 2, 1), lambda: L.AvgPool2D(2, count_include_pad=False),
    lambda: L.GlobalAvgPool2D(), lambda: L.BatchNorm(4, momentum=0.3, affine=False),
    lambda: L.LayerNorm((2, 3), eps=1e-3), lambda: L.Dropout(0.25, seed=5),
    lambda: L.Flatten(), lambda: L.Reshape((2, -1)), lambda: L.Activation("gelu"),
    lambda: L.Residual(L.Dense(2, 2, name="inner")),
]


@pytest.mark.parametrize("make", ALL_LAYERS, ids=lambda f: type(f()).__name__)
def test_config_round_trip(backend, make):
    layer = make()
    config = json.loads(json.dumps(L.serialize(layer)))
    again = L.deserialize(config)
    assert type(again) is type(layer)
    assert L.serialize(again) == L.serialize(layer)
    # same seed, same weights
    a = layer.build(seed=7).named_parameters()
    b = again.build(seed=7).named_parameters()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(backend.to_numpy(a[k]), backend.to_numpy(b[k]))
        assert_on_backend(a[k], backend, "float32")


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown layer class 'Dense3D'"):
        L.deserialize({"class_name": "Dense3D", "config": {}})
    with pytest.raises(ValueError, match="'class_name'"):
        L.deserialize({"name": "Dense"})


def test_parameter_counts_and_names(backend):
    assert L.Dense(784, 10).num_parameters == 7850
    assert L.Conv2D(3, 8, 3).num_parameters == 8 * 3 * 9 + 8
    assert L.BatchNorm(5).num_parameters == 10
    assert L.MaxPool2D(2).num_parameters == 0
    conv = L.Conv2D(3, 8, 3, use_bias=False).build(seed=0)
    assert list(conv.parameters) == ["kernel"] and tuple(conv.parameters["kernel"].shape) == (
        8, 3, 3, 3)
    bn = L.BatchNorm(5).build(seed=0)
    assert sorted(bn.buffers) == ["running_mean", "running_var"]


def test_layer_to_moves_parameters_and_buffers(backend):
    bn = L.BatchNorm(2).build(seed=0, backend="numpy", dtype="float64")
    bn.forward(np.arange(8.0).reshape(4, 2), training=True)
    before = {k: np.array(v) for k, v in bn.buffers.items()}
    bn.to(backend.name, backend.device)
    for v in (*bn.parameters.values(), *bn.buffers.values()):
        assert_on_backend(v, backend, "float64")
    for k, v in before.items():
        np.testing.assert_array_equal(backend.to_numpy(bn.buffers[k]), v)
    drop = L.Dropout(0.5).build(backend="numpy").to(backend.name, backend.device)
    y, _ = drop.forward(backend.asarray(np.ones((2, 3)), "float32"), training=True)
    assert_on_backend(y, backend, "float32")


def test_standalone_layer_builds_on_first_call(backend):
    layer = L.Dense(3, 2)
    y, _ = layer.forward(backend.asarray(rand(2, 3), "float64"))
    assert layer.built and layer.dtype == "float64"
    assert_on_backend(y, backend, "float64")
    assert_on_backend(layer.parameters["kernel"], backend, "float64")
