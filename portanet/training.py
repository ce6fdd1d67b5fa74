"""Training and evaluation: ``fit``, ``evaluate``, ``predict_proba``, ``predict_classes`` and
k-fold cross-validation. ``Sequential.fit(...)`` etc. call these.

How ``fit`` keeps the device busy (DESIGN.md rule 4):

* The data moves to the model's backend and device **once**, cast to the model's dtype.
* Each epoch draws one permutation on the device (``pn.random.Generator``, seeded from
  (seed, epoch)), gathers the data with one ``xp.take``, and every batch is then a slice of
  that: no index crosses to the host.
* Each step's loss stays on the device. The loop adds it to a running sum (a device op, no
  read) and keeps the 0-d arrays; the sum is read **once per epoch** (and every
  ``progress_every`` steps when a progress bar shows it). Only when that sum is not finite are
  the per-step losses read, once, to say at which step training diverged.
* Validation runs batched forward passes and reads the loss and every metric in one transfer.
* An epoch whose loss is NaN or Inf stops training with a warning and rolls the model back to
  the end of the last finite epoch (``on_nonfinite``). That needs the state of that epoch: one
  on-device copy of the parameters, buffers and optimizer slots per epoch, no host read.

Examples:
    >>> import portanet as pn
    >>> from portanet import data
    >>> x, y = data.make_spiral(n_samples=300, seed=0)
    >>> model = pn.Sequential([pn.layers.Dense(2, 64, activation="relu"),
    ...                        pn.layers.Dense(64, 3)],
    ...                       loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(0.01),
    ...                       seed=0)
    >>> history = model.fit(x, y, epochs=5, batch_size=32, validation_split=0.2,
    ...                     metrics=["accuracy"], verbose=0, seed=0)
    >>> sorted(history.history)
    ['loss', 'lr', 'samples_per_second', 'time', 'val_accuracy', 'val_loss']
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import array_api_compat as compat

from . import activations
from . import metrics as metrics_module
from ._typing import Array
from .backend import Backend, get_backend
from .callbacks import (
    Callback,
    CallbackList,
    History,
    ProgressBar,
    TrainingState,
    current_learning_rate,
)
from .data._util import as_numeric, host_labels, nonfinite_rows, take_rows
from .data.batching import BatchIterator, kfold_indices, train_test_split
from .devices import resolve_dtype, to_backend, to_numpy
from .distributed.parallel import DataParallel, data_parallel
from .engine.state import StateLayout, TrainState
from .optimizers.base import OptState
from .random import fresh_seed

__all__ = [
    "ON_NONFINITE",
    "CrossValidationResult",
    "History",
    "NonFiniteLossWarning",
    "cross_validate",
    "evaluate",
    "fit",
    "predict",
    "predict_classes",
    "predict_proba",
]

DEFAULT_EVAL_BATCH = 1024

ON_NONFINITE = ("restore", "stop", "continue")
"""What ``fit`` does after an epoch whose loss is NaN or Inf (it warns in every case)."""


class NonFiniteLossWarning(RuntimeWarning):
    """``fit`` met a training loss that is NaN or Inf (the message says where and what to try)."""


# ---------------------------------------------------------------------------------------------
# Putting data where the model is
# ---------------------------------------------------------------------------------------------
def _model_backend(model: Any) -> Backend:
    backend = getattr(model, "backend", None)
    return backend if isinstance(backend, Backend) else get_backend()


def _model_dtype(model: Any) -> str:
    return getattr(model, "dtype", None) or "float32"


def _takes_ids(model: Any) -> bool:
    """Whether ``model``'s first layer reads integer ids (``Layer.integer_input``)."""
    layers = getattr(model, "layers", None)
    return bool(layers) and getattr(layers[0], "integer_input", False)


def to_model(model: Any, a: Any, name: str, role: str = "x", *, check: bool = False,
             purpose: str = "training") -> Array:
    """``a`` (NumPy, a list, or any backend's array) on the model's backend and device.

    Inputs (``role="x"``) and float targets are cast to the model's dtype (token ids for a
    model starting with an Embedding stay integers, as int64); integer and boolean targets
    become int64 class ids. This is the one host-to-device copy of a ``fit`` call.

    ``check=True`` refuses float inputs that hold NaN or Inf, and float inputs or targets with
    finite values that the model's dtype cannot hold (1e39 in float32 would become inf), before
    the cast (:func:`_check_values`: one read); ``purpose`` ("training", "evaluation") ends the
    message.
    """
    target = _model_backend(model)
    if a is None:
        raise ValueError(f"{name} is None; pass an array.")
    a = as_numeric(a, name)
    if a.ndim == 0:
        raise ValueError(f"{name} must have a sample axis (shape (N, ...)), received a scalar.")
    a = to_backend(a, target.name, target.device)
    xp = target.xp
    floating = xp.isdtype(a.dtype, "real floating")
    if not (floating or xp.isdtype(a.dtype, ("integral", "bool"))):
        raise TypeError(f"{name} must hold real numbers, received dtype {a.dtype}.")
    if role == "x" and _takes_ids(model):
        # a model starting with an Embedding reads token ids: they stay integers
        if floating:
            raise TypeError(f"{name} must hold integer token ids for a model whose first layer "
                            f"is {type(model.layers[0]).__name__}, received dtype "
                            f"{str(a.dtype).rsplit('.', 1)[-1]}. "
                            "Convert them with x.astype('int64') (or np.asarray(x, "
                            "dtype='int64')).")
        return a if a.dtype == xp.int64 else xp.astype(a, xp.int64)
    # inputs and float targets take the model's dtype; class ids become int64
    want = resolve_dtype(xp, _model_dtype(model)) if role == "x" or floating else xp.int64
    if check and floating and (role == "x" or _narrows(xp, a.dtype, want)):
        # float targets' NaN/Inf are the loss's check (check_targets); here only the cast's
        _check_values(a, name, want, purpose)
    return a if a.dtype == want else xp.astype(a, want)


