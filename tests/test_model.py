"""Sequential on every backend: end-to-end gradients, seeds, moving between backends, the API."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
from helpers import (
    assert_matches,
    assert_on_backend,
    assert_parameter_gradients,
    numerical_gradient,
    relative_error,
)

import portanet as pn
from portanet import layers as L
from portanet import losses, optimizers, regularizers
from portanet.errors import MixedArraysError
from portanet.model import Sequential

FD_TOL = 1e-6


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def make_mlp(seed=0, dtype="float64", optimizer="sgd"):
    return Sequential([
        L.Dense(4, 5, activation="tanh", kernel_regularizer=regularizers.L1L2(0.01, 0.02)),
        L.Residual([L.Dense(5, 5, activation="tanh")]),
        L.LayerNorm(5),
        L.Dense(5, 3, bias_regularizer=regularizers.L2(0.05)),
    ], loss=losses.SoftmaxCrossEntropy(), optimizer=optimizer, seed=seed, dtype=dtype)


def make_cnn(seed=0, dtype="float64"):
    return Sequential([
        L.Conv2D(1, 2, 3, padding=1, activation="tanh"),
        L.BatchNorm(2),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(8, 3),
    ], loss=losses.SoftmaxCrossEntropy(), optimizer="sgd", seed=seed, dtype=dtype)


def check_model_gradients(model, x_np, y_np, case, training=True):
    """value_and_gradients (loss + penalties) against central differences, float64."""
    y = case.asarray(y_np)
    value, grads = model.value_and_gradients(case.asarray(x_np, "float64"), y, training)
    assert_on_backend(value, case, "float64")
    assert value.ndim == 0
    grads = {k: case.to_numpy(v) for k, v in grads.items()}
    params = {k: case.to_numpy(v).copy() for k, v in model.parameters().items()}
    assert set(grads) == set(params)

    def objective(x):
        y_pred, _ = model.forward(case.asarray(x, "float64"), training)
        return float(case.to_numpy(model.loss(y_pred, y)[0] + model.regularization_loss()))

    # input gradient through the model's backward
    y_pred, _ = model.forward(case.asarray(x_np, "float64"), training)
    dx = model.backward(model.loss(y_pred, y)[1])
    err = relative_error(case.to_numpy(dx), numerical_gradient(objective, x_np))
    assert err < FD_TOL, f"input gradient: relative error {err:.2e}"
    assert_parameter_gradients(
        grads, params, lambda name, p: model.set_parameters({name: case.asarray(p)}),
        lambda: objective(x_np), FD_TOL)


# ---------------------------------------------------------------------------------------------
# end-to-end gradients
# ---------------------------------------------------------------------------------------------
def test_mlp_end_to_end_gradients(backend):
    model = make_mlp()
    assert sorted(model.named_regularizers()) == ["0.kernel", "3.bias"]
    check_model_gradients(model, rand(3, 4), np.array([0, 2, 1]), backend)


def test_cnn_end_to_end_gradients(backend):
    model = make_cnn()
    check_model_gradients(model, rand(2, 1, 4, 4), np.array([1, 2]), backend)


def test_training_gradients_skip_only_the_unused_input_gradient(backend):
    """value_and_gradients stops at the first trainable layer (skipping its dL/dx); the
    parameter gradients equal those of a full forward/backward pass."""
    model = Sequential([L.Flatten(), L.Dropout(0.0), L.Dense(6, 4, activation="tanh"),
                        L.Dense(4, 2)], loss="mse", seed=0, dtype="float64")
    x, t = backend.asarray(rand(3, 2, 3), "float64"), backend.asarray(rand(3, 2), "float64")
    _, grads = model.value_and_gradients(x, t)
    grads = {k: backend.to_numpy(v).copy() for k, v in grads.items()}
    y, backprop = model.forward(x, training=True)
    dx = backprop(model.loss(y, t)[1])
    assert tuple(dx.shape) == (3, 2, 3)
    for name, g in model.gradients().items():
        assert_matches(g, grads[name], backend, "float64")


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_weights_on_every_backend(backend):
    """Host draws in float64, cast on the host: bit-identical float32 weights everywhere."""
    def arch():
        return [L.Conv2D(1, 3, 3), L.BatchNorm(3), L.Flatten(), L.Dense(12, 4),
                L.LayerNorm(4), L.Dense(4, 2, kernel_initializer="orthogonal")]

    model = Sequential(arch(), seed=42)
    with pn.use_backend("numpy"):
        reference = Sequential(arch(), seed=42)
    for name, value in model.parameters().items():
        assert_on_backend(value, backend, "float32")
        np.testing.assert_array_equal(backend.to_numpy(value),
                                      reference.parameters()[name], err_msg=name)
    for name, value in model.buffers().items():
        np.testing.assert_array_equal(backend.to_numpy(value), reference.buffers()[name])
    other = Sequential(arch(), seed=43)
    assert not np.array_equal(backend.to_numpy(other.parameters()["0.kernel"]),
                              reference.parameters()["0.kernel"])
    # appending a layer leaves the earlier layers' draws alone (one stream per layer)
    longer = Sequential([*arch(), L.Dense(2, 2)], seed=42)
    np.testing.assert_array_equal(backend.to_numpy(longer.parameters()["3.kernel"]),
                                  reference.parameters()["3.kernel"])


def test_float64_model_keeps_dtype(backend):
    model = make_mlp(dtype="float64")
    for v in model.parameters().values():
        assert_on_backend(v, backend, "float64")
    y, _ = model.forward(backend.asarray(rand(2, 4), "float64"))
    assert_on_backend(y, backend, "float64")


# ---------------------------------------------------------------------------------------------
# training and moving
# ---------------------------------------------------------------------------------------------
def _moving_model(seed=3):
    return Sequential([L.Dense(4, 6, activation="relu"), L.BatchNorm(6), L.Dense(6, 3)],
                      loss="softmax_cross_entropy", optimizer=optimizers.Adam(0.05), seed=seed,
                      dtype="float64")


@pytest.mark.parametrize("direction", ["numpy->backend", "backend->numpy"])
def test_training_continues_identically_after_to(backend, direction):
    """2 steps on one backend, to(), 2 more on the other == 4 steps without moving (float64).

    The Adam moments and step count move with the model, and so do BatchNorm's running
    statistics; a lost or reset state would change steps 3 and 4.
    """
    x, labels = rand(8, 4), np.arange(8) % 3
    with pn.use_backend("numpy"):
        reference = _moving_model()
        ref_losses = [float(reference.train_step(x, labels)) for _ in range(4)]
    first, second = ("numpy", None), (backend.name, backend.device)
    if direction == "backend->numpy":
        first, second = second, first
    with pn.use_backend(*first) as b:
        model = _moving_model()
        losses_seen = [model.train_step(pn.asarray(x, "float64"), pn.asarray(labels))
                       for _ in range(2)]
        losses_seen = [float(pn.to_numpy(v)) for v in losses_seen]
        assert b.name == model.backend.name
    model.to(*second)
    with pn.use_backend(*second):
        for _ in range(2):
            losses_seen.append(float(pn.to_numpy(
                model.train_step(pn.asarray(x, "float64"), pn.asarray(labels)))))
        for slots in model.optimizer.state_dict()["slots"].values():
            for a in slots.values():
                assert pn.device_of(a) == pn.device_of(model.parameters()["0.kernel"])
    np.testing.assert_allclose(losses_seen, ref_losses, rtol=1e-10)
    for name, value in model.parameters().items():
        np.testing.assert_allclose(pn.to_numpy(value), reference.parameters()[name],
                                   rtol=1e-10, atol=1e-12, err_msg=name)
    for name, value in model.buffers().items():
        np.testing.assert_allclose(pn.to_numpy(value), reference.buffers()[name], rtol=1e-10)


def test_train_step_stays_on_device_and_learns(backend):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 2))
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    model = Sequential([L.Dense(2, 8, activation="tanh"), L.Dense(8, 2)],
                       loss="softmax_cross_entropy", optimizer=optimizers.SGD(0.5), seed=0)
    xb, yb = backend.asarray(x, "float32"), backend.asarray(labels)
    values = [model.train_step(xb, yb) for _ in range(30)]
    assert_on_backend(values[0], backend, "float32")
    assert values[0].ndim == 0
    first, last = float(backend.to_numpy(values[0])), float(backend.to_numpy(values[-1]))
    assert last < 0.5 * first
    for v in model.parameters().values():
        assert_on_backend(v, backend, "float32")


def test_train_step_adds_regularization_to_loss_and_gradients(backend):
    """SGD step by hand in NumPy: p <- p - lr * (dL/dp + d penalty/dp)."""
    lr = 0.1
    model = Sequential([L.Dense(3, 2, kernel_regularizer=regularizers.L1L2(0.1, 0.2),
                                bias_regularizer=regularizers.L2(0.3))],
                       loss="mse", optimizer=optimizers.SGD(lr), seed=1, dtype="float64")
    x, t = rand(4, 3), rand(4, 2, seed=2)
    w, b = (backend.to_numpy(model.parameters()[k]).copy() for k in ("0.kernel", "0.bias"))
    value = model.train_step(backend.asarray(x, "float64"), backend.asarray(t, "float64"))
    err = x @ w + b - t
    penalty = 0.1 * np.abs(w).sum() + 0.2 * (w ** 2).sum() + 0.3 * (b ** 2).sum()
    assert_matches(value, np.mean(err ** 2) + penalty, backend, "float64")
    d = 2 * err / err.size
    new_w = w - lr * (x.T @ d + 0.1 * np.sign(w) + 0.4 * w)
    new_b = b - lr * (d.sum(axis=0) + 0.6 * b)
    assert_matches(model.parameters()["0.kernel"], new_w, backend, "float64")
    assert_matches(model.parameters()["0.bias"], new_b, backend, "float64")


# ---------------------------------------------------------------------------------------------
# the API
# ---------------------------------------------------------------------------------------------
def test_forward_backward_and_gradients(backend):
    model = make_cnn()
    x = backend.asarray(rand(2, 1, 4, 4), "float64")
    with pytest.raises(RuntimeError, match="backward needs a forward pass first"):
        model.backward(backend.asarray(np.ones((2, 3)), "float64"))
    y, _ = model.forward(x, training=True)
    assert_on_backend(y, backend, "float64")
    dx = model.backward(backend.asarray(np.ones((2, 3)), "float64"))
    assert tuple(dx.shape) == (2, 1, 4, 4)
    assert_on_backend(dx, backend, "float64")
    grads = model.gradients()
    assert sorted(grads) == sorted(model.parameters()) == [
        "0.bias", "0.kernel", "1.beta", "1.gamma", "4.bias", "4.kernel"]
    for name, g in grads.items():
        assert tuple(g.shape) == tuple(model.parameters()[name].shape)
        assert_on_backend(g, backend, "float64")


def test_predict_batches_in_eval_mode(backend):
    model = Sequential([L.Dense(3, 4), L.Dropout(0.5), L.BatchNorm(4), L.Dense(4, 2)], seed=0)
    x = backend.asarray(rand(10, 3), "float32")
    full = model.predict(x)
    batched = model.predict(x, batch_size=3)
    assert_on_backend(batched, backend, "float32")
    assert_matches(batched, backend.to_numpy(full), backend, "float32")
    # eval mode: dropout off, running statistics (zeros/ones) => deterministic
    assert_matches(model.predict(x), backend.to_numpy(full), backend, "float32", atol=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        model.predict(x, batch_size=0)


def test_train_and_eval_flags(backend):
    model = Sequential([L.Dense(3, 3), L.Residual([L.Dropout(0.5)])], seed=0)
    assert not model.training
    model.train()
    assert all(layer.training for _, layer in model.named_leaves())
    x = backend.asarray(np.ones((4, 3)), "float32")
    y_train = backend.to_numpy(model.forward(x)[0])  # training=None -> the model's flag
    model.eval()
    assert not any(layer.training for _, layer in model.named_leaves())
    y_eval = backend.to_numpy(model.forward(x)[0])
    assert not np.array_equal(y_train, y_eval)
    np.testing.assert_array_equal(y_eval, backend.to_numpy(model.forward(x, training=False)[0]))


def test_parameters_and_buffers_round_trip(backend):
    model = make_cnn(dtype="float32")
    params = model.parameters()
    doubled = {k: v * 2.0 for k, v in params.items()}
    model.set_parameters(doubled)
    for k in params:
        assert_matches(model.parameters()[k], 2 * backend.to_numpy(params[k]), backend,
                       "float32", atol=0)
    assert sorted(model.buffers()) == ["1.running_mean", "1.running_var"]
    model.set_buffers({"1.running_mean": backend.asarray(np.full(2, 3.0), "float32")})
    assert_matches(model.buffers()["1.running_mean"], np.full(2, 3.0), backend, "float32")
    with pytest.raises(KeyError, match=r"unknown parameter names \['9.kernel'\]"):
        model.set_parameters({"9.kernel": params["0.kernel"]})
    with pytest.raises(ValueError, match=r"'4.bias' has shape \(3,\), received an array of "
                                         r"shape \(4,\)"):
        model.set_parameters({"4.bias": backend.asarray(np.zeros(4), "float32")})
    with pytest.raises(TypeError, match="'4.bias' is float32, received float64"):
        model.set_parameters({"4.bias": backend.asarray(np.zeros(3), "float64")})
    foreign = pn.asarray(np.zeros(3, dtype=np.float32),
                         backend="numpy" if backend.name != "numpy" else "array_api_strict")
    with pytest.raises(TypeError, match="another backend or device"):
        model.set_parameters({"4.bias": foreign})


def test_summary(backend):
    model = Sequential([L.Conv2D(1, 8, 3, padding="same", activation="relu"), L.MaxPool2D(2),
                        L.Flatten(), L.Dense(8 * 14 * 14, 10)], seed=0)
    text = model.summary(input_shape=(1, 28, 28))
    assert "(N, 8, 28, 28)" in text and "(N, 8, 14, 14)" in text and "(N, 1568)" in text
    assert "Conv2D(1 -> 8, 3x3)" in text and "Dense(1568 -> 10)" in text
    assert f"Total parameters: {8 * 9 + 8 + 1568 * 10 + 10:,}" in text
    assert model.num_parameters == 8 * 9 + 8 + 1568 * 10 + 10
    assert "? (pass input_shape)" in model.summary()
    model.predict(backend.asarray(np.zeros((2, 1, 28, 28)), "float32"))
    assert "(N, 8, 14, 14)" in model.summary()  # the shape seen in forward is remembered
    printed = []
    Sequential([L.Dense(4, 2)], seed=0).summary(print_fn=printed.append)
    assert "(N, 2)" in printed[0]
    with pytest.raises(ValueError, match="Dense expected input with 1568 features"):
        model.summary(input_shape=(1, 27, 27))


def test_config_round_trip(backend):
    model = Sequential([
        L.Conv2D(1, 2, 3, stride=2, padding="same", activation="relu",
                 kernel_regularizer=regularizers.L2(1e-3)),
        L.BatchNorm(2), L.Dropout(0.2), L.Flatten(), L.Reshape((-1,)),
        L.Residual(Sequential([L.Dense(8, 8, activation="gelu"), L.LayerNorm(8)])),
        L.Activation("tanh"), L.Dense(8, 3),
    ], loss=losses.SoftmaxCrossEntropy(label_smoothing=0.1),
        optimizer=optimizers.Adam(1e-3, amsgrad=True), seed=5, dtype="float64")
    config = json.loads(json.dumps(model.get_config()))
    again = Sequential.from_config(config)
    assert again.get_config() == model.get_config()
    assert again.loss == model.loss
    assert again.optimizer.get_config() == model.optimizer.get_config()
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(backend.to_numpy(again.parameters()[k]),
                                      backend.to_numpy(v))
    x = backend.asarray(rand(2, 1, 4, 4), "float64")
    assert_matches(again.predict(x), backend.to_numpy(model.predict(x)), backend, "float64")
    assert again.num_parameters == model.num_parameters


def test_nested_sequential_as_a_block(backend):
    inner = Sequential([L.Dense(3, 3, activation="tanh"), L.Dense(3, 3)], seed=9)
    model = Sequential([L.Dense(2, 3), inner, L.Residual(Sequential([L.Dense(3, 3)]))],
                       loss="mse", optimizer="sgd", seed=1, dtype="float64")
    assert sorted(model.parameters()) == [
        "0.bias", "0.kernel", "1.0.bias", "1.0.kernel", "1.1.bias", "1.1.kernel",
        "2.block.0.bias", "2.block.0.kernel"]
    check_model_gradients(model, rand(2, 2), rand(2, 3, seed=1), backend)
    # the outer seed decides the weights: the same architecture gives the same weights
    twin = Sequential([L.Dense(2, 3), Sequential([L.Dense(3, 3, activation="tanh"),
                                                  L.Dense(3, 3)], seed=1234),
                       L.Residual([L.Dense(3, 3)])], seed=1, dtype="float64")
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(backend.to_numpy(twin.parameters()[k]),
                                      backend.to_numpy(v))


def test_add_and_compile(backend):
    model = Sequential(seed=0)
    model.add(L.Dense(3, 4)).add(L.Dense(4, 2))
    reference = Sequential([L.Dense(3, 4), L.Dense(4, 2)], seed=0)
    for k, v in reference.parameters().items():
        np.testing.assert_array_equal(backend.to_numpy(model.parameters()[k]),
                                      backend.to_numpy(v))
    with pytest.raises(RuntimeError, match="no loss and no optimizer"):
        model.train_step(backend.asarray(rand(2, 3), "float32"), backend.asarray([0, 1]))
    model.compile(loss="softmax_cross_entropy", optimizer="sgd")
    value = model.train_step(backend.asarray(rand(2, 3), "float32"), backend.asarray([0, 1]))
    assert_on_backend(value, backend, "float32")


def test_bad_construction_and_input(backend):
    with pytest.raises(TypeError, match="Sequential item 1 is str, not a layer"):
        Sequential([L.Dense(2, 2), "relu"])
    with pytest.raises(TypeError, match="expects a list of layers, received Dense"):
        Sequential(L.Dense(2, 2))
    dense = L.Dense(2, 2)
    with pytest.raises(ValueError, match="item 1 is the same layer object"):
        Sequential([dense, dense])
    with pytest.raises(ValueError, match="seed must be a non-negative int or None, received -1"):
        Sequential([L.Dense(2, 2)], seed=-1)
    with pytest.raises(TypeError, match="dtype must be one of"):
        Sequential([L.Dense(2, 2)], dtype="int32")
    model = Sequential([L.Dense(2, 2)], seed=0)
    # another backend's device array (a NumPy array would be host data, converted like fit)
    other = "array_api_strict" if backend.name != "array_api_strict" else "torch"
    if other == "torch":
        pytest.importorskip("torch")
    with pytest.raises(MixedArraysError, match="different backends"):
        model.predict(pn.asarray(np.zeros((1, 2)), dtype="float32", backend=other))
    if backend.name != "numpy":  # (a NumPy array is host data: predict converts it, as fit)
        with pytest.raises(TypeError, match="received input of dtype float64"):
            model.predict(backend.asarray(np.zeros((1, 2)), "float64"))


def test_to_moves_everything(backend):
    with pn.use_backend("numpy"):
        model = _moving_model()
        model.train_step(rand(4, 4), np.arange(4) % 3)
    model.to(backend.name, backend.device)
    assert model.backend.name == backend.name
    for v in (*model.parameters().values(), *model.buffers().values(),
              *model.gradients().values()):
        assert_on_backend(v, backend, "float64")
    for slots in model.optimizer.state_dict()["slots"].values():
        for a in slots.values():
            assert_on_backend(a, backend, "float64")


def test_delegating_methods(monkeypatch, backend):
    calls = []
    training = types.ModuleType("portanet.training")
    io = types.ModuleType("portanet.io")
    for name in ("fit", "evaluate"):
        setattr(training, name, lambda m, x, y, _n=name, **kw: calls.append((_n, m, kw)) or _n)
    for name in ("predict_proba", "predict_classes"):
        setattr(training, name, lambda m, x, _n=name, **kw: calls.append((_n, m, kw)) or _n)
    for name in ("save", "save_weights", "load_weights"):
        setattr(io, name, lambda m, path, _n=name, **kw: calls.append((_n, m, kw)) or _n)
    # the model module imports the two modules of the floor below it, at its top
    monkeypatch.setattr(pn.model, "training", training)
    monkeypatch.setattr(pn.model, "io", io)
    model = Sequential([L.Dense(2, 2)], seed=0)
    assert model.fit(1, 2, epochs=3) == "fit"
    assert model.evaluate(1, 2) == "evaluate"
    assert model.predict_proba(1) == "predict_proba"
    assert model.predict_classes(1) == "predict_classes"
    assert model.save("p") == "save"
    assert model.save_weights("p") == "save_weights"
    assert model.load_weights("p") == "load_weights"
    assert [c[0] for c in calls] == ["fit", "evaluate", "predict_proba", "predict_classes",
                                     "save", "save_weights", "load_weights"]
    assert calls[0][1] is model and calls[0][2] == {"epochs": 3}


def test_predict_converts_host_data_like_fit(backend):
    """Host float64 arrays and lists go onto the model's device in its dtype, as in fit; an
    array of another backend is refused, not moved."""
    model = Sequential([L.Dense(2, 1)], seed=0)
    host = np.asarray([[1.0, 2.0], [3.0, 4.0]])  # float64 on the host
    expected = backend.to_numpy(model.predict(backend.asarray(host, "float32")))
    for x in (host, host.tolist()):
        y = model.predict(x)
        assert_on_backend(y, backend, "float32")
        np.testing.assert_array_equal(backend.to_numpy(y), expected)
    if backend.name != "numpy":
        return
    torch = pytest.importorskip("torch")
    with pytest.raises(pn.MixedArraysError):
        model.predict(torch.ones((2, 2)))
