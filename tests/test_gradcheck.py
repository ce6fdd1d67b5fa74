"""pn.gradcheck: it passes on every built-in activation, loss, layer and a model, on every backend;
it catches planted wrong derivatives and names where; its report's numbers are right.

The expected values are independent of portanet's derivatives: central differences in float64
are the reference the checker itself computes, and the hand-made cases below have gradients
known in closed form (x^2 has central differences exact up to rounding).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import rand

import portanet as pn
from portanet import activations, layers, losses
from portanet.gradcheck import ATOL, RTOL, STEP, GradcheckReport, main_check
from portanet.layers import base as layers_base

# Every test input is tiny: JAX runs eagerly here, one dispatch per op.
MAX_CHECKS = 6  # entries per tensor on the slow backends (a seeded subset; every tensor is seen)


def _checks(backend) -> int | None:
    """All entries on NumPy, a seeded subset elsewhere (the same code path, fewer evaluations)."""
    return None if backend.name == "numpy" else MAX_CHECKS


# =============================================================================================
# Layers: one small configuration per registered class
# =============================================================================================
def _ids(case, shape, high):
    return case.asarray(np.random.default_rng(3).integers(0, high, size=shape), "int64")


def _mask(case, rows):
    return case.asarray(np.asarray(rows, dtype=bool))


# class name -> (build the layer, build the input (case -> array), forward kwargs (case -> dict))
LAYER_CASES = {
    "Activation": (lambda: layers.Activation("tanh"), lambda c: c.asarray(rand(2, 3)), None),
    "AvgPool2D": (lambda: layers.AvgPool2D(2, padding=1),
                  lambda c: c.asarray(rand(1, 1, 3, 3)), None),
    "BatchNorm": (lambda: layers.BatchNorm(3), lambda c: c.asarray(rand(4, 3)), None),
    "Bidirectional": (lambda: layers.Bidirectional(layers.GRU(2, 2, return_sequences=True)),
                      lambda c: c.asarray(rand(2, 3, 2)), None),
    "Chain": (lambda: layers.Chain([layers.Dense(3, 3, activation="gelu"), layers.Dense(3, 2)]),
              lambda c: c.asarray(rand(2, 3)), None),
    "Conv2D": (lambda: layers.Conv2D(2, 2, kernel_size=2, padding=1, activation="tanh"),
               lambda c: c.asarray(rand(1, 2, 3, 3)), None),
    "Dense": (lambda: layers.Dense(3, 2, activation="sigmoid"),
              lambda c: c.asarray(rand(2, 3)), None),
    "Dropout": (lambda: layers.Dropout(0.5), lambda c: c.asarray(rand(2, 4)), None),
    "Embedding": (lambda: layers.Embedding(5, 2), lambda c: _ids(c, (2, 3), 5), None),
    "Flatten": (lambda: layers.Flatten(), lambda c: c.asarray(rand(2, 2, 2)), None),
    "GRU": (lambda: layers.GRU(2, 2), lambda c: c.asarray(rand(2, 3, 2)), None),
    "GlobalAvgPool1D": (lambda: layers.GlobalAvgPool1D(), lambda c: c.asarray(rand(2, 3, 2)),
                        lambda c: {"mask": _mask(c, [[True, True, False], [True, True, True]])}),
    "GlobalAvgPool2D": (lambda: layers.GlobalAvgPool2D(),
                        lambda c: c.asarray(rand(1, 2, 2, 2)), None),
    "GroupNorm": (lambda: layers.GroupNorm(2, 4), lambda c: c.asarray(rand(2, 4, 2)), None),
    "LSTM": (lambda: layers.LSTM(2, 2, return_sequences=True),
             lambda c: c.asarray(rand(2, 3, 2)), None),
    "LastStep": (lambda: layers.LastStep(), lambda c: c.asarray(rand(2, 3, 2)),
                 lambda c: {"mask": _mask(c, [[True, True, False], [True, True, True]])}),
    "LayerNorm": (lambda: layers.LayerNorm(3), lambda c: c.asarray(rand(2, 3)), None),
    # Masking hides steps whose features all equal mask_value: random inputs have none, and
    # a hidden step would not be differentiable (moving an entry off 0 unmasks the step).
    "Masking": (lambda: layers.Masking(), lambda c: c.asarray(rand(2, 2, 2)), None),
    "MaxPool2D": (lambda: layers.MaxPool2D(2), lambda c: c.asarray(rand(1, 1, 4, 4)), None),
    "Maxout": (lambda: layers.Maxout(3, 2, pieces=2), lambda c: c.asarray(rand(2, 3)), None),
    "MultiHeadAttention": (lambda: layers.MultiHeadAttention(4, 2, dropout=0.2),
                           lambda c: c.asarray(rand(1, 3, 4)),
                           lambda c: {"mask": _mask(c, [[True, True, False]])}),
    "PositionalEmbedding": (lambda: layers.PositionalEmbedding(4, 2),
                            lambda c: c.asarray(rand(2, 3, 2)), None),
    "Reshape": (lambda: layers.Reshape((4,)), lambda c: c.asarray(rand(2, 2, 2)), None),
    "Residual": (lambda: layers.Residual(layers.Dense(3, 3, activation="tanh")),
                 lambda c: c.asarray(rand(2, 3)), None),
    # As a layer (one input: L = <model(x), r>); the model check with a loss is further down.
    "Sequential": (lambda: pn.Sequential([layers.Dense(3, 2, activation="elu")], seed=1),
                   lambda c: c.asarray(rand(2, 3)), None),
    "SimpleRNN": (lambda: layers.SimpleRNN(2, 2), lambda c: c.asarray(rand(2, 3, 2)), None),
    "SinusoidalPositionalEncoding": (lambda: layers.SinusoidalPositionalEncoding(4, 2),
                                     lambda c: c.asarray(rand(1, 3, 2)), None),
    "Standardize": (lambda: layers.Standardize(3), lambda c: c.asarray(rand(2, 3)), None),
    "TransformerEncoderBlock": (lambda: layers.TransformerEncoderBlock(4, 2, 4, dropout=0.2),
                                lambda c: c.asarray(rand(1, 2, 4)), None),
}


def test_every_registered_layer_has_a_case():
    """A new registered layer fails here until it gets a row in LAYER_CASES."""
    missing = sorted(set(layers_base._REGISTRY) - set(LAYER_CASES))
    assert not missing, (f"registered layers without a gradcheck case: {missing}; add a row "
                         "to LAYER_CASES in tests/test_gradcheck.py")


def _build(case, make):
    """A layer built in float32 on the case's backend (the checker makes its float64 copy)."""
    layer = make()
    if not layer.built:
        layer.build(seed=0, dtype="float32", backend=case.backend)
    else:  # a Sequential builds itself on the active backend, the case's
        assert layer.backend == case.backend
    return layer


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_gradcheck_passes_on_every_layer(backend, name):
    make, make_x, make_kwargs = LAYER_CASES[name]
    layer = _build(backend, make)
    if name == "Standardize":  # statistics that are not the identity
        layer.adapt(rand(5, 3, seed=4) * 3.0 + 1.0)
    x = make_x(backend)
    if x.dtype == backend.dtype("float64"):
        x = backend.asarray(pn.to_numpy(x), "float32")
    kwargs = make_kwargs(backend) if make_kwargs else None
    before = {k: pn.to_numpy(v).copy() for k, v in layer.named_parameters().items()}
    report = pn.gradcheck(layer, x, forward_kwargs=kwargs, max_checks=_checks(backend))
    assert report.passed, str(report)
    assert report.backend == backend.name
    names = [p.name for p in report.parameters]
    assert names[1 if "x" in names else 0:] == list(layer.named_trainable_parameters())
    if x.dtype != backend.dtype("int64"):
        assert names[0] == "x"
    assert all(p.nonsmooth == 0 for p in report.parameters)
    # The target is untouched: still float32, same values.
    for k, v in layer.named_parameters().items():
        assert v.dtype == backend.dtype("float32")
        np.testing.assert_array_equal(pn.to_numpy(v), before[k])


