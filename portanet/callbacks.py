"""Callbacks: code that runs at fixed points of ``fit`` to watch, save, adjust or stop training.

The training loop calls, in order::

    on_train_begin(logs)
    for each epoch:   on_epoch_begin(epoch, logs)
                      for each step: on_batch_end(step, logs)     # logs["size"]; "loss" only
                                                                  # where the loop read it
                      on_epoch_end(epoch, logs)                   # loss, val_*, metrics, lr, time
    on_train_end(logs)

``epoch`` and ``step`` count from 0. Epoch logs hold Python floats, read from the device once
per epoch, so a callback never forces a host sync per step. A callback stops training with
``self.stop_training("why", reason="my_reason")`` (the loop finishes the current epoch's
bookkeeping, then ends); ``history.stop_reason`` holds the short reason of whoever stopped
first ("early_stopping", "terminate_on_nan", fit's own "nonfinite_loss", ...) and
``history.stop_message`` the sentence.

Settings that cannot work are refused in ``on_train_begin``, before the first epoch: a
monitored value that ``fit`` will not log (``val_loss`` without validation data), a checkpoint
folder that does not exist. ``fit`` tells the callbacks what it will log
(``state.log_keys``); a callback that adds values of its own lists them in ``adds_logs``.

Examples:
    >>> import portanet as pn
    >>> callbacks = [pn.callbacks.EarlyStopping(monitor="val_loss", patience=3,
    ...                                         restore_best_weights=True),
    ...              pn.callbacks.ModelCheckpoint("best.safetensors", save_best_only=True),
    ...              pn.callbacks.CSVLogger("log.csv")]
    >>> # model.fit(x, y, epochs=50, validation_split=0.1, callbacks=callbacks)
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat as compat

from . import io
from . import metrics as metrics_module

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "TrainingState",
]


def _no_nonfinite_step() -> int | None:
    """TrainingState's default outside fit: no step to report. (Module-level functions, not
    lambdas, so that callbacks pickle: process pools send them to their workers.)"""
    return None


def _silent(message: str) -> None:
    """TrainingState's default ``log`` outside fit: say nothing."""


@dataclass
class TrainingState:
    """What the loop shares with its callbacks: position, the stop flag, and two helpers.

    ``nonfinite_step()`` returns the first step of the current epoch whose loss was NaN or Inf
    (it reads the epoch's per-step losses from the device: one transfer, only when asked).
    ``log(message)`` prints through the loop's progress display (silent when verbose=0).
    ``has_validation`` and ``log_keys`` (the keys every epoch's logs will hold, None outside
    ``fit``) let callbacks check their settings in ``on_train_begin``. ``stop_reason`` is a
    short name of why training stopped ("early_stopping", "nonfinite_loss", ...),
    ``stop_message`` the sentence; the first to stop sets them.
    """

    epochs: int = 1
    steps_per_epoch: int = 0
    epoch: int = 0
    step: int = 0
    stop: bool = False
    stop_reason: str | None = None
    stop_message: str | None = None
    has_validation: bool = False
    log_keys: tuple[str, ...] | None = None
    nonfinite_step: Callable[[], int | None] = field(default=_no_nonfinite_step, repr=False)
    log: Callable[[str], None] = field(default=_silent, repr=False)


class Callback:
    """Base class: override the hooks you need; each gets Python-float ``logs``.

    Attributes:
        model: the model being trained (set by the loop before ``on_train_begin``).
        state: the loop's :class:`TrainingState`.
        adds_logs: names of the values this callback writes into the epoch logs (so that a
            callback monitoring one of them passes ``on_train_begin``'s check).
        chief_only: in data-parallel training (``fit(..., distributed=True)``) run on rank 0
            only: the callback writes files or prints, and its decisions change nothing.
    """

    adds_logs: tuple[str, ...] = ()
    chief_only: bool = False

    def __init__(self):
        self.model: Any = None
        self.state = TrainingState()

    def set_context(self, model: Any, state: TrainingState) -> None:
        self.model = model
        self.state = state

    def stop_training(self, message: str, reason: str = "callback") -> None:
        """Ask the loop to stop after the current epoch (or step), and say why: ``message``
        for people, ``reason`` a short name for code (``history.stop_reason``). When several
        stop in one epoch, the first one's reason is kept."""
        self.state.stop = True
        if self.state.stop_reason is None:
            self.state.stop_reason, self.state.stop_message = reason, message
        self.state.log(message)

    def on_train_begin(self, logs: dict[str, Any]) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_batch_end(self, step: int, logs: dict[str, Any]) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> None: ...

    def on_train_end(self, logs: dict[str, Any]) -> None: ...