def _narrows(xp: Any, source: Any, target: Any) -> bool:
    """Whether casting float dtype ``source`` to ``target`` can overflow (float64 -> float32)."""
    return xp.isdtype(target, "real floating") and xp.finfo(source).max > xp.finfo(target).max


def _check_values(a: Array, name: str, dtype: Any, purpose: str) -> None:
    """Refuse NaN/Inf, and finite values beyond ``dtype``'s range, in ``a`` (before the cast).

    One read: ``max |a|`` is NaN if any entry is NaN (the standard's ``max`` propagates NaN),
    Inf if any is infinite, and above ``finfo(dtype).max`` if a finite value would overflow
    the cast. Only on failure are the bad rows counted (a second read).
    """
    xp = compat.array_namespace(a)
    if math.prod(a.shape) == 0:
        return  # no values (an empty x is refused by the sample-count check)
    peak = float(xp.max(xp.abs(a)))
    samples = a.shape[0]
    if not math.isfinite(peak):
        count, first = nonfinite_rows(a)
        raise ValueError(f"{name} contains NaN or Inf in {count} of {samples} samples (first "
                         f"at index {first}). Remove or impute them before {purpose}.")
    limit = float(xp.finfo(dtype).max)
    if peak > limit:
        rows = xp.any(xp.reshape(xp.abs(a) > limit, (samples, -1)), axis=1)
        count, first = (int(v) for v in to_numpy(xp.stack(
            [xp.sum(xp.astype(rows, xp.int64)), xp.argmax(xp.astype(rows, xp.int64))])))
        kind = "inputs" if name.endswith("x") else "targets"
        raise ValueError(
            f"{name} has values up to {peak:.3g} that overflow {_dtype_name(dtype)} (max "
            f"{limit:.3g}) in {count} of {samples} samples (first at index {first}); scale the "
            f"{kind} (e.g. pn.data.StandardScaler) or build the model with dtype='float64'.")


def _dtype_name(dtype: Any) -> str:
    """``float32`` for every library's dtype (NumPy's and JAX's are classes, with a name)."""
    return getattr(dtype, "__name__", None) or str(dtype).rsplit(".", 1)[-1]


def _check_finite(a: Array, name: str) -> None:
    """Refuse NaN/Inf values (one read of one boolean): the targets' check of a loss that has
    no ``check_targets`` of its own."""
    xp = compat.array_namespace(a)
    if not xp.isdtype(a.dtype, "real floating"):
        return
    if not bool(xp.all(xp.isfinite(a))):
        count, first = nonfinite_rows(a)
        raise ValueError(f"{name} contains NaN or Inf in {count} of {a.shape[0]} samples "
                         f"(first at index {first}). Remove or impute them.")


def _check_pair(x: Array, y: Array, what: str) -> int:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{what}: x has {x.shape[0]} samples but y has {y.shape[0]}; every "
                         "input needs exactly one target.")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: received 0 samples; there is nothing to train on.")
    return x.shape[0]


def output_width(model: Any, x: Array) -> int | None:
    """The model's output width for inputs like ``x``; its shape errors (e.g. "Dense expected
    input with 64 features, received per-sample shape (63,)") are raised here, before training,
    evaluation or prediction. A 1-D ``x`` is N samples of shape (): the error says how to pass
    one sample instead."""
    shape_of = getattr(model, "output_shape", None)
    if shape_of is None:
        return None
    try:
        shape = tuple(shape_of(tuple(x.shape[1:])))
    except ValueError as err:
        if x.ndim != 1:
            raise
        raise ValueError(f"{err} x has shape {tuple(x.shape)}: axis 0 is the sample axis, so "
                         f"it reads as {x.shape[0]} samples of shape (). For one sample, add "
                         "the sample axis: x[None, :] (or x.reshape(1, -1)).") from None
    return int(shape[-1]) if shape else None


def _check_targets(model: Any, x: Array, y: Array) -> None:
    """The loss's own value checks (label range, finite, probability range): one read."""
    loss = getattr(model, "loss", None)
    check = getattr(loss, "check_targets", None)
    if check is not None:
        check(y, output_width(model, x))
    else:
        _check_finite(y, "y")


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, received {value!r}.")
    return value


# ---------------------------------------------------------------------------------------------
# Outputs -> probabilities -> classes
# ---------------------------------------------------------------------------------------------
def _loss_name(model: Any) -> str:
    return type(getattr(model, "loss", None)).__name__


def _to_proba(model: Any, outputs: Array) -> Array:
    """Turn raw outputs into probabilities where the loss works on logits.

    SoftmaxCrossEntropy is fused on logits, so its model's outputs go through softmax;
    BinaryCrossEntropyWithLogits's through the sigmoid. Other models' outputs are returned
    as they are (their last layer already produces probabilities, or they are regressors).
    """
    name = _loss_name(model)
    if name == "SoftmaxCrossEntropy":
        return activations.softmax(outputs, axis=-1)
    if name == "BinaryCrossEntropyWithLogits":
        return activations.sigmoid(outputs)
    return outputs


def _to_classes(proba: Array) -> Array:
    """Class ids (N,) int64: argmax of (N, C) scores, or score >= 0.5 for one column."""
    xp = compat.array_namespace(proba)
    if proba.ndim == 2 and proba.shape[1] > 1:
        return xp.argmax(proba, axis=1)
    if proba.ndim == 2:
        proba = proba[:, 0]
    return xp.astype(proba >= 0.5, xp.int64)


