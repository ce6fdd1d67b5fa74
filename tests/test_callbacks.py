"""portanet.callbacks: the hook order, EarlyStopping, ModelCheckpoint, learning-rate callbacks,
TerminateOnNaN, CSVLogger and History, in real ``fit`` runs on every backend.

Monitored values are scripted by a callback placed first in the list (it overwrites
``logs["val_loss"]``), so each test knows exactly which epoch is "best".
"""

from __future__ import annotations

import csv
import io as io_module
import math

import numpy as np
import pytest

import portanet as pn
from portanet import callbacks as cb
from portanet import data, io, layers, optimizers
from portanet.model import Sequential
from portanet.training import NonFiniteLossWarning

X, Y = data.make_spiral(n_samples=60, seed=0)
BATCH = 20  # 3 steps per epoch; the model and batch shapes of test_training.py (JAX compiles
# each operation once per shape, so sharing shapes between the files saves most of its time)


def _model(lr=0.01, optimizer=None):
    return Sequential([layers.Dense(2, 16, activation="relu"), layers.Dense(16, 3)],
                      loss="softmax_cross_entropy", optimizer=optimizer or optimizers.Adam(lr),
                      seed=0)


class Script(cb.Callback):
    """Overwrite a logged value with a scripted sequence (one entry per epoch)."""

    def __init__(self, values, key="val_loss"):
        super().__init__()
        self.values, self.key = list(values), key
        self.adds_logs = (key,)  # so that a callback monitoring it passes on_train_begin

    def on_epoch_end(self, epoch, logs):
        logs[self.key] = self.values[epoch]


class Snapshots(cb.Callback):
    """Record a host copy of the parameters after each epoch."""

    def __init__(self):
        super().__init__()
        self.params = []

    def on_epoch_end(self, epoch, logs):
        self.params.append({k: pn.to_numpy(v).copy() for k, v in self.model.parameters().items()})


def _fit(model, callbacks, epochs, **kw):
    return model.fit(X, Y, epochs=epochs, batch_size=BATCH, verbose=0, seed=0,
                     callbacks=callbacks, **kw)


def test_hook_order_and_logs(backend):
    calls = []

    class Recorder(cb.Callback):
        def on_train_begin(self, logs):
            calls.append("train_begin")

        def on_epoch_begin(self, epoch, logs):
            calls.append(f"epoch_begin {epoch}")

        def on_batch_end(self, step, logs):
            calls.append(f"batch {step} {logs['size']}")

        def on_epoch_end(self, epoch, logs):
            calls.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, logs):
            calls.append("train_end")

    _fit(_model(), [Recorder()], epochs=2)
    keys = "['loss', 'lr', 'samples_per_second', 'time']"
    assert calls == ["train_begin", "epoch_begin 0", "batch 0 20", "batch 1 20", "batch 2 20",
                     f"epoch_end 0 {keys}", "epoch_begin 1", "batch 0 20", "batch 1 20",
                     "batch 2 20", f"epoch_end 1 {keys}", "train_end"]


def test_early_stopping_restores_best_weights(backend):
    val = [1.0, 0.8, 0.7, 0.75, 0.72, 0.9, 0.6]  # best at epoch 2, then no improvement
    snaps = Snapshots()
    stopper = cb.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    history = _fit(_model(), [Script(val), snaps, stopper], epochs=7)
    assert stopper.best_epoch == 2 and stopper.stopped_epoch == 5
    assert history.epoch == [0, 1, 2, 3, 4, 5]  # epoch 6 (val 0.6) never ran
    assert history.stop_reason == "early_stopping"
    assert "EarlyStopping" in history.stop_message and "epoch 3" in history.stop_message
    for name, value in _model_params(stopper.model).items():
        np.testing.assert_array_equal(value, snaps.params[2][name])


def _model_params(model):
    return {k: pn.to_numpy(v) for k, v in model.parameters().items()}


def test_early_stopping_min_delta_mode_and_baseline():
    stopper = cb.EarlyStopping(monitor="val_accuracy", patience=1, min_delta=0.05)
    assert stopper.tracker.mode == "max"
    history = _fit(_model(), [Script([0.5, 0.53, 0.54], "val_accuracy"), stopper], epochs=3)
    assert history.epoch == [0, 1]  # +0.03 is not an improvement of more than 0.05
    stopper = cb.EarlyStopping(monitor="loss", patience=0, baseline=1e-9)
    assert len(_fit(_model(), [stopper], epochs=3).epoch) == 1
    with pytest.raises(ValueError, match=r"EarlyStopping monitors 'val_loss', but fit will log "
                                         r"only \['loss', 'lr', .*Pass validation data"):
        _fit(_model(), [cb.EarlyStopping()], epochs=1)
    with pytest.raises(ValueError, match="patience must be an int >= 0, received -1"):
        cb.EarlyStopping(patience=-1)


