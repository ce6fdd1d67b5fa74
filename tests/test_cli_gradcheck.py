"""``portanet gradcheck --model ...``: a built-in or saved model's gradients against central
differences, on the chosen backend; exit status 0 if they agree, 1 if not, 2 on a user error."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import layers, losses
from portanet.cli import main


def _tiny_model(path, *, first=None, loss="softmax_cross_entropy"):
    """A model as ``portanet train`` saves one: Standardize first (adapted), then Dense layers."""
    x = np.random.default_rng(0).normal(size=(16, 3)) * 4.0 + 1.0
    with pn.use_backend("numpy"):
        stack = first or [layers.Standardize(3), layers.Dense(3, 4, activation="tanh"),
                          layers.Dense(4, 2)]
        model = pn.Sequential(stack, loss=loss, optimizer="adam", seed=0)
        if isinstance(model.layers[0], layers.Standardize):
            model.layers[0].adapt(x)
        model.save(path)
    return str(path)


def _run(argv, capsys):
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_built_in_mlp_passes(capsys):
    """784-512-512-10 on NumPy, 4 sampled entries per tensor: every parameter is reported."""
    status, out, err = _run(["gradcheck", "--model", "mlp", "--max-checks", "4",
                             "--backend", "numpy"], capsys)
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("portanet gradcheck: model mlp (669,706 parameters), a batch of "
                               "4 inputs of shape (784,), at most 4 entries per tensor")
    for name, shape in [("0.kernel", "(784, 512)"), ("0.bias", "(512,)"),
                        ("1.kernel", "(512, 512)"), ("2.bias", "(10,)")]:
        row = next(line for line in lines if line.startswith(name + " "))
        assert shape in row and "4/" in row and row.rstrip().endswith("ok"), row
    assert "on numpy (cpu), float64" in out
    assert lines[-2] == "passed"


def test_a_saved_model_passes_on_every_backend(backend, tmp_path, capsys):
    """A file saved on NumPy, loaded and checked on the backend and device asked for; its input
    shape comes from its first layer (a Standardize layer, as portanet train saves)."""
    path = _tiny_model(tmp_path / "tiny.safetensors")
    argv = ["gradcheck", "--model", path, "--backend", backend.name, "--quiet"]
    if backend.device_spec is not None:
        argv += ["--device", str(backend.device_spec)]
    status, out, err = _run(argv, capsys)
    assert status == 0, out + err
    assert f"on {backend.name} (" in out and out.splitlines()[-1] == "passed"
    if backend.device_spec == "device1":
        assert "(device1)" in out
    names = [line.split()[0] for line in out.splitlines() if line.startswith(("1.", "2."))]
    assert names == ["1.kernel", "1.bias", "2.kernel", "2.bias"]  # Standardize has none


def test_a_wrong_gradient_fails_with_status_1(tmp_path, capsys, monkeypatch):
    """A planted bug (the MSE gradient 1% too large) is caught: status 1, the verdict names the
    failing tensors."""
    path = _tiny_model(tmp_path / "mse.safetensors", loss="mse")
    real = losses.MeanSquaredError.elementwise

    def wrong(self, xp, y_pred, y_true):
        value, grad = real(self, xp, y_pred, y_true)
        return value, 1.01 * grad

    monkeypatch.setattr(losses.MeanSquaredError, "elementwise", wrong)
    status, out, _ = _run(["gradcheck", "--model", path, "--quiet"], capsys)
    assert status == 1
    verdict = out.splitlines()[-1]
    assert verdict.startswith("FAILED: ") and "2.kernel" in verdict, verdict
    assert "FAILED (" in next(line for line in out.splitlines() if line.startswith("2.bias"))


def test_input_shape_for_a_model_whose_first_layer_does_not_tell_it(tmp_path, capsys):
    path = _tiny_model(tmp_path / "conv.safetensors",
                       first=[layers.Conv2D(1, 2, 3, activation="tanh"), layers.Flatten(),
                              layers.Dense(2 * 4 * 4, 3)])
    status, _, err = _run(["gradcheck", "--model", path], capsys)
    assert status == 2
    assert err.startswith("portanet gradcheck: error: cannot tell the input shape of a model "
                          "that starts with Conv2D; pass one sample's shape, e.g. "
                          "--input-shape 1,28,28"), err
    status, out, err = _run(["gradcheck", "--model", path, "--input-shape", "1,6,6",
                             "--max-checks", "8", "--quiet"], capsys)
    assert status == 0, out + err
    assert "0.kernel  (2, 1, 3, 3)  8/18*" in out


@pytest.mark.parametrize("argv, message", [
    (["--model", "nonsense"], "--model 'nonsense' is neither one of ['mlp', 'cnn'] nor a saved "
                              "model's file"),
    (["--model", "mlp", "--backend", "nonsense"], "unknown backend 'nonsense'"),
    (["--model", "mlp", "--input-shape", "10"], "Dense expected input with 784 features"),
])
def test_user_errors_are_one_line_and_status_2(argv, message, capsys):
    status, out, err = _run(["gradcheck", *argv], capsys)
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("portanet gradcheck: error: ") and message in err, err


def test_a_saved_model_without_a_loss_is_a_user_error(tmp_path, capsys):
    path = tmp_path / "no-loss.safetensors"
    with pn.use_backend("numpy"):
        pn.Sequential([layers.Dense(2, 2)], seed=0).save(path)
    status, _, err = _run(["gradcheck", "--model", str(path)], capsys)
    assert status == 2 and "holds a model without a loss" in err and "compile(loss=" in err


@pytest.mark.parametrize("option, value, message", [
    ("--input-shape", "1,x", "expected one sample's shape as comma-separated positive ints"),
    ("--input-shape", "0,3", "received '0,3'"),
    ("--max-checks", "0", "must be at least 1"),
    ("--batch-size", "-2", "must be at least 1"),
])
def test_bad_option_values_are_refused_by_the_parser(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["gradcheck", "--model", "mlp", option, value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["gradcheck", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: portanet gradcheck")
    for option in ("--model", "--backend", "--device", "--batch-size", "--max-checks", "--seed",
                   "--input-shape", "--traceback"):
        assert option in text, option
    assert "``" not in text and ":func:" not in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "gradcheck (a model's gradients against finite differences)" in \
        " ".join(capsys.readouterr().out.split())