def predict(model: Any, x: Any, batch_size: int | None = DEFAULT_EVAL_BATCH) -> Array:
    """The model's raw outputs for ``x`` (moved to the model's device first), in batches.

    ``x`` must have the model's per-sample shape after the sample axis (the shape error is
    the one ``evaluate`` and ``fit`` give, raised before any forward pass)."""
    x = to_model(model, x, "x")
    output_width(model, x)  # shape metadata only: nothing is read from the device
    return model.predict(x, batch_size=batch_size)


def predict_proba(model: Any, x: Any, batch_size: int | None = DEFAULT_EVAL_BATCH) -> Array:
    """Class probabilities (N, C) (or (N, 1) for a binary model), on the model's device."""
    return _to_proba(model, predict(model, x, batch_size))


def predict_classes(model: Any, x: Any, batch_size: int | None = DEFAULT_EVAL_BATCH) -> Array:
    """Predicted class ids (N,) int64 on the model's device."""
    return _to_classes(predict_proba(model, x, batch_size))


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def _loss_value(model: Any, outputs: Array, y: Array) -> Array | None:
    """Mean loss per sample (plus the regularization penalty, as in training), on device."""
    loss = getattr(model, "loss", None)
    if loss is None:
        return None
    value, _ = loss(outputs, y)
    if getattr(loss, "reduction", "mean") == "sum":
        value = value / float(outputs.shape[0])
    penalty = model.regularization_loss() if hasattr(model, "regularization_loss") else 0.0
    return value + penalty if not isinstance(penalty, float) or penalty else value


def _evaluate_on_device(model: Any, x: Array, y: Array, metrics: Sequence[Any],
                        batch_size: int | None, include_loss: bool = True,
                        strategy: DataParallel | None = None) -> dict[str, float]:
    # data-parallel: each process predicts its share of the rows, and all see every output
    outputs = model.predict(x, batch_size=batch_size) if strategy is None else \
        strategy.predict(model, x, batch_size)
    xp = compat.array_namespace(outputs)
    names, device_values, host_values = [], [], {}
    if include_loss:
        value = _loss_value(model, outputs, y)
        if value is not None:
            names.append("loss")
            device_values.append(xp.astype(value, xp.float64))
    proba = classes = None
    # the class count is the output width (2 for one sigmoid column): no host read needed
    num_classes = int(outputs.shape[-1]) if outputs.ndim == 2 and outputs.shape[-1] > 1 else 2
    for metric in metrics:
        if metric.kind == "values":
            result = metric(y, outputs)
        elif metric.kind == "scores":
            proba = _to_proba(model, outputs) if proba is None else proba
            result = metric(y, proba)
        else:
            if classes is None:
                proba = _to_proba(model, outputs) if proba is None else proba
                classes = _to_classes(proba)
            result = metric(y, classes, num_classes=num_classes)
        if isinstance(result, (int, float)):  # host metrics (ROC AUC, AP) are already floats
            host_values[metric.name] = float(result)
        else:
            names.append(metric.name)
            device_values.append(xp.astype(xp.reshape(result, ()), xp.float64))
    out: dict[str, float] = {}
    if device_values:
        read = to_numpy(xp.stack(device_values))  # the one device-to-host transfer
        out.update({n: float(v) for n, v in zip(names, read, strict=True)})
    out.update(host_values)
    return out


def _check_metric_classes(model: Any, x: Array, metric_list: list) -> None:
    """A binary-only metric on a model of more classes fails before the first epoch, not
    after it (the class count is the output width, as :func:`_evaluate_on_device` takes it)."""
    width = output_width(model, x)
    if width is not None:
        for metric in metric_list:
            metric.check_classes(width if width > 1 else 2)


def _metric_list(metrics: Any) -> list[metrics_module.Metric]:
    if metrics is None:
        return []
    if isinstance(metrics, (str, metrics_module.Metric)) or callable(metrics):
        metrics = [metrics]
    return [metrics_module.get(m) for m in metrics]


def evaluate(model: Any, x: Any, y: Any, metrics: Any = None,
             batch_size: int | None = DEFAULT_EVAL_BATCH,
             check_inputs: bool = True) -> dict[str, float]:
    """Loss and metrics of the model on (x, y), as Python floats.

    The forward passes run in evaluation mode (Dropout off, BatchNorm on running statistics)
    in batches of ``batch_size``; the loss (plus any regularization penalty, as in training)
    and all metrics reach the host in one transfer, after the checks ``fit`` makes.

    Args:
        x, y: inputs and targets (NumPy, lists or any backend; moved to the model's device).
        metrics: names or functions (see :func:`portanet.metrics.get`), e.g.
            ``["accuracy", "f1_macro"]``.
        check_inputs: refuse NaN/Inf inputs, values that overflow the model's dtype, inputs
            of the wrong shape and targets outside the loss's range, as ``fit`` does (a few
            reads of the whole arrays). False skips the value checks.

    Returns:
        {"loss": ..., "accuracy": ..., ...}.
    """
    x = to_model(model, x, "x", check=check_inputs, purpose="evaluation")
    y = to_model(model, y, "y", role="y", check=check_inputs, purpose="evaluation")
    _check_pair(x, y, "evaluate")
    if check_inputs:
        _check_targets(model, x, y)  # shapes, then the targets' range: one read
    return _evaluate_on_device(model, x, y, _metric_list(metrics), batch_size)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def _auto_progress_every(steps: int) -> int:
    """About 10 progress updates per epoch: each is one read of the running loss."""
    return max(1, steps // 10)


@dataclass
class _FitData:
    """The training and validation arrays, on the model's device."""

    x: Array
    y: Array
    x_val: Array | None = None
    y_val: Array | None = None


def _check_fit_arguments(model: Any, epochs: int, initial_epoch: int, batch_size: int,
                         verbose: int, progress_every: int | None,
                         validation_split: float, on_nonfinite: str = "restore") -> None:
    """Every argument error before any data moves."""
    if getattr(model, "loss", None) is None or getattr(model, "optimizer", None) is None:
        raise ValueError("fit needs a model with a loss and an optimizer; create it with "
                         "pn.Sequential(layers, loss=..., optimizer=...) or call "
                         "model.compile(loss=..., optimizer=...).")
    if getattr(model.loss, "reduction", "mean") == "none":
        raise ValueError("fit needs a loss that reduces to one number (reduction 'mean' or "
                         f"'sum'); {model.loss!r} has reduction='none'.")
    _check_positive_int(epochs, "epochs", minimum=0)
    _check_positive_int(initial_epoch, "initial_epoch", minimum=0)
    _check_positive_int(batch_size, "batch_size")
    if verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, received {verbose!r}.")
    if progress_every is not None:
        _check_positive_int(progress_every, "progress_every")
    if not (isinstance(validation_split, (int, float)) and 0.0 <= validation_split < 1.0):
        raise ValueError(f"validation_split must be a fraction in [0, 1), received "
                         f"{validation_split!r}.")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"on_nonfinite must be one of {', '.join(map(repr, ON_NONFINITE))}, "
                         f"received {on_nonfinite!r}.")


