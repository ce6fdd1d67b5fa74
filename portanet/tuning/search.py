"""The searches: check the arguments, run the trials, collect the results."""

from __future__ import annotations

import concurrent.futures
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..backend import Backend, use_backend
from ..training import fit
from . import arguments, runners
from .arguments import FIT_PARAMETERS
from .results import TuningResults
from .spaces import ParameterGrid, ParameterSampler, check_seed
from .trial import (
    Trial,
    TrialData,
    TrialError,
    TrialPlan,
    TrialTask,
    model_builder,
    split_params,
    trial_seed,
)

__all__ = ["FIT_PARAMETERS", "grid_search", "random_search", "search"]


def grid_search(build: Callable[..., Any], space: Any, x: Any, y: Any,
                **options: Any) -> TuningResults:
    """Try every combination of a dict of lists (:class:`~portanet.tuning.ParameterGrid`).

    The order: the keys as the dict lists them, the last one varying fastest; trial ``i`` is
    the i-th combination. A list of dicts runs each dict's grid in turn.

    Args:
        build, x, y, options: as :func:`search`.
        space: {name: [values, ...]}, e.g. ``{"units": [8, 32], "epochs": [2, 4]}``.

    Example:
        >>> import portanet as pn, portanet.tuning
        >>> from portanet import data
        >>> def build(units, learning_rate, seed):
        ...     return pn.Sequential([pn.layers.Dense(2, units, activation="relu"),
        ...                           pn.layers.Dense(units, 3)],
        ...                          loss="softmax_cross_entropy",
        ...                          optimizer=pn.optimizers.Adam(learning_rate), seed=seed)
        >>> x, y = data.make_spiral(n_samples=90, seed=0)
        >>> results = pn.tuning.grid_search(build, {"units": [4, 8], "learning_rate": [0.01]},
        ...                                 x, y, fit_kwargs={"epochs": 2}, seed=0)
        >>> [t.params["units"] for t in results.trials], results.scoring
        ([4, 8], 'val_loss')
    """
    grid = ParameterGrid(space)
    return search(build, list(grid), x, y, scales=grid.scales(), **options)


def random_search(build: Callable[..., Any], space: Mapping[str, Any], x: Any, y: Any,
                  n_trials: int = 10, seed: int = 0, **options: Any) -> TuningResults:
    """Try ``n_trials`` points drawn from a space of lists and distributions.

    Trial ``i``'s values come from ``pn.random.host_generator(seed, (0, i))``
    (:class:`~portanet.tuning.ParameterSampler`): a function of the seed and ``i`` only.

    Args:
        build, x, y, options: as :func:`search`.
        space: {name: [values] (a uniform choice) or a distribution}, e.g.
            ``{"learning_rate": loguniform(1e-4, 1e-1), "units": randint(4, 65)}``.
        n_trials: how many points to draw and try.
        seed: the draws and every trial's seed.
    """
    sampler = ParameterSampler(space, n_trials, seed)
    return search(build, list(sampler), x, y, seed=seed, scales=sampler.scales(), **options)


