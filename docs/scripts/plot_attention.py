"""Draw what attention does, computed by portanet itself.

Writes docs/img/attention_map.png (the attention weights of a small trained Transformer
classifier on one padded sequence, per head) and docs/img/positional_encoding.png (the
sinusoidal table). Needs matplotlib (``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_attention.py

The task: a sequence of 5 to 8 distinct tokens in which one token occurs twice; the class is
the repeated token. One attention layer solves it by letting each token look for its own
twin (a content match, query = key), so a trained head's map shows the two copies of the
repeated token attending to each other, and padded keys get weight 0 (blank columns).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np

import portanet as pn
from portanet.layers import Dense
from portanet.layers.embedding import Embedding
from portanet.layers.positional import SinusoidalPositionalEncoding, sinusoidal_table
from portanet.layers.temporal import GlobalAvgPool1D
from portanet.layers.transformer import TransformerEncoderBlock

OUT = Path(__file__).resolve().parent.parent / "img"
DPI = 100
T, VOCAB = 8, 12  # ids 1..11 are tokens, 0 is padding


def save(fig, path: Path) -> None:
    """Save as an 8-bit palette PNG (256 colours: the colour maps stay smooth)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    try:
        from PIL import Image
    except ImportError:
        path.write_bytes(buffer.getvalue())
        return
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)


def repeated_token_task(n: int, seed: int):
    """(ids (n, T) right-padded with 0, labels: the repeated token - 1)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, T), dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = rng.integers(5, T + 1)
        tokens = rng.choice(np.arange(1, VOCAB), size=length - 1, replace=False)
        twin = rng.integers(length - 1)
        seq = np.insert(tokens, rng.integers(length), tokens[twin])
        ids[i, :length] = seq
        labels[i] = tokens[twin] - 1
    return ids, labels


def train():
    x, y = repeated_token_task(4000, seed=0)
    x_test, y_test = repeated_token_task(500, seed=1)
    model = pn.Sequential([
        Embedding(VOCAB, 32, mask_zero=True),
        SinusoidalPositionalEncoding(T, 32),
        TransformerEncoderBlock(32, num_heads=2, ff_dim=64, dropout=0.0),
        GlobalAvgPool1D(),
        Dense(32, VOCAB - 1),
    ], loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(3e-3), seed=0)
    model.fit(x, y, epochs=30, batch_size=64, verbose=0, seed=0)
    accuracy = float(np.mean(np.asarray(pn.to_numpy(model.predict_classes(x_test))) == y_test))
    return model, x_test, accuracy


def draw_attention(model, x_test, accuracy) -> Path:
    sample = next(i for i in range(len(x_test)) if np.count_nonzero(x_test[i]) == 6)
    ids = x_test[sample:sample + 1]
    embed, position, block = model.layers[0], model.layers[1], model.layers[2]
    mask = embed.compute_mask(ids, None)
    h, _ = position.forward(embed.forward(ids)[0])
    weights = pn.to_numpy(block.attention_weights(h, mask=mask))[0]        # (heads, T, T)
    labels = [str(t) if t else "pad" for t in ids[0]]
    fig, axes = plt.subplots(1, weights.shape[0], figsize=(9.0, 4.4))
    for head, ax in enumerate(axes):
        image = ax.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(f"head {head}")
        ax.set_xticks(range(T), labels)
        ax.set_yticks(range(T), labels)
        ax.set_xlabel("key (token)")
        if head == 0:
            ax.set_ylabel("query (token)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle(f"Repeated-token classifier (test accuracy {accuracy:.0%}): attention of "
                 "one sequence; padded keys get 0")
    path = OUT / "attention_map.png"
    save(fig, path)
    return path


def draw_positional() -> Path:
    table = sinusoidal_table(64, 32, np)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    image = ax.imshow(table.T, cmap="RdBu", aspect="auto", vmin=-1.0, vmax=1.0)
    ax.set_xlabel("position t")
    ax.set_ylabel("feature i")
    ax.set_title("SinusoidalPositionalEncoding(64, 32): sin on even i, cos on odd i")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    path = OUT / "positional_encoding.png"
    save(fig, path)
    return path


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with pn.use_backend("numpy"):
        model, x_test, accuracy = train()
        written = [draw_attention(model, x_test, accuracy), draw_positional()]
    total = sum(p.stat().st_size for p in written)
    print(f"test accuracy {accuracy:.3f}; wrote {len(written)} plots to {OUT} "
          f"({total / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
