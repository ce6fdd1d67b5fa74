"""portanet.tuning: search spaces, trials and their seeds, where trials run, failures, results.

The expected values come from elsewhere: the grid's order from nested loops, the draws and the
seeds from NumPy's SeedSequence directly, each score from the same fit / cross_validate run by
hand, the pool's and Dask's results from the sequential run (bit for bit).

One process pool and one Dask cluster serve the whole module (module-scoped fixtures): each
costs seconds to start on the 2-core machine.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import sys

import numpy as np
import pytest

import portanet as pn
import portanet.tuning as tuning
from portanet import data, layers, optimizers
from portanet.tuning import choice, loguniform, randint, uniform

X, Y = data.make_spiral(n_samples=90, seed=0)
FIT = {"epochs": 2, "batch_size": 16}


def build(units=8, learning_rate=0.05, optimizer="adam", seed=0):
    """The tiny model every test tunes (module level: process pools import it by name)."""
    opt = optimizers.Adam(learning_rate) if optimizer == "adam" else optimizers.SGD(learning_rate)
    return pn.Sequential([layers.Dense(2, units, activation="relu"), layers.Dense(units, 3)],
                         loss="softmax_cross_entropy", optimizer=opt, seed=seed)


def _outcome(results):
    """What must not depend on where the trials ran: everything but time and place."""
    return [(t.index, t.params, t.seed, t.score, t.scores, t.status, t.error)
            for t in results.trials]


def _same(a, b):
    """Outcomes equal bit for bit (NaN equal to NaN, as a failed trial's score)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        *rest_x, score_x, scores_x, status_x, error_x = x
        *rest_y, score_y, scores_y, status_y, error_y = y
        assert rest_x == rest_y and (status_x, error_x) == (status_y, error_y)
        assert score_x == score_y or (math.isnan(score_x) and math.isnan(score_y))
        assert scores_x == scores_y


@pytest.fixture(scope="module")
def pool():
    with tuning.process_pool(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


@pytest.fixture(autouse=True)
def _quiet_numpy():
    """Divergent trials are part of the tests: NumPy's overflow warnings are expected."""
    with np.errstate(all="ignore"):
        yield


# ---------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------
def test_grid_is_every_combination_last_key_fastest():
    space = {"a": [1, 2, 3], "b": ["x", "y"], "c": [0.5]}
    grid = tuning.ParameterGrid(space)
    expected = [{"a": a, "b": b, "c": c} for a in space["a"] for b in space["b"]
                for c in space["c"]]
    assert len(grid) == 6 and list(grid) == expected
    assert grid[0] == expected[0] and grid[-1] == expected[-1] and grid[3] == expected[3]
    with pytest.raises(IndexError, match="6 combinations"):
        grid[6]
    union = tuning.ParameterGrid([{"a": [1, 2]}, {"b": [3]}])
    assert list(union) == [{"a": 1}, {"a": 2}, {"b": 3}] and len(union) == 3


def test_grid_search_runs_the_grid_in_order():
    results = tuning.grid_search(build, {"units": [4, 8], "learning_rate": [0.01, 0.1]}, X, Y,
                                 fit_kwargs=FIT)
    assert [t.params for t in results.trials] == [
        {"units": 4, "learning_rate": 0.01}, {"units": 4, "learning_rate": 0.1},
        {"units": 8, "learning_rate": 0.01}, {"units": 8, "learning_rate": 0.1}]
    assert [t.index for t in results.trials] == [0, 1, 2, 3]


def _by_hand_draws(space_draw, seed, n):
    """Trial i's values, drawn with NumPy directly from SeedSequence(seed, spawn_key=(0, i))."""
    out = []
    for i in range(n):
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0, i))))
        out.append(space_draw(g))
    return out


