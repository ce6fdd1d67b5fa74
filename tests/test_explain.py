"""pn.explain: one training step traced formula by formula.

The numbers of a trace must be portanet's own (the real step, bit for bit) and right (Matt
Mazur's hand-computed 2-2-2 network, against a float64 NumPy computation written here and
against his published digits).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import pathlib

import numpy as np
import pytest

import portanet as pn

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Matt Mazur, "A Step by Step Backpropagation Example" (2015): inputs, targets, weights w1..w8,
# biases b1, b2, learning rate 0.5, E = sum 1/2 (t - o)^2.
X = [[0.05, 0.10]]
T = [[0.01, 0.99]]
W1 = [[0.15, 0.25], [0.20, 0.30]]  # (in, out): column j holds the weights into hidden unit j
B1 = [0.35, 0.35]
W2 = [[0.40, 0.50], [0.45, 0.55]]
B2 = [0.60, 0.60]
LR = 0.5
# His printed values (9 significant digits, some fewer)
PUBLISHED = {"net_h1": 0.3775, "out_h1": 0.593269992, "out_h2": 0.596884378,
             "out_o1": 0.75136507, "out_o2": 0.772928465, "E_total": 0.298371109,
             "w5": 0.35891648, "w6": 0.408666186, "w7": 0.511301270, "w8": 0.561370121,
             "w1": 0.149780716, "w2": 0.19956143, "w3": 0.24975114, "w4": 0.29950229}


def mazur_model(case, dtype="float64"):
    model = pn.Sequential([pn.layers.Dense(2, 2, activation="sigmoid"),
                           pn.layers.Dense(2, 2, activation="sigmoid")],
                          loss="mse", optimizer=pn.optimizers.SGD(LR), dtype=dtype, seed=0)
    model.set_parameters({"0.kernel": case.asarray(W1, dtype), "0.bias": case.asarray(B1, dtype),
                          "1.kernel": case.asarray(W2, dtype), "1.bias": case.asarray(B2, dtype)})
    return model


def by_hand():
    """The example computed with NumPy in float64, formula by formula (no portanet)."""
    x, t = np.asarray(X), np.asarray(T)
    w1, b1, w2, b2 = (np.asarray(a) for a in (W1, B1, W2, B2))

    def sigmoid(z):
        return 1.0 / (1.0 + np.exp(-z))

    z1 = x @ w1 + b1
    h1 = sigmoid(z1)
    z2 = h1 @ w2 + b2
    h2 = sigmoid(z2)
    loss = np.sum(0.5 * (t - h2) ** 2)          # Mazur's E_total (N = 1: per sample)
    d_h2 = h2 - t                               # dE/d out_o = -(target - out)
    d_z2 = d_h2 * h2 * (1.0 - h2)
    d_w2 = h1.T @ d_z2
    d_b2 = d_z2.sum(axis=0)
    d_h1 = d_z2 @ w2.T
    d_z1 = d_h1 * h1 * (1.0 - h1)
    d_w1 = x.T @ d_z1
    d_b1 = d_z1.sum(axis=0)
    return {"z1": z1, "h1": h1, "z2": z2, "h2": h2, "L": loss, "dL/dŷ": d_h2, "dL/dz2": d_z2,
            "dL/dW2": d_w2, "dL/db2": d_b2, "dL/dh1": d_h1, "dL/dz1": d_z1, "dL/dW1": d_w1,
            "dL/db1": d_b1, "0.kernel": w1 - LR * d_w1, "0.bias": b1 - LR * d_b1,
            "1.kernel": w2 - LR * d_w2, "1.bias": b2 - LR * d_b2}


def test_mazur_network_matches_the_hand_computation(backend):
    trace = pn.explain(mazur_model(backend), backend.asarray(X, "float64"),
                       backend.asarray(T, "float64"))
    expected = by_hand()
    for symbol in ("z1", "h1", "z2", "h2", "L", "dL/dŷ", "dL/dz2", "dL/dW2", "dL/db2", "dL/dh1",
                   "dL/dz1", "dL/dW1", "dL/db1"):
        np.testing.assert_allclose(trace[symbol], expected[symbol], rtol=1e-12, atol=1e-15,
                                   err_msg=symbol)
    for name in ("0.kernel", "0.bias", "1.kernel", "1.bias"):
        np.testing.assert_allclose(trace.parameters_after[name], expected[name], rtol=1e-12,
                                   atol=1e-15, err_msg=name)
    assert math.isclose(trace.loss, float(expected["L"]), rel_tol=1e-12)
    # what the trace hands back lives where the model lives
    after = trace.model.parameters()["0.kernel"]
    assert pn.device_of(after) == pn.device_of(backend.asarray(W1, "float64"))
    assert pn.namespace_of(after) is pn.namespace_of(backend.asarray(W1, "float64"))


def test_mazur_network_gives_the_published_values():
    """His digits, to their printed precision (1e-8): the weights only, since his text
    updates no bias (portanet updates them too; docs/explain.md says so)."""
    trace = pn.explain(mazur_model(_numpy_case()), X, T)
    got = {"net_h1": trace["z1"][0, 0], "out_h1": trace["h1"][0, 0],
           "out_h2": trace["h1"][0, 1], "out_o1": trace["h2"][0, 0], "out_o2": trace["h2"][0, 1],
           "E_total": trace.loss}
    w1, w2 = trace.parameters_after["0.kernel"], trace.parameters_after["1.kernel"]
    # w1 (i1 -> h1), w2 (i2 -> h1), w3 (i1 -> h2), w4 (i2 -> h2); w5..w8 likewise for o1, o2
    got.update(w1=w1[0, 0], w2=w1[1, 0], w3=w1[0, 1], w4=w1[1, 1],
               w5=w2[0, 0], w6=w2[1, 0], w7=w2[0, 1], w8=w2[1, 1])
    for key, value in PUBLISHED.items():
        assert abs(got[key] - value) < 1e-8, (key, got[key], value)


def _numpy_case():
    class Case:
        @staticmethod
        def asarray(a, dtype):
            return np.asarray(a, dtype=dtype)
    return Case


def small_model(case, dtype, optimizer, extra_layers=()):
    model = pn.Sequential([pn.layers.Dense(3, 4, activation="tanh"), *extra_layers,
                           pn.layers.Dense(4, 2)],
                          loss="mse", optimizer=optimizer, dtype=dtype, seed=3,
                          jit_compile=False)
    return model


def _batch(case, dtype, n=3):
    rng = np.random.default_rng(0)
    return (case.asarray(rng.normal(size=(n, 3)), dtype), case.asarray(rng.normal(size=(n, 2)),
                                                                       dtype))


def _host(params):
    return {k: np.array(pn.to_numpy(v)) for k, v in params.items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_traced_step_is_the_real_step_bit_for_bit(backend, dtype, optimizer):
    def make():
        opt = (pn.optimizers.SGD(0.1, momentum=0.9) if optimizer == "sgd"
               else pn.optimizers.Adam(0.01))
        return small_model(backend, dtype, opt)

    x, y = _batch(backend, dtype)
    traced, real = make(), make()
    for model in (traced, real):  # one step first: momentum and moments are not zero any more
        model.train_step(x, y)
    start = _host(traced.parameters())
    trace = pn.explain(traced, x, y)
    loss = real.train_step(x, y)
    expected = _host(real.parameters())
    assert all(np.array_equal(trace.parameters_before[k], v) for k, v in start.items())
    assert trace.loss == float(loss)
    for name, value in expected.items():
        assert np.array_equal(trace.parameters_after[name], value), name
        assert np.array_equal(pn.to_numpy(trace.model.parameters()[name]), value), name
    for name, slots in real.optimizer.state().slots.items():
        for slot, a in slots.items():
            assert np.array_equal(pn.to_numpy(trace.model.optimizer.state().slots[name][slot]),
                                  pn.to_numpy(a)), (name, slot)
    # the model explained is untouched, and the copy is a plain model again: its next step is
    # the real model's next step
    assert all(np.array_equal(v, start[k]) for k, v in _host(traced.parameters()).items())
    assert trace.model.train_step(x, y) is not None
    real.train_step(x, y)
    for name, value in _host(real.parameters()).items():
        assert np.array_equal(pn.to_numpy(trace.model.parameters()[name]), value), name


def test_random_and_normalizing_layers_are_traced_generically_and_exactly(backend):
    """Dropout draws the mask the model's next step would draw; LayerNorm's parameters train;
    both are shown by shape and norm, and the step is still the real one."""
    def make():
        return small_model(backend, "float64", pn.optimizers.SGD(0.1),
                           [pn.layers.Dropout(0.5, seed=1), pn.layers.LayerNorm(4)])

    x, y = _batch(backend, "float64", n=4)
    traced, real = make(), make()
    for model in (traced, real):  # the dropout generators move on from their seeds
        model.train_step(x, y)
    trace = pn.explain(traced, x, y)
    real.train_step(x, y)
    for name, value in _host(real.parameters()).items():
        assert np.array_equal(trace.parameters_after[name], value), name
    text = str(trace)
    assert "h2 = Dropout(h1)" in text and "h3 = LayerNorm(h2)" in text
    # the generic step's norm is the norm of what the next Dense layer received, number by number
    norm = trace.find("h3").result.norm
    z4 = trace.find("h4")
    assert z4.operands[0][0] == "h3"
    assert math.isclose(norm, float(np.linalg.norm(z4.operands[0][1].array)), rel_tol=1e-12)
    assert trace.find("h3").result.array is None
    assert "2.gamma ← SGD" not in text and "[2.gamma]" in text  # generic name, plain SGD formula


def test_activation_layers_class_losses_and_other_optimizers():
    """A separate Activation layer, softmax cross-entropy on class ids, Adam: each printed with
    its own formula, and the numbers agree with NumPy formulas applied to the trace's numbers."""
    model = pn.Sequential([pn.layers.Dense(3, 4), pn.layers.Activation("tanh"),
                           pn.layers.Dense(4, 3)],
                          loss=pn.losses.SoftmaxCrossEntropy(), optimizer=pn.optimizers.Adam(0.01),
                          dtype="float64", seed=0)
    x = np.random.default_rng(1).normal(size=(2, 3))
    trace = pn.explain(model, x, [0, 2])
    h1, h2 = trace["h1"], trace["h2"]
    np.testing.assert_allclose(h2, np.tanh(h1), rtol=1e-13)
    np.testing.assert_allclose(trace["dL/dh1"], trace["dL/dh2"] * (1 - np.tanh(h1) ** 2),
                               rtol=1e-12)
    logits = trace["h3"]
    s = np.exp(logits - logits.max(axis=1, keepdims=True))
    s /= s.sum(axis=1, keepdims=True)
    onehot = np.eye(3)[[0, 2]]
    np.testing.assert_allclose(trace["dL/dŷ"], (s - onehot) / 2, rtol=1e-12)
    np.testing.assert_allclose(trace["L"], -np.mean(np.log(s[[0, 1], [0, 2]])), rtol=1e-12)
    text = str(trace)
    for piece in ("h2 = tanh(h1)", "dL/dh1 = dL/dh2 ⊙ tanh'(h1)", "softmax(ŷ) − y",
                  "W1 ← Adam(W1, dL/dW1)", "new − old", "exp_avg (after)"):
        assert piece in text, piece
    step = trace.find("0.kernel")
    np.testing.assert_array_equal(step.extra[0][1].array,
                                  trace.parameters_after["0.kernel"]
                                  - trace.parameters_before["0.kernel"])


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# loss, output activation, targets, (L, dL/dŷ) as the printed formula says, from ŷ and y
# (N = 2 samples, D = 2 outputs)
LOSS_FORMULAS = {
    "mse-mean": (pn.losses.MSE(), None, [[0.5, -1.0], [2.0, 0.0]],
                 lambda p, y: (np.sum((p - y) ** 2) / 4, 2 * (p - y) / 4)),
    "mse-sum": (pn.losses.MSE(reduction="sum"), None, [[0.5, -1.0], [2.0, 0.0]],
                lambda p, y: (np.sum((p - y) ** 2) / 2, 2 * (p - y) / 2)),
    "mae-mean": (pn.losses.MAE(), None, [[0.5, -1.0], [2.0, 0.0]],
                 lambda p, y: (np.sum(np.abs(p - y)) / 4, np.sign(p - y) / 4)),
    "mae-sum": (pn.losses.MAE(reduction="sum"), None, [[0.5, -1.0], [2.0, 0.0]],
                lambda p, y: (np.sum(np.abs(p - y)) / 2, np.sign(p - y) / 2)),
    "bce": (pn.losses.BinaryCrossEntropy(), "sigmoid", [[1.0, 0.0], [0.0, 1.0]],
            lambda p, y: (-np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)) / 4,
                          (p - y) / (p * (1 - p) * 4))),
    "bce-logits": (pn.losses.BinaryCrossEntropyWithLogits(), None, [[1.0, 0.0], [0.0, 1.0]],
                   lambda p, y: (np.sum(np.log1p(np.exp(p)) - y * p) / 4,
                                 (_sigmoid(p) - y) / 4)),
    "cce": (pn.losses.CategoricalCrossEntropy(), "softmax", [1, 0],
            lambda p, y: (-np.sum(np.eye(2)[y] * np.log(p)) / 2, -np.eye(2)[y] / (p * 2))),
    "sce": (pn.losses.SoftmaxCrossEntropy(), None, [1, 0],
            lambda p, y: (-np.sum(np.eye(2)[y] * np.log(_softmax(p))) / 2,
                          (_softmax(p) - np.eye(2)[y]) / 2)),
}