def _prepare_data(model: Any, x: Any, y: Any, validation_data: Any, validation_split: float,
                  seed: int, check_inputs: bool) -> _FitData:
    """Step 1: the data onto the model's device (once), the validation part, the checks.

    The values are checked before the cast to the model's dtype (NaN/Inf, and what the cast
    would overflow) and on the whole ``x`` (an index in the message is an index into it); the
    targets' range is checked on each part."""
    x = to_model(model, x, "x", check=check_inputs)
    y = to_model(model, y, "y", role="y", check=check_inputs)
    _check_pair(x, y, "fit")
    data = _FitData(x, y)
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val), received "
                             f"{type(validation_data).__name__}.")
        data.x_val = to_model(model, validation_data[0], "validation x", check=check_inputs)
        data.y_val = to_model(model, validation_data[1], "validation y", role="y",
                              check=check_inputs)
        _check_pair(data.x_val, data.y_val, "validation_data")
    elif validation_split > 0.0:
        n = x.shape[0]
        if round(validation_split * n) < 1 or n - round(validation_split * n) < 1:
            raise ValueError(f"validation_split={validation_split} of {n} samples leaves an "
                             "empty training or validation part.")
        data.x, data.x_val, data.y, data.y_val = train_test_split(
            x, y, test_size=float(validation_split), seed=seed)
    if check_inputs:
        _check_targets(model, data.x, data.y)
        if data.x_val is not None:
            _check_targets(model, data.x_val, data.y_val)
    return data


_LOOP_KEYS = ("lr", "time", "samples_per_second")
"""What the loop itself logs after the scores, every epoch."""


def _logged_keys(metric_list: list, train_metrics: bool, validation: bool) -> tuple[str, ...]:
    """The keys of every epoch's logs, in order (callbacks check their monitors against them)."""
    names = [m.name for m in metric_list]
    return ("loss", *(names if train_metrics else ()),
            *(("val_loss", *(f"val_{n}" for n in names)) if validation else ()), *_LOOP_KEYS)


def _scored_keys(keys: tuple[str, ...]) -> list[str]:
    """The keys :func:`_validate` fills: the training metrics and the validation scores."""
    return [k for k in keys if k != "loss" and k not in _LOOP_KEYS]


def _continue_random(model: Any, seed: int | None, initial_epoch: int, augment: Any) -> int:
    """Step 0: this run's seed, and where its generators continue from.

    A fit that continues a run (``initial_epoch == model.epoch > 0``) with ``seed=None`` takes
    that run's seed: from the checkpoint the model was loaded from (``model.load_random_state``)
    or from the model's own last fit. Its shuffles and validation split are functions of the
    seed, so they continue exactly. A checkpoint's augmentation state goes into ``augment``'s
    generator (a ``pn.data.Augment``). The layers' generators (Dropout) live in the model and
    continue by themselves. This run's seed and augment are recorded in ``model.fit_random``,
    which checkpoints save.
    """
    loaded = getattr(model, "_resume_random", None)
    own = getattr(model, "fit_random", None) or {}
    continuing = initial_epoch > 0 and initial_epoch == getattr(model, "epoch", None)
    if continuing and seed is None:
        seed = (loaded or own).get("seed")
    seed = fresh_seed() if seed is None else seed
    threaded = augment if hasattr(augment, "ensure_generator") else None
    if continuing and loaded and loaded.get("augment") is not None and threaded is not None:
        backend = _model_backend(model)
        threaded.ensure_generator(backend.name, backend.device).load_state_dict(
            loaded["augment"])
    if hasattr(model, "fit_random"):
        model._resume_random = None  # a checkpoint's state continues one run, once
        model.fit_random = {"seed": seed, "augment": threaded}
    return seed


