"""schedules: every schedule against torch.optim.lr_scheduler step by step (or its formula).

A schedule maps a Python int to a Python float and touches no array, so the schedule tests have
no backend to vary; the tests where schedules drive array work take the ``backend`` fixture
(in test_optimizers.py, optimizers driven by schedules; in test_lr_finder.py, the learning-rate
range test).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portanet import optimizers, schedules
from portanet.schedules import (
    Constant,
    CosineAnnealing,
    CosineWarmRestarts,
    Cyclical,
    ExponentialDecay,
    InverseTimeDecay,
    LinearWarmup,
    MultiStepDecay,
    OneCycle,
    PlateauDecay,
    PolynomialDecay,
    StepDecay,
)

N = 120  # steps compared per schedule


def torch_lrs(make_scheduler, base_lr: float, n: int = N) -> list[float]:
    """The rate torch's scheduler gives each of ``n`` updates (read before each update)."""
    torch = pytest.importorskip("torch")
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base_lr)
    scheduler = make_scheduler(opt, torch.optim.lr_scheduler)
    rates = []
    for _ in range(n):
        rates.append(float(opt.param_groups[0]["lr"]))
        opt.step()
        scheduler.step()
    return rates


def assert_rates(schedule, expected, rtol=1e-12):
    got = [schedule(t) for t in range(len(expected))]
    assert all(type(v) is float for v in got), "schedules return Python floats"
    scale = max(abs(v) for v in expected)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * scale)


TORCH_EQUIVALENTS = [
    ("constant", lambda: Constant(0.3), 0.3,
     lambda o, s: s.ConstantLR(o, factor=1.0, total_iters=5)),
    ("step", lambda: StepDecay(0.5, step_size=7, gamma=0.6), 0.5,
     lambda o, s: s.StepLR(o, step_size=7, gamma=0.6)),
    ("multi-step", lambda: MultiStepDecay(0.5, milestones=[30, 10, 55, 55], gamma=0.5), 0.5,
     lambda o, s: s.MultiStepLR(o, milestones=[30, 10, 55, 55], gamma=0.5)),
    ("exponential", lambda: ExponentialDecay(0.5, decay_rate=0.97), 0.5,
     lambda o, s: s.ExponentialLR(o, gamma=0.97)),
    ("polynomial-1", lambda: PolynomialDecay(0.4, decay_steps=80), 0.4,
     lambda o, s: s.PolynomialLR(o, total_iters=80, power=1.0)),
    ("polynomial-2.5", lambda: PolynomialDecay(0.4, decay_steps=80, power=2.5), 0.4,
     lambda o, s: s.PolynomialLR(o, total_iters=80, power=2.5)),
    ("cosine", lambda: CosineAnnealing(0.4, decay_steps=N - 1, min_learning_rate=0.01), 0.4,
     lambda o, s: s.CosineAnnealingLR(o, T_max=N - 1, eta_min=0.01)),
    ("warm-restarts", lambda: CosineWarmRestarts(0.4, first_period=17, min_learning_rate=0.02),
     0.4, lambda o, s: s.CosineAnnealingWarmRestarts(o, T_0=17, eta_min=0.02)),
    ("warm-restarts-mult", lambda: CosineWarmRestarts(0.4, first_period=5, period_mult=2), 0.4,
     lambda o, s: s.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2)),
    ("cyclic-triangular", lambda: Cyclical(0.01, 0.3, step_size_up=9, step_size_down=14),
     0.01, lambda o, s: s.CyclicLR(o, 0.01, 0.3, step_size_up=9, step_size_down=14,
                                   cycle_momentum=False)),
    ("cyclic-triangular2", lambda: Cyclical(0.01, 0.3, step_size_up=10, mode="triangular2"),
     0.01, lambda o, s: s.CyclicLR(o, 0.01, 0.3, step_size_up=10, mode="triangular2",
                                   cycle_momentum=False)),
    ("cyclic-exp-range", lambda: Cyclical(0.01, 0.3, step_size_up=8, mode="exp_range",
                                          gamma=0.98),
     0.01, lambda o, s: s.CyclicLR(o, 0.01, 0.3, step_size_up=8, mode="exp_range", gamma=0.98,
                                   cycle_momentum=False)),
    ("one-cycle", lambda: OneCycle(0.5, total_steps=N), 0.5,
     lambda o, s: s.OneCycleLR(o, max_lr=0.5, total_steps=N, cycle_momentum=False)),
    ("one-cycle-linear-3-phase", lambda: OneCycle(0.5, total_steps=N, pct_start=0.25,
                                                  anneal="linear", div_factor=10.0,
                                                  final_div_factor=100.0, three_phase=True),
     0.5, lambda o, s: s.OneCycleLR(o, max_lr=0.5, total_steps=N, pct_start=0.25,
                                    anneal_strategy="linear", div_factor=10.0,
                                    final_div_factor=100.0, three_phase=True,
                                    cycle_momentum=False)),
    ("linear-warmup", lambda: LinearWarmup(0.3, warmup_steps=12, start_factor=0.2), 0.3,
     lambda o, s: s.LinearLR(o, start_factor=0.2, total_iters=12)),
    ("warmup-then-cosine", lambda: LinearWarmup(CosineAnnealing(0.3, decay_steps=N - 20),
                                                warmup_steps=20, start_factor=0.1), 0.3,
     lambda o, s: s.SequentialLR(o, [s.LinearLR(o, start_factor=0.1, total_iters=20),
                                     s.CosineAnnealingLR(o, T_max=N - 20)], milestones=[20])),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's SequentialLR deprecation notes
