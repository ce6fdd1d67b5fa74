"""activations.py: every forward and derivative, on every backend, against independent references.

References: central finite differences in float64 (relative error < 1e-6), PyTorch forward and
autograd (float64 rtol 1e-10, float32 rtol 1e-5) for every function torch has, and float64 NumPy
formulas written here for the one it lacks (swish with beta != 1).
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend, numerical_gradient, relative_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portanet import activations as A

# (name, parameters): every elementwise activation, defaults and non-default parameters
CASES = [
    ("identity", {}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {}),
    ("elu", {"alpha": 1.3}),
    ("selu", {}),
    ("sigmoid", {}),
    ("hard_sigmoid", {}),
    ("tanh", {}),
    ("softplus", {}),
    ("softsign", {}),
    ("swish", {}),
    ("swish", {"beta": 1.7}),
    ("silu", {}),
    ("gelu", {}),
    ("gelu_tanh", {}),
    ("mish", {}),
    ("relu6", {}),
    ("hard_swish", {}),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in p.items()) for name, p in CASES]
KINKS = (-3.0, 0.0, 3.0, 6.0)  # where relu, relu6, hard_sigmoid, hard_swish are not smooth

PROPERTY_SETTINGS = settings(max_examples=15, deadline=None,
                       suppress_health_check=[HealthCheck.function_scoped_fixture])


def sample_inputs(seed: int = 0, shape=(3, 5), scale: float = 6.0) -> np.ndarray:
    """Values in [-scale, scale], at least 0.05 away from every kink, plus 3 fixed ones."""
    x = np.random.default_rng(seed).uniform(-scale, scale, size=shape)
    for k in KINKS:
        near = np.abs(x - k) < 0.05
        x = np.where(near, x + 0.1, x)
    return x


def fns(name: str):
    return getattr(A, name), getattr(A, name + "_derivative")


def elementwise_fd(f, x: np.ndarray, case, eps: float = 1e-6) -> np.ndarray:
    """Central differences of an elementwise f on the backend, in float64, all at once."""
    up = case.to_numpy(f(case.asarray(x + eps, "float64")))
    down = case.to_numpy(f(case.asarray(x - eps, "float64")))
    return (up - down) / (2 * eps)


def test_every_registered_elementwise_activation_is_tested_and_paired():
    # built-in ones only: a doctest or a user may have registered custom activations
    registered = {n for n, (f, d, _) in A._REGISTRY.items()
                  if d is not None and getattr(A, n, None) is f}
    assert registered == {name for name, _ in CASES}
    for name in registered:
        assert callable(getattr(A, name)) and callable(getattr(A, name + "_derivative"))
        assert A.get(name).name == name


# ---------------------------------------------------------------------------------------------
# Finite differences (float64, every backend)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params", CASES, ids=CASE_IDS)
def test_derivative_matches_finite_differences(backend, name, params):
    """f_derivative, and the layer path (get -> (y, backprop), through the form the layers call)
    against d/dx sum(f(x) * g), both by central differences in float64."""
    f, df = fns(name)
    x = sample_inputs(1)
    numeric = elementwise_fd(lambda a: f(a, **params), x, backend)
    analytic = df(backend.asarray(x, "float64"), **params)
    assert_on_backend(analytic, backend, "float64")
    assert relative_error(backend.to_numpy(analytic), numeric) < 1e-6

    g = np.random.default_rng(3).normal(size=x.shape)
    y, backprop = A.get(name, **params)(backend.asarray(x, "float64"))
    dx = backprop(backend.asarray(g, "float64"))
    assert_on_backend(dx, backend, "float64")
    assert relative_error(backend.to_numpy(dx), g * numeric) < 1e-6
    assert_matches(y, backend.to_numpy(f(backend.asarray(x, "float64"), **params)), backend,
                   "float64")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_vjp_matches_finite_differences(backend, name, axis):
    f = getattr(A, name)
    x = np.random.default_rng(4).normal(size=(2, 4)) * 3
    g = np.random.default_rng(5).normal(size=x.shape)
    numeric = numerical_gradient(
        lambda a: np.sum(backend.to_numpy(f(backend.asarray(a, "float64"), axis=axis)) * g), x)
    y, backprop = A.get(name, axis=axis)(backend.asarray(x, "float64"))
    vjp = getattr(A, name + "_vjp")(y, backend.asarray(g, "float64"), axis=axis)
    assert relative_error(backend.to_numpy(backprop(backend.asarray(g, "float64"))),
                          numeric) < 1e-6
    assert relative_error(backend.to_numpy(vjp), numeric) < 1e-6


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_jacobian_matches_finite_differences(backend, name):
    f, jac = getattr(A, name), getattr(A, name + "_jacobian")
    x = np.array([0.3, -1.2, 2.0, 0.5])
    eps = 1e-6
    numeric = np.empty((4, 4))
    for j in range(4):  # column j: d f / d x_j
        e = np.zeros(4)
        e[j] = eps
        numeric[:, j] = (backend.to_numpy(f(backend.asarray(x + e, "float64")))
                         - backend.to_numpy(f(backend.asarray(x - e, "float64")))) / (2 * eps)
    analytic = jac(backend.asarray(x, "float64"))
    assert_on_backend(analytic, backend, "float64")
    assert relative_error(backend.to_numpy(analytic), numeric) < 1e-6


def test_jacobian_batch_and_axis(backend):
    x = np.random.default_rng(6).normal(size=(3, 2))  # classes along axis 0
    j = A.softmax_jacobian(backend.asarray(x, "float64"), axis=0)
    assert j.shape == (2, 3, 3)
    s = np.exp(x) / np.exp(x).sum(axis=0)
    for b in range(2):
        expected = np.diag(s[:, b]) - np.outer(s[:, b], s[:, b])
        np.testing.assert_allclose(backend.to_numpy(j)[b], expected, rtol=1e-12, atol=1e-15)
    lj = A.log_softmax_jacobian(backend.asarray(x, "float64"), axis=0)
    np.testing.assert_allclose(backend.to_numpy(lj)[1], np.eye(3) - s[:, 1][None, :],
                               rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# PyTorch: forward and autograd (float64 rtol 1e-10, float32 rtol 1e-5), every backend
# ---------------------------------------------------------------------------------------------
def torch_function(name: str, params: dict):
    """The torch.nn.functional counterpart."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    table = {
        "identity": lambda t: t * 1.0,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, params.get("alpha", 0.01)),
        "elu": lambda t: F.elu(t, params.get("alpha", 1.0)),
        "selu": F.selu,
        "sigmoid": torch.sigmoid,
        "hard_sigmoid": F.hardsigmoid,
        "tanh": torch.tanh,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "silu": F.silu,
        "swish": F.silu,  # beta = 1 only
        "gelu": lambda t: F.gelu(t, approximate="none"),
        "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
        "mish": F.mish,
        "relu6": F.relu6,
        "hard_swish": F.hardswish,
    }
    return table[name]


