"""What every benchmark file shares: backend selection, pinned threads, timing and the ratios.

* **Backends.** ``PORTANET_BENCH_BACKEND=<name>`` times only that backend's portanet code in this
  process, and the PyTorch baseline only when it is unset or ``torch`` (``nox -s bench`` runs one
  process per backend so that thread pools never fight). Unset: every available backend here.
* **Threads.** Each module states ``THREADS`` (1 unless it says otherwise); the ``pinned_threads``
  fixture (``conftest.py``) pins BLAS/OpenMP (``threadpoolctl``) and torch to it for the module and
  restores them afterwards. XLA fixes its CPU thread pool once per process, from the CPUs the
  process may run on when the client starts (``XLA_FLAGS`` no longer changes it), so importing this
  module starts that client while the process is restricted to ``XLA_THREADS`` CPUs. Every
  benchmark's ``extra_info`` states the counts that applied.
* **Ratios.** :func:`run` times one implementation; the group's PyTorch baseline median divides
  the others' (``extra_info["vs_torch"]``, in whichever order they ran) and the session ends with
  the ratio table (``conftest.py``). Runs split over processes are joined afterwards with

      python benchmarks/_common.py .benchmarks/*.json

Imported by the benchmark files as ``from _common import ...``: pytest's default import mode puts
``benchmarks/`` (no ``__init__.py``) on ``sys.path``. Importing it before anything starts JAX's
client (``conftest.py`` does) is what lets it pin XLA.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import array_api_compat

# NumPy first: OpenBLAS sizes its pool when it loads, and must see every CPU (see _start_xla).
import numpy  # noqa: F401

import portanet as pn
from portanet.backend import BACKEND_NAMES, adapter_of

ONLY = os.environ.get("PORTANET_BENCH_BACKEND") or None
if ONLY is not None and ONLY not in BACKEND_NAMES:
    raise ValueError(f"PORTANET_BENCH_BACKEND={ONLY!r} is not a portanet backend; expected one "
                     f"of {list(BACKEND_NAMES)}, or leave it unset to time every available one.")
RUN_BASELINE = ONLY in (None, "torch")
CPU_BACKENDS = ("numpy", "torch", "jax", "array_api_strict")
XLA_THREADS = 1


def _start_xla(threads: int) -> int | str | None:
    """Start JAX's CPU client on ``threads`` CPUs; returns what applies (None: JAX unused)."""
    if ONLY not in (None, "jax") or importlib.util.find_spec("jax") is None:
        return None
    if "jax" in sys.modules:
        return "unpinned (jax was imported before benchmarks/_common.py)"
    if not hasattr(os, "sched_setaffinity"):  # macOS, Windows
        return "unpinned (no sched_setaffinity here)"
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(cpus)[:threads]))
    try:
        import jax

        jax.devices("cpu")  # the client (and its thread pool) starts here, once
    finally:
        os.sched_setaffinity(0, cpus)  # everything else keeps every CPU
    return threads


XLA_PINNED = _start_xla(XLA_THREADS)


def backends(candidates: tuple[str, ...] | None = None) -> list[str]:
    """The portanet backends to time in this process: ``PORTANET_BENCH_BACKEND`` if it is one of
    ``candidates`` (default: any backend), else none; unset, the available ``candidates``."""
    if ONLY is not None:
        return [ONLY] if candidates is None or ONLY in candidates else []
    return [b for b in pn.available_backends() if candidates is None or b in candidates]


def with_baseline(baseline: str, implementations: list[str]) -> list[str]:
    """``implementations``, preceded by the baseline's label where this process runs it."""
    return [baseline, *implementations] if RUN_BASELINE else list(implementations)


# -- threads ---------------------------------------------------------------------------------------
_pinned: dict[str, Any] = {}  # what the current module runs under; copied into each extra_info


@contextmanager
def pin_threads(threads: int) -> Iterator[dict[str, Any]]:
    """Pin BLAS/OpenMP and torch to ``threads`` threads inside the block; restore them after."""
    from threadpoolctl import threadpool_limits

    torch = None
    if "torch" in sys.modules or (RUN_BASELINE and importlib.util.find_spec("torch")):
        import torch  # its pool is pinned too, even where it only serves the baseline
    info: dict[str, Any] = {"threads": threads, "blas": "threadpoolctl"}
    if XLA_PINNED is not None:
        info["xla_threads"] = XLA_PINNED
    previous = torch.get_num_threads() if torch is not None else None
    try:
        if torch is not None:
            torch.set_num_threads(threads)
            info["torch_threads"] = torch.get_num_threads()
        with threadpool_limits(limits=threads):
            _pinned.clear()
            _pinned.update(info)
            yield info
    finally:
        _pinned.clear()
        if previous is not None:
            torch.set_num_threads(previous)


