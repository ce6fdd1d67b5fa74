"""Sequence tasks with a known answer, and the helpers that pad sequences and describe padding.

Every task is generated (no download), fully determined by its ``seed``, and returned as host
NumPy arrays: float32 inputs, int64 token ids, class labels and lengths. Token tasks reserve id 0
for padding, so their real symbols are 1..vocab_size-1 and ``x != 0`` is their mask (what
``Embedding(mask_zero=True)`` computes). Padding is "post" (real steps first), the convention of
:func:`portanet.ops.sequence_mask`: ``mask[n, t] = t < lengths[n]``.

The tasks (answer / baseline a model must beat):

* :func:`make_adding_problem`: x (N, T, 2), y (N, 1) the sum of the two marked values / MSE
  1/6 predicting 1.
* :func:`make_copy_task`: ids (N, T) -> ids (N, T), ``y[t] = x[t - delay]`` / accuracy
  1/(V-1).
* :func:`make_reverse_task`: ids (N, T) -> the real part reversed / accuracy 1/(V-1).
* :func:`make_sine_forecast`: x (N, T, 1) noisy sine, y (N, horizon) the clean continuation /
  MSE 1/2 predicting 0.
* :func:`make_pattern_classification`: ids (N, T), y (N,) which of K patterns occurs /
  accuracy 1/K.
* :func:`make_sign_of_sum`: x (N, T, 1), y (N,) 1 if the real values sum > 0 / accuracy 1/2.

Examples:
    >>> from portanet.data.sequences import make_adding_problem, pad_sequences
    >>> x, y = make_adding_problem(n_samples=4, seq_len=6, seed=0)
    >>> x.shape, y.shape, x.dtype.name
    ((4, 6, 2), (4, 1), 'float32')
    >>> padded, lengths = pad_sequences([[1, 2, 3], [4]])
    >>> padded.tolist(), lengths.tolist()
    ([[1, 2, 3], [4, 0, 0]], [3, 1])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..devices import to_numpy
from ..random import host_generator
from ._util import is_backend_array

__all__ = [
    "ADDING_BASELINE_MSE",
    "draw_patterns",
    "lengths_from_mask",
    "make_adding_problem",
    "make_copy_task",
    "make_pattern_classification",
    "make_reverse_task",
    "make_sign_of_sum",
    "make_sine_forecast",
    "mask_from_lengths",
    "pad_sequences",
]

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1.0 on the adding problem: Var(u1 + u2) = 2 * 1/12 for u ~ U[0, 1)."""

_PADDINGS = ("post", "pre")