@pytest.mark.parametrize("case", sorted(LOSS_FORMULAS))
def test_each_printed_loss_formula_is_what_the_loss_computes(case):
    loss, activation, targets, formula = LOSS_FORMULAS[case]
    model = pn.Sequential([pn.layers.Dense(3, 2, activation=activation)], loss=loss,
                          optimizer="sgd", dtype="float64", seed=4)
    x = np.random.default_rng(2).normal(size=(2, 3))
    trace = pn.explain(model, x, targets)
    value, grad = formula(trace["h1"], np.asarray(targets))
    np.testing.assert_allclose(trace["L"], value, rtol=1e-12)
    np.testing.assert_allclose(trace["dL/dŷ"], grad, rtol=1e-12)
    assert f"loss: {type(loss).__name__}" in str(trace)
    assert f"{type(loss).__name__}(ŷ, y)" not in str(trace)  # a textbook formula, not generic


def test_other_losses_are_shown_generically():
    model = pn.Sequential([pn.layers.Dense(3, 2)], loss=pn.losses.Huber(), optimizer="sgd",
                          dtype="float64", seed=4)
    trace = pn.explain(model, np.ones((1, 3)), [[0.0, 1.0]])
    assert "L = Huber(ŷ, y)" in str(trace) and "docstring in portanet.losses" in str(trace)


