"""Data sets that need no download: generated toy problems and scikit-learn's 8x8 digits.

All return host NumPy arrays (float32 inputs, int64 class labels); training moves them to the
active device once. Generated sets are fully determined by their ``seed``.

Examples:
    >>> from portanet.data import make_spiral
    >>> x, y = make_spiral(n_samples=300, n_classes=3, seed=0)
    >>> x.shape, y.shape, sorted(set(y.tolist()))
    ((300, 2), (300,), [0, 1, 2])
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..random import host_generator

__all__ = [
    "DATASETS",
    "Dataset",
    "load_dataset",
    "load_digits",
    "make_circles",
    "make_noisy_sine",
    "make_spiral",
    "sklearn_available",
]


@dataclass
class Dataset:
    """Inputs, targets and what a model needs to know about them. Unpacks as ``x, y = data``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" or "regression"
    num_classes: int | None = None
    image_shape: tuple[int, ...] | None = None  # (C, H, W) when the inputs are images
    class_names: list[str] | None = None
    description: str = field(default="", repr=False)
    x_test: np.ndarray | None = field(default=None, repr=False)  # an official test split, if any
    y_test: np.ndarray | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x, self.y))

    def __len__(self) -> int:
        return len(self.x)


def _check_count(n: Any, what: str, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, received {n!r}.")
    return n


def _check_noise(noise: Any) -> float:
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not noise >= 0:
        raise ValueError(f"noise must be a non-negative number, received {noise!r}.")
    return float(noise)


def _split_count(n_samples: int, parts: int) -> list[int]:
    """n_samples shared as evenly as possible among ``parts`` (the first get one more)."""
    base, extra = divmod(n_samples, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def make_spiral(n_samples: int = 300, n_classes: int = 3, noise: float = 0.2,
                turns: float = 0.75, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class: the classic "not linearly separable" toy set.

    Arm k: radius r = t and angle theta = 2*pi*k/K + 2*pi*turns*t + noise * N(0, 1), for t
    evenly spaced in [0, 1]; the point is (r cos theta, r sin theta).

    Returns:
        x (N, 2) float32 and y (N,) int64 in 0..n_classes-1.
    """
    n_samples = _check_count(n_samples, "n_samples", minimum=2)
    n_classes = _check_count(n_classes, "n_classes", minimum=2)
    noise = _check_noise(noise)
    rng = host_generator(seed, (1,))
    xs, ys = [], []
    for k, count in enumerate(_split_count(n_samples, n_classes)):
        t = np.linspace(0.0, 1.0, count)
        theta = 2 * math.pi * k / n_classes + 2 * math.pi * turns * t + \
            noise * rng.standard_normal(count)
        xs.append(np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1))
        ys.append(np.full(count, k, dtype=np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def make_circles(n_samples: int = 300, noise: float = 0.05, factor: float = 0.5,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles: the outer (radius 1) is class 0, the inner (radius ``factor``) 1.

    Points sit at uniformly random angles, plus N(0, noise^2) on each coordinate.
    """
    n_samples = _check_count(n_samples, "n_samples", minimum=2)
    noise = _check_noise(noise)
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor (inner radius / outer radius) must be in (0, 1), received "
                         f"{factor!r}.")
    rng = host_generator(seed, (2,))
    n_outer, n_inner = _split_count(n_samples, 2)
    xs, ys = [], []
    for label, (count, radius) in enumerate(((n_outer, 1.0), (n_inner, factor))):
        angle = rng.uniform(0.0, 2 * math.pi, count)
        xs.append(radius * np.stack([np.cos(angle), np.sin(angle)], axis=1))
        ys.append(np.full(count, label, dtype=np.int64))
    x = np.concatenate(xs) + noise * rng.standard_normal((n_samples, 2))
    return x.astype(np.float32), np.concatenate(ys)


def make_noisy_sine(n_samples: int = 300, noise: float = 0.1, low: float = -math.pi,
                    high: float = math.pi, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A regression set: y = sin(x) + N(0, noise^2), with x uniform in [low, high).

    Returns:
        x (N, 1) and y (N, 1), both float32.
    """
    n_samples = _check_count(n_samples, "n_samples")
    noise = _check_noise(noise)
    if not low < high:
        raise ValueError(f"need low < high, received low={low!r}, high={high!r}.")
    rng = host_generator(seed, (3,))
    x = rng.uniform(low, high, (n_samples, 1))
    y = np.sin(x) + noise * rng.standard_normal((n_samples, 1))
    return x.astype(np.float32), y.astype(np.float32)


def sklearn_available() -> bool:
    """True when scikit-learn (the source of the digits set) is installed."""
    return importlib.util.find_spec("sklearn") is not None


def load_digits(images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 handwritten digits bundled with scikit-learn (no download).

    Pixel values 0..16 are scaled to [0, 1].

    Args:
        images: return x as (N, 1, 8, 8) images for a CNN instead of (N, 64) vectors.

    Returns:
        x float32 and y int64 in 0..9.
    """
    if not sklearn_available():
        raise ImportError("the digits data set comes from scikit-learn, which is not installed. "
                          "Install it with: pip install 'portanet[datasets]' (or pip install "
                          "scikit-learn), or use a generated set such as make_spiral().")
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, dtype=np.float32) / 16.0)
    x = x[:, None, :, :] if images else x.reshape(len(x), -1)
    return x, np.asarray(bunch.target, dtype=np.int64)


DATASETS = ("digits", "spiral", "circles", "sine", "mnist", "fashion-mnist")
"""Names :func:`load_dataset` knows."""


def load_dataset(name: str, images: bool = False, seed: int = 0, path: str | None = None,
                 **kwargs: Any) -> Dataset:
    """A named data set as a :class:`Dataset` (what ``portanet train --dataset`` uses).

    Args:
        name: one of :data:`DATASETS`. "mnist" and "fashion-mnist" read the IDX files from
            ``path`` (a folder; see :func:`portanet.data.load_mnist`).
        images: image sets as (N, C, H, W) (for a CNN) instead of flat vectors.
        seed: seed of the generated sets.
        **kwargs: passed to the generator (e.g. ``n_samples``, ``noise``).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key == "digits":
        x, y = load_digits(images=images)
        return Dataset("digits", x, y, "classification", 10, (1, 8, 8),
                       [str(i) for i in range(10)], "8x8 handwritten digits (scikit-learn)")
    if key == "spiral":
        x, y = make_spiral(seed=seed, **kwargs)
        return Dataset("spiral", x, y, "classification", int(y.max()) + 1,
                       description="generated spiral arms")
    if key == "circles":
        x, y = make_circles(seed=seed, **kwargs)
        return Dataset("circles", x, y, "classification", 2,
                       description="generated concentric circles")
    if key == "sine":
        x, y = make_noisy_sine(seed=seed, **kwargs)
        return Dataset("sine", x, y, "regression", description="generated noisy sine")
    if key in ("mnist", "fashion-mnist"):
        from .idx import FASHION_CLASSES, load_mnist

        if path is None:
            raise ValueError(f"{key} is not bundled: download its four IDX files and pass the "
                             "folder, e.g. load_dataset('mnist', path='~/data/mnist') or "
                             "portanet train --dataset mnist --data-dir ~/data/mnist.")
        x, y = load_mnist(path, kind="train", images=images)
        x_test, y_test = load_mnist(path, kind="test", images=images)
        names = FASHION_CLASSES if key == "fashion-mnist" else [str(i) for i in range(10)]
        return Dataset(key, x, y, "classification", 10, (1, 28, 28), list(names),
                       f"{key} from {path}", x_test, y_test)
    raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}.")
