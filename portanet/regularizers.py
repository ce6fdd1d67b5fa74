"""Weight penalties added to the loss: L1 (sparsity), L2 (weight decay), L1L2 (elastic net).

A regularizer attached to a parameter ``w`` adds ``penalty(w)`` to the training loss, and so adds
``gradient(w) = d penalty / d w`` to that parameter's gradient. The model
(:meth:`portanet.Sequential.train_step`) does both; penalties are 0-d arrays on the device, so
adding them never reads a value back to the host.

=========  ===============================  ==================================
name       penalty(w)                       gradient(w)
=========  ===============================  ==================================
L1(l1)     l1 * sum(|w|)                    l1 * sign(w)   (0 at w = 0)
L2(l2)     l2 * sum(w^2)                    2 * l2 * w
L1L2       l1 * sum(|w|) + l2 * sum(w^2)    l1 * sign(w) + 2 * l2 * w
=========  ===============================  ==================================

L2 here is Keras' convention (no factor 1/2). With plain SGD it equals weight decay with
``decay = 2 * lr * l2``. |w| is not differentiable at 0; ``sign(0) = 0`` is the subgradient
that leaves zero weights at zero.

Examples:
    >>> import numpy as np
    >>> from portanet import regularizers
    >>> reg = regularizers.L1L2(l1=0.5, l2=0.25)
    >>> w = np.asarray([[1.0, -2.0]])
    >>> float(reg.penalty(w)), reg.gradient(w).tolist()    # 0.5 * 3 + 0.25 * 5
    (2.75, [[1.0, -1.5]])
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from . import ops
from ._config import Configurable
from ._typing import Array
from .registry import Registry

__all__ = ["L1", "L1L2", "L2", "Regularizer", "deserialize", "get", "serialize"]


def _coefficient(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0.0:
        raise ValueError(f"regularization factor {name} must be a number >= 0, received "
                         f"{name}={value!r}.")
    return float(value)


class Regularizer(Configurable):
    """Base class: ``penalty(w)`` (0-d array) and ``gradient(w)`` (array like ``w``)."""

    def penalty(self, w: Array) -> Array:
        raise NotImplementedError

    def gradient(self, w: Array) -> Array:
        raise NotImplementedError

    def __call__(self, w: Array) -> tuple[Array, Array]:
        """``(penalty(w), gradient(w))``."""
        return self.penalty(w), self.gradient(w)


class L1(Regularizer):
    """penalty = l1 * sum(|w|); gradient = l1 * sign(w). Drives weights to exactly zero."""

    def __init__(self, l1: float = 0.01):
        self.l1 = _coefficient("l1", l1)

    def penalty(self, w):
        xp = compat.array_namespace(w)
        return self.l1 * xp.sum(xp.abs(w))

    def gradient(self, w):
        return self.l1 * ops.sign(w)

    def _config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """penalty = l2 * sum(w^2); gradient = 2 * l2 * w. Shrinks weights in proportion to size."""

    def __init__(self, l2: float = 0.01):
        self.l2 = _coefficient("l2", l2)

    def penalty(self, w):
        xp = compat.array_namespace(w)
        return self.l2 * xp.sum(w * w)

    def gradient(self, w):
        return (2.0 * self.l2) * w

    def _config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """Elastic net: penalty = l1 * sum(|w|) + l2 * sum(w^2); gradient = l1 sign(w) + 2 l2 w."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = _coefficient("l1", l1)
        self.l2 = _coefficient("l2", l2)

    def penalty(self, w):
        xp = compat.array_namespace(w)
        return self.l1 * xp.sum(xp.abs(w)) + self.l2 * xp.sum(w * w)

    def gradient(self, w):
        return self.l1 * ops.sign(w) + (2.0 * self.l2) * w

    def _config(self):
        return {"l1": self.l1, "l2": self.l2}


def _elastic_net(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """L1L2 by name: "l1l2" alone means both factors 0.01, like "l1" and "l2" alone."""
    return L1L2(l1, l2)


_REGISTRY = Registry("regularizer", base=Regularizer,
                     accepts="None, a name such as 'l2', a config dict or a Regularizer")
"""The regularizers by class name (what configs write) and short names: "l1", "l2" and "l1l2"
are the class names in another spelling (default factors 0.01)."""
_REGISTRY.register("L1", L1)
_REGISTRY.register("L2", L2)
_REGISTRY.register("L1L2", _elastic_net, aliases=("elastic_net",))


def serialize(regularizer: Regularizer | None) -> dict | None:
    """The config of ``regularizer`` (None stays None)."""
    return None if regularizer is None else regularizer.get_config()


def deserialize(config: dict) -> Regularizer:
    """Rebuild a regularizer from ``{"class_name": ..., "config": {...}}``."""
    if not isinstance(config, dict):
        raise ValueError("a regularizer config is a dict {'class_name': ..., 'config': {...}}, "
                         f"received {config!r:.200}.")
    return _REGISTRY.resolve(config)


def get(identifier: Any, **params: Any) -> Regularizer | None:
    """A :class:`Regularizer` from None, a name ("l1", "l2", "l1l2": default factors 0.01,
    or those given in ``params``), a config dict, or an instance (returned as is).

    Examples:
        >>> get("l1_l2", l2=0.5)
        L1L2(l1=0.01, l2=0.5)
    """
    if identifier is None:
        return None
    return _REGISTRY.resolve(identifier, **params)
