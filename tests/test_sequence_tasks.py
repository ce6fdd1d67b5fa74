"""The sequence jobs of ``portanet train``: each default task learns (numpy, small enough for
CI), the CLI prints its scores and saves a model that ``portanet generate`` writes text with."""

from __future__ import annotations

import math

import pytest

import portanet as pn
from portanet import sequence_tasks as st
from portanet.cli import main


def train(kind, name, epochs, **task_args):
    task = st.load_sequence_task(name, seed=0, **task_args)
    steps = math.ceil(0.9 * len(task.x) / 64)
    optimizer = st.default_optimizer(st.LEARNING_RATES[name], epochs, steps)
    model = st.build_sequence_model(kind, task, seed=0, optimizer=optimizer)
    model.fit(task.x, task.y, epochs=epochs, batch_size=64, validation_split=0.1, verbose=0,
              seed=0)
    return task, model


def test_gru_learns_which_pattern_is_in_a_padded_sequence():
    with pn.use_backend("numpy"):
        task, model = train("gru", "patterns", 3)
        assert task.masked and model.layers[0].mask_zero
        assert st.token_accuracy(model, task.x_test, task.y_test) > 0.95  # chance: 1/3


def test_transformer_learns_to_reverse():
    with pn.use_backend("numpy"):
        task, model = train("transformer", "reverse", 6)
        assert st.token_accuracy(model, task.x_test, task.y_test) > 0.95  # chance: 1/9


def test_lstm_language_model_beats_the_character_frequencies():
    import numpy as np

    with pn.use_backend("numpy"):
        task, model = train("lstm", "text", 3, max_chars=60_000)
        counts = np.bincount(task.y.reshape(-1), minlength=task.num_classes) + 1.0
        p = counts / counts.sum()
        unigram = float(-np.mean(np.log(p[task.y_test.reshape(-1)])))  # ~3.2 nats
        loss = model.evaluate(task.x_test, task.y_test)["loss"]
        assert loss < unigram - 0.3, (loss, unigram)


def test_cli_trains_a_sequence_model_and_generates(tmp_path, capsys):
    out = tmp_path / "gru.safetensors"
    assert main(["train", "--model", "gru", "--epochs", "2", "--quiet",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed and out.exists()
    assert pn.load(out).layers[1].__class__.__name__ == "GRU"

    text_model = tmp_path / "lstm.safetensors"
    assert main(["train", "--model", "lstm", "--epochs", "1", "--hidden", "32", "--quiet",
                 "--output", str(text_model)]) == 0
    assert "next-character accuracy:" in capsys.readouterr().out
    assert main(["generate", str(text_model), "--prompt", "The ", "--length", "40"]) == 0
    written = capsys.readouterr().out.rstrip("\n")
    assert written.startswith("The ") and len(written) == 44
    assert main(["generate", str(text_model), "--length", "40"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == written  # the same seed, the same text


@pytest.mark.parametrize("argv, message", [
    (["--model", "gru", "--dataset", "spiral"], "trains on a sequence task"),
    (["--model", "mlp", "--dataset", "reverse"], "is a sequence task"),
])
def test_cli_refuses_mismatched_model_and_task(argv, message, capsys):
    assert main(["train", *argv, "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_generate_without_a_tokenizer_says_so(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing.safetensors")]) == 2
    assert "no tokenizer at" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["generate", str(tmp_path / "m.safetensors"), "--tokenizer", str(bad)]) == 2
    assert "expected a JSON object with 'tokenizer' and 'window', received a list" in \
        capsys.readouterr().err
