"""Chain: layers applied in order, the chain rule applied in reverse.

::

    y = f_L(... f_2(f_1(x)))                    forward: each layer returns (y_i, backprop_i)
    dL/dx = backprop_1(backprop_2(... backprop_L(dL/dy)))

A Chain is structure only: it holds no loss, optimizer or training state. ``pn.Sequential``
is a Chain that also trains (portanet/model.py); ``Residual([...])`` wraps a list of layers in
a Chain.

Examples:
    >>> import portanet as pn
    >>> chain = pn.layers.Chain([pn.layers.Dense(4, 8, activation="relu"),
    ...                          pn.layers.Dense(8, 3)]).build(seed=0)
    >>> y, backprop = chain.forward(pn.asarray([[1.0, 2.0, 3.0, 4.0]], dtype="float32"))
    >>> tuple(y.shape), tuple(backprop(y).shape)
    ((1, 3), (1, 4))
"""

from __future__ import annotations

from typing import Any

from .._typing import Array, Shape
from ..errors import abridged
from .base import Container, Layer, deserialize, register, serialize

__all__ = ["Chain"]


def check_layers(layers: Any, owner: str) -> list[Layer]:
    """A list of distinct layer objects, or a clear error about what was received."""
    layers = [] if layers is None else layers
    if isinstance(layers, Layer) or not isinstance(layers, (list, tuple)):
        raise TypeError(f"{owner} expects a list of layers, received "
                        f"{type(layers).__name__}. Wrap a single layer: {owner}([layer]).")
    seen: set[int] = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"{owner} item {i} is {type(layer).__name__}, not a layer; "
                            "pass layer instances such as pn.layers.Dense(784, 10).")
        if id(layer) in seen:
            raise ValueError(f"{owner} item {i} is the same layer object as an earlier "
                             "item; a layer keeps one set of gradients, so create a new "
                             "layer instead of reusing it.")
        seen.add(id(layer))
    return list(layers)


@register
class Chain(Container):
    """Layers applied in order; their parameters are named "<index>.<name>" ("0.kernel").

    Args:
        layers: the layers, in order.
        name: optional display name.
    """

    def __init__(self, layers: Any = None, name: str | None = None):
        super().__init__(name)
        self.layers: list[Layer] = check_layers(layers, type(self).__name__)

    def children(self) -> list[tuple[str, Layer]]:
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    supports_masking = True

    @property
    def creates_mask(self) -> bool:  # type: ignore[override]
        return any(layer.creates_mask for layer in self.layers)

    def chain(self, x: Array, training: bool, stop: int | None = None,
              mask: Array | None = None):
        """``(y, backprop)`` through every layer; ``backprop`` walks them in reverse.

        ``stop`` (training, where dL/dx of the data is never used): the walk ends at layer
        ``stop``, the first with parameters; layers before it have no gradients to store, and
        that layer skips its own dL/dx when it can. The walk then returns None.

        ``mask`` (N, T), True at real steps, travels with the data: each layer that
        ``supports_masking`` receives it, and ``compute_mask`` gives the next layer's (an
        ``Embedding(mask_zero=True)`` first layer makes one from the ids).
        """
        backprops = []
        for layer in self.layers:
            x_in = x
            if mask is not None and layer.supports_masking:
                x, backprop = layer.forward(x, training, mask=mask)
            else:
                x, backprop = layer.forward(x, training)
            if mask is not None or layer.creates_mask:
                mask = layer.compute_mask(x_in, mask)
            backprops.append(backprop)
        last = 0 if stop is None else stop

        def backprop(dy: Array) -> Array | None:
            for i in range(len(backprops) - 1, last - 1, -1):
                if stop is not None and i == stop:
                    if self.layers[i].can_skip_input_gradient:
                        return backprops[i](dy, input_gradient=False)
                    backprops[i](dy)
                    return None
                dy = backprops[i](dy)
            return dy

        return x, backprop

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        """``(y, backprop)``; ``training=None`` uses the chain's mode; ``mask`` (N, T), True at
        real time steps, goes to the layers that take one."""
        self.ensure_built(x)
        return self.chain(x, self.training if training is None else bool(training), mask=mask)

    def compute_mask(self, x: Array, mask: Array | None) -> Array | None:
        """The output mask: each layer's :meth:`~Layer.compute_mask` in turn. A layer after the
        first that makes a mask needs its own input, so the layers before it run (evaluation
        mode) only in that rare case."""
        for i, layer in enumerate(self.layers):
            x_in = x
            if any(later.creates_mask for later in self.layers[i + 1:]):
                x, _ = (layer.forward(x, False, mask=mask) if mask is not None
                        and layer.supports_masking else layer.forward(x, False))
            if mask is not None or layer.creates_mask:
                mask = layer.compute_mask(x_in, mask)
        return mask

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = tuple(layer.output_shape(shape))
        return shape

    def get_config(self) -> dict:
        return {"layers": [serialize(layer) for layer in self.layers], "name": self.name}

    @classmethod
    def child_configs(cls, config: dict) -> list[tuple[str, Any]]:
        """("0", config of layer 0), ("1", ...), ... read from a :meth:`get_config` dict."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"a {cls.__name__} config is a dict with a 'layers' list (from "
                             f"get_config()), received {abridged(config)}.")
        return [(str(i), child) for i, child in enumerate(config["layers"])]

    @classmethod
    def from_config(cls, config: dict) -> Chain:
        layers = [deserialize(c) for _, c in cls.child_configs(config)]
        return cls(layers, name=config.get("name"))

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        kind = type(self).__name__
        return f"{kind}([\n{inner}\n])" if self.layers else f"{kind}([])"