@pytest.mark.parametrize("make, base_lr, torch_make", [c[1:] for c in TORCH_EQUIVALENTS],
                         ids=[c[0] for c in TORCH_EQUIVALENTS])
def test_schedule_matches_torch_step_by_step(make, base_lr, torch_make):
    """torch computes most rates recursively (lr_t from lr_(t-1)); the closed forms here agree
    to rounding: measured max difference 5.6e-16 relative to the largest rate, asserted 1e-12."""
    assert_rates(make(), torch_lrs(torch_make, base_lr))


def test_formulas_without_a_torch_twin():
    """InverseTimeDecay, staircase exponential decay and polynomial decay to a floor: the
    textbook formulas, written here."""
    t = np.arange(N)
    assert_rates(InverseTimeDecay(0.5, decay_rate=0.3, decay_steps=4),
                 0.5 / (1 + 0.3 * t / 4))
    assert_rates(InverseTimeDecay(0.5, decay_rate=0.3, decay_steps=4, staircase=True),
                 0.5 / (1 + 0.3 * np.floor(t / 4)))
    assert_rates(ExponentialDecay(0.5, decay_rate=0.5, decay_steps=10),
                 0.5 * 0.5 ** (t / 10))
    assert_rates(ExponentialDecay(0.5, decay_rate=0.5, decay_steps=10, staircase=True),
                 0.5 * 0.5 ** np.floor(t / 10))
    assert_rates(PolynomialDecay(0.5, decay_steps=50, end_learning_rate=0.05, power=2.0),
                 (0.5 - 0.05) * (1 - np.minimum(t, 50) / 50) ** 2 + 0.05)
    assert_rates(CosineAnnealing(0.5, decay_steps=50, min_learning_rate=0.1),
                 0.1 + 0.4 * (1 + np.cos(np.pi * np.minimum(t, 50) / 50)) / 2)
    assert OneCycle(0.5, total_steps=20)(500) == OneCycle(0.5, total_steps=20)(19)


def _plateau_metrics() -> list[float]:
    """A validation loss that improves, stalls, improves a little (below the threshold), ..."""
    rng = np.random.default_rng(3)
    values = list(np.linspace(1.0, 0.6, 8))
    values += [0.6] * 6 + [0.59999] * 5 + list(0.5 + 0.01 * rng.random(12))
    values += [0.3] + [0.31] * 14 + list(0.31 - 0.001 * np.arange(10)) + [float("nan")] * 3
    return [float(v) for v in values]