# -- timing ----------------------------------------------------------------------------------------
def wait(result: Any) -> Any:
    """Block until every array in ``result`` (an array, or a dict/list/tuple of them) is computed:
    JAX dispatches asynchronously (wait for the array itself), CUDA queues work on its device
    (CuPy, torch on ``cuda``: wait for the device); the CPU backends return finished arrays."""
    items = result.values() if isinstance(result, dict) else result
    if isinstance(result, (dict, list, tuple)):
        for item in items:
            wait(item)
    elif hasattr(result, "block_until_ready"):
        result.block_until_ready()
    elif hasattr(result, "shape"):
        adapter = adapter_of(result)
        device = array_api_compat.device(result)
        if adapter.needs_gpu or str(device).startswith("cuda"):
            adapter.synchronize(device)
    return result


@dataclass
class Timing:
    group: str
    implementation: str
    baseline: bool
    median: float
    extra_info: dict[str, Any] = field(default_factory=dict)


TIMINGS: list[Timing] = []  # this process's measurements, for the table at the end


def run(benchmark, step: Callable[[], Any], *, group: str, implementation: str,
        baseline: bool = False, rounds: int = 20, warmup_rounds: int = 2,
        **extra_info: Any) -> None:
    """Time ``step`` (it must wait for its results) as ``implementation`` within ``group``.

    One untimed call first (JAX compiles each operation on its first call, optimizers create
    their state), then ``warmup_rounds`` more and ``rounds`` timed ones. With
    ``--benchmark-disable`` the step runs once as a smoke test and nothing is recorded.
    """
    benchmark.group = group
    benchmark.extra_info.update(_pinned, implementation=implementation, baseline=baseline,
                                **extra_info)
    if not benchmark.disabled:
        step()
    benchmark.pedantic(step, warmup_rounds=warmup_rounds, rounds=rounds, iterations=1)
    if benchmark.stats is None:
        return
    TIMINGS.append(Timing(group, implementation, baseline, benchmark.stats.stats.median,
                          benchmark.extra_info))
    for timing, ratio in _ratios(t for t in TIMINGS if t.group == group):
        timing.extra_info["vs_torch"] = ratio  # the dict pytest-benchmark writes to its JSON


def _ratios(timings) -> Iterator[tuple[Timing, float]]:
    """(timing, its median / the baseline's) for each non-baseline timing of one group."""
    timings = list(timings)
    base = next((t for t in timings if t.baseline), None)
    if base is not None:
        yield from ((t, t.median / base.median) for t in timings if not t.baseline)


def ratio_table(timings: list[Timing]) -> list[str]:
    """One line per group: each implementation's median time / the PyTorch baseline's."""
    lines = []
    for group in dict.fromkeys(t.group for t in timings):
        of_group = [t for t in timings if t.group == group]
        pairs = list(_ratios(of_group))
        if not pairs:
            continue
        base = next(t for t in of_group if t.baseline)
        threads = base.extra_info.get("threads", "?")
        lines.append(f"{group}  (/ {base.implementation}, {threads} thread(s))")
        lines += textwrap.wrap("  ".join(f"{t.implementation}={r:.2f}x" for t, r in pairs), 96,
                               initial_indent="    ", subsequent_indent="    ",
                               break_on_hyphens=False)
    return lines


def main(paths: list[str]) -> int:
    """Print the ratio table of pytest-benchmark JSON files written by separate processes."""
    timings = []
    for path in paths:
        with open(path) as f:
            for b in json.load(f)["benchmarks"]:
                info = b.get("extra_info", {})
                if "implementation" in info:
                    timings.append(Timing(b["group"], info["implementation"],
                                          bool(info.get("baseline")), b["stats"]["median"], info))
    lines = ratio_table(timings)
    print("\n".join(lines) if lines else "no group has both a baseline and a portanet timing")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
