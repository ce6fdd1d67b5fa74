"""Every docstring example in portanet runs and prints what it says (the docs teach with them)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import portanet

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(portanet.__path__, prefix="portanet.")
    # adapters of libraries that may be absent import them lazily, but their examples would not run
    if not info.name.startswith("portanet.backends.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with portanet.use_backend("numpy"):
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        result = doctest.testmod(module, optionflags=flags)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


def test_the_library_teaches_by_example():
    """Most modules carry runnable examples; this guards against losing them wholesale."""
    with_examples = 0
    for name in MODULES:
        finder = doctest.DocTestFinder()
        if any(t.examples for t in finder.find(importlib.import_module(name))):
            with_examples += 1
    assert with_examples >= len(MODULES) // 2
