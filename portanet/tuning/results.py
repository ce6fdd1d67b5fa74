"""The results of a search: every trial, the best one, as a table, rows or a plot."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from .trial import Trial

__all__ = ["TuningResults"]


class TuningResults:
    """Every :class:`~portanet.tuning.trial.Trial` of a search, and the best one.

    Attributes:
        trials: the trials by index (grid order, or draw number).
        scoring: the score's key in each trial's ``scores``, e.g. "val_loss".
        mode: "min" or "max": which way is better.
        scales: per parameter, "log", "linear" or "categorical" (the plot's x axis).
        best_model: with ``refit=True``, the best parameters trained on all the data.

    The best trial is the "ok" one with the lowest (mode "min") or highest ("max") score;
    ties go to the lowest index.
    """

    def __init__(self, trials: list[Trial], scoring: str, mode: str,
                 scales: dict[str, str] | None = None, best_model: Any = None):
        self.trials = sorted(trials, key=lambda t: t.index)
        self.scoring, self.mode = scoring, mode
        self.scales = dict(scales or {})
        self.best_model = best_model

    # -- the best --------------------------------------------------------------------------------
    def ranked(self) -> list[Trial]:
        """The trials best first; failed ones last, by index."""
        sign = 1.0 if self.mode == "min" else -1.0
        return sorted(self.trials, key=lambda t: (not t.ok, sign * t.score if t.ok else 0.0,
                                                  t.index))

    @property
    def failed(self) -> list[Trial]:
        """The trials whose status is "failed"."""
        return [t for t in self.trials if not t.ok]

    @property
    def best(self) -> Trial:
        """The best trial (an error if every trial failed, with the first errors)."""
        if not self.trials:
            raise ValueError("this search ran no trial, so there is no best one.")
        best = self.ranked()[0]
        if not best.ok:
            first = "; ".join(f"trial {t.index} {t.params}: {t.error}" for t in self.trials[:3])
            more = f" (and {len(self.trials) - 3} more)" if len(self.trials) > 3 else ""
            raise ValueError(f"all {len(self.trials)} trials failed, so there is no best one. "
                             f"First errors: {first}{more}. Each trial's .error and "
                             ".traceback say more; on_error='raise' stops at the first.")
        return best

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's parameters."""
        return dict(self.best.params)

    @property
    def best_score(self) -> float:
        """The best trial's score."""
        return self.best.score

    def __len__(self) -> int:
        return len(self.trials)

    def __iter__(self) -> Iterator[Trial]:
        return iter(self.trials)

    def __repr__(self) -> str:
        ok = len(self.trials) - len(self.failed)
        best = f", best {self.scoring}={self.best_score:.6g} (trial {self.best.index})" \
            if ok else ""
        return f"TuningResults({len(self.trials)} trials, {ok} ok{best})"

    # -- rows and tables ---------------------------------------------------------------------
    def param_names(self) -> list[str]:
        """Every parameter name, in the order the trials first use them."""
        names: dict[str, None] = {}
        for trial in self.trials:
            names.update(dict.fromkeys(trial.params))
        return list(names)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One flat dict per trial, by index: ``index``, ``status``, ``score``, each parameter
        as ``param_<name>``, every score by its key, ``seed``, ``seconds``, ``worker``,
        ``device``, ``error``. ``pandas.DataFrame(results.to_dicts())`` makes a table of it.
        """
        return [{"index": t.index, "status": t.status, "score": t.score,
                 **{f"param_{k}": v for k, v in t.params.items()}, **t.scores,
                 "seed": t.seed, "seconds": t.seconds, "worker": t.worker,
                 "device": t.device, "error": t.error} for t in self.trials]

    def _rows(self, error_width: int | None) -> tuple[list[str], list[list[str]]]:
        names = self.param_names()
        show_errors = bool(self.failed)
        header = ["rank", "trial", *names, self.scoring, "status", "seconds",
                  *(["error"] if show_errors else [])]
        rows, rank = [], 0
        for t in self.ranked():
            rank += t.ok
            error = t.error or ""
            if error_width and len(error) > error_width:
                error = error[:error_width - 3] + "..."
            rows.append([str(rank) if t.ok else "-", str(t.index),
                         *(_text(t.params.get(n, "")) for n in names), _text(t.score, 6),
                         t.status, f"{t.seconds:.2f}", *([error] if show_errors else [])])
        return header, rows

    def table(self, error_width: int = 60) -> str:
        """The trials as aligned text, best first (failed last), errors cut to
        ``error_width`` characters."""
        header, rows = self._rows(error_width)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                  for r in rows]
        best = f"; best: trial {self.best.index}" if len(self.failed) < len(self.trials) else ""
        direction = "lower" if self.mode == "min" else "higher"
        return "\n".join([f"{len(self.trials)} trials, {len(self.failed)} failed, scored by "
                          f"{self.scoring} ({direction} is better){best}", *lines])

    def __str__(self) -> str:
        return self.table()

    def to_markdown(self) -> str:
        """The trials as a Markdown table, best first (full error texts)."""
        header, rows = self._rows(None)

        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) \
                + " |"

        return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])

    # -- the picture --------------------------------------------------------------------------
    def plot(self, path: Any, param: str | None = None) -> Any:
        """Save the score against one parameter to ``path`` (PNG, SVG, PDF: by the suffix).

        ``param``: a parameter name; None for the first one that takes more than one value.
        The x axis is logarithmic for loguniform parameters (and grids of positive values
        spanning two decades or more), a category per value for non-numbers. Failed trials are
        red crosses along the bottom, the best trial a star. Needs matplotlib
        (``pip install "portanet[plot]"``). Returns ``path``.
        """
        param = self._plotted_param(param)
        try:
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError('TuningResults.plot needs matplotlib: pip install "portanet[plot]"'
                              ' (or pip install matplotlib). results.table() has the same '
                              "numbers as text.") from None
        values = [t.params.get(param) for t in self.trials]
        scale = self.scales.get(param) or _guess_scale(values)
        categories = list(dict.fromkeys(map(_text, values))) if scale == "categorical" else []
        where = [categories.index(_text(v)) if categories else v for v in values]
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.add_subplot()
        ok = [(x, t.score) for x, t in zip(where, self.trials, strict=True) if t.ok]
        if ok:
            ax.scatter([p[0] for p in ok], [p[1] for p in ok], label="trial", zorder=2)
            best = self.best
            ax.scatter([where[self.trials.index(best)]], [best.score], marker="*", s=220,
                       color="gold", edgecolors="black", label=f"best (trial {best.index})",
                       zorder=3)
        failed = [x for x, t in zip(where, self.trials, strict=True) if not t.ok]
        if failed:  # no score to place them at: crosses on the axis, in axes coordinates
            ax.scatter(failed, [0.03] * len(failed), marker="x", color="red",
                       transform=ax.get_xaxis_transform(), label=f"failed ({len(failed)})",
                       zorder=3)
        if scale == "log":
            ax.set_xscale("log")
        if categories:
            ax.set_xticks(range(len(categories)), categories)
        direction = "lower" if self.mode == "min" else "higher"
        ax.set(xlabel=param, ylabel=f"{self.scoring} ({direction} is better)",
               title=f"{len(self.trials)} trials")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        return path

    def _plotted_param(self, param: str | None) -> str:
        names = self.param_names()
        if param is not None:
            if param not in names:
                raise ValueError(f"plot: no trial has a parameter {param!r}; the parameters are "
                                 f"{names}.")
            return param
        varying = [n for n in names if len({_text(t.params.get(n)) for t in self.trials}) > 1]
        if not varying:
            raise ValueError(f"plot: no parameter takes more than one value (parameters: "
                             f"{names}), so there is nothing to plot the score against.")
        return varying[0]


def _text(value: Any, digits: int = 4) -> str:
    """A cell: floats in ``digits`` significant digits, the rest as str."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def _guess_scale(values: list[Any]) -> str:
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return "linear" if numeric else "categorical"