# ---------------------------------------------------------------------------------------------
# Argument checks (what was received, what is expected)
# ---------------------------------------------------------------------------------------------
def _int_at_least(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, received {value!r}.")
    return int(value)


def _check_side(value: Any, what: str) -> str:
    if value not in _PADDINGS:
        raise ValueError(f"{what} must be 'post' or 'pre', received {value!r}.")
    return value


def _min_len(min_len: Any, seq_len: int, minimum: int = 1) -> int:
    """``min_len`` of a variable-length task: None means every sequence has ``seq_len`` steps."""
    if min_len is None:
        return seq_len
    min_len = _int_at_least(min_len, "min_len", minimum)
    if min_len > seq_len:
        raise ValueError(f"min_len must be <= seq_len, received min_len={min_len} and "
                         f"seq_len={seq_len}.")
    return min_len


def _draw_lengths(rng: np.random.Generator, n: int, min_len: int, seq_len: int) -> np.ndarray:
    """Lengths uniform over min_len..seq_len (all seq_len when they are equal)."""
    if min_len == seq_len:
        return np.full(n, seq_len, dtype=np.int64)
    return rng.integers(min_len, seq_len + 1, size=n, dtype=np.int64)


def _post_mask(lengths: np.ndarray, maxlen: int) -> np.ndarray:
    return np.arange(maxlen)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------------------------
# The adding problem
# ---------------------------------------------------------------------------------------------
def make_adding_problem(n_samples: int = 1000, seq_len: int = 50,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The adding problem (Hochreiter & Schmidhuber, 1997): add the two marked numbers.

    Each step carries two features: a value u_t ~ U[0, 1) and a marker m_t in {0, 1}. Exactly two
    markers are 1, one at a uniform position in the first half (t < T // 2) and one in the
    second half, so the model must remember a value over up to T steps:
    y = sum_t u_t m_t.

    Predicting the mean, 1.0, scores MSE = Var(u_1 + u_2) = 1/6 ~ 0.167
    (:data:`ADDING_BASELINE_MSE`): a model is learning only when it goes well below that.

    Args:
        n_samples: N, the number of sequences.
        seq_len: T >= 2, the number of steps.
        seed: the sequences are a function of the seed.

    Returns:
        x (N, T, 2) float32 ([..., 0] the values, [..., 1] the markers) and y (N, 1) float32.

    Examples:
        >>> x, y = make_adding_problem(n_samples=3, seq_len=4, seed=1)
        >>> x[..., 1].sum(axis=1).tolist()
        [2.0, 2.0, 2.0]
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 2)
    rng = host_generator(seed, (10,))
    values = rng.uniform(0.0, 1.0, (n, t)).astype(np.float32)
    first = rng.integers(0, t // 2, size=n)
    second = rng.integers(t // 2, t, size=n)
    markers = np.zeros((n, t), dtype=np.float32)
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    # the sum of the two float32 values, rounded once to float32 (x * m summed gives the same)
    y = values[rows, first].astype(np.float64) + values[rows, second]
    return np.stack([values, markers], axis=-1), y.astype(np.float32)[:, None]


# ---------------------------------------------------------------------------------------------
# Copy and reverse (token ids, 0 = padding)
# ---------------------------------------------------------------------------------------------
def _token_sequences(rng: np.random.Generator, n: int, seq_len: int, vocab_size: int,
                     min_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Random symbols 1..vocab_size-1, zero after each row's length; (ids, lengths)."""
    lengths = _draw_lengths(rng, n, min_len, seq_len)
    ids = rng.integers(1, vocab_size, size=(n, seq_len), dtype=np.int64)
    return np.where(_post_mask(lengths, seq_len), ids, 0), lengths


def make_copy_task(n_samples: int = 1000, seq_len: int = 10, vocab_size: int = 10,
                   delay: int = 0, min_len: int | None = None,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Copy the input, ``delay`` steps late: y[t] = x[t - delay], and y[t] = 0 for t < delay.

    x holds random symbols 1..vocab_size-1; id 0 is padding. With ``delay`` = 0 the answer is
    the input itself (a check that a sequence model wires through); with a delay the model must
    hold the last ``delay`` symbols in its state (a delay line). The first ``delay`` targets
    are 0: "nothing yet". The last ``delay`` input symbols are never asked for.

    A uniform guess of the symbol is right with probability 1/(vocab_size - 1).

    Args:
        n_samples: N.
        seq_len: T, the padded length.
        vocab_size: V >= 2 ids, 0 included (so V - 1 symbols).
        delay: 0 <= delay < T.
        min_len: None for full-length sequences; else lengths uniform in min_len..T, padded
            with 0 after the end (mask: ``x != 0``). Only with delay = 0: a delayed copy of a
            short sequence would have targets after its input ended.
        seed: the data are a function of the seed.

    Returns:
        x (N, T) int64 and y (N, T) int64.

    Examples:
        >>> x, y = make_copy_task(n_samples=1, seq_len=5, vocab_size=4, delay=2, seed=0)
        >>> bool((y[:, 2:] == x[:, :3]).all()), y[:, :2].tolist()
        (True, [[0, 0]])
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 1)
    v = _int_at_least(vocab_size, "vocab_size", 2)
    delay = _int_at_least(delay, "delay", 0)
    if delay >= t:
        raise ValueError(f"delay must be < seq_len, received delay={delay} and seq_len={t}.")
    low = _min_len(min_len, t)
    if delay and low < t:
        raise ValueError(f"a delayed copy needs full-length sequences (its last targets come "
                         f"after the input), received delay={delay} with min_len={min_len}; "
                         "pass min_len=None or delay=0.")
    x, _ = _token_sequences(host_generator(seed, (11,)), n, t, v, low)
    y = np.zeros_like(x)
    y[:, delay:] = x[:, :t - delay]
    return x, y


def make_reverse_task(n_samples: int = 1000, seq_len: int = 10, vocab_size: int = 10,
                      min_len: int | None = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reverse each sequence: y[n, t] = x[n, L_n - 1 - t] for t < L_n, and 0 (padding) after.

    With full-length sequences y = x[:, ::-1]. The first output depends on the last input, so
    a unidirectional model that must answer at step t cannot do better than chance on the
    first half; a bidirectional layer (or an encoder-decoder) can solve it.

    Args:
        n_samples: N.
        seq_len: T, the padded length.
        vocab_size: V >= 2 ids, 0 included.
        min_len: None for full-length sequences; else lengths uniform in min_len..T, padded
            with 0 (mask: ``x != 0``; lengths: ``lengths_from_mask(x != 0)``).
        seed: the data are a function of the seed.

    Returns:
        x (N, T) int64 and y (N, T) int64.

    Examples:
        >>> x, y = make_reverse_task(n_samples=2, seq_len=4, vocab_size=5, min_len=2, seed=3)
        >>> x.tolist(), y.tolist()
        ([[4, 2, 4, 4], [3, 3, 2, 0]], [[4, 4, 2, 4], [2, 3, 3, 0]])
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 1)
    v = _int_at_least(vocab_size, "vocab_size", 2)
    x, lengths = _token_sequences(host_generator(seed, (12,)), n, t, v, _min_len(min_len, t))
    source = lengths[:, None] - 1 - np.arange(t)[None, :]  # the input step output t reads
    y = np.take_along_axis(x, np.clip(source, 0, t - 1), axis=1)
    return x, np.where(source >= 0, y, 0)


# ---------------------------------------------------------------------------------------------
# Sine-wave forecasting
# ---------------------------------------------------------------------------------------------
def make_sine_forecast(n_samples: int = 1000, seq_len: int = 20, horizon: int = 1,
                       noise: float = 0.05, freq_range: tuple[float, float] = (0.025, 0.1),
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Forecast a sine wave: from T noisy steps, predict the next ``horizon`` clean values.

    Each sample has its own frequency f ~ U[f_lo, f_hi] (cycles per step) and phase
    phi ~ U[0, 2 pi): s(t) = sin(2 pi f t + phi); x_t = s(t) + noise * N(0, 1) for t < T and
    y_k = s(T + k) for k < horizon.

    Baselines, by the uniform phase: predicting 0 scores MSE 1/2; repeating the last input
    ("persistence") scores, at step k, 1 - E[cos(2 pi f (k + 1))] + noise^2, where
    E[cos(2 pi f d)] = (sin(2 pi f_hi d) - sin(2 pi f_lo d)) / (2 pi d (f_hi - f_lo)) -- about
    0.087 at k = 0 and 0.32 at k = 1 for the defaults.

    Args:
        n_samples: N.
        seq_len: T, the number of observed steps.
        horizon: how many future values to predict.
        noise: standard deviation of the observation noise on x (y is clean).
        freq_range: (f_lo, f_hi) in cycles per step, 0 < f_lo <= f_hi < 0.5 (Nyquist).
        seed: the data are a function of the seed.

    Returns:
        x (N, T, 1) float32 and y (N, horizon) float32.

    Examples:
        >>> x, y = make_sine_forecast(n_samples=5, seq_len=8, horizon=3, seed=0)
        >>> x.shape, y.shape
        ((5, 8, 1), (5, 3))
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 1)
    h = _int_at_least(horizon, "horizon", 1)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number, received {noise!r}.")
    try:
        f_lo, f_hi = (float(f) for f in freq_range)
    except (TypeError, ValueError):
        raise ValueError(f"freq_range must be two numbers (f_lo, f_hi), received "
                         f"{freq_range!r}.") from None
    if not 0.0 < f_lo <= f_hi < 0.5:
        raise ValueError(f"freq_range must satisfy 0 < f_lo <= f_hi < 0.5 cycles per step "
                         f"(0.5 is the Nyquist limit), received {freq_range!r}.")
    rng = host_generator(seed, (13,))
    freq = rng.uniform(f_lo, f_hi, (n, 1)) if f_hi > f_lo else np.full((n, 1), f_lo)
    phase = rng.uniform(0.0, 2 * math.pi, (n, 1))
    wave = np.sin(2 * math.pi * freq * np.arange(t + h)[None, :] + phase)
    x = wave[:, :t] + float(noise) * rng.standard_normal((n, t))
    return x.astype(np.float32)[:, :, None], wave[:, t:].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Sequence classification
# ---------------------------------------------------------------------------------------------
def draw_patterns(n_patterns: int = 3, pattern_len: int = 3, vocab_size: int = 10,
                  seed: int = 0) -> np.ndarray:
    """K distinct patterns of symbols 1..vocab_size-1: the classes of
    :func:`make_pattern_classification` when it is given no ``patterns``.

    Returns:
        (K, P) int64, row k the pattern of class k.

    Examples:
        >>> draw_patterns(2, 3, 5, seed=0).shape
        (2, 3)
    """
    k = _int_at_least(n_patterns, "n_patterns", 2)
    p = _int_at_least(pattern_len, "pattern_len", 1)
    v = _int_at_least(vocab_size, "vocab_size", 2)
    if k > (v - 1) ** p:
        raise ValueError(f"only {(v - 1) ** p} distinct patterns of length {p} exist over "
                         f"{v - 1} symbols, received n_patterns={k}; raise vocab_size or "
                         "pattern_len.")
    rng = host_generator(seed, (15,))
    found: list[tuple[int, ...]] = []
    while len(found) < k:  # rejection of repeats: k is small next to (v - 1) ** p in practice
        row = tuple(int(s) for s in rng.integers(1, v, size=p))
        if row not in found:
            found.append(row)
    return np.asarray(found, dtype=np.int64)


def _check_patterns(patterns: Any, vocab_size: int) -> np.ndarray:
    pats = np.asarray(patterns)
    if pats.ndim != 2 or pats.shape[0] < 2 or pats.shape[1] < 1 or pats.dtype.kind not in "iu":
        raise ValueError(f"patterns must be integer ids of shape (K, P) with K >= 2 classes, "
                         f"received dtype {pats.dtype} and shape {pats.shape}.")
    if pats.min() < 1 or pats.max() >= vocab_size:
        raise ValueError(f"pattern symbols must be in 1..vocab_size-1 = 1..{vocab_size - 1} "
                         f"(0 is padding), received values {pats.min()}..{pats.max()}.")
    if len({tuple(r) for r in pats.tolist()}) < len(pats):
        raise ValueError("patterns must be distinct rows: two classes share a pattern.")
    return pats.astype(np.int64)


def _occurrences(x: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """(N, K): how many times each pattern occurs in each row (padding 0 never matches)."""
    p = patterns.shape[1]
    windows = np.lib.stride_tricks.sliding_window_view(x, p, axis=1)  # (N, T - P + 1, P)
    hits = (windows[:, :, None, :] == patterns[None, None, :, :]).all(axis=-1)
    return hits.sum(axis=1)


def make_pattern_classification(n_samples: int = 1000, seq_len: int = 20, n_patterns: int = 3,
                                pattern_len: int = 3, vocab_size: int = 10,
                                min_len: int | None = None, patterns: Any = None,
                                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of K patterns occurs? Each sequence contains exactly one, once; its index is y.

    Random background symbols (1..vocab_size-1) surround one pattern at a random position of
    the real part; rows where the background happens to form a pattern (any, anywhere) are
    redrawn, so the answer is unambiguous. Classes are balanced (N // K or one more each), so
    chance accuracy is 1/K. The pattern can sit anywhere, so the model must detect it wherever
    it is (a convolution, or a recurrent state that remembers having seen it).

    Args:
        n_samples: N.
        seq_len: T, the padded length.
        n_patterns: K >= 2 classes (used when ``patterns`` is None).
        pattern_len: P, the pattern length (used when ``patterns`` is None).
        vocab_size: V ids, 0 included.
        min_len: None for the fixed-length variant (every length T); else lengths uniform in
            min_len..T (min_len >= P) with 0 padding after the end.
        patterns: (K, P) integer ids to use; None draws them with :func:`draw_patterns` from
            ``seed`` (call it to see them).
        seed: the data are a function of the seed.

    Returns:
        x (N, T) int64, y (N,) int64 in 0..K-1 and lengths (N,) int64.

    Examples:
        >>> pats = [[1, 2], [2, 1]]
        >>> x, y, lengths = make_pattern_classification(4, 5, vocab_size=4, patterns=pats,
        ...                                             seed=0)
        >>> x.shape, sorted(y.tolist()), lengths.tolist()
        ((4, 5), [0, 0, 1, 1], [5, 5, 5, 5])
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 1)
    v = _int_at_least(vocab_size, "vocab_size", 2)
    if patterns is None:
        pats = draw_patterns(n_patterns, pattern_len, v, seed)
    else:
        pats = _check_patterns(patterns, v)
    k, p = pats.shape
    if p > t:
        raise ValueError(f"the patterns ({p} steps) must fit in seq_len={t}.")
    low = _min_len(min_len, t, minimum=p)
    rng = host_generator(seed, (14,))
    y = rng.permutation(np.arange(n, dtype=np.int64) % k)
    lengths = _draw_lengths(rng, n, low, t)
    start = (rng.random(n) * (lengths - p + 1)).astype(np.int64)  # uniform in 0..L-P
    steps = np.arange(t)[None, :]
    offset = steps - start[:, None]  # position inside the pattern, where 0 <= offset < P
    inside = (offset >= 0) & (offset < p)
    real = _post_mask(lengths, t)
    x = np.zeros((n, t), dtype=np.int64)
    todo = np.arange(n)
    for _ in range(1000):  # each round redraws only the rows with a stray pattern
        background = rng.integers(1, v, size=(len(todo), t), dtype=np.int64)
        planted = pats[y[todo, None], np.clip(offset[todo], 0, p - 1)]
        rows = np.where(inside[todo], planted, background)
        rows = np.where(real[todo], rows, 0)
        x[todo] = rows
        stray = _occurrences(x[todo], pats).sum(axis=1) != 1
        todo = todo[stray]
        if todo.size == 0:
            return x, y, lengths
    raise ValueError(f"could not draw backgrounds free of stray patterns (vocab_size={v}, "
                     f"{k} patterns of length {p}); raise vocab_size or pattern_len.")


def make_sign_of_sum(n_samples: int = 1000, seq_len: int = 20, min_len: int | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Is the sum positive? x_t ~ N(0, 1) over each real step; y = 1 if sum_t x_t > 0 else 0.

    Padded steps hold 0 after each sequence's end. Zeros leave the sum unchanged, but not a
    recurrent state (which keeps evolving on them): a masked model gives the same answer for
    any padding, an unmasked one only for the padding it was trained on. Chance accuracy is
    1/2 (the sum is symmetric about 0).

    Args:
        n_samples: N.
        seq_len: T, the padded length.
        min_len: None for the fixed-length variant; else lengths uniform in min_len..T.
        seed: the data are a function of the seed.

    Returns:
        x (N, T, 1) float32, y (N,) int64 in {0, 1} and lengths (N,) int64.

    Examples:
        >>> x, y, lengths = make_sign_of_sum(3, 4, min_len=2, seed=0)
        >>> x.shape, y.dtype.name, bool(((x[..., 0].sum(axis=1) > 0) == y).all())
        ((3, 4, 1), 'int64', True)
    """
    n = _int_at_least(n_samples, "n_samples", 1)
    t = _int_at_least(seq_len, "seq_len", 1)
    rng = host_generator(seed, (16,))
    lengths = _draw_lengths(rng, n, _min_len(min_len, t), t)
    x = np.where(_post_mask(lengths, t), rng.standard_normal((n, t)), 0.0).astype(np.float32)
    y = (x.astype(np.float64).sum(axis=1) > 0).astype(np.int64)
    return x[:, :, None], y, lengths


# ---------------------------------------------------------------------------------------------
# Padding helpers (host side)
# ---------------------------------------------------------------------------------------------
def _host(a: Any, name: str) -> np.ndarray:
    """A NumPy array of ``a`` (a backend array is copied to the host once)."""
    if is_backend_array(a):
        return np.asarray(to_numpy(a))
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{name} is a string ({a[:20]!r}...); encode text to ids first, e.g. "
                        "with pn.data.CharTokenizer().fit(text).encode(...).")
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or a list of numbers, received "
                        f"{type(a).__name__}: {err}") from None


def pad_sequences(sequences: Any, maxlen: int | None = None, padding: str = "post",
                  truncating: str = "post", value: float = 0, dtype: Any = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Stack sequences of different lengths into one (N, T, ...) array, and their lengths.

    Like Keras' ``pad_sequences`` but also returning how many steps of each are real, and
    "post" by default (real steps first, the mask convention ``t < length``).

    Args:
        sequences: a list (or array) of N sequences, each (L_i,) or (L_i, ...) with the same
            trailing shape: lists, NumPy or backend arrays.
        maxlen: T; None for the longest length.
        padding: "post" fills after the real steps, "pre" before them.
        truncating: a sequence longer than T loses its end ("post") or its start ("pre").
        value: the fill value (0, the padding id of the token tasks).
        dtype: of the result; None gives int64 for integer (or boolean) data, float32 for
            floating data.

    Returns:
        (padded (N, T, ...), lengths (N,) int64): lengths count the real steps kept (at most T).

    Examples:
        >>> x, lengths = pad_sequences([[1, 2, 3], [4, 5]], maxlen=2, padding="pre",
        ...                            truncating="pre")
        >>> x.tolist(), lengths.tolist()
        ([[2, 3], [4, 5]], [2, 2])
        >>> pad_sequences([[1.5], [2.0, 3.0]], padding="pre")[0].tolist()
        [[0.0, 1.5], [2.0, 3.0]]
    """
    padding = _check_side(padding, "padding")
    truncating = _check_side(truncating, "truncating")
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(f"sequences must be a list of sequences, received "
                        f"{type(sequences).__name__}.")
    seqs = []
    for i, s in enumerate(sequences):
        a = _host(s, f"sequence {i}")
        if a.ndim == 0:
            raise ValueError(f"sequence {i} is a scalar ({a!r}); each sequence needs a time "
                             "axis, e.g. [[1, 2], [3]] rather than [1, 2, 3].")
        if a.dtype.kind not in "biuf":
            raise TypeError(f"sequence {i} must hold numbers, received dtype {a.dtype}.")
        seqs.append(a)
    tails = {a.shape[1:] for a in seqs if a.shape[0] > 0}
    if len(tails) > 1:
        shapes = [a.shape for a in seqs]
        raise ValueError(f"every sequence needs the same per-step shape, received shapes "
                         f"{shapes}; only the first (time) axis may differ.")
    tail = next(iter(tails), seqs[0].shape[1:] if seqs else ())
    if maxlen is None:
        t = max((a.shape[0] for a in seqs), default=0)
    else:
        t = _int_at_least(maxlen, "maxlen", 1)
    if dtype is None:
        # empty sequences have no dtype of their own ([] is float64 to NumPy): skip them
        floating = any(a.dtype.kind == "f" for a in seqs if a.size)
        out_dtype = np.dtype(np.float32 if floating else np.int64)
    else:
        try:
            out_dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a NumPy dtype or its name, received "
                            f"{dtype!r}.") from None
    fill = np.asarray(value)
    if fill.ndim or fill.dtype.kind not in "biuf":
        raise TypeError(f"value must be a number, received {value!r}.")
    if out_dtype.kind in "biu" and fill.astype(out_dtype) != fill:
        raise ValueError(f"value={value!r} is not representable in dtype {out_dtype}; pass an "
                         "integer fill value or a floating dtype.")
    out = np.full((len(seqs), t, *tail), fill, dtype=out_dtype)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for i, a in enumerate(seqs):
        kept = a[:t] if truncating == "post" else a[max(a.shape[0] - t, 0):]
        n = kept.shape[0]
        lengths[i] = n
        if n:
            if padding == "post":
                out[i, :n] = kept
            else:
                out[i, t - n:] = kept
    return out, lengths


def mask_from_lengths(lengths: Any, maxlen: int | None = None,
                      padding: str = "post") -> np.ndarray:
    """A boolean (N, T) mask on the host, True at real steps: ``t < lengths[n]`` ("post").

    The device-side twin is :func:`portanet.ops.sequence_mask` (post padding, no host read).

    Args:
        lengths: integer (N,), each in 0..T.
        maxlen: T; None for max(lengths).
        padding: where the padding sits: "post" (real steps first) or "pre" (real steps last,
            ``t >= T - lengths[n]``).

    Examples:
        >>> mask_from_lengths([2, 0, 3]).astype(int).tolist()
        [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
        >>> mask_from_lengths([1], maxlen=3, padding="pre").tolist()
        [[False, False, True]]
    """
    padding = _check_side(padding, "padding")
    lens = _host(lengths, "lengths")
    if lens.ndim != 1 or (lens.size and lens.dtype.kind not in "iu"):
        raise ValueError(f"lengths must be integers of shape (N,), received dtype {lens.dtype} "
                         f"and shape {lens.shape}.")
    lens = lens.astype(np.int64)
    t = int(lens.max(initial=0)) if maxlen is None else _int_at_least(maxlen, "maxlen", 0)
    if lens.size and (lens.min() < 0 or lens.max() > t):
        raise ValueError(f"lengths must be in 0..maxlen={t}, received values "
                         f"{lens.min()}..{lens.max()}.")
    steps = np.arange(t)[None, :]
    if padding == "post":
        return steps < lens[:, None]
    return steps >= t - lens[:, None]


def lengths_from_mask(mask: Any) -> np.ndarray:
    """The number of real steps of each sequence: ``mask.sum(axis=1)`` as int64 (N,), on the host.

    Args:
        mask: boolean (N, T), True at real steps (NumPy or a backend array, read once).

    Examples:
        >>> lengths_from_mask([[True, True, False], [False, False, False]]).tolist()
        [2, 0]
    """
    m = _host(mask, "mask")
    if m.ndim != 2 or m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean of shape (N, T), received dtype {m.dtype} and "
                         f"shape {m.shape}; build one with mask_from_lengths or x != 0.")
    return m.sum(axis=1, dtype=np.int64)
