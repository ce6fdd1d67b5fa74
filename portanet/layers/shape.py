"""Shape layers: Flatten and Reshape. They move no values, so the backward pass only restores
the input's shape: dL/dx = reshape(dL/dy, x.shape)."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .._typing import Array, Shape
from .base import Layer, register


@register
class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...), keeping the batch axis.

    Examples:
        >>> import portanet as pn
        >>> y, _ = pn.layers.Flatten().forward(pn.asarray([[[1.0, 2.0], [3.0, 4.0]]]))
        >>> y.shape
        (1, 4)
    """

    def forward(self, x: Array, training: bool | None = None):
        if x.ndim < 1:
            raise ValueError(f"Flatten expected input with a batch axis, received shape "
                             f"{tuple(x.shape)}.")
        xp = compat.array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], math.prod(shape[1:])))

        def backprop(dy: Array) -> Array:
            return xp.reshape(dy, shape)

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def compute_mask(self, x: Array, mask: Array | None) -> None:
        return None  # the time axis is gone


@register
class Reshape(Layer):
    """(N, ...) -> (N, *target_shape); one entry of ``target_shape`` may be -1 (inferred).

    Args:
        target_shape: the per-sample output shape, without the batch axis.

    Examples:
        >>> import portanet as pn
        >>> y, _ = pn.layers.Reshape((2, 2)).forward(pn.asarray([[1.0, 2.0, 3.0, 4.0]]))
        >>> y.shape
        (1, 2, 2)
    """

    def __init__(self, target_shape: Any, name: str | None = None):
        super().__init__(name)
        shape = (target_shape,) if isinstance(target_shape, int) else target_shape
        if (not isinstance(shape, (tuple, list))
                or not all(isinstance(s, int) and not isinstance(s, bool) and (s > 0 or s == -1)
                           for s in shape)
                or sum(s == -1 for s in shape) > 1):
            raise ValueError("Reshape target_shape must be a tuple of positive ints with at most "
                             f"one -1, received {target_shape!r}.")
        self.target_shape = tuple(shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        size = math.prod(input_shape)
        known = math.prod(s for s in self.target_shape if s != -1)
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(self._error(input_shape))
            return tuple(size // known if s == -1 else s for s in self.target_shape)
        if known != size:
            raise ValueError(self._error(input_shape))
        return self.target_shape

    def compute_mask(self, x: Array, mask: Array | None) -> None:
        return None  # the time axis is not known to survive a reshape

    def _error(self, input_shape: Shape) -> str:
        return (f"Reshape cannot turn per-sample shape {tuple(input_shape)} "
                f"({math.prod(input_shape)} values) into {self.target_shape}.")

    def forward(self, x: Array, training: bool | None = None):
        if x.ndim < 1:
            raise ValueError(f"Reshape expected input with a batch axis, received shape "
                             f"{tuple(x.shape)}.")
        xp = compat.array_namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], *self.output_shape(shape[1:])))

        def backprop(dy: Array) -> Array:
            return xp.reshape(dy, shape)

        return y, backprop

    def get_config(self) -> dict:
        return {"target_shape": list(self.target_shape), "name": self.name}
