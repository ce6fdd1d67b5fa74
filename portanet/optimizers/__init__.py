"""Optimizers: how parameters move, given their gradients.

Every optimizer is called the same way and returns NEW parameters (nothing is mutated, so JAX's
immutable arrays work like the rest)::

    opt = pn.optimizers.Adam(learning_rate=1e-3)
    params = opt.step(params, grads)        # dicts {name: array}

In order of growing complexity (each file holds one family, its docstring the equations):

=============  ===================================================  =================
``SGD``        p <- p - lr g; momentum (classical or moving          sgd.py
               average), Nesterov
``AdaGrad``    per-coordinate rates from the sum of g^2               adagrad.py
``AdaDelta``   moving averages of g^2 and of the updates              adadelta.py
``RMSProp``    divide by a moving RMS of g; centered, momentum        rmsprop.py
``Adam``       momentum + RMSProp + bias correction; AMSGrad          adam.py
``AdamW``      Adam with decoupled weight decay                       adam.py
``Adamax``     Adam with the infinity norm                            adamax.py
``NAdam``      Adam with Nesterov momentum                            nadam.py
=============  ===================================================  =================

The shared pipeline (clipping, L2 weight decay, the learning rate, lazily created state,
``state_dict``/``load_state_dict``, ``to``) is in base.py. ``get`` builds an optimizer from a
name, a config dict or an instance.
"""

from __future__ import annotations

from typing import Any

from .adadelta import AdaDelta
from .adagrad import AdaGrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .base import Optimizer
from .nadam import NAdam
from .rmsprop import RMSProp
from .sgd import SGD

__all__ = ["SGD", "AdaDelta", "AdaGrad", "Adam", "AdamW", "Adamax", "NAdam", "Optimizer",
           "RMSProp", "from_config", "get"]

_CLASSES: dict[str, type[Optimizer]] = {
    cls.__name__: cls for cls in (SGD, AdaGrad, AdaDelta, RMSProp, Adam, AdamW, Adamax, NAdam)
}

_NAMES: dict[str, tuple[type[Optimizer], dict[str, Any]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (AdaGrad, {}),
    "adadelta": (AdaDelta, {}),
    "rmsprop": (RMSProp, {}),
    "adam": (Adam, {}),
    "amsgrad": (Adam, {"amsgrad": True}),
    "adamw": (AdamW, {}),
    "adamax": (Adamax, {}),
    "nadam": (NAdam, {}),
}
"""Names ``get`` knows; each builds the class with its defaults plus these arguments."""


def from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer (without state) from ``get_config()``'s dict."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"an optimizer config is a dict with a 'class_name' key (from "
                         f"get_config()), received {config!r}.")
    kwargs = dict(config)
    name = kwargs.pop("class_name")
    if name not in _CLASSES:
        raise ValueError(f"unknown optimizer class {name!r}; known: {sorted(_CLASSES)}.")
    try:
        return _CLASSES[name](**kwargs)
    except TypeError as err:
        raise TypeError(f"cannot build {name} from config {config!r}: {err}") from None


def get(identifier: str | dict[str, Any] | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from a name ("adam", "sgd", "nesterov", ...), a config dict or an instance.

    Extra keyword arguments go to the constructor when a name is given, e.g.
    ``get("adam", learning_rate=3e-4)``.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return from_config({**identifier, **kwargs})
    if isinstance(identifier, str):
        key = identifier.strip().lower().replace("_", "").replace("-", "")
        if key not in _NAMES:
            raise ValueError(f"unknown optimizer {identifier!r}; known names: "
                             f"{sorted(_NAMES)}.")
        cls, defaults = _NAMES[key]
        return cls(**{**defaults, **kwargs})
    raise TypeError(f"expected an optimizer name, config dict or Optimizer, received "
                    f"{identifier!r} ({type(identifier).__name__}).")