def test_regularization_penalties_appear_in_the_loss_and_the_gradient():
    reg = pn.regularizers.L2(0.1)
    model = pn.Sequential([pn.layers.Dense(2, 2, activation="sigmoid", kernel_regularizer=reg),
                           pn.layers.Dense(2, 2, activation="sigmoid")],
                          loss="mse", optimizer=pn.optimizers.SGD(LR), dtype="float64", seed=0)
    model.set_parameters({"0.kernel": np.asarray(W1), "0.bias": np.asarray(B1),
                          "1.kernel": np.asarray(W2), "1.bias": np.asarray(B2)})
    trace = pn.explain(model, X, T)
    w1 = np.asarray(W1)
    penalty = float(pn.to_numpy(reg.penalty(w1)))
    assert math.isclose(trace.loss, float(by_hand()["L"]) + penalty, rel_tol=1e-12)
    np.testing.assert_allclose(trace.gradients["0.kernel"],
                               trace["dL/dW1"] + pn.to_numpy(reg.gradient(w1)), rtol=1e-12)
    text = str(trace)
    assert "L_total = L + Σ penalties" in text and "W1 ← W1 − η·g_W1" in text


def test_any_callable_learning_rate_is_copied_with_the_optimizer():
    model = mazur_model(_numpy_case())
    model.compile(optimizer=pn.optimizers.SGD(lambda step: LR))
    trace = pn.explain(model, X, T)
    np.testing.assert_allclose(trace.parameters_after["1.kernel"], by_hand()["1.kernel"],
                               rtol=1e-12)
    assert model.optimizer.iterations == 0 and trace.model.optimizer.iterations == 1


