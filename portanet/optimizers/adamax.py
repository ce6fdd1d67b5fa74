"""Adamax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative


class Adamax(Optimizer):
    """Adamax (Kingma & Ba, ICLR 2015, section 7.1): Adam's v with the L-infinity norm.

    ::

        m <- b1 * m + (1 - b1) * g
        u <- max(b2 * u, |g| + eps)
        p <- p - lr / (1 - b1^t) * m / u

    u needs no bias correction (a maximum is not pulled towards its zero start). The eps inside
    the maximum, which keeps u > 0 where g has been 0 so far, is torch's; the paper has none.
    Matches ``torch.optim.Adamax``.

    Args:
        learning_rate: lr (default 0.002), a number or a schedule.
        beta_1, beta_2: decays in [0, 1) (defaults 0.9, 0.999).
        eps: default 1e-8.
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.
    """

    def __init__(self, learning_rate: LearningRate = 2e-3, *, beta_1: float = 0.9,
                 beta_2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                 clip_value: float | None = None, clip_norm: float | None = None,
                 global_clip_norm: float | None = None, inplace: bool = True,
                 flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.beta_1 = check_beta("beta_1", beta_1)
        self.beta_2 = check_beta("beta_2", beta_2)
        self.eps = check_non_negative("eps", eps)

    def _slot_names(self):
        return ("exp_avg", "exp_inf")

    def _coefficients(self, t: int, first: bool):
        return {"bias_1": 1.0 - self.beta_1**t}

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        b1 = self.beta_1
        m = b1 * slots["exp_avg"] + (1.0 - b1) * g
        u = xp.maximum(self.beta_2 * slots["exp_inf"], xp.abs(g) + self.eps)
        return m / c["bias_1"] / u, {"exp_avg": m, "exp_inf": u}

    def _hyperparameters(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "eps": self.eps}
