"""One trial: build a model from a point of the space, train it, score it on held-out data.

A trial is a pure function of what it is sent (:class:`TrialPlan`, shared by every trial of a
search; :class:`TrialData`; :class:`TrialTask`, its index, parameters and seed), so it gives
the same :class:`Trial` in this process, in a process pool or on a Dask worker:

1. ``use_backend(plan.backend, task.device)``: the model is built where the search says;
2. ``build(**build_params)`` (plus ``seed=task.seed`` when build has a ``seed`` parameter);
3. score it: ``pn.fit(..., validation_data=..., seed=task.seed)`` and the last epoch's logs,
   or, with ``cv=k``, ``pn.cross_validate(..., seed=task.seed)`` and the mean over folds;
4. the trial failed if anything raised, or if its score or held-out loss is NaN or Inf.

Trial ``i``'s seed is ``pn.random.host_generator(seed, (1, i)).integers(2**31)``: a function of
the search's seed and the index alone (a ``SeedSequence`` spawn key, independent of every
other trial's), so where and in which order trials run changes nothing.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..backend import use_backend
from ..random import host_generator
from ..training import cross_validate, fit

__all__ = ["Trial", "TrialData", "TrialError", "TrialPlan", "TrialTask", "model_builder",
           "run_trial", "split_params", "trial_seed"]

TRIAL_STREAM = 1
"""``host_generator(seed, (TRIAL_STREAM, i))`` draws trial i's training seed."""

LOOP_KEYS = ("lr", "time", "samples_per_second")
"""What fit logs each epoch that is not a score."""


class TrialError(RuntimeError):
    """A trial failed and the search was asked to stop there (``on_error="raise"``); the
    message names the trial, its parameters and the error (in this process, the original
    exception is the ``__cause__``)."""


def trial_seed(seed: int, index: int) -> int:
    """The seed of trial ``index`` of a search seeded with ``seed`` (an int in [0, 2**31)).

    Example:
        >>> trial_seed(0, 0) == trial_seed(0, 0) != trial_seed(0, 1)
        True
    """
    return int(host_generator(seed, (TRIAL_STREAM, index)).integers(2**31))


@dataclass
class Trial:
    """What one trial did.

    Attributes:
        index: its position in the search (grid order, or draw number).
        params: the hyperparameters it tried.
        seed: its derived seed (given to fit, and to build when build takes ``seed``).
        score: the value the search optimizes (``scoring``); NaN when it failed.
        scores: every held-out value: ``val_loss``, ``val_<metric>``; with a validation split
            also ``train_loss`` (last epoch); with ``cv`` the means over folds and their
            standard deviations (``val_loss_std``, ...).
        status: "ok" or "failed".
        error: for a failed trial, "ExceptionType: message" (or why its score is not finite).
        seconds: wall time of the trial, build to score, where it ran.
        worker: where it ran: "host:pid" of the process, or the Dask worker's address.
        device: "backend:device" it trained on, e.g. "numpy:cpu", "torch:cuda:1".
        traceback: the formatted traceback of a trial that raised.
    """

    index: int
    params: dict[str, Any]
    seed: int
    score: float
    scores: dict[str, float]
    status: str
    error: str | None
    seconds: float
    worker: str
    device: str
    traceback: str | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class TrialPlan:
    """Everything trials share: how to build, train and score (picklable for a pool)."""

    build: Callable[..., Any]
    build_takes_seed: bool
    fit_names: frozenset[str]  # space keys that go to fit, not build
    fit_kwargs: dict[str, Any]  # fixed fit arguments (epochs and batch_size always set)
    metrics: tuple[Any, ...]
    scoring: str  # a key of Trial.scores, e.g. "val_loss"
    cv: int | None
    stratify: bool
    backend: str
    raise_errors: bool
    fold_seed: int = 0  # the search's seed: every trial of a cv search scores on the same folds


@dataclass(frozen=True)
class TrialData:
    """The training data, and the held-out part of a validation-split search."""

    x: Any
    y: Any
    x_val: Any = None
    y_val: Any = None


@dataclass(frozen=True)
class TrialTask:
    """One trial to run: its index, parameters, seed, device and the runner's name."""

    index: int
    params: dict[str, Any]
    seed: int
    device: str | None = None
    runner: str = "local"  # "local", "pool" or "dask" (how run_trial names where it ran)


