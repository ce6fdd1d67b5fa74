"""AdaGrad: a per-coordinate step that shrinks with the gradients seen so far."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array
from .base import LearningRate, Optimizer, check_non_negative


class AdaGrad(Optimizer):
    """AdaGrad (Duchi, Hazan & Singer, "Adaptive subgradient methods", JMLR 2011).

    Each coordinate gets its own step size, the base rate divided by the root of the sum of its
    squared gradients: rare features keep large steps, frequent ones get small steps::

        G  <- G + g^2                                   (G starts at initial_accumulator_value)
        lr_t = lr / (1 + (t - 1) * lr_decay)
        p  <- p - lr_t * g / (sqrt(G) + eps)

    Because G only grows, the effective rate decays towards zero: good for convex and sparse
    problems, often too aggressive for deep networks (AdaDelta, RMSProp and Adam fix that).
    Matches ``torch.optim.Adagrad``.

    Args:
        learning_rate: lr (default 0.01), a number or a schedule.
        lr_decay: extra 1/t decay of the rate (default 0).
        initial_accumulator_value: the starting value of G (default 0).
        eps: keeps the division finite (default 1e-10).
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.
    """

    def __init__(self, learning_rate: LearningRate = 0.01, *, lr_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 weight_decay: float = 0.0, clip_value: float | None = None,
                 clip_norm: float | None = None, global_clip_norm: float | None = None,
                 inplace: bool = True, flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.lr_decay = check_non_negative("lr_decay", lr_decay)
        self.initial_accumulator_value = check_non_negative("initial_accumulator_value",
                                                            initial_accumulator_value)
        self.eps = check_non_negative("eps", eps)

    def _slot_names(self):
        return ("sum",)

    def _init_slots(self, p: Array) -> dict[str, Array]:
        xp = compat.array_namespace(p)
        return {"sum": xp.full_like(p, self.initial_accumulator_value)}

    def _coefficients(self, t: int, first: bool):
        return {"decay": 1.0 / (1.0 + (t - 1) * self.lr_decay)}  # lr_t / lr

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        G = slots["sum"] + g * g
        return c["decay"] * g / (xp.sqrt(G) + self.eps), {"sum": G}

    def _hyperparameters(self) -> dict[str, Any]:
        return {"lr_decay": self.lr_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}
