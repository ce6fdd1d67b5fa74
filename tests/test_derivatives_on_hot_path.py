"""The code that trains is the code that teaches: every activation's training path calls its
documented derivative (issue 16).

The pairs are found mechanically, by portanet.activations' naming pattern: every registered
activation ``f`` has ``f`` and ``f_derivative`` (or, not elementwise, ``f_vjp``), and may have a
faster form ``f_derivative_from_output(y)`` (or ``f_derivative_from_output_and_input(y, x)``).
A layer backpropagates through the first of ``f_vjp``, ``f_derivative_from_output``,
``f_derivative_from_output_and_input``, ``f_derivative`` that exists. The tests below

- replace that function on the module by a spy and run one training step of a
  Dense(activation=f), an Activation(f) and (a few) a Conv2D(activation=f) layer: the spy must
  be called, once;
- plant a wrong derivative and check that the gradients follow it (the value is used, not only
  computed);
- check each faster form against its input form (float64, to a few roundings) and against
  central finite differences, on every backend, keeping dtype and device.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_on_backend, relative_error

import portanet as pn
from portanet import activations as A
from portanet.backends import ADAPTERS

# The order in which an Activation picks its backward form (portanet.activations.Activation).
FORMS = ("_vjp", "_derivative_from_output", "_derivative_from_output_and_input", "_derivative")


def builtin_names() -> list[str]:
    """Every registered activation that is one of the module's functions (no aliases, nothing a
    doctest or a test registered)."""
    return sorted(n for n in A.known_names() if A.get(n).name == n and n in A.__all__)


NAMES = builtin_names()
TRAINED = [n for n in NAMES if n != "identity"]  # layers skip the identity (see its test)


def backward_form(name: str) -> str:
    """The documented function a layer's backward pass calls for ``name``."""
    return next(name + suffix for suffix in FORMS if hasattr(A, name + suffix))


def faster_forms() -> list[str]:
    return sorted(n for n in A.__all__ if n.endswith(("_derivative_from_output",
                                                       "_derivative_from_output_and_input")))


def test_the_pairs_are_found_by_their_names():
    assert len(NAMES) == 19, NAMES  # every built-in is seen (a broken lookup would shrink it)
    for name in NAMES:
        assert callable(getattr(A, name)), name
        assert callable(getattr(A, name + "_derivative", None)) or callable(
            getattr(A, name + "_vjp", None)), f"{name} has neither a derivative nor a vjp"
    for form in faster_forms():  # every faster form belongs to a registered pair
        base = form.split("_derivative_from_output")[0]
        assert base in NAMES and callable(getattr(A, base + "_derivative")), form
    # what docs/activations.md lists
    assert faster_forms() == ["gelu_derivative_from_output_and_input",
                              "relu_derivative_from_output", "sigmoid_derivative_from_output",
                              "softplus_derivative_from_output", "tanh_derivative_from_output"]
    assert {n: backward_form(n) for n in ("softmax", "log_softmax", "relu", "gelu", "elu")} == {
        "softmax": "softmax_vjp", "log_softmax": "log_softmax_vjp",
        "relu": "relu_derivative_from_output", "gelu": "gelu_derivative_from_output_and_input",
        "elu": "elu_derivative"}


# ---------------------------------------------------------------------------------------------
# A training step calls the documented functions
# ---------------------------------------------------------------------------------------------
def spy_on(monkeypatch, name: str, wrap=None) -> list:
    """Replace ``activations.<name>`` by a function that records its calls and runs the
    original (or ``wrap(original, result)``)."""
    original = getattr(A, name)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        out = original(*args, **kwargs)
        return out if wrap is None else wrap(out)

    monkeypatch.setattr(A, name, spy)
    return calls


CHAIN_KERNELS = {"relu": "relu_backward", "gelu": "gelu_backward"}


def kernels_off(monkeypatch) -> None:
    """ReLU's and GELU's chain rules run as the adapter's kernel where there is one (torch's
    threshold_backward and gelu_backward, the accelerated forms of
    dy * relu_derivative_from_output(y) and dy * gelu_derivative_from_output_and_input(y, x)),
    and Dense's bias + ReLU as one kernel (fused.bias_relu: NumPy, CuPy); off, the portable
    forms call the documented functions."""
    for adapter in ADAPTERS.values():
        for kernel in (*CHAIN_KERNELS.values(), "bias_relu"):
            monkeypatch.setattr(type(adapter), kernel, None)


def make_model(kind: str, name: str) -> pn.Sequential:
    """A small model with ``name`` applied once, built after the spies are in place."""
    L = pn.layers
    if kind == "dense":
        layers = [L.Dense(3, 4, activation=name), L.Dense(4, 2)]
    elif kind == "activation":
        layers = [L.Dense(3, 4), L.Activation(name), L.Dense(4, 2)]
    else:  # conv
        layers = [L.Conv2D(1, 2, kernel_size=2, activation=name), L.Flatten(), L.Dense(8, 2)]
    return pn.Sequential(layers, loss=pn.losses.MeanSquaredError(),
                         optimizer=pn.optimizers.SGD(0.1), seed=0, dtype="float64",
                         jit_compile=False)