def test_random_draws_are_a_function_of_the_seed_and_the_index():
    space = {"lr": loguniform(1e-4, 1e-1), "drop": uniform(0.0, 0.5), "units": randint(4, 9),
             "act": ["relu", "tanh"], "opt": choice(["adam", "sgd"])}
    draws = list(tuning.ParameterSampler(space, n_trials=5, seed=3))

    def draw(g):  # the documented recipe: one draw per name, in the space's order
        return {"lr": math.exp(g.uniform(math.log(1e-4), math.log(1e-1))),
                "drop": g.uniform(0.0, 0.5), "units": int(g.integers(4, 9)),
                "act": ["relu", "tanh"][int(g.integers(2))],
                "opt": ["adam", "sgd"][int(g.integers(2))]}

    assert draws == _by_hand_draws(draw, 3, 5)
    assert list(tuning.ParameterSampler(space, n_trials=3, seed=3)) == draws[:3]
    assert list(tuning.ParameterSampler(space, n_trials=5, seed=4)) != draws
    assert all(type(d["lr"]) is float and type(d["units"]) is int for d in draws)


def test_random_search_trials_do_not_depend_on_n_jobs(pool):
    space = {"units": randint(2, 9), "learning_rate": loguniform(1e-3, 1e-1)}
    here = tuning.random_search(build, space, X, Y, n_trials=3, seed=7, fit_kwargs=FIT)
    there = tuning.random_search(build, space, X, Y, n_trials=3, seed=7, fit_kwargs=FIT,
                                 executor=pool)
    assert [t.params for t in here.trials] == list(tuning.ParameterSampler(space, 3, seed=7))
    _same(_outcome(here), _outcome(there))


def test_each_distribution_draws_in_its_range():
    n = 2000
    draws = list(tuning.ParameterSampler(
        {"u": uniform(-1.0, 2.0), "l": loguniform(1e-3, 10.0), "r": randint(3, 6),
         "c": choice(["a", 7, None])}, n_trials=n, seed=0))
    u, lg, r = (np.array([d[k] for d in draws]) for k in "ulr")
    assert u.min() >= -1.0 and u.max() < 2.0
    assert lg.min() >= 1e-3 and lg.max() < 10.0
    assert set(r) == {3, 4, 5}  # high is excluded, low and high - 1 both occur
    assert {d["c"] for d in draws} == {"a", 7, None}


def test_loguniform_is_uniform_in_log_space():
    """4000 draws from loguniform(1e-4, 1): each decade holds a quarter of them (within 4
    binomial standard deviations, sqrt(4000 * 1/4 * 3/4) = 27), and a Kolmogorov-Smirnov
    distance to U(-4, 0) below 1.63 / sqrt(n) (the 1% critical value); uniform(1e-4, 1),
    the control, puts ~90% in the top decade and fails both."""
    n = 4000

    def decades(dist):
        values = np.array([d["v"] for d in tuning.ParameterSampler({"v": dist}, n, seed=1)])
        logs = np.log10(values)
        counts = np.histogram(logs, bins=[-4, -3, -2, -1, 0])[0]
        grid = np.sort(logs)
        ks = np.max(np.abs(np.arange(1, n + 1) / n - (grid + 4.0) / 4.0))
        return counts, ks

    counts, ks = decades(loguniform(1e-4, 1.0))
    assert np.all(np.abs(counts - n / 4) < 4 * math.sqrt(n * 0.25 * 0.75)), counts
    assert ks < 1.63 / math.sqrt(n), ks
    control, control_ks = decades(uniform(1e-4, 1.0))
    assert control[-1] > 0.85 * n and control_ks > 0.5


