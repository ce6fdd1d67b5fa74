"""A diverging ``fit`` is never silent: it warns, stops and rolls the model back (issue 14).

Checked on every backend: the warning names the epoch and the first bad step; the model's
parameters, buffers and optimizer state after the stop are bit-identical to their values at the
end of the last finite epoch (or before training); ``on_nonfinite="stop"`` and ``"continue"``;
``history.stop_reason``; callbacks that monitor validation values see NaN instead of a missing
key; and an optimizer with norm clipping skips a NaN step inside the (compiled) step.

Divergence is made real, not faked: at one chosen step the input batch is multiplied by inf, so
the forward pass, the loss, the gradients and the optimizer's in-place update all turn NaN, as
they do when a learning rate is far too large (test_a_huge_learning_rate_... shows that case).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import portanet as pn
from portanet import callbacks as cb
from portanet import data, layers, optimizers
from portanet.model import Sequential
from portanet.training import NonFiniteLossWarning

X, Y = data.make_spiral(n_samples=60, seed=0)
BATCH = 20  # 3 steps per epoch (the shapes of test_callbacks.py: JAX compiles them once)


def _model(optimizer=None, batch_norm=True):
    """Parameters, BatchNorm buffers and Adam slots: every part of the state that must return."""
    return Sequential([layers.Dense(2, 8), *([layers.BatchNorm(8)] if batch_norm else []),
                       layers.Activation("relu"), layers.Dense(8, 3)],
                      loss="softmax_cross_entropy",
                      optimizer=optimizer or optimizers.Adam(0.01), seed=0)


class _InfAt:
    """Make step ``step`` of epoch ``epoch`` see ``x * inf``: a real NaN loss and NaN update."""

    def __init__(self, model, epoch, step, steps_per_epoch=3):
        self.step_fn, self.count = model.train_step, 0
        self.bad = epoch * steps_per_epoch + step
        model.train_step = self

    def __call__(self, x, y):
        self.count += 1
        return self.step_fn(x * math.inf if self.count - 1 == self.bad else x, y)


class _Record(cb.Callback):
    """Host copies of the whole state (parameters, buffers, optimizer slots and step count) at
    the start of training and at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.states = []

    def _take(self):
        opt = self.model.optimizer.state_dict()
        self.states.append({
            "params": {k: pn.to_numpy(v).copy() for k, v in self.model.parameters().items()},
            "buffers": {k: pn.to_numpy(v).copy() for k, v in self.model.buffers().items()},
            "slots": {f"{p}/{s}": pn.to_numpy(a).copy() for p, slots in opt["slots"].items()
                      for s, a in slots.items()},
            "step": opt["step"]})

    def on_train_begin(self, logs):
        self._take()

    def on_epoch_end(self, epoch, logs):
        self._take()


def _state(model) -> dict:
    rec = _Record()
    rec.set_context(model, cb.TrainingState())
    rec._take()
    return rec.states[0]


def _assert_same_state(actual: dict, expected: dict) -> None:
    assert actual["step"] == expected["step"]
    if not expected["slots"]:  # before the first step: the fresh state, zeros (made on demand)
        assert all(not v.any() for v in actual["slots"].values())
        actual = {**actual, "slots": {}}
    for part in ("params", "buffers", "slots"):
        assert actual[part].keys() == expected[part].keys()
        for name, value in expected[part].items():
            np.testing.assert_array_equal(actual[part][name], value, err_msg=f"{part} {name}")


def _fit(model, **kw):
    kw.setdefault("epochs", 5)
    return model.fit(X, Y, batch_size=BATCH, verbose=0, seed=0, shuffle=False, **kw)


@pytest.fixture(autouse=True)
def _quiet_numpy():
    """NaN arithmetic is the point here: NumPy's "invalid value" warnings are expected."""
    with np.errstate(all="ignore"):
        yield


def test_a_diverging_fit_warns_stops_and_restores_the_last_finite_epoch(backend):
    model = _model()
    _InfAt(model, epoch=2, step=1)
    record = _Record()
    with pytest.warns(NonFiniteLossWarning) as caught:
        history = _fit(model, callbacks=[record])
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "the training loss became nan in epoch 3, first at step 2 of 3" in message
    assert "back to what they were at the end of epoch 2" in message
    assert "Lower the learning rate (it was 0.01)" in message and "global_clip_norm" in message
    assert caught[0].filename == __file__  # points at the user's fit call, not into portanet
    assert history.stop_reason == "nonfinite_loss" and history.stop_message == message
    assert history.epoch == [0, 1, 2] and math.isnan(history["loss"][2])
    # the epoch's in-place updates wrote NaN into the arrays; the copy taken after epoch 2 is back
    after_epoch_2 = record.states[2]
    assert not np.isfinite(record.states[3]["params"]["0.kernel"]).all()
    _assert_same_state(_state(model), after_epoch_2)
    assert model.epoch == 2  # the weights it holds are those of 2 epochs
    # training on from the restored state works (on JAX: nothing donated was handed back)
    again = _fit(model, epochs=1)
    assert math.isfinite(again["loss"][0])
    assert np.isfinite(pn.to_numpy(model.predict(X))).all()


def test_divergence_in_the_first_epoch_restores_the_initial_state(backend):
    model = _model()
    initial = _state(model)
    _InfAt(model, epoch=0, step=2)
    with pytest.warns(NonFiniteLossWarning, match="epoch 1, first at step 3 of 3.*what they "
                                                  "were before training"):
        history = _fit(model)
    _assert_same_state(_state(model), initial)
    assert history.epoch == [0] and model.epoch == 0


