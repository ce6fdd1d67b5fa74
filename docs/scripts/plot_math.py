"""Draw every activation and loss with its derivative, computed by portanet itself.

Writes docs/img/activation_<name>.png and docs/img/loss_<name>.png (600 x 400 pixels, palette
PNGs of a few kB each). Needs matplotlib (``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_math.py

The curves come from portanet's own functions on the NumPy backend in float64: each plot is a
picture of the code, not of a formula typed again.
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
from portanet import activations, losses

OUT = Path(__file__).resolve().parent.parent / "img"
FIGSIZE, DPI = (6.0, 4.0), 100  # 600 x 400 pixels

# name -> (parameters, x range)
ACTIVATIONS = {
    "identity": ({}, (-4, 4)),
    "relu": ({}, (-4, 4)),
    "leaky_relu": ({"alpha": 0.1}, (-4, 4)),
    "elu": ({"alpha": 1.0}, (-4, 4)),
    "selu": ({}, (-4, 4)),
    "sigmoid": ({}, (-8, 8)),
    "hard_sigmoid": ({}, (-6, 6)),
    "tanh": ({}, (-4, 4)),
    "softplus": ({}, (-6, 6)),
    "softsign": ({}, (-8, 8)),
    "swish": ({"beta": 1.0}, (-6, 6)),
    "silu": ({}, (-6, 6)),
    "gelu": ({}, (-4, 4)),
    "gelu_tanh": ({}, (-4, 4)),
    "mish": ({}, (-5, 5)),
    "relu6": ({}, (-2, 8)),
    "hard_swish": ({}, (-5, 5)),
}


def save(fig, path: Path) -> None:
    """Save as an 8-bit palette PNG: line plots need few colours, and the files stay small."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    try:
        from PIL import Image
    except ImportError:  # Pillow ships with matplotlib, but keep a plain fallback
        path.write_bytes(buffer.getvalue())
        return
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=32)
    image.save(path, optimize=True)


def plot_pair(x, y, dy, title: str, y_label: str, dy_label: str, path: Path,
              x_label: str = "x") -> None:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.axhline(0.0, color="0.8", linewidth=0.8)
    ax.axvline(0.0, color="0.8", linewidth=0.8)
    ax.plot(x, y, color="tab:blue", linewidth=2.0, label=y_label)
    ax.plot(x, dy, color="tab:orange", linewidth=1.6, linestyle="--", label=dy_label)
    ax.set_title(title)
    ax.set_xlabel(x_label)
    ax.legend(loc="best", frameon=False)
    fig.tight_layout()
    save(fig, path)


def draw_activations() -> list[Path]:
    written = []
    for name, (params, (lo, hi)) in ACTIVATIONS.items():
        x = np.linspace(lo, hi, 801)
        act = activations.get(name, **params)
        y, dy = act.forward(x), act.derivative(x)
        args = "".join(f", {k}={v:g}" for k, v in params.items())
        path = OUT / f"activation_{name}.png"
        plot_pair(x, y, dy, f"{name}(x{args})", f"{name}(x)", f"{name}_derivative(x)", path)
        written.append(path)
    # softmax over two classes (x, 0): s_0 = sigmoid(x), and ds_0/dx_0 = s_0 (1 - s_0)
    x = np.linspace(-8, 8, 801)
    scores = np.stack([x, np.zeros_like(x)], axis=1)
    for name in ("softmax", "log_softmax"):
        y = getattr(activations, name)(scores)[:, 0]
        jacobian = getattr(activations, name + "_jacobian")(scores)[:, 0, 0]
        path = OUT / f"activation_{name}.png"
        plot_pair(x, y, jacobian, f"{name} of scores (x, 0): class 0", f"{name}(x, 0)[0]",
                  "Jacobian [0, 0]", path)
        written.append(path)
    return written


def per_sample(loss, y_pred, y_true):
    """The loss of each sample (reduction "none") and the gradient of each sample's loss."""
    value, grad = loss(y_pred, y_true)
    return np.asarray(value), np.asarray(grad)


