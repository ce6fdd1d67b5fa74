"""Preprocessing inside the model: Standardize, so a saved model predicts on raw inputs.

A scaler fitted outside the model (``pn.data.StandardScaler``) is forgotten when the model is
saved: whoever loads the checkpoint must know the statistics and apply them by hand, or the
model scores on data it never saw the like of. As a layer the statistics are *buffers*
(non-trainable state), so every checkpoint stores them and ``pn.load`` rebuilds them::

    y = (x - mean) / scale                        forward
    dL/dx = dL/dy / scale                         backward (dy/dx is diagonal)

``mean`` and ``scale`` come from the training data (:meth:`Standardize.adapt`, Keras'
``Normalization.adapt``): the mean and the population standard deviation, with the rule of
``pn.data.StandardScaler`` for a constant feature (a standard deviation below 10 machine
epsilons of the layer's dtype is rounding noise, not spread: its scale is 1, so the feature
maps to 0 instead of dividing by ~0).
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .. import initializers
from .._typing import Array, Shape
from ..backend import adapter_of, make_backend
from ..errors import abridged
from .base import Layer, register

__all__ = ["Standardize"]


def _statistics_shape(shape: Any) -> tuple[int, ...]:
    """``shape`` as a tuple of positive ints, or a clear error saying what was received."""
    dims = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else shape
    if (not isinstance(dims, (tuple, list)) or not dims
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
        raise ValueError("Standardize shape must be a positive int (the number of features) or "
                         "a non-empty tuple of positive ints (e.g. the sample shape (1, 8, 8)), "
                         f"received shape={abridged(shape)}.")
    return tuple(dims)


@register
class Standardize(Layer):
    """Standardize each feature with statistics of the training data: y = (x - mean) / scale.

    Call :meth:`adapt` once with the training inputs; until then the layer is the identity
    (mean 0, scale 1). The statistics are buffers, so ``model.save`` stores them and the loaded
    model standardizes raw inputs by itself. This is ``pn.data.StandardScaler`` (same formula,
    same rule for constant features) made part of the model, like Keras' ``Normalization``.

    The statistics have ``shape``, aligned with the trailing axes of one sample. An axis of size
    1 in ``shape`` is shared: :meth:`adapt` averages over it, and the forward pass broadcasts.

    * ``Standardize(64)`` on (N, 64) features: one mean and scale per feature.
    * ``Standardize((1, 8, 8))`` on (N, 1, 8, 8) images: one per pixel (what
      ``StandardScaler()`` does with its default ``axis=0``).
    * ``Standardize((3, 1, 1))`` on (N, 3, H, W) images: one per channel.
    * ``Standardize(F)`` on (N, T, F) sequences: one per feature, shared over time.

    Backward: each output depends on its own input only, dy_i/dx_i = 1 / scale_i, so
    dL/dx = dL/dy / scale. There are no parameters (``mean`` and ``scale`` are not trained).

    Args:
        shape: int or tuple, the shape of the statistics (see above).
        name: optional display name.

    Shapes: (N, ..., *shape) with each axis equal to ``shape``'s or ``shape``'s being 1; output
    the same. Buffers "mean" and "scale", of ``shape``.

    Examples:
        >>> import numpy as np
        >>> import portanet as pn
        >>> layer = pn.layers.Standardize(2).build(dtype="float64")
        >>> layer.adapt(np.array([[1.0, 5.0], [3.0, 5.0]]))
        Standardize(shape=[2])
        >>> y, _ = layer.forward(pn.asarray([[2.0, 5.0], [5.0, 6.0]], dtype="float64"))
        >>> pn.to_numpy(y).tolist()    # feature 2 is constant in the data: scale 1
        [[0.0, 0.0], [3.0, 1.0]]
    """

    def __init__(self, shape: Any, name: str | None = None):
        super().__init__(name)
        self.shape = _statistics_shape(shape)

    def buffer_specs(self):
        # The identity until adapted: mean 0, scale 1.
        return {"mean": (self.shape, initializers.Zeros()),
                "scale": (self.shape, initializers.Ones())}

    def _check(self, shape: Shape, batched: bool) -> None:
        k = len(self.shape)
        trailing = tuple(shape[len(shape) - k:]) if len(shape) >= k else ()
        if len(shape) < k + batched or not all(
                s == 1 or s == d for s, d in zip(self.shape, trailing, strict=True)):
            where = "(N, ..., *shape)" if batched else "(..., *shape)"
            raise ValueError(f"Standardize with statistics of shape {self.shape} expected input "
                             f"of shape {where}, each trailing axis equal to shape's (or "
                             f"shape's being 1), received shape {tuple(shape)}. Build the "
                             "layer with the shape of one sample, e.g. "
                             f"Standardize({tuple(shape[1:]) if batched else tuple(shape)}).")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._check(tuple(input_shape), batched=False)
        return tuple(input_shape)

    # -- the statistics ----------------------------------------------------------------------
    def adapt(self, x: Any) -> Standardize:
        """Set ``mean`` and ``scale`` from the training inputs ``x`` (N, ..., *shape); returns
        self.

        The statistics are computed on the host in float64, whatever the backend and dtype of
        ``x``, then cast to the layer's dtype and moved to its backend and device: the same
        data gives the same buffers on every backend, and float32 sums over many samples lose
        no digits. One copy of ``x`` to the host, once, before training (never in a step)::

            mean  = mean(x)                     over the samples and the shared axes
            std   = sqrt(mean((x - mean)^2))    population standard deviation (divide by N)
            scale = std, or 1 where std < 10 * eps(dtype)   (a constant feature maps to 0)

        Args:
            x: an array of any backend (NumPy included), integer or floating point; not
                lists (convert them with ``numpy.asarray`` first).

        Raises:
            TypeError: ``x`` is not an array, or holds no real numbers.
            ValueError: a wrong shape, no samples, or NaN/Inf values.
        """
        try:
            source = adapter_of(x)
        except TypeError:
            raise TypeError(f"Standardize.adapt expects an array (NumPy or any backend's) of "
                            f"shape (N, ..., {', '.join(map(str, self.shape))}), received "
                            f"{type(x).__name__}. Convert it with numpy.asarray(x) first."
                            ) from None
        self._check(tuple(x.shape), batched=True)
        if x.shape[0] == 0:
            raise ValueError(f"Standardize.adapt needs at least one sample, received shape "
                             f"{tuple(x.shape)}.")
        host = source.to_numpy(x)
        hxp = compat.array_namespace(host)
        if not (hxp.isdtype(host.dtype, ("real floating", "integral", "bool"))):
            raise TypeError(f"Standardize.adapt needs real numbers, received dtype {x.dtype}.")
        if not self.built:  # a standalone layer: build on the data's backend and device
            floating = hxp.isdtype(host.dtype, "real floating")
            self.build(dtype=str(host.dtype) if floating else "float32",
                       backend=make_backend(source.name, compat.device(x)))
        h = hxp.astype(host, hxp.float64)
        if not bool(hxp.all(hxp.isfinite(h))):
            raise ValueError("Standardize.adapt received data with NaN or Inf values; their "
                             "statistics would turn every sample into NaN. Clean or impute the "
                             "data first.")
        # Reduced: the sample axis, the axes before the statistics, and the shared (size-1)
        # axes of the statistics where the data has more than one value.
        lead = h.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(self.shape)
                                          if s == 1 and h.shape[lead + i] != 1)
        mean = hxp.mean(h, axis=axes, keepdims=True)
        std = hxp.sqrt(hxp.mean((h - mean) ** 2, axis=axes, keepdims=True))
        tiny = 10.0 * float(hxp.finfo(getattr(hxp, self.dtype)).eps)
        scale = hxp.where(std < tiny, hxp.ones_like(std), std)
        # Host float64 -> the layer's dtype on the host -> its backend and device.
        target = self.backend
        for key, value in (("mean", mean), ("scale", scale)):
            value = hxp.astype(hxp.reshape(value, self.shape), getattr(hxp, self.dtype))
            self.buffers[key] = target.adapter.from_numpy(value, target.device)
        return self

    # -- forward and backward ----------------------------------------------------------------
    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        self._check(tuple(x.shape), batched=True)
        self._check_dtype(x, self.buffers["mean"])
        scale = self.buffers["scale"]
        y = (x - self.buffers["mean"]) / scale

        def backprop(dy: Array) -> Array:
            return dy / scale  # dy_i/dx_i = 1 / scale_i; nothing else depends on x_i

        return y, backprop

    def get_config(self) -> dict:
        return {"shape": list(self.shape), "name": self.name}