def test_on_nonfinite_stop_keeps_the_diverged_weights(backend):
    model = _model()
    _InfAt(model, epoch=1, step=0)
    with pytest.warns(NonFiniteLossWarning, match=r"on_nonfinite='stop'"):
        history = _fit(model, on_nonfinite="stop")
    assert history.stop_reason == "nonfinite_loss" and history.epoch == [0, 1]
    assert not np.isfinite(pn.to_numpy(model.parameters()["0.kernel"])).all()
    assert model.epoch == 2


def test_on_nonfinite_continue_warns_once_and_trains_on(backend):
    model = _model()
    _InfAt(model, epoch=1, step=0)
    with pytest.warns(NonFiniteLossWarning, match="Training continues") as caught:
        history = _fit(model, epochs=4, on_nonfinite="continue")
    assert len(caught) == 1  # the NaN stays, but one warning says so
    assert history.stop_reason is None and history.epoch == [0, 1, 2, 3]
    assert all(math.isnan(v) for v in history["loss"][1:])


def test_a_huge_learning_rate_diverges_with_a_warning_and_finite_weights():
    """The issue's example: SGD(1e6), verbose=0, no callbacks. It used to return NaN losses and
    NaN weights without a word."""
    x, y = data.make_noisy_sine(n_samples=60, seed=0)
    model = Sequential([layers.Dense(1, 8, activation="relu"), layers.Dense(8, 1)],
                       loss="mean_squared_error", optimizer=optimizers.SGD(1e6), seed=0)
    initial = _state(model)
    with pytest.warns(NonFiniteLossWarning, match=r"Lower the learning rate \(it was 1e\+06\)"):
        history = model.fit(x * 100, y, epochs=20, batch_size=BATCH, verbose=0, seed=0)
    assert history.stop_reason == "nonfinite_loss" and len(history.epoch) < 20
    assert not math.isfinite(history["loss"][-1])
    for p in model.parameters().values():
        assert np.isfinite(pn.to_numpy(p)).all()
    if len(history.epoch) == 1:
        _assert_same_state(_state(model), initial)


def test_monitors_see_nan_and_terminate_on_nan_keeps_its_reason(backend):
    """EarlyStopping on val_loss used to fail with a missing key after a NaN epoch (validation
    is skipped then); now the epoch logs NaN for it. A callback that stops first names the
    reason; fit still rolls the weights back."""
    model = _model()
    _InfAt(model, epoch=1, step=1)
    record = _Record()
    stopper = cb.EarlyStopping(monitor="val_accuracy", patience=5)
    with pytest.warns(NonFiniteLossWarning):
        history = _fit(model, callbacks=[record, stopper, cb.TerminateOnNaN()],
                       validation_data=(X[:20], Y[:20]), metrics=["accuracy"])
    assert math.isnan(history["val_loss"][1]) and math.isnan(history["val_accuracy"][1])
    assert history.stop_reason == "terminate_on_nan"
    assert "TerminateOnNaN: the training loss became nan at epoch 2, step 2" in \
        history.stop_message
    _assert_same_state(_state(model), record.states[1])


def test_bad_on_nonfinite_is_refused_before_training():
    with pytest.raises(ValueError, match=r"on_nonfinite must be one of 'restore', 'stop', "
                                         r"'continue', received 'ignore'"):
        _fit(_model(), on_nonfinite="ignore")


@pytest.mark.parametrize("clip", ["global_clip_norm", "clip_norm"])
def test_norm_clipping_skips_a_nan_step_inside_the_step(backend, clip):
    """An inf input gives a NaN loss and NaN gradients: with norm clipping the optimizer keeps
    the parameters and its state (on JAX inside the compiled step); the loss still says NaN.
    (BatchNorm's running statistics are updated by the forward pass, before the optimizer: a
    NaN batch reaches them regardless, so this model has none.)"""
    model = _model(optimizer=optimizers.Adam(0.01, **{clip: 1.0}), batch_norm=False)
    x, y = backend.asarray(X[:BATCH], "float32"), backend.asarray(Y[:BATCH], "int64")
    model.train_step(x, y)
    before = _state(model)
    loss = model.train_step(x * math.inf, y)
    assert math.isnan(float(pn.to_numpy(loss)))
    after = _state(model)
    assert after["step"] == before["step"] + 1  # a host int: it counts the skipped step
    after["step"] = before["step"]
    _assert_same_state(after, before)
    model.train_step(x, y)
    assert all(np.isfinite(v).all() for v in _state(model)["params"].values())


@pytest.mark.parametrize("processes", [1, 2])
def test_a_nonfinite_sum_of_finite_steps_says_where_it_can_come_from(processes):
    """No step of this process was NaN, yet the epoch's loss is: one process -> the sum of the
    losses overflowed; data-parallel -> another process's rows may have given it (the loss is
    the all-reduced sum), and the message must not blame an overflow alone."""
    from portanet.callbacks import TrainingState
    from portanet.training import _NonFiniteGuard

    state = TrainingState(epochs=3, steps_per_epoch=3)
    guard = _NonFiniteGuard(_model(), "stop", state, 0)
    with pytest.warns(NonFiniteLossWarning) as caught:
        guard.diverged(1, math.nan, None, 0.01, processes)
    message = str(caught[0].message)
    assert "in epoch 2" in message and state.stop_reason == "nonfinite_loss"
    if processes == 1:
        assert "their sum overflowed" in message
    else:
        assert "another process's rows" in message and "this process" in message
