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
    assert accuracy >= 95.0, out  # measured 96.66% (347/359) with the default seed 0
    saved = tmp_path / "portanet-digits-mlp.safetensors"
    assert f"saved the model to {saved}" in out
    model = io.load(saved)
    assert model.epoch == 20 and model.num_parameters == 64 * 128 + 128 + 128 * 10 + 10
    assert type(model.layers[0]).__name__ == "Standardize"
    # A second run refuses to replace the first one's model, before training, in one line.
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PORTANET_BACKEND": "numpy"})
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr.strip().splitlines() == [
        f"portanet train: error: {saved.name} exists (saved by an earlier run?); pass "
        "--overwrite to replace it, or --output to save elsewhere."]


def test_options_quiet_cnn(tmp_path, capsys):
    _needs_digits()
    out_path = tmp_path / "cnn.safetensors"
    rc = main(["train", "--model", "cnn", "--epochs", "2", "--quiet", "--output", str(out_path),
               "--seed", "1", "--batch-size", "64", "--optimizer", "sgd", "--lr", "0.05",
               "--schedule", "constant"])
    out = capsys.readouterr().out
    assert rc == 0 and _epoch_lines(out) == [] and "test accuracy" in out
    model = io.load(out_path)
    assert [type(layer).__name__ for layer in model.layers[:2]] == ["Standardize", "Conv2D"]
    assert model.layers[0].shape == (1, 8, 8) and model.epoch == 2  # one statistic per pixel
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
                 "--overwrite", "--output", out]) == 0
    assert "Backend(name='numpy'" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--batch-size", "--epochs", "--hidden"])
def test_counts_below_one_get_one_line_and_status_2(option, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", option, "0"])
    assert exit_.value.code == 2
    assert f"argument {option}: must be at least 1, received 0" in capsys.readouterr().err


def _digits_test_split(seed=0):
    """The test part ``portanet train`` holds out, rebuilt with the public API."""
    from portanet import data

    dataset = data.load_dataset("digits", images=False, seed=seed)
    _, x_test, _, y_test = data.train_test_split(dataset.x, dataset.y, test_size=0.2,
                                                 stratify=True, seed=seed)
    return x_test, y_test


def test_saved_model_predicts_on_raw_inputs(tmp_path, capsys):
    """The model ``portanet train`` saves standardizes by itself: loaded and evaluated on the raw
    test digits it scores what train printed (the old saves, standardized outside the model,
    scored 85% there against a printed 96%). The raw digits are the 0-16 intensities / 16."""
    _needs_digits()
    out_path = tmp_path / "digits.safetensors"
    assert main(["train", "--epochs", "3", "--quiet", "--output", str(out_path)]) == 0
    printed = re.search(r"test accuracy: [\d.]+% \((\d+)/(\d+)\)  test loss: ([\d.]+)",
                        capsys.readouterr().out)
    right, total, loss = int(printed.group(1)), int(printed.group(2)), float(printed.group(3))
    x_test, y_test = _digits_test_split()
    assert float(np.min(x_test)) == 0.0 and float(np.max(x_test)) == 1.0  # raw, not z-scores
    scores = io.load(out_path).evaluate(x_test, y_test, metrics=["accuracy"])
    assert round(scores["accuracy"] * len(y_test)) == right and len(y_test) == total
    assert abs(scores["loss"] - loss) <= 5e-5  # printed with 4 decimals
    assert right / total > 0.9


def _write(path, text="an earlier run's model"):
    path.write_text(text)
    return path


def test_train_refuses_to_overwrite_before_training(tmp_path, capsys):
    target = _write(tmp_path / "m.safetensors")
    rc = main(["train", "--dataset", "spiral", "--epochs", "1", "--output", str(target)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""  # nothing trained, nothing printed
    assert captured.err.count("\n") == 1 and "pass --overwrite" in captured.err
    assert target.read_text() == "an earlier run's model"
    rc = main(["train", "--dataset", "spiral", "--epochs", "1", "--quiet", "--overwrite",
               "--output", str(target)])
    assert rc == 0 and io.load(target).epoch == 1


@pytest.mark.parametrize("model, existing", [
    ("gru", "model"), ("lstm", "model"), ("lstm", "tokenizer"),
])
def test_sequence_train_refuses_to_overwrite(model, existing, tmp_path, capsys):
    """Also the sequence jobs, and a text model's tokenizer file beside the model."""
    target = tmp_path / "seq.safetensors"
    existing_path = target if existing == "model" else tmp_path / "seq.safetensors.tokenizer.json"
    _write(existing_path)
    rc = main(["train", "--model", model, "--epochs", "1", "--output", str(target)])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ""
    assert f"{existing_path} exists" in captured.err and "--overwrite" in captured.err
    assert existing_path.read_text() == "an earlier run's model"


def test_missing_output_folder_is_refused_before_training(tmp_path, capsys):
    rc = main(["train", "--dataset", "spiral", "--output", str(tmp_path / "no" / "m.st")])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == "" and "does not exist" in captured.err


def test_torch_runs_small_models_on_one_thread(tmp_path, capsys, monkeypatch):
    """--threads auto: one intra-op thread for a small step on the torch CPU backend (torch's
    default threads made such steps up to 30x slower on a busy 2-core machine), restored after;
    --threads N sets N."""
    torch = pytest.importorskip("torch")
    from portanet import cli

    seen = []
    real_note = cli._threads_note

    def note(threads):  # called inside the job: what torch really runs with there
        seen.append((threads, torch.get_num_threads()))
        return real_note(threads)

    monkeypatch.setattr(cli, "_threads_note", note)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = str(tmp_path / "t.safetensors")
        assert main(["train", "--backend", "torch", "--dataset", "spiral", "--epochs", "1",
                     "--output", out]) == 0
        assert "torch threads: 1" in capsys.readouterr().out
        assert seen[-1] == (1, 1) and torch.get_num_threads() == 2  # restored
        assert main(["train", "--backend", "torch", "--dataset", "spiral", "--epochs", "1",
                     "--threads", "3", "--overwrite", "--output", out]) == 0
        assert "torch threads: 3" in capsys.readouterr().out
        assert seen[-1] == (3, 3) and torch.get_num_threads() == 2
        assert main(["train", "--dataset", "spiral", "--epochs", "1", "--overwrite",
                     "--output", out]) == 0
        assert "torch threads" not in capsys.readouterr().out  # numpy: not torch's business
    finally:
        torch.set_num_threads(before)


def test_auto_threads_rule():
    from portanet import cli

    class Model:
        def __init__(self, n):
            self.num_parameters = n

    assert cli._auto_threads(Model(9_610), 32) == 1  # the digits MLP
    assert cli._auto_threads(Model(407_050), 128) is None  # 784-512-10: torch's default