def test_dropout_mask_is_frozen_during_the_check():
    """Training-mode Dropout draws a new mask per call; the check would fail without freezing."""
    layer = layers.Dropout(0.5).build(seed=0, dtype="float64")
    x = pn.asarray(rand(3, 4), dtype="float64")
    report = pn.gradcheck(layer, x)
    assert report.passed, str(report)
    assert any("randomness frozen" in note for note in report.notes)
    # Without the frozen mask the same layer's two forwards differ (what the check guards).
    y1, _ = layer.forward(x, training=True)
    y2, _ = layer.forward(x, training=True)
    assert not np.array_equal(pn.to_numpy(y1), pn.to_numpy(y2))


def test_frozen_layers_are_not_checked():
    model = pn.Sequential([layers.Dense(3, 3, activation="tanh"), layers.Dense(3, 2)],
                          loss="mse", seed=0, dtype="float64")
    model.layers[0].trainable = False
    report = pn.gradcheck(model, rand(4, 3), rand(4, 2, seed=1))
    assert report.passed, str(report)
    assert [p.name for p in report.parameters] == ["1.kernel", "1.bias"]
    assert any("frozen layers" in note for note in report.notes)


# =============================================================================================
# Activations and losses
# =============================================================================================
ELEMENTWISE = sorted(name for name in activations.known_names()
                     if hasattr(activations, f"{name}_derivative"))