def torch_reference(fn, x: np.ndarray, g: np.ndarray):
    """(f(x), f'(x) elementwise, g * f'(x)) from torch autograd in float64."""
    import torch

    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = fn(t)
    (deriv,) = torch.autograd.grad(y, t, torch.ones_like(y), retain_graph=True)
    (vjp,) = torch.autograd.grad(y, t, torch.tensor(g))
    return y.detach().numpy(), deriv.numpy(), vjp.numpy()


# every case torch has; swish with beta != 1 is checked in test_swish_beta_numpy_reference
TORCH_CASES = [(n, p) for n, p in CASES if not (n == "swish" and p.get("beta", 1.0) != 1.0)]


@pytest.mark.parametrize("name, params", TORCH_CASES,
                         ids=[i for i, c in zip(CASE_IDS, CASES, strict=True) if c in TORCH_CASES])
def test_matches_torch(backend, name, params):
    """Forward, derivative and Activation backprop in float64 and float32."""
    fn = torch_function(name, params)
    # |x| < 15: torch's softplus returns x itself above its threshold of 20
    x = sample_inputs(7, scale=7.0)
    g = np.random.default_rng(8).normal(size=x.shape)
    y_ref, d_ref, vjp_ref = torch_reference(fn, x, g)
    if name == "hard_sigmoid":
        # torch 2.13's CPU hardsigmoid backward multiplies by float32(1/6) = 0.16666667163 even in
        # float64 (relative error 3e-8), so the derivative is checked against the exact 1/6.
        exact = np.where(np.abs(x) < 3, 1 / 6, 0.0)
        assert np.allclose(d_ref, exact, rtol=1e-7, atol=0)
        d_ref, vjp_ref = exact, g * exact
    f, df = fns(name)
    for dtype in ("float64", "float32"):
        xb = backend.asarray(x, dtype)
        assert_matches(f(xb, **params), y_ref, backend, dtype, err_msg="forward")
        assert_matches(df(xb, **params), d_ref, backend, dtype, err_msg="derivative")
        y, backprop = A.get(name, **params)(xb)
        assert_matches(y, y_ref, backend, dtype, err_msg="Activation forward")
        assert_matches(backprop(backend.asarray(g, dtype)), vjp_ref, backend, dtype,
                       err_msg="Activation backprop")


