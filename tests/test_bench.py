"""bench.py and `portanet bench`: the step, floor and baseline machinery (not speed targets:
those are checked by the benchmarks, never by timed unit tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import assert_matches

from portanet import bench
from portanet.cli import build_parser


def test_floor_counts_every_matmul_of_an_mlp_step():
    """3 forward matmuls, 3 weight gradients, 2 input gradients (none for the input layer)."""
    shapes = bench.floor_shapes("mlp", 128)
    assert [s[0] for s in shapes].count("input_gradient") == 2 and len(shapes) == 8
    flops = sum(2 * rows * fan_in * fan_out for _, rows, fan_in, fan_out in shapes)
    per_layer = [784 * 512, 512 * 512, 512 * 10]
    assert flops == 2 * 128 * (3 * sum(per_layer) - per_layer[0])


def test_floor_products_are_the_step_matmuls_in_the_layers_layout(backend):
    """Each product has the shape and value of the step's (checked against NumPy float64)."""
    shapes = [("forward", 6, 5, 3), ("weight_gradient", 6, 5, 3), ("input_gradient", 6, 5, 3)]
    out = bench.floor_products(shapes, backend.backend, "float64")()
    rng = np.random.default_rng(0)  # floor_products draws x, dz, w per product, in that order
    expected = []
    for product, *_ in shapes:
        x, dz, w = rng.standard_normal((6, 5)), rng.standard_normal((6, 3)), \
            rng.standard_normal((5, 3))
        expected.append({"forward": x @ w, "weight_gradient": (x.T @ dz).T,
                         "input_gradient": dz @ w.T}[product])
    for got, want in zip(out, expected, strict=True):
        assert_matches(got if got.shape == want.shape else got.T, want, backend, "float64")


def test_time_calls_synchronizes_every_round():
    calls = []
    timing = bench.time_calls(lambda: calls.append("f"), lambda: calls.append("s"),
                              warmup=2, min_rounds=5, min_time=0.0)
    assert len(timing.seconds) == 5 and all(t >= 0 for t in timing.seconds)
    assert calls[:3] == ["f", "f", "s"] and calls[3:] == ["f", "s"] * 5
    assert timing.median >= 0 and timing.iqr >= 0


def test_time_alternating_calls_each_function_once_per_round():
    calls = []
    timings = bench.time_alternating({"a": lambda: calls.append("a"),
                                      "b": lambda: calls.append("b")},
                                     lambda: calls.append("s"), warmup=1, min_rounds=4,
                                     min_time=0.0)
    assert calls[:3] == ["a", "b", "s"]
    assert calls[3:] == ["a", "s", "b", "s"] * 4  # a, b, a, b: never all of a, then all of b
    assert [len(t.seconds) for t in timings.values()] == [4, 4]


def test_torch_backend_measures_its_baseline_alongside():
    """The torch backend's x torch comes from steps timed alternately in one worker."""
    pytest.importorskip("torch")
    report = bench.run("mlp", [("torch", "cpu")], ["float32"], [8], threads=1, min_time=0.0)
    (row,) = report["rows"]
    assert row["backend"] == "torch" and row["torch_s"] > 0 and row["rounds"] >= 7
    assert "alternating steps" in bench.table(report)


def test_parse_targets():
    assert bench.parse_targets("numpy, torch:cuda:1,array_api_strict:device1") == [
        ("numpy", None), ("torch", "cuda:1"), ("array_api_strict", "device1")]
    with pytest.raises(ValueError, match="no backends"):
        bench.parse_targets(" , ")


def test_build_portanet_matches_the_torch_baseline_architecture(backend):
    """Same parameter count as the hand-built PyTorch model, and a (batch, 10) output."""
    pytest.importorskip("torch")
    for model in ("mlp", "cnn"):
        net = bench.build_portanet(model, "float64")
        torch_net = bench.build_torch(model, "float64", "cpu").module
        assert net.num_parameters == sum(p.numel() for p in torch_net.parameters())
        x = np.random.default_rng(0).standard_normal((2, *bench.input_shape(model)))
        assert net.predict(backend.asarray(x, "float64")).shape == (2, 10)


def test_run_measures_in_a_worker_process(tmp_path):
    report = bench.run("mlp", [("numpy", None)], ["float32"], [8], threads=1, min_time=0.0,
                       baseline=False)
    (row,) = report["rows"]
    assert row["backend"] == "numpy" and row["batch"] == 8 and row["median_s"] > 0
    assert row["floor_s"] > 0 and row["torch_s"] is None and row["rounds"] >= 7
    assert row["thread_setup"]["threads"] == 1
    text = bench.table(report)
    assert "x floor" in text and "x numpy" in text and "threads=1" in text and "tf32=off" in text
    numpy_line = next(line for line in text.splitlines() if line.strip().startswith("numpy"))
    assert numpy_line.split()[8] == "1.00"  # the numpy row against itself
    json.dumps(report)  # JSON-able


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = build_parser().parse_args(["bench", "--backends", "numpy", "--batch-sizes", "4",
                                      "--min-time", "0", "--no-baseline", "--threads", "1",
                                      "--json", str(out)])
    assert args.run(args) == 0
    assert json.loads(out.read_text())["rows"][0]["batch"] == 4
    assert "saved" in capsys.readouterr().out


def test_bench_command_rejects_bad_arguments():
    args = build_parser().parse_args(["bench", "--backends", "numpy", "--batch-sizes", "x"])
    with pytest.raises(SystemExit, match="--batch-sizes must be comma-separated ints"):
        args.run(args)
    args = build_parser().parse_args(["bench", "--backends", "tensorflow"])
    with pytest.raises(Exception, match="unknown backend 'tensorflow'"):
        args.run(args)
