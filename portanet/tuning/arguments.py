"""A search's arguments, checked and prepared before any trial runs.

Every argument, every point of the space and the backend are checked here, so a misspelt name
fails in a second, not after an hour of trials; then the data is split once for all trials.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import array_api_compat as compat

from .. import metrics as metrics_module
from ..backend import BACKEND_NAMES, Backend, get_backend, make_backend
from ..data import train_test_split
from ..data._util import as_numeric, check_same_length
from ..devices import to_numpy
from ..training import fit
from . import runners
from .trial import TrialData

__all__ = ["FIT_PARAMETERS", "Prepared", "check_candidates", "check_options", "fit_arguments",
           "prepare_data", "route", "runner", "scoring_key", "target"]

_FIT_SIGNATURE = inspect.signature(fit).parameters
FIT_PARAMETERS = tuple(n for n in _FIT_SIGNATURE if n not in ("model", "x", "y"))
"""The names a space (or ``fit_kwargs``) may give to ``fit`` rather than to ``build``."""

_RESERVED = {
    "seed": "each trial's seed is derived from the search's seed= (see Trial.seed)",
    "verbose": "trials train silently; the search's verbose=1 prints a line per trial",
    "metrics": "pass metrics= to the search",
    "validation_split": "pass validation_split= to the search (one split for every trial)",
    "validation_data": "pass validation_data= to the search",
}
"""fit parameters the search sets itself, and where to give them instead."""


def check_candidates(candidates: Any) -> list[dict[str, Any]]:
    """The candidates as a list of dicts with str keys (a copy), or a clear error."""
    if isinstance(candidates, Mapping) or not isinstance(candidates, Sequence):
        raise TypeError("search needs a list of candidates (dicts of hyperparameters), "
                        f"received {type(candidates).__name__}. For a dict of lists use "
                        "grid_search or random_search.")
    if not candidates:
        raise ValueError("search received no candidates: there is nothing to try.")
    for i, point in enumerate(candidates):
        if not isinstance(point, Mapping) or not all(isinstance(k, str) for k in point):
            raise TypeError(f"candidate {i} must be a dict of name -> value with str names, "
                            f"received {point!r}.")
    return [dict(p) for p in candidates]


def check_options(cv: Any, validation_split: Any, validation_data: Any, mode: Any,
                  on_error: Any, verbose: Any, refit: Any) -> None:
    """How trials are held out and scored, and the search's switches."""
    if cv is not None:
        if isinstance(cv, bool) or not isinstance(cv, int) or cv < 2:
            raise ValueError(f"cv must be None or a number of folds >= 2, received {cv!r}.")
        if validation_data is not None:
            raise ValueError("cv and validation_data are two ways to hold data out; pass one "
                             "(cv=k scores on k folds of x, y).")
    elif validation_data is None and not (
            isinstance(validation_split, (int, float)) and not isinstance(validation_split, bool)
            and 0.0 < validation_split < 1.0):
        raise ValueError(f"validation_split must be a fraction in (0, 1) (the held-out part "
                         f"that scores each trial), received {validation_split!r}; or pass "
                         "validation_data=(x_val, y_val) or cv=k.")
    for name, value, allowed in (("mode", mode, ("auto", "min", "max")),
                                 ("on_error", on_error, ("record", "raise")),
                                 ("verbose", verbose, (0, 1)), ("refit", refit, (False, True))):
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, "
                             f"received {value!r}.")


def scoring_key(scoring: Any, mode: str, metrics: Any) -> tuple[str, list[Any], str]:
    """(the score's key, the metrics every trial computes, "min" or "max")."""
    if not isinstance(scoring, str):
        raise TypeError(f"scoring must be a name such as 'val_loss' or 'accuracy', received "
                        f"{scoring!r}.")
    wanted = [] if metrics is None else [metrics] if isinstance(metrics, str) or \
        not isinstance(metrics, Sequence) else list(metrics)
    names = [metrics_module.get(m).name for m in wanted]  # unknown names fail here
    base = scoring[4:] if scoring.startswith("val_") else scoring
    if base == "loss":
        key, higher = "val_loss", False
    else:
        try:
            metric = metrics_module.get(base)
        except ValueError as err:
            raise ValueError(f"scoring={scoring!r}: {err} (scoring names a held-out value: "
                             "'val_loss' or a metric, e.g. 'val_accuracy')") from None
        key, higher = f"val_{metric.name}", metric.higher_is_better
        if metric.name not in names:
            wanted.append(base)
    return key, wanted, (("max" if higher else "min") if mode == "auto" else mode)


def fit_arguments(fit_kwargs: Any) -> dict[str, Any]:
    """The fixed fit arguments, with the trials' defaults under them."""
    if fit_kwargs is None:
        fit_kwargs = {}
    if not isinstance(fit_kwargs, Mapping):
        raise TypeError(f"fit_kwargs must be a dict of fit arguments, received "
                        f"{type(fit_kwargs).__name__}.")
    for name in fit_kwargs:
        _check_fit_name(name, "fit_kwargs")
    return {"epochs": _FIT_SIGNATURE["epochs"].default,
            "batch_size": _FIT_SIGNATURE["batch_size"].default, "on_nonfinite": "stop",
            **fit_kwargs}


def _check_fit_name(name: str, where: str) -> None:
    if name in _RESERVED:
        raise ValueError(f"{where} gives {name!r}, which the search sets: {_RESERVED[name]}.")
    if name not in FIT_PARAMETERS:
        raise ValueError(f"{where}: {name!r} is not a fit parameter{_close(name, FIT_PARAMETERS)}"
                         f". fit takes: {', '.join(FIT_PARAMETERS)}.")