def run_trial(plan: TrialPlan, data: TrialData, task: TrialTask) -> Trial:
    """Run one trial and report it; exceptions are recorded unless ``plan.raise_errors``."""
    start = time.perf_counter()
    device = f"{plan.backend}:{task.device or 'default'}"
    try:
        with use_backend(plan.backend, task.device) as backend:
            device = f"{backend.name}:{backend.device_name}"
            scores, diverged = (_cross_validated(plan, data, task) if plan.cv else
                                _validated(plan, data, task))
    except Exception as err:
        if plan.raise_errors:
            raise TrialError(f"trial {task.index} with {task.params} failed: "
                             f"{type(err).__name__}: {err}") from err
        return Trial(task.index, task.params, task.seed, math.nan, {}, "failed",
                     f"{type(err).__name__}: {err}", time.perf_counter() - start,
                     _where(task.runner), device, traceback.format_exc())
    score = scores.get(plan.scoring, math.nan)
    error = _nonfinite(plan.scoring, scores, diverged)
    return Trial(task.index, task.params, task.seed, score if error is None else math.nan,
                 scores, "ok" if error is None else "failed", error,
                 time.perf_counter() - start, _where(task.runner), device)


def split_params(plan: TrialPlan, params: dict[str, Any]) -> tuple[dict, dict]:
    """(build's keyword arguments, fit's), the fixed fit arguments under the space's.

    Each trial gets its own copy of the callbacks, as trials in other processes do (they
    unpickle theirs): trials running side by side in threads never share one's state.
    """
    build = {k: v for k, v in params.items() if k not in plan.fit_names}
    fitting = {**plan.fit_kwargs, **{k: v for k, v in params.items() if k in plan.fit_names}}
    if fitting.get("callbacks"):
        fitting["callbacks"] = copy.deepcopy(list(fitting["callbacks"]))
    return build, fitting


def model_builder(plan: TrialPlan, params: dict[str, Any], seed: int) -> Callable[[], Any]:
    """A function returning a fresh model for these parameters (cross_validate calls it per
    fold), checked to be a trainable model."""
    extra = {"seed": seed} if plan.build_takes_seed else {}

    def make() -> Any:
        model = plan.build(**params, **extra)
        if not hasattr(model, "train_step"):
            raise TypeError(f"build must return a model to train (pn.Sequential(layers, "
                            f"loss=..., optimizer=...)), received {type(model).__name__}.")
        return model

    return make


def _validated(plan: TrialPlan, data: TrialData, task: TrialTask) -> tuple[dict, str | None]:
    """Train on the training part, score the last epoch on the validation part."""
    build_params, fit_params = split_params(plan, task.params)
    model = model_builder(plan, build_params, task.seed)()
    history = fit(model, data.x, data.y, validation_data=(data.x_val, data.y_val),
                  metrics=list(plan.metrics), seed=task.seed, verbose=0, **fit_params)
    if not history.history.get("loss"):
        raise ValueError(f"fit ran no epoch (epochs={fit_params.get('epochs')!r}), so there "
                         "is nothing to score; give epochs >= 1.")
    scores = {("train_loss" if k == "loss" else k): float(v[-1])
              for k, v in history.history.items() if k not in LOOP_KEYS}
    diverged = history.stop_message if history.stop_reason == "nonfinite_loss" else None
    return scores, diverged


def _cross_validated(plan: TrialPlan, data: TrialData, task: TrialTask) -> tuple[dict, None]:
    """k-fold cross-validation; the scores are the means (and deviations) over the folds."""
    build_params, fit_params = split_params(plan, task.params)
    result = cross_validate(model_builder(plan, build_params, task.seed), data.x, data.y,
                            k=plan.cv, metrics=list(plan.metrics), stratify=plan.stratify,
                            seed=task.seed, fold_seed=plan.fold_seed, verbose=0,
                            **fit_params)
    scores = {f"val_{k}": float(v) for k, v in result.mean.items()}
    scores.update({f"val_{k}_std": float(v) for k, v in result.std.items()})
    return scores, None


def _nonfinite(scoring: str, scores: dict[str, float], diverged: str | None) -> str | None:
    """Why the trial failed although nothing raised, or None.

    A NaN/Inf score fails it; so does a NaN/Inf held-out loss, because then the model's
    weights diverged and its other metrics (an accuracy of NaN weights) mean nothing.
    """
    bad = {k: v for k, v in scores.items() if k in (scoring, "val_loss") and not math.isfinite(v)}
    if not bad and scoring in scores:
        return None
    if not bad:
        return f"no score {scoring!r} was computed; the trial's scores are {sorted(scores)}."
    what = ", ".join(f"{k}={v}" for k, v in bad.items())
    if diverged:
        return f"nonfinite_loss: {diverged}"
    return (f"non-finite held-out scores ({what}): the training loss became NaN or Inf "
            "(fit's NonFiniteLossWarning says where); a lower learning rate may help.")


def _where(runner: str) -> str:
    """The process a trial runs in: "host:pid", or the Dask worker's address."""
    if runner == "dask":
        from distributed import get_worker  # only ever called on a Dask worker

        return get_worker().address
    return f"{socket.gethostname()}:{os.getpid()}"
