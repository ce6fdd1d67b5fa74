"""Activation layer: y = f(x) elementwise (or along an axis for softmax), dx = backprop(dy).

The math lives in :mod:`portanet.activations`; ``activations.get(name)`` returns an object whose
call gives ``(y, backprop)``, exactly a layer's contract, so this layer only adds the layer API
(names, configs, shapes). Dense and Conv2D take the same ``activation=`` argument.
"""

from __future__ import annotations

from typing import Any

from .. import activations
from .._typing import Array
from .base import Layer, register


def get_activation(identifier: Any, **params: Any):
    """``activations.get(identifier, **params)``, or None for the identity (None, "linear",
    "identity"), so layers skip the call entirely when there is nothing to apply."""
    if identifier is None:
        return None
    act = activations.get(identifier, **params)
    return None if act.name == "identity" else act


def activation_config(act: Any) -> str | dict | None:
    """What ``activations.get`` turns back into ``act``: its name when it has no parameters
    (``"relu"``), else its config (``{"class_name": "leaky_relu", "config": {"alpha": 0.2}}``);
    None for no activation."""
    if act is None:
        return None
    config = act.get_config()
    return config if config["config"] else config["class_name"]


def activation_name(act: Any) -> str:
    """A short readable name ("relu", "linear")."""
    return "linear" if act is None else act.name


@register
class Activation(Layer):
    """Applies an activation function: y = f(x), dL/dx = f'(x) * dL/dy (or its VJP).

    Args:
        activation: a name from :mod:`portanet.activations` ("relu", "gelu", "softmax", ...)
            or an activation object.
        **params: the activation's parameters, e.g. ``Activation("softmax", temperature=2.0)``
            or ``Activation("leaky_relu", alpha=0.2)``.

    Shapes: any; output has the input's shape.

    Examples:
        >>> import portanet as pn
        >>> y, backprop = pn.layers.Activation("relu").forward(pn.asarray([-1.0, 2.0]))
        >>> pn.to_numpy(y).tolist()
        [0.0, 2.0]
    """

    def __init__(self, activation: Any, name: str | None = None, **params: Any):
        super().__init__(name)
        if activation is None:
            raise ValueError("Activation needs an activation name such as 'relu', received None.")
        self.activation = get_activation(activation, **params)
        self._config = activation_config(self.activation) or "linear"

    def forward(self, x: Array, training: bool | None = None):
        if self.activation is None:  # "linear"
            return x, _identity
        return self.activation(x)

    def get_config(self) -> dict:
        return {"activation": self._config, "name": self.name}

    @property
    def kind(self) -> str:
        return self.name or f"Activation({activation_name(self.activation)})"


def _identity(dy: Array) -> Array:
    return dy