NOT_ELEMENTWISE = sorted(name for name in activations.known_names()
                         if hasattr(activations, f"{name}_vjp"))


def test_every_activation_is_covered():
    """Every activation this module defines has a derivative or a vjp by the naming pattern."""
    defined = [name for name in activations.known_names()
               if callable(getattr(activations, name, None))]
    assert sorted(defined) == sorted(ELEMENTWISE + NOT_ELEMENTWISE)
    assert "tanh" in ELEMENTWISE and "softmax" in NOT_ELEMENTWISE


@pytest.mark.parametrize("name", ELEMENTWISE + NOT_ELEMENTWISE)
def test_gradcheck_passes_on_every_activation(backend, name):
    # Values away from every built-in kink (0, +-3, 6), in float32: cast to float64 inside.
    x = backend.asarray([[-3.7, -2.2, -0.6, 0.4], [1.3, 2.9, 3.4, 6.5]], "float32")
    report = pn.gradcheck(name, x, max_checks=_checks(backend))
    assert report.passed, str(report)
    assert report.backend == backend.name
    canonical = activations.get(name).name  # "linear" is "identity"
    assert [p.name for p in report.parameters] == (
        [f"{canonical}_derivative", "backprop"] if name in ELEMENTWISE
        else [f"{canonical}_vjp", "backprop"])


def test_activation_with_parameters_and_default_input():
    report = pn.gradcheck(activations.get("elu", alpha=0.5))
    assert report.passed, str(report)
    assert report.parameters[0].size == 12  # the default input: 3 x 4 values away from kinks
    report = pn.gradcheck(activations.get("softmax", temperature=2.0, axis=0),
                          rand(3, 2))
    assert report.passed, str(report)


