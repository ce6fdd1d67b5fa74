"""Draw the pictures of docs/embedding.md with portanet itself.

Writes docs/img/softmax_temperature.png (softmax of five logits at several temperatures) and
docs/img/embedding_2d.png (a 2-D Embedding before and after learning a toy task: 16 tokens,
token v belongs to class v % 4, and Embedding(16, 2) -> Flatten -> Dense(2, 4) learns to tell
the classes apart, which pulls the vectors of each class together). Needs matplotlib
(``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_embedding.py

Everything plotted is computed by portanet on the NumPy backend: the softmax curves by
``activations.softmax(..., temperature=tau)``, the embedding by ``Sequential.fit``.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np

import portanet as pn
from portanet import activations
from portanet.layers.embedding import Embedding

OUT = Path(__file__).resolve().parent.parent / "img"
DPI = 100
COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red"]


def save(fig, path: Path) -> None:
    """Save as an 8-bit palette PNG: few colours are used, and the files stay small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    try:
        from PIL import Image
    except ImportError:  # Pillow ships with matplotlib, but keep a plain fallback
        path.write_bytes(buffer.getvalue())
        return
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=48).save(path, optimize=True)


def plot_temperatures(path: Path) -> None:
    logits = np.asarray([2.0, 1.0, 0.5, 0.0, -1.0])
    taus = [0.25, 0.5, 1.0, 2.0, 5.0]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    width = 0.8 / len(taus)
    for i, tau in enumerate(taus):
        p = pn.to_numpy(activations.softmax(pn.asarray(logits, dtype="float64"),
                                            temperature=tau))
        ax.bar(np.arange(len(logits)) + (i - 2) * width, p, width,
               label=f"tau = {tau:g}", color=plt.cm.viridis(i / (len(taus) - 1)))
    ax.set_xticks(np.arange(len(logits)), [f"x = {v:g}" for v in logits])
    ax.set_ylabel("softmax(x / tau)")
    ax.set_title("Small tau sharpens, large tau flattens")
    ax.legend(frameon=False)
    fig.tight_layout()
    save(fig, path)


def plot_embedding(path: Path) -> None:
    vocab, classes = 16, 4
    ids = np.tile(np.arange(vocab), 16)[:, None]  # (256, 1): every token 16 times
    labels = ids[:, 0] % classes
    model = pn.Sequential(
        [Embedding(vocab, 2), pn.layers.Flatten(), pn.layers.Dense(2, classes)],
        loss=pn.losses.SoftmaxCrossEntropy(), optimizer=pn.optimizers.Adam(0.05), seed=0,
        dtype="float64")
    before = pn.to_numpy(model.named_parameters()["0.embeddings"]).copy()
    with pn.use_backend("numpy"):
        model.fit(pn.asarray(ids, dtype="int64"), pn.asarray(labels, dtype="int64"), epochs=60,
                  batch_size=32, verbose=0)
    after = pn.to_numpy(model.named_parameters()["0.embeddings"])
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 4.0))
    for ax, table, title in ((axes[0], before, "initial: N(0, 1)"),
                             (axes[1], after, "after 60 epochs")):
        for v in range(vocab):
            ax.scatter(table[v, 0], table[v, 1], color=COLORS[v % classes], s=30)
            ax.annotate(str(v), table[v], textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("dimension 0")
    axes[0].set_ylabel("dimension 1")
    fig.suptitle("Embedding(16, 2): token v in class v % 4 (colour)")
    fig.tight_layout()
    save(fig, path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with pn.use_backend("numpy"):
        plot_temperatures(OUT / "softmax_temperature.png")
        plot_embedding(OUT / "embedding_2d.png")
    print(f"wrote softmax_temperature.png and embedding_2d.png to {OUT}")


if __name__ == "__main__":
    main()
