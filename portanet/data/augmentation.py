"""Image augmentation on the device: random flips, shifts, crops and 90-degree rotations.

Each function takes a batch of NCHW images and a ``pn.random.Generator`` on the images' device
and returns a new batch of the same dtype and device. Every sample gets its own random draw, and
nothing reads values back to the host: a random choice becomes a 0/1 mask and ``xp.where``
selects between the candidates, and per-sample offsets become gather indices
(``xp.take_along_axis``). So augmentation can run inside the training loop on a GPU.

Examples:
    >>> import numpy as np
    >>> import portanet as pn
    >>> from portanet.data import augmentation as aug
    >>> gen = pn.random.Generator(seed=0, backend="numpy")
    >>> x = np.arange(2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    >>> aug.random_flip(x, gen).shape
    (2, 1, 3, 3)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import array_api_compat as compat

from .. import ops
from .._typing import Array
from ..backend import adapter_of
from ..random import Generator

__all__ = ["Augment", "random_crop", "random_flip", "random_rot90", "random_shift"]


def _check_images(x: Array, what: str) -> None:
    if getattr(x, "ndim", None) != 4:
        raise ValueError(f"{what} expects a batch of images (N, C, H, W), received shape "
                         f"{tuple(getattr(x, 'shape', ()))}.")


def _per_sample(mask: Array, ndim: int, xp) -> Array:
    """A (N,) mask reshaped to (N, 1, 1, 1) so it broadcasts over one sample's pixels."""
    return xp.reshape(mask, (mask.shape[0],) + (1,) * (ndim - 1))


def _random_ints(generator: Generator, n: int, high: int, device) -> Array:
    """n integers uniform in [0, high], drawn on the device: floor(u * (high + 1))."""
    xp = generator.backend.xp
    u = generator.uniform((n,), dtype="float64")
    k = xp.astype(xp.floor(u * float(high + 1)), xp.int64)
    return xp.clip(k, min=0, max=high)  # u < 1 already; clip guards against rounding to 1.0


