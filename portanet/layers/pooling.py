"""Pooling over NCHW images: max, average, and global average.

All three summarize each window of a channel independently; none has parameters. Windows are
strided slices of the padded input, one per kernel offset (see ``_windows.py``).

Max pooling::

    y[n, c, p, q] = max_{i, j} xpad[n, c, p*sh + i, q*sw + j]        (padding is -inf)
    dL/dx: each window sends all of dy[n, c, p, q] to ONE position: the first maximum in
           row-major window order (the same choice as PyTorch), nothing to the others.

Average pooling::

    y[n, c, p, q] = (1 / count) * sum_{i, j} xpad[n, c, p*sh + i, q*sw + j]  (padding is 0)
    dL/dx: every position of the window receives dy[n, c, p, q] / count.

``count`` is kh*kw (``count_include_pad=True``, PyTorch's default) or the number of real,
non-padding pixels in the window.

Global average pooling: y[n, c] = mean over h, w of x[n, c, h, w]; dL/dx = dy[n, c] / (H*W).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .._typing import Array, Shape
from . import _windows as win
from .base import Layer, register


class _Pool2D(Layer):
    """Shared geometry of MaxPool2D and AvgPool2D."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 name: str | None = None):
        super().__init__(name)
        layer = type(self).__name__
        self.kernel_size = win.pair(kernel_size, "kernel_size", layer, 1)
        self.stride = self.kernel_size if stride is None else win.pair(stride, "stride", layer, 1)
        self.padding = win.pair(padding, "padding", layer, 0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"{layer} padding must be at most half the kernel size (so every window sees "
                f"at least one real pixel); received padding={self.padding} for "
                f"kernel_size={self.kernel_size}.")

    def _geometry(self, shape: Shape, batched: bool):
        layer = type(self).__name__
        if len(shape) != (4 if batched else 3):
            expected = "(N, C, H, W)" if batched else "(C, H, W)"
            raise ValueError(f"{layer} expected input of shape {expected} (NCHW), received "
                             f"shape {tuple(shape)}.")
        pads = ((self.padding[0],) * 2, (self.padding[1],) * 2)
        out = tuple(win.output_size(size, k, s, 1, p) for size, k, s, p in zip(
            shape[-2:], self.kernel_size, self.stride, pads, strict=True))
        if min(out) < 1:
            raise ValueError(f"{layer} input of spatial size {tuple(shape[-2:])} is smaller "
                             f"than the pooling window {self.kernel_size}.")
        return pads, out

    def _check_float(self, x: Array, xp) -> None:
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"{type(self).__name__} expects floating-point input, received "
                            f"dtype {x.dtype}. Cast it, e.g. pn.asarray(x, dtype='float32').")

    def output_shape(self, input_shape: Shape) -> Shape:
        _, out = self._geometry(tuple(input_shape), batched=False)
        return (input_shape[0], *out)

    def get_config(self) -> dict:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "name": self.name}


@register
class MaxPool2D(_Pool2D):
    """Max pooling: the largest value of each window; the gradient goes to that position.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw); default: the kernel size (non-overlapping windows).
        padding: int or (ph, pw), at most half the kernel; padded pixels are -inf.

    Shapes: (N, C, H, W) -> (N, C, OH, OW), OH = floor((H + 2 ph - kh) / sh) + 1.

    Ties: when several positions of a window hold the maximum, the whole gradient goes to the
    first of them in row-major window order (i, then j), as PyTorch does; a backend that split
    it evenly would give a different, equally valid subgradient. The mask is built from
    equality tests with the maximum, as float multiplications (no boolean indexing).

    Examples:
        >>> import portanet as pn
        >>> x = pn.asarray([[[[1.0, 2.0], [4.0, 3.0]]]])
        >>> y, backprop = pn.layers.MaxPool2D(2).forward(x)
        >>> pn.to_numpy(y).tolist(), pn.to_numpy(backprop(pn.asarray([[[[1.0]]]]))).tolist()
        ([[[[4.0]]]], [[[[0.0, 0.0], [1.0, 0.0]]]])
    """

    def forward(self, x: Array, training: bool | None = None):
        pads, out = self._geometry(tuple(x.shape), batched=True)
        xp = compat.array_namespace(x)
        self._check_float(x, xp)
        # Work on the CHWN view (batch innermost, see _windows.py): window slices and the
        # fold in backprop then move long contiguous runs of numbers.
        xpad = win.pad_spatial(win.to_chwn(x, xp), pads, -math.inf, xp)
        slices = win.window_slices(self.kernel_size, self.stride, (1, 1), out)
        windows = [xpad[:, rows, cols, :] for rows, cols in slices]  # each (C, OH, OW, N)
        top = windows[0]  # the window maxima, (C, OH, OW, N)
        for window in windows[1:]:
            top = xp.maximum(top, window)

        def backprop(dy: Array) -> Array:
            # hit_k: offset k holds the maximum and no earlier offset claimed it. Masks are
            # booleans (1 byte each) combined with logical ops; no boolean indexing.
            dy = win.to_chwn(dy, xp)
            pieces = []
            claimed = None
            for window in windows:
                is_max = window == top
                hit = is_max if claimed is None else xp.logical_and(is_max,
                                                                    xp.logical_not(claimed))
                claimed = is_max if claimed is None else xp.logical_or(claimed, is_max)
                pieces.append(dy * xp.astype(hit, dy.dtype))
            dxpad = win.fold(pieces, slices, tuple(xpad.shape), xp, dy)
            return win.to_nchw(win.crop_spatial(dxpad, pads, tuple(x.shape[2:])), xp)

        y = win.to_nchw(top, xp)
        return y, backprop