@pytest.mark.parametrize(("space", "error", "match"), [
    (lambda: {"units": []}, ValueError, "empty list"),
    (lambda: {"units": 8}, TypeError, r"list of values.*\[8\]"),
    (lambda: {"act": "relu"}, TypeError, r"list of values.*\['relu'\]"),
    (lambda: {3: [1, 2]}, TypeError, "parameter name"),
    (lambda: {"lr": uniform(0.1, 0.1)}, ValueError, "low < high"),
    (lambda: {"lr": uniform(0.0, float("nan"))}, ValueError, "finite real"),
    (lambda: {"lr": loguniform(0.0, 1.0)}, ValueError, "0 < low"),
    (lambda: {"lr": loguniform(-1.0, 1.0)}, ValueError, "0 < low"),
    (lambda: {"units": randint(4, 4)}, ValueError, "high excluded"),
    (lambda: {"units": randint(1.0, 4)}, ValueError, "must be an int"),
    (lambda: {"act": choice([])}, ValueError, "empty list"),
], ids=["empty-list", "scalar", "string", "int-key", "uniform-low=high", "uniform-nan",
        "loguniform-zero", "loguniform-negative", "randint-empty", "randint-float",
        "choice-empty"])
def test_bad_spaces_fail_before_any_trial(space, error, match):
    """Distributions refuse bad bounds when made; spaces when the search starts."""
    calls = []

    def counting_build(**params):
        calls.append(params)
        return build(**params)

    with pytest.raises(error, match=match):
        tuning.random_search(counting_build, space(), X, Y, n_trials=2)
    assert calls == []


def test_a_grid_refuses_distributions():
    with pytest.raises(TypeError, match="use random_search|Use random_search"):
        tuning.grid_search(build, {"learning_rate": loguniform(1e-3, 1e-1)}, X, Y)
    with pytest.raises(TypeError, match="dict of name"):
        tuning.grid_search(build, ["units", 4], X, Y)


# ---------------------------------------------------------------------------------------------
# Trials: seeds and scores against an independent run
# ---------------------------------------------------------------------------------------------
def test_trial_seeds_come_from_seed_sequence_spawn_keys():
    for seed, index in ((0, 0), (0, 1), (5, 3)):
        g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed,
                                                                       spawn_key=(1, index))))
        assert tuning.trial_seed(seed, index) == int(g.integers(2**31))
    seeds = [tuning.trial_seed(0, i) for i in range(50)]
    assert len(set(seeds)) == 50


def test_a_score_equals_the_same_fit_by_hand():
    """Trial 1 of a grid (epochs from the space goes to fit, units to build) against fit on the
    documented split, with the trial's seed, run here by hand."""
    results = tuning.grid_search(build, {"units": [4, 6], "epochs": [3]}, X, Y, seed=11,
                                 scoring="accuracy", fit_kwargs={"batch_size": 16})
    trial = results.trials[1]
    assert trial.seed == tuning.trial_seed(11, 1) and trial.ok
    x_tr, x_val, y_tr, y_val = data.train_test_split(X, Y, test_size=0.2, stratify=True, seed=11)
    model = build(units=6, seed=trial.seed)
    history = model.fit(x_tr, y_tr, epochs=3, batch_size=16, validation_data=(x_val, y_val),
                        metrics=["accuracy"], seed=trial.seed, verbose=0)
    assert len(history["loss"]) == 3
    assert trial.score == history["val_accuracy"][-1]
    assert trial.scores == {"train_loss": history["loss"][-1],
                            "val_loss": history["val_loss"][-1],
                            "val_accuracy": history["val_accuracy"][-1]}
    assert results.mode == "max" and results.scoring == "val_accuracy"


def test_a_cv_score_equals_cross_validate_by_hand():
    results = tuning.grid_search(build, {"units": [5]}, X, Y, cv=3, seed=2, fit_kwargs=FIT,
                                 metrics=["accuracy"])
    trial = results.trials[0]
    # the folds come from the search's seed (2), the training from the trial's
    by_hand = pn.training.cross_validate(lambda: build(units=5, seed=trial.seed), X, Y, k=3,
                                         metrics=["accuracy"], seed=trial.seed, fold_seed=2,
                                         on_nonfinite="stop", **FIT)
    assert trial.score == by_hand.mean["loss"]
    assert trial.scores == {"val_loss": by_hand.mean["loss"],
                            "val_accuracy": by_hand.mean["accuracy"],
                            "val_loss_std": by_hand.std["loss"],
                            "val_accuracy_std": by_hand.std["accuracy"]}


