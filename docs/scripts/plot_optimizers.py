"""Draw each optimizer's path on an ill-conditioned 2-D bowl, computed by portanet itself.

Writes docs/img/optimizer_<name>.png (one path per optimizer, 700 x 500 pixels) and
docs/img/optimizer_loss_curves.png (f against the step for all of them), as palette PNGs of a
few tens of kB. Needs matplotlib (``pip install portanet[plot]``). Run from anywhere:

    python docs/scripts/plot_optimizers.py

The bowl is f(p) = p^T H p / 2 with curvatures 1 and 20 along axes turned by 30 degrees, so no
method gets the easy case of a valley aligned with a coordinate axis. Every point of every path
is a ``portanet.optimizers`` step on the NumPy backend in float64.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
import numpy as np

import portanet as pn
from portanet import optimizers

OUT = Path(__file__).resolve().parent.parent / "img"
FIGSIZE, DPI = (7.0, 5.0), 100  # 700 x 500 pixels
STEPS = 60
START = (-4.0, 2.0)

_angle = math.radians(30.0)
_rotation = np.array([[math.cos(_angle), -math.sin(_angle)],
                      [math.sin(_angle), math.cos(_angle)]])
H = _rotation @ np.diag([1.0, 20.0]) @ _rotation.T  # condition number 20

# file name: (title, optimizer). Rates picked by hand so that each path is representative.
OPTIMIZERS = {
    "sgd": ("SGD, lr 0.09", lambda: optimizers.SGD(0.09)),
    "sgd_momentum": ("SGD, classical momentum 0.9, lr 0.02",
                     lambda: optimizers.SGD(0.02, momentum=0.9)),
    "sgd_average": ("SGD, moving-average momentum 0.9, lr 0.2",
                    lambda: optimizers.SGD(0.2, momentum=0.9, momentum_form="average")),
    "nesterov": ("SGD, Nesterov momentum 0.9, lr 0.01",
                 lambda: optimizers.SGD(0.01, momentum=0.9, nesterov=True)),
    "adagrad": ("AdaGrad, lr 2", lambda: optimizers.AdaGrad(2.0)),
    "adadelta": ("AdaDelta, lr 10", lambda: optimizers.AdaDelta(10.0)),
    "rmsprop": ("RMSProp, lr 0.2", lambda: optimizers.RMSProp(0.2)),
    "rmsprop_centered": ("RMSProp centered, momentum 0.5, lr 0.1",
                         lambda: optimizers.RMSProp(0.1, centered=True, momentum=0.5)),
    "adam": ("Adam, lr 0.5", lambda: optimizers.Adam(0.5)),
    "amsgrad": ("Adam with AMSGrad, lr 0.5", lambda: optimizers.Adam(0.5, amsgrad=True)),
    "adamw": ("AdamW, lr 0.5, weight decay 0.1", lambda: optimizers.AdamW(0.5, weight_decay=0.1)),
    "adamax": ("Adamax, lr 1", lambda: optimizers.Adamax(1.0)),
    "nadam": ("NAdam, lr 0.5", lambda: optimizers.NAdam(0.5)),
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
    image = Image.open(buffer).convert("RGB").quantize(colors=64)
    image.save(path, optimize=True)


def bowl(p):
    """f(p) = p^T H p / 2 and its gradient H p, on whatever backend p lives."""
    xp = pn.namespace_of(p)
    h = pn.asarray(H, dtype="float64")
    g = xp.matmul(h, p)
    return 0.5 * xp.sum(p * g), g


def path_of(make) -> tuple[np.ndarray, np.ndarray]:
    opt = make()
    params = {"p": pn.asarray(START, dtype="float64")}
    points, values = [pn.to_numpy(params["p"])], []
    for _ in range(STEPS):
        value, grad = bowl(params["p"])
        values.append(float(value))
        params = opt.step(params, {"p": grad})
        points.append(pn.to_numpy(params["p"]))
    values.append(float(bowl(params["p"])[0]))
    return np.array(points), np.array(values)


def draw_path(name: str, title: str, points: np.ndarray) -> Path:
    x = np.linspace(-5, 5, 241)
    y = np.linspace(-3.5, 3.5, 181)
    X, Y = np.meshgrid(x, y)
    Z = 0.5 * (H[0, 0] * X**2 + 2 * H[0, 1] * X * Y + H[1, 1] * Y**2)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.contour(X, Y, Z, levels=np.geomspace(0.05, 120, 14), colors="0.75", linewidths=0.8)
    ax.plot(points[:, 0], points[:, 1], "-o", color="tab:blue", markersize=2.5, linewidth=1.2)
    ax.plot(*points[0], "s", color="tab:green", markersize=7, label="start")
    ax.plot(0, 0, "*", color="tab:red", markersize=11, label="minimum")
    ax.set_title(f"{title}: {STEPS} steps")
    ax.set_xlabel("curvatures 1 and 20, axes turned by 30 degrees")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_aspect("equal")
    ax.legend(loc="lower right", frameon=False)
    fig.tight_layout()
    path = OUT / f"optimizer_{name}.png"
    save(fig, path)
    return path


def draw_curves(curves: dict[str, np.ndarray]) -> Path:
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = plt.get_cmap("tab20")
    for i, (name, values) in enumerate(curves.items()):
        ax.semilogy(np.maximum(values, 1e-16), color=cmap(i % 20), linewidth=1.5, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("f(p)")
    ax.set_title("The bowl's value along each path (rates as in the path plots)")
    ax.legend(loc="lower left", frameon=False, fontsize=7, ncol=2)
    fig.tight_layout()
    path = OUT / "optimizer_loss_curves.png"
    save(fig, path)
    return path


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    written, curves = [], {}
    with pn.use_backend("numpy"):
        for name, (title, make) in OPTIMIZERS.items():
            points, values = path_of(make)
            curves[name] = values
            written.append(draw_path(name, title, points))
            print(f"{name:18s} f after {STEPS} steps: {values[-1]:.2e}")
    written.append(draw_curves(curves))
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} plots to {OUT} ({total / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
