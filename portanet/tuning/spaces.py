"""Search spaces: every combination of a grid, or draws from distributions.

A space is a dict from hyperparameter names to what each may be:

* a list (or tuple) of values: every value, in a grid; a uniform choice, in a random search;
* a distribution (random search only): :func:`uniform`, :func:`loguniform`, :func:`randint`,
  :func:`choice`.

Draws happen on the host, from NumPy generators seeded through ``SeedSequence``: trial ``i``
of a random search draws its values from ``pn.random.host_generator(seed, (0, i))``, one
draw per name in the space's order. The values are therefore a function of ``(seed, i)``
only: the same whatever ``n_trials`` is, wherever and in whatever order the trials run.

Examples:
    >>> from portanet.tuning import ParameterGrid, ParameterSampler, loguniform
    >>> list(ParameterGrid({"units": [8, 16], "lr": [0.1, 0.01]}))
    [{'units': 8, 'lr': 0.1}, {'units': 8, 'lr': 0.01},
     {'units': 16, 'lr': 0.1}, {'units': 16, 'lr': 0.01}]
    >>> draws = ParameterSampler({"lr": loguniform(1e-4, 1e-1)}, n_trials=3, seed=0)
    >>> all(1e-4 <= d["lr"] < 1e-1 for d in draws)
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..random import host_generator

__all__ = [
    "Distribution",
    "ParameterGrid",
    "ParameterSampler",
    "choice",
    "loguniform",
    "randint",
    "uniform",
]

SAMPLE_STREAM = 0
"""``host_generator(seed, (SAMPLE_STREAM, i))`` draws trial i's values."""


# ---------------------------------------------------------------------------------------------
# Distributions
# ---------------------------------------------------------------------------------------------
class Distribution:
    """What a random search draws one hyperparameter from.

    Subclasses implement :meth:`sample` (one Python value from a NumPy ``Generator``).
    ``log_scale`` tells plots to use a logarithmic axis.
    """

    log_scale = False

    def sample(self, generator: Any) -> Any:
        raise NotImplementedError


def _real(value: Any, name: str, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be a finite real number, received {value!r}.")
    return float(value)


def _bounds(low: Any, high: Any, owner: str) -> tuple[float, float]:
    low, high = _real(low, "low", owner), _real(high, "high", owner)
    if low >= high:
        raise ValueError(f"{owner} needs low < high, received low={low!r}, high={high!r}. "
                         "For a fixed value pass it as a list of one, e.g. [0.01].")
    return low, high


class _Uniform(Distribution):
    def __init__(self, low: Any, high: Any):
        self.low, self.high = _bounds(low, high, "uniform")

    def sample(self, generator: Any) -> float:
        return float(generator.uniform(self.low, self.high))

    def __repr__(self) -> str:
        return f"uniform({self.low!r}, {self.high!r})"


class _LogUniform(Distribution):
    log_scale = True

    def __init__(self, low: Any, high: Any):
        self.low, self.high = _bounds(low, high, "loguniform")
        if self.low <= 0.0:
            raise ValueError(f"loguniform needs 0 < low < high (it draws log(value) uniformly), "
                             f"received low={self.low!r}. Use uniform(...) for a range that "
                             "includes 0 or negative values.")

    def sample(self, generator: Any) -> float:
        value = math.exp(generator.uniform(math.log(self.low), math.log(self.high)))
        # exp(log(high)) may round to just above high; keep the documented [low, high)
        return min(max(value, self.low), math.nextafter(self.high, -math.inf))

    def __repr__(self) -> str:
        return f"loguniform({self.low!r}, {self.high!r})"


class _RandInt(Distribution):
    def __init__(self, low: Any, high: Any):
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"randint: {name} must be an int, received {value!r}.")
        if low >= high:
            raise ValueError(f"randint draws from low..high-1 (high excluded, as range() and "
                             f"numpy's integers), so it needs low < high; received low={low}, "
                             f"high={high}. For the values {low}..{high} use "
                             f"randint({low}, {high + 1}).")
        self.low, self.high = low, high

    def sample(self, generator: Any) -> int:
        return int(generator.integers(self.low, self.high))

    def __repr__(self) -> str:
        return f"randint({self.low!r}, {self.high!r})"


class _Choice(Distribution):
    def __init__(self, options: Any):
        self.options = _values_list(options, "choice(options)")

    def sample(self, generator: Any) -> Any:
        return self.options[int(generator.integers(len(self.options)))]

    def __repr__(self) -> str:
        return f"choice({self.options!r})"


def uniform(low: float, high: float) -> Distribution:
    """Real values drawn uniformly from ``[low, high)``.

    Example: ``uniform(0.0, 0.5)`` for a dropout rate.
    """
    return _Uniform(low, high)


def loguniform(low: float, high: float) -> Distribution:
    """Positive reals whose logarithm is uniform: ``exp(U[log low, log high))``, in ``[low, high)``.

    Each decade is equally likely: ``loguniform(1e-4, 1e-1)`` draws as often from
    [1e-4, 1e-3) as from [1e-2, 1e-1), what a learning rate needs. ``0 < low < high``.
    """
    return _LogUniform(low, high)


def randint(low: int, high: int) -> Distribution:
    """Integers drawn uniformly from ``low, low+1, ..., high-1``: **high is excluded**, as in
    ``range(low, high)``, ``numpy.random.Generator.integers`` and ``scipy.stats.randint``.

    Example: ``randint(1, 4)`` draws 1, 2 or 3.
    """
    return _RandInt(low, high)