def test_cross_validate_fold_seed_sets_the_folds_alone():
    """fold_seed=None is seed; another fold_seed with the same training seed changes the
    folds (so the scores), the same one does not."""
    def run(**seeds):
        return pn.training.cross_validate(lambda: build(units=5, seed=0), X, Y, k=3,
                                          **seeds, **FIT).folds

    assert run(seed=5) == run(seed=5, fold_seed=5)
    assert run(seed=5) != run(seed=5, fold_seed=1)


def test_validation_data_scores_on_it_and_build_without_seed_works():
    x_val, y_val = data.make_spiral(n_samples=30, seed=1)

    def fixed(units):  # no seed parameter: the trial's seed goes to fit only
        return build(units=units, seed=0)

    trial = tuning.grid_search(fixed, {"units": [4]}, X, Y, validation_data=(x_val, y_val),
                               fit_kwargs=FIT).trials[0]
    history = fixed(4).fit(X, Y, validation_data=(x_val, y_val), seed=trial.seed, verbose=0,
                           **FIT)
    assert trial.score == history["val_loss"][-1]


def test_sequential_search_on_every_backend(backend):
    """The default backend is the active one: trials train there, and score what a fit by
    hand on that backend scores. Eager steps, and one shape for every trial: on JAX a new
    model compiles its own step (about a second each here) and each new shape its ops."""
    eager = {**FIT, "jit_compile": False}
    results = tuning.grid_search(build, {"learning_rate": [0.05, 0.01]}, X, Y,
                                 fit_kwargs=eager, seed=0)
    assert all(t.ok for t in results.trials), results.table()
    assert {t.device for t in results.trials} == {f"{backend.name}:"
                                                  f"{backend.backend.device_name}"}
    trial = results.trials[1]
    x_tr, x_val, y_tr, y_val = data.train_test_split(X, Y, test_size=0.2, stratify=True, seed=0)
    model = build(learning_rate=0.01, seed=trial.seed)
    history = model.fit(x_tr, y_tr, validation_data=(x_val, y_val), seed=trial.seed, verbose=0,
                        **eager)
    assert trial.score == history["val_loss"][-1]


def test_auto_mode_follows_the_score():
    def mode(scoring):
        return tuning.search(build, [{"units": 3}], X, Y, scoring=scoring,
                             fit_kwargs={"epochs": 1}).mode

    assert (mode("val_loss"), mode("loss"), mode("accuracy"), mode("val_f1_macro")) == \
        ("min", "min", "max", "max")
    assert tuning.search(build, [{"units": 3}], X, Y, scoring="accuracy", mode="min",
                         fit_kwargs={"epochs": 1}).mode == "min"


# ---------------------------------------------------------------------------------------------
# Where trials run: the same results everywhere
# ---------------------------------------------------------------------------------------------
GRID = {"units": [0, 4, 6], "learning_rate": [0.01, 0.1]}  # units=0: two trials that raise


def test_process_pool_equals_sequential_bit_for_bit(pool):
    here = tuning.grid_search(build, GRID, X, Y, fit_kwargs=FIT, metrics=["accuracy"])
    assert [t.status for t in here.trials].count("failed") == 2
    on_pool = tuning.grid_search(build, GRID, X, Y, fit_kwargs=FIT, metrics=["accuracy"],
                                 executor=pool)
    _same(_outcome(here), _outcome(on_pool))
    assert {t.worker for t in on_pool.trials}.isdisjoint({t.worker for t in here.trials})
    small = {"units": [4, 6]}  # n_jobs=2 makes (and closes) a pool of its own
    _same(_outcome(tuning.grid_search(build, small, X, Y, fit_kwargs=FIT, n_jobs=2)),
          _outcome(tuning.grid_search(build, small, X, Y, fit_kwargs=FIT)))