def random_flip(x: Array, generator: Generator, horizontal: bool = True,
                vertical: bool = False, p: float = 0.5) -> Array:
    """Mirror each image left-right (and/or top-bottom) with probability ``p``.

    Args:
        x: images (N, C, H, W).
        generator: the device generator that draws the per-sample coin flips.
        horizontal: flip along the width axis.
        vertical: flip along the height axis (off by default: digits upside down are not digits).
        p: probability of flipping each image, per direction.

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    _check_images(x, "random_flip")
    xp = compat.array_namespace(x)
    for axis, wanted in ((3, horizontal), (2, vertical)):
        if wanted:
            coin = generator.bernoulli((x.shape[0],), p=p, dtype="bool")
            x = xp.where(_per_sample(coin, 4, xp), xp.flip(x, axis=axis), x)
    return x


def _window(padded: Array, top: Array, left: Array, height: int, width: int) -> Array:
    """Per-sample (height, width) windows of ``padded`` starting at rows ``top``, cols ``left``.

    Gathers rows then columns with ``take_along_axis``; the index arrays are built on the device
    from the per-sample offsets, so no offset value is ever read on the host.
    """
    xp = compat.array_namespace(padded)
    dev = compat.device(padded)
    n, c, _, wp = padded.shape
    rows = xp.reshape(top, (n, 1, 1, 1)) + xp.reshape(
        xp.arange(height, dtype=xp.int64, device=dev), (1, 1, height, 1))
    rows = xp.broadcast_to(rows, (n, c, height, wp))
    tall = xp.take_along_axis(padded, rows, axis=2)
    cols = xp.reshape(left, (n, 1, 1, 1)) + xp.reshape(
        xp.arange(width, dtype=xp.int64, device=dev), (1, 1, 1, width))
    cols = xp.broadcast_to(cols, (n, c, height, width))
    return xp.take_along_axis(tall, cols, axis=3)


def random_shift(x: Array, generator: Generator, max_shift: int = 2, fill: float = 0.0) -> Array:
    """Translate each image by a random (dy, dx) in [-max_shift, max_shift]^2 pixels.

    Pixels shifted in from outside take the value ``fill``. Implemented as a random crop of
    the image padded by ``max_shift`` on each side.
    """
    _check_images(x, "random_shift")
    if not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be a non-negative int, received {max_shift!r}.")
    if max_shift == 0:
        return x
    return random_crop(x, generator, size=tuple(x.shape[2:]), padding=max_shift, fill=fill)


def random_crop(x: Array, generator: Generator, size: int | Sequence[int],
                padding: int = 0, fill: float = 0.0) -> Array:
    """Cut a random ``size`` window out of each image (optionally padded by ``padding`` first).

    Args:
        x: images (N, C, H, W).
        generator: the device generator drawing each sample's window position.
        size: (height, width) of the output, or one int for a square.
        padding: pixels of ``fill`` added on every side before cropping.

    Returns:
        Images (N, C, height, width).
    """
    _check_images(x, "random_crop")
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, received {padding!r}.")
    n, _, h, w = x.shape
    hp, wp = h + 2 * padding, w + 2 * padding
    if not (0 < height <= hp and 0 < width <= wp):
        raise ValueError(f"crop size {(height, width)} must fit in the (padded) image "
                         f"{(hp, wp)}.")
    padded = ops.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), value=fill) \
        if padding else x
    dev = compat.device(x)
    top = _random_ints(generator, n, hp - height, dev)
    left = _random_ints(generator, n, wp - width, dev)
    return _window(padded, top, left, height, width)


def _rot90(x: Array, k: int) -> Array:
    """Rotate NCHW images counter-clockwise by k * 90 degrees (k in 0..3) via transpose + flip."""
    xp = compat.array_namespace(x)
    for _ in range(k % 4):
        # one quarter turn counter-clockwise: transpose H and W, then reverse the new rows
        x = xp.flip(xp.permute_dims(x, (0, 1, 3, 2)), axis=2)
    return x


def random_rot90(x: Array, generator: Generator) -> Array:
    """Rotate each (square) image by a random multiple of 90 degrees: 0, 90, 180 or 270.

    All four rotations are computed and each sample picks one with a mask; that costs four
    copies of the batch but needs no host read and no data-dependent shape.
    """
    _check_images(x, "random_rot90")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"random_rot90 needs square images to keep the shape, received "
                         f"H x W = {x.shape[2]} x {x.shape[3]}. Crop or pad to a square first.")
    xp = compat.array_namespace(x)
    k = _per_sample(_random_ints(generator, x.shape[0], 3, compat.device(x)), 4, xp)
    out = x
    for quarter in (1, 2, 3):
        out = xp.where(k == quarter, _rot90(x, quarter), out)
    return out


class Augment:
    """A chain of augmentations applied to each training batch, on the device.

    Args:
        steps: functions ``f(x, generator) -> x`` (e.g. ``functools.partial(random_shift,
            max_shift=1)``) or the names "flip", "shift", "rot90" with default settings.
        seed: seed of the device generator (created lazily on the first batch's backend).

    Examples:
        >>> import numpy as np
        >>> augment = Augment(["flip", "shift"], seed=0)
        >>> augment(np.zeros((4, 1, 8, 8), dtype=np.float32)).shape
        (4, 1, 8, 8)
    """

    _NAMED: ClassVar[dict[str, Callable]] = {
        "flip": random_flip,
        "shift": random_shift,
        "rot90": random_rot90,
    }

    def __init__(self, steps: Sequence[str | Callable], seed: int | None = None):
        self.steps = []
        for step in steps:
            if isinstance(step, str):
                if step not in self._NAMED:
                    raise ValueError(f"unknown augmentation {step!r}; known names: "
                                     f"{sorted(self._NAMED)}, or pass a function.")
                step = self._NAMED[step]
            if not callable(step):
                raise TypeError(f"augmentation steps must be names or callables, received "
                                f"{step!r}.")
            self.steps.append(step)
        self.seed = seed
        self.generator: Generator | None = None

    def ensure_generator(self, backend: str, device: Any) -> Generator:
        """The device generator for ``backend`` on ``device``, created (from ``seed``) if there
        is none there yet. A compiled training step calls it before tracing, then threads the
        generator's key through the step."""
        g = self.generator
        if g is None or g.backend.name != backend or g.backend.device != device:
            self.generator = Generator(self.seed, backend=backend, device=device)
        return self.generator

    def __call__(self, x: Array) -> Array:
        device = compat.device(x)
        # A traced batch (inside jax.jit) has no device: the compiled step placed the generator
        # before tracing, and its key is threaded through the step.
        if self.generator is None or device is not None:
            self.ensure_generator(adapter_of(x).name, device)
        for step in self.steps:
            x = step(x, self.generator)
        return x
