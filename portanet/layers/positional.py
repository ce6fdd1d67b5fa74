"""Positional encodings: attention has no notion of order, so the position is added to the input.

Sinusoidal (Vaswani et al., 2017), fixed, no parameters; for position p and feature i of E::

    angle(p, i) = p / base^(2 floor(i / 2) / E)          base = 10000
    PE[p, i] = sin(angle)  for even i,   cos(angle)  for odd i
    y[n, t] = x[n, t] + PE[t]            dL/dx = dy

Each pair of features (2j, 2j+1) turns at its own frequency, from one turn per 2 pi positions
(j = 0) down to one per 2 pi base positions, so nearby positions get similar codes and
PE[p + k] is a fixed rotation of PE[p] for every p.

Learned (BERT, GPT-2): a table P (max_len, E) of parameters::

    y[n, t] = x[n, t] + P[t]             dL/dx = dy
    dL/dP[t] = sum_n dy[n, t]  (t < T),  0 for the rows T..max_len-1 that this batch did not use

Both take (N, T, E) with T <= max_len, pass the padding mask on unchanged, and add the same
code to padded steps (they are ignored later by the masked layers).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .. import initializers
from .._typing import Array, Shape
from ..backend import adapter_of
from .base import Layer, _positive_int, register

__all__ = ["PositionalEmbedding", "SinusoidalPositionalEncoding", "sinusoidal_table"]


def sinusoidal_table(max_len: int, embed_dim: int, xp: Any, device: Any = None,
                     dtype: Any = None, base: float = 10000.0) -> Array:
    """The (max_len, embed_dim) sinusoidal table PE of Vaswani et al., computed in float64.

    Formula: PE[p, i] = sin(p / base^(2 floor(i/2) / E)) for even i, cos(...) for odd i.

    Args:
        max_len, embed_dim: the table's shape.
        xp: the array namespace; device: where to create it; dtype: the result's dtype
            (default float64).
        base: the longest wavelength / 2 pi (default 10000).

    Examples:
        >>> import numpy as np
        >>> sinusoidal_table(2, 4, np).round(4).tolist()
        [[0.0, 1.0, 0.0, 1.0], [0.8415, 0.5403, 0.01, 1.0]]
    """
    f64 = xp.float64
    positions = xp.arange(max_len, dtype=f64, device=device)[:, None]         # (L, 1)
    features = xp.arange(embed_dim, dtype=xp.int64, device=device)
    pair = xp.astype(features // 2, f64)                                     # floor(i / 2)
    frequency = xp.exp(pair * (-2.0 * math.log(base) / embed_dim))           # base^(-2j/E)
    angle = positions * frequency[None, :]                                   # (L, E)
    even = (features % 2 == 0)[None, :]
    table = xp.where(even, xp.sin(angle), xp.cos(angle))
    return table if dtype is None else xp.astype(table, dtype)


def _check_sequence(layer: Layer, shape: Shape, batched: bool) -> None:
    """(N, T, E) (per sample: (T, E)) with T <= max_len and E = embed_dim."""
    rank = 3 if batched else 2
    kind = type(layer).__name__
    if len(shape) != rank or shape[-1] != layer.embed_dim:
        expected = "(N, T, E)" if batched else "per-sample (T, E)"
        raise ValueError(f"{kind} expected input of shape {expected} with E={layer.embed_dim}, "
                         f"received shape {tuple(shape)}.")
    if shape[-2] > layer.max_len:
        raise ValueError(f"{kind} has max_len={layer.max_len}, received a sequence of "
                         f"{shape[-2]} steps (shape {tuple(shape)}). Build it with "
                         f"max_len >= {shape[-2]}, or cut the sequences.")


@register
class SinusoidalPositionalEncoding(Layer):
    """Adds the fixed sinusoidal position code: y[n, t] = x[n, t] + PE[t] (no parameters).

    PE[t, 2j] = sin(t / base^(2j/E)), PE[t, 2j+1] = cos(t / base^(2j/E)); see the module
    docstring. The table (max_len, E) is made once on the layer's device (in float64, then cast
    to the layer's dtype) and is not saved in checkpoints: it is a function of the config.

    Args:
        max_len: the longest sequence the layer accepts.
        embed_dim: E, the feature count.
        base: the wavelength scale (default 10000, as in the paper).

    Shapes: input (N, T, E) with T <= max_len; output the same.

    Examples:
        >>> import numpy as np, portanet as pn
        >>> from portanet.layers.positional import SinusoidalPositionalEncoding
        >>> pe = SinusoidalPositionalEncoding(8, 2).build(dtype="float64")
        >>> y, _ = pe.forward(pn.asarray(np.zeros((1, 2, 2)), dtype="float64"))
        >>> pn.to_numpy(y).round(4).tolist()
        [[[0.0, 1.0], [0.8415, 0.5403]]]
    """

    def __init__(self, max_len: int, embed_dim: int, base: float = 10000.0,
                 name: str | None = None):
        super().__init__(name)
        self.max_len = _positive_int(max_len, "max_len", "SinusoidalPositionalEncoding")
        self.embed_dim = _positive_int(embed_dim, "embed_dim", "SinusoidalPositionalEncoding")
        if (isinstance(base, bool) or not isinstance(base, (int, float))
                or not math.isfinite(base) or base <= 1.0):
            raise ValueError(f"SinusoidalPositionalEncoding base must be a number > 1, received "
                             f"base={base!r}.")
        self.base = float(base)
        self.table: Array | None = None

    def on_build(self) -> None:
        xp, device = self.backend.xp, self.backend.device
        self.table = sinusoidal_table(self.max_len, self.embed_dim, xp, device,
                                      getattr(xp, self.dtype), self.base)

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        _check_sequence(self, tuple(x.shape), batched=True)
        self._check_dtype(x, self.table)
        y = x + self.table[None, :x.shape[1], :]
        return y, _identity

    def output_shape(self, input_shape: Shape) -> Shape:
        _check_sequence(self, tuple(input_shape), batched=False)
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"max_len": self.max_len, "embed_dim": self.embed_dim, "base": self.base,
                "name": self.name}


@register
class PositionalEmbedding(Layer):
    """Adds a learned vector per position: y[n, t] = x[n, t] + P[t].

    Backward: dL/dx = dy; dL/dP[t] = sum_n dy[n, t] for t < T, and 0 for the later rows.

    Args:
        max_len: the number of positions (rows of P); longer sequences are an error.
        embed_dim: E, the feature count.
        initializer: initializer of P (default "glorot_uniform", as Keras' PositionEmbedding;
            BERT uses ``TruncatedNormal(0.0, 0.02)``).

    Shapes: input (N, T, E) with T <= max_len; output the same. Parameter "embeddings"
    (max_len, E).

    Examples:
        >>> import numpy as np, portanet as pn
        >>> from portanet.layers.positional import PositionalEmbedding
        >>> pos = PositionalEmbedding(5, 3).build(seed=0, dtype="float64")
        >>> y, backprop = pos.forward(pn.asarray(np.zeros((2, 4, 3)), dtype="float64"))
        >>> _ = backprop(pn.asarray(np.ones((2, 4, 3)), dtype="float64"))
        >>> pn.to_numpy(pos.gradients["embeddings"])[:, 0].tolist()
        [2.0, 2.0, 2.0, 2.0, 0.0]
    """

    def __init__(self, max_len: int, embed_dim: int, initializer: Any = "glorot_uniform",
                 name: str | None = None):
        super().__init__(name)
        self.max_len = _positive_int(max_len, "max_len", "PositionalEmbedding")
        self.embed_dim = _positive_int(embed_dim, "embed_dim", "PositionalEmbedding")
        self.initializer = initializers.get(initializer)

    def parameter_specs(self):
        return {"embeddings": ((self.max_len, self.embed_dim), self.initializer)}

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        table = self.parameters["embeddings"]
        _check_sequence(self, tuple(x.shape), batched=True)
        self._check_dtype(x, table)
        xp = adapter_of(x).xp
        t = x.shape[1]
        y = x + table[None, :t, :]

        def backprop(dy: Array) -> Array:
            used = xp.sum(dy, axis=0)                                        # (T, E)
            if t < self.max_len:  # rows past T were not used: their gradient is 0
                rest = xp.zeros((self.max_len - t, self.embed_dim), dtype=dy.dtype,
                                device=compat.device(dy))
                used = xp.concat([used, rest], axis=0)
            self.gradients["embeddings"] = used
            return dy

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        _check_sequence(self, tuple(input_shape), batched=False)
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"max_len": self.max_len, "embed_dim": self.embed_dim,
                "initializer": self.initializer.get_config(), "name": self.name}


def _identity(dy: Array) -> Array:
    return dy
