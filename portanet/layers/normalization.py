"""Normalization layers: BatchNorm (statistics over the batch) and LayerNorm (over features).

Both standardize, then rescale with learnable gamma (scale) and beta (shift)::

    mu = mean(x),  var = mean((x - mu)^2)          over the normalized axes
    x_hat = (x - mu) / sqrt(var + eps)
    y = gamma * x_hat + beta

Backward, given dy (the derivation: mu and var depend on every x in the group)::

    dL/dgamma = sum(dy * x_hat),   dL/dbeta = sum(dy)       over the other axes
    g = dy * gamma
    dL/dx = (g - mean(g) - x_hat * mean(g * x_hat)) / sqrt(var + eps)

The two means remove the components of g along the directions that normalizing cannot change
(a constant shift, and a scaling of x - mu).

Synchronized BatchNorm (data-parallel training, ``synchronized=True``): the group is the
global batch spread over the replicas, so every sum above becomes a sum over replicas too.
Replica r, with its share w_r = n_r / N of the batch, sums per-channel vectors with the others::

    mu = sum_r sum_i x / M,        var = sum_r sum_i (x - mu)^2 / M      M values per channel
    mean(g) = sum_r w_r sum_i g / (M w_r),  the same for mean(g * x_hat)

(its upstream gradient g is that of its own mean loss, 1/w_r times the global one's, hence the
weights; see :mod:`portanet.replicas`). The result equals one process running the
whole global batch.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .. import initializers
from .. import replicas as replicas_module
from .._typing import Array, Shape
from .base import Layer, _positive_int, register


def _check_factor(value: Any, what: str, layer: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{layer} {what} must be a number in [{low}, {high}], received "
                         f"{what}={value!r}.")
    return float(value)


@register
class BatchNorm(Layer):
    """Batch normalization (Ioffe & Szegedy, 2015) over (N, C) or (N, C, H, W) input.

    Each channel c is normalized with the mean and variance of its values over the batch (and
    over H, W for images).

    * Training: the batch statistics normalize; the running statistics move towards them::

          running_mean = (1 - momentum) * running_mean + momentum * mu
          running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)

      (m values per channel; the running variance is the unbiased estimate, as in PyTorch,
      while normalization uses the biased one).
    * Evaluation: running statistics normalize; the layer is then a fixed affine map, with
      dL/dx = dy * gamma / sqrt(running_var + eps). A frozen layer (``trainable = False``)
      always works this way, in training too, so fine-tuning leaves its statistics alone.

    Args:
        num_features: C, the size of axis 1.
        momentum: weight of the new batch in the running statistics (default 0.1, PyTorch's
            convention; Keras' ``momentum=0.99`` is ``1 - momentum`` here).
        eps: added to the variance for stability (default 1e-5).
        affine: learn gamma and beta (default True); else y = x_hat.
        synchronized: in data-parallel training (``fit(..., distributed=True)`` on several
            processes), normalize with the statistics of the global batch, summed over the
            processes (three small all-reduces per layer and step; the step then runs
            eagerly). Default False: each process uses its own slice's statistics, as
            PyTorch's BatchNorm under DDP does. In one process both are the same.

    Shapes: (N, C) or (N, C, H, W), output the same. Parameters "gamma", "beta" (C,);
    buffers "running_mean" (C,), "running_var" (C,).

    Examples:
        >>> import portanet as pn
        >>> bn = pn.layers.BatchNorm(1).build(seed=0, dtype="float64")
        >>> y, _ = bn.forward(pn.asarray([[1.0], [3.0]]), training=True)
        >>> pn.to_numpy(y).round(3).tolist(), pn.to_numpy(bn.buffers["running_mean"]).tolist()
        ([[-1.0], [1.0]], [0.2])
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 affine: bool = True, synchronized: bool = False, name: str | None = None):
        super().__init__(name)
        self.num_features = _positive_int(num_features, "num_features", "BatchNorm")
        if not isinstance(synchronized, bool):
            raise ValueError(f"BatchNorm synchronized must be True or False, received "
                             f"{synchronized!r}.")
        self.synchronized = synchronized
        self.momentum = _check_factor(momentum, "momentum", "BatchNorm", 0.0, 1.0)
        self.eps = _check_factor(eps, "eps", "BatchNorm", 0.0, math.inf)
        self.affine = bool(affine)

    def parameter_specs(self):
        if not self.affine:
            return {}
        c = (self.num_features,)
        return {"gamma": (c, initializers.Ones()), "beta": (c, initializers.Zeros())}

    def buffer_specs(self):
        c = (self.num_features,)
        return {"running_mean": (c, initializers.Zeros()),
                "running_var": (c, initializers.Ones())}

    def _check(self, shape: Shape, batched: bool) -> None:
        ndims = (2, 4) if batched else (1, 3)
        channel = 1 if batched else 0
        if len(shape) not in ndims or shape[channel] != self.num_features:
            expected = "(N, C) or (N, C, H, W)" if batched else "(C,) or (C, H, W)"
            raise ValueError(f"BatchNorm expected input of shape {expected} with "
                             f"C={self.num_features}, received shape {tuple(shape)}.")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._check(tuple(input_shape), batched=False)
        return tuple(input_shape)

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        self._check(tuple(x.shape), batched=True)
        self._check_dtype(x, self.buffers["running_mean"])
        # a frozen BatchNorm keeps its statistics: fine-tuning must not disturb them
        training = (self.training if training is None else training) and self.trainable
        xp = compat.array_namespace(x)
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        # Per-channel vectors (C,) broadcast against (N, C) directly, against NCHW as (C, 1, 1).
        view = (self.num_features,) if x.ndim == 2 else (self.num_features, 1, 1)
        gamma = xp.reshape(self.parameters["gamma"], view) if self.affine else None
        beta = xp.reshape(self.parameters["beta"], view) if self.affine else None

        replicas = replicas_module.current() if training and self.synchronized else None
        if training:
            m = math.prod([x.shape[a] for a in axes])  # a list: torch.compile breaks on a genexpr
            if replicas is not None:  # the values of the global batch, over every replica
                m = replicas.global_rows * (m // x.shape[0] if x.shape[0] else 0)
            if m < 2:
                raise ValueError(f"BatchNorm in training needs more than one value per channel "
                                 f"to estimate a variance, received shape {tuple(x.shape)}. "
                                 "Use a larger batch, or eval() mode.")
            mu = self._mean(xp, x, axes, m, replicas, "BatchNorm's mean")
            xc = x - mu
            var = self._mean(xp, xc * xc, axes, m, replicas, "BatchNorm's variance")
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            x_hat = xc * inv_std
            mom = self.momentum
            self.buffers["running_mean"] = (1.0 - mom) * self.buffers["running_mean"] + \
                mom * xp.reshape(mu, (self.num_features,))
            self.buffers["running_var"] = (1.0 - mom) * self.buffers["running_var"] + \
                (mom * m / (m - 1)) * xp.reshape(var, (self.num_features,))
        else:
            inv_std = 1.0 / xp.sqrt(xp.reshape(self.buffers["running_var"], view) + self.eps)
            x_hat = (x - xp.reshape(self.buffers["running_mean"], view)) * inv_std
        y = x_hat if gamma is None else gamma * x_hat + beta

        def backprop(dy: Array) -> Array:
            if gamma is not None:
                self.gradients["gamma"] = xp.sum(dy * x_hat, axis=axes)
                self.gradients["beta"] = xp.sum(dy, axis=axes)
            g = dy if gamma is None else dy * gamma
            if not training:  # fixed statistics: a plain affine map
                return g * inv_std
            if replicas is None:
                g_mean = xp.mean(g, axis=axes, keepdims=True)
                gx_mean = xp.mean(g * x_hat, axis=axes, keepdims=True)
            else:  # one all-reduce for both means; the weights make them the global loss's
                w = replicas.weight
                both = replicas.sum(w * xp.concat([xp.sum(g, axis=axes),
                                                   xp.sum(g * x_hat, axis=axes)]),
                                    "BatchNorm's backward means")
                scale = 1.0 / (m * w)
                g_mean = xp.reshape(both[:self.num_features] * scale, view)
                gx_mean = xp.reshape(both[self.num_features:] * scale, view)
            return (g - g_mean - x_hat * gx_mean) * inv_std

        return y, backprop

    def _mean(self, xp: Any, a: Array, axes: tuple[int, ...], m: int, replicas: Any,
              what: str) -> Array:
        """Per-channel mean of ``a`` over ``axes`` (kept as size-1 axes), over the m values of
        this batch, or of the global batch when ``replicas`` sum with the other processes."""
        if replicas is None:
            return xp.mean(a, axis=axes, keepdims=True)
        total = replicas.sum(xp.sum(a, axis=axes), what)
        view = (self.num_features,) if a.ndim == 2 else (self.num_features, 1, 1)
        return xp.reshape(total / float(m), view)

    def get_config(self) -> dict:
        config = {"num_features": self.num_features, "momentum": self.momentum,
                  "eps": self.eps, "affine": self.affine, "name": self.name}
        if self.synchronized:  # written only when set: older files and configs stay the same
            config["synchronized"] = True
        return config


@register
class LayerNorm(Layer):
    """Layer normalization (Ba, Kiros & Hinton, 2016): each sample normalized over its features.

    The statistics are taken over the last ``len(normalized_shape)`` axes of every sample, so
    the layer behaves the same in training and evaluation and for any batch size.

    Args:
        normalized_shape: int or tuple, the trailing shape to normalize over (e.g. the feature
            count, or (C, H, W)).
        eps: added to the variance (default 1e-5).
        elementwise_affine: learn gamma and beta of shape ``normalized_shape`` (default True).

    Shapes: (N, ..., *normalized_shape), output the same. Parameters "gamma", "beta".

    Examples:
        >>> import portanet as pn
        >>> ln = pn.layers.LayerNorm(2).build(seed=0, dtype="float64")
        >>> y, _ = ln.forward(pn.asarray([[1.0, 3.0], [10.0, 20.0]]))
        >>> pn.to_numpy(y).round(3).tolist()
        [[-1.0, 1.0], [-1.0, 1.0]]
    """

    def __init__(self, normalized_shape: Any, eps: float = 1e-5, elementwise_affine: bool = True,
                 name: str | None = None):
        super().__init__(name)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
        if (not isinstance(shape, (tuple, list)) or not shape
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                           for s in shape)):
            raise ValueError("LayerNorm normalized_shape must be a positive int or a non-empty "
                             f"tuple of them, received {normalized_shape!r}.")
        self.normalized_shape = tuple(shape)
        self.eps = _check_factor(eps, "eps", "LayerNorm", 0.0, math.inf)
        self.elementwise_affine = bool(elementwise_affine)

    def parameter_specs(self):
        if not self.elementwise_affine:
            return {}
        s = self.normalized_shape
        return {"gamma": (s, initializers.Ones()), "beta": (s, initializers.Zeros())}

    def _check(self, shape: Shape, minimum: int) -> None:
        k = len(self.normalized_shape)
        if len(shape) < k + minimum or tuple(shape[-k:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm expected input ending in {self.normalized_shape}, "
                             f"received shape {tuple(shape)}.")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._check(tuple(input_shape), 0)
        return tuple(input_shape)

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        self._check(tuple(x.shape), 1)
        self._check_dtype(x, self.parameters.get("gamma"))
        xp = compat.array_namespace(x)
        axes = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        batch_axes = tuple(range(x.ndim - len(self.normalized_shape)))
        mu = xp.mean(x, axis=axes, keepdims=True)
        xc = x - mu
        inv_std = 1.0 / xp.sqrt(xp.mean(xc * xc, axis=axes, keepdims=True) + self.eps)
        x_hat = xc * inv_std
        gamma = self.parameters["gamma"] if self.elementwise_affine else None
        y = x_hat if gamma is None else gamma * x_hat + self.parameters["beta"]

        def backprop(dy: Array) -> Array:
            if gamma is not None:
                self.gradients["gamma"] = xp.sum(dy * x_hat, axis=batch_axes)
                self.gradients["beta"] = xp.sum(dy, axis=batch_axes)
            g = dy if gamma is None else dy * gamma
            g_mean = xp.mean(g, axis=axes, keepdims=True)
            gx_mean = xp.mean(g * x_hat, axis=axes, keepdims=True)
            return (g - g_mean - x_hat * gx_mean) * inv_std

        return y, backprop

    def get_config(self) -> dict:
        return {"normalized_shape": list(self.normalized_shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "name": self.name}