def batch(kind: str, backend):
    rng = np.random.default_rng(0)
    shape = (5, 1, 3, 3) if kind == "conv" else (5, 3)
    return (backend.asarray(rng.standard_normal(shape) * 2.0, "float64"),
            backend.asarray(rng.standard_normal((5, 2)), "float64"))


KINDS = [("dense", n) for n in TRAINED] + [("activation", n) for n in TRAINED] + [
    ("conv", n) for n in ("relu", "tanh", "gelu", "elu", "softmax")]


@pytest.mark.parametrize("kind, name", KINDS, ids=[f"{k}-{n}" for k, n in KINDS])
def test_a_training_step_calls_the_documented_functions(backend, monkeypatch, kind, name):
    """One train_step of a model holding ``name`` once calls ``name`` once and its documented
    backward form once, looked up on the module (the old layers ran hidden copies instead)."""
    kernels_off(monkeypatch)
    forward_calls = spy_on(monkeypatch, name)
    backward_calls = spy_on(monkeypatch, backward_form(name))
    model = make_model(kind, name)
    x, y = batch(kind, backend)
    model.train_step(x, y)
    assert len(forward_calls) == 1, f"{name} called {len(forward_calls)} times"
    assert len(backward_calls) == 1, f"{backward_form(name)} called {len(backward_calls)} times"
    first = backward_calls[0][0]  # y (from_output, vjp forms) or x (the input form)
    assert_on_backend(first, backend, "float64")


@pytest.mark.parametrize("name", sorted(CHAIN_KERNELS))
def test_a_backend_with_a_kernel_runs_the_kernel_of_the_documented_form(backend, monkeypatch,
                                                                        name):
    """With its kernel on, the backward pass of relu (gelu) is the adapter's kernel for
    dy * relu_derivative_from_output(y) (dy * gelu_derivative_from_output_and_input(y, x));
    test_fused.py checks they agree. Without one, the documented function itself."""
    adapter_type = type(backend.backend.adapter)
    kernel = getattr(adapter_type, CHAIN_KERNELS[name])
    kernel_calls = []
    if kernel is not None:
        def counting(self, dy, saved):
            kernel_calls.append(saved)
            return kernel(self, dy, saved)
        monkeypatch.setattr(adapter_type, CHAIN_KERNELS[name], counting)
    documented_calls = spy_on(monkeypatch, backward_form(name))
    model = make_model("dense", name)
    model.train_step(*batch("dense", backend))
    if kernel is not None:
        assert (len(kernel_calls), len(documented_calls)) == (1, 0)
    else:
        assert (len(kernel_calls), len(documented_calls)) == (0, 1)


@pytest.mark.parametrize("kind", ["dense", "activation"])
@pytest.mark.parametrize("name", TRAINED)
def test_a_planted_wrong_derivative_reaches_the_gradients(backend, monkeypatch, kind, name):
    """Scale the documented backward form by 3: the gradients of every parameter before the
    activation scale by 3 too (they depend on it linearly). The value computed is the value used."""
    kernels_off(monkeypatch)
    x, y = batch(kind, backend)
    _, honest = make_model(kind, name).value_and_gradients(x, y)
    spy_on(monkeypatch, backward_form(name), wrap=lambda out: 3.0 * out)
    _, planted = make_model(kind, name).value_and_gradients(x, y)
    before = ["0.kernel", "0.bias"]  # the Dense in front of (or holding) the activation
    for key in before:
        h, p = pn.to_numpy(honest[key]), pn.to_numpy(planted[key])
        assert np.max(np.abs(h)) > 1e-8, (key, h)  # something to scale
        np.testing.assert_allclose(p, 3.0 * h, rtol=1e-12, atol=1e-15, err_msg=key)
    after = [k for k in honest if k not in before]  # the last Dense sees only the forward
    for key in after:
        np.testing.assert_array_equal(pn.to_numpy(planted[key]), pn.to_numpy(honest[key]))