def test_swish_beta_numpy_reference(backend):
    """torch's silu has no beta: an independent float64 NumPy formula instead."""
    beta = 1.7
    x = sample_inputs(9)
    s = 1.0 / (1.0 + np.exp(-beta * x))
    expected = x * s
    # d/dx [x s(beta x)] = s + x * beta * s * (1 - s)
    expected_d = s + beta * x * s * (1.0 - s)
    for dtype in ("float64", "float32"):
        xb = backend.asarray(x, dtype)
        assert_matches(A.swish(xb, beta=beta), expected, backend, dtype)
        assert_matches(A.swish_derivative(xb, beta=beta), expected_d, backend, dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_matches_torch(backend, name, axis):
    torch = pytest.importorskip("torch")
    fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}[name]
    x = np.random.default_rng(10).normal(size=(3, 4, 2)) * 4
    g = np.random.default_rng(11).normal(size=x.shape)
    t = torch.tensor(x, requires_grad=True)
    y_ref = fn(t, dim=axis)
    (vjp_ref,) = torch.autograd.grad(y_ref, t, torch.tensor(g))
    for dtype in ("float64", "float32"):
        y, backprop = A.get(name, axis=axis)(backend.asarray(x, dtype))
        assert_matches(y, y_ref.detach().numpy(), backend, dtype)
        assert_matches(getattr(A, name)(backend.asarray(x, dtype), axis=axis),
                       y_ref.detach().numpy(), backend, dtype)
        assert_matches(backprop(backend.asarray(g, dtype)), vjp_ref.numpy(), backend, dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_jacobian_matches_torch(backend, name):
    torch = pytest.importorskip("torch")
    fn = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}[name]
    x = np.array([[0.1, 2.0, -1.0], [3.0, 3.0, -5.0]])
    expected = np.stack([torch.autograd.functional.jacobian(lambda t: fn(t, dim=0),
                                                            torch.tensor(row)).numpy()
                         for row in x])
    got = getattr(A, name + "_jacobian")(backend.asarray(x, "float64"))
    assert_matches(got, expected, backend, "float64")


# ---------------------------------------------------------------------------------------------
# Stability, dtype and device
# ---------------------------------------------------------------------------------------------
BIG = np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0])