def _loss_cases(case):
    """(loss, y_pred, y_true) for every loss class, with targets each accepts."""
    y = case.asarray(rand(3, 4) * 0.5)
    probs = case.asarray(np.full((3, 4), 0.25) + rand(3, 4, seed=1) * 0.05)  # in (0, 1)
    targets01 = case.asarray(np.random.default_rng(5).uniform(0.1, 0.9, size=(3, 4)))
    ids = _ids(case, (3,), 4)
    signs = case.asarray(np.where(rand(3, 4, seed=2) > 0, 1.0, -1.0))
    dist = case.asarray(np.full((3, 4), 0.25))
    return {
        "MeanAbsoluteError": (losses.MeanAbsoluteError(), y, case.asarray(rand(3, 4, seed=7))),
        "MeanSquaredError": (losses.MeanSquaredError(), y, case.asarray(rand(3, 4, seed=7))),
        "RootMeanSquaredError": (losses.RootMeanSquaredError(), y,
                                 case.asarray(rand(3, 4, seed=7))),
        "Huber": (losses.Huber(delta=0.4), y, case.asarray(rand(3, 4, seed=7))),
        "LogCosh": (losses.LogCosh(reduction="sum"), y, case.asarray(rand(3, 4, seed=7))),
        "Poisson": (losses.Poisson(), probs, case.asarray(np.full((3, 4), 2.0))),
        "Hinge": (losses.Hinge(), y, signs),
        "SquaredHinge": (losses.SquaredHinge(reduction="none"), y, signs),
        "CategoricalHinge": (losses.CategoricalHinge(), y, ids),
        "BinaryCrossEntropy": (losses.BinaryCrossEntropy(), probs, targets01),
        "BinaryCrossEntropyWithLogits": (losses.BinaryCrossEntropyWithLogits(), y, targets01),
        "CategoricalCrossEntropy": (losses.CategoricalCrossEntropy(), probs, ids),
        "SoftmaxCrossEntropy": (losses.SoftmaxCrossEntropy(label_smoothing=0.1,
                                                           class_weights=[1.0, 2.0, 0.5, 1.0]),
                                y, ids),
        "KLDivergence": (losses.KLDivergence(), probs, dist),
    }


def test_every_loss_has_a_case():
    """A new built-in loss fails here until it gets a case in _loss_cases."""
    builtin = {name for name in losses.__all__
               if isinstance(getattr(losses, name), type)
               and issubclass(getattr(losses, name), losses.Loss) and name != "Loss"}
    builtin -= {"MAE", "MSE", "RMSE"}  # short names of the same classes
    assert builtin == set(LOSS_NAMES)


LOSS_NAMES = ["MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "Huber",
              "LogCosh", "Poisson", "Hinge", "SquaredHinge", "CategoricalHinge",
              "BinaryCrossEntropy", "BinaryCrossEntropyWithLogits", "CategoricalCrossEntropy",
              "SoftmaxCrossEntropy", "KLDivergence"]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradcheck_passes_on_every_loss(backend, name):
    loss, y_pred, y_true = _loss_cases(backend)[name]
    report = pn.gradcheck(loss, y_pred, y_true, max_checks=_checks(backend))
    assert report.passed, str(report)
    assert [p.name for p in report.parameters] == ["y_pred"]


# =============================================================================================
# A whole model, on every backend, float32 checked on its float64 copy
# =============================================================================================
def _small_model(case, **kw):
    with pn.use_backend(case.name, case.device):
        return pn.Sequential([
            layers.Dense(3, 4, activation="tanh", kernel_regularizer=pn.regularizers.L2(0.1)),
            layers.Dropout(0.25),
            layers.Dense(4, 3),
        ], loss="softmax_cross_entropy", seed=0, **kw)


def test_gradcheck_passes_on_a_model(backend):
    model = _small_model(backend)
    x = backend.asarray(rand(4, 3), "float32")
    y = _ids(backend, (4,), 3)
    report = pn.gradcheck(model, x, y, max_checks=_checks(backend))
    assert report.passed, str(report)
    assert [p.name for p in report.parameters] == ["0.kernel", "0.bias", "2.kernel", "2.bias"]
    assert report.target == "model Sequential" and report.backend == backend.name
    assert report.device == pn.device_of(x)
    assert model.dtype == "float32"  # the model itself is untouched


def test_main_check_makes_its_own_batch(backend):
    model = _small_model(backend)
    report, ok = main_check(model, max_checks=_checks(backend))
    assert ok and report.passed, str(report)
    with pytest.raises(ValueError, match="input_shape"):
        main_check(pn.Sequential([layers.Flatten(), layers.Dense(4, 2)], loss="mse", seed=0))
    report, ok = main_check(pn.Sequential([layers.Flatten(), layers.Dense(4, 2)], loss="mse",
                                          seed=0), input_shape=(2, 2))
    assert ok, str(report)


