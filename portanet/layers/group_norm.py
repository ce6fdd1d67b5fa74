"""Group normalization (Wu & He, 2018): each sample's channels normalized in groups.

The C channels of a sample split into G groups of C/G consecutive channels; each group (its
channels and all their positions, K = C/G * H * W values) is standardized on its own::

    x: (N, C, *)  ->  viewed as (N, G, K)
    mu = mean_k(x),  var = mean_k((x - mu)^2)         per sample and group (biased variance)
    x_hat = (x - mu) / sqrt(var + eps)
    y = gamma[c] * x_hat + beta[c]                      gamma, beta: (C,), per channel

No statistics depend on the batch, so training and evaluation are the same and any batch size
works. G = 1 is LayerNorm over (C, *) with per-channel gamma; G = C is InstanceNorm.

Backward, given dy. The per-channel parameters collect over the batch and positions::

    dL/dgamma[c] = sum_{n, positions} dy * x_hat,     dL/dbeta[c] = sum_{n, positions} dy

For x, within one group (the LayerNorm backward, with g = dy * gamma[c] and s = 1/sqrt(var+eps)):
x_hat_k = (x_k - mu) s, where mu and s depend on every x_j of the group::

    d mu / d x_j = 1/K,    d s / d x_j = -s^3 (x_j - mu) / K = -s^2 x_hat_j / K
    d x_hat_k / d x_j = s (delta_kj - 1/K) + (x_k - mu) * (-s^2 x_hat_j / K)
                      = s (delta_kj - 1/K - x_hat_k x_hat_j / K)
    dL/dx_j = sum_k g_k d x_hat_k / d x_j = s (g_j - mean_k(g) - x_hat_j mean_k(g * x_hat))

The two means remove from g what normalizing cannot pass on: a shift of the whole group, and
a scaling of it about its mean.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .. import initializers
from .._typing import Array, Shape
from .base import Layer, _positive_int, register
from .normalization import _check_factor

__all__ = ["GroupNorm"]


@register
class GroupNorm(Layer):
    """Group normalization over (N, C, *), as ``torch.nn.GroupNorm``.

    Formula: y = gamma * (x - mu_g) / sqrt(var_g + eps) + beta, with mu_g, var_g the mean and
    (biased) variance of each sample's group g of C/G channels and all their positions;
    dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var_g + eps), g = dy * gamma,
    the means per group (derivation in the module docstring).

    Args:
        num_groups: G, which must divide ``num_channels``.
        num_channels: C, the size of axis 1.
        eps: added to the variance (default 1e-5).
        affine: learn per-channel gamma (ones) and beta (zeros) (default True).

    Shapes: (N, C) or (N, C, d1, d2, ...) floating; output the same.
    Parameters "gamma", "beta" (C,).

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.group_norm import GroupNorm
        >>> gn = GroupNorm(2, 4).build(seed=0, dtype="float64")
        >>> y, backprop = gn.forward(pn.asarray([[1.0, 3.0, 10.0, 30.0]]))
        >>> pn.to_numpy(y).round(3).tolist()
        [[-1.0, 1.0, -1.0, 1.0]]
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, name: str | None = None):
        super().__init__(name)
        self.num_groups = _positive_int(num_groups, "num_groups", "GroupNorm")
        self.num_channels = _positive_int(num_channels, "num_channels", "GroupNorm")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm num_channels must be divisible by num_groups, received "
                             f"num_channels={num_channels}, num_groups={num_groups}. Choose a "
                             f"num_groups that divides {num_channels}.")
        self.eps = _check_factor(eps, "eps", "GroupNorm", 0.0, math.inf)
        self.affine = bool(affine)

    def parameter_specs(self):
        if not self.affine:
            return {}
        c = (self.num_channels,)
        return {"gamma": (c, initializers.Ones()), "beta": (c, initializers.Zeros())}

    def _check(self, shape: Shape, batched: bool) -> None:
        channel = 1 if batched else 0
        if len(shape) < channel + 1 or shape[channel] != self.num_channels:
            expected = "(N, C, *)" if batched else "(C, *)"
            raise ValueError(f"GroupNorm expected input of shape {expected} with "
                             f"C={self.num_channels}, received shape {tuple(shape)}.")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._check(tuple(input_shape), batched=False)
        return tuple(input_shape)

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        shape = tuple(x.shape)
        self._check(shape, batched=True)
        xp = compat.array_namespace(x)
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"GroupNorm expects floating input, received dtype {x.dtype}.")
        if self.affine:
            self._check_dtype(x, self.parameters["gamma"])
        n, c = shape[0], self.num_channels
        groups = (n, self.num_groups, -1)  # (N, G, K): a group's values are contiguous in NC*
        view = (c,) + (1,) * (x.ndim - 2)  # per-channel vectors against (N, C, *)
        reduce_axes = (0, *range(2, x.ndim))  # what dgamma and dbeta sum over

        xg = xp.reshape(x, groups)
        mu = xp.mean(xg, axis=-1, keepdims=True)
        xc = xg - mu
        inv_std = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=-1, keepdims=True) + self.eps)
        x_hat_g = xc * inv_std  # (N, G, K)
        x_hat = xp.reshape(x_hat_g, shape)
        gamma = xp.reshape(self.parameters["gamma"], view) if self.affine else None
        y = x_hat if gamma is None else gamma * x_hat + xp.reshape(self.parameters["beta"], view)

        def backprop(dy: Array) -> Array:
            if gamma is not None:
                self.gradients["gamma"] = xp.sum(dy * x_hat, axis=reduce_axes)
                self.gradients["beta"] = xp.sum(dy, axis=reduce_axes)
            g = xp.reshape(dy if gamma is None else dy * gamma, groups)
            g_mean = xp.mean(g, axis=-1, keepdims=True)
            gx_mean = xp.mean(g * x_hat_g, axis=-1, keepdims=True)
            return xp.reshape((g - g_mean - x_hat_g * gx_mean) * inv_std, shape)

        return y, backprop

    def get_config(self) -> dict[str, Any]:
        return {"num_groups": self.num_groups, "num_channels": self.num_channels,
                "eps": self.eps, "affine": self.affine, "name": self.name}
