"""Text for character language models: a corpus shipped with Python, a tokenizer, windows, sampling.

* :func:`load_text_corpus` reads English that every Python installation carries: the help
  topics of the Python reference (``pydoc_data.topics``, ~465,000 characters in Python 3.11)
  or the Zen of Python (``this``, 856 characters). Nothing is downloaded.
* :class:`CharTokenizer` maps characters to ids: 0 is padding, 1 an unknown character, and
  2.. the characters it was fitted on, sorted by code point.
* :func:`char_lm_windows` cuts an id sequence into (x, y) pairs for teacher forcing:
  y[n, t] = x[n, t + 1], the next character at every step.
* :func:`sample_next` draws an id from softmax(logits / temperature) on the host, and
  :func:`generate_text` repeats it, feeding each draw back to the model.

Examples:
    >>> from portanet.data.text import CharTokenizer, char_lm_windows, load_text_corpus
    >>> text = load_text_corpus("zen")
    >>> tok = CharTokenizer().fit(text)
    >>> ids = tok.encode("Beautiful is better than ugly.")
    >>> tok.decode(ids)
    'Beautiful is better than ugly.'
    >>> x, y = char_lm_windows(tok.encode(text), seq_len=32)
    >>> x.shape == y.shape, bool((x[:, 1:] == y[:, :-1]).all())
    (True, True)
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..backend import Backend, get_backend
from ..devices import to_numpy
from ..random import fresh_seed, host_generator
from ._util import is_backend_array

__all__ = [
    "TEXT_CORPORA",
    "CharTokenizer",
    "char_lm_windows",
    "generate_text",
    "load_text_corpus",
    "sample_next",
]

TEXT_CORPORA = ("pydoc_topics", "zen")
"""Names :func:`load_text_corpus` knows."""


# ---------------------------------------------------------------------------------------------
# The corpus
# ---------------------------------------------------------------------------------------------
def _pydoc_topics() -> str:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ImportError("the 'pydoc_topics' corpus is the standard library's pydoc_data "
                          "module, which this Python installation lacks (some minimal "
                          "distributions strip it). Use load_text_corpus('zen') (the Zen of "
                          "Python, always present), pass your own text to CharTokenizer, or "
                          "install the full standard library (e.g. Debian's "
                          "libpython3-stdlib).") from None
    # one topic after another in sorted order, so the text does not depend on dict order
    return "\n\n".join(topics[key].strip("\n") for key in sorted(topics))


def _zen() -> str:
    # ``import this`` prints the Zen; keep stdout clean and decode its rot13 text ourselves.
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return "".join(this.d.get(c, c) for c in this.s)


def load_text_corpus(name: str = "pydoc_topics", max_chars: int | None = None) -> str:
    """English text that ships with Python itself, for character-level language models.

    Args:
        name: "pydoc_topics": the help topics of the Python reference (``help('if')`` shows
            one), about 465,000 characters of prose and code in Python 3.11 (its size and
            content follow the Python version); "zen": the Zen of Python (856 characters, for
            quick tests).
        max_chars: keep only the first ``max_chars`` characters (None: all).

    Returns:
        The text, a str.

    Examples:
        >>> load_text_corpus("zen", max_chars=25)
        'The Zen of Python, by Tim'
    """
    key = str(name).strip().lower().replace("-", "_")
    if key == "pydoc_topics":
        text = _pydoc_topics()
    elif key == "zen":
        text = _zen()
    else:
        raise ValueError(f"unknown text corpus {name!r}; known: {', '.join(TEXT_CORPORA)}.")
    if max_chars is None:
        return text
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_chars must be a positive int or None, received {max_chars!r}.")
    return text[:max_chars]


# ---------------------------------------------------------------------------------------------
# The tokenizer
# ---------------------------------------------------------------------------------------------
def _code_points(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as uint32, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


def _host_ids(ids: Any, what: str) -> np.ndarray:
    if isinstance(ids, str):
        raise TypeError(f"{what} expects integer ids, received a str; encode it first.")
    a = np.asarray(to_numpy(ids)) if is_backend_array(ids) else np.asarray(ids)
    if a.size == 0 and a.ndim == 1:
        return a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{what} expects integer ids, received dtype {a.dtype}.")
    return a.astype(np.int64)


class CharTokenizer:
    """Characters <-> integer ids: 0 = padding, 1 = unknown, 2.. = the fitted characters.

    ``fit(text)`` sorts the distinct characters of ``text`` by code point, so the same text
    always gives the same ids. Characters never seen map to the unknown id 1 on ``encode``
    and come back as ``unknown`` on ``decode``; padding ids decode to nothing.

    Args:
        chars: the vocabulary, in id order from id 2 (a str or a list of one-character
            strings, no repeats); None to fit it later with :meth:`fit`.
        unknown: what :meth:`decode` writes for the unknown id ("" drops it).

    Examples:
        >>> tok = CharTokenizer().fit("hello")
        >>> tok.vocabulary, tok.vocab_size
        (['e', 'h', 'l', 'o'], 6)
        >>> tok.encode("hole!").tolist()
        [3, 5, 4, 2, 1]
        >>> tok.decode([3, 5, 4, 2, 1, 0, 0])
        'hole\ufffd'
        >>> CharTokenizer.from_config(tok.get_config()).encode("oh").tolist()
        [5, 3]
    """

    padding_id = 0
    unknown_id = 1
    reserved = 2  # ids below this are not characters

    def __init__(self, chars: str | Iterable[str] | None = None, unknown: str = "\ufffd"):
        if not isinstance(unknown, str):
            raise TypeError(f"unknown must be a str (what decode writes for an unknown id), "
                            f"received {type(unknown).__name__}.")
        self.unknown = unknown
        self._chars: list[str] | None = None
        if chars is not None:
            self._set_vocabulary(self._check_chars(chars))

    @staticmethod
    def _check_chars(chars: Any) -> list[str]:
        if isinstance(chars, str):
            listed = list(chars)
        else:
            try:
                listed = list(chars)
            except TypeError:
                raise TypeError(f"chars must be a str or a list of characters, received "
                                f"{type(chars).__name__}.") from None
        bad = [c for c in listed if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars must be single characters, received {bad[:3]!r}.")
        repeated = sorted({c for c in listed if listed.count(c) > 1})
        if repeated:
            raise ValueError(f"chars must not repeat, received {repeated[:5]!r} more than once.")
        if not listed:
            raise ValueError("chars is empty: a tokenizer needs at least one character.")
        return listed

    def _set_vocabulary(self, chars: list[str]) -> None:
        self._chars = chars
        codes = _code_points("".join(chars))
        order = np.argsort(codes, kind="stable")
        self._sorted_codes = codes[order]  # for encode: search the code, read its id
        self._sorted_ids = order.astype(np.int64) + self.reserved
        self._table = np.array(["", self.unknown, *chars], dtype=object)  # id -> text

    def fit(self, text: str) -> CharTokenizer:
        """Learn the vocabulary: the distinct characters of ``text``, sorted by code point."""
        if not isinstance(text, str):
            hint = " (decode bytes first, e.g. data.decode('utf-8'))" \
                if isinstance(text, bytes) else ""
            raise TypeError(f"fit expects a str, received {type(text).__name__}{hint}.")
        if not text:
            raise ValueError("fit received an empty text; there are no characters to learn.")
        self._set_vocabulary(sorted(set(text)))
        return self

    @property
    def fitted(self) -> bool:
        """True once the tokenizer has a vocabulary."""
        return self._chars is not None

    def _require_fit(self) -> list[str]:
        if self._chars is None:
            raise RuntimeError("this CharTokenizer has no vocabulary yet: call fit(text) first "
                               "(or build it with CharTokenizer(chars=...)).")
        return self._chars

    @property
    def vocabulary(self) -> list[str]:
        """The characters in id order (id ``i + 2`` is ``vocabulary[i]``)."""
        return list(self._require_fit())

    @property
    def vocab_size(self) -> int:
        """The number of ids, padding and unknown included: len(vocabulary) + 2."""
        return len(self._require_fit()) + self.reserved

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        size = self.vocab_size if self.fitted else "unfitted"
        return f"CharTokenizer(vocab_size={size})"

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``'s characters, an int64 NumPy array (len(text),).

        Characters outside the vocabulary become the unknown id 1.
        """
        self._require_fit()
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, received {type(text).__name__}.")
        codes = _code_points(text)
        where = np.searchsorted(self._sorted_codes, codes)
        where = np.minimum(where, len(self._sorted_codes) - 1)
        known = self._sorted_codes[where] == codes
        return np.where(known, self._sorted_ids[where], self.unknown_id)

    def decode(self, ids: Any) -> str:
        """The text of a 1-d sequence of ids (list, NumPy or a backend array).

        Padding (0) decodes to nothing, the unknown id (1) to ``unknown``.
        """
        self._require_fit()
        a = _host_ids(ids, "decode")
        if a.ndim != 1:
            raise ValueError(f"decode expects one sequence of ids, shape (T,), received shape "
                             f"{a.shape}; decode a batch row by row: [tok.decode(r) for r in x].")
        if a.size and (a.min() < 0 or a.max() >= self.vocab_size):
            raise ValueError(f"ids must be in 0..vocab_size-1 = 0..{self.vocab_size - 1}, "
                             f"received values {a.min()}..{a.max()}.")
        return "".join(self._table[a].tolist())

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, JSON-able: ``{"chars": [...], "unknown": ...}``."""
        return {"chars": self.vocabulary, "unknown": self.unknown}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> CharTokenizer:
        """The tokenizer :meth:`get_config` describes."""
        if not isinstance(config, dict):
            raise TypeError(f"from_config expects a dict from get_config(), received "
                            f"{type(config).__name__}.")
        extra = set(config) - {"chars", "unknown"}
        if extra or "chars" not in config:
            raise ValueError(f"a CharTokenizer config has the keys 'chars' and 'unknown', "
                             f"received {sorted(config)}.")
        return cls(chars=config["chars"], unknown=config.get("unknown", "\ufffd"))


# ---------------------------------------------------------------------------------------------
# Windows for teacher forcing
# ---------------------------------------------------------------------------------------------
def char_lm_windows(ids: Any, seq_len: int, step: int | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cut one id sequence into (input, next-id) windows: y[n, t] = ids[n * step + t + 1].

    Window n reads ids[s : s + T] and its targets are ids[s + 1 : s + T + 1], s = n * step:
    at every step the model is given the true previous characters (teacher forcing) and
    asked for the next one. The last id has no successor, so N = (len - 1 - T) // step + 1.

    Args:
        ids: a 1-d integer sequence (e.g. ``tokenizer.encode(text)``), at least T + 1 long.
        seq_len: T, the window length.
        step: the stride between window starts; None for T (windows that do not overlap).

    Returns:
        x (N, T) int64 and y (N, T) int64.

    Examples:
        >>> x, y = char_lm_windows([5, 6, 7, 8, 9, 10], seq_len=2)
        >>> x.tolist(), y.tolist()
        ([[5, 6], [7, 8]], [[6, 7], [8, 9]])
    """
    a = _host_ids(ids, "char_lm_windows")
    if a.ndim != 1:
        raise ValueError(f"char_lm_windows expects one id sequence of shape (L,), received "
                         f"shape {a.shape}; concatenate the texts first.")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len must be a positive int, received {seq_len!r}.")
    step = seq_len if step is None else step
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive int or None, received {step!r}.")
    if a.shape[0] < seq_len + 1:
        raise ValueError(f"a window of seq_len={seq_len} needs at least {seq_len + 1} ids "
                         f"(inputs plus the next id), received {a.shape[0]}; use a shorter "
                         "seq_len or more text.")
    # windows of T + 1 ids: the first T are the input, the last T the targets
    spans = np.lib.stride_tricks.sliding_window_view(a, seq_len + 1)[::step]
    # copies: the windows are read-only views of ``a`` (and some are even C-contiguous)
    return spans[:, :-1].copy(), spans[:, 1:].copy()


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def _as_generator(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return host_generator(fresh_seed(), (20,))
    if isinstance(rng, bool) or not isinstance(rng, int) or rng < 0:
        raise TypeError(f"rng must be a numpy.random.Generator, a non-negative int seed or "
                        f"None, received {rng!r}.")
    return host_generator(rng, (20,))


def sample_next(logits: Any, temperature: float = 1.0, rng: Any = None) -> int:
    """Draw one id from p = softmax(logits / temperature), on the host (NumPy).

    p_i = exp((z_i - max z) / tau) / sum_j exp((z_j - max z) / tau): shifting by the max keeps
    exp from overflowing. tau < 1 sharpens the distribution (more likely, more repetitive
    text), tau > 1 flattens it; temperature 0 takes the argmax (greedy decoding). A logit of
    -inf gives its id probability 0.

    Args:
        logits: one row (V,) of scores (NumPy or a backend array).
        temperature: tau >= 0.
        rng: a ``numpy.random.Generator``, an int seed or None (fresh entropy).

    Returns:
        The id, a Python int.

    Examples:
        >>> sample_next([0.0, 3.0, 1.0], temperature=0)
        1
        >>> import numpy as np
        >>> sample_next([0.0, -np.inf, 5.0], rng=0) in (0, 2)
        True
    """
    z = np.asarray(to_numpy(logits)) if is_backend_array(logits) else np.asarray(logits)
    if z.ndim != 1 or z.size == 0 or z.dtype.kind not in "iuf":
        raise ValueError(f"logits must be one non-empty row of numbers (V,), received dtype "
                         f"{z.dtype} and shape {z.shape}.")
    z = z.astype(np.float64)
    if np.isnan(z).any() or np.isposinf(z).any() or np.isneginf(z).all():
        raise ValueError("logits must be finite (-inf allowed to exclude an id, but not "
                         "every id); received NaN, +inf or only -inf.")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
            not temperature >= 0 or math.isinf(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, received {temperature!r}.")
    if temperature == 0:
        return int(np.argmax(z))
    p = np.exp((z - z.max()) / float(temperature))
    p /= p.sum()
    return int(_as_generator(rng).choice(z.size, p=p))


def generate_text(model: Any, tokenizer: CharTokenizer, prompt: str, length: int,
                  temperature: float = 1.0, seed: Any = None, window: int | None = None) -> str:
    """Continue ``prompt`` by ``length`` characters, one :func:`sample_next` draw at a time.

    Each step feeds the running text (its last ``window`` ids) to ``model.predict`` as a
    (1, T) int64 array, takes the logits of the last step and draws the next id from
    softmax(logits / temperature). Padding and unknown ids are never drawn (they are not
    characters). The model can be anything with ``predict(x)`` returning (1, T, V) or (1, V)
    logits (V = ``tokenizer.vocab_size``) as an array :func:`portanet.to_numpy` reads; the
    ids go to ``model.backend`` when it is a :class:`portanet.Backend` (a Sequential),
    otherwise to the active backend.

    Args:
        model: maps ids (1, T) to logits.
        tokenizer: the fitted :class:`CharTokenizer` the model was trained with.
        prompt: the start, at least one character.
        length: how many characters to generate (>= 0).
        temperature: see :func:`sample_next`; 0 is greedy.
        seed: an int (the same text each time), a ``numpy.random.Generator`` or None.
        window: feed at most the last ``window`` ids (use the training ``seq_len``: that is
            the context the model learned, and a fixed shape lets a compiled predict reuse
            one program); None feeds the whole text so far.

    Returns:
        ``prompt`` followed by the generated characters.

    Examples:
        >>> import numpy as np
        >>> tok = CharTokenizer().fit("ab")
        >>> class AlwaysB:                      # logits favour "b" (id 3) at every step
        ...     def predict(self, x):
        ...         return np.tile([0.0, 0.0, 0.0, 9.0], (1, x.shape[1], 1))
        >>> generate_text(AlwaysB(), tok, "a", 3, temperature=0)
        'abbb'
    """
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"generate_text needs a model with a predict(x) method, received "
                        f"{type(model).__name__}.")
    if not isinstance(tokenizer, CharTokenizer):
        raise TypeError(f"tokenizer must be a CharTokenizer, received "
                        f"{type(tokenizer).__name__}.")
    vocab = tokenizer.vocab_size
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty str (the model needs a first character), "
                         f"received {prompt!r}.")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be an int >= 0, received {length!r}.")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise ValueError(f"window must be a positive int or None, received {window!r}.")
    rng = _as_generator(seed)
    target = getattr(model, "backend", None)
    target = target if isinstance(target, Backend) else get_backend()
    ids = [int(i) for i in tokenizer.encode(prompt)]
    new: list[int] = []
    for _ in range(length):
        context = np.asarray(ids if window is None else ids[-window:], dtype=np.int64)
        x = target.adapter.from_numpy(context[None, :], target.device)
        out = model.predict(x)
        logits = np.asarray(to_numpy(out)) if is_backend_array(out) else np.asarray(out)
        if logits.ndim == 3 and logits.shape[:2] == (1, context.size):
            row = logits[0, -1]
        elif logits.ndim == 2 and logits.shape[0] == 1:
            row = logits[0]
        else:
            raise ValueError(f"model.predict on ids of shape (1, {context.size}) must return "
                             f"logits (1, {context.size}, V) or (1, V), received shape "
                             f"{logits.shape}.")
        if row.shape[0] != vocab:
            raise ValueError(f"the model returns {row.shape[0]} logits per step but the "
                             f"tokenizer has vocab_size={vocab}; use the tokenizer the model "
                             "was trained with.")
        row = row.astype(np.float64)  # a copy: the padding and unknown ids are excluded
        row[:CharTokenizer.reserved] = -np.inf
        nxt = sample_next(row, temperature, rng)
        ids.append(nxt)
        new.append(nxt)
    return prompt + tokenizer.decode(new)