def test_model_checkpoint_best_only(backend, tmp_path):
    val = [1.0, 0.5, 0.7, 0.4]
    snaps = Snapshots()
    ckpt = cb.ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True)
    _fit(_model(), [Script(val), snaps, ckpt], epochs=4)
    assert len(ckpt.saved) == 3 and ckpt.best == 0.4  # epochs 1, 2 and 4 improved
    restored = io.load(tmp_path / "best.safetensors", backend="numpy")
    assert restored.epoch == 4
    for name, value in _model_params(restored).items():
        np.testing.assert_array_equal(value, snaps.params[3][name])


def test_model_checkpoint_every_epoch_with_fields(tmp_path):
    pattern = str(tmp_path / "ckpt-{epoch:02d}-{loss:.3f}.safetensors")
    ckpt = cb.ModelCheckpoint(pattern, save_weights_only=True)
    history = _fit(_model(), [ckpt], epochs=3)
    assert [p.rsplit("/", 1)[-1] for p in ckpt.saved] == [
        f"ckpt-{e + 1:02d}-{history['loss'][e]:.3f}.safetensors" for e in range(3)]
    assert io.read_checkpoint(ckpt.saved[-1]).kind == "weights"
    bad = cb.ModelCheckpoint(str(tmp_path / "{val_acc}.safetensors"))
    with pytest.raises(ValueError, match="could not be filled.*available fields: epoch, loss"):
        _fit(_model(), [bad], epochs=1)


def test_learning_rate_scheduler(backend):
    seen = []
    model = _model()
    history = _fit(model, [cb.LearningRateScheduler(lambda epoch: 0.1 * 0.5 ** epoch),
                           cb.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
                               model.optimizer.learning_rate))], epochs=3)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025]) == seen
    history = _fit(_model(lr=0.2), [cb.LearningRateScheduler(lambda epoch, lr: lr / 2)],
                   epochs=3)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="the schedule returned -1.0 for epoch 0"):
        _fit(_model(), [cb.LearningRateScheduler(lambda epoch: -1.0)], epochs=1)


def test_reduce_lr_on_plateau(backend):
    from portanet import schedules

    val = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    reducer = cb.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.006,
                                   verbose=False)
    history = _fit(_model(lr=0.02), [Script(val), reducer], epochs=8)
    # no improvement from epoch 2: reduce after epochs 3 and 6 (epoch 4 is the cooldown);
    # the second reduction stops at min_lr
    assert reducer.reductions == [(3, 0.01), (6, 0.006)]
    assert history["lr"] == pytest.approx([0.02] * 4 + [0.01] * 3 + [0.006])
    with pytest.raises(ValueError, match="ReduceLROnPlateau needs a numeric learning rate"):
        _fit(_model(optimizer=optimizers.Adam(schedules.ExponentialDecay(0.1, 0.9))),
             [cb.ReduceLROnPlateau()], epochs=1)
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\)"):
        cb.ReduceLROnPlateau(factor=2.0)


class _PoisonAt:
    """Wrap train_step so that step ``step`` of epoch ``epoch`` returns NaN."""

    def __init__(self, model, epoch, step, steps_per_epoch):
        self.step_fn, self.count = model.train_step, 0
        self.bad = epoch * steps_per_epoch + step
        model.train_step = self

    def __call__(self, x, y):
        loss = self.step_fn(x, y)
        self.count += 1
        return loss * math.nan if self.count - 1 == self.bad else loss


def test_terminate_on_nan_names_epoch_and_step(backend):
    model = _model()
    _PoisonAt(model, epoch=1, step=2, steps_per_epoch=3)
    stop = cb.TerminateOnNaN()
    with pytest.warns(NonFiniteLossWarning):  # fit's own check speaks too
        history = _fit(model, [stop], epochs=5)
    assert (stop.epoch, stop.step) == (1, 2)
    assert history.stop_reason == "terminate_on_nan"
    assert "at epoch 2, step 3 of 3" in history.stop_message
    assert len(history["loss"]) == 2 and math.isnan(history["loss"][1])


