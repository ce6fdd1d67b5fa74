"""bench.py and `portanet bench`: the step, floor and baseline machinery (not speed targets:
those are checked by the benchmarks, never by timed unit tests)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from helpers import assert_matches

import portanet as pn
from portanet import bench
from portanet.cli import build_parser, main

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                               reason="jax is not installed")


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


def test_time_calls_synchronizes_on_the_outputs_of_every_round():
    calls = []

    def fn():
        calls.append("f")
        return len(calls)  # this call's outputs

    timing = bench.time_calls(fn, lambda out: calls.append(("s", out)), warmup=2, min_rounds=5,
                              min_time=0.0)
    assert len(timing.seconds) == 5 and all(t >= 0 for t in timing.seconds)
    # each call, warm-up included, is followed by a wait for its own outputs
    assert calls == [c for i in range(7) for c in ("f", ("s", 2 * i + 1))]
    assert timing.median >= 0 and timing.iqr >= 0


def test_time_alternating_calls_each_function_once_per_round():
    calls = []
    timings = bench.time_alternating({"a": lambda: calls.append("a") or "out a",
                                      "b": lambda: calls.append("b") or "out b"},
                                     lambda out: calls.append(out), warmup=1, min_rounds=4,
                                     min_time=0.0)
    assert calls[:4] == ["a", "out a", "b", "out b"]
    # a, b, a, b: never all of a, then all of b; each waited for on its own outputs
    assert calls[4:] == ["a", "out a", "b", "out b"] * 4
    assert [len(t.seconds) for t in timings.values()] == [4, 4]


@needs_jax
def test_jax_synchronize_waits_for_the_queued_work():
    """Timed with ``Backend.synchronize(outputs)``, a chain of matmuls that JAX queues costs what
    it costs with an explicit ``block_until_ready``.

    JAX dispatches asynchronously and has no device-wide barrier. ``synchronize`` used to block
    on a fresh array, which waits for nothing queued before it: this chain then timed at 1-7%
    of its cost (its dispatch), and the bench's JAX floor at a fraction of NumPy's for the same
    products. The ratio asked for is generous (0.5): the two timings differ by noise, the old
    bug by 14x and more.
    """
    import jax

    backend = pn.backend.make_backend("jax")
    n = 512  # 8 products of 512x512: ~2 GFLOP, ~10-30 ms on one core; dispatch is ~0.1 ms
    x = backend.adapter.from_numpy(
        (np.random.default_rng(0).standard_normal((n, n)) / np.sqrt(n)).astype(np.float32),
        backend.device)

    def chain():
        y = x
        for _ in range(8):  # each product waits for the previous: one long queue
            y = backend.xp.matmul(y, x)
        return y

    # in turn, round by round, so that a busy phase of the machine slows both alike
    timings = bench.time_alternating(
        {"explicit": lambda: jax.block_until_ready(chain()), "synchronize": chain},
        backend.synchronize, warmup=1, min_rounds=5, min_time=0.0)
    explicit, synced = timings["explicit"], timings["synchronize"]
    assert synced.median >= 0.5 * explicit.median, (synced.seconds, explicit.seconds)


def test_synchronize_takes_outputs_as_arrays_or_pytrees(backend):
    """``pn.synchronize`` of an array, a pytree (dicts, lists, tuples; other leaves ignored),
    a Backend with outputs, or nothing; ``Backend.synchronize(outputs)`` the same."""
    x = backend.asarray(np.ones((3, 3)), "float32")
    tree = {"loss": x, "params": [x, (x, None, 1.0)]}
    pn.synchronize(x)
    pn.synchronize(tree)
    pn.synchronize(tree, outputs=[x])
    pn.synchronize(backend.backend, outputs=tree)
    pn.synchronize([])
    backend.backend.synchronize(tree)
    backend.backend.synchronize()
    backend.backend.adapter.synchronize(backend.device, tree)


def test_the_timed_step_returns_its_loss_and_the_updated_parameters(backend):
    """What the bench waits for covers the optimizer's update, not only the loss (on JAX the
    loss is ready before the update is)."""
    with pn.use_backend(backend.name, backend.device_spec):
        net = bench.build_portanet("mlp", "float32")
        x = pn.asarray(np.ones((4, 784), dtype=np.float32))
        y = pn.asarray(np.zeros(4, dtype=np.int64))
        before = {k: np.array(pn.to_numpy(v)) for k, v in net.parameters().items()}
        loss, params = bench._train_step(net, x, y)()
    assert loss.shape == () and sorted(params) == sorted(before)
    assert all(params[k] is v for k, v in net.parameters().items())  # the model's new ones
    assert not np.array_equal(pn.to_numpy(params["2.kernel"]), before["2.kernel"])  # updated


@needs_jax
def test_the_compiled_floor_is_the_same_products_in_one_program():
    jax_backend = pn.backend.make_backend("jax")
    shapes = [("forward", 6, 5, 3), ("weight_gradient", 6, 5, 3), ("input_gradient", 6, 5, 3)]
    eager = bench.floor_products(shapes, jax_backend, "float64")()
    compiled = bench.floor_products(shapes, jax_backend, "float64", compiled=True)()
    for a, b in zip(eager, compiled, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12)
    with pytest.raises(ValueError, match="compiled floor is made with jax.jit.*'numpy'"):
        bench.floor_products(shapes, pn.backend.make_backend("numpy"), "float64", compiled=True)


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
    assert row["jit"] == "eager" and row["executor"] == "eager" and row["compile_s"] is None
    assert report["jit_compile"] is False
    text = bench.table(report)
    assert "x floor" in text and "x numpy" in text and "threads=1" in text and "tf32=off" in text
    numpy_line = next(line for line in text.splitlines() if line.strip().startswith("numpy"))
    assert numpy_line.split()[9] == "1.00"  # the numpy row against itself
    assert numpy_line.split()[-1] == "-"  # no compile time for an eager step
    json.dumps(report)  # JSON-able


def _report(rows):
    base = {"model": "mlp", "device": "cpu", "dtype": "float32", "batch": 128, "iqr_s": 1e-4,
            "torch_s": None, "peak_bytes": None, "rounds": 7}
    rows = [dict(base, samples_per_s=128 / r["median_s"], **r) for r in rows]
    return {"machine": {"cpus": 2, "torch": None, "numpy": "2", "jax": "0.1"}, "threads": 2,
            "allow_tf32": False, "jit_compile": True, "model": "mlp", "rows": rows}


def test_table_shows_compiled_rows_with_their_compile_time():
    report = _report([
        {"backend": "numpy", "median_s": 2e-3, "floor_s": 1.6e-3, "jit": "eager",
         "executor": "eager", "compile_s": None},
        {"backend": "jax", "median_s": 4e-3, "floor_s": 2e-3, "jit": "eager",
         "executor": "eager", "compile_s": None},
        {"backend": "jax", "median_s": 2.5e-3, "floor_s": 2e-3, "jit": "compiled",
         "executor": "jax.jit", "compile_s": 0.4321, "compilations": 1, "first_step_s": 0.45},
    ])
    lines = bench.table(report).splitlines()
    assert lines[0].split()[2] == "step" and lines[0].endswith("compile s")
    compiled = lines[3].split()
    assert compiled[:3] == ["jax", "cpu", "jax.jit"] and compiled[-1] == "0.43"
    assert compiled[9] == "1.25"  # x numpy: against numpy's eager step
    assert lines[2].split()[2] == "eager" and lines[2].split()[-1] == "-"
    assert "No compiled step for numpy (no compiler)" in lines[-1]


def test_plot_draws_compiled_rows_as_their_own_dashed_lines(tmp_path):
    pytest.importorskip("matplotlib")
    report = _report([
        {"backend": "jax", "median_s": 4e-3, "floor_s": None, "jit": "eager"},
        {"backend": "jax", "median_s": 2e-3, "floor_s": None, "jit": "compiled",
         "executor": "jax.jit", "compile_s": 0.4},
    ])
    assert bench.plot(report, str(tmp_path / "p.png")).endswith("p.png")


def test_jit_compile_keeps_an_eager_row_where_there_is_no_compiler():
    """numpy has no compiler: --jit-compile gives its eager row and is not an error."""
    rows = bench.measure("mlp", "numpy", None, ["float32"], [4], min_time=0.0, jit_compile=True,
                         baseline=False)
    assert [r.jit for r in rows] == ["eager"]


@needs_jax
def test_jit_compile_adds_a_compiled_row_timed_after_compiling():
    report = bench.run("mlp", [("jax", None)], ["float32"], [8], threads=1, min_time=0.0,
                       baseline=False, jit_compile=True)
    eager, compiled = report["rows"]
    assert (eager["jit"], compiled["jit"]) == ("eager", "compiled")
    assert compiled["executor"] == "jax.jit" and compiled["compilations"] >= 1
    assert compiled["compile_s"] > 0 and compiled["first_step_s"] >= compiled["compile_s"]
    assert compiled["median_s"] > 0 and compiled["floor_s"] > 0 and compiled["rounds"] >= 7
    assert compiled["median_s"] < compiled["first_step_s"]  # the compile is not in the rounds
    assert "jax.jit" in bench.table(report)


def test_bench_command_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = build_parser().parse_args(["bench", "--backends", "numpy", "--batch-sizes", "4",
                                      "--min-time", "0", "--no-baseline", "--threads", "1",
                                      "--json", str(out)])
    assert args.run(args) == 0
    assert json.loads(out.read_text())["rows"][0]["batch"] == 4
    assert "saved" in capsys.readouterr().out


def test_bench_command_rejects_bad_arguments(capsys):
    """User errors: one line, status 2, before any worker starts (tests/test_cli_errors.py has
    the whole list)."""
    assert main(["bench", "--backends", "numpy", "--batch-sizes", "x"]) == 2
    assert "--batch-sizes takes comma-separated positive ints" in capsys.readouterr().err
    assert main(["bench", "--backends", "tensorflow"]) == 2
    assert "unknown backend 'tensorflow'" in capsys.readouterr().err
    args = build_parser().parse_args(["bench", "--backends", "numpy", "--batch-sizes", "x"])
    with pytest.raises(ValueError, match="--batch-sizes"):  # the command itself raises
        args.run(args)


def test_a_model_saved_by_train_is_benchmarked(tmp_path, capsys, monkeypatch):
    """portanet train saves models that start with Standardize: bench finds their input size
    after it, and draws labels among the model's own classes (3 here, not 10)."""
    path = tmp_path / "spiral.safetensors"
    assert main(["train", "--dataset", "spiral", "--epochs", "1", "--quiet", "--hidden", "8",
                 "--output", str(path)]) == 0
    capsys.readouterr()
    net = pn.load(path)
    assert type(net.layers[0]).__name__ == "Standardize"
    assert bench._input_shape_of(net) == (2,)
    labels = []
    real = bench._train_step

    def recording(net, x, y):
        labels.append(pn.to_numpy(y))
        return real(net, x, y)

    monkeypatch.setattr(bench, "_train_step", recording)
    (row,) = bench.measure(str(path), "numpy", None, ["float32"], [64], min_time=0.0,
                           baseline=False)
    assert row.median_s > 0 and set(np.unique(labels[0])) == {0, 1, 2}
