"""Learning-rate schedules: the step size as a function of how far training has come.

A schedule is a callable ``schedule(step) -> float``: ``step`` is the number of optimizer updates
done so far (0 for the first update) and the result is a plain Python float, so using a schedule
never touches an array (no device work, no host sync). Give one to any optimizer as its
``learning_rate``::

    opt = pn.optimizers.SGD(learning_rate=pn.schedules.CosineAnnealing(0.1, decay_steps=1000))

Any plain function ``step -> float`` works too; the classes below add a ``get_config()`` so a
checkpoint can store them as JSON. In order of growing complexity:

=========================  ==============================================================
``Constant``               eta_t = eta_0
``StepDecay``              eta_t = eta_0 * gamma^floor(t / step_size)
``MultiStepDecay``         eta_t = eta_0 * gamma^(number of milestones <= t)
``ExponentialDecay``       eta_t = eta_0 * rate^(t / decay_steps)
``InverseTimeDecay``       eta_t = eta_0 / (1 + rate * t / decay_steps)
``PolynomialDecay``        eta_t = (eta_0 - eta_end) * (1 - t / T)^power + eta_end
``CosineAnnealing``        eta_t = eta_min + (eta_0 - eta_min) * (1 + cos(pi * t / T)) / 2
``CosineWarmRestarts``     cosine annealing restarted every T_i steps, T_(i+1) = T_mult * T_i
``Cyclical``               triangular waves between two bounds (triangular, triangular2,
                           exp_range)
``OneCycle``               warm up to a maximum, then anneal far below the start
``LinearWarmup``           a linear ramp in front of any schedule
``PlateauDecay``           divide the rate when a monitored value stops improving
=========================  ==============================================================

The learning-rate range test that helps choose ``eta_0`` is a short training loop, so it lives
on the training floor: :func:`portanet.lr_finder.lr_finder` (``pn.lr_finder``).

Each class names the ``torch.optim.lr_scheduler`` it matches step for step
(tests/test_schedules.py checks them against each other).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from .registry import Registry, make_config, parse_config

__all__ = [
    "Constant",
    "CosineAnnealing",
    "CosineWarmRestarts",
    "Cyclical",
    "ExponentialDecay",
    "InverseTimeDecay",
    "LinearWarmup",
    "MultiStepDecay",
    "OneCycle",
    "PlateauDecay",
    "PolynomialDecay",
    "Schedule",
    "StepDecay",
    "from_config",
    "get",
]


# ---------------------------------------------------------------------------------------------
# Argument checks (each message says what was received and what is expected)
# ---------------------------------------------------------------------------------------------
def _rate(name: str, value: Any) -> float:
    """A learning rate: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, received {value!r} ({type(value).__name__}).")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, received {value!r}.")
    return float(value)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, received {value!r}.")
    return value


def _in_range(name: str, value: Any, low: float, high: float, *, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, received {value!r} ({type(value).__name__}).")
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, received {value!r}.")
    return float(value)


def _step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"a schedule is called with the step count, an int >= 0; received "
                         f"{step!r} ({type(step).__name__}).")
    return step


# ---------------------------------------------------------------------------------------------
# The base class
# ---------------------------------------------------------------------------------------------
class Schedule:
    """A learning rate as a function of the step count: ``schedule(step) -> float``.

    Subclasses implement ``value(step)`` (the formula) and list their constructor arguments in
    ``_config()``; ``__call__`` checks the step and ``get_config`` adds the class name.
    """

    def __call__(self, step: int) -> float:
        return float(self.value(_step(step)))

    def value(self, step: int) -> float:
        raise NotImplementedError

    def _config(self) -> dict[str, Any]:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """A JSON-able dict; ``schedules.get(config)`` rebuilds the schedule."""
        return make_config(type(self).__name__, self._config())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------------------------------------