def test_terminate_on_nan_mid_epoch_with_progress_reads(backend):
    model = _model()
    poison = _PoisonAt(model, epoch=0, step=0, steps_per_epoch=3)
    stop = cb.TerminateOnNaN()
    with pytest.warns(NonFiniteLossWarning):
        _fit(model, [stop], epochs=2, progress_every=1)
    assert (stop.epoch, stop.step) == (0, 0) and poison.count == 1  # stopped after step 1


def test_real_divergence_is_caught():
    x, y = data.make_noisy_sine(n_samples=60, seed=0)
    model = Sequential([layers.Dense(1, 8, activation="relu"), layers.Dense(8, 1)],
                       loss="mean_squared_error", optimizer=optimizers.SGD(1e6), seed=0)
    stop = cb.TerminateOnNaN()
    with np.errstate(all="ignore"), pytest.warns(NonFiniteLossWarning):
        history = model.fit(x * 100, y, epochs=20, batch_size=BATCH, verbose=0, seed=0,
                            callbacks=[stop])
    assert stop.epoch is not None and len(history.epoch) == stop.epoch + 1 < 20
    assert history.stop_reason == "terminate_on_nan"
    assert "TerminateOnNaN: the training loss became" in history.stop_message


def test_csv_logger(backend, tmp_path):
    path = tmp_path / "log.csv"
    history = _fit(_model(), [cb.CSVLogger(path)], epochs=2)
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "loss", "lr", "time", "samples_per_second"]
    assert [r[0] for r in rows[1:]] == ["1", "2"]
    assert float(rows[2][1]) == history["loss"][1]
    _fit(_model(), [cb.CSVLogger(path, append=True)], epochs=1)
    rows = list(csv.reader(path.open()))
    assert len(rows) == 4 and rows[0][0] == "epoch" and rows[3][0] == "1"


def test_history_pads_late_keys():
    history = cb.History()
    history.on_epoch_end(0, {"loss": 1.0})
    history.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.7})
    history.on_epoch_end(2, {"val_loss": 0.6})
    assert history["loss"] == [1.0, 0.5, pytest.approx(math.nan, nan_ok=True)]
    assert history["val_loss"][0] != history["val_loss"][0] and history["val_loss"][1:] == [
        0.7, 0.6]
    assert "loss" in history and "History(epochs=3" in repr(history)


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    import sys

    history = cb.History()
    history.on_epoch_end(0, {"loss": 1.0})
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"History.plot needs matplotlib: pip install "
                                          r"'portanet\[plot\]'"):
        history.plot(str(tmp_path / "x.png"))


