"""Optimizers: how parameters move, given their gradients.

Every optimizer is called the same way and returns the updated parameters::

    opt = pn.optimizers.Adam(learning_rate=1e-3)
    params = opt.step(params, grads)        # dicts {name: array}

Writeable arrays (NumPy, CuPy, torch, array-api-strict) are updated in place and returned, as
``torch.optim`` does; JAX's immutable arrays, and every array with ``inplace=False``, are
replaced by new ones (the portable path: the same arithmetic, bit for bit up to one rounding
where a fused multiply-add runs; base.py explains both). The pure form
``params, state = opt.update(grads, state, params)`` keeps the state out of the optimizer.

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

from functools import partial
from typing import Any

from ..registry import Registry
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

_REGISTRY = Registry("optimizer", base=Optimizer,
                     accepts="an optimizer name such as 'adam', a config dict or an Optimizer")
"""The optimizer classes by name (what configs write), and three names for configurations of
them: "momentum" and "nesterov" (SGD with momentum 0.9) and "amsgrad" (Adam's variant)."""
for _cls in (SGD, AdaGrad, AdaDelta, RMSProp, Adam, AdamW, Adamax, NAdam):
    _REGISTRY.register(_cls.__name__, _cls)
_REGISTRY.register("momentum", partial(SGD, momentum=0.9))
_REGISTRY.register("nesterov", partial(SGD, momentum=0.9, nesterov=True))
_REGISTRY.register("amsgrad", partial(Adam, amsgrad=True))


def from_config(config: dict[str, Any]) -> Optimizer:
    """Rebuild an optimizer (without state) from ``get_config()``'s dict,
    ``{"class_name": "Adam", "config": {...}}``; the format-1/2 shape ``{"class_name": "Adam",
    **config}`` is read too."""
    if not isinstance(config, dict):
        raise ValueError("an optimizer config is a dict {'class_name': ..., 'config': {...}} "
                         f"(from get_config()), received {config!r:.200}.")
    return _REGISTRY.resolve(config)


def get(identifier: str | dict[str, Any] | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from a name ("adam", "SGD", "nesterov", ...), a config dict or an instance.

    Extra keyword arguments go to the constructor, e.g. ``get("adam", learning_rate=3e-4)``.

    Raises:
        ValueError: an unknown name (the message suggests the closest known ones).
        TypeError: arguments the optimizer does not take, or an identifier of another type.
    """
    return _REGISTRY.resolve(identifier, **kwargs)