def test_text_markdown_and_html_show_the_formulas_and_the_numbers():
    trace = pn.explain(mazur_model(_numpy_case()), X, T, precision=9)
    text = str(trace)
    for piece in ("z1 = x·W1 + b1", "= [[0.05, 0.1]]·[[0.15, 0.25], [0.2, 0.3]] + [0.35, 0.35]",
                  "= [[0.3775, 0.3925]]", "h1 = σ(z1)", "[[0.593269992, 0.596884378]]",
                  "L = (1/(N·D)) Σ (ŷ − y)²", "= 0.298371109", "dL/dz2 = dL/dŷ ⊙ σ'(z2)",
                  "dL/dW2 = h1ᵀ·dL/dz2", "dL/db2 = Σₙ dL/dz2", "dL/dh1 = dL/dz2·W2ᵀ",
                  "W2 ← W2 − η·dL/dW2", "[[0.35891648, 0.51130127], [0.408666186, 0.561370121]]",
                  "= [[0.138498562, -0.0380982365]]·[[0.4, 0.5], [0.45, 0.55]]ᵀ",
                  "= [[0.15, 0.25], [0.2, 0.3]] − 0.5·[[0.000438567734, 0.000497712735], "
                  "[0.000877135469, 0.000995425471]]", "dL/dx: not computed"):
        assert piece in text, piece
    markdown = trace.to_markdown()
    assert "### 1. Forward pass" in markdown and "```text" in markdown
    assert "**layer 1: Dense(2 → 2, sigmoid)**" in markdown and "z1 = x·W1 + b1" in markdown
    page = trace.to_html()
    assert page.startswith('<div class="portanet-trace"') and page.endswith("</div>")
    assert "<script" not in page and "σ(z1)" in page and "[[0.3775, 0.3925]]" in page
    assert "h1 = σ(z1)" in page and "reduction=&#x27;mean&#x27;" in page  # escaped
    assert trace._repr_html_() == page and trace._repr_markdown_() == markdown
    assert "0.59327" in trace.to_text(precision=5) and "0.593269992" not in \
        trace.to_text(precision=5)


