"""Every `portanet` command answers a user error with one line and exit status 2, keeps the
traceback of a real bug, and shows help without markup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from portanet import bench, cli, parity
from portanet.cli import main


def _one_error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"portanet {command}: error: "), lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    # bench: every check runs before a worker starts
    (["bench", "--backends", "nonsense"], "unknown backend 'nonsense'"),
    (["bench", "--backends", "numpy:cuda:7"], "backend 'numpy' has no device 'cuda:7'"),
    (["bench", "--backends", " , "], "no backends in"),
    (["bench", "--batch-sizes", "0", "--backends", "numpy"],
     "--batch-sizes takes comma-separated positive ints"),
    (["bench", "--batch-sizes", "x,2", "--backends", "numpy"], "received 'x,2'"),
    (["bench", "--dtypes", "float16", "--backends", "numpy"],
     "--dtypes takes float32 and/or float64"),
    (["bench", "--threads", "0", "--backends", "numpy"], "--threads must be at least 1"),
    (["bench", "--min-time", "-1", "--backends", "numpy"], "--min-time is seconds"),
    (["bench", "--model", "missing.safetensors", "--backends", "numpy"],
     "neither one of ['mlp', 'cnn']"),
    (["bench", "--backends", "numpy", "--json", "/nonexistent-folder/r.json"],
     "the folder /nonexistent-folder does not exist"),
    # parity
    (["parity", "--backends", "numpy"], "at least two backends"),
    (["parity", "--backends", "numpy,nonsense"], "unknown backend 'nonsense'"),
    (["parity", "--backends", "numpy,array_api_strict:device9"], "no device 'device9'"),
    (["parity", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["parity", "--steps", "-1"], "--steps must be at least 0"),
    (["parity", "--tolerance", "-1"], "--tolerance is a relative difference"),
    (["parity", "--tolerance", "nan"], "received nan"),
    # train and generate
    (["train", "--backend", "nonsense"], "unknown backend 'nonsense'"),
    (["train", "--device", "cuda:7"], "has no device 'cuda:7'"),
    (["train", "--lr", "-1", "--dataset", "spiral"], "must be a finite number >= 0"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent-folder"], "does not exist"),
    (["generate", "missing.safetensors"], "no tokenizer at missing.safetensors.tokenizer.json"),
])
def test_user_errors_are_one_line_and_status_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written where the tests run
    assert main(argv) == 2
    line = _one_error_line(capsys, argv[0])
    assert message in line, line


def test_a_tokenizer_that_is_not_json_is_a_user_error(tmp_path, capsys):
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(b"\x88\x00\xff binary")
    assert main(["generate", str(binary), "--tokenizer", str(binary)]) == 2
    assert "is not a tokenizer file portanet train wrote: expected JSON text" in \
        _one_error_line(capsys, "generate")


def test_plot_without_matplotlib_fails_before_the_benchmark(monkeypatch, capsys, tmp_path):
    """--plot is checked up front: no minutes of timing before learning matplotlib is missing."""
    real = bench._importable
    monkeypatch.setattr(bench, "_importable", lambda m: m != "matplotlib" and real(m))
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    assert main(["bench", "--backends", "numpy", "--plot", str(tmp_path / "p.png"),
                 "--json", str(tmp_path / "r.json")]) == 2
    line = _one_error_line(capsys, "bench")
    assert '--plot needs matplotlib' in line and 'pip install "portanet[plot]"' in line
    assert not (tmp_path / "r.json").exists()


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line: anything else is a bug to see and report."""
    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(parity, "main", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["parity"])
    monkeypatch.setattr(bench, "check_arguments", lambda args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["bench"])


def test_traceback_flag_shows_a_user_errors_traceback():
    with pytest.raises(ValueError, match="at least two backends"):
        main(["parity", "--backends", "numpy", "--traceback"])


def test_the_console_script_exits_2_with_one_line(tmp_path):
    exe = shutil.which("portanet")
    cmd = [exe] if exe else [sys.executable, "-m", "portanet.cli"]
    done = subprocess.run([*cmd, "bench", "--backends", "tensorflow"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        "portanet bench: error: unknown backend 'tensorflow'; valid names: 'numpy', 'cupy', "
        "'torch', 'jax', 'array_api_strict', 'auto'."]


@pytest.mark.parametrize("command", [[], ["info"], ["train"], ["generate"], ["bench"],
                                     ["parity"]])
def test_help_is_plain_text(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: portanet")
    for markup in ("``", ":class:", ":func:", ":meth:", ":data:", ":mod:"):
        assert markup not in text, (markup, text)
    if command:
        assert "--traceback" in text


def test_the_descriptions_are_not_the_docstrings():
    """The module docstrings keep their markup for the docs; the help text is written apart."""
    assert "``" in cli.__doc__ and "``" not in cli.DESCRIPTION
