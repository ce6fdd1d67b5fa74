"""Pooling over time: a sequence (N, T, F) becomes one vector per sample (N, F), padding ignored.

With a mask m (N, T), 1 at real steps and 0 at padded ones (all ones without a mask):

GlobalAvgPool1D, the mean over the real steps::

    y[n] = sum_t m[n, t] x[n, t] / sum_t m[n, t]
    dL/dx[n, t] = m[n, t] dy[n] / sum_t m[n, t]        exactly 0 at padded steps

LastStep, the last real step (the summary an RNN-like reader keeps)::

    last[n] = max{t : m[n, t]}                          T - 1 without a mask
    y[n] = x[n, last[n]]
    dL/dx[n, t] = dy[n] if t = last[n] else 0

Both avoid boolean indexing and data-dependent shapes (rule 4 of DESIGN.md): padded values are
removed with ``where`` (so even inf or NaN there cannot leak into the result), and LastStep
selects its step with a one-hot comparison ``t == last[n]`` over the time axis instead of an
index read back from the device. A sample with no real step gives y = 0 and no gradient.

The time axis is gone after pooling, so both return None from :meth:`compute_mask`.
"""

from __future__ import annotations

from typing import ClassVar

import array_api_compat as compat

from .. import ops
from .._typing import Array, Shape
from ..backend import adapter_of
from .attention import check_mask
from .base import Layer, register

__all__ = ["GlobalAvgPool1D", "LastStep"]


def _check(layer: str, shape: Shape, batched: bool) -> None:
    rank = 3 if batched else 2
    if len(shape) != rank:
        expected = "(N, T, F)" if batched else "per-sample (T, F)"
        raise ValueError(f"{layer} expected input of shape {expected} (batch, time, "
                         f"features), received shape {tuple(shape)}.")


class _TimePool(Layer):
    supports_masking: ClassVar[bool] = True

    def _prepare(self, x: Array, mask: Array | None):
        _check(type(self).__name__, tuple(x.shape), batched=True)
        check_mask(mask, x, type(self).__name__)
        xp = adapter_of(x).xp
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"{type(self).__name__} expects floating-point input, received "
                            f"dtype {x.dtype}.")
        return xp

    def compute_mask(self, x: Array, mask: Array | None) -> None:
        return None  # the time axis is gone

    def output_shape(self, input_shape: Shape) -> Shape:
        _check(type(self).__name__, tuple(input_shape), batched=False)
        return (input_shape[-1],)


@register
class GlobalAvgPool1D(_TimePool):
    """The mean over the real time steps: y[n] = sum_t m[n, t] x[n, t] / sum_t m[n, t].

    Without a mask, the mean over all T steps. A sample whose steps are all padded gives 0.

    Shapes: input (N, T, F), mask (N, T) boolean (True at real steps); output (N, F).

    Examples:
        >>> import numpy as np, portanet as pn
        >>> from portanet.layers.temporal import GlobalAvgPool1D
        >>> x = pn.asarray(np.asarray([[[1.0], [3.0], [100.0]]]), dtype="float64")
        >>> y, backprop = GlobalAvgPool1D().forward(x, mask=pn.asarray([[True, True, False]]))
        >>> pn.to_numpy(y).tolist(), pn.to_numpy(backprop(y * 0 + 1)).ravel().tolist()
        ([[2.0]], [0.5, 0.5, 0.0])
    """

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        xp = self._prepare(x, mask)
        n, t, f = x.shape
        if mask is None:
            inv_t = 1.0 / t
            y = xp.mean(x, axis=1)

            def backprop(dy: Array) -> Array:
                return xp.zeros((n, t, f), dtype=dy.dtype, device=compat.device(dy)) + \
                    (dy * inv_t)[:, None, :]

            return y, backprop
        real = mask[:, :, None]                                              # (N, T, 1)
        count = xp.sum(xp.astype(mask, x.dtype), axis=1, keepdims=True)      # (N, 1)
        inv = 1.0 / ops.maximum(count, 1.0)  # 0 real steps: y = 0 / 1 = 0
        y = xp.sum(xp.where(real, x, 0.0), axis=1) * inv

        def backprop(dy: Array) -> Array:
            return xp.where(real, (dy * inv)[:, None, :], 0.0)

        return y, backprop

    def get_config(self) -> dict:
        return {"name": self.name}


@register
class LastStep(_TimePool):
    """The last real time step: y[n] = x[n, last[n]], last[n] = the largest t with m[n, t].

    Without a mask, the final step x[:, T - 1]. With right padding (the usual case) last[n]
    = length[n] - 1. A sample whose steps are all padded gives 0.

    Shapes: input (N, T, F), mask (N, T) boolean (True at real steps); output (N, F).

    Examples:
        >>> import numpy as np, portanet as pn
        >>> from portanet.layers.temporal import LastStep
        >>> x = pn.asarray(np.asarray([[[1.0], [3.0], [100.0]]]), dtype="float64")
        >>> y, backprop = LastStep().forward(x, mask=pn.asarray([[True, True, False]]))
        >>> pn.to_numpy(y).tolist(), pn.to_numpy(backprop(y * 0 + 1)).ravel().tolist()
        ([[3.0]], [0.0, 1.0, 0.0])
    """

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        xp = self._prepare(x, mask)
        n, t, f = x.shape
        if mask is None:
            y = x[:, t - 1, :]

            def backprop(dy: Array) -> Array:
                before = xp.zeros((n, t - 1, f), dtype=dy.dtype, device=compat.device(dy))
                return xp.concat([before, dy[:, None, :]], axis=1)

            return y, backprop
        steps = xp.arange(t, dtype=xp.int64, device=compat.device(x))
        last = xp.max(xp.where(mask, steps[None, :], -1), axis=1)            # (N,), -1: none
        chosen = (steps[None, :] == last[:, None])[:, :, None]               # one-hot (N, T, 1)
        y = xp.sum(xp.where(chosen, x, 0.0), axis=1)

        def backprop(dy: Array) -> Array:
            return xp.where(chosen, dy[:, None, :], 0.0)

        return y, backprop

    def get_config(self) -> dict:
        return {"name": self.name}
