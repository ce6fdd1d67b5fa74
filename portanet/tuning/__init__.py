"""Hyperparameter search: a grid or random draws, run here, in a process pool or on Dask.

A trial builds a fresh model from one point of the space (``build(**params)``), trains it with
``pn.fit`` (or ``pn.cross_validate`` with ``cv=k``) and scores it on held-out data; the search
keeps every trial, failed ones included, and picks the best.

=========================  ====================================================================
:mod:`.spaces`             grids, distributions (``uniform``, ``loguniform``, ``randint``,
                           ``choice``) and the host draws from them
:mod:`.trial`              one trial: build, train, score; its seed; what it reports
:mod:`.runners`            where trials run: here, a "spawn" process pool, a Dask cluster
:mod:`.results`            ``TuningResults``: the best trial, tables, rows, the plot
:mod:`.arguments`          a search's arguments checked (before any trial) and its data split
:mod:`.search`             ``grid_search``, ``random_search``, ``search``: check, run, collect
=========================  ====================================================================

Examples:
    >>> import portanet as pn, portanet.tuning
    >>> from portanet import data
    >>> def build(units, seed):
    ...     return pn.Sequential([pn.layers.Dense(2, units, activation="relu"),
    ...                           pn.layers.Dense(units, 3)],
    ...                          loss="softmax_cross_entropy", optimizer="adam", seed=seed)
    >>> x, y = data.make_spiral(n_samples=90, seed=0)
    >>> results = pn.tuning.random_search(build, {"units": pn.tuning.randint(4, 17)}, x, y,
    ...                                   n_trials=2, scoring="accuracy",
    ...                                   fit_kwargs={"epochs": 2})
    >>> results.mode, len(results.trials), results.best.status
    ('max', 2, 'ok')
"""

from .results import TuningResults
from .runners import process_pool
from .search import FIT_PARAMETERS, grid_search, random_search, search
from .spaces import (
    Distribution,
    ParameterGrid,
    ParameterSampler,
    choice,
    loguniform,
    randint,
    uniform,
)
from .trial import Trial, TrialError, trial_seed

__all__ = [
    "FIT_PARAMETERS",
    "Distribution",
    "ParameterGrid",
    "ParameterSampler",
    "Trial",
    "TrialError",
    "TuningResults",
    "choice",
    "grid_search",
    "loguniform",
    "process_pool",
    "randint",
    "random_search",
    "search",
    "trial_seed",
    "uniform",
]