def test_a_model_too_big_to_print_is_refused_with_the_fix():
    model = pn.Sequential([pn.layers.Dense(30, 30, activation="relu"), pn.layers.Dense(30, 1)],
                          loss="mse", optimizer="sgd", seed=0)
    x, y = np.ones((1, 30), dtype="float32"), np.ones((1, 1), dtype="float32")
    with pytest.raises(ValueError, match=r"W1 of layer 1 .* has 900 values .*max_values=64.*"
                                         r"max_values=900"):
        pn.explain(model, x, y)
    assert "W1 ←" in str(pn.explain(model, x, y, max_values=900))
    small = pn.Sequential([pn.layers.Dense(2, 2)], loss="mse", optimizer="sgd", seed=0)
    with pytest.raises(ValueError, match=r"x, the batch of inputs has 200 values .*x\[:1\]"):
        pn.explain(small, np.ones((100, 2)), np.ones((100, 2)))


def test_bad_arguments_get_clear_errors():
    model = mazur_model(_numpy_case())
    with pytest.raises(TypeError, match="explain traces a pn.Sequential, received Dense"):
        pn.explain(pn.layers.Dense(2, 2), X, T)
    with pytest.raises(ValueError, match="has no optimizer; pass optimizer=..."):
        pn.explain(pn.Sequential([pn.layers.Dense(2, 2)], loss="mse"), X, T)
    with pytest.raises(ValueError, match="precision .* from 1 to 17, received 0"):
        pn.explain(model, X, T, precision=0)
    with pytest.raises(TypeError, match="max_values must be a positive int, received 'all'"):
        pn.explain(model, X, T, max_values="all")
    trace = pn.explain(model, X, T)
    with pytest.raises(KeyError, match="no step computed 'z9'"):
        trace["z9"]


def test_the_function_is_exported_and_the_module_still_imports():
    assert callable(pn.explain) and pn.explain.__module__ == "portanet.explain"
    module = importlib.import_module("portanet.explain")
    assert module.explain is pn.explain and module.Trace.__name__ == "Trace"


def test_docs_page_is_the_generated_one():
    """docs/explain.md is written by docs/scripts/make_explain.py: it must be up to date."""
    path = ROOT / "docs" / "scripts" / "make_explain.py"
    spec = importlib.util.spec_from_file_location("make_explain", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with pn.use_backend("numpy"):
        page = script.render()
    assert (ROOT / "docs" / "explain.md").read_text(encoding="utf-8") == page, \
        "docs/explain.md is stale: run python docs/scripts/make_explain.py"
