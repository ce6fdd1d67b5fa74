"""Fixtures and the closing ratio table of the benchmarks (the shared code is in ``_common.py``).

Imported before the benchmark modules, so ``_common`` starts JAX's CPU client with its pinned
thread count before anything else can start it.
"""

from __future__ import annotations

import pytest
from _common import TIMINGS, pin_threads, ratio_table


@pytest.fixture(scope="module", autouse=True)
def pinned_threads(request):
    """Pin BLAS/OpenMP and torch to the module's ``THREADS`` (default 1); restore afterwards.

    Yields what was set (also copied into every benchmark's ``extra_info`` by ``_common.run``).
    """
    with pin_threads(getattr(request.module, "THREADS", 1)) as info:
        yield info


def pytest_terminal_summary(terminalreporter):
    lines = ratio_table(TIMINGS)
    if lines:
        terminalreporter.section("portanet median time / PyTorch baseline median time")
        for line in lines:
            terminalreporter.write_line(line)