def test_dask_equals_sequential_bit_for_bit(dask_client):
    here = tuning.grid_search(build, GRID, X, Y, fit_kwargs=FIT, metrics=["accuracy"])
    on_dask = tuning.grid_search(build, GRID, X, Y, fit_kwargs=FIT, metrics=["accuracy"],
                                 client=dask_client)
    _same(_outcome(here), _outcome(on_dask))
    workers = set(dask_client.scheduler_info(n_workers=-1)["workers"])
    assert {t.worker for t in on_dask.trials} <= workers
    pinned = tuning.grid_search(build, GRID, X, Y, fit_kwargs=FIT, metrics=["accuracy"],
                                client=dask_client, devices=["cpu", "cpu"])
    _same(_outcome(here), _outcome(pinned))
    assert {t.device for t in pinned.trials} == {"numpy:cpu"}
    # callbacks travel too (cloudpickle): each trial gets its own EarlyStopping
    stop = {**FIT, "epochs": 4, "callbacks": [pn.callbacks.EarlyStopping(patience=1)]}
    _same(_outcome(tuning.grid_search(build, GRID, X, Y, fit_kwargs=stop, client=dask_client)),
          _outcome(tuning.grid_search(build, GRID, X, Y, fit_kwargs=stop)))
    with pytest.raises(ValueError, match="one Dask worker per device"):
        tuning.grid_search(build, GRID, X, Y, client=dask_client, devices=["cpu"] * 3)
    # a lambda is fine on Dask (cloudpickle sends it by value)
    def by_lambda(**where):
        return tuning.grid_search(lambda units, seed: build(units=units, seed=seed),
                                  {"units": [4]}, X, Y, fit_kwargs=FIT, **where)

    _same(_outcome(by_lambda(client=dask_client)), _outcome(by_lambda()))


def _thread_report():
    """What a pool worker's native thread pools are (run there; module level to pickle)."""
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return os.environ.get("OMP_NUM_THREADS"), blas


