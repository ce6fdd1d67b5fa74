"""AdaDelta: AdaGrad with a window, and step sizes in the units of the parameters."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative


class AdaDelta(Optimizer):
    """AdaDelta (Zeiler, "ADADELTA: an adaptive learning rate method", 2012).

    AdaGrad's growing sum becomes a moving average of g^2, and the numerator is a moving
    average of the past updates, so the step has the units of p (Zeiler's "unit correction")::

        E[g^2]  <- rho * E[g^2] + (1 - rho) * g^2
        dx       = sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g
        E[dx^2] <- rho * E[dx^2] + (1 - rho) * dx^2
        p       <- p - lr * dx

    The paper has no learning rate (lr = 1, the default here) and uses rho = 0.95; the default
    rho = 0.9 is torch's. Matches ``torch.optim.Adadelta``.

    Args:
        learning_rate: lr (default 1.0), a number or a schedule.
        rho: decay of both moving averages, in [0, 1) (default 0.9).
        eps: default 1e-6; it also sets the size of the very first steps (sqrt(eps)).
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.
    """

    def __init__(self, learning_rate: LearningRate = 1.0, *, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, clip_value: float | None = None,
                 clip_norm: float | None = None, global_clip_norm: float | None = None,
                 inplace: bool = True, flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.rho = check_beta("rho", rho)
        self.eps = check_non_negative("eps", eps)

    def _slot_names(self):
        return ("square_avg", "acc_delta")

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        rho, eps = self.rho, self.eps
        square_avg = rho * slots["square_avg"] + (1.0 - rho) * (g * g)
        dx = xp.sqrt(slots["acc_delta"] + eps) / xp.sqrt(square_avg + eps) * g
        acc_delta = rho * slots["acc_delta"] + (1.0 - rho) * (dx * dx)
        return dx, {"square_avg": square_avg, "acc_delta": acc_delta}

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rho": self.rho, "eps": self.eps}