@register
class AvgPool2D(_Pool2D):
    """Average pooling: the mean of each window; the gradient is shared equally.

    Args:
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw); default: the kernel size.
        padding: int or (ph, pw) of zeros, at most half the kernel.
        count_include_pad: divide by kh*kw (True, PyTorch's default) or by the number of real
            pixels in each window (False).

    Shapes: (N, C, H, W) -> (N, C, OH, OW), as MaxPool2D.

    Examples:
        >>> import portanet as pn
        >>> y, _ = pn.layers.AvgPool2D(2).forward(pn.asarray([[[[1.0, 2.0], [4.0, 3.0]]]]))
        >>> pn.to_numpy(y).tolist()
        [[[[2.5]]]]
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True, name: str | None = None):
        super().__init__(kernel_size, stride, padding, name)
        self.count_include_pad = bool(count_include_pad)

    def _inverse_counts(self, size: tuple[int, int], pads, out) -> list[list[float]]:
        """1 / (real pixels in each window), separable into rows x columns (host numbers)."""
        counts = []
        for n, k, s, (before, _), o in zip(size, self.kernel_size, self.stride, pads, out,
                                           strict=True):
            counts.append([min(p * s - before + k, n) - max(p * s - before, 0) for p in range(o)])
        return [[1.0 / (r * c) for c in counts[1]] for r in counts[0]]

    def forward(self, x: Array, training: bool | None = None):
        pads, out = self._geometry(tuple(x.shape), batched=True)
        xp = compat.array_namespace(x)
        self._check_float(x, xp)
        xpad = win.pad_spatial(win.to_chwn(x, xp), pads, 0.0, xp)  # CHWN, see _windows.py
        slices = win.window_slices(self.kernel_size, self.stride, (1, 1), out)
        total = None
        for rows, cols in slices:
            window = xpad[:, rows, cols, :]
            total = window if total is None else total + window
        if self.count_include_pad or pads == ((0, 0), (0, 0)):
            scale: Any = 1.0 / (self.kernel_size[0] * self.kernel_size[1])
        else:  # (OH, OW, 1): broadcasts over C in front and N behind
            scale = xp.asarray(self._inverse_counts(tuple(x.shape[2:]), pads, out),
                               dtype=x.dtype, device=compat.device(x))[:, :, None]
        y = win.to_nchw(total * scale, xp)

        def backprop(dy: Array) -> Array:
            share = win.to_chwn(dy, xp) * scale
            dxpad = win.fold([share] * len(slices), slices, tuple(xpad.shape), xp, dy)
            return win.to_nchw(win.crop_spatial(dxpad, pads, tuple(x.shape[2:])), xp)

        return y, backprop

    def get_config(self) -> dict:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


@register
class GlobalAvgPool2D(Layer):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C).

    Forward y[n, c] = (1 / (H W)) sum_{h, w} x[n, c, h, w]; backward dL/dx[n, c, h, w] =
    dy[n, c] / (H W). Replaces Flatten + a large Dense at the end of a CNN.

    Examples:
        >>> import portanet as pn
        >>> y, _ = pn.layers.GlobalAvgPool2D().forward(pn.asarray([[[[1.0, 2.0], [3.0, 6.0]]]]))
        >>> pn.to_numpy(y).tolist()
        [[3.0]]
    """

    def forward(self, x: Array, training: bool | None = None):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPool2D expected input of shape (N, C, H, W), received "
                             f"shape {tuple(x.shape)}.")
        xp = compat.array_namespace(x)
        shape = tuple(x.shape)
        y = xp.mean(x, axis=(2, 3))

        def backprop(dy: Array) -> Array:
            return xp.broadcast_to(dy[:, :, None, None] * (1.0 / (shape[2] * shape[3])), shape)

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAvgPool2D expected per-sample shape (C, H, W), received "
                             f"{tuple(input_shape)}.")
        return (input_shape[0],)