def choice(options: Sequence[Any]) -> Distribution:
    """One of ``options`` (a non-empty list), each equally likely."""
    return _Choice(options)


# ---------------------------------------------------------------------------------------------
# Checking spaces
# ---------------------------------------------------------------------------------------------
def _values_list(values: Any, where: str) -> list[Any]:
    """``values`` as a non-empty list, or an error that says what a value list looks like."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{where} must be a list of values, received "
                        f"{type(values).__name__} {values!r}. Wrap a single value in a list: "
                        f"[{values!r}].")
    values = list(values)
    if not values:
        raise ValueError(f"{where} is an empty list: give at least one value (or leave the "
                         "name out of the space).")
    return values


def check_space(space: Any, *, allow_distributions: bool, what: str) -> dict[str, Any]:
    """A copy of ``space`` with every entry checked: str keys; non-empty lists; distributions
    only where ``allow_distributions`` (random search). Raises before any trial runs."""
    if not isinstance(space, Mapping):
        raise TypeError(f"{what}'s space must be a dict of name -> values, received "
                        f"{type(space).__name__}.")
    checked: dict[str, Any] = {}
    for key, values in space.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise TypeError(f"{what}: every space key must be a parameter name (a str that is "
                            f"a Python identifier), received {key!r} ({type(key).__name__}).")
        if isinstance(values, Distribution):
            if not allow_distributions:
                raise TypeError(f"grid_search: {key!r} is {values!r}, a distribution; a grid "
                                "needs the values listed (e.g. [1e-3, 1e-2, 1e-1]). Use "
                                "random_search to draw from a distribution.")
            checked[key] = values
        else:
            checked[key] = _values_list(values, f"{what}: space[{key!r}]")
    return checked


# ---------------------------------------------------------------------------------------------
# The grid and the sampler
# ---------------------------------------------------------------------------------------------
class ParameterGrid:
    """Every combination of a dict of lists (or of each dict in a list of them), in order.

    The order: the keys in the dict's order, the **last key varying fastest** (as nested
    for-loops, ``itertools.product``); with a list of dicts, each dict's grid in turn. So
    ``{"a": [1, 2], "b": ["x", "y"]}`` gives (1, x), (1, y), (2, x), (2, y).

    Supports ``len``, iteration and indexing.
    """

    def __init__(self, space: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]):
        grids = [space] if isinstance(space, Mapping) else space
        if isinstance(grids, (str, bytes)) or not isinstance(grids, Sequence) or not grids:
            raise TypeError("grid_search's space must be a dict of name -> list of values (or "
                            f"a non-empty list of such dicts), received {space!r}.")
        self.grids = [check_space(g, allow_distributions=False, what="grid_search")
                      for g in grids]

    def __len__(self) -> int:
        return sum(math.prod(len(v) for v in g.values()) for g in self.grids)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for grid in self.grids:
            keys = list(grid)
            for combo in itertools.product(*grid.values()):
                yield dict(zip(keys, combo, strict=True))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"ParameterGrid index {index} out of range for {len(self)} "
                             "combinations.")
        return next(itertools.islice(iter(self), index % len(self), None))

    def scales(self) -> dict[str, str]:
        """"log" for names whose values are all positive numbers spanning 2 decades or more
        (plots use a log axis), "linear" for other numbers, "categorical" otherwise."""
        values: dict[str, list[Any]] = {}
        for grid in self.grids:
            for key, options in grid.items():
                values.setdefault(key, []).extend(options)
        return {key: _scale_of(options) for key, options in values.items()}


def _scale_of(options: list[Any]) -> str:
    numbers = [v for v in options if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(options):
        return "categorical"
    if min(numbers) > 0 and max(numbers) / min(numbers) >= 100:
        return "log"
    return "linear"


class ParameterSampler:
    """``n_trials`` draws from a space of lists (a uniform choice) and distributions.

    Trial ``i`` draws from ``pn.random.host_generator(seed, (0, i))``, one value per name in
    the space's order: a function of ``(seed, i)`` alone, so the first trials stay the same
    when ``n_trials`` grows. Draws are independent: a small discrete space may repeat a
    combination (use a grid to run each exactly once).
    """

    def __init__(self, space: Mapping[str, Any], n_trials: int, seed: int = 0):
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(f"random_search: n_trials must be an int >= 1, received "
                             f"{n_trials!r}.")
        self.space = check_space(space, allow_distributions=True, what="random_search")
        self.n_trials, self.seed = n_trials, check_seed(seed)

    def __len__(self) -> int:
        return self.n_trials

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.n_trials:
            raise IndexError(f"ParameterSampler index {index} out of range for "
                             f"{self.n_trials} trials.")
        generator = host_generator(self.seed, (SAMPLE_STREAM, index))
        return {key: (values if isinstance(values, Distribution) else _Choice(values))
                .sample(generator) for key, values in self.space.items()}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self.n_trials))

    def scales(self) -> dict[str, str]:
        """"log" for loguniform names, "linear" for uniform and randint ones; lists as in
        :meth:`ParameterGrid.scales`."""
        out = {}
        for key, values in self.space.items():
            if isinstance(values, Distribution) and not isinstance(values, _Choice):
                out[key] = "log" if values.log_scale else "linear"
            else:
                out[key] = _scale_of(values.options if isinstance(values, _Choice) else values)
        return out


def check_seed(seed: Any) -> int:
    """``seed`` as a non-negative int (what ``SeedSequence`` takes), or a clear error."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0 (it seeds every trial's draws and "
                         f"training), received {seed!r}.")
    return seed