class CallbackList(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Sequence[Callback] = ()):
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be portanet.callbacks.Callback instances, "
                                f"received {cb!r} ({type(cb).__name__}). Wrap a function in "
                                "LambdaCallback(on_epoch_end=...).")

    def set_context(self, model: Any, state: TrainingState) -> None:
        super().set_context(model, state)
        for cb in self.callbacks:
            cb.set_context(model, state)

    def on_train_begin(self, logs):
        if self.state.log_keys is not None:  # what the callbacks add is logged too
            added = [k for cb in self.callbacks for k in cb.adds_logs]
            self.state.log_keys = tuple(dict.fromkeys((*self.state.log_keys, *added)))
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs):
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_batch_end(self, step, logs):
        for cb in self.callbacks:
            cb.on_batch_end(step, logs)

    def on_epoch_end(self, epoch, logs):
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_end(self, logs):
        for cb in self.callbacks:
            cb.on_train_end(logs)


# ---------------------------------------------------------------------------------------------
# Helpers: monitored values, the learning rate, snapshots of the weights
# ---------------------------------------------------------------------------------------------
def _mode(monitor: str, mode: str) -> str:
    """"min" or "max" for ``monitor``; "auto" guesses from the name (losses and errors: min)."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', received {mode!r}.")
    if mode != "auto":
        return mode
    base = monitor[4:] if monitor.startswith("val_") else monitor
    if base.endswith("loss"):
        return "min"
    try:
        return "max" if metrics_module.get(base).higher_is_better else "min"
    except ValueError:
        return "max" if any(k in base for k in ("acc", "f1", "auc", "precision", "recall")) \
            else "min"


class _Monitor:
    """Tracks the best value of a logged quantity with a minimum improvement ``min_delta``."""

    def __init__(self, owner: str, monitor: str, mode: str, min_delta: float):
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, received {min_delta!r}.")
        self.owner, self.monitor = owner, monitor
        self.mode = _mode(monitor, mode)
        self.min_delta = float(min_delta)
        self.reset()

    def reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def _hint(self, state: TrainingState | None) -> str:
        """How to make ``monitor`` appear in the logs."""
        base = self.monitor[4:] if self.monitor.startswith("val_") else self.monitor
        if self.monitor.startswith("val_") and not (state and state.has_validation):
            return " Pass validation data to fit (validation_split=0.1 or validation_data=" \
                "(x_val, y_val))"
        if base != "loss":
            where = "metrics=[...]" if self.monitor.startswith("val_") else \
                "metrics=[...] with train_metrics=True"
            return f" Ask fit for {base!r} in {where}"
        return " Pass validation data to fit"

    def check_logged(self, state: TrainingState) -> None:
        """Before training: refuse a ``monitor`` that fit will never log (``state.log_keys``;
        not checked outside fit, where they are unknown)."""
        if state.log_keys is None or self.monitor in state.log_keys:
            return
        raise ValueError(f"{self.owner} monitors {self.monitor!r}, but fit will log only "
                         f"{list(state.log_keys)}.{self._hint(state)}, or monitor one of those "
                         "(a callback that adds it to the logs lists it in its adds_logs).")

    def value(self, logs: dict[str, Any]) -> float:
        if self.monitor not in logs:
            raise ValueError(f"{self.owner} monitors {self.monitor!r}, but the epoch logs only "
                             f"have {sorted(logs)}.{self._hint(None)} or monitor one of those.")
        return float(logs[self.monitor])

    def improved(self, value: float) -> bool:
        """Better than the best so far by more than min_delta (NaN is never better)."""
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def current_learning_rate(optimizer: Any) -> float:
    """The optimizer's next learning rate as a Python float (schedules are evaluated)."""
    if optimizer is None:
        return math.nan
    getter = getattr(optimizer, "current_learning_rate", None)
    if getter is not None:
        return float(getter())
    lr = optimizer.learning_rate
    return float(lr(getattr(optimizer, "iterations", 0)) if callable(lr) else lr)


