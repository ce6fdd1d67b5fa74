"""layer.trainable: frozen parameters get no gradient and no update, on every backend and
executor; backprop stops early; checkpoints keep the flag; the fine-tuning recipe works."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import layers as L


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def model(**kw):
    return pn.Sequential([L.Dense(4, 8, activation="relu"), L.BatchNorm(8), L.Dense(8, 2)],
                         loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(1e-2),
                         seed=0, **kw)


def host(arrays):
    return {k: pn.to_numpy(v).copy() for k, v in arrays.items()}


@pytest.mark.parametrize("jit", [False, "auto"])
def test_frozen_layers_do_not_move(backend, jit):
    m = model(jit_compile=jit)
    x, y = data()
    m.layers[0].trainable = False
    m.layers[1].trainable = False
    before, buffers = host(m.parameters()), host(m.buffers())
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    after = host(m.parameters())
    for name in ("0.kernel", "0.bias", "1.gamma", "1.beta"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    assert not np.array_equal(after["2.kernel"], before["2.kernel"])
    # a frozen BatchNorm normalizes with its running statistics and leaves them alone
    for name, value in host(m.buffers()).items():
        np.testing.assert_array_equal(value, buffers[name], err_msg=name)
    # the optimizer keeps no state for frozen parameters
    assert sorted(m.optimizer.state_dict()["slots"]) == ["2.bias", "2.kernel"]


def test_frozen_gradients_are_absent_and_the_rest_unchanged(backend):
    """The trainable head's gradient is the same whether the body is frozen or not."""
    x, y = data(8)
    xb, yb = backend.asarray(x, "float64"), backend.asarray(y)
    m = model(dtype="float64")
    m.eval()  # BatchNorm in evaluation mode in both runs: the same function of the head
    _, full = m.value_and_gradients(xb, yb, training=False)
    m.layers[0].trainable = False
    _, part = m.value_and_gradients(xb, yb, training=False)
    assert sorted(part) == ["1.beta", "1.gamma", "2.bias", "2.kernel"]
    for k, v in part.items():
        np.testing.assert_allclose(pn.to_numpy(v), pn.to_numpy(full[k]), rtol=1e-12)


def test_backprop_stops_at_the_first_trainable_layer(backend):
    calls = []

    class Spy(L.Dense):
        def forward(self, x, training=None):
            y, backprop = super().forward(x, training)

            def spied(dy, input_gradient=True):
                calls.append(input_gradient)
                return backprop(dy, input_gradient)

            return y, spied

    m = pn.Sequential([Spy(4, 4), Spy(4, 4), L.Dense(4, 2)], loss="mse", optimizer="sgd",
                      seed=0, jit_compile=False)
    x = backend.asarray(np.ones((2, 4)), "float32")
    y = backend.asarray(np.zeros((2, 2)), "float32")
    m.train_step(x, y)
    assert calls == [True, False]  # layer 1 computes dL/dx for layer 0, which skips its own
    calls.clear()
    m.layers[0].trainable = False
    m.train_step(x, y)
    assert calls == [False]  # layer 0 is frozen: nobody needs dL/dx of layer 1's input


def test_toggling_recompiles_and_unfreezing_trains_again(backend):
    m = model()
    x, y = data()
    m.fit(x, y, epochs=1, verbose=0)
    m.layers[0].trainable = False
    frozen = host(m.parameters())["0.kernel"]
    m.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_array_equal(host(m.parameters())["0.kernel"], frozen)
    m.layers[0].trainable = True
    m.fit(x, y, epochs=1, verbose=0)
    assert not np.array_equal(host(m.parameters())["0.kernel"], frozen)


def test_container_flag_reaches_every_layer_and_checkpoints_keep_it(tmp_path):
    block = L.Residual([L.Dense(4, 4), L.Dense(4, 4)])
    m = pn.Sequential([block, L.Dense(4, 2)], loss="mse", optimizer="sgd", seed=0)
    block.trainable = False
    assert [leaf.trainable for _, leaf in m.named_leaves()] == [False, False, True]
    assert sorted(m.named_trainable_parameters()) == ["1.bias", "1.kernel"]
    assert m.num_trainable_parameters == 10
    assert "Frozen parameters: 40" in m.summary()
    m.save(tmp_path / "m.safetensors")
    loaded = pn.load(tmp_path / "m.safetensors")
    assert [leaf.trainable for _, leaf in loaded.named_leaves()] == [False, False, True]
    assert loaded.layers[0].trainable is False and loaded.layers[1].trainable is True
    config = L.serialize(L.Dense(2, 2))
    assert "trainable" not in config  # default configs stay as they were
    with pytest.raises(ValueError, match="'trainable' flag of a Dense config must be true or "
                                         "false, received 'no'"):
        L.deserialize({**config, "trainable": "no"})
    with pytest.raises(TypeError, match="trainable must be True or False, received 0"):
        L.Dense(2, 2).trainable = 0


def test_fine_tuning_recipe(tmp_path):
    """docs/training.md's recipe: load a trained model, freeze its body, train a new head."""
    x, y = data(256)
    base = pn.Sequential([L.Dense(4, 16, activation="relu"), L.Dense(16, 2)],
                         loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(1e-2), seed=0)
    base.fit(x, y, epochs=20, batch_size=32, verbose=0)
    base.save(tmp_path / "base.safetensors")

    model = pn.load(tmp_path / "base.safetensors")
    model.pop()                                        # the old head
    for layer in model.layers:
        layer.trainable = False                        # the body keeps what it learned
    model.add(L.Dense(16, 3))                          # a new head for a new task
    model.compile(optimizer=pn.optimizers.Adam(1e-2))  # fresh optimizer state
    body = host(model.parameters())["0.kernel"]
    y3 = np.where(x[:, 0] + x[:, 1] > 1.0, 2, y)       # three classes now
    model.fit(x, y3, epochs=30, batch_size=32, verbose=0)
    np.testing.assert_array_equal(host(model.parameters())["0.kernel"], body)
    accuracy = model.evaluate(x, y3, metrics=["accuracy"])["accuracy"]
    assert accuracy > 0.85, accuracy
