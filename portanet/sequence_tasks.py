"""The sequence jobs of ``portanet train``: a default task and model for each of ``--model lstm``,
``gru`` and ``transformer``, each learning in under a minute on a 2-core CPU.

=============  ==============================================================================
task           what the model learns
=============  ==============================================================================
``text``       a character language model of the Python reference's help topics
               (``pydoc_data``, shipped with Python): predict every next character. Scored in
               nats per character (uniform guessing over its 100 characters: 4.61) and
               next-character accuracy. It can then write text (``portanet generate``).
``patterns``   variable-length token sequences (padded, masked) in which exactly one of three
               fixed patterns occurs: say which (chance: 33%).
``reverse``    output a token sequence reversed (per-token accuracy; chance: 10%).
=============  ==============================================================================

Default pairs: ``lstm`` -> text, ``gru`` -> patterns, ``transformer`` -> reverse. Any sequence
model runs any task (``--dataset``): recurrent models read a sequence into its last real state
(or a state per step for per-token tasks); the Transformer adds learned positions, runs one
pre-LN encoder block (causal for text) and pools over the real steps for a per-sequence answer.
Gradients are clipped by their global norm (1.0), the standard companion of backpropagation
through time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import array_api_compat as compat

from . import data, layers, optimizers, schedules
from ._typing import Array
from .model import Sequential
from .training import to_model

__all__ = ["SEQUENCE_MODELS", "SEQUENCE_TASKS", "SequenceTask", "build_sequence_model",
           "load_sequence_task", "token_accuracy"]

SEQUENCE_MODELS = ("lstm", "gru", "transformer")
SEQUENCE_TASKS = ("text", "patterns", "reverse")
DEFAULT_TASK = {"lstm": "text", "gru": "patterns", "transformer": "reverse"}
# epochs of the default runs, measured to reach the stated scores in under a minute
EPOCHS = {("lstm", "text"): 20, ("gru", "patterns"): 10, ("transformer", "reverse"): 10}
LEARNING_RATES = {"text": 1e-2, "patterns": 3e-3, "reverse": 3e-3}  # Adam, cosine to 0


@dataclass
class SequenceTask:
    """A sequence data set split for training: ids in, class ids (per sequence or per step)
    out. The four arrays are NumPy arrays on the host; ``fit`` moves them once."""

    name: str
    description: str
    x: Array
    y: Array
    x_test: Array
    y_test: Array
    vocab_size: int      # input ids are in [0, vocab_size); 0 is padding
    num_classes: int     # output classes (the vocabulary again for per-token tasks)
    per_token: bool      # one answer per time step (True) or per sequence
    masked: bool         # padded sequences: id 0 marks padding
    tokenizer: Any = None


def load_sequence_task(name: str, seed: int = 0, max_chars: int = 200_000) -> SequenceTask:
    """The task ``name`` (one of :data:`SEQUENCE_TASKS`), generated or read from the standard
    library, split 90/10 into training and test parts by ``seed``. ``max_chars``: how much of
    the corpus the text task reads."""
    if name == "text":
        text = data.load_text_corpus("pydoc_topics", max_chars=max_chars)
        tokenizer = data.CharTokenizer().fit(text)
        x, y = data.char_lm_windows(tokenizer.encode(text), seq_len=64)
        split = int(0.9 * len(x))  # the last tenth of the text is the test part: no overlap
        return SequenceTask("text", f"character language model of Python's help topics "
                            f"({len(text):,} characters, {tokenizer.vocab_size} ids)",
                            x[:split], y[:split], x[split:], y[split:],
                            tokenizer.vocab_size, tokenizer.vocab_size, True, False, tokenizer)
    if name == "patterns":
        x, y, _ = data.make_pattern_classification(n_samples=3000, seq_len=20, n_patterns=3,
                                                   vocab_size=10, min_len=8, seed=seed)
        x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_size=0.1,
                                                                 stratify=True, seed=seed)
        return SequenceTask("patterns", "which of 3 patterns occurs in a padded token sequence "
                            "(lengths 8-20)", x_train, y_train, x_test, y_test,
                            10, 3, False, True)
    if name == "reverse":
        x, y = data.make_reverse_task(n_samples=4000, seq_len=10, vocab_size=10, seed=seed)
        cut = int(0.9 * len(x))
        return SequenceTask("reverse", "reverse a sequence of 10 tokens", x[:cut], y[:cut],
                            x[cut:], y[cut:], 10, 10, True, False)
    raise ValueError(f"unknown sequence task {name!r}; choose one of {list(SEQUENCE_TASKS)}.")


def build_sequence_model(kind: str, task: SequenceTask, hidden: int = 128, seed: int = 0,
                         optimizer: Any = None, jit_compile: Any = "auto") -> Sequential:
    """The ``kind`` model (lstm, gru, transformer) for ``task``, with a softmax cross-entropy
    loss over its classes."""
    embed = 32 if kind != "transformer" else 64
    stack: list = [layers.Embedding(task.vocab_size, embed, mask_zero=task.masked)]
    if kind in ("lstm", "gru"):
        cell = layers.LSTM if kind == "lstm" else layers.GRU
        stack.append(cell(embed, hidden, return_sequences=task.per_token))
        width = hidden
    elif kind == "transformer":
        stack += [layers.PositionalEmbedding(int(task.x.shape[1]), embed),
                  layers.TransformerEncoderBlock(embed, 4, 2 * embed, dropout=0.0,
                                          causal=task.name == "text")]
        if not task.per_token:
            stack.append(layers.GlobalAvgPool1D())
        width = embed
    else:
        raise ValueError(f"unknown sequence model {kind!r}; choose one of "
                         f"{list(SEQUENCE_MODELS)}.")
    stack.append(layers.Dense(width, task.num_classes))
    return Sequential(stack, loss="softmax_cross_entropy", optimizer=optimizer, seed=seed,
                      jit_compile=jit_compile)


def default_optimizer(lr: float, epochs: int, steps_per_epoch: int) -> optimizers.Optimizer:
    """Adam with a cosine-annealed rate and gradients clipped to global norm 1."""
    schedule = schedules.CosineAnnealing(lr, max(1, epochs * steps_per_epoch))
    return optimizers.Adam(schedule, global_clip_norm=1.0)


def token_accuracy(model: Sequential, x: Any, y: Any, batch_size: int = 256) -> float:
    """The fraction of answers (per step or per sequence) whose argmax is the target, computed
    on the model's device; one number comes back to the host."""
    scores = model.predict(x, batch_size=batch_size)  # host ids are converted like fit's
    xp = compat.array_namespace(scores)
    right = xp.argmax(scores, axis=-1) == to_model(model, y, "y", role="y")
    return float(xp.mean(xp.astype(right, scores.dtype)))


def nats_per_step(loss: float) -> str:
    """A loss in nats as text with its perplexity, e.g. "1.52 nats (perplexity 4.6)"."""
    return f"{loss:.3f} nats (perplexity {math.exp(min(loss, 50.0)):.1f})"
