"""What Dense, Conv2D and Maxout share: a kernel, an optional bias, their initializers and
regularizers, and an activation applied to the affine output, with the matching part of
``get_config``.

``kernel_initializer="auto"`` (the default) is resolved here, once, from the activation:
:func:`portanet.initializers.for_activation` (He for the ReLU family, LeCun normal for SELU,
Glorot otherwise). The config keeps the word "auto", so ``from_config`` resolves it again from
the same activation and draws the same initial weights; a config that names an initializer
(every config written before "auto" existed says "GlorotUniform") keeps that initializer.
"""

from __future__ import annotations

from typing import Any

from .. import initializers, regularizers
from .activation import activation_config, activation_name, get_activation
from .base import Layer


class WeightedLayer(Layer):
    """Base of the layers computing ``activation(kernel (x) x + bias)``."""

    def _set_weights(self, activation: Any, use_bias: Any, kernel_initializer: Any,
                     bias_initializer: Any, kernel_regularizer: Any,
                     bias_regularizer: Any) -> None:
        self.activation = get_activation(activation)
        self.use_bias = bool(use_bias)
        self._auto_kernel = initializers.is_auto(kernel_initializer)
        if self._auto_kernel:
            params = dict(getattr(self.activation, "params", None) or {})  # leaky_relu's alpha
            self.kernel_initializer = initializers.for_activation(
                activation_name(self.activation), **params)
        else:
            self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = {"kernel": regularizers.get(kernel_regularizer)}
        if self.use_bias:
            self.regularizers["bias"] = regularizers.get(bias_regularizer)

    def _kernel_initializer_config(self) -> str | dict:
        """"auto" when the initializer was chosen by the activation, else its config."""
        return initializers.AUTO if self._auto_kernel else self.kernel_initializer.get_config()

    def _weights_config(self) -> dict:
        return {
            "use_bias": self.use_bias,
            "activation": activation_config(self.activation),
            "kernel_initializer": self._kernel_initializer_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": regularizers.serialize(self.regularizers["kernel"]),
            "bias_regularizer": regularizers.serialize(self.regularizers.get("bias")),
        }
