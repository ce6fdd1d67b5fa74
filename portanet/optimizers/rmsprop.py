"""RMSProp: divide by a running root-mean-square of the gradient."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative


class RMSProp(Optimizer):
    """RMSProp (Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture 6e,
    2012), with Graves' centered variant ("Generating sequences with recurrent neural networks",
    2013) and optional momentum.

    ::

        s <- rho * s + (1 - rho) * g^2                  moving mean of g^2
        centered:  a <- rho * a + (1 - rho) * g         moving mean of g
                   r = sqrt(s - a^2) + eps              (a running standard deviation)
        otherwise: r = sqrt(s) + eps                    (a running root mean square)
        momentum:  b <- mu * b + g / r,   p <- p - lr * b
        otherwise:                        p <- p - lr * g / r

    Defaults are torch's (lr 0.01, rho 0.99, eps 1e-8); the lecture used rho = 0.9 and Keras
    uses lr 0.001. Matches ``torch.optim.RMSprop`` (whose rho is called alpha).

    Args:
        learning_rate: lr (default 0.01), a number or a schedule.
        rho: decay of the moving averages, in [0, 1) (default 0.99).
        momentum: mu in [0, 1) (default 0: no momentum buffer).
        centered: divide by the running standard deviation instead of the RMS.
        eps: default 1e-8.
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.
    """

    def __init__(self, learning_rate: LearningRate = 0.01, *, rho: float = 0.99,
                 momentum: float = 0.0, centered: bool = False, eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_value: float | None = None,
                 clip_norm: float | None = None, global_clip_norm: float | None = None,
                 inplace: bool = True, flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.rho = check_beta("rho", rho)
        self.momentum = check_beta("momentum", momentum)
        self.centered = bool(centered)
        self.eps = check_non_negative("eps", eps)

    def _slot_names(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum else ()))

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        rho = self.rho
        new = {"square_avg": rho * slots["square_avg"] + (1.0 - rho) * (g * g)}
        if self.centered:
            new["grad_avg"] = rho * slots["grad_avg"] + (1.0 - rho) * g
            variance = new["square_avg"] - new["grad_avg"] * new["grad_avg"]
            # >= 0 in exact arithmetic; rounding can leave -1e-20 when g is constant
            r = xp.sqrt(xp.clip(variance, min=0.0)) + self.eps
        else:
            r = xp.sqrt(new["square_avg"]) + self.eps
        if not self.momentum:
            return g / r, new
        new["momentum_buffer"] = self.momentum * slots["momentum_buffer"] + g / r
        return new["momentum_buffer"], new

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rho": self.rho, "momentum": self.momentum, "centered": self.centered,
                "eps": self.eps}