class _Epoch:
    """Step 2: one pass over the batches. The losses stay on the device; their sum is read
    once at the end (and every ``progress_every`` steps for the progress display)."""

    def __init__(self, model: Any, batches: BatchIterator, augment: Any,
                 progress_every: int | None, strategy: DataParallel | None = None,
                 stops_mid_epoch: bool = False):
        self.model, self.batches, self.augment = model, batches, augment
        self.progress_every = progress_every
        self.strategy = strategy  # data-parallel: this process trains on its rows of each batch
        self.stops_mid_epoch = stops_mid_epoch  # a callback may stop it after any step
        # per-sample sum: mean losses are weighted by their batch size
        self.weight_by_size = getattr(model.loss, "reduction", "mean") == "mean"
        self.step_losses: list[Array] = []
        self._first_bad: tuple[int, int | None] | None = None  # (steps read, answer)

    def nonfinite_step(self) -> int | None:
        """Index of the first step of this epoch whose loss is NaN/Inf (one transfer; asked
        again with no new step, e.g. by TerminateOnNaN and then by fit, it reads nothing)."""
        if self._first_bad is None or self._first_bad[0] != len(self.step_losses):
            self._first_bad = (len(self.step_losses), self._find_nonfinite_step())
        return self._first_bad[1]

    def _find_nonfinite_step(self) -> int | None:
        if not self.step_losses:
            return None
        xp = compat.array_namespace(self.step_losses[0])
        values = to_numpy(xp.stack(self.step_losses))
        for i, v in enumerate(values.tolist()):
            if not math.isfinite(v):
                return i
        return None

    def _data_parallel_step(self, step: int, xb: Array, yb: Array) -> tuple[Any, Array]:
        """This process's rows of the global batch (xb, yb) through one data-parallel step."""
        strategy = self.strategy
        strategy.step = step
        x_r, y_r, weight = strategy.shard(xb, yb)
        if not self.weight_by_size:  # a summed loss: the global gradient is the plain sum
            weight = 1.0
        loss = self.model.engine.data_parallel_step(x_r, y_r, strategy, weight, xb.shape[0],
                                                    augment=self.augment)
        return loss, x_r

    def run(self, chain: CallbackList, state: TrainingState) -> dict[str, float]:
        """Train on every batch; returns {"loss", "time", "samples_per_second"}."""
        start = time.perf_counter()
        self.step_losses.clear()
        self._first_bad = None
        total, seen = None, 0
        steps = len(self.batches)
        strategy = self.strategy
        for step, (xb, yb) in enumerate(self.batches):
            if strategy is None:
                loss = self.model.train_step(xb, yb) if self.augment is None else \
                    self.model.train_step(xb, yb, augment=self.augment)
            else:
                loss, xb = self._data_parallel_step(step, xb, yb)
            size = xb.shape[0]
            seen += size
            if loss is not None:  # None: this process had no rows in the batch
                contribution = loss * float(size) if self.weight_by_size else loss
                total = contribution if total is None else total + contribution
                self.step_losses.append(loss)
            state.step = step
            batch_logs: dict[str, Any] = {"size": size}
            every = self.progress_every
            if every and (step + 1) % every == 0 and step + 1 < steps:
                batch_logs["loss"] = float(total) / seen  # a read every progress_every steps
            chain.on_batch_end(step, batch_logs)
            if strategy is not None and self.stops_mid_epoch:  # every process stops here, or
                state.stop = strategy.any(state.stop, f"the stop decision of "  # none does
                                                      f"{strategy.where()}")
            if state.stop:
                break
        if strategy is None:
            loss = float(total) / seen  # the once-per-epoch read (it also waits for the device)
        else:  # the sums of every process, in one all-reduce
            total, seen = strategy.reduce_sums([0.0 if total is None else total, seen],
                                               like=self.batches.arrays[0])
            loss = total / seen
        elapsed = time.perf_counter() - start
        return {"loss": loss, "time": elapsed,
                "samples_per_second": seen / elapsed if elapsed > 0 else math.inf}


def _validate(model: Any, data: _FitData, metric_list: list, train_metrics: bool,
              eval_batch_size: int | None,
              strategy: DataParallel | None = None) -> dict[str, float]:
    """Step 3: metrics on the training data (if asked) and loss + metrics on the validation
    data, in evaluation mode."""
    logs: dict[str, float] = {}
    model.train(False)
    if train_metrics and metric_list:
        logs.update(_evaluate_on_device(model, data.x, data.y, metric_list, eval_batch_size,
                                        include_loss=False, strategy=strategy))
    if data.x_val is not None:
        val = _evaluate_on_device(model, data.x_val, data.y_val, metric_list, eval_batch_size,
                                  strategy=strategy)
        logs.update({f"val_{k}": v for k, v in val.items()})
    model.train(True)
    return logs