@pytest.mark.parametrize("name, params", [("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 0.5}),
                                          ("swish", {"beta": 1.5}),
                                          ("softmax", {"temperature": 2.0})])
def test_the_parameters_reach_the_documented_functions(backend, monkeypatch, name, params):
    kernels_off(monkeypatch)
    seen = []
    original = getattr(A, backward_form(name))

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(A, backward_form(name), spy)
    model = pn.Sequential([pn.layers.Dense(3, 4, activation=A.get(name, **params)),
                           pn.layers.Dense(4, 2)], loss=pn.losses.MeanSquaredError(),
                          optimizer=pn.optimizers.SGD(0.1), seed=0, dtype="float64",
                          jit_compile=False)
    model.train_step(*batch("dense", backend))
    assert len(seen) == 1 and all(seen[0][k] == v for k, v in params.items()), seen


def test_identity_is_skipped_by_the_layers():
    """f'(x) = 1: layers hold no activation for identity/linear/None, so dz = dy with no call."""
    for identifier in (None, "identity", "linear"):
        assert pn.layers.Dense(2, 2, activation=identifier).activation is None
    assert pn.layers.Activation("linear").activation is None


def test_an_activation_is_resolved_when_it_is_built(monkeypatch):
    """The functions are looked up once, at construction (nothing per step): a function
    replaced later does not change an Activation built before."""
    before = A.get("tanh")
    calls = spy_on(monkeypatch, "tanh_derivative_from_output")
    after = A.get("tanh")
    x = np.asarray([0.5, -1.0])
    before(x)[1](np.ones(2))
    assert calls == []
    after(x)[1](np.ones(2))
    assert len(calls) == 1


def test_a_derivative_of_your_own_is_not_bypassed(backend):
    """Activation(relu, my_derivative) backpropagates with my_derivative, not with the module's
    faster relu_derivative_from_output."""
    def doubled(x):
        return 2.0 * A.relu_derivative(x)

    act = A.Activation(A.relu, doubled, name="relu2")
    x = backend.asarray([-1.0, 2.0, 3.0], "float64")
    _, backprop = act(x)
    np.testing.assert_array_equal(pn.to_numpy(backprop(backend.asarray([1.0, 1.0, 1.0],
                                                                         "float64"))),
                                  [0.0, 2.0, 2.0])


# ---------------------------------------------------------------------------------------------
# The faster forms equal the input forms and the finite differences
# ---------------------------------------------------------------------------------------------
def call_faster(form: str, base: str, x, y):
    fn = getattr(A, form)
    return fn(y, x) if form.endswith("_and_input") else fn(y)


def sample(seed: int, shape=(4, 6), scale: float = 5.0, fixed: bool = True) -> np.ndarray:
    """Random values 0.05 away from relu's kink, with (``fixed``) a few fixed ones: 0 (where
    relu' is 0 by convention, from x and from y alike), large and tiny values."""
    x = np.random.default_rng(seed).normal(size=shape) * scale
    x = np.where(np.abs(x) < 0.05, x + 0.1, x)
    if fixed:
        x.flat[:6] = [0.0, 30.0, -30.0, 1e-20, -1e-3, 12.0]
    return x


@pytest.mark.parametrize("form", faster_forms())
def test_faster_form_equals_the_input_form_float64(backend, form):
    """derivative_from_output(f(x)) == derivative(x) to a few roundings of numbers <= 1.1
    (relu, sigmoid, tanh compute the same operations: bit for bit)."""
    base = form.split("_derivative_from_output")[0]
    f, derivative = getattr(A, base), getattr(A, base + "_derivative")
    x = backend.asarray(sample(1), "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = call_faster(form, base, x, f(x))
    assert_on_backend(fast, backend, "float64")
    expected = pn.to_numpy(derivative(x))
    got = pn.to_numpy(fast)
    if base in ("relu", "sigmoid", "tanh"):
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("form", faster_forms())
def test_faster_form_matches_finite_differences(backend, form):
    base = form.split("_derivative_from_output")[0]
    f = getattr(A, base)
    x = sample(2, fixed=False)  # central differences across relu's kink average its slopes
    eps = 1e-6
    numeric = (pn.to_numpy(f(backend.asarray(x + eps, "float64")))
               - pn.to_numpy(f(backend.asarray(x - eps, "float64")))) / (2 * eps)
    xb = backend.asarray(x, "float64")
    assert relative_error(pn.to_numpy(call_faster(form, base, xb, f(xb))), numeric) < 1e-6


@pytest.mark.parametrize("form", faster_forms())
def test_faster_form_keeps_float32_and_the_device(backend, form):
    base = form.split("_derivative_from_output")[0]
    f, derivative = getattr(A, base), getattr(A, base + "_derivative")
    x = backend.asarray(np.concatenate([sample(3).ravel(), [-1000.0, 1000.0]]), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = call_faster(form, base, x, f(x))
    assert_on_backend(fast, backend, "float32")
    got = pn.to_numpy(fast)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, pn.to_numpy(derivative(x)), rtol=0, atol=1e-6)


def test_gelu_faster_form_at_zero_tiny_and_huge_inputs(backend):
    """Phi(x) = (x y + t^2/2) / (x^2 + t^2), t^2 = 1e-36: exactly 1/2 at 0 and for subnormal
    and tiny x, Phi(x) to working precision; within 2e-19 of 0 or 1 for huge |x|."""
    values = [0.0, -0.0, 5e-324, -1e-300, 1e-20, -1e-18, 1e-17, -40.0, 40.0, -1000.0, 1000.0]
    x = backend.asarray(values, "float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = pn.to_numpy(A.gelu_derivative_from_output_and_input(A.gelu(x), x))
    np.testing.assert_allclose(got, pn.to_numpy(A.gelu_derivative(x)), rtol=0, atol=1e-16)
    np.testing.assert_array_equal(got[:5], 0.5)
    np.testing.assert_allclose(got[-4:], [0.0, 1.0, 0.0, 1.0], rtol=0, atol=1e-18)
