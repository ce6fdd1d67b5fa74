"""Residual connection (He et al., 2016): y = x + block(x).

Backward: the identity path passes the gradient through unchanged and the block adds its own::

    dL/dx = dy + block_backprop(dy)

which is why deep residual nets train: even when the block's gradient is tiny, dy reaches the
earlier layers intact.
"""

from __future__ import annotations

from typing import Any

from .._typing import Array, Shape
from .base import Container, Layer, deserialize, register, serialize
from .chain import Chain


@register
class Residual(Container):
    """Skip connection around ``block``: y = x + block(x).

    Args:
        block: a layer, a Chain or Sequential, or a list of layers (wrapped in a Chain). It must
            return the shape it receives.

    Parameters are the block's, named "block.<name>" (e.g. "block.0.kernel").

    Examples:
        >>> import portanet as pn
        >>> res = pn.layers.Residual([pn.layers.Dense(4, 4, activation="relu"),
        ...                           pn.layers.Dense(4, 4)])
    """

    def __init__(self, block: Any, name: str | None = None):
        super().__init__(name)
        if isinstance(block, (list, tuple)):
            block = Chain(list(block))
        if not isinstance(block, Layer):
            raise TypeError(f"Residual needs a layer, a Sequential or a list of layers as its "
                            f"block, received {type(block).__name__}.")
        self.block = block

    def children(self) -> list[tuple[str, Layer]]:
        return [("block", self.block)]

    def forward(self, x: Array, training: bool | None = None):
        training = self.training if training is None else training
        fx, block_backprop = self.block.forward(x, training)
        if tuple(fx.shape) != tuple(x.shape):
            raise ValueError(
                f"Residual needs its block to keep the shape: y = x + block(x) received x of "
                f"shape {tuple(x.shape)} and block(x) of shape {tuple(fx.shape)}. Make the "
                "block end with as many features/channels as it starts with.")
        y = x + fx

        def backprop(dy: Array) -> Array:
            return dy + block_backprop(dy)

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        out = self.block.output_shape(tuple(input_shape))
        if tuple(out) != tuple(input_shape):
            raise ValueError(f"Residual needs its block to keep the shape: per-sample input "
                             f"{tuple(input_shape)}, block output {tuple(out)}.")
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"block": serialize(self.block), "name": self.name}

    @classmethod
    def child_configs(cls, config: dict) -> list[tuple[str, Any]]:
        if not isinstance(config, dict) or "block" not in config:
            raise ValueError("a Residual config needs a 'block' layer config.")
        return [("block", config["block"])]

    @classmethod
    def from_config(cls, config: dict) -> Residual:
        (_, block), = cls.child_configs(config)
        rest = {k: v for k, v in config.items() if k != "block"}
        return cls(deserialize(block), **rest)

    def __repr__(self) -> str:
        return f"Residual({self.block!r})"