# =============================================================================================
# Planted bugs: the check fails and names the tensor and the index
# =============================================================================================
def test_catches_a_wrong_activation_derivative(backend, monkeypatch):
    def wrong(x):  # 1% too large: the kind of slip a hand derivation makes
        t = backend.xp.tanh(x)
        return 1.01 * (1.0 - t * t)

    monkeypatch.setattr(activations, "tanh_derivative", wrong)
    x = backend.asarray([[0.3, -1.2, 2.0]], "float64")
    report = pn.gradcheck("tanh", x)
    assert not report.passed
    check = report["tanh_derivative"]
    assert check.failed == 3 and check.failed_indices == [(0, 0), (0, 1), (0, 2)]
    assert report["backprop"].passed  # the layers' own path is another function
    assert report.verdict.startswith("FAILED: 'tanh_derivative' at index (0, 0)")
    assert "FAILED" in str(report)


def test_catches_a_wrong_kernel_gradient_entry(backend, monkeypatch):
    """One entry of Dense's kernel gradient with the wrong sign: named with its index."""
    forward = layers.Dense.forward
    flip = np.ones((3, 2))
    flip[2, 1] = -1.0

    def forward_with_bug(self, x, training=None):
        y, backprop = forward(self, x, training)

        def wrong_backprop(dy, input_gradient=True):
            dx = backprop(dy, input_gradient)
            g = self.gradients["kernel"]
            self.gradients["kernel"] = g * backend.asarray(flip, "float64")
            return dx

        return y, wrong_backprop

    monkeypatch.setattr(layers.Dense, "forward", forward_with_bug)
    layer = layers.Dense(3, 2, activation="tanh").build(seed=0, backend=backend.backend)
    report = pn.gradcheck(layer, backend.asarray(rand(2, 3), "float32"))
    assert not report.passed
    assert [p.name for p in report.failures] == ["kernel"]
    assert report["kernel"].failed == 1 and report["kernel"].worst_index == (2, 1)
    assert report["kernel"].worst_analytic == pytest.approx(-report["kernel"].worst_numeric,
                                                            rel=1e-6)
    assert "'kernel' at index (2, 1)" in report.verdict


def test_catches_a_scaled_layer_input_gradient(monkeypatch):
    """LayerNorm's dx 1% too large: the input check fails, the parameters still pass."""
    forward = layers.LayerNorm.forward

    def forward_with_bug(self, x, training=None):
        y, backprop = forward(self, x, training)
        return y, lambda dy: 1.01 * backprop(dy)

    monkeypatch.setattr(layers.LayerNorm, "forward", forward_with_bug)
    layer = layers.LayerNorm(3).build(seed=0, dtype="float64")
    report = pn.gradcheck(layer, rand(2, 3))
    assert [p.name for p in report.failures] == ["x"]
    assert all(report[name].passed for name in layer.parameters)


def test_catches_a_wrong_loss_gradient(monkeypatch):
    def elementwise(self, xp, y_pred, y_true):
        diff = y_pred - y_true
        return diff * diff, 2.0 * diff + 1e-3  # off by a constant

    monkeypatch.setattr(losses.MeanSquaredError, "elementwise", elementwise)
    report = pn.gradcheck(losses.MeanSquaredError(), rand(2, 2), rand(2, 2, seed=1))
    assert not report.passed and report["y_pred"].failed == 4


def test_catches_a_wrong_regularizer_gradient_in_a_model(backend, monkeypatch):
    """The model check covers what value_and_gradients adds: L2's gradient 1% too large."""
    gradient = pn.regularizers.L2.gradient
    monkeypatch.setattr(pn.regularizers.L2, "gradient", lambda self, w: 1.01 * gradient(self, w))
    model = _small_model(backend)
    report = pn.gradcheck(model, backend.asarray(rand(4, 3), "float32"), _ids(backend, (4,), 3),
                          max_checks=_checks(backend))
    assert [p.name for p in report.failures] == ["0.kernel"]  # the regularized one only
    assert report.verdict.startswith("FAILED: '0.kernel' at index")


