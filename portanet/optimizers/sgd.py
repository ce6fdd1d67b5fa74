"""Stochastic gradient descent, with classical, moving-average or Nesterov momentum."""

from __future__ import annotations

from typing import Any

from .. import fused
from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative

_FORMS = ("classical", "average")


class SGD(Optimizer):
    """Stochastic gradient descent (Robbins & Monro 1951), optionally with momentum.

    Plain (``momentum=0``)::

        p <- p - lr * g

    Momentum (Polyak 1964, "heavy ball"), ``momentum_form="classical"`` (default; torch/Keras)::

        v <- mu * v + (1 - dampening) * g        (the first v is g itself, as in torch)
        p <- p - lr * v

    ``momentum_form="average"``: v is an exponential moving average of the gradients, the form
    taught in many courses; its steady-state step is lr * g instead of lr * g / (1 - mu), so lr
    does not need rescaling when mu changes::

        v <- mu * v + (1 - mu) * g               (v starts at 0)
        p <- p - lr * v

    Nesterov (``nesterov=True``; Sutskever et al. 2013, in the form torch and Keras use): step
    along the gradient plus the momentum that the next step will add::

        p <- p - lr * (g + mu * v)               classical form (after v's update)
        p <- p - lr * ((1 - mu) * g + mu * v)    average form

    Args:
        learning_rate: lr (default 0.01), a number or a schedule.
        momentum: mu in [0, 1); 0 switches momentum off. 0.9 is the usual choice.
        momentum_form: "classical" or "average" (see above).
        nesterov: use Nesterov's look-ahead (needs momentum > 0, and dampening 0).
        dampening: classical form only: the gradient enters v scaled by (1 - dampening).
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.

    Examples:
        >>> import numpy as np
        >>> opt = SGD(learning_rate=0.1, momentum=0.9)
        >>> p = opt.step({"w": np.asarray([1.0])}, {"w": np.asarray([2.0])})
        >>> p["w"].tolist()
        [0.8]
    """

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0, *,
                 momentum_form: str = "classical", nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0,
                 clip_value: float | None = None, clip_norm: float | None = None,
                 global_clip_norm: float | None = None, inplace: bool = True,
                 flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.momentum = check_beta("momentum", momentum)
        if momentum_form not in _FORMS:
            raise ValueError(f"momentum_form must be one of {_FORMS}, received "
                             f"{momentum_form!r}.")
        self.momentum_form = momentum_form
        self.nesterov = bool(nesterov)
        self.dampening = check_non_negative("dampening", dampening)
        if self.dampening > 1:
            raise ValueError(f"dampening must be in [0, 1], received {dampening!r}.")
        if self.dampening and momentum_form == "average":
            raise ValueError(f"dampening={dampening!r} applies to the classical form only; the "
                             "average form already scales the gradient by (1 - momentum).")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError(f"nesterov=True needs momentum > 0 and dampening = 0, received "
                             f"momentum={momentum!r}, dampening={dampening!r}.")

    def _slot_names(self):
        return ("momentum_buffer",) if self.momentum else ()

    def _coefficients(self, t: int, first: bool):
        if not self.momentum or self.momentum_form == "average":
            return {}
        # torch's convention: the buffer starts as the first (undampened) gradient. From a zero
        # buffer that is v = 0 * v + 1 * g, so the first update is the same formula with other
        # coefficients (exact: 0 * 0 + g = g), and a compiled step needs no second version.
        return {"keep": 0.0, "gain": 1.0} if first else \
            {"keep": self.momentum, "gain": 1.0 - self.dampening}

    def _rule(self, g: Array, slots: dict[str, Array], c):
        mu = self.momentum
        if not mu:
            return g, slots
        v = slots["momentum_buffer"]
        if self.momentum_form == "average":
            v = mu * v + (1.0 - mu) * g
            direction = (1.0 - mu) * g + mu * v if self.nesterov else v
        else:
            v = c["keep"] * v + c["gain"] * g  # keep = mu, gain = 1 - dampening after step 1
            direction = g + mu * v if self.nesterov else v
        return direction, {"momentum_buffer": v}

    def _rule_inplace(self, g: Array, slots: dict[str, Array], c):
        # The same arithmetic in the same order, written into the buffer.
        mu = self.momentum
        if not mu:
            return g, slots
        v = slots["momentum_buffer"]
        if self.momentum_form == "average":
            v *= mu
            v = fused.add_scaled_(v, g, 1.0 - mu)
            direction = (1.0 - mu) * g + mu * v if self.nesterov else v
        else:
            v *= c["keep"]
            v = fused.add_scaled_(v, g, c["gain"])
            direction = g + mu * v if self.nesterov else v
        return direction, {"momentum_buffer": v}

    def _hyperparameters(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "momentum_form": self.momentum_form,
                "nesterov": self.nesterov, "dampening": self.dampening}