@pytest.mark.parametrize("kwargs", [
    {},
    {"patience": 2, "factor": 0.5},
    {"patience": 1, "factor": 0.5, "cooldown": 3, "min_learning_rate": 0.02},
    {"patience": 2, "threshold": 0.01, "threshold_mode": "abs"},
    {"patience": 0, "factor": 0.9, "eps": 0.015},
    {"mode": "max", "patience": 2, "factor": 0.5},
    {"mode": "max", "patience": 1, "threshold": 0.02, "threshold_mode": "abs", "cooldown": 1},
], ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_reduce_on_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    metrics = _plateau_metrics()
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=0.2)
    names = {"min_learning_rate": "min_lr"}
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, **{names.get(k, k): v for k, v in kwargs.items()})
    ours = PlateauDecay(0.2, **kwargs)
    for epoch, value in enumerate(metrics):
        reference.step(value)
        got = ours.update(value)
        assert got == pytest.approx(opt.param_groups[0]["lr"], rel=1e-14), f"epoch {epoch}"
        assert ours(epoch * 10) == got  # the schedule's value is the current rate
    reduced = ours.learning_rate
    assert reduced < 0.2  # the sequence does trigger reductions


def test_reduce_on_plateau_drives_an_optimizer_and_survives_config():
    plateau = PlateauDecay(0.1, patience=0, factor=0.5)
    opt = optimizers.SGD(plateau)
    assert opt.current_learning_rate() == 0.1
    plateau.update(1.0)
    plateau.update(1.0)
    assert opt.current_learning_rate() == 0.05
    config = json.loads(json.dumps(opt.get_config()))
    again = optimizers.get(config)
    assert again.current_learning_rate() == 0.05
    assert again.learning_rate.best == 1.0


def test_plateau_configs_saved_under_the_old_name_still_load():
    """Before issue 16 PlateauDecay was called ReduceLROnPlateau (like the callback); checkpoints
    store that name in the optimizer's config, with the history under "state"."""
    old = {"class_name": "ReduceLROnPlateau", "initial_learning_rate": 0.1, "mode": "min",
           "factor": 0.5, "patience": 0, "threshold": 1e-4, "threshold_mode": "rel",
           "cooldown": 0, "min_learning_rate": 0.0, "eps": 1e-8,
           "state": {"learning_rate": 0.05, "best": 1.0, "num_bad_epochs": 0,
                     "cooldown_counter": 0}}
    schedule = schedules.get(old)
    assert type(schedule) is PlateauDecay
    assert schedule(7) == 0.05 and schedule.best == 1.0
    assert schedule.update(1.0) == 0.025  # the history resumes: one more bad epoch halves it
    assert schedule.get_config()["class_name"] == "PlateauDecay"  # saved under the new name
    opt = optimizers.get({"class_name": "SGD", "learning_rate": old})
    assert type(opt.learning_rate) is PlateauDecay and opt.current_learning_rate() == 0.05


@pytest.mark.parametrize("name, match", [
    ("ReduceLROnPlateau", r"schedules\.PlateauDecay .*pn\.callbacks\.ReduceLROnPlateau is the "
                          r"callback"),
    ("lr_finder", r"moved to the training floor: pn\.lr_finder\(model, x, y, \.\.\.\)"),
])
def test_moved_names_say_where_they_went(name, match):
    with pytest.raises(AttributeError, match=match):
        getattr(schedules, name)
    assert not hasattr(schedules, "no_such_name")


ALL = [c[1]() for c in TORCH_EQUIVALENTS] + [
    InverseTimeDecay(0.1, 0.5, staircase=True), ExponentialDecay(0.1, 0.5, 3),
    PlateauDecay(0.1, mode="max")]


def test_get_config_round_trip_is_json():
    for schedule in ALL:
        config = json.loads(json.dumps(schedule.get_config()))
        again = schedules.get(config)
        assert type(again) is type(schedule)
        assert [again(t) for t in range(50)] == [schedule(t) for t in range(50)]
        assert repr(again) == repr(schedule)
    assert schedules.get(0.3)(10) == 0.3
    assert schedules.get(ALL[0]) is ALL[0]
    fn = lambda step: 0.1  # noqa: E731
    assert schedules.get(fn) is fn