def test_pool_workers_start_with_their_threads_capped(pool):
    pytest.importorskip("threadpoolctl")
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    expected = str(max(1, tuning.runners.cpu_count() // 2))
    omp, blas = pool.submit(_thread_report).result()
    assert omp == expected and blas and set(blas) == {int(expected)}
    assert os.environ.get("OPENBLAS_NUM_THREADS") == before  # this process is left as it was


def test_a_lambda_with_n_jobs_is_refused_and_works_here():
    calls = []

    def local(units, seed):
        calls.append(units)
        return build(units=units, seed=seed)

    for fn in (lambda units, seed: build(units=units, seed=seed), local):
        with pytest.raises(TypeError, match=r"module-level function.*n_jobs=1"):
            tuning.grid_search(fn, {"units": [4, 5]}, X, Y, n_jobs=2)
    assert calls == []
    assert tuning.grid_search(local, {"units": [4]}, X, Y, fit_kwargs=FIT).trials[0].ok


def test_without_dask_a_client_address_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "portanet\[dask\]"'):
        tuning.grid_search(build, {"units": [4]}, X, Y, client="tcp://127.0.0.1:1")


# ---------------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------------
def test_failed_trials_are_recorded_and_the_sweep_goes_on():
    # SGD(1e30) overflows the ReLU network within an epoch. (At 1e20 divergence depends on the
    # seed: when every ReLU dies, training stays finite.)
    space = {"units": [0, 4], "learning_rate": [1e30, 0.05], "optimizer": ["sgd"]}
    with pytest.warns(pn.training.NonFiniteLossWarning):
        results = tuning.grid_search(build, space, X, Y, fit_kwargs=FIT)
    status = {(t.params["units"], t.params["learning_rate"]): t for t in results.trials}
    raised, diverged, good = status[(0, 1e30)], status[(4, 1e30)], status[(4, 0.05)]
    assert raised.status == "failed" and raised.error.startswith("ValueError: Dense")
    assert "Traceback" in raised.traceback and math.isnan(raised.score)
    assert diverged.status == "failed" and diverged.error.startswith("nonfinite_loss: fit:")
    assert "Lower the learning rate" in diverged.error and math.isnan(diverged.score)
    assert good.ok and results.best is good and results.best_params == good.params
    assert len(results.failed) == 3


def test_on_error_raise_stops_at_the_first_failure():
    with pytest.raises(tuning.TrialError, match=r"trial 0 with \{'units': 0\} failed: "
                                                r"ValueError") as info:
        tuning.grid_search(build, {"units": [0, 4]}, X, Y, fit_kwargs=FIT, on_error="raise")
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.warns(pn.training.NonFiniteLossWarning), \
            pytest.raises(tuning.TrialError, match="nonfinite_loss"):
        tuning.grid_search(build, {"learning_rate": [1e30], "optimizer": ["sgd"]}, X, Y,
                           fit_kwargs=FIT, on_error="raise")


def test_best_of_an_all_failed_search_lists_the_errors():
    results = tuning.grid_search(build, {"units": [0, -1]}, X, Y, fit_kwargs=FIT)
    with pytest.raises(ValueError, match=r"all 2 trials failed.*trial 0 \{'units': 0\}: "
                                         r"ValueError.*trial 1"):
        _ = results.best
    assert "0 ok" in repr(results) and "2 failed" in results.table()


# ---------------------------------------------------------------------------------------------
# Bad arguments
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"space": {"unit": [4]}}, ValueError, r"neither a parameter of build.*did you mean 'units'"),
    ({"space": {"seed": [1, 2]}}, ValueError, "derived from the search's seed"),
    ({"space": {"epochs": [1]}, "build": lambda epochs=1, seed=0: build()}, ValueError,
     "both build and fit"),
    ({"fit_kwargs": {"epoch": 2}}, ValueError, r"not a fit parameter \(did you mean 'epochs'"),
    ({"fit_kwargs": {"verbose": 1}}, ValueError, "verbose=1 prints a line"),
    ({"fit_kwargs": {"validation_split": 0.1}}, ValueError, "pass validation_split="),
    ({"scoring": "acuracy"}, ValueError, "did you mean 'accuracy'"),
    ({"scoring": "train_loss"}, ValueError, "held-out value"),
    ({"mode": "maximize"}, ValueError, "mode must be one of"),
    ({"on_error": "ignore"}, ValueError, "on_error must be one of"),
    ({"cv": 1}, ValueError, "folds >= 2"),
    ({"validation_split": 1.0}, ValueError, r"fraction in \(0, 1\)"),
    ({"validation_split": 0.0}, ValueError, r"fraction in \(0, 1\)"),
    ({"n_jobs": 0}, ValueError, "n_jobs must be"),
    ({"n_jobs": 2, "client": "tcp://x:1"}, ValueError, "pass one of"),
    ({"devices": ["cpu"]}, ValueError, "needs client="),
    ({"backend": "tensorflow"}, pn.BackendError, "unknown backend"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0"),
    ({"threads": 0, "n_jobs": 2}, ValueError, "threads must be"),
    ({"build": build(4)}, TypeError, "fresh model"),
    ({"build": lambda units, learning_rate=0.1: build(units), "space": {"learning_rate": [0.1]}},
     ValueError,
     r"\['units'\] have no default"),
], ids=lambda v: str(v)[:30] if not isinstance(v, type) else v.__name__)
def test_bad_arguments_fail_before_any_trial(kwargs, error, match):
    calls = []
    target = kwargs.pop("build", build)
    space = kwargs.pop("space", {"units": [4]})
    fn = target
    if not hasattr(target, "train_step"):  # count calls; keep target's signature (wraps)
        @functools.wraps(target)
        def fn(*args, **params):
            calls.append(params)
            return target(*args, **params)

    with pytest.raises(error, match=match):
        tuning.grid_search(fn, space, X, Y, **kwargs)
    assert calls == []


