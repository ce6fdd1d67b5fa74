"""parity.py and `portanet parity`: the same model agrees across backends, and a real
difference is caught."""

from __future__ import annotations

import numpy as np
import pytest

from portanet import parity
from portanet.cli import main


def test_compare_is_relative_to_the_reference_scale():
    ref = np.array([100.0, 0.0, -50.0])
    assert parity.compare(ref, ref + np.array([0.0, 1e-3, 0.0])) == pytest.approx((1e-3, 1e-5))
    assert parity.compare(ref, ref[:2]) == (float("inf"), float("inf"))
    assert parity.compare(np.array([np.nan]), np.array([1.0]))[1] == float("inf")
    assert parity.compare(np.array([np.inf]), np.array([np.inf])) == (0.0, 0.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mlp_traces_agree_with_numpy(backend, dtype):
    """Every backend in the fixture against the numpy reference, well inside the tolerance."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 784)).astype(dtype)
    y = rng.integers(0, 10, size=8)
    ref = parity.trace("mlp", "numpy", None, dtype, x, y, steps=3)
    got = parity.trace("mlp", backend.name, backend.device, dtype, x, y, steps=3)
    bound = {"float64": 1e-12, "float32": 1e-5}[dtype]
    for key in ("activations", "gradients"):
        assert ref[key].keys() == got[key].keys()
        for name in ref[key]:
            assert parity.compare(ref[key][name], got[key][name])[1] < bound, (key, name)
    assert parity.compare(ref["losses"], got["losses"])[1] < bound
    assert ref["losses"][-1] < ref["losses"][0]  # the 3 steps really trained


def test_a_real_difference_fails(monkeypatch):
    """Perturb one backend's weights by 1e-6 relative: float64 parity must flag it."""
    real_trace = parity.trace

    def perturbed(model, backend, device, dtype, x, y, steps, seed=0):
        out = real_trace(model, backend, device, dtype, x, y, steps, seed)
        if backend == "array_api_strict":
            out["activations"]["0:Dense"] = out["activations"]["0:Dense"] * (1 + 1e-6)
        return out

    monkeypatch.setattr(parity, "trace", perturbed)
    differences, traces = parity.run("mlp", [("numpy", None), ("array_api_strict", "device1")],
                                     "float64", steps=2, batch=4)
    failed = [d for d in differences if not d.ok]
    assert [(d.kind, d.name) for d in failed] == [("activation", "0:Dense")]
    assert "PARITY FAILED: " in parity.report(differences, traces)


def test_parity_command_exit_codes(capsys, monkeypatch):
    """0 within tolerance, 1 past it (a check that ran and failed), 2 for a user error."""
    argv = ["parity", "--backends", "numpy,array_api_strict:device1", "--steps", "2",
            "--batch-size", "4"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "reference: numpy:cpu" in out and "PARITY OK" in out
    real_trace = parity.trace

    def perturbed(model, backend, device, dtype, x, y, steps, seed=0):
        out = real_trace(model, backend, device, dtype, x, y, steps, seed)
        if backend == "array_api_strict":
            out["gradients"]["0.bias"] = out["gradients"]["0.bias"] + 1e-3
        return out

    monkeypatch.setattr(parity, "trace", perturbed)
    assert main(argv) == 1
    assert "PARITY FAILED" in capsys.readouterr().out
    assert main([*argv, "--tolerance", "-1"]) == 2
    assert "--tolerance is a relative difference" in capsys.readouterr().err


def test_parity_needs_two_targets_and_a_known_dtype():
    with pytest.raises(ValueError, match="at least two backends"):
        parity.run("mlp", [("numpy", None)])
    with pytest.raises(ValueError, match="dtype must be one of"):
        parity.run("mlp", [("numpy", None), ("numpy", None)], dtype="float16")