def test_sigmoid_of_minus_1000_is_zero_without_warnings(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for dtype in ("float32", "float64"):
            x = backend.asarray([-1000.0, 1000.0], dtype)
            np.testing.assert_array_equal(backend.to_numpy(A.sigmoid(x)), [0.0, 1.0])
            np.testing.assert_array_equal(backend.to_numpy(A.sigmoid_derivative(x)), [0.0, 0.0])
            y, backprop = A.get("sigmoid")(x)
            np.testing.assert_array_equal(backend.to_numpy(backprop(y)), [0.0, 0.0])


def test_softplus_is_exact_for_large_inputs(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = backend.asarray([-1000.0, -40.0, 40.0, 1000.0], "float64")
        got = backend.to_numpy(A.softplus(x))
    # log(1 + e^x) = e^x (1 - e^x / 2 ...) for x << 0, and x + e^-x for x >> 0
    np.testing.assert_allclose(got, [0.0, math.exp(-40.0), 40.0 + math.exp(-40.0), 1000.0],
                               rtol=1e-15, atol=0)


@pytest.mark.parametrize("name, params", CASES, ids=CASE_IDS)
def test_every_activation_is_finite_at_plus_minus_1000_float32(backend, name, params):
    f, df = fns(name)
    x = backend.asarray(BIG, "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, d = f(x, **params), df(x, **params)
        act = A.get(name, **params)
        y_act, backprop = act(x)
        dx = backprop(backend.asarray(np.ones_like(BIG), "float32"))
        outputs = (y, d, y_act, dx, act.forward(x), act.derivative(x))
    for out in outputs:  # float32 in, float32 out, on the input's device (strict device1 too)
        assert_on_backend(out, backend, "float32")
        assert out.shape == BIG.shape
        assert np.all(np.isfinite(backend.to_numpy(out))), (name, backend.to_numpy(out))


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_stable_at_plus_minus_1000_float32(backend, name):
    x = np.array([[1000.0, -1000.0, 0.0], [1000.0, 1000.0, -1000.0], [-1000.0, -1000.0, -999.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, backprop = A.get(name)(backend.asarray(x, "float32"))
        dx = backprop(backend.asarray(np.ones_like(x), "float32"))
    # closed forms: rows are (1, 0, 0), (1/2, 1/2, 0) and softmax(0, 0, 1) up to e^-1000 terms
    e = math.e
    s = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1 / (2 + e), 1 / (2 + e), e / (2 + e)]])
    if name == "softmax":
        expected = s
        expected_dx = s * (1.0 - s.sum(axis=1, keepdims=True))  # = 0: softmax sums to 1
    else:
        log2, log2e = math.log(2), math.log(2 + e)
        expected = np.array([[0.0, -2000.0, -1000.0], [-log2, -log2, -2000.0 - log2],
                             [-log2e, -log2e, 1.0 - log2e]])
        expected_dx = 1.0 - 3.0 * s
    assert_matches(y, expected, backend, "float32")
    assert_matches(dx, expected_dx, backend, "float32", atol=1e-6)


def test_jacobian_dtype_and_device(backend):
    j = A.softmax_jacobian(backend.asarray(np.zeros((2, 3)), "float32"))
    assert_on_backend(j, backend, "float32")
    assert_matches(j, np.broadcast_to(np.eye(3) / 3 - 1 / 9, (2, 3, 3)), backend, "float32")


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------
# A few fixed shapes rather than arbitrary ones: JAX compiles every operation once per shape,
# and a new shape per example would spend the time budget on compilation, not on the property.
shapes = st.sampled_from([(3, 5), (1,), (2, 3, 2)])


@PROPERTY_SETTINGS
@given(shape=shapes, scale=st.sampled_from([1.0, 30.0, 1000.0]), seed=st.integers(0, 2**16))
def test_softmax_properties(backend, shape, scale, seed):
    """In [0, 1], sums to 1, unchanged by a shift, exp(log_softmax) == softmax; any shape."""
    x = np.random.default_rng(seed).normal(size=shape) * scale
    xb = backend.asarray(x, "float64")
    s = backend.to_numpy(A.softmax(xb))
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s.sum(axis=-1), 1.0, rtol=1e-12)
    shifted = backend.to_numpy(A.softmax(backend.asarray(x + 123.0, "float64")))
    np.testing.assert_allclose(shifted, s, rtol=1e-9, atol=1e-300)
    log_s = backend.to_numpy(A.log_softmax(xb))
    assert np.all(np.isfinite(log_s)) and np.all(log_s <= 0)
    np.testing.assert_allclose(np.exp(log_s), s, rtol=1e-12, atol=1e-300)


@PROPERTY_SETTINGS
@given(shape=shapes, scale=st.sampled_from([1.0, 10.0, 1000.0]), seed=st.integers(0, 2**16))
def test_sigmoid_family_properties(backend, shape, scale, seed):
    """sigmoid(-x) = 1 - sigmoid(x) in (0, 1]; tanh(x) = 2 sigmoid(2x) - 1; softplus' = sigmoid."""
    x = np.random.default_rng(seed).normal(size=shape) * scale
    xb = backend.asarray(x, "float64")
    s = backend.to_numpy(A.sigmoid(xb))
    s_neg = backend.to_numpy(A.sigmoid(backend.asarray(-x, "float64")))
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s + s_neg, 1.0, rtol=1e-15)
    np.testing.assert_allclose(backend.to_numpy(A.tanh(xb)),
                               2 * backend.to_numpy(A.sigmoid(backend.asarray(2 * x, "float64")))
                               - 1, atol=4e-15)
    np.testing.assert_array_equal(backend.to_numpy(A.softplus_derivative(xb)), s)
    sp = backend.to_numpy(A.softplus(xb))
    assert np.all(np.isfinite(sp)) and np.all(sp >= np.maximum(x, 0.0))


@PROPERTY_SETTINGS
@given(name=st.sampled_from([n for n, _ in CASES]), shape=shapes, seed=st.integers(0, 2**16))
def test_derivative_property_any_shape(backend, name, shape, seed):
    """Every derivative agrees with finite differences for any shape (away from kinks)."""
    f, df = fns(name)
    x = sample_inputs(seed, shape=shape, scale=4.0)
    numeric = elementwise_fd(f, x, backend)
    analytic = backend.to_numpy(df(backend.asarray(x, "float64")))
    assert analytic.shape == shape
    assert relative_error(analytic, numeric) < 1e-6


# ---------------------------------------------------------------------------------------------
# get(), configs, custom activations, bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("identifier, name", [
    (None, "identity"), ("linear", "identity"), ("RELU", "relu"), ("LeakyReLU", "leaky_relu"),
    ("hard-swish", "hard_swish"), ("hardsigmoid", "hard_sigmoid"), ("GELU_tanh", "gelu_tanh"),
    (A.gelu, "gelu"), (A.linear, "identity"), ({"name": "elu", "alpha": 0.5}, "elu"),
    ("log_softmax", "log_softmax"),
])
def test_get_names_callables_and_configs(identifier, name):
    act = A.get(identifier)
    assert act.name == name
    assert A.get(act) is act


