"""Image augmentation on the device: flips, shifts, crops, rotations, zoom, brightness,
contrast and grayscale.

Each ``random_*`` function takes a batch of NCHW images and a ``pn.random.Generator`` on the
images' device and returns a new batch of the same dtype and device. Every sample gets its own
random draw, and nothing reads values back to the host: a random choice becomes a 0/1 mask and
``xp.where`` selects between the candidates, per-sample offsets become gather indices
(``xp.take_along_axis``), and per-sample angles and scales become the coordinates a bilinear
sampler gathers from (``xp.take``). No shape depends on a drawn value, so augmentation runs
inside the training step, compiled (``jax.jit``) or not, on a GPU as on a CPU.

=====================  =========================================================================
function               each sample n (parameters drawn per sample)
=====================  =========================================================================
random_flip            x[..., ::-1] with probability p (per direction)
random_shift           x translated by (dy, dx) in [-s, s]^2, ``fill`` shifted in
random_crop            a (h, w) window at a random position of the (padded) image
random_rot90           x rotated by k * 90 degrees, k in {0, 1, 2, 3}
random_rotation        y(p) = x(c + R(-theta)(p - c)), theta ~ U[-max_degrees, max_degrees]
random_zoom            y(p) = x(c + (p - c) / s), s ~ U[low, high]  (s > 1 magnifies)
random_brightness      y = x + delta, delta ~ U[-max_delta, max_delta]
random_contrast        y = (x - mean(x)) * f + mean(x), f ~ U[lower, upper], mean over (C, H, W)
random_grayscale       with probability p: y_c = 0.299 R + 0.587 G + 0.114 B for c = R, G, B
=====================  =========================================================================

Rotation and zoom map every output pixel p back to its source point (inverse mapping, so every
output pixel gets exactly one value) and interpolate bilinearly there; see :func:`rotate`.
Values are never clipped unless asked: ``random_brightness`` and ``random_contrast`` take
``clip=(low, high)``; the others only mix existing values (and ``fill``), so they cannot leave
the range of the input and ``fill``.

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

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import array_api_compat as compat

from .. import ops
from .._typing import Array
from ..backend import adapter_of
from ..random import Generator

__all__ = [
    "LUMA_WEIGHTS",
    "Augment",
    "grayscale",
    "random_brightness",
    "random_contrast",
    "random_crop",
    "random_flip",
    "random_grayscale",
    "random_rot90",
    "random_rotation",
    "random_shift",
    "random_zoom",
    "rotate",
    "zoom",
]


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


# ---------------------------------------------------------------------------------------------
# Checks shared by the value-changing augmentations below.
# ---------------------------------------------------------------------------------------------
def _check_float_images(x: Array, what: str) -> Any:
    """A batch of floating-point NCHW images; returns its namespace."""
    _check_images(x, what)
    xp = compat.array_namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{what} computes new pixel values, so it needs floating-point images; "
                        f"received dtype {x.dtype}. Convert first, e.g. "
                        "x = pn.asarray(x, dtype='float32') / 255.")
    return xp


def _finite_number(value: Any, name: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}: {name} must be a finite number, received {value!r}.")
    return float(value)


def _range(value: Any, name: str, what: str, low_bound: float, strict: bool) -> tuple[float,
                                                                                    float]:
    """A (low, high) pair with bound <= low <= high (bound < low when ``strict``)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{what}: {name} must be a pair (low, high), received {value!r}.")
    low, high = (_finite_number(v, name, what) for v in value)
    if not (low > low_bound if strict else low >= low_bound) or low > high:
        rel = ">" if strict else ">="
        raise ValueError(f"{what}: {name} must satisfy low <= high and low {rel} {low_bound}, "
                         f"received {tuple(value)!r}.")
    return low, high


def _clip(y: Array, clip: Any, what: str) -> Array:
    """``clip(y, low, high)`` when ``clip`` is a pair; None leaves y as it is."""
    if clip is None:
        return y
    low, high = _range(clip, "clip", what, -math.inf, strict=False)
    return compat.array_namespace(y).clip(y, min=low, max=high)


def _check_probability(p: Any, what: str) -> float:
    p = _finite_number(p, "p", what)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{what}: p must be a probability in [0, 1], received p={p!r}.")
    return p