# ---------------------------------------------------------------------------------------------
# Results: tables, rows, plot, refit, progress
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed():
    """Three trials, one failed: the results the table tests read."""
    return tuning.grid_search(build, {"units": [0, 4, 6]}, X, Y, fit_kwargs=FIT,
                              scoring="accuracy")


def test_table_is_aligned_best_first_failed_last(mixed):
    text = mixed.table()
    lines = text.splitlines()
    assert lines[0].startswith("3 trials, 1 failed, scored by val_accuracy (higher is better)")
    header, _rule, *rows = lines[1:]
    assert header.split() == ["rank", "trial", "units", "val_accuracy", "status", "seconds",
                              "error"]
    assert rows[0].split()[:2] == ["1", str(mixed.best.index)] and rows[-1].startswith("-")
    assert "ValueError: Dense" in rows[-1]
    assert header.index("status") == rows[0].index("ok")  # the columns line up
    assert str(mixed) == text
    ok = sorted((t for t in mixed.trials if t.ok), key=lambda t: -t.score)
    assert [r.split()[1] for r in rows[:2]] == [str(t.index) for t in ok]


def test_markdown_and_dicts(mixed):
    md = mixed.to_markdown().splitlines()
    assert md[0] == "| rank | trial | units | val_accuracy | status | seconds | error |"
    assert md[1] == "|---|---|---|---|---|---|---|" and len(md) == 5
    rows = mixed.to_dicts()
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[1]["param_units"] == 4 and rows[1]["val_accuracy"] == mixed.trials[1].score
    assert rows[0]["status"] == "failed" and rows[0]["error"].startswith("ValueError")
    assert {"seed", "seconds", "worker", "device", "score", "train_loss"} <= set(rows[1])


def test_plot_writes_a_png(mixed, tmp_path):
    pytest.importorskip("matplotlib")
    path = mixed.plot(tmp_path / "units.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = tuning.random_search(build, {"learning_rate": loguniform(1e-3, 1e-1),
                                         "optimizer": ["adam", "sgd"]}, X, Y, n_trials=3,
                                 fit_kwargs={"epochs": 1})
    assert drawn.scales == {"learning_rate": "log", "optimizer": "categorical"}
    for param in ("learning_rate", "optimizer"):
        out = drawn.plot(tmp_path / f"{param}.png", param=param)
        assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no trial has a parameter 'lr'"):
        drawn.plot(tmp_path / "x.png", param="lr")


def test_plot_without_matplotlib_names_the_extra(mixed, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r'pip install "portanet\[plot\]"'):
        mixed.plot(tmp_path / "x.png")


def test_refit_trains_the_best_on_all_the_data():
    results = tuning.grid_search(build, {"units": [3, 5], "epochs": [2]}, X, Y, refit=True,
                                 fit_kwargs={"batch_size": 16})
    best = results.best
    by_hand = build(units=best.params["units"], seed=best.seed)
    by_hand.fit(X, Y, epochs=2, batch_size=16, seed=best.seed, verbose=0)
    np.testing.assert_array_equal(pn.to_numpy(results.best_model.predict(X)),
                                  pn.to_numpy(by_hand.predict(X)))
    assert results.best_model.epoch == 2


def test_verbose_prints_one_line_per_trial(capsys):
    tuning.grid_search(build, {"units": [0, 4]}, X, Y, fit_kwargs={"epochs": 1}, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[tuning] 1/2 trial 0: failed: ValueError")
    assert lines[1].startswith("[tuning] 2/2 trial 1: val_loss=") and "units=4" in lines[1]


def test_grid_scales_guess_log_axes():
    grid = tuning.ParameterGrid({"lr": [1e-4, 1e-3, 1e-2], "units": [4, 8], "act": ["relu"]})
    assert grid.scales() == {"lr": "log", "units": "linear", "act": "categorical"}
    assert list(itertools.islice(grid, 1)) == [{"lr": 1e-4, "units": 4, "act": "relu"}]
