"""`portanet train`: the main job, its options, and its errors."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from portanet import io
from portanet.cli import main


def _needs_digits():
    pytest.importorskip("sklearn")  # the default data set is scikit-learn's digits


def _epoch_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"epoch\s+\d+/\d+", line)]


def test_portanet_train_with_no_options(tmp_path):
    """The README's first command, as a user runs it: the console script, no options."""
    _needs_digits()
    exe = shutil.which("portanet")
    cmd = [exe, "train"] if exe else [sys.executable, "-m", "portanet.cli", "train"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PORTANET_BACKEND": "numpy"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "8x8 handwritten digits" in out and "Backend(name='numpy'" in out
    assert len(_epoch_lines(out)) == 20
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert accuracy >= 95.0, out  # measured 95.82% (344/359) with the default seed 0
    saved = tmp_path / "portanet-digits-mlp.safetensors"
    assert f"saved the model to {saved}" in out
    model = io.load(saved)
    assert model.epoch == 20 and model.num_parameters == 64 * 128 + 128 + 128 * 10 + 10


def test_options_quiet_cnn(tmp_path, capsys):
    _needs_digits()
    out_path = tmp_path / "cnn.safetensors"
    rc = main(["train", "--model", "cnn", "--epochs", "2", "--quiet", "--output", str(out_path),
               "--seed", "1", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05",
               "--schedule", "constant"])
    out = capsys.readouterr().out
    assert rc == 0 and _epoch_lines(out) == [] and "test accuracy" in out
    model = io.load(out_path)
    assert type(model.layers[0]).__name__ == "Conv2D" and model.epoch == 2
    assert model.optimizer.get_config()["class_name"] == "SGD"
    assert model.optimizer.learning_rate == 0.05


def test_same_curve_on_numpy_and_strict(tmp_path, capsys):
    runs = {}
    for backend in ("numpy", "array_api_strict"):
        rc = main(["train", "--dataset", "spiral", "--epochs", "3", "--backend", backend,
                   "--output", str(tmp_path / f"{backend}.safetensors")])
        assert rc == 0
        runs[backend] = capsys.readouterr().out

    def numbers(text):  # the printed losses and accuracies, without timings
        return [re.sub(r"\s+[\d.]+s\s+[\d,]+ samples/s", "", line) for line in
                _epoch_lines(text)]

    assert numbers(runs["numpy"]) == numbers(runs["array_api_strict"])
    assert "device='CPU_DEVICE'" in runs["array_api_strict"]


def test_regression_data_set(tmp_path, capsys):
    rc = main(["train", "--dataset", "sine", "--epochs", "60", "--lr", "0.01", "--quiet",
               "--output", str(tmp_path / "sine.safetensors")])
    out = capsys.readouterr().out
    assert rc == 0
    r2 = float(re.search(r"test R\^2: ([-\d.]+)", out).group(1))
    assert r2 > 0.8, out


def _idx(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape) + \
        a.tobytes()


def test_mnist_from_a_folder(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        (tmp_path / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(
            rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))))
        (tmp_path / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(
            rng.integers(0, 10, n).astype(np.uint8))))
    rc = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--epochs", "1",
               "--output", str(tmp_path / "m.safetensors")])
    out = capsys.readouterr().out
    assert rc == 0 and "(40 training, 10 test samples)" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "cnn", "--dataset", "spiral"], "--model cnn needs an image data set"),
    (["--dataset", "mnist"], "mnist is not bundled"),
    (["--backend", "nonsense"], "unknown backend 'nonsense'"),
    (["--optimizer", "adamm"], "unknown optimizer 'adamm'"),
    (["--epochs", "1", "--output", "/nonexistent-folder/x.safetensors"], "does not exist"),
    (["--epochs", "1", "--jit-compile"], "the numpy backend has no compiler"),
])
def test_errors_are_reported(argv, message, capsys):
    rc = main(["train", "--quiet", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("portanet train: error:")


def test_spiral_without_scikit_learn(monkeypatch, tmp_path, capsys):
    """Without scikit-learn the default data set is the generated spiral."""
    import portanet.data

    monkeypatch.setattr(portanet.data, "sklearn_available", lambda: False)
    rc = main(["train", "--epochs", "2", "--output", str(tmp_path / "s.safetensors")])
    out = capsys.readouterr().out
    assert rc == 0 and "generated spiral arms" in out and len(_epoch_lines(out)) == 2


def test_info_is_unchanged(capsys):
    assert main(["info"]) == 0
    assert "active backend" in capsys.readouterr().out


def test_jit_compile_on_jax(tmp_path, capsys):
    """--jit-compile trains through jax.jit: the same scores as eager (float32, 1e-5)."""
    pytest.importorskip("jax")
    scores = {}
    for flag in ("on", "off"):
        out_path = tmp_path / f"{flag}.safetensors"
        rc = main(["train", "--backend", "jax", "--dataset", "spiral", "--epochs", "3",
                   "--jit-compile", flag, "--output", str(out_path)])
        out = capsys.readouterr().out
        assert rc == 0 and f"step: {'jax.jit' if flag == 'on' else 'eager'}" in out
        scores[flag] = float(out.split("test loss: ")[1].split()[0])
    assert abs(scores["on"] - scores["off"]) <= 1e-4  # printed with 4 decimals


def test_backend_from_the_environment(monkeypatch, tmp_path, capsys):
    """README's ``PORTANET_BACKEND=... portanet train``: the environment picks the backend when
    --backend is not given; --backend overrides it."""
    monkeypatch.setenv("PORTANET_BACKEND", "array_api_strict")
    monkeypatch.setenv("PORTANET_DEVICE", "device1")
    out = str(tmp_path / "m.safetensors")
    assert main(["train", "--dataset", "spiral", "--epochs", "1", "--output", out]) == 0
    assert "Backend(name='array_api_strict', device='device1')" in capsys.readouterr().out
    assert main(["train", "--dataset", "spiral", "--epochs", "1", "--backend", "numpy",
                 "--output", out]) == 0
    assert "Backend(name='numpy'" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--batch-size", "--epochs", "--hidden"])
def test_counts_below_one_get_one_line_and_status_2(option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", option, "0"])
    assert exit_.value.code == 2
    assert f"argument {option}: must be at least 1, received 0" in capsys.readouterr().err