@pytest.mark.parametrize("make, match", [
    (lambda: Constant(-0.1), r"learning_rate must be a finite number >= 0, received -0.1"),
    (lambda: StepDecay(0.1, step_size=0), r"step_size must be a positive int, received 0"),
    (lambda: StepDecay(0.1, step_size=2.5), r"step_size must be a positive int, received 2.5"),
    (lambda: MultiStepDecay(0.1, milestones=[5, -1]), r"each milestone must be a positive int"),
    (lambda: ExponentialDecay(0.1, decay_rate=-0.5), r"decay_rate must be a finite number >= 0"),
    (lambda: CosineAnnealing(0.1, decay_steps=10, min_learning_rate=float("inf")),
     r"min_learning_rate must be a finite number >= 0, received inf"),
    (lambda: Cyclical(0.1, 1.0, mode="sawtooth"), r"mode must be one of .*received 'sawtooth'"),
    (lambda: OneCycle(1.0, total_steps=10, pct_start=1.5), r"pct_start must be in \[0.0, 1.0\]"),
    (lambda: OneCycle(1.0, total_steps=10, anneal="exp"), r"anneal must be 'cos' or 'linear'"),
    (lambda: LinearWarmup(0.1, warmup_steps=0), r"warmup_steps must be a positive int"),
    (lambda: PlateauDecay(0.1, factor=1.0), r"factor must be in \[0.0, 1.0\), received 1.0"),
    (lambda: PlateauDecay(0.1, mode="up"), r"mode must be 'min' or 'max', received 'up'"),
    (lambda: Constant(0.1)(-1), r"called with the step count, an int >= 0; received -1"),
    (lambda: Constant(0.1)(2.0), r"received 2.0 \(float\)"),
    (lambda: PlateauDecay(0.1).update("low"), r"update expects the monitored value as a "
                                                   r"number, received 'low'"),
    (lambda: schedules.get({"class_name": "Warp"}), r"unknown schedule 'Warp'\. Known: "),
    (lambda: schedules.get("cosine"), r"unknown schedule 'cosine'\. Known: Constant, "
                                      r"CosineAnnealing"),
    (lambda: schedules.get([0.1]), r"cannot make a schedule from \[0\.1\] \(list\); pass a "
                                   r"learning rate \(number\)"),
    (lambda: optimizers.SGD(lambda t: 0.1).get_config(), r"plain callable, which cannot be "
                                                          r"saved as JSON"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ---------------------------------------------------------------------------------------------
# Properties (hypothesis)
# ---------------------------------------------------------------------------------------------
rates = st.floats(1e-6, 10.0)
steps = st.integers(0, 10_000)


@settings(max_examples=25, deadline=None)
@given(lr=rates, gamma=st.floats(0.0, 1.0), size=st.integers(1, 100), t=steps)
def test_decays_never_increase(lr, gamma, size, t):
    for s in (StepDecay(lr, size, gamma), ExponentialDecay(lr, gamma, size),
              InverseTimeDecay(lr, gamma, size), PolynomialDecay(lr, size, power=gamma + 0.5),
              CosineAnnealing(lr, size)):
        assert 0.0 <= s(t + 1) <= s(t) * (1 + 1e-12) <= lr * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(low=rates, span=rates, up=st.integers(1, 50), down=st.integers(1, 50), t=steps,
       mode=st.sampled_from(["triangular", "triangular2", "exp_range"]))
def test_cyclical_stays_between_its_bounds(low, span, up, down, t, mode):
    s = Cyclical(low, low + span, up, down, mode=mode, gamma=0.999)
    assert low * (1 - 1e-12) <= s(t) <= (low + span) * (1 + 1e-12)
    assert s((up + down) * (t % 7)) == pytest.approx(low, rel=1e-9)  # each cycle starts low


def test_triangular2_far_into_training_settles_at_the_base_rate():
    """Cycle 5000 halves the amplitude 4999 times: the rate is the base rate (no overflow)."""
    s = Cyclical(0.1, 1.0, 1, 1, mode="triangular2")
    assert s(2 * 5000 - 1) == 0.1  # the peak of cycle 5000: 0.1 + 0.9 / 2**4999 == 0.1


@settings(max_examples=25, deadline=None)
@given(peak=rates, total=st.integers(10, 1000), pct=st.floats(0.05, 0.95), t=steps)
def test_one_cycle_peaks_at_its_maximum(peak, total, pct, t):
    s = OneCycle(peak, total, pct_start=pct)
    assert peak / 25 / 1e4 * (1 - 1e-9) <= s(t) <= peak * (1 + 1e-12)