def _per_sample_values(x: Array, values: Any, name: str, what: str) -> Array:
    """One number per sample, as an (N,) array of x's dtype on x's device: a Python number is
    used for every sample; an array (e.g. drawn by a generator) must have shape (N,)."""
    xp = compat.array_namespace(x)
    n = x.shape[0]
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return xp.full((n,), _finite_number(values, name, what), dtype=x.dtype,
                       device=compat.device(x))
    if not hasattr(values, "shape"):
        values = xp.asarray(values, dtype=x.dtype, device=compat.device(x))
    if tuple(values.shape) != (n,):
        raise ValueError(f"{what}: {name} must be one number or one per sample, shape ({n},); "
                         f"received shape {tuple(values.shape)}.")
    return xp.astype(values, x.dtype)


# ---------------------------------------------------------------------------------------------
# Geometry: inverse mapping with bilinear interpolation.
# ---------------------------------------------------------------------------------------------
def _bilinear(x: Array, rows: Array, cols: Array, fill: float) -> Array:
    """Sample every image of ``x`` (N, C, H, W) at real coordinates ``rows``, ``cols`` (N, H, W).

    With r0 = floor(r), c0 = floor(c), fr = r - r0, fc = c - c0, the value at (r, c) is::

        (1-fr)(1-fc) x[r0, c0] + (1-fr) fc x[r0, c0+1] + fr (1-fc) x[r0+1, c0] + fr fc x[r0+1, c0+1]

    where a corner outside the image counts as ``fill`` (so the image fades into ``fill`` over
    one pixel at its border; torch's ``grid_sample(align_corners=True)`` does the same with 0).
    The four corners are gathered with ``xp.take`` from the flattened batch: the index of pixel
    (r, c) of channel k of image n is ((n C + k) H + r) W + c. Indices are clamped into the
    image first, so every gather is in bounds; ``xp.where`` then puts ``fill`` where the corner
    was outside.
    """
    xp = compat.array_namespace(x)
    dev = compat.device(x)
    n, c, h, w = x.shape
    r0f, c0f = xp.floor(rows), xp.floor(cols)
    fr, fc = rows - r0f, cols - c0f  # in [0, 1): the distances past the top-left corner
    r0, c0 = xp.astype(r0f, xp.int64), xp.astype(c0f, xp.int64)
    flat = xp.reshape(x, (n * c * h * w,))
    start = xp.reshape(xp.arange(n * c, dtype=xp.int64, device=dev) * (h * w), (n, c, 1, 1))
    fill_value = xp.asarray(fill, dtype=x.dtype, device=dev)
    out = None
    for dr, weight_r in ((0, 1.0 - fr), (1, fr)):
        for dc, weight_c in ((0, 1.0 - fc), (1, fc)):
            r, cc = r0 + dr, c0 + dc
            inside = (r >= 0) & (r < h) & (cc >= 0) & (cc < w)  # (N, H, W)
            pixel = xp.clip(r, min=0, max=h - 1) * w + xp.clip(cc, min=0, max=w - 1)
            index = xp.reshape(start + pixel[:, None, :, :], (n * c * h * w,))
            value = xp.reshape(xp.take(flat, index), (n, c, h, w))
            value = xp.where(inside[:, None, :, :], value, fill_value)
            term = (weight_r * weight_c)[:, None, :, :] * value
            out = term if out is None else out + term
    return out


def _warp(x: Array, m: tuple[Array, Array, Array, Array], fill: float) -> Array:
    """Output pixel p samples the input at c + M (p - c), M = [[m0, m1], [m2, m3]] per sample.

    Coordinates: p = (u, v) = (col - cx, row - cy), centred at c = ((W-1)/2, (H-1)/2), u to
    the right, v down; the source point is u_s = m0 u + m1 v, v_s = m2 u + m3 v.
    """
    xp = compat.array_namespace(x)
    dev = compat.device(x)
    _, _, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    v = xp.reshape(xp.arange(h, dtype=x.dtype, device=dev) - cy, (1, h, 1))
    u = xp.reshape(xp.arange(w, dtype=x.dtype, device=dev) - cx, (1, 1, w))
    m0, m1, m2, m3 = (xp.reshape(e, (e.shape[0], 1, 1)) for e in m)
    cols = cx + (m0 * u + m1 * v)
    rows = cy + (m2 * u + m3 * v)
    return _bilinear(x, rows, cols, fill)