@pytest.mark.parametrize("name, params", [*CASES, ("softmax", {"axis": 1})],
                         ids=[*CASE_IDS, "softmax"])
def test_config_round_trip_through_json(name, params):
    act = A.get(name, **params)
    config = json.loads(json.dumps(act.get_config()))
    again = A.get(config)
    assert again == act and again.params == act.params
    x = np.linspace(-3, 3, 8).reshape(2, 4)
    np.testing.assert_array_equal(again.forward(x), act.forward(x))


def test_get_applies_parameters(backend):
    act = A.get("leaky_relu", alpha=0.25)
    y, backprop = act(backend.asarray([-4.0, 2.0], "float64"))
    assert_matches(y, [-1.0, 2.0], backend, "float64")
    assert_matches(backprop(backend.asarray([1.0, 1.0], "float64")), [0.25, 1.0], backend,
                   "float64")


def test_custom_callable_with_derivative_attribute(backend):
    def cube(x):
        return x * x * x

    cube.derivative = lambda x: 3.0 * x * x
    act = A.get(cube)
    assert act.name == "cube"
    _, backprop = act(backend.asarray([2.0], "float64"))
    assert_matches(backprop(backend.asarray([1.0], "float64")), [12.0], backend, "float64")


def test_register_custom_activation():
    A.register("test_square", lambda x: x * x, lambda x: 2.0 * x, overwrite=True)
    try:
        act = A.get({"name": "test_square"})
        assert act.derivative(np.asarray([3.0])).tolist() == [6.0]
        with pytest.raises(ValueError, match="already registered"):
            A.register("Test-Square", lambda x: x, lambda x: x)
    finally:
        del A._REGISTRY["test_square"]


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown activation 'relu7'.*gelu_tanh.*relu6"):
        A.get("relu7")


@pytest.mark.parametrize("call, err, match", [
    (lambda: A.get(42), TypeError, r"cannot make an activation from 42 \(int\)"),
    (lambda: A.get("relu", alpha=0.1), TypeError, r"'relu' has no parameter 'alpha'"),
    (lambda: A.get("elu", alpha="big"), TypeError, r"alpha must be a finite Python number, "
                                                   r"received 'big'"),
    (lambda: A.get("elu", alpha=math.nan), TypeError, r"received nan"),
    (lambda: A.get("softmax", axis=1.5), TypeError, r"axis must be an int, received 1.5"),
    (lambda: A.get(lambda x: x), TypeError, r"has no derivative"),
    (lambda: A.get({"alpha": 1.0}), ValueError, r"has no 'class_name' key"),
    (lambda: A.get(A.get("relu"), alpha=1.0), TypeError, r"already built"),
    (lambda: A.get("softmax").derivative(np.zeros(2)), TypeError, r"not elementwise"),
    (lambda: A.register("x2", lambda x: x), TypeError, r"needs a derivative"),
])
def test_bad_input_errors(call, err, match):
    with pytest.raises(err, match=match):
        call()
