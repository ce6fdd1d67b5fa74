"""What Dense and Conv2D share: a kernel, an optional bias, their initializers and regularizers,
and an activation applied to the affine output, with the matching part of ``get_config``."""

from __future__ import annotations

from typing import Any

from .. import initializers, regularizers
from .activation import activation_config, get_activation
from .base import Layer


class WeightedLayer(Layer):
    """Base of the layers computing ``activation(kernel (x) x + bias)``."""

    def _set_weights(self, activation: Any, use_bias: Any, kernel_initializer: Any,
                     bias_initializer: Any, kernel_regularizer: Any,
                     bias_regularizer: Any) -> None:
        self.activation = get_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = {"kernel": regularizers.get(kernel_regularizer)}
        if self.use_bias:
            self.regularizers["bias"] = regularizers.get(bias_regularizer)

    def _weights_config(self) -> dict:
        return {
            "use_bias": self.use_bias,
            "activation": activation_config(self.activation),
            "kernel_initializer": self.kernel_initializer.get_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": regularizers.serialize(self.regularizers["kernel"]),
            "bias_regularizer": regularizers.serialize(self.regularizers.get("bias")),
        }