class _NonFiniteGuard:
    """Step 4: what ``fit`` does when an epoch's loss is NaN or Inf (``on_nonfinite``).

    * "restore" (the default): warn, stop, and roll the model back to its parameters, buffers
      and optimizer state (slots and step count) as they were at the end of the last finite
      epoch, or before training when the first epoch diverged. To have them, :meth:`keep`
      copies that state after every finite epoch: one device copy, no host read. The copy is
      needed because the in-place optimizer path writes into the very arrays the model holds.
    * "stop": warn and stop; the parameters stay as the diverged epoch left them.
    * "continue": warn (once) and train on.

    The random generators are not rolled back: a retry draws new dropout masks and shuffles.
    """

    def __init__(self, model: Any, policy: str, state: TrainingState, initial_epoch: int):
        self.model, self.policy, self.state = model, policy, state
        restorable = policy == "restore" and hasattr(model, "named_leaves")
        self.layout = StateLayout(model) if restorable else None
        self.kept: TrainState | None = None
        self.kept_epoch = initial_epoch  # the number of epochs behind the kept state
        self.restored = False
        self.warned = False

    def keep(self, epochs_done: int) -> None:
        """Copy the model's current state (after ``epochs_done`` epochs) as the fallback."""
        if self.layout is None:
            return
        state = self.layout.gather(self.model.optimizer)
        self.kept = TrainState(_copies(state.params),
                               OptState(state.opt.step, _copies(state.opt.slots)),
                               _copies(state.buffers), {})
        self.kept_epoch = epochs_done

    def diverged(self, epoch: int, loss: float, step: int | None, lr: float,
                 processes: int = 1) -> None:
        """The loss of ``epoch`` is ``loss`` (NaN or Inf): warn, then stop or restore.

        ``step``: the first of this process's steps whose loss was not finite (None: all
        were). ``processes``: how many train together (their losses are summed first).
        """
        if self.warned and self.policy == "continue":
            return
        steps = self.state.steps_per_epoch
        if step is not None:
            where = f", first at step {step + 1} of {steps}"
        elif processes > 1:  # the reduced sum holds another process's losses too
            where = (" (every step's loss on this process was finite: the NaN/Inf came from "
                     "another process's rows, or the sum of the losses overflowed)")
        else:
            where = " (every step's loss was finite; their sum overflowed)"
        if self.policy == "continue":
            done = "Training continues (on_nonfinite='continue'); the parameters may hold NaN " \
                "or Inf."
        elif self.layout is not None and self.kept is not None:
            self.layout.scatter(self.kept, self.model.optimizer)  # the copies become the model's
            self.kept, self.restored = None, True
            when = f"at the end of epoch {self.kept_epoch}" if self.kept_epoch else \
                "before training"
            done = (f"Training stopped, and the model's parameters, buffers and optimizer "
                    f"state are back to what they were {when} (on_nonfinite='restore'; "
                    "'stop' keeps the diverged ones).")
        else:
            done = ("Training stopped; the parameters may hold NaN or Inf "
                    f"(on_nonfinite={self.policy!r}).")
        message = (f"fit: the training loss became {loss} in epoch {epoch + 1}{where}. {done} "
                   f"Lower the learning rate (it was {lr:.3g}), clip the gradients (e.g. "
                   "global_clip_norm=1.0 on the optimizer), or check the inputs and targets "
                   "for extreme values.")
        if self.policy != "continue" and not self.state.stop:
            self.state.stop = True
            self.state.stop_reason, self.state.stop_message = "nonfinite_loss", message
        self.warned = True
        warnings.warn(message, NonFiniteLossWarning, stacklevel=_caller_stacklevel())


def _copies(arrays: dict) -> dict:
    """A copy of every array in a (nested) dict, on its device."""
    return {k: _copies(v) if isinstance(v, dict) else compat.array_namespace(v).asarray(
        v, copy=True) for k, v in arrays.items()}


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside portanet (the user's
    ``model.fit(...)`` line, however many portanet frames lie between)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "portanet":
        frame, level = frame.f_back, level + 1
    return level


@contextlib.contextmanager
def _jit_compile_for_this_call(model: Any, jit_compile: Any):
    """``fit(..., jit_compile=...)`` overrides the model's setting for the call only."""
    if jit_compile is None or not hasattr(model, "jit_compile"):
        yield
        return
    saved = model.jit_compile
    model.jit_compile = jit_compile
    try:
        yield
    finally:
        model.jit_compile = saved


