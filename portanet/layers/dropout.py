"""Dropout (Srivastava et al., 2014), inverted: scale at training time, identity at inference.

Training, with keep probability q = 1 - rate::

    mask ~ Bernoulli(q)  elementwise, drawn on the device
    y = x * mask / q                 E[y] = x, so inference needs no rescaling
    dL/dx = dy * mask / q            the same scaled mask

Evaluation: y = x, dL/dx = dy.
"""

from __future__ import annotations

import array_api_compat as compat

from .._typing import Array
from ..random import Generator, host_generator
from .base import Layer, register


@register
class Dropout(Layer):
    """Zero each value with probability ``rate`` during training, scaling the rest by 1/(1-rate).

    The mask comes from a :class:`portanet.random.Generator` on the layer's device (no host
    round trip). Its seed derives from the model's seed and the layer's position, so a model
    built with a seed drops the same units on every run of the same backend (backends have
    different generators, so their masks differ). After ``to()`` the generator restarts on the
    new backend.

    Args:
        rate: probability of dropping a value, in [0, 1).
        seed: a seed for this layer's generator; default: derived from the model seed.

    Shapes: any; output has the input's shape.

    Examples:
        >>> import portanet as pn
        >>> drop = pn.layers.Dropout(0.5, seed=0).build()
        >>> y, _ = drop.forward(pn.asarray([[1.0, 1.0, 1.0, 1.0]]), training=True)
        >>> sorted(set(pn.to_numpy(y).ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
        True
    """

    def __init__(self, rate: float, seed: int | None = None, name: str | None = None):
        super().__init__(name)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be a number in [0, 1), received rate={rate!r}. "
                             "(rate is the probability of DROPPING a value.)")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"Dropout seed must be a non-negative int or None, received {seed!r}.")
        self.rate = float(rate)
        self.seed = seed
        self.generator: Generator | None = None

    def on_build(self) -> None:
        seed = self.seed
        if seed is None:  # one draw from this layer's host stream: independent of other layers
            seed = int(host_generator(self._seed, self._stream).integers(2**62))
        self.generator = Generator(seed, backend=self.backend)

    def forward(self, x: Array, training: bool | None = None):
        training = self.training if training is None else training
        if not training or self.rate == 0.0:
            return x, _identity
        self.ensure_built(x)
        xp = compat.array_namespace(x)
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"Dropout expects floating-point input, received dtype {x.dtype}.")
        keep = 1.0 - self.rate
        scaled_mask = self.generator.bernoulli(tuple(x.shape), p=keep, dtype=x.dtype) * (1.0 / keep)
        y = x * scaled_mask

        def backprop(dy: Array) -> Array:
            return dy * scaled_mask

        return y, backprop

    def get_config(self) -> dict:
        return {"rate": self.rate, "seed": self.seed, "name": self.name}


def _identity(dy: Array) -> Array:
    return dy