def test_progress_bar_plain_and_tqdm(capsys):
    model = _model()
    model.fit(X, Y, epochs=2, batch_size=BATCH, verbose=1, seed=0,
              callbacks=[cb.LambdaCallback(on_epoch_end=lambda e, logs: None)])
    out = capsys.readouterr()
    lines = [line for line in out.out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and "loss" in lines[0] and "samples/s" in lines[0]
    bar = cb.ProgressBar(verbose=1, use_tqdm=False)
    model.fit(X, Y, epochs=1, batch_size=BATCH, verbose=0, seed=0, callbacks=[bar],
              progress_every=1)
    assert capsys.readouterr().out.startswith("epoch 1/1")


class _Terminal(io_module.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("use_tqdm", [True, False])
def test_progress_bar_on_a_terminal(use_tqdm):
    if use_tqdm:
        pytest.importorskip("tqdm")
    stream = _Terminal()
    bar = cb.ProgressBar(verbose=1, stream=stream, use_tqdm=use_tqdm)
    _fit(_model(), [bar], epochs=2, progress_every=1)
    text = stream.getvalue()
    assert "loss" in text and "samples/s" in text and "epoch 2/2" in text
    if use_tqdm:
        assert "step" in text  # tqdm's bar, with its unit
    else:
        assert "\repoch 1/2 [" in text and "2/3" in text  # the plain line, rewritten in place


def test_callback_list_rejects_other_objects():
    with pytest.raises(TypeError, match="callbacks must be portanet.callbacks.Callback "
                                        "instances, received 'nope'"):
        _fit(_model(), ["nope"], epochs=1)


# ---------------------------------------------------------------------------------------------
# Settings that cannot work fail in on_train_begin, not after a whole epoch
# ---------------------------------------------------------------------------------------------
class _NoStep:
    """A model whose train_step fails the test: the error must come before any step."""

    def __init__(self, model):
        self.step_fn = model.train_step
        model.train_step = self

    def __call__(self, x, y):
        raise AssertionError("a training step ran before the misconfiguration was reported")


@pytest.mark.parametrize("make, error, message", [
    (lambda tmp: cb.ModelCheckpoint(tmp / "missing" / "best.safetensors"), FileNotFoundError,
     r"ModelCheckpoint: the folder '.*missing' of filepath '.*best.safetensors' does not exist. "
     r"Create it first \(os.makedirs\("),
    (lambda tmp: cb.ModelCheckpoint(tmp / "best.safetensors", save_best_only=True), ValueError,
     r"ModelCheckpoint monitors 'val_loss', but fit will log only \['loss', 'lr', 'time', "
     r"'samples_per_second'\]. Pass validation data to fit \(validation_split=0.1"),
    (lambda tmp: cb.ModelCheckpoint(tmp / "{val_acc}.safetensors"), ValueError,
     r"could not be filled.*available fields: epoch, loss, lr"),
    (lambda tmp: cb.EarlyStopping(), ValueError,
     r"EarlyStopping monitors 'val_loss', but fit will log only .*Pass validation data"),
    (lambda tmp: cb.ReduceLROnPlateau(), ValueError,
     r"ReduceLROnPlateau monitors 'val_loss', but fit will log only .*Pass validation data"),
    (lambda tmp: cb.EarlyStopping(monitor="accuracy"), ValueError,
     r"monitors 'accuracy'.*Ask fit for 'accuracy' in metrics=\[...\] with train_metrics=True"),
])
def test_misconfigured_callbacks_fail_before_the_first_step(tmp_path, make, error, message):
    model = _model()
    _NoStep(model)
    with pytest.raises(error, match=message):
        _fit(model, [make(tmp_path)], epochs=3)


def test_monitoring_a_validation_metric_that_is_not_computed_says_how(tmp_path):
    model = _model()
    _NoStep(model)
    with pytest.raises(ValueError, match=r"monitors 'val_accuracy', but fit will log only "
                                         r"\['loss', 'val_loss', .*Ask fit for 'accuracy' in "
                                         r"metrics=\[...\]"):
        _fit(model, [cb.EarlyStopping(monitor="val_accuracy")], epochs=3,
             validation_split=1 / 3)


def test_well_configured_callbacks_pass_the_check(tmp_path):
    """The same callbacks train when the values exist: validation data, the metric asked for,
    or a callback that declares the value it adds (adds_logs)."""
    ckpt = cb.ModelCheckpoint(tmp_path / "best-{val_accuracy:.2f}.safetensors",
                              monitor="val_accuracy", save_best_only=True)
    history = _fit(_model(), [ckpt, cb.EarlyStopping(monitor="val_loss"),
                              cb.ReduceLROnPlateau(monitor="val_accuracy", verbose=False)],
                   epochs=2, validation_split=1 / 3, metrics=["accuracy"])
    assert len(history.epoch) == 2 and ckpt.saved
    custom = cb.LambdaCallback(on_epoch_end=lambda e, logs: logs.update(score=-e),
                               adds_logs=("score",))
    history = _fit(_model(), [custom, cb.EarlyStopping(monitor="score", mode="max",
                                                       patience=1)], epochs=3)
    assert history.epoch == [0, 1] and history.stop_reason == "early_stopping"


def test_model_checkpoint_never_saves_a_diverged_epoch(backend, tmp_path):
    """A fixed filepath saved every epoch: the NaN epoch must not overwrite the good file."""
    path = tmp_path / "last.safetensors"
    model = _model()
    _PoisonAt(model, epoch=1, step=0, steps_per_epoch=3)
    snaps = Snapshots()
    ckpt = cb.ModelCheckpoint(path)
    with pytest.warns(NonFiniteLossWarning):
        _fit(model, [snaps, ckpt], epochs=3)
    assert ckpt.saved == [str(path)]  # epoch 1 only
    restored = io.load(path, backend="numpy")
    assert restored.epoch == 1
    for name, value in _model_params(restored).items():
        np.testing.assert_array_equal(value, snaps.params[0][name])


def test_the_first_callback_to_stop_names_the_reason():
    class Quit(cb.Callback):
        def on_epoch_end(self, epoch, logs):
            self.stop_training("Quit: enough.")

    history = _fit(_model(), [Quit(), cb.EarlyStopping(monitor="loss", patience=0,
                                                       baseline=0.0)], epochs=3)
    assert history.epoch == [0]
    assert history.stop_reason == "callback" and history.stop_message == "Quit: enough."