def rotate(x: Array, degrees: Any, fill: float = 0.0) -> Array:
    """Rotate each image counter-clockwise by ``degrees`` about its centre (bilinear).

    Inverse mapping: output pixel p takes the input at c + R(-theta)(p - c), theta in radians,
    c = ((W-1)/2, (H-1)/2). In (u, v) = (col - cx, row - cy), v pointing down::

        u_s = cos(theta) u - sin(theta) v,     v_s = sin(theta) u + cos(theta) v

    so 90 degrees is ``random_rot90``'s quarter turn (``np.rot90``) on square images, up to
    float rounding, and 0 degrees returns x exactly. Source points outside the image take
    ``fill``; corners rotated out of the frame are lost (the shape is kept).

    Args:
        x: floating-point images (N, C, H, W).
        degrees: one angle for every image, or an (N,) array of angles on x's device.
        fill: the value of pixels that come from outside the image.

    Returns:
        Images (N, C, H, W), same dtype and device.

    Examples:
        >>> import numpy as np
        >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
        >>> np.round(rotate(x, 90.0), 12)[0, 0].tolist() == np.rot90(x[0, 0]).tolist()
        True
    """
    xp = _check_float_images(x, "rotate")
    fill = _finite_number(fill, "fill", "rotate")
    theta = _per_sample_values(x, degrees, "degrees", "rotate") * (math.pi / 180.0)
    cos, sin = xp.cos(theta), xp.sin(theta)
    return _warp(x, (cos, -sin, sin, cos), fill)


def zoom(x: Array, factor: Any, fill: float = 0.0) -> Array:
    """Scale each image by ``factor`` about its centre (bilinear): > 1 magnifies, < 1 shrinks.

    Inverse mapping: output pixel p takes the input at c + (p - c) / factor. Zooming out
    brings in ``fill`` at the border; factor 1 returns x exactly.

    Args:
        x: floating-point images (N, C, H, W).
        factor: one scale (> 0) for every image, or an (N,) array of scales on x's device.
        fill: the value of pixels that come from outside the image.

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    xp = _check_float_images(x, "zoom")
    fill = _finite_number(fill, "fill", "zoom")
    if isinstance(factor, (int, float)) and not isinstance(factor, bool) and not factor > 0:
        raise ValueError(f"zoom: factor must be > 0, received {factor!r}.")
    inverse = 1.0 / _per_sample_values(x, factor, "factor", "zoom")
    zero = xp.zeros_like(inverse)
    return _warp(x, (inverse, zero, zero, inverse), fill)


def random_rotation(x: Array, generator: Generator, max_degrees: float = 15.0,
                    fill: float = 0.0) -> Array:
    """Rotate each image by its own angle theta ~ U[-max_degrees, max_degrees] (see :func:`rotate`).

    Args:
        x: floating-point images (N, C, H, W).
        generator: the device generator; it draws one uniform per sample, in x's dtype.
        max_degrees: the largest rotation either way (>= 0; 0 returns x).
        fill: the value of pixels that come from outside the image.

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    _check_float_images(x, "random_rotation")
    max_degrees = _finite_number(max_degrees, "max_degrees", "random_rotation")
    if max_degrees < 0:
        raise ValueError(f"random_rotation: max_degrees must be >= 0 (the range is "
                         f"[-max_degrees, max_degrees]), received {max_degrees!r}.")
    degrees = generator.uniform((x.shape[0],), low=-max_degrees, high=max_degrees,
                                dtype=x.dtype)
    return rotate(x, degrees, fill)


def random_zoom(x: Array, generator: Generator, zoom_range: Sequence[float] = (0.9, 1.1),
                fill: float = 0.0) -> Array:
    """Scale each image by its own factor s ~ U[low, high] (see :func:`zoom`).

    Args:
        x: floating-point images (N, C, H, W).
        generator: the device generator; it draws one uniform per sample, in x's dtype.
        zoom_range: (low, high) with 0 < low <= high; s > 1 magnifies.
        fill: the value of pixels that come from outside the image.

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    _check_float_images(x, "random_zoom")
    low, high = _range(zoom_range, "zoom_range", "random_zoom", 0.0, strict=True)
    factor = generator.uniform((x.shape[0],), low=low, high=high, dtype=x.dtype)
    return zoom(x, factor, fill)


# ---------------------------------------------------------------------------------------------
# Pixel values: brightness, contrast, grayscale.
# ---------------------------------------------------------------------------------------------
def random_brightness(x: Array, generator: Generator, max_delta: float = 0.1,
                      clip: Sequence[float] | None = None) -> Array:
    """Add one offset per image: y = x + delta, delta ~ U[-max_delta, max_delta].

    Args:
        x: floating-point images (N, C, H, W).
        generator: the device generator; it draws one uniform per sample, in x's dtype.
        max_delta: the largest offset either way (>= 0), in the images' units.
        clip: None (default: no clipping) or (low, high), e.g. (0.0, 1.0) for images in [0, 1].

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    xp = _check_float_images(x, "random_brightness")
    max_delta = _finite_number(max_delta, "max_delta", "random_brightness")
    if max_delta < 0:
        raise ValueError(f"random_brightness: max_delta must be >= 0, received {max_delta!r}.")
    delta = generator.uniform((x.shape[0],), low=-max_delta, high=max_delta, dtype=x.dtype)
    return _clip(x + _per_sample(delta, 4, xp), clip, "random_brightness")