def search(build: Callable[..., Any], candidates: Sequence[Mapping[str, Any]], x: Any, y: Any,
           *, seed: int = 0, cv: int | None = None, validation_split: float = 0.2,
           validation_data: tuple[Any, Any] | None = None, scoring: str = "val_loss",
           mode: str = "auto", metrics: Any = None, fit_kwargs: Mapping[str, Any] | None = None,
           stratify: bool | None = None, backend: str | Backend | None = None,
           device: Any = None, n_jobs: int = 1, threads: int | str | None = "auto",
           executor: Any = None, client: Any = None, devices: Sequence[str] | None = None,
           on_error: str = "record", refit: bool = False, verbose: int = 0,
           scales: Mapping[str, str] | None = None) -> TuningResults:
    """Train and score one model per candidate (a dict of hyperparameters); the best wins.

    A trial calls ``build(**params)`` for a fresh model (with ``loss`` and ``optimizer``), plus
    ``seed=`` its own seed when build has a ``seed`` parameter. Candidate keys that are ``fit``
    parameters (``epochs``, ``batch_size``, ``shuffle``, ...: :data:`FIT_PARAMETERS`) go to
    fit instead. Then it is scored on held-out data:

    * default: one validation split of (x, y), drawn once from ``seed`` and shared by every
      trial (``validation_split`` of the samples, stratified as ``stratify`` says), or
      ``validation_data=(x_val, y_val)``; the score is the last epoch's value in fit's logs;
    * ``cv=k``: ``pn.cross_validate`` with k folds; the score is the mean over the folds.

    Trial ``i``'s seed is :func:`~portanet.tuning.trial_seed` ``(seed, i)``, given to fit
    (shuffles; with ``cv``, also the folds) and offered to build (initial weights).

    Args:
        build: a function of the hyperparameters returning a new model. For ``n_jobs > 1`` a
            module-level function (processes receive it by pickling); any callable otherwise.
        candidates: the points to try, in order (trial ``i`` is ``candidates[i]``).
        x, y: the data (NumPy, lists or any backend's arrays).
        seed: seed of the validation split and of every trial (an int >= 0).
        cv: None, or k >= 2 for k-fold cross-validation.
        validation_split: the held-out fraction, in (0, 1), without ``cv``/``validation_data``.
        validation_data: (x_val, y_val) to score on instead of a split.
        scoring: the held-out value to optimize: "val_loss" (default), or a metric name, with
            or without "val_" ("accuracy" and "val_accuracy" are the same: measured on the
            held-out data, never the training data). A metric is added to ``metrics`` if needed.
        mode: "min", "max" or "auto": min for the loss, else the metric's
            ``higher_is_better`` (accuracy, f1, roc_auc, r2: max; mse, mae, rmse: min).
        metrics: more metrics to record in every trial's ``scores``.
        fit_kwargs: fixed fit arguments (``epochs``, ``batch_size``, ``callbacks``, ...; a
            candidate's value wins). Trials default to fit's ``epochs=1, batch_size=32`` and
            ``on_nonfinite="stop"`` (a diverged trial fails, it is not restored).
        stratify: class-balanced split/folds; None: when y holds integer class ids.
        backend, device: where trials train: a backend name (or a ``pn.Backend``) and its
            device; default the active backend and its device (on Dask: the workers' default
            device, or ``devices``).
        n_jobs: 1 runs trials here, in order; N > 1 (or -1: one per CPU) in a pool of N
            "spawn" processes made for this call (:func:`~portanet.tuning.process_pool`).
        threads: native threads per pool process ("auto": the CPUs divided among them).
        executor: a ``concurrent.futures`` executor to run the trials on instead (e.g. one
            :func:`~portanet.tuning.process_pool` kept for several searches).
        client: a ``dask.distributed.Client`` (or a scheduler address) to submit trials to.
        devices: with ``client``: one device per worker (e.g. ["cuda:0", "cuda:1"]); each
            trial runs on a free worker with that worker's device.
        on_error: "record" (a failed trial is kept with its error and the search goes on) or
            "raise" (stop at the first failure with :class:`~portanet.tuning.TrialError`).
        refit: train ``build(**best_params)`` on all of (x, y), with the best trial's seed and
            fit arguments, in this process; it is ``results.best_model``.
        verbose: 0 silent, 1 one line per finished trial.
        scales: per parameter "log", "linear" or "categorical", for ``results.plot``.

    Returns:
        :class:`~portanet.tuning.TuningResults`.
    """
    candidates = arguments.check_candidates(candidates)
    seed = check_seed(seed)
    arguments.check_options(cv, validation_split, validation_data, mode, on_error, verbose, refit)
    key, metric_list, mode = arguments.scoring_key(scoring, mode, metrics)
    fit_params = arguments.fit_arguments(fit_kwargs)
    fit_names, takes_seed = arguments.route(build, candidates)
    where = arguments.runner(n_jobs, threads, executor, client, devices, len(candidates))
    name, device = arguments.target(backend, device, on_dask=where == "dask")
    data = arguments.prepare_data(x, y, cv, validation_split, validation_data, seed, stratify,
                                  to_host=where != "here")
    plan = TrialPlan(build, takes_seed, fit_names, fit_params, tuple(metric_list), key, cv,
                     data.stratify, name, on_error == "raise", fold_seed=seed)
    tasks = [TrialTask(i, dict(p), trial_seed(seed, i), device,
                       "local" if where == "here" else "pool") for i, p in enumerate(candidates)]
    trials: list[Trial] = []
    _run(where, plan, data.trial_data, tasks, _reporter(trials, len(tasks), plan, verbose),
         n_jobs=n_jobs, threads=threads, executor=executor, client=client, devices=devices)
    results = TuningResults(trials, key, mode, dict(scales or {}))
    if refit:
        results.best_model = _refit(plan, results.best, x, y, name, device)
    return results


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------
def _reporter(trials: list[Trial], total: int, plan: TrialPlan, verbose: int
              ) -> Callable[[Trial], None]:
    """Collects each finished trial; prints its line; raises on a failure with "raise"."""

    def report(trial: Trial) -> None:
        trials.append(trial)
        if verbose:
            params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
            outcome = f"{plan.scoring}={trial.score:.6g}" if trial.ok else \
                f"failed: {trial.error[:80] if trial.error else ''}"
            print(f"[tuning] {len(trials)}/{total} trial {trial.index}: {outcome}  {params}  "
                  f"({trial.seconds:.2f} s, {trial.device}, {trial.worker})", flush=True)
        if plan.raise_errors and not trial.ok:
            raise TrialError(f"trial {trial.index} with {trial.params} failed: {trial.error}")

    return report


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _run(where: str, plan: TrialPlan, data: TrialData, tasks: list[TrialTask],
         report: Callable[[Trial], None], *, n_jobs: int, threads: Any, executor: Any,
         client: Any, devices: Any) -> None:
    if where == "here":
        runners.run_here(plan, data, tasks, report)
    elif where == "executor":
        if isinstance(executor, concurrent.futures.ProcessPoolExecutor):
            runners.check_picklable(plan, "a process pool executor")
        runners.run_on_executor(executor, plan, data, tasks, report)
    elif where == "pool":
        workers = min(runners.check_n_jobs(n_jobs), len(tasks))
        runners.check_picklable(plan, f"n_jobs={n_jobs}")
        with runners.process_pool(workers, threads) as pool:
            try:
                runners.run_on_executor(pool, plan, data, tasks, report)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        _run_on_dask(client, plan, data, tasks, report, devices)


def _run_on_dask(client: Any, plan: TrialPlan, data: TrialData, tasks: list[TrialTask],
                 report: Callable[[Trial], None], devices: Any) -> None:
    own = isinstance(client, str)
    if own:  # a scheduler address: connect for this search only
        client = runners.import_distributed().Client(client)
    elif not hasattr(client, "submit") or not hasattr(client, "scatter"):
        raise TypeError(f"client must be a dask.distributed.Client (or a scheduler address "
                        f"such as 'tcp://scheduler:8786'), received {type(client).__name__}.")
    try:
        runners.run_on_dask(client, plan, data, tasks, report, devices)
    finally:
        if own:
            client.close()


def _refit(plan: TrialPlan, best: Trial, x: Any, y: Any, backend: str, device: str | None
           ) -> Any:
    """The best parameters trained on all of (x, y), here, with the best trial's seed."""
    build_params, fit_params = split_params(plan, best.params)
    with use_backend(backend, device):
        model = model_builder(plan, build_params, best.seed)()
        fit(model, x, y, metrics=list(plan.metrics), seed=best.seed, verbose=0, **fit_params)
    return model