def test_a_value_that_disagrees_with_the_forward_pass_fails(monkeypatch):
    """value_and_gradients must return the loss of the forward pass plus the penalties."""
    model = pn.Sequential([layers.Dense(2, 2)], loss="mse", seed=0, dtype="float64")
    value_and_gradients = pn.Sequential.value_and_gradients

    def shifted(self, x, y, training=True):
        value, grads = value_and_gradients(self, x, y, training)
        return value + 1.0, grads

    monkeypatch.setattr(pn.Sequential, "value_and_gradients", shifted)
    report = pn.gradcheck(model, rand(3, 2), rand(3, 2, seed=1))
    assert not report.passed and all(p.passed for p in report.parameters)
    assert "they must be one function" in report.verdict


def test_catches_a_missing_gradient(monkeypatch):
    forward = layers.Dense.forward

    def forward_without_bias(self, x, training=None):
        y, backprop = forward(self, x, training)

        def drop_bias(dy, input_gradient=True):
            dx = backprop(dy, input_gradient)
            self.gradients.pop("bias")
            return dx

        return y, drop_bias

    monkeypatch.setattr(layers.Dense, "forward", forward_without_bias)
    report = pn.gradcheck(layers.Dense(2, 2).build(seed=0, dtype="float64"), rand(2, 2))
    assert [p.name for p in report.failures] == ["bias"]
    assert "no gradient" in report.verdict and "MISSING" in str(report)


# =============================================================================================
# Kinks: reported as non-smooth, not as failures; a wrong slope at a kink-free point still fails
# =============================================================================================
def test_relu_at_zero_is_reported_as_a_kink():
    x = pn.asarray([[0.0, 0.7, -0.4]], dtype="float64")
    report = pn.gradcheck("relu", x)
    assert report.passed, str(report)
    check = report["relu_derivative"]
    assert check.nonsmooth == 1 and check.nonsmooth_indices == [(0, 0)]
    assert check.checked == 3 and "kink" in str(report)


def test_max_pool_tie_is_reported_as_a_kink():
    x = pn.asarray([[[[1.0, 1.0], [0.2, -0.3]]]], dtype="float64")  # two maxima in one window
    report = pn.gradcheck(layers.MaxPool2D(2), x)
    assert report.passed, str(report)
    assert report["x"].nonsmooth == 2


def test_a_wrong_derivative_of_a_piecewise_linear_function_is_not_a_kink(monkeypatch):
    monkeypatch.setattr(activations, "relu_derivative",
                        lambda x: pn.namespace_of(x).ones_like(x))  # wrong for x < 0
    report = pn.gradcheck("relu", pn.asarray([[-0.5, 0.5]], dtype="float64"))
    assert report["relu_derivative"].failed_indices == [(0, 0)]
    assert report["relu_derivative"].nonsmooth == 0


# =============================================================================================
# The report's numbers on a case known exactly
# =============================================================================================
def test_report_fields_on_a_hand_made_case():
    """f(x) = x^2: the central difference is exactly 2x (no truncation error), so planting
    f'(x) = 2x + 0.5 at one entry gives known errors there and ~0 elsewhere."""
    x_host = np.asarray([[0.5, -1.5], [2.0, 3.0]])
    plant = np.zeros((2, 2))
    plant[1, 0] = 0.5

    def square(x):
        return x * x

    def square_derivative(x):
        return 2.0 * x + pn.asarray(plant, dtype="float64")

    report = pn.gradcheck(activations.Activation(square, square_derivative, name="square"),
                          pn.asarray(x_host, dtype="float64"))
    assert isinstance(report, GradcheckReport)
    check = report["derivative"]
    assert check.shape == (2, 2) and check.size == 4 and check.checked == 4
    assert not check.sampled
    assert check.failed == 1 and check.failed_indices == [(1, 0)]
    assert check.worst_index == (1, 0)
    assert check.worst_analytic == 4.5
    assert check.worst_numeric == pytest.approx(4.0, rel=1e-9)
    assert check.max_abs_error == pytest.approx(0.5, rel=1e-8)
    assert check.max_rel_error == pytest.approx(0.5 / 4.5, rel=1e-8)
    assert report["backprop"].failed == 1  # Activation's backprop uses the same derivative
    assert report.rtol == RTOL and report.atol == ATOL
    assert not report and report.failures == [check, report["backprop"]]
    assert "'derivative' at index (1, 0): analytic 4.5 vs numeric 4" in report.verdict
    text = str(report)
    assert "(1, 0)" in text and "5.00e-01" in text and "1.11e-01" in text


