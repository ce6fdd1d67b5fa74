"""Sequence data: generated tasks, padding helpers, the character tokenizer, corpus, generation.

The references are independent of the code under test: answers recomputed from x by plain
Python loops (sums, reversals, substring counts), hand-written expected arrays for padding,
the sine recurrence s(t+1) + s(t-1) = 2 cos(w) s(t), closed-form baselines checked on large
samples, PyTorch's softmax for the sampling distribution, and pydoc_data/this read directly.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet.data.sequences import (
    ADDING_BASELINE_MSE,
    draw_patterns,
    lengths_from_mask,
    make_adding_problem,
    make_copy_task,
    make_pattern_classification,
    make_reverse_task,
    make_sign_of_sum,
    make_sine_forecast,
    mask_from_lengths,
    pad_sequences,
)
from portanet.data.text import (
    TEXT_CORPORA,
    CharTokenizer,
    char_lm_windows,
    generate_text,
    load_text_corpus,
    sample_next,
)


def _real_lengths(ids: np.ndarray) -> list[int]:
    """Per row, the number of leading non-zero ids, checking that only zeros follow them."""
    out = []
    for row in ids.tolist():
        n = next((i for i, v in enumerate(row) if v == 0), len(row))
        assert all(v == 0 for v in row[n:]), f"padding must be trailing zeros: {row}"
        out.append(n)
    return out


# ---------------------------------------------------------------------------------------------
# Reproducibility, shapes and dtypes of every task
# ---------------------------------------------------------------------------------------------
TASKS = {
    "adding": lambda seed: make_adding_problem(5, 6, seed=seed),
    "copy": lambda seed: make_copy_task(5, 6, 5, delay=2, seed=seed),
    "reverse": lambda seed: make_reverse_task(5, 6, 5, min_len=2, seed=seed),
    "sine": lambda seed: make_sine_forecast(5, 6, horizon=2, seed=seed),
    "pattern": lambda seed: make_pattern_classification(6, 8, min_len=4, seed=seed),
    "sign": lambda seed: make_sign_of_sum(5, 6, min_len=2, seed=seed),
}
SHAPES = {
    "adding": [((5, 6, 2), "float32"), ((5, 1), "float32")],
    "copy": [((5, 6), "int64"), ((5, 6), "int64")],
    "reverse": [((5, 6), "int64"), ((5, 6), "int64")],
    "sine": [((5, 6, 1), "float32"), ((5, 2), "float32")],
    "pattern": [((6, 8), "int64"), ((6,), "int64"), ((6,), "int64")],
    "sign": [((5, 6, 1), "float32"), ((5,), "int64"), ((5,), "int64")],
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_tasks_are_reproducible_numpy_arrays(task):
    first, again, other = TASKS[task](0), TASKS[task](0), TASKS[task](1)
    assert [(a.shape, a.dtype.name) for a in first] == SHAPES[task]
    assert all(isinstance(a, np.ndarray) for a in first)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


# ---------------------------------------------------------------------------------------------
# The adding problem
# ---------------------------------------------------------------------------------------------
def test_adding_problem_answer_is_the_sum_of_the_marked_values():
    x, y = make_adding_problem(50, 7, seed=3)
    values, markers = x[..., 0].tolist(), x[..., 1].tolist()
    for n in range(50):
        marked = [t for t in range(7) if markers[n][t] == 1.0]
        assert len(marked) == 2 and marked[0] < 7 // 2 <= marked[1]  # one in each half
        assert all(m in (0.0, 1.0) for m in markers[n])
        assert all(0.0 <= v < 1.0 for v in values[n])
        expected = np.float32(values[n][marked[0]] + values[n][marked[1]])
        assert y[n, 0] == expected


def test_adding_problem_baseline_mse_is_one_sixth():
    """Var(u1 + u2) = 2/12 for independent U[0, 1): what predicting the mean 1.0 scores."""
    assert abs(ADDING_BASELINE_MSE - 1 / 6) < 1e-15
    _, y = make_adding_problem(40000, 4, seed=0)
    mse = float(np.mean((y.astype(np.float64) - 1.0) ** 2))
    # standard error of the MSE estimate: sqrt(Var((y-1)^2) / N) ~ 0.0008
    assert mse == pytest.approx(1 / 6, abs=0.004)
    assert float(np.mean(y)) == pytest.approx(1.0, abs=0.01)


def test_adding_problem_shortest_sequence():
    x, _ = make_adding_problem(3, 2, seed=0)
    np.testing.assert_array_equal(x[..., 1], np.ones((3, 2), dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Copy and reverse
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 1, 3])
def test_copy_task_is_the_input_delayed(delay):
    x, y = make_copy_task(20, 6, vocab_size=4, delay=delay, seed=2)
    xs, ys = x.tolist(), y.tolist()
    for n in range(20):
        assert all(1 <= v <= 3 for v in xs[n])  # symbols only; 0 is padding
        for t in range(6):
            assert ys[n][t] == (xs[n][t - delay] if t >= delay else 0)


def test_copy_task_variable_lengths_pad_with_zero():
    x, y = make_copy_task(40, 6, vocab_size=5, min_len=2, seed=0)
    lengths = _real_lengths(x)
    assert min(lengths) >= 2 and max(lengths) <= 6 and len(set(lengths)) > 1
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(lengths_from_mask(x != 0), lengths)


@pytest.mark.parametrize("min_len", [None, 1])
def test_reverse_task_reverses_the_real_part(min_len):
    x, y = make_reverse_task(30, 5, vocab_size=6, min_len=min_len, seed=4)
    lengths = _real_lengths(x)
    for n, length in enumerate(lengths):
        real = x[n, :length].tolist()
        assert y[n].tolist() == real[::-1] + [0] * (5 - length)
    if min_len is None:
        assert set(lengths) == {5}
        np.testing.assert_array_equal(y, x[:, ::-1])
    else:
        assert len(set(lengths)) > 1


def test_copy_and_reverse_bad_input():
    with pytest.raises(ValueError, match="delay must be < seq_len.*delay=4"):
        make_copy_task(2, 4, delay=4)
    with pytest.raises(ValueError, match="delayed copy needs full-length.*min_len=2"):
        make_copy_task(2, 4, delay=1, min_len=2)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2, received 1"):
        make_reverse_task(2, 4, vocab_size=1)
    with pytest.raises(ValueError, match="min_len must be <= seq_len"):
        make_reverse_task(2, 4, min_len=5)
    with pytest.raises(ValueError, match="n_samples must be an int >= 1, received 0"):
        make_copy_task(0)
    with pytest.raises(ValueError, match="seq_len must be an int >= 1, received 2.5"):
        make_reverse_task(2, 2.5)


# ---------------------------------------------------------------------------------------------
# Sine forecasting
# ---------------------------------------------------------------------------------------------
def test_sine_forecast_targets_continue_the_clean_wave():
    """A sampled sine obeys s(t+1) + s(t-1) = 2 cos(w) s(t); fit c = 2 cos(w) per row."""
    x, y = make_sine_forecast(20, 10, horizon=3, noise=0.0, freq_range=(0.05, 0.2), seed=1)
    s = np.concatenate([x[:, :, 0], y], axis=1).astype(np.float64)
    for row in s:
        mid, around = row[1:-1], row[2:] + row[:-2]
        c = float(mid @ around / (mid @ mid))
        np.testing.assert_allclose(around, c * mid, atol=1e-5)
        freq = math.acos(c / 2) / (2 * math.pi)
        assert 0.05 - 1e-4 <= freq <= 0.2 + 1e-4
        assert np.all(np.abs(row) <= 1.0)


def test_sine_forecast_noise_is_on_the_inputs_only():
    clean_x, clean_y = make_sine_forecast(2000, 5, noise=0.0, seed=7)
    noisy_x, noisy_y = make_sine_forecast(2000, 5, noise=0.3, seed=7)
    np.testing.assert_array_equal(clean_y, noisy_y)
    assert float(np.std(noisy_x - clean_x)) == pytest.approx(0.3, rel=0.03)


def test_sine_forecast_baselines():
    """Zero predictor: E[sin^2] = 1/2. Persistence at step k: 1 - E[cos(2 pi f k)] + noise^2."""
    lo, hi, noise = 0.025, 0.1, 0.05
    x, y = make_sine_forecast(40000, 4, horizon=2, noise=noise, freq_range=(lo, hi), seed=0)
    y = y.astype(np.float64)
    assert float(np.mean(y ** 2)) == pytest.approx(0.5, abs=0.01)
    for k in (1, 2):
        mean_cos = (math.sin(2 * math.pi * hi * k) - math.sin(2 * math.pi * lo * k)) / (
            2 * math.pi * k * (hi - lo))
        expected = 1 - mean_cos + noise ** 2
        got = float(np.mean((y[:, k - 1] - x[:, -1, 0]) ** 2))
        assert got == pytest.approx(expected, rel=0.05), k


def test_sine_forecast_bad_input():
    with pytest.raises(ValueError, match="Nyquist.*0.6"):
        make_sine_forecast(2, 4, freq_range=(0.1, 0.6))
    with pytest.raises(ValueError, match="freq_range must be two numbers"):
        make_sine_forecast(2, 4, freq_range=0.1)
    with pytest.raises(ValueError, match="noise must be a non-negative number, received -1"):
        make_sine_forecast(2, 4, noise=-1)
    with pytest.raises(ValueError, match="horizon must be an int >= 1, received 0"):
        make_sine_forecast(2, 4, horizon=0)


# ---------------------------------------------------------------------------------------------
# Sequence classification
# ---------------------------------------------------------------------------------------------
def _count(row: list[int], pattern: list[int]) -> int:
    p = len(pattern)
    return sum(row[i:i + p] == pattern for i in range(len(row) - p + 1))


@pytest.mark.parametrize("min_len", [None, 3])
def test_pattern_classification_exactly_one_pattern_names_the_class(min_len):
    patterns = [[1, 2, 3], [3, 2, 1], [2, 2, 4]]
    x, y, lengths = make_pattern_classification(60, 7, vocab_size=5, min_len=min_len,
                                                patterns=patterns, seed=5)
    assert _real_lengths(x) == lengths.tolist()
    if min_len is None:
        assert set(lengths.tolist()) == {7}
    else:
        assert min(lengths) >= 3 and len(set(lengths.tolist())) > 1
    for n in range(60):
        real = x[n, :lengths[n]].tolist()
        counts = [_count(real, p) for p in patterns]
        expected = [1 if k == y[n] else 0 for k in range(3)]
        assert counts == expected, (real, y[n])
    assert np.bincount(y, minlength=3).tolist() == [20, 20, 20]  # balanced


def test_pattern_classification_default_patterns_come_from_draw_patterns():
    x, y, _ = make_pattern_classification(12, 9, n_patterns=4, pattern_len=2,
                                          vocab_size=6, seed=3)
    patterns = draw_patterns(4, 2, 6, seed=3).tolist()
    assert len({tuple(p) for p in patterns}) == 4
    assert all(1 <= s <= 5 for p in patterns for s in p)
    for n in range(12):
        counts = [_count(x[n].tolist(), p) for p in patterns]
        assert counts[y[n]] == 1 and sum(counts) == 1


def test_pattern_classification_bad_input():
    with pytest.raises(ValueError, match="only 4 distinct patterns of length 2"):
        draw_patterns(5, 2, 3)
    with pytest.raises(ValueError, match="must be distinct rows"):
        make_pattern_classification(4, 5, patterns=[[1, 2], [1, 2]])
    with pytest.raises(ValueError, match=r"1..vocab_size-1 = 1..3.*received values 0..2"):
        make_pattern_classification(4, 5, vocab_size=4, patterns=[[0, 2], [1, 2]])
    with pytest.raises(ValueError, match=r"shape \(K, P\) with K >= 2.*shape \(3,\)"):
        make_pattern_classification(4, 5, patterns=[1, 2, 3])
    with pytest.raises(ValueError, match="patterns \\(6 steps\\) must fit in seq_len=5"):
        make_pattern_classification(4, 5, pattern_len=6)
    with pytest.raises(ValueError, match="min_len must be an int >= 3, received 2"):
        make_pattern_classification(4, 5, min_len=2)
    # every symbol is a pattern: no background can be free of stray ones
    with pytest.raises(ValueError, match="could not draw backgrounds.*raise vocab_size"):
        make_pattern_classification(2, 3, vocab_size=3, patterns=[[1], [2]])


@pytest.mark.parametrize("min_len", [None, 1])
def test_sign_of_sum_answer(min_len):
    x, y, lengths = make_sign_of_sum(40, 6, min_len=min_len, seed=8)
    for n in range(40):
        steps = x[n, :, 0].tolist()
        length = int(lengths[n])
        assert all(v == 0.0 for v in steps[length:])  # post padding with zeros
        assert y[n] == (1 if math.fsum(steps[:length]) > 0 else 0)
    if min_len is None:
        assert set(lengths.tolist()) == {6}
    else:
        assert len(set(lengths.tolist())) > 1
    assert 0 < y.sum() < 40


# ---------------------------------------------------------------------------------------------
# Padding helpers
# ---------------------------------------------------------------------------------------------
SEQS = [[1, 2, 3, 4], [5, 6], [], [7]]


@pytest.mark.parametrize(("padding", "truncating", "expected"), [
    ("post", "post", [[1, 2, 3], [5, 6, 0], [0, 0, 0], [7, 0, 0]]),
    ("post", "pre", [[2, 3, 4], [5, 6, 0], [0, 0, 0], [7, 0, 0]]),
    ("pre", "post", [[1, 2, 3], [0, 5, 6], [0, 0, 0], [0, 0, 7]]),
    ("pre", "pre", [[2, 3, 4], [0, 5, 6], [0, 0, 0], [0, 0, 7]]),
])
def test_pad_sequences_by_hand(padding, truncating, expected):
    x, lengths = pad_sequences(SEQS, maxlen=3, padding=padding, truncating=truncating)
    assert x.tolist() == expected and x.dtype == np.int64
    assert lengths.tolist() == [3, 2, 0, 1] and lengths.dtype == np.int64


def test_pad_sequences_longest_value_and_dtype():
    x, lengths = pad_sequences(SEQS, value=-1)
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, -1, -1], [-1, -1, -1, -1], [7, -1, -1, -1]]
    assert lengths.tolist() == [4, 2, 0, 1]
    floats, _ = pad_sequences([[0.5], [1.0, 2.0]])
    assert floats.dtype == np.float32 and floats.tolist() == [[0.5, 0.0], [1.0, 2.0]]
    as64, _ = pad_sequences([[1], [2, 3]], dtype="float64", value=0.5)
    assert as64.dtype == np.float64 and as64.tolist() == [[1.0, 0.5], [2.0, 3.0]]
    empty, lengths = pad_sequences([])
    assert empty.shape == (0, 0) and lengths.shape == (0,)


def test_pad_sequences_keeps_the_feature_axes():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.full((1, 2), 9.0, dtype=np.float32)
    x, lengths = pad_sequences([a, b, np.zeros((0, 2))], padding="pre")
    assert x.shape == (3, 3, 2) and lengths.tolist() == [3, 1, 0]
    np.testing.assert_array_equal(x[0], a)
    np.testing.assert_array_equal(x[1], [[0, 0], [0, 0], [9, 9]])
    np.testing.assert_array_equal(x[2], np.zeros((3, 2)))


def test_pad_sequences_takes_backend_arrays(backend):
    seqs = [backend.asarray([1, 2, 3], "int64"), backend.asarray([4], "int64")]
    x, lengths = pad_sequences(seqs)
    assert isinstance(x, np.ndarray) and x.tolist() == [[1, 2, 3], [4, 0, 0]]
    mask = pn.ops.sequence_mask(backend.asarray(lengths, "int64"), x.shape[1])
    assert_on_backend(mask, backend, "bool")
    np.testing.assert_array_equal(pn.to_numpy(mask), mask_from_lengths(lengths))


def test_pad_sequences_bad_input():
    with pytest.raises(ValueError, match="padding must be 'post' or 'pre', received 'middle'"):
        pad_sequences(SEQS, padding="middle")
    with pytest.raises(ValueError, match="truncating must be 'post' or 'pre'"):
        pad_sequences(SEQS, truncating="end")
    with pytest.raises(ValueError, match=r"same per-step shape.*\(2, 3\), \(2, 2\)"):
        pad_sequences([np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(TypeError, match="encode text to ids first"):
        pad_sequences(["abc", "de"])
    with pytest.raises(TypeError, match="list of sequences, received str"):
        pad_sequences("abc")
    with pytest.raises(ValueError, match="sequence 0 is a scalar"):
        pad_sequences([1, 2, 3])
    with pytest.raises(ValueError, match="value=0.5 is not representable in dtype int64"):
        pad_sequences(SEQS, value=0.5)
    with pytest.raises(ValueError, match="maxlen must be an int >= 1, received 0"):
        pad_sequences(SEQS, maxlen=0)
    with pytest.raises(TypeError, match="value must be a number"):
        pad_sequences(SEQS, value="x")


def test_masks_and_lengths_by_hand():
    post = mask_from_lengths([2, 0, 3], maxlen=4)
    assert post.dtype == np.bool_
    assert post.astype(int).tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0]]
    pre = mask_from_lengths(np.array([2, 0, 3]), maxlen=4, padding="pre")
    assert pre.astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 1, 1]]
    assert mask_from_lengths([1, 3]).shape == (2, 3)  # maxlen defaults to the longest
    assert lengths_from_mask(post).tolist() == [2, 0, 3]
    assert lengths_from_mask(pre).tolist() == [2, 0, 3]
    # the mask pad_sequences' padding implies marks exactly the real steps
    for padding in ("post", "pre"):
        x, lengths = pad_sequences([[3, 4, 5], [6]], padding=padding)
        np.testing.assert_array_equal(mask_from_lengths(lengths, 3, padding=padding), x != 0)


def test_masks_agree_with_the_device_mask(backend):
    lengths = np.array([0, 2, 4, 1])
    device_mask = pn.ops.sequence_mask(backend.asarray(lengths, "int64"), 4)
    np.testing.assert_array_equal(mask_from_lengths(lengths, 4), pn.to_numpy(device_mask))
    assert lengths_from_mask(device_mask).tolist() == [0, 2, 4, 1]  # a backend array, read once


def test_mask_helpers_bad_input():
    with pytest.raises(ValueError, match=r"lengths must be in 0..maxlen=2, received values 0..3"):
        mask_from_lengths([0, 3], maxlen=2)
    with pytest.raises(ValueError, match="lengths must be integers of shape \\(N,\\)"):
        mask_from_lengths([[1, 2]])
    with pytest.raises(ValueError, match="lengths must be integers.*float64"):
        mask_from_lengths([1.5])
    with pytest.raises(ValueError, match="lengths must be in 0..maxlen=2.*-1..1"):
        mask_from_lengths([-1, 1], maxlen=2)
    with pytest.raises(ValueError, match="mask must be boolean of shape \\(N, T\\).*int64"):
        lengths_from_mask(np.ones((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="mask must be boolean.*shape \\(3,\\)"):
        lengths_from_mask(np.ones(3, dtype=bool))


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------
def test_pydoc_topics_corpus_is_the_standard_library_help():
    from pydoc_data.topics import topics  # the source, read directly

    text = load_text_corpus("pydoc_topics")
    assert isinstance(text, str) and len(text) > 100_000
    assert topics["if"].strip("\n") in text and topics["while"].strip("\n") in text
    assert text == load_text_corpus()  # the default, and deterministic
    assert load_text_corpus(max_chars=1000) == text[:1000]
    assert TEXT_CORPORA == ("pydoc_topics", "zen")


def test_zen_corpus_is_decoded_and_silent(capsys):
    text = load_text_corpus("zen")
    assert text.startswith("The Zen of Python, by Tim Peters")
    assert "Beautiful is better than ugly." in text and "Namespaces are one" in text
    assert capsys.readouterr().out == ""  # importing `this` prints; loading must not


def test_missing_pydoc_data_names_the_fallback(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # import now fails
    with pytest.raises(ImportError, match="lacks.*load_text_corpus\\('zen'\\)"):
        load_text_corpus("pydoc_topics")
    assert load_text_corpus("zen").startswith("The Zen")


def test_corpus_bad_input():
    with pytest.raises(ValueError, match="unknown text corpus 'shakespeare'.*pydoc_topics, zen"):
        load_text_corpus("shakespeare")
    with pytest.raises(ValueError, match="max_chars must be a positive int or None, received 0"):
        load_text_corpus("zen", max_chars=0)


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------
def test_tokenizer_vocabulary_is_sorted_after_two_reserved_ids():
    tok = CharTokenizer().fit("banana band")
    assert tok.vocabulary == [" ", "a", "b", "d", "n"]
    assert tok.vocab_size == 7 == len(tok)
    assert (tok.padding_id, tok.unknown_id) == (0, 1)
    assert tok.encode("ban d").tolist() == [4, 3, 6, 2, 5]
    assert tok.encode("").tolist() == [] and tok.encode("").dtype == np.int64
    # the same characters in any order give the same ids
    assert CharTokenizer().fit("dnab a").vocabulary == tok.vocabulary


def test_tokenizer_round_trip_on_the_corpus():
    text = load_text_corpus("pydoc_topics", max_chars=50_000)
    tok = CharTokenizer().fit(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert ids.min() >= 2 and ids.max() == tok.vocab_size - 1
    assert tok.decode(ids) == text
    expected = [tok.vocabulary.index(c) + 2 for c in text[:200]]  # by list lookup
    assert ids[:200].tolist() == expected


def test_tokenizer_unknown_and_padding():
    tok = CharTokenizer(unknown="?").fit("abc")
    ids = tok.encode("abz\u00e9c")
    assert ids.tolist() == [2, 3, 1, 1, 4]
    assert tok.decode(ids) == "ab??c"
    assert tok.decode([0, 2, 0, 0]) == "a"  # padding decodes to nothing
    assert CharTokenizer(unknown="").fit("ab").decode([2, 1, 3]) == "ab"
    assert tok.decode(np.array([], dtype=np.int64)) == "" and tok.decode([]) == ""


def test_tokenizer_config_is_json_and_round_trips():
    tok = CharTokenizer(unknown="#").fit("h\u00e9llo w\u00f6rld\n")
    config = json.loads(json.dumps(tok.get_config()))
    again = CharTokenizer.from_config(config)
    assert again.vocabulary == tok.vocabulary and again.unknown == "#"
    text = "w\u00f6rld hello!"
    np.testing.assert_array_equal(again.encode(text), tok.encode(text))
    # an explicit vocabulary keeps its order
    explicit = CharTokenizer(chars="cba")
    assert explicit.encode("abcd").tolist() == [4, 3, 2, 1]


def test_tokenizer_decodes_backend_arrays(backend):
    tok = CharTokenizer().fit("xyz")
    ids = backend.asarray(tok.encode("zyx"), "int64")
    assert tok.decode(ids) == "zyx"


def test_tokenizer_bad_input():
    with pytest.raises(RuntimeError, match="no vocabulary yet: call fit\\(text\\) first"):
        CharTokenizer().encode("a")
    with pytest.raises(RuntimeError, match="call fit"):
        _ = CharTokenizer().vocab_size
    assert repr(CharTokenizer()) == "CharTokenizer(vocab_size=unfitted)"
    tok = CharTokenizer().fit("ab")
    with pytest.raises(ValueError, match="empty text"):
        CharTokenizer().fit("")
    with pytest.raises(TypeError, match="fit expects a str, received bytes.*decode bytes"):
        CharTokenizer().fit(b"ab")
    with pytest.raises(TypeError, match="encode expects a str, received list"):
        tok.encode(["a"])
    with pytest.raises(ValueError, match=r"ids must be in 0..vocab_size-1 = 0..3.*0..4"):
        tok.decode([0, 4])
    with pytest.raises(ValueError, match=r"one sequence of ids.*shape \(1, 2\).*row by row"):
        tok.decode([[2, 3]])
    with pytest.raises(TypeError, match="integer ids, received dtype float64"):
        tok.decode([2.0])
    with pytest.raises(TypeError, match="received a str"):
        tok.decode("ab")
    with pytest.raises(ValueError, match="must not repeat.*'a'"):
        CharTokenizer(chars="aba")
    with pytest.raises(ValueError, match="single characters.*'ab'"):
        CharTokenizer(chars=["ab", "c"])
    with pytest.raises(ValueError, match="keys 'chars' and 'unknown'.*'vocab'"):
        CharTokenizer.from_config({"vocab": ["a"]})
    with pytest.raises(TypeError, match="unknown must be a str"):
        CharTokenizer(unknown=None)


# ---------------------------------------------------------------------------------------------
# Char-LM windows
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("seq_len", "step"), [(3, None), (3, 1), (2, 3), (10, None)])
def test_char_lm_windows_alignment(seq_len, step):
    ids = list(range(100, 111))  # 11 ids
    x, y = char_lm_windows(np.array(ids), seq_len, step)
    stride = seq_len if step is None else step
    count = (len(ids) - 1 - seq_len) // stride + 1
    assert x.shape == y.shape == (count, seq_len) and x.dtype == y.dtype == np.int64
    for n in range(count):
        s = n * stride
        assert x[n].tolist() == ids[s:s + seq_len]
        assert y[n].tolist() == ids[s + 1:s + seq_len + 1]  # the next id at every step
    x[0, 0] = -5  # the windows are copies, not views of the input
    assert char_lm_windows(ids, seq_len, step)[0][0, 0] == 100


def test_char_lm_windows_bad_input():
    with pytest.raises(ValueError, match="needs at least 5 ids.*received 4"):
        char_lm_windows([1, 2, 3, 4], 4)
    with pytest.raises(ValueError, match="seq_len must be a positive int, received 0"):
        char_lm_windows([1, 2, 3], 0)
    with pytest.raises(ValueError, match="step must be a positive int or None, received 0"):
        char_lm_windows([1, 2, 3], 1, step=0)
    with pytest.raises(ValueError, match=r"shape \(L,\), received shape \(2, 2\)"):
        char_lm_windows([[1, 2], [3, 4]], 1)
    with pytest.raises(TypeError, match="integer ids, received dtype float64"):
        char_lm_windows([1.0, 2.0, 3.0], 1)


# ---------------------------------------------------------------------------------------------
# Sampling and generation
# ---------------------------------------------------------------------------------------------
def test_sample_next_follows_softmax_with_temperature():
    torch = pytest.importorskip("torch")
    logits = np.array([1.0, -0.5, 2.0, 0.0, -np.inf])
    rng = np.random.default_rng(0)
    draws = 20000
    for temperature in (0.5, 1.0, 2.0):
        expected = torch.softmax(torch.tensor(logits, dtype=torch.float64) / temperature,
                                 dim=0).numpy()
        counts = np.bincount([sample_next(logits, temperature, rng) for _ in range(draws)],
                             minlength=5)
        assert counts[4] == 0  # probability exactly 0 at -inf
        sigma = np.sqrt(expected * (1 - expected) / draws)
        np.testing.assert_array_less(np.abs(counts / draws - expected), 5 * sigma + 1e-12)


def test_sample_next_greedy_reproducible_and_stable():
    assert sample_next([0.1, 5.0, 2.0], temperature=0) == 1
    assert sample_next(np.array([0.0, 1000.0, 999.0]), temperature=0.001, rng=0) == 1
    big = np.array([1000.0, 1000.0, -1000.0])  # exp would overflow without the max shift
    assert sample_next(big, 1.0, rng=1) in (0, 1)
    seq = [sample_next([0.0, 0.0, 0.0, 0.0], 1.0, rng) for rng in (7, 7)]
    assert seq[0] == seq[1]
    gen_a, gen_b = np.random.default_rng(3), np.random.default_rng(3)
    a = [sample_next([0.0, 1.0, 0.5], 1.0, gen_a) for _ in range(20)]
    assert a == [sample_next([0.0, 1.0, 0.5], 1.0, gen_b) for _ in range(20)]
    assert isinstance(sample_next(np.float32([0.0, 1.0]), 1.0), int)


def test_sample_next_bad_input():
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0.*-1"):
        sample_next([0.0, 1.0], temperature=-1)
    with pytest.raises(ValueError, match="received NaN"):
        sample_next([0.0, float("nan")])
    with pytest.raises(ValueError, match="only -inf"):
        sample_next([-np.inf, -np.inf])
    with pytest.raises(ValueError, match=r"one non-empty row.*shape \(1, 2\)"):
        sample_next([[0.0, 1.0]])
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        sample_next([0.0, 1.0], rng="seed")


class CycleModel:
    """A fake language model: after character id i it favours id i + 1 (wrapping over the
    characters), with logits -> (1, T, V); it records every input it receives."""

    def __init__(self, vocab_size, favour_reserved=False, output="sequence"):
        self.vocab_size, self.favour_reserved, self.output = vocab_size, favour_reserved, output
        self.inputs = []

    def predict(self, x):
        self.inputs.append(x)
        ids = pn.to_numpy(x)
        chars = self.vocab_size - 2
        nxt = (ids - 2 + 1) % chars + 2
        logits = np.zeros((*ids.shape, self.vocab_size))
        np.put_along_axis(logits, nxt[..., None], 4.0, axis=-1)
        if self.favour_reserved:
            logits[..., :2] = 50.0  # padding and unknown look best, but are not characters
        out = logits if self.output == "sequence" else logits[:, -1, :]
        return pn.asarray(out, dtype="float64")


@pytest.mark.parametrize("output", ["sequence", "last"])
def test_generate_text_greedy_follows_the_model(output):
    tok = CharTokenizer().fit("abcd")
    model = CycleModel(tok.vocab_size, output=output)
    assert generate_text(model, tok, "ab", 6, temperature=0) == "abcdabcd"
    assert [tuple(x.shape) for x in model.inputs] == [(1, n) for n in range(2, 8)]
    assert pn.to_numpy(model.inputs[-1]).tolist() == [tok.encode("abcdabc").tolist()]


def test_generate_text_window_and_reserved_ids():
    tok = CharTokenizer().fit("abc")
    model = CycleModel(tok.vocab_size, favour_reserved=True)
    text = generate_text(model, tok, "abcab", 4, temperature=0, window=3)
    assert text == "abcabcabc"  # padding/unknown never drawn, despite their logits
    assert {tuple(x.shape) for x in model.inputs} == {(1, 3)}
    assert generate_text(model, tok, "a", 0) == "a"


def test_generate_text_is_reproducible_with_seed(backend):
    tok = CharTokenizer().fit("abcdef")
    model = CycleModel(tok.vocab_size)
    first = generate_text(model, tok, "a", 12, temperature=1.5, seed=4)
    assert first == generate_text(model, tok, "a", 12, temperature=1.5, seed=4)
    assert len(first) == 13 and set(first) <= set("abcdef")
    # a different seed gives another text (each step has a 1/5+ chance of leaving the cycle)
    others = {generate_text(model, tok, "a", 12, temperature=1.5, seed=s) for s in range(5)}
    assert len(others) > 1
    # the ids went to the active backend and device as int64
    assert_on_backend(model.inputs[0], backend, "int64")


def test_generate_text_bad_input():
    tok = CharTokenizer().fit("ab")
    model = CycleModel(tok.vocab_size)
    with pytest.raises(ValueError, match="returns 5 logits per step but the tokenizer has "
                                         "vocab_size=4"):
        generate_text(CycleModel(5), tok, "a", 2)
    with pytest.raises(TypeError, match="needs a model with a predict"):
        generate_text(object(), tok, "a", 2)
    with pytest.raises(ValueError, match="prompt must be a non-empty str"):
        generate_text(model, tok, "", 2)
    with pytest.raises(ValueError, match="length must be an int >= 0, received -1"):
        generate_text(model, tok, "a", -1)
    with pytest.raises(ValueError, match="window must be a positive int or None"):
        generate_text(model, tok, "a", 2, window=0)
    with pytest.raises(TypeError, match="tokenizer must be a CharTokenizer"):
        generate_text(model, "ab", "a", 2)

    class Flat:
        def predict(self, x):
            return np.zeros((4,))

    with pytest.raises(ValueError, match=r"return logits \(1, 1, V\) or \(1, V\).*\(4,\)"):
        generate_text(Flat(), tok, "a", 1)
