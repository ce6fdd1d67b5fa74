"""Sliding windows over images, for convolution and pooling, with strided slices only.

The array API standard has no convolution, no ``as_strided`` and no scatter-add. Every output
pixel of a 2-D window operation reads input pixel ``(oh * stride + i * dilation, ...)`` for each
kernel offset ``(i, j)``. For a *fixed* offset those input pixels form a regular grid, i.e. one
strided slice of the (padded) input::

    x[:, i*dh : i*dh + sh*(OH-1) + 1 : sh, j*dw : j*dw + sw*(OW-1) + 1 : sw, :]   # (C, OH, OW, N)

So a window operation is a loop over the ``kh * kw`` offsets, each one strided slice, and its
backward pass adds each offset's gradient back into the same strided slice of a zero image
(:func:`fold`). Within one slice the positions are distinct, so no scatter with duplicate
indices is ever needed; overlapping windows (stride < kernel) are summed across offsets.

Layout: the layers take and return NCHW arrays, but work on the *view* ``(C, H, W, N)``
(:func:`to_chwn`, a free transpose). Why: with the batch innermost, one window slice is a few
long contiguous runs (``OW * N`` numbers per row) instead of many runs of ``OW`` numbers
(LeNet's maps are 10-28 pixels wide), so copying windows out and adding gradients back in run
several times faster on CPUs. And the columns ``(kh*kw*C, OH*OW*N)`` (the ``kh*kw`` slices
stacked, offsets outermost) then feed ONE large matmul for the whole batch instead of one small
matmul per image. Results handed back are NCHW views
of CHWN memory; the next window layer transposes them back for free.
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import array_api_extra as xpx

from .._typing import Array, Namespace

Pair = tuple[int, int]


def pair(value: Any, what: str, layer: str, minimum: int) -> Pair:
    """``3`` -> ``(3, 3)``; ``(3, 2)`` stays; anything else is a clear error."""
    given = value
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and all(v >= minimum for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{layer} {what} must be an int >= {minimum} or a pair of them, "
                     f"received {what}={given!r}.")


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> Pair:
    """(before, after) padding so that the output has ``ceil(size / stride)`` positions.

    The extent of a dilated kernel is ``dilation * (kernel - 1) + 1``; the padding needed is
    ``max((out - 1) * stride + extent - size, 0)``, split with the odd pixel after (as PyTorch
    and TensorFlow do). With stride 1 the output has exactly ``size`` positions.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def output_size(size: int, kernel: int, stride: int, dilation: int, pad: Pair) -> int:
    """floor((size + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def window_slices(kernel: Pair, stride: Pair, dilation: Pair,
                  out: Pair) -> list[tuple[slice, slice]]:
    """The strided slice of the padded input that each kernel offset (i, j) reads, row-major."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out
    rows = [slice(i * dh, i * dh + sh * (oh - 1) + 1, sh) for i in range(kh)]
    cols = [slice(j * dw, j * dw + sw * (ow - 1) + 1, sw) for j in range(kw)]
    return [(r, c) for r in rows for c in cols]


def to_chwn(x: Array, xp: Namespace) -> Array:
    """NCHW -> CHWN (a transposed view; no copy where the backend has views)."""
    return xp.permute_dims(x, (1, 2, 3, 0))


def to_nchw(x: Array, xp: Namespace) -> Array:
    """CHWN -> NCHW, the inverse of :func:`to_chwn`."""
    return xp.permute_dims(x, (3, 0, 1, 2))


def pad_spatial(x: Array, padding: tuple[Pair, Pair], value: float, xp: Namespace) -> Array:
    """Pad the (H, W) axes 1 and 2 of a CHWN array with ``value`` (no copy if no padding)."""
    (top, bottom), (left, right) = padding
    if top == bottom == left == right == 0:
        return x
    return xpx.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value,
                   xp=xp)


def crop_spatial(x: Array, padding: tuple[Pair, Pair], size: Pair) -> Array:
    """Undo :func:`pad_spatial`: the (H, W) region of the unpadded CHWN input."""
    (top, _), (left, _) = padding
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return x[:, top:top + size[0], left:left + size[1], :]


def fold(pieces: list[Array], slices: list[tuple[slice, slice]], shape: tuple[int, ...],
         xp: Namespace, like: Array) -> Array:
    """Sum each ``pieces[k]`` (C, OH, OW, N) into window ``slices[k]`` of a zero CHWN image.

    The adjoint of taking the windows: d(input) = sum over offsets of d(window), placed where
    the window was read. ``array_api_extra.at`` adds in place where arrays are writeable (NumPy,
    CuPy, torch, strict) and rebinds on JAX, whose arrays are immutable.
    """
    out = xp.zeros(shape, dtype=like.dtype, device=compat.device(like))
    for piece, (rows, cols) in zip(pieces, slices, strict=True):
        out = xpx.at(out)[:, rows, cols, :].add(piece, xp=xp)
    return out