def random_contrast(x: Array, generator: Generator, lower: float = 0.8, upper: float = 1.2,
                    clip: Sequence[float] | None = None) -> Array:
    """Scale each image's deviations from its mean: y = (x - m) * f + m, f ~ U[lower, upper].

    m is the image's mean over all its channels and pixels (one number per image), so the mean
    is kept and f = 0 gives a flat gray image. (tf.image.adjust_contrast uses one mean per
    channel instead.)

    Args:
        x: floating-point images (N, C, H, W).
        generator: the device generator; it draws one uniform per sample, in x's dtype.
        lower, upper: the range of f, 0 <= lower <= upper.
        clip: None (default: no clipping) or (low, high).

    Returns:
        Images (N, C, H, W), same dtype and device.
    """
    xp = _check_float_images(x, "random_contrast")
    lower, upper = _range((lower, upper), "(lower, upper)", "random_contrast", 0.0, strict=False)
    factor = _per_sample(generator.uniform((x.shape[0],), low=lower, high=upper,
                                           dtype=x.dtype), 4, xp)
    mean = xp.mean(x, axis=(1, 2, 3), keepdims=True)
    return _clip((x - mean) * factor + mean, clip, "random_contrast")


#: ITU-R BT.601 luma weights of (R, G, B).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def grayscale(x: Array) -> Array:
    """The luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) of RGB images, in all 3 channels.

    One-channel images are already gray and are returned as they are.

    Args:
        x: floating-point images (N, 3, H, W) (RGB) or (N, 1, H, W).

    Returns:
        Images of x's shape, dtype and device.
    """
    xp = _check_float_images(x, "grayscale")
    channels = x.shape[1]
    if channels == 1:
        return x
    if channels != 3:
        raise ValueError(f"grayscale needs RGB images (N, 3, H, W) or gray ones (N, 1, H, W); "
                         f"received {channels} channels (shape {tuple(x.shape)}).")
    r, g, b = LUMA_WEIGHTS
    luma = r * x[:, 0:1, ...] + g * x[:, 1:2, ...] + b * x[:, 2:3, ...]
    return xp.broadcast_to(luma, tuple(x.shape))


def random_grayscale(x: Array, generator: Generator, p: float = 0.1) -> Array:
    """With probability ``p``, replace an RGB image by its luma in all 3 channels.

    The luma is :func:`grayscale`'s, Y = 0.299 R + 0.587 G + 0.114 B.

    One-channel images are returned unchanged (a gray image is its own luma).

    Args:
        x: floating-point images (N, 3, H, W) or (N, 1, H, W).
        generator: the device generator; it draws one coin per sample.
        p: the probability of turning each image gray.

    Returns:
        Images of x's shape, dtype and device.
    """
    xp = _check_float_images(x, "random_grayscale")
    p = _check_probability(p, "random_grayscale")
    if x.shape[1] == 1:
        return x
    gray = grayscale(x)  # raises for channel counts other than 1 and 3
    coin = generator.bernoulli((x.shape[0],), p=p, dtype="bool")
    return xp.where(_per_sample(coin, 4, xp), gray, x)


class Augment:
    """A chain of augmentations applied to each training batch, on the device.

    Args:
        steps: functions ``f(x, generator) -> x`` (e.g. ``functools.partial(random_rotation,
            max_degrees=10)``) or the names "flip", "shift", "rot90", "rotate", "zoom",
            "brightness", "contrast", "grayscale" (each function with its default settings).
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
        "rotate": random_rotation,
        "zoom": random_zoom,
        "brightness": random_brightness,
        "contrast": random_contrast,
        "grayscale": random_grayscale,
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