def fit(model: Any, x: Any, y: Any, epochs: int = 1, batch_size: int = 32,
        shuffle: bool | str = True, validation_split: float = 0.0,
        validation_data: tuple[Any, Any] | None = None,
        callbacks: Sequence[Callback] | None = None, verbose: int = 1,
        metrics: Any = None, train_metrics: bool = False, seed: int | None = None,
        initial_epoch: int = 0, augment: Callable[[Array], Array] | None = None,
        progress_every: int | None = None, eval_batch_size: int | None = DEFAULT_EVAL_BATCH,
        check_inputs: bool = True, jit_compile: Any = None,
        on_nonfinite: str = "restore", distributed: Any = False) -> History:
    """Train ``model`` on (x, y) for ``epochs`` epochs of mini-batch steps.

    The loop, in named steps: check the arguments; prepare the data (onto the device once,
    split off the validation part, check values); then for each epoch run the batches
    (:class:`_Epoch`), validate (:func:`_validate`), call the callbacks, which may stop it,
    and act on a NaN/Inf loss (:class:`_NonFiniteGuard`).

    Args:
        model: a model with ``train_step``, ``loss`` and ``optimizer`` (``pn.Sequential``).
        x: inputs (N, ...). y: targets (N, ...) (class ids, one-hot rows or values).
        epochs: index of the last epoch + 1 (training runs epochs ``initial_epoch..epochs-1``).
        batch_size: samples per step (the last batch of an epoch may be smaller; a compiled
            step compiles that shape once more).
        shuffle: True (a new on-device permutation per epoch), "host" (permutations drawn on
            the host from ``seed``: the same order on every backend), or False.
        validation_split: fraction of (x, y) held out for validation, chosen at random on the
            host from ``seed`` (ignored when ``validation_data`` is given).
        validation_data: (x_val, y_val) evaluated after every epoch.
        callbacks: :mod:`portanet.callbacks` instances.
        verbose: 0 silent, 1 a progress bar per epoch (tqdm if installed) and a summary line,
            2 only the summary line.
        metrics: metric names/functions computed on the validation data each epoch (as
            ``val_<name>``), and on the training data when ``train_metrics``.
        train_metrics: also compute ``metrics`` on the training data after each epoch (one
            extra forward pass over it).
        seed: seed of the shuffles and the validation split. None: fresh entropy, or, when
            the fit continues a run (``initial_epoch == model.epoch``, e.g. a model loaded
            from a checkpoint), that run's seed, so the resumed run equals the uninterrupted
            one (see :func:`_continue_random`).
        initial_epoch: epoch to start at (to resume from a checkpoint's ``epoch``).
        augment: applied to each input batch on the device. A ``pn.data.Augment`` runs
            inside the (compiled) step, its random keys threaded through it; any other
            function runs on the batch before the step.
        progress_every: read the running loss every this many steps for the progress display
            and TerminateOnNaN (default: ~10 times per epoch when verbose=1, else never).
        eval_batch_size: batch size of the validation forward passes.
        check_inputs: check x and y for NaN/Inf, for values that overflow the model's dtype,
            and the targets for the loss's range once before training (a few reads of the
            whole arrays).
        jit_compile: "auto", True or False for this call (None: the model's setting; see
            :mod:`portanet.engine`).
        on_nonfinite: what to do after an epoch whose training loss is NaN or Inf. Every
            choice warns (:class:`NonFiniteLossWarning`: the epoch, the first bad step, what
            to try). "restore" (default): stop, and put back the parameters, buffers and
            optimizer state of the end of the last finite epoch (or of the start, when the
            first epoch diverged); it costs one on-device copy of that state per epoch.
            "stop": stop and keep the diverged weights. "continue": train on.
            ``history.stop_reason`` is then "nonfinite_loss" (unless a callback, e.g.
            TerminateOnNaN, stopped first) and ``model.epoch`` counts the epochs behind the
            weights the model holds.
        distributed: True (or a :class:`portanet.distributed.DataParallel`) trains on every
            process of an ``mpiexec -n N`` or ``torchrun --nproc-per-node N`` launch: each
            takes its rows of every ``batch_size`` batch and the gradients are averaged (see
            :mod:`portanet.distributed.parallel`). In one process it changes nothing.

    Returns:
        A :class:`History`: ``history.history["loss"]`` etc., one float per epoch (a diverged
        epoch included, with NaN for the validation values it skipped); ``stop_reason`` and
        ``stop_message`` say why training ended early.
    """
    _check_fit_arguments(model, epochs, initial_epoch, batch_size, verbose, progress_every,
                         validation_split, on_nonfinite)
    strategy = data_parallel(distributed, getattr(getattr(model, "backend", None), "device",
                                                  None))
    if strategy is None:
        return _fit(model, x, y, epochs, batch_size, shuffle, validation_split, validation_data,
                    callbacks, verbose, metrics, train_metrics, seed, initial_epoch, augment,
                    progress_every, eval_batch_size, check_inputs, jit_compile, on_nonfinite)
    with strategy.comm.stop_all_on_error():  # one process failing stops all of them
        return _fit(model, x, y, epochs, batch_size, shuffle, validation_split, validation_data,
                    callbacks, verbose, metrics, train_metrics, seed, initial_epoch, augment,
                    progress_every, eval_batch_size, check_inputs, jit_compile, on_nonfinite,
                    strategy)


def _fit(model: Any, x: Any, y: Any, epochs: int, batch_size: int, shuffle: bool | str,
         validation_split: float, validation_data: Any, callbacks: Any, verbose: int,
         metrics: Any, train_metrics: bool, seed: int | None, initial_epoch: int, augment: Any,
         progress_every: int | None, eval_batch_size: int | None, check_inputs: bool,
         jit_compile: Any, on_nonfinite: str,
         strategy: DataParallel | None = None) -> History:
    """:func:`fit`'s loop, after the argument checks (``strategy``: data-parallel or None)."""
    seed_given = seed is not None
    seed = _continue_random(model, seed, initial_epoch, augment)
    if strategy is not None:  # rank 0's seed where none was given (shuffles, splits)
        seed = strategy.shared_seed(seed, seed_given)
        model.fit_random["seed"] = seed
        verbose = verbose if strategy.is_chief else 0  # rank 0 alone prints
        callbacks = [cb for cb in callbacks or []
                     if strategy.is_chief or not getattr(cb, "chief_only", False)]
    metric_list = _metric_list(metrics)
    data = _prepare_data(model, x, y, validation_data, validation_split, seed, check_inputs)
    _check_metric_classes(model, data.x, metric_list)
    if strategy is not None:
        strategy.check(model, seed, {"epochs": epochs, "batch_size": batch_size,
                                     "shuffle": shuffle, "initial_epoch": initial_epoch,
                                     "validation_split": validation_split,
                                     "metrics": [m.name for m in metric_list]}, data.x)
        strategy.share_state(model, StateLayout(model))

    # every epoch's order is a function of (seed, epoch), in each shuffle mode: a resumed run
    # shuffles as if it had never stopped
    batches = BatchIterator(data.x, data.y, batch_size=batch_size, shuffle=shuffle, seed=seed,
                            start_epoch=initial_epoch)
    if progress_every is None and verbose == 1:
        progress_every = _auto_progress_every(len(batches))
    epoch_run = _Epoch(model, batches, augment, progress_every, strategy,
                       strategy is not None and _stops_mid_epoch(callbacks))

    history = History()
    progress = ProgressBar(verbose) if verbose else None
    chain = CallbackList([*(callbacks or []), history, *([progress] if progress else [])])
    validation = data.x_val is not None
    keys = _logged_keys(metric_list, train_metrics, validation)
    state = TrainingState(epochs=epochs, steps_per_epoch=len(batches),
                          nonfinite_step=epoch_run.nonfinite_step,
                          has_validation=validation, log_keys=keys)
    chain.set_context(model, state)
    guard = _NonFiniteGuard(model, on_nonfinite, state, initial_epoch)
    model.train(True)
    chain.on_train_begin({})  # callbacks check their settings against state here
    if epochs > initial_epoch:
        guard.keep(initial_epoch)  # the state training starts from
    with _jit_compile_for_this_call(model, jit_compile):
        for epoch in range(initial_epoch, epochs):
            state.epoch = epoch
            if strategy is not None:
                strategy.begin_epoch(model, seed, epoch, augment)
            chain.on_epoch_begin(epoch, {})
            lr = current_learning_rate(model.optimizer)
            ran = epoch_run.run(chain, state)
            logs: dict[str, Any] = {"loss": ran["loss"]}
            finite = math.isfinite(ran["loss"])
            if strategy is not None:  # BatchNorm statistics: rank 0's, everywhere
                strategy.share_buffers(model)
            if finite:
                logs.update(_validate(model, data, metric_list, train_metrics,
                                      eval_batch_size, strategy))
            else:  # NaN weights score nothing: the epoch still logs every key, as NaN
                logs.update(dict.fromkeys(_scored_keys(keys), math.nan))
            logs.update(lr=lr, time=ran["time"], samples_per_second=ran["samples_per_second"])
            chain.on_epoch_end(epoch, logs)
            if not finite:
                guard.diverged(epoch, ran["loss"], epoch_run.nonfinite_step(), lr,
                               1 if strategy is None else strategy.size)
            elif epoch + 1 < epochs and not state.stop:
                guard.keep(epoch + 1)
            if strategy is not None:
                strategy.agree_to_stop(state)
            if state.stop:
                break
    model.train(False)
    chain.on_train_end({})
    model.epoch = guard.kept_epoch if guard.restored else \
        state.epoch + 1 if epochs > initial_epoch else initial_epoch
    return history