# Step-wise decays
# ---------------------------------------------------------------------------------------------
class Constant(Schedule):
    """The same rate at every step: eta_t = eta_0 (``torch.optim.lr_scheduler.ConstantLR`` with
    factor 1).

    Examples:
        >>> Constant(0.1)(500)
        0.1
    """

    def __init__(self, learning_rate: float):
        self.learning_rate = _rate("learning_rate", learning_rate)

    def value(self, step: int) -> float:
        return self.learning_rate

    def _config(self):
        return {"learning_rate": self.learning_rate}


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step_size`` steps: eta_t = eta_0 * gamma^floor(t / step_size).

    Matches ``torch.optim.lr_scheduler.StepLR``.

    Examples:
        >>> s = StepDecay(1.0, step_size=10, gamma=0.5)
        >>> s(9), s(10), s(25)
        (1.0, 0.5, 0.25)
    """

    def __init__(self, initial_learning_rate: float, step_size: int, gamma: float = 0.1):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        self.step_size = _positive_int("step_size", step_size)
        self.gamma = _rate("gamma", gamma)

    def value(self, step):
        return self.initial_learning_rate * self.gamma ** (step // self.step_size)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "step_size": self.step_size, "gamma": self.gamma}


class MultiStepDecay(Schedule):
    """Multiply by ``gamma`` at each milestone: eta_t = eta_0 * gamma^(#{m in milestones: m <= t}).

    Matches ``torch.optim.lr_scheduler.MultiStepLR`` (a repeated milestone decays twice).

    Examples:
        >>> s = MultiStepDecay(1.0, milestones=[3, 5], gamma=0.1)
        >>> [round(s(t), 4) for t in range(7)]
        [1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    """

    def __init__(self, initial_learning_rate: float, milestones: Sequence[int],
                 gamma: float = 0.1):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        milestones = list(milestones)
        for m in milestones:
            _positive_int("each milestone", m)
        self.milestones = sorted(milestones)
        self.gamma = _rate("gamma", gamma)

    def value(self, step):
        return self.initial_learning_rate * self.gamma ** bisect.bisect_right(self.milestones, step)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "milestones": list(self.milestones), "gamma": self.gamma}


# ---------------------------------------------------------------------------------------------
# Smooth decays
# ---------------------------------------------------------------------------------------------
class _DecayOverTime(Schedule):
    """What exponential and inverse-time decay share: eta_0, a rate, and the decay time
    t / decay_steps (floored with ``staircase``, so the rate changes every decay_steps steps)."""

    def __init__(self, initial_learning_rate: float, decay_rate: float, decay_steps: int = 1,
                 staircase: bool = False):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        self.decay_rate = _rate("decay_rate", decay_rate)
        self.decay_steps = _positive_int("decay_steps", decay_steps)
        self.staircase = bool(staircase)

    def _decay_time(self, step: int) -> float:
        return step // self.decay_steps if self.staircase else step / self.decay_steps

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_rate": self.decay_rate, "decay_steps": self.decay_steps,
                "staircase": self.staircase}


class ExponentialDecay(_DecayOverTime):
    """eta_t = eta_0 * rate^(t / decay_steps); with ``staircase`` the exponent is floored.

    With ``decay_steps=1`` this is ``torch.optim.lr_scheduler.ExponentialLR(gamma=rate)``.

    Examples:
        >>> round(ExponentialDecay(1.0, decay_rate=0.5, decay_steps=10)(20), 6)
        0.25
    """

    def value(self, step):
        return self.initial_learning_rate * self.decay_rate ** self._decay_time(step)


class InverseTimeDecay(_DecayOverTime):
    """eta_t = eta_0 / (1 + rate * t / decay_steps), the 1/t decay of stochastic approximation.

    Robbins & Monro (1951) need sum eta_t = inf and sum eta_t^2 < inf; 1/t decay has both.
    With ``staircase`` the ratio t / decay_steps is floored. (torch has no such scheduler; the
    tests compare with the formula.)

    Examples:
        >>> InverseTimeDecay(1.0, decay_rate=1.0)(3)
        0.25
    """

    def value(self, step):
        return self.initial_learning_rate / (1.0 + self.decay_rate * self._decay_time(step))


class PolynomialDecay(Schedule):
    """eta_t = (eta_0 - eta_end) * (1 - min(t, T) / T)^power + eta_end, then eta_end after T.

    With ``end_learning_rate=0`` this is ``torch.optim.lr_scheduler.PolynomialLR(total_iters=T,
    power=power)``; ``power=1`` is a straight line.

    Examples:
        >>> s = PolynomialDecay(1.0, decay_steps=4, power=1.0)
        >>> [s(t) for t in range(6)]
        [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 end_learning_rate: float = 0.0, power: float = 1.0):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _positive_int("decay_steps", decay_steps)
        self.end_learning_rate = _rate("end_learning_rate", end_learning_rate)
        self.power = _rate("power", power)

    def value(self, step):
        remaining = 1.0 - min(step, self.decay_steps) / self.decay_steps
        span = self.initial_learning_rate - self.end_learning_rate
        return span * remaining**self.power + self.end_learning_rate

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "end_learning_rate": self.end_learning_rate,
                "power": self.power}


def _cosine(high: float, low: float, fraction: float) -> float:
    """Half a cosine wave from ``high`` (fraction 0) down to ``low`` (fraction 1)."""
    return low + (high - low) * (1.0 + math.cos(math.pi * fraction)) / 2.0


class CosineAnnealing(Schedule):
    """eta_t = eta_min + (eta_0 - eta_min) * (1 + cos(pi * t / T)) / 2 for t <= T, then eta_min.

    Loshchilov & Hutter, "SGDR: Stochastic gradient descent with warm restarts", ICLR 2017,
    without the restarts. Matches ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=T)`` for
    t <= T; torch keeps following the cosine back up after T, this schedule holds eta_min.

    Examples:
        >>> s = CosineAnnealing(1.0, decay_steps=10)
        >>> s(0), s(5), s(10), s(99)
        (1.0, 0.5, 0.0, 0.0)
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int,
                 min_learning_rate: float = 0.0):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        self.decay_steps = _positive_int("decay_steps", decay_steps)
        self.min_learning_rate = _rate("min_learning_rate", min_learning_rate)

    def value(self, step):
        fraction = min(step, self.decay_steps) / self.decay_steps
        return _cosine(self.initial_learning_rate, self.min_learning_rate, fraction)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "min_learning_rate": self.min_learning_rate}


class CosineWarmRestarts(Schedule):
    """Cosine annealing that restarts at eta_0 after each period; periods grow by ``period_mult``.

    eta_t = eta_min + (eta_0 - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2, where T_cur counts the
    steps since the last restart and the i-th period lasts T_i = T_0 * period_mult^i steps
    (Loshchilov & Hutter, SGDR, ICLR 2017). Matches
    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``.

    Examples:
        >>> s = CosineWarmRestarts(1.0, first_period=4)
        >>> [round(s(t), 3) for t in range(6)]
        [1.0, 0.854, 0.5, 0.146, 1.0, 0.854]
    """

    def __init__(self, initial_learning_rate: float, first_period: int, period_mult: int = 1,
                 min_learning_rate: float = 0.0):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        self.first_period = _positive_int("first_period", first_period)
        self.period_mult = _positive_int("period_mult", period_mult)
        self.min_learning_rate = _rate("min_learning_rate", min_learning_rate)

    def position(self, step: int) -> tuple[int, int]:
        """(T_cur, T_i): steps since the last restart, and the length of the current period."""
        if self.period_mult == 1:
            return step % self.first_period, self.first_period
        t_cur, period = step, self.first_period
        while t_cur >= period:  # periods grow geometrically: O(log step) iterations
            t_cur -= period
            period *= self.period_mult
        return t_cur, period

    def value(self, step):
        t_cur, period = self.position(step)
        return _cosine(self.initial_learning_rate, self.min_learning_rate, t_cur / period)

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "first_period": self.first_period, "period_mult": self.period_mult,
                "min_learning_rate": self.min_learning_rate}


# ---------------------------------------------------------------------------------------------
# Cycles
# ---------------------------------------------------------------------------------------------
class Cyclical(Schedule):
    """Cyclical learning rates (Smith, "Cyclical learning rates for training neural networks",
    WACV 2017): the rate climbs linearly from ``base`` to ``max`` in ``step_size_up`` steps, falls
    back in ``step_size_down`` steps, and repeats.

    With cycle = floor(1 + t / (up + down)) and x the position within the cycle in [0, 1):
    ``scale = x / r`` on the way up and ``(x - 1) / (r - 1)`` on the way down, r = up / (up + down),
    and eta_t = base + (max - base) * scale * amplitude, where the amplitude is

    * ``"triangular"``: 1;
    * ``"triangular2"``: 1 / 2^(cycle - 1), halved every cycle;
    * ``"exp_range"``: gamma^t.

    Matches ``torch.optim.lr_scheduler.CyclicLR`` (with ``cycle_momentum=False``).

    Examples:
        >>> s = Cyclical(0.1, 1.0, step_size_up=2)
        >>> [round(s(t), 2) for t in range(6)]
        [0.1, 0.55, 1.0, 0.55, 0.1, 0.55]
    """

    _MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_learning_rate: float, max_learning_rate: float,
                 step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0):
        self.base_learning_rate = _rate("base_learning_rate", base_learning_rate)
        self.max_learning_rate = _rate("max_learning_rate", max_learning_rate)
        self.step_size_up = _positive_int("step_size_up", step_size_up)
        self.step_size_down = (self.step_size_up if step_size_down is None
                               else _positive_int("step_size_down", step_size_down))
        if mode not in self._MODES:
            raise ValueError(f"mode must be one of {self._MODES}, received {mode!r}.")
        self.mode = mode
        self.gamma = _in_range("gamma", gamma, 0.0, 1.0)

    def value(self, step):
        total = self.step_size_up + self.step_size_down
        up_ratio = self.step_size_up / total
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        scale = x / up_ratio if x <= up_ratio else (x - 1.0) / (up_ratio - 1.0)
        if self.mode == "triangular":
            amplitude = 1.0
        elif self.mode == "triangular2":
            amplitude = 0.5 ** (cycle - 1)  # 1 / 2**(cycle-1) would overflow past cycle 1024
        else:
            amplitude = self.gamma**step
        height = (self.max_learning_rate - self.base_learning_rate) * scale
        return self.base_learning_rate + height * amplitude

    def _config(self):
        return {"base_learning_rate": self.base_learning_rate,
                "max_learning_rate": self.max_learning_rate, "step_size_up": self.step_size_up,
                "step_size_down": self.step_size_down, "mode": self.mode, "gamma": self.gamma}


class OneCycle(Schedule):
    """The 1cycle policy (Smith & Topin, "Super-convergence", 2018): one warm-up to the maximum,
    then one long anneal far below the starting rate.

    Start at eta_max / div_factor, reach eta_max after ``pct_start * total_steps - 1`` steps,
    then anneal to eta_max / (div_factor * final_div_factor) at step ``total_steps - 1``. Each
    phase interpolates with half a cosine (``anneal="cos"``) or a straight line (``"linear"``).
    ``three_phase`` adds a symmetric way down to the start before the final anneal. After
    ``total_steps`` the final rate is held (torch raises instead).

    Matches ``torch.optim.lr_scheduler.OneCycleLR`` (its momentum cycling aside).

    Examples:
        >>> s = OneCycle(1.0, total_steps=100)
        >>> round(s(0), 6), round(s(29), 6), round(s(99), 9)
        (0.04, 1.0, 4e-06)
    """

    def __init__(self, max_learning_rate: float, total_steps: int, pct_start: float = 0.3,
                 anneal: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False):
        self.max_learning_rate = _rate("max_learning_rate", max_learning_rate)
        self.total_steps = _positive_int("total_steps", total_steps)
        self.pct_start = _in_range("pct_start", pct_start, 0.0, 1.0)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal must be 'cos' or 'linear', received {anneal!r}.")
        self.anneal = anneal
        self.div_factor = _rate("div_factor", div_factor)
        self.final_div_factor = _rate("final_div_factor", final_div_factor)
        if self.div_factor == 0 or self.final_div_factor == 0:
            raise ValueError(f"div_factor and final_div_factor must be > 0, received "
                             f"{div_factor!r} and {final_div_factor!r}.")
        self.three_phase = bool(three_phase)
        start = self.max_learning_rate / self.div_factor
        lowest = start / self.final_div_factor
        peak_step = self.pct_start * self.total_steps - 1.0
        last_step = float(self.total_steps - 1)
        if self.three_phase:
            # (end step, rate at the phase start, rate at its end)
            self._phases = [(peak_step, start, self.max_learning_rate),
                            (2.0 * self.pct_start * self.total_steps - 2.0,
                             self.max_learning_rate, start),
                            (last_step, start, lowest)]
        else:
            self._phases = [(peak_step, start, self.max_learning_rate),
                            (last_step, self.max_learning_rate, lowest)]

    def value(self, step):
        t = float(min(step, self.total_steps - 1))
        phase_start = 0.0
        for i, (phase_end, high, low) in enumerate(self._phases):
            if t <= phase_end or i == len(self._phases) - 1:
                fraction = (t - phase_start) / (phase_end - phase_start)
                if self.anneal == "cos":
                    return _cosine(high, low, fraction)
                return high + (low - high) * fraction
            phase_start = phase_end
        raise AssertionError("unreachable: the last phase always matches")

    def _config(self):
        return {"max_learning_rate": self.max_learning_rate, "total_steps": self.total_steps,
                "pct_start": self.pct_start, "anneal": self.anneal,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "three_phase": self.three_phase}


# ---------------------------------------------------------------------------------------------
# Wrappers and feedback
# ---------------------------------------------------------------------------------------------
class LinearWarmup(Schedule):
    """A linear ramp in front of any schedule (Goyal et al., "Accurate, large minibatch SGD", 2017).

    For t < W: eta_t = s(0) * (f + (1 - f) * t / W), rising from ``start_factor`` f times the
    wrapped schedule's first rate to the full rate; from t = W on, eta_t = s(t - W): the wrapped
    schedule starts its own clock when the warm-up ends.

    Wrapping ``Constant(eta)`` matches ``torch.optim.lr_scheduler.LinearLR(start_factor=f,
    total_iters=W)``; wrapping another schedule matches ``SequentialLR([LinearLR(...), that
    scheduler], milestones=[W])``.

    Examples:
        >>> s = LinearWarmup(CosineAnnealing(1.0, decay_steps=10), warmup_steps=4, start_factor=0.0)
        >>> [round(s(t), 3) for t in range(6)]
        [0.0, 0.25, 0.5, 0.75, 1.0, 0.976]
    """

    def __init__(self, schedule: Schedule | Callable[[int], float] | float, warmup_steps: int,
                 start_factor: float = 0.1):
        self.schedule = get(schedule)
        self.warmup_steps = _positive_int("warmup_steps", warmup_steps)
        self.start_factor = _in_range("start_factor", start_factor, 0.0, 1.0)

    def value(self, step):
        if step < self.warmup_steps:
            ramp = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
            return self.schedule(0) * ramp
        return self.schedule(step - self.warmup_steps)

    def _config(self):
        return {"schedule": _config_of(self.schedule), "warmup_steps": self.warmup_steps,
                "start_factor": self.start_factor}

    def __repr__(self) -> str:
        return (f"LinearWarmup({self.schedule!r}, warmup_steps={self.warmup_steps}, "
                f"start_factor={self.start_factor})")


class PlateauDecay(Schedule):
    """Divide the rate by ``1 / factor`` when a monitored value has stopped improving.

    Call ``update(value)`` once per epoch with the monitored value (e.g. the validation loss,
    read on the host once per epoch); the schedule's value is the current rate at every step.
    A value is an improvement when (mode "min", threshold_mode "rel")
    ``value < best * (1 - threshold)`` ("abs": ``value < best - threshold``; mode "max" mirrors
    both). After more than ``patience`` epochs without improvement the rate becomes
    ``max(rate * factor, min_learning_rate)`` and ``cooldown`` epochs pass before counting again.
    Changes smaller than ``eps`` are ignored.

    Matches ``torch.optim.lr_scheduler.ReduceLROnPlateau``. Until issue 16 this class was
    named ``ReduceLROnPlateau`` too, like the callback; configs saved under that name still
    load as this class. The callback ``pn.callbacks.ReduceLROnPlateau`` (Keras' name and
    arguments: ``monitor``, ``min_lr``) does the same job inside ``fit``, on a numeric rate.

    Examples:
        >>> s = PlateauDecay(1.0, patience=1, factor=0.5)
        >>> [s.update(v) for v in [3.0, 2.0, 2.0, 2.0, 2.0]]
        [1.0, 1.0, 1.0, 0.5, 0.5]
        >>> s(1234)
        0.5
    """

    def __init__(self, initial_learning_rate: float, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_learning_rate: float = 0.0, eps: float = 1e-8):
        self.initial_learning_rate = _rate("initial_learning_rate", initial_learning_rate)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', received {mode!r}.")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', received {threshold_mode!r}.")
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = _in_range("factor", factor, 0.0, 1.0, high_open=True)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, received {patience!r}.")
        if isinstance(cooldown, bool) or not isinstance(cooldown, int) or cooldown < 0:
            raise ValueError(f"cooldown must be an int >= 0, received {cooldown!r}.")
        self.patience, self.cooldown = patience, cooldown
        self.threshold = _rate("threshold", threshold)
        self.min_learning_rate = _rate("min_learning_rate", min_learning_rate)
        self.eps = _rate("eps", eps)
        self.reset()

    def reset(self) -> None:
        """Forget the history: back to the initial rate, no best value yet."""
        self.learning_rate = self.initial_learning_rate
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _improves(self, value: float) -> bool:
        sign = 1.0 if self.mode == "min" else -1.0
        if self.threshold_mode == "rel":
            bar = self.best * (1.0 - sign * self.threshold)
        else:
            bar = self.best - sign * self.threshold
        return value < bar if self.mode == "min" else value > bar

    def update(self, value: float) -> float:
        """Record one epoch's monitored value; returns the (possibly reduced) learning rate."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:  # a NumPy scalar or a 0-d array: this is the once-per-epoch host read
                value = float(value)
            except (TypeError, ValueError):
                raise TypeError(f"update expects the monitored value as a number, received "
                                f"{value!r} ({type(value).__name__}).") from None
        value = float(value)
        if self._improves(value):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            reduced = max(self.learning_rate * self.factor, self.min_learning_rate)
            if self.learning_rate - reduced > self.eps:
                self.learning_rate = reduced
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.learning_rate

    def value(self, step):
        return self.learning_rate

    def state_dict(self) -> dict[str, Any]:
        """The history that ``update`` keeps (JSON-able)."""
        return {"learning_rate": self.learning_rate, "best": self.best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"learning_rate", "best", "num_bad_epochs", "cooldown_counter"} - set(state)
        if missing:
            raise ValueError(f"PlateauDecay state is missing {sorted(missing)}; received "
                             f"keys {sorted(state)}.")
        self.learning_rate = _rate("learning_rate", state["learning_rate"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])

    def _config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "mode": self.mode,
                "factor": self.factor, "patience": self.patience, "threshold": self.threshold,
                "threshold_mode": self.threshold_mode, "cooldown": self.cooldown,
                "min_learning_rate": self.min_learning_rate, "eps": self.eps}

    def get_config(self):
        return {**super().get_config(), "state": self.state_dict()}


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------
def _plain(schedule: Callable[[int], float], **params: Any) -> Callable[[int], float]:
    """A plain function ``step -> float`` is a schedule as it is (it cannot be saved)."""
    if params:
        raise TypeError(f"the schedule {schedule!r} is a function; it takes no parameters, "
                        f"received {sorted(params)}.")
    return schedule


_REGISTRY = Registry("schedule", base=Schedule, wrap=_plain,
                     accepts="a learning rate (number), a schedule, a schedule config dict or "
                             "a callable step -> float")
"""The schedule classes by name (what configs write)."""
for _cls in (Constant, StepDecay, MultiStepDecay, ExponentialDecay, InverseTimeDecay,
             PolynomialDecay, CosineAnnealing, CosineWarmRestarts, Cyclical, OneCycle,
             LinearWarmup, PlateauDecay):
    _REGISTRY.register(_cls.__name__, _cls)
# Old names of renamed classes, so configs saved under them (checkpoints) still load.
_REGISTRY.alias("PlateauDecay", "ReduceLROnPlateau")  # renamed: the callback of that name is Keras'

# Names that moved away, and where they went (module __getattr__, PEP 562: only asked for names
# the module does not have, so it costs nothing otherwise).
_MOVED = {
    "ReduceLROnPlateau": "the schedule is now schedules.PlateauDecay (same arguments); "
                         "pn.callbacks.ReduceLROnPlateau is the callback of that name",
    "lr_finder": "the learning-rate range test is a training loop and moved to the training "
                 "floor: pn.lr_finder(model, x, y, ...) (from portanet.lr_finder import "
                 "lr_finder)",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        raise AttributeError(f"portanet.schedules has no attribute {name!r}: {_MOVED[name]}.")
    raise AttributeError(f"module 'portanet.schedules' has no attribute {name!r}")


def _config_of(schedule: Callable[[int], float]) -> dict[str, Any]:
    if isinstance(schedule, Schedule):
        return schedule.get_config()
    raise TypeError(
        f"the schedule {schedule!r} is a plain callable, which cannot be saved as JSON. Use one "
        "of portanet.schedules' classes, or subclass portanet.schedules.Schedule and implement "
        "value(step) and _config()."
    )


def from_config(config: dict[str, Any]) -> Schedule:
    """Rebuild a schedule from ``get_config()``'s dict: ``{"class_name": ..., "config": {...}}``
    (plus ``"state"`` for a :class:`PlateauDecay`); the format-1/2 shape ``{"class_name": ...,
    **config}`` is read too. A wrapped schedule (``LinearWarmup``'s) is rebuilt from its own
    config, in either shape.

    Examples:
        >>> from_config(ExponentialDecay(0.1, decay_rate=0.5).get_config())
        ExponentialDecay(initial_learning_rate=0.1, decay_rate=0.5, decay_steps=1, staircase=False)
    """
    if not isinstance(config, dict):
        raise ValueError("a schedule config is a dict {'class_name': ..., 'config': {...}} "
                         f"(from get_config()), received {config!r:.200}.")
    name, kwargs, extra = parse_config(config, "schedule")
    # The history of a PlateauDecay: beside "config" today, among the arguments in format 1-2.
    state = extra.pop("state", None) if "config" in config else kwargs.pop("state", None)
    if extra:
        raise ValueError(f"a schedule config has only 'class_name', 'config' and 'state', "
                         f"received the extra keys {sorted(extra)}.")
    schedule = _REGISTRY.make(_REGISTRY.canonical(name), kwargs)
    if state is not None:
        schedule.load_state_dict(state)
    return schedule


def get(identifier: Any, **params: Any) -> Schedule | Callable[[int], float]:
    """A schedule from a number (-> ``Constant``), a class name (``params`` go to its
    constructor), a config dict, a Schedule or any callable ``step -> float``.

    Examples:
        >>> get(0.1)
        Constant(learning_rate=0.1)
        >>> round(get("cosine_annealing", initial_learning_rate=0.1, decay_steps=10)(5), 6)
        0.05
    """
    if isinstance(identifier, int | float) and not isinstance(identifier, bool) and not params:
        return Constant(identifier)
    if isinstance(identifier, dict) and not params:
        return from_config(identifier)
    return _REGISTRY.resolve(identifier, **params)