def _optimizer(callback: Callback) -> Any:
    opt = getattr(callback.model, "optimizer", None)
    if opt is None:
        raise ValueError(f"{type(callback).__name__} changes the learning rate, but the model "
                         "has no optimizer. Create the model with optimizer=...")
    return opt


def snapshot_weights(model: Any) -> dict[str, dict[str, Any]]:
    """Copies of the model's parameters and buffers (safe even if a backend updates in place)."""
    def copy(d):
        return {k: compat.array_namespace(v).asarray(v, copy=True) for k, v in d.items()}

    buffers = model.buffers() if hasattr(model, "buffers") else {}
    return {"parameters": copy(model.parameters()), "buffers": copy(buffers)}


def restore_weights(model: Any, snapshot: dict[str, dict[str, Any]]) -> None:
    """Put a :func:`snapshot_weights` back into the model."""
    model.set_parameters(snapshot["parameters"])
    if snapshot["buffers"]:
        model.set_buffers(snapshot["buffers"])


# ---------------------------------------------------------------------------------------------
# The callbacks
# ---------------------------------------------------------------------------------------------
class History(Callback):
    """Per-epoch logs of a ``fit`` call: ``history.history["val_loss"][3]`` etc.

    Attributes:
        history: dict name -> list of floats, one per epoch ("loss", "val_loss", metrics,
            "lr", "time").
        epoch: the epoch numbers (0-based) that were recorded.
        stop_reason: why training stopped early, a short name: "early_stopping",
            "terminate_on_nan", "nonfinite_loss" (fit's own check of the loss),
            "callback" (a callback that gave no reason), ... None if it ran all epochs.
        stop_message: the same, as a sentence for people.
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.stop_reason: str | None = None
        self.stop_message: str | None = None

    def on_epoch_end(self, epoch, logs):
        self.epoch.append(epoch)
        for key, value in logs.items():
            # a key that first appears late is padded with NaN so every list has one per epoch
            column = self.history.setdefault(key, [math.nan] * (len(self.epoch) - 1))
            column.append(value)
        for column in self.history.values():
            if len(column) < len(self.epoch):
                column.append(math.nan)

    def on_train_end(self, logs):
        self.stop_reason = self.state.stop_reason
        self.stop_message = self.state.stop_message

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __contains__(self, key: str) -> bool:
        return key in self.history

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"

    def plot(self, path: str, keys: Sequence[str] | None = None) -> str:
        """Save learning curves (train vs validation, one panel per quantity) to ``path``.

        Needs matplotlib (``pip install 'portanet[plot]'``). Returns ``path``.
        """
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install 'portanet[plot]' "
                              "(or pip install matplotlib). The numbers are in "
                              "history.history.") from None
        skip = {"time", "samples_per_second"}
        names = keys or [k for k in self.history if not k.startswith("val_") and k not in skip]
        names += [k[4:] for k in self.history if k.startswith("val_") and k[4:] not in names
                  and not keys]
        if not names:
            raise ValueError("History.plot: nothing to plot; the history is empty.")
        fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        epochs = [e + 1 for e in self.epoch]
        for ax, name in zip(axes[0], names, strict=True):
            for key, label in ((name, "train"), (f"val_{name}", "validation")):
                if key in self.history:
                    ax.plot(epochs, self.history[key], marker="o", markersize=3, label=label)
            ax.set(title=name, xlabel="epoch")
            if name == "lr":
                ax.set_yscale("log")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)
        return path


class EarlyStopping(Callback):
    """Stop when a monitored quantity has not improved for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs ("val_loss", "val_accuracy", "loss", ...).
        patience: epochs without improvement to wait before stopping.
        min_delta: smallest change that counts as an improvement.
        mode: "min", "max" or "auto" (losses and errors down, the rest up).
        restore_best_weights: at the end, put back the weights of the best epoch.
        baseline: a value the monitored quantity must beat to count as improving.

    Attributes:
        best, best_epoch, stopped_epoch.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False,
                 baseline: float | None = None):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, received {patience!r}.")
        self.tracker = _Monitor("EarlyStopping", monitor, mode, min_delta)
        self.monitor, self.patience = monitor, patience
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline

    def on_train_begin(self, logs):
        self.tracker.check_logged(self.state)
        self.tracker.reset()
        if self.baseline is not None:
            self.tracker.best = float(self.baseline)
        self.wait = 0
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.best_weights = None
        self.last_epoch: int | None = None

    @property
    def best(self) -> float:
        return self.tracker.best

    def on_epoch_end(self, epoch, logs):
        value = self.tracker.value(logs)
        self.last_epoch = epoch
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = snapshot_weights(self.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.stop_training(
                f"EarlyStopping: {self.monitor} has not improved by more than "
                f"{self.tracker.min_delta:g} for {self.wait} epochs (best {self.best:.6g} at "
                f"epoch {(self.best_epoch if self.best_epoch is not None else -1) + 1}); "
                f"stopping after epoch {epoch + 1}.", reason="early_stopping")

    def on_train_end(self, logs):
        if self.restore_best_weights and self.best_weights is not None and \
                self.best_epoch != self.last_epoch:
            restore_weights(self.model, self.best_weights)
            self.state.log(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1} "
                           f"({self.monitor} = {self.best:.6g}).")


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after every epoch, or only when it improves.

    Args:
        filepath: where to save; may contain fields filled per epoch, e.g.
            ``"ckpt-{epoch:03d}-{val_loss:.4f}.safetensors"`` (epoch counts from 1).
        monitor: the logged quantity that decides "best" (for ``save_best_only``).
        save_best_only: save only when ``monitor`` improves; otherwise every epoch.
        save_weights_only: parameters only (``save_weights``) instead of the full model.
        mode: "min", "max" or "auto".

    An epoch whose training loss is NaN or Inf is never saved: its weights are NaN (or ``fit``
    rolls them back), and with a fixed ``filepath`` it would overwrite a good checkpoint.
    ``on_train_begin`` checks the folder, the fields of ``filepath`` and the ``monitor``.

    Attributes:
        saved: the paths written, in order. best: best monitored value so far.
    """

    chief_only = True  # writes: rank 0 alone in data-parallel training

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", min_delta: float = 0.0):
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.tracker = _Monitor("ModelCheckpoint", monitor, mode, min_delta)
        self.saved: list[str] = []

    @property
    def best(self) -> float:
        return self.tracker.best

    def on_train_begin(self, logs):
        self.tracker.reset()
        folder = os.path.dirname(self.filepath)
        if folder and "{" not in folder:  # (a folder named per epoch is made by the save)
            folder = os.path.expanduser(folder)
            if not os.path.isdir(folder):
                raise FileNotFoundError(
                    f"ModelCheckpoint: the folder {folder!r} of filepath {self.filepath!r} "
                    f"does not exist. Create it first (os.makedirs({folder!r}, "
                    "exist_ok=True)) or choose another filepath.")
            if not os.access(folder, os.W_OK):
                raise PermissionError(f"ModelCheckpoint: the folder {folder!r} of filepath "
                                      f"{self.filepath!r} is not writable; choose another "
                                      "filepath.")
        keys = self.state.log_keys
        if keys is None:
            return
        if self.save_best_only:
            self.tracker.check_logged(self.state)
        self._fill(1, dict.fromkeys(keys, 0.0))  # a field fit does not log fails here

    def _fill(self, epoch: int, logs: dict[str, Any]) -> str:
        """``filepath`` with its fields filled (epoch counts from 1)."""
        try:
            return self.filepath.format(epoch=epoch, **logs)
        except (KeyError, ValueError, IndexError) as err:
            raise ValueError(f"ModelCheckpoint filepath {self.filepath!r} could not be filled "
                             f"({err!r}); available fields: epoch, {', '.join(sorted(logs))}.") \
                from None

    def on_epoch_end(self, epoch, logs):
        loss = logs.get("loss")
        if isinstance(loss, float) and not math.isfinite(loss):
            return  # diverged: nothing worth keeping (see the class docstring)
        if self.save_best_only:
            value = self.tracker.value(logs)
            if not self.tracker.improved(value):
                return
            self.tracker.best = value
        path = self._fill(epoch + 1, logs)
        if self.save_weights_only:
            io.save_weights(self.model, path)
        else:
            io.save(self.model, path, epoch=epoch + 1)
        self.saved.append(path)


def _arity(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return 2 if len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params) else 1


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch from ``schedule``.

    Args:
        schedule: ``schedule(epoch) -> lr`` or ``schedule(epoch, current_lr) -> lr`` (epoch
            from 0). A portanet schedule object works too (called with the epoch).
    """

    def __init__(self, schedule: Callable, verbose: bool = False):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, received {schedule!r}.")
        self.schedule = schedule
        self.verbose = verbose
        self._two_args = _arity(schedule) == 2

    def on_epoch_begin(self, epoch, logs):
        opt = _optimizer(self)
        lr = self.schedule(epoch, current_learning_rate(opt)) if self._two_args \
            else self.schedule(epoch)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
                or lr < 0:
            raise ValueError(f"LearningRateScheduler: the schedule returned {lr!r} for epoch "
                             f"{epoch}; expected a finite Python float >= 0.")
        opt.learning_rate = float(lr)
        if self.verbose:
            self.state.log(f"LearningRateScheduler: learning rate {lr:.6g} for epoch "
                           f"{epoch + 1}.")


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` stops improving.

    After ``patience`` epochs without an improvement of more than ``min_delta``, the rate
    becomes max(lr * factor, min_lr) from the next epoch on; the ``cooldown`` epochs after a
    reduction do not count towards the next one.
    Needs an optimizer with a numeric learning rate (not a schedule). Keras' callback, by name
    and arguments; the schedule that does the same from values you pass it is
    ``schedules.PlateauDecay`` (torch's ``ReduceLROnPlateau``, with its arguments).
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 mode: str = "auto", verbose: bool = True):
        super().__init__()
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1) (it shrinks the rate), received "
                             f"{factor!r}.")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, received {value!r}.")
        if min_lr < 0:
            raise ValueError(f"min_lr must be >= 0, received {min_lr!r}.")
        self.tracker = _Monitor("ReduceLROnPlateau", monitor, mode, min_delta)
        self.monitor, self.factor, self.patience = monitor, float(factor), patience
        self.cooldown, self.min_lr, self.verbose = cooldown, float(min_lr), verbose

    def on_train_begin(self, logs):
        opt = _optimizer(self)
        if callable(opt.learning_rate):
            raise ValueError(f"ReduceLROnPlateau needs a numeric learning rate, but the "
                             f"optimizer follows the schedule {opt.learning_rate!r}. Use one or "
                             "the other (or the schedule schedules.PlateauDecay, which "
                             "reduces on a plateau you update).")
        self.tracker.check_logged(self.state)
        self.tracker.reset()
        self.wait = 0
        self.cooldown_left = 0
        self.reductions: list[tuple[int, float]] = []

    def on_epoch_end(self, epoch, logs):
        value = self.tracker.value(logs)
        in_cooldown = self.cooldown_left > 0  # epochs right after a reduction do not count
        if in_cooldown:
            self.cooldown_left -= 1
        if self.tracker.improved(value):
            self.tracker.best, self.wait = value, 0
            return
        if in_cooldown:
            return
        self.wait += 1
        if self.wait >= self.patience:
            opt = _optimizer(self)
            old = float(opt.learning_rate)
            new = max(old * self.factor, self.min_lr)
            if new < old:
                opt.learning_rate = new  # used from the next epoch on
                self.reductions.append((epoch, new))
                if self.verbose:
                    self.state.log(f"ReduceLROnPlateau: {self.monitor} has not improved for "
                                   f"{self.wait} epochs; learning rate {old:.4g} -> {new:.4g}.")
            self.cooldown_left = self.cooldown
            self.wait = 0


class TerminateOnNaN(Callback):
    """Stop as soon as the training loss is NaN or Inf, and say at which epoch and step.

    The loop checks the epoch's summed loss (and the running sum at each progress update);
    when it is not finite, the per-step losses of the epoch are read once to find the first
    bad step. Attributes ``epoch`` and ``step`` hold where it happened (0-based).

    ``fit`` itself stops after an epoch whose loss is not finite (``on_nonfinite``, which also
    rolls the weights back); this callback adds the check at every progress read
    (``progress_every``), so that a long epoch stops within a few steps, and it stops training
    with ``on_nonfinite="continue"`` too. ``history.stop_reason`` is then "terminate_on_nan".
    """

    def __init__(self):
        super().__init__()
        self.epoch: int | None = None
        self.step: int | None = None

    def _check(self, epoch: int, loss: Any) -> None:
        if loss is None or math.isfinite(loss) or self.epoch is not None:
            return
        step = self.state.nonfinite_step()
        self.epoch, self.step = epoch, step
        where = f"step {step + 1} of {self.state.steps_per_epoch}" if step is not None else \
            "an unknown step (each step's loss was finite; their sum overflowed)"
        self.stop_training(
            f"TerminateOnNaN: the training loss became {loss} at epoch {epoch + 1}, {where}. "
            "Lower the learning rate, clip gradients (e.g. global_clip_norm=1.0), or check the "
            "inputs for NaN/Inf.", reason="terminate_on_nan")

    def on_batch_end(self, step, logs):
        self._check(self.state.epoch, logs.get("loss"))

    def on_epoch_end(self, epoch, logs):
        self._check(epoch, logs.get("loss"))


class CSVLogger(Callback):
    """Append one row per epoch (epoch, then every logged value) to a CSV file.

    Args:
        filename: the CSV path.
        separator: the field separator.
        append: keep existing rows and add to them (the header is written only once).
    """

    chief_only = True  # writes: rank 0 alone in data-parallel training

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False):
        super().__init__()
        self.filename = os.fspath(filename)
        self.separator = separator
        self.append = append
        self._file = None
        self._writer = None
        self._keys: list[str] | None = None

    def on_train_begin(self, logs):
        exists = self.append and os.path.exists(self.filename) and \
            os.path.getsize(self.filename) > 0
        self._keys = None
        if exists:
            with open(self.filename, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None
        self._file = open(self.filename, "a" if self.append else "w", newline="")  # noqa: SIM115

    def on_epoch_end(self, epoch, logs):
        if self._file is None:
            self.on_train_begin({})
        writer = csv.writer(self._file, delimiter=self.separator)
        if self._keys is None:
            self._keys = list(logs)
            writer.writerow(["epoch", *self._keys])
        writer.writerow([epoch + 1, *(_cell(logs.get(k, "")) for k in self._keys)])
        self._file.flush()

    def on_train_end(self, logs):
        if self._file is not None:
            self._file.close()
            self._file = None


def _cell(value: Any) -> str:
    return repr(float(value)) if isinstance(value, (int, float)) else str(value)


class LambdaCallback(Callback):
    """A callback from plain functions, e.g. ``LambdaCallback(on_epoch_end=lambda e, l: ...)``.

    ``adds_logs``: the names of values its ``on_epoch_end`` writes into the logs (see
    :class:`Callback`)."""

    def __init__(self, on_train_begin: Callable | None = None,
                 on_epoch_begin: Callable | None = None, on_batch_end: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_train_end: Callable | None = None,
                 adds_logs: Sequence[str] = ()):
        super().__init__()
        self.adds_logs = tuple(adds_logs)
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_begin", on_epoch_begin),
                         ("on_batch_end", on_batch_end), ("on_epoch_end", on_epoch_end),
                         ("on_train_end", on_train_end)):
            if fn is not None:
                setattr(self, name, fn)


# ---------------------------------------------------------------------------------------------
# Progress display (added by fit for verbose >= 1)
# ---------------------------------------------------------------------------------------------
def _format_logs(logs: dict[str, Any], skip: Sequence[str] = ("time", "lr",
                                                              "samples_per_second")) -> str:
    parts = []
    for key, value in logs.items():
        if key in skip or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {value:.4f}")
    return "  ".join(parts)


class ProgressBar(Callback):
    """Per-epoch progress: a tqdm bar when tqdm is installed and the output is a terminal,
    else a plain text line rewritten in place (terminals) or nothing until the epoch ends.

    verbose=1 shows the live progress (updated where the loop reads the loss, with loss and
    samples/s) and a summary line per epoch; verbose=2 prints only the summary lines.
    """

    chief_only = True  # writes: rank 0 alone in data-parallel training

    def __init__(self, verbose: int = 1, stream: Any = None, use_tqdm: bool | None = None):
        super().__init__()
        self.verbose = verbose
        self.stream = stream
        self.use_tqdm = use_tqdm
        self._bar = None

    def on_train_begin(self, logs):
        if self.use_tqdm is None:  # a live bar only on a terminal; logs and pipes get lines
            self.use_tqdm = self.verbose == 1 and _tqdm_installed() and _is_tty(self.out)

    @property
    def out(self):
        return self.stream if self.stream is not None else sys.stdout

    def write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=self.out)
        else:
            print(message, file=self.out, flush=True)

    def set_context(self, model, state):
        super().set_context(model, state)
        state.log = self.write

    def on_epoch_begin(self, epoch, logs):
        self._start = time.perf_counter()
        self._seen = 0
        if self.use_tqdm:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.state.steps_per_epoch, file=self.out, leave=False,
                             desc=f"epoch {epoch + 1}/{self.state.epochs}", unit="step",
                             dynamic_ncols=True)

    def on_batch_end(self, step, logs):
        self._seen += int(logs.get("size", 0))
        if "loss" not in logs or self.verbose != 1:
            return
        rate = self._seen / max(time.perf_counter() - self._start, 1e-9)
        status = f"loss {logs['loss']:.4f}  {rate:,.0f} samples/s"
        if self._bar is not None:
            self._bar.update(step + 1 - self._bar.n)
            self._bar.set_postfix_str(status)
        elif _is_tty(self.out):  # plain fallback: one line rewritten in place
            total = max(self.state.steps_per_epoch, 1)
            done = int(20 * (step + 1) / total)
            self._line = (f"\repoch {self.state.epoch + 1}/{self.state.epochs} "
                          f"[{'=' * done}{' ' * (20 - done)}] {step + 1}/{total}  {status}")
            self.out.write(self._line)
            self.out.flush()

    def on_epoch_end(self, epoch, logs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if getattr(self, "_line", None):
            self.out.write("\r" + " " * len(self._line) + "\r")
            self._line = None
        rate = logs.get("samples_per_second")
        speed = f"  {rate:,.0f} samples/s" if rate else ""
        width = len(str(self.state.epochs))
        self.write(f"epoch {epoch + 1:>{width}}/{self.state.epochs}  {_format_logs(logs)}  "
                   f"lr {logs.get('lr', math.nan):.3g}  {logs.get('time', 0.0):.2f}s{speed}")

    def on_train_end(self, logs):
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _tqdm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tqdm") is not None