def test_the_step_is_the_cube_root_of_epsilon():
    assert math.isclose(STEP, 2.0 ** (-52 / 3))
    assert 6.0e-6 < STEP < 6.1e-6


def test_large_tensors_are_sampled():
    layer = layers.Dense(8, 5).build(seed=0, dtype="float64")
    report = pn.gradcheck(layer, rand(3, 8), max_checks=7)
    assert report.passed, str(report)
    kernel = report["kernel"]
    assert kernel.size == 40 and kernel.checked == 7 and kernel.sampled
    assert report["bias"].checked == 5 and not report["bias"].sampled
    assert "* a seeded random subset of max_checks=7" in str(report)
    again = pn.gradcheck(layer, rand(3, 8), max_checks=7)
    assert again["kernel"].worst_index == kernel.worst_index  # seeded: the same subset


# =============================================================================================
# User errors
# =============================================================================================
def test_clear_errors():
    with pytest.raises(TypeError, match="received 2 inputs"):
        pn.gradcheck(layers.Dense(2, 2), rand(1, 2), rand(1, 2))
    with pytest.raises(TypeError, match=r"takes \(y_pred, y_true\)"):
        pn.gradcheck(losses.MeanSquaredError(), rand(1, 2))
    with pytest.raises(ValueError, match="has none; pass loss"):
        pn.gradcheck(pn.Sequential([layers.Dense(2, 2)], seed=0), rand(1, 2), rand(1, 2))
    with pytest.raises(TypeError, match="unknown activation 'tanhh'"):
        pn.gradcheck("tanhh")
    with pytest.raises(TypeError, match="received int"):
        pn.gradcheck(3)
    with pytest.raises(ValueError, match="max_checks must be a positive int"):
        pn.gradcheck("tanh", max_checks=0)
    with pytest.raises(ValueError, match="rtol must be a finite number"):
        pn.gradcheck("tanh", rtol=-1.0)
    with pytest.raises(TypeError, match="forward_kwargs must be a dict"):
        pn.gradcheck(layers.Dense(2, 2), rand(1, 2), forward_kwargs=[1])


def test_the_module_stays_importable():
    import importlib

    module = importlib.import_module("portanet.gradcheck")
    assert module.gradcheck is pn.gradcheck and module.main_check is main_check
    assert math.isclose(module.EPS, 2.0 ** -52)


class _Noisy(pn.layers.Layer):
    """y = x + fresh noise on every call: randomness that no layer generator holds."""

    rng = np.random.default_rng(0)

    def forward(self, x, training=None):
        noise = _Noisy.rng.normal(size=tuple(x.shape)) * 1e-3
        return x + pn.asarray(noise, dtype="float64"), lambda dy: dy


def test_an_objective_that_is_not_deterministic_fails_clearly():
    """Unfrozen noise would make the differences measure the noise (and may look like kinks):
    the check says so instead of passing."""
    report = pn.gradcheck(_Noisy().build(dtype="float64"), rand(2, 2))
    assert not report.passed
    assert report.problems and report.verdict.startswith("FAILED: L is not deterministic")
    assert report["x"].nonsmooth == 0