def _close(name: str, known: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, list(known), n=3)
    return f" (did you mean {', '.join(map(repr, near))}?)" if near else ""


def route(build: Any, candidates: list[dict[str, Any]]) -> tuple[frozenset[str], bool]:
    """(the candidate keys that go to fit, whether build takes ``seed``), or an error for a
    key that neither build nor fit takes and for a required build parameter left out."""
    if not callable(build) or hasattr(build, "train_step"):
        raise TypeError(f"build must be a function returning a new model (def build(units, "
                        f"learning_rate): return pn.Sequential(...)), received "
                        f"{type(build).__name__}: every trial needs a fresh model.")
    try:
        parameters = inspect.signature(build).parameters
    except (TypeError, ValueError):  # a builtin without a signature: take it on trust
        parameters = {}
    named = {n for n, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = not parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    takes_seed = "seed" in named
    keys = dict.fromkeys(k for point in candidates for k in point)
    fit_names = set()
    for key in keys:
        if key in FIT_PARAMETERS or key in _RESERVED:
            _check_fit_name(key, f"the space's {key!r}")
            if key in named:
                raise ValueError(f"the space's {key!r} is a parameter of both build and fit; "
                                 "rename build's parameter (space keys that fit takes go to "
                                 "fit).")
            fit_names.add(key)
        elif key not in named and not takes_any:
            raise ValueError(f"the space's {key!r} is neither a parameter of build"
                             f"{inspect.signature(build)} nor of fit"
                             f"{_close(key, sorted(named | set(FIT_PARAMETERS)))}.")
    required = [n for n, p in parameters.items() if p.default is p.empty and n != "seed"
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for i, point in enumerate(candidates):
        missing = [n for n in required if n not in point]
        if missing:
            raise ValueError(f"build's parameters {missing} have no default and candidate {i} "
                             f"({point}) gives no value for them; add them to the space (a "
                             "list of one value fixes one).")
    return frozenset(fit_names), takes_seed


def runner(n_jobs: Any, threads: Any, executor: Any, client: Any, devices: Any,
           n_trials: int) -> str:
    """"here", "executor", "pool" or "dask"."""
    workers = runners.check_n_jobs(n_jobs)
    runners.pool_threads(threads, workers)  # a bad value fails here, not in the pool
    given = [name for name, on in (("n_jobs", workers > 1), ("executor", executor is not None),
                                   ("client", client is not None)) if on]
    if len(given) > 1:
        raise ValueError(f"pass one of n_jobs > 1, executor= and client= (received "
                         f"{' and '.join(given)}): each says where the trials run.")
    if devices is not None:
        if client is None:
            raise ValueError("devices= gives each Dask worker its device and needs client=; "
                             "to train here on one device pass device= (e.g. device='cuda:1').")
        if isinstance(devices, str) or not isinstance(devices, Sequence) or not devices or \
                not all(isinstance(d, str) for d in devices):
            raise TypeError(f"devices must be a non-empty list of device names, e.g. "
                            f"['cuda:0', 'cuda:1'], received {devices!r}.")
    if client is not None:
        return "dask"
    if executor is not None:
        if not hasattr(executor, "submit"):
            raise TypeError(f"executor must be a concurrent.futures executor (with submit), "
                            f"received {type(executor).__name__}.")
        return "executor"
    return "pool" if workers > 1 and n_trials > 1 else "here"


def target(backend: Any, device: Any, on_dask: bool) -> tuple[str, str | None]:
    """The backend's name and device that trials train on (checked here, where possible)."""
    if isinstance(backend, Backend):
        name, device = backend.name, backend.device_name if device is None else device
    elif backend is None:  # the active one; on Dask, the workers' default device
        active = get_backend()
        name = active.name
        device = device if device is not None or on_dask else active.device_name
    elif isinstance(backend, str):
        name = backend
    else:
        raise TypeError(f"backend must be a name such as 'numpy' or 'torch' (or a pn.Backend), "
                        f"received {type(backend).__name__}.")
    if device is not None and not isinstance(device, str):
        device = str(device)
    if on_dask:  # the workers may have libraries and devices that this process lacks
        if name not in BACKEND_NAMES:
            return make_backend(name, device).name, device  # its error lists the names
        return name, device
    resolved = make_backend(name, device)  # not installed, no such device: fails here
    return resolved.name, resolved.device_name


class Prepared:
    """The trials' data, and whether its split and folds are stratified."""

    def __init__(self, trial_data: TrialData, stratify: bool):
        self.trial_data, self.stratify = trial_data, stratify


def prepare_data(x: Any, y: Any, cv: int | None, validation_split: float,
                 validation_data: Any, seed: int, stratify: bool | None,
                 to_host: bool) -> Prepared:
    """The trials' data: the one validation split (or the given validation data), on the host
    when trials run in other processes."""
    x, y = as_numeric(x, "x"), as_numeric(y, "y")
    check_same_length(x=x, y=y)
    if stratify is None:
        stratify = compat.array_namespace(y).isdtype(y.dtype, ("integral", "bool"))
    if cv is not None:
        parts = (x, y, None, None)
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val), received "
                             f"{type(validation_data).__name__}.")
        parts = (x, y, as_numeric(validation_data[0], "validation x"),
                 as_numeric(validation_data[1], "validation y"))
    else:
        x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=float(validation_split),
                                                    stratify=stratify, seed=seed)
        parts = (x_tr, y_tr, x_val, y_val)
    if to_host:  # every process can unpickle NumPy arrays; device arrays need their library
        parts = tuple(None if a is None else to_numpy(a) for a in parts)
    return Prepared(TrialData(*parts), bool(stratify))
