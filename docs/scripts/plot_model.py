"""Draw a small residual CNN with portanet's own ``plot_model``.

Writes docs/img/model_plot.png (a palette PNG at 150 dpi): a Conv2D, a Residual block of two
convolutions around a BatchNorm, pooling, and a named Sequential head, for 1 x 28 x 28 images.
The picture shows what ``model.summary(input_shape=(1, 28, 28))`` prints, as boxes and arrows.
Needs matplotlib (``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_model.py
"""

from __future__ import annotations

import io
from pathlib import Path

import portanet as pn
from portanet import layers as L
from portanet.plotting import plot_model

OUT = Path(__file__).resolve().parent.parent / "img"
DPI = 150


def model() -> pn.Sequential:
    return pn.Sequential([
        L.Conv2D(1, 8, 3, padding="same", activation="relu"),
        L.Residual([L.Conv2D(8, 8, 3, padding="same", activation="relu"),
                    L.BatchNorm(8),
                    L.Conv2D(8, 8, 3, padding="same")]),
        L.MaxPool2D(2),
        L.Flatten(),
        pn.Sequential([L.Dense(8 * 14 * 14, 32, activation="relu"), L.Dropout(0.2)],
                      name="head"),
        L.Dense(32, 10),
    ], seed=0)


def main() -> None:
    net = model()
    print(net.summary(input_shape=(1, 28, 28)))
    fig = plot_model(net, input_shape=(1, 28, 28), dpi=DPI)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    path = OUT / "model_plot.png"
    try:
        from PIL import Image
    except ImportError:  # Pillow ships with matplotlib, but keep a plain fallback
        path.write_bytes(buffer.getvalue())
    else:  # a 64-colour palette keeps the text smooth and the file small
        buffer.seek(0)
        Image.open(buffer).convert("RGB").quantize(colors=64).save(path, optimize=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
