"""The docs pages say what is true: their ``>>>`` examples run, and what they claim about
``Optimizer.update``'s pure form holds on every backend.

tests/test_doctests.py runs the examples of the docstrings; this file runs those written in the
pages under docs/ (fenced ``pycon`` blocks), so a page cannot keep a claim the code dropped.
"""

from __future__ import annotations

import doctest
import pathlib

import numpy as np
import pytest

import portanet as pn
from portanet import optimizers

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(p.name for p in DOCS.glob("*.md") if ">>> " in p.read_text(encoding="utf-8"))


def test_pages_with_examples_are_found():
    """At least the pages that carry checked examples today (a rename must not skip them)."""
    assert {"metrics.md", "optimizers.md"} <= set(PAGES)


def _examples(page: str) -> doctest.DocTest:
    """The page's ``>>>`` examples; a code fence line ends the expected output before it (it
    becomes a blank line, so reported line numbers stay the page's)."""
    lines = (DOCS / page).read_text(encoding="utf-8").split("\n")
    text = "\n".join("" if line.lstrip().startswith("```") else line for line in lines)
    return doctest.DocTestParser().get_doctest(text, {}, page, str(DOCS / page), 0)


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with pn.use_backend("numpy"):
        result = runner.run(_examples(page))
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page}"


def test_pure_update_leaves_parameters_and_state_alone(backend):
    """docs/optimizers.md: ``update(..., inplace=False)`` returns new arrays, writes none of its
    inputs (parameters, gradients, the old state), on every backend; the default writes in place
    where arrays are writeable."""
    w0, g0 = np.array([1.0, 2.0, -3.0]), np.array([0.5, -1.0, 2.0])
    params, grads = {"w": backend.asarray(w0, "float64")}, {"w": backend.asarray(g0, "float64")}
    opt = optimizers.Adam(0.1)
    state = opt.init(params)
    new, new_state = opt.update(grads, state, params, inplace=False)
    assert new["w"] is not params["w"] and new_state.step == 1
    np.testing.assert_array_equal(pn.to_numpy(params["w"]), w0)
    np.testing.assert_array_equal(pn.to_numpy(grads["w"]), g0)
    for slot in state.slots["w"].values():
        np.testing.assert_array_equal(pn.to_numpy(slot), 0.0)
    assert not np.array_equal(pn.to_numpy(new["w"]), w0)
    # the default (inplace=True) writes into writeable parameters: all but JAX's
    again, _ = opt.update(grads, opt.init(params), params)
    assert (again["w"] is params["w"]) == (backend.name != "jax")
    np.testing.assert_array_equal(pn.to_numpy(again["w"]), pn.to_numpy(new["w"]))


@pytest.mark.parametrize("kernels", ["fused", "portable"])
def test_array_api_strict_parity_is_what_benchmarks_md_says(kernels, request):
    """docs/benchmarks.md: against NumPy, array_api_strict's float64 activations are
    bit-identical and its gradients differ by a few roundings, all from NumPy's fused softmax
    cross-entropy kernel: with the kernels off, everything is bit-identical."""
    pytest.importorskip("array_api_strict")
    from portanet import parity

    if kernels == "portable":
        request.getfixturevalue("portable_kernels")
    found, _ = parity.run("mlp", [("numpy", None), ("array_api_strict", "device1")],
                          "float64", steps=2, batch=8)
    worst = {kind: max(d.max_rel for d in found if d.kind == kind)
             for kind in ("activation", "gradient", "loss")}
    assert worst["activation"] == 0.0
    if kernels == "portable":
        assert worst == {"activation": 0.0, "gradient": 0.0, "loss": 0.0}
    else:
        assert 0.0 < worst["gradient"] < 2e-15, worst