def _stops_mid_epoch(callbacks: Sequence[Callback] | None) -> bool:
    """Whether a callback may stop training after a step (it has its own ``on_batch_end``):
    data-parallel processes must then agree after every step, not only after each epoch."""
    return any(isinstance(cb, Callback) and type(cb).on_batch_end is not Callback.on_batch_end
               for cb in callbacks or [])


# ---------------------------------------------------------------------------------------------
# k-fold cross-validation
# ---------------------------------------------------------------------------------------------
@dataclass
class CrossValidationResult:
    """Scores of each fold, and their mean and (population) standard deviation."""

    folds: list[dict[str, float]]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line per score: "accuracy: 0.9512 +- 0.0081 (5 folds)"."""
        return "\n".join(f"{k}: {self.mean[k]:.4f} +- {self.std[k]:.4f} ({len(self.folds)} "
                         "folds)" for k in self.mean)

    def __str__(self) -> str:
        return self.summary()


def _pstdev(values: list[float]) -> float:
    """Population standard deviation; NaN when a fold's score is NaN or Inf (a diverged fold):
    ``statistics.pstdev`` computes exactly with fractions and raises on NaN/Inf instead."""
    if not all(math.isfinite(v) for v in values):
        return math.nan
    return statistics.pstdev(values)


def cross_validate(build_model: Callable[[], Any], x: Any, y: Any, k: int = 5,
                   metrics: Any = ("accuracy",), stratify: bool = True, seed: int = 0,
                   epochs: int = 10, batch_size: int = 32, verbose: int = 0,
                   fold_seed: int | None = None, **fit_kwargs: Any) -> CrossValidationResult:
    """k-fold cross-validation: train a fresh model on k-1 folds, score it on the held-out one.

    Args:
        build_model: a function returning a new, untrained model (called once per fold).
        x, y: the whole data set.
        k: number of folds (each sample is held out exactly once).
        metrics: scores computed on each held-out fold (the loss is always included).
        stratify: keep class proportions in every fold (``y`` holds class labels).
        seed: seed of the fold assignment and of each fold's training shuffles.
        fold_seed: seed of the fold assignment alone (None: ``seed``), so that runs with
            different training seeds (the trials of a ``pn.tuning`` search) score on the
            same folds.
        epochs, batch_size, verbose, **fit_kwargs: passed to :func:`fit`.

    Returns:
        A :class:`CrossValidationResult` with per-fold scores, mean and standard deviation.
    """
    if not callable(build_model) or hasattr(build_model, "train_step"):
        raise TypeError("build_model must be a function that returns a new model (e.g. "
                        "lambda: pn.Sequential(...)), received "
                        f"{type(build_model).__name__}: each fold needs a fresh model.")
    probe = build_model()
    xd, yd = to_model(probe, x, "x"), to_model(probe, y, "y", role="y")
    n = _check_pair(xd, yd, "cross_validate")
    labels = host_labels(yd) if stratify else None
    folds = []
    folds_from = seed if fold_seed is None else fold_seed
    for i, (train, test) in enumerate(kfold_indices(n, k, labels=labels, shuffle=True,
                                                    seed=folds_from)):
        model = probe if i == 0 else build_model()
        x_tr, y_tr = take_rows(xd, train), take_rows(yd, train)
        x_te, y_te = take_rows(xd, test), take_rows(yd, test)
        fit(model, x_tr, y_tr, epochs=epochs, batch_size=batch_size, verbose=verbose,
            seed=seed + i, **fit_kwargs)
        scores = _evaluate_on_device(model, x_te, y_te, _metric_list(metrics), DEFAULT_EVAL_BATCH)
        folds.append(scores)
        if verbose:
            print(f"fold {i + 1}/{k}: " + "  ".join(f"{m} {v:.4f}" for m, v in scores.items()))
    keys = list(folds[0])
    mean = {m: statistics.fmean(f[m] for f in folds) for m in keys}
    std = {m: _pstdev([f[m] for f in folds]) for m in keys}
    return CrossValidationResult(folds, mean, std)