def draw_losses() -> list[Path]:
    written = []
    r = np.linspace(-3, 3, 601)

    def regression(loss, title, name):
        value, grad = per_sample(loss, r, np.zeros_like(r))  # y_pred = r, target 0
        path = OUT / f"loss_{name}.png"
        plot_pair(r, value, grad, title, "loss", "d loss / d y_pred", path,
                  x_label="y_pred - y_true")
        written.append(path)

    regression(losses.MeanAbsoluteError(reduction="none"), "MeanAbsoluteError", "mae")
    regression(losses.MeanSquaredError(reduction="none"), "MeanSquaredError", "mse")
    regression(losses.RootMeanSquaredError(reduction="none"), "RootMeanSquaredError (one value)",
               "rmse")
    regression(losses.Huber(delta=1.0, reduction="none"), "Huber(delta=1)", "huber")
    regression(losses.LogCosh(reduction="none"), "LogCosh", "log_cosh")

    score = np.linspace(-3, 3, 601)
    for cls, name in ((losses.Hinge, "hinge"), (losses.SquaredHinge, "squared_hinge")):
        value, grad = per_sample(cls(reduction="none"), score, np.ones_like(score))
        path = OUT / f"loss_{name}.png"
        plot_pair(score, value, grad, f"{cls.__name__}, label y = 1", "loss", "d loss / d score",
                  path, x_label="score")
        written.append(path)

    p = np.linspace(0.001, 0.999, 999)
    value, grad = per_sample(losses.BinaryCrossEntropy(reduction="none"), p, np.ones_like(p))
    path = OUT / "loss_binary_cross_entropy.png"
    plot_pair(p, value, np.clip(grad, -10, None), "BinaryCrossEntropy, target 1", "loss",
              "d loss / d p  (clipped at -10 for the plot)", path, x_label="predicted p")
    written.append(path)

    z = np.linspace(-8, 8, 801)
    value, grad = per_sample(losses.BinaryCrossEntropyWithLogits(reduction="none"), z,
                             np.ones_like(z))
    path = OUT / "loss_binary_cross_entropy_with_logits.png"
    plot_pair(z, value, grad, "BinaryCrossEntropyWithLogits, target 1", "loss",
              "d loss / d z = sigmoid(z) - 1", path, x_label="logit z")
    written.append(path)

    # Two classes, the true one is class 0.
    q = np.stack([p, 1 - p], axis=1)
    ids = np.zeros(len(p), dtype=np.int64)
    value, grad = per_sample(losses.CategoricalCrossEntropy(reduction="none"), q, ids)
    path = OUT / "loss_categorical_cross_entropy.png"
    plot_pair(p, value, np.clip(grad[:, 0], -10, None), "CategoricalCrossEntropy, 2 classes, "
              "true class 0", "loss", "d loss / d q_0  (clipped at -10)", path,
              x_label="predicted q_0")
    written.append(path)

    logits = np.stack([z, np.zeros_like(z)], axis=1)
    ids = np.zeros(len(z), dtype=np.int64)
    for loss, name, title in (
            (losses.SoftmaxCrossEntropy(reduction="none"), "softmax_cross_entropy",
             "SoftmaxCrossEntropy, logits (z, 0), true class 0"),
            (losses.SoftmaxCrossEntropy(label_smoothing=0.2, reduction="none"),
             "softmax_cross_entropy_smoothed", "SoftmaxCrossEntropy(label_smoothing=0.2)"),
            (losses.CategoricalHinge(reduction="none"), "categorical_hinge",
             "CategoricalHinge, scores (z, 0), true class 0")):
        value, grad = per_sample(loss, logits, ids)
        path = OUT / f"loss_{name}.png"
        plot_pair(z, value, grad[:, 0], title, "loss", "d loss / d z", path, x_label="z")
        written.append(path)

    target = np.tile([[0.3, 0.7]], (len(p), 1))
    value, grad = per_sample(losses.KLDivergence(reduction="none"), q, target)
    path = OUT / "loss_kl_divergence.png"
    plot_pair(p, value, np.clip(grad[:, 0], -10, None), "KLDivergence, target (0.3, 0.7)",
              "KL(target || q)", "d KL / d q_0  (clipped at -10)", path,
              x_label="predicted q_0 (q_1 = 1 - q_0)")
    written.append(path)

    rate = np.linspace(0.05, 6, 600)
    value, grad = per_sample(losses.Poisson(reduction="none"), rate, np.full_like(rate, 2.0))
    path = OUT / "loss_poisson.png"
    plot_pair(rate, value, grad, "Poisson, observed count 2", "loss", "d loss / d rate", path,
              x_label="predicted rate")
    written.append(path)
    return written


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with pn.use_backend("numpy"):
        written = draw_activations() + draw_losses()
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} plots to {OUT} ({total / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
