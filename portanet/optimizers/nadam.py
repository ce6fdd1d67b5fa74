"""NAdam: Adam with Nesterov momentum."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative


class NAdam(Optimizer):
    """NAdam (Dozat, "Incorporating Nesterov momentum into Adam", ICLR workshop 2016).

    Adam's first moment is replaced by a Nesterov look-ahead: the update mixes the current
    gradient with the momentum the *next* step will use. Dozat's momentum schedule warms
    mu up from b1/2 towards b1::

        mu_t = b1 * (1 - 0.5 * 0.96^(t * psi))             psi = momentum_decay
        m <- b1 * m + (1 - b1) * g
        v <- b2 * v + (1 - b2) * g^2
        v_hat = v / (1 - b2^t)
        p <- p - lr * [ (1 - mu_t) / (1 - prod_{i<=t} mu_i) * g
                        + mu_(t+1) / (1 - prod_{i<=t+1} mu_i) * m ] / (sqrt(v_hat) + eps)

    ``decoupled_weight_decay=True`` decays as AdamW does (torch's "NAdamW"). The products of
    mu are Python floats kept per step count, so no array holds them. Matches
    ``torch.optim.NAdam`` (the same definition as Keras' Nadam).

    Args:
        learning_rate: lr (default 0.002), a number or a schedule.
        beta_1, beta_2: decays in [0, 1) (defaults 0.9, 0.999).
        eps: default 1e-8.
        momentum_decay: psi >= 0 (default 0.004, Dozat's value).
        decoupled_weight_decay: apply weight_decay as in AdamW instead of as L2.
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.
    """

    def __init__(self, learning_rate: LearningRate = 2e-3, *, beta_1: float = 0.9,
                 beta_2: float = 0.999, eps: float = 1e-8, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, weight_decay: float = 0.0,
                 clip_value: float | None = None, clip_norm: float | None = None,
                 global_clip_norm: float | None = None, inplace: bool = True,
                 flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.beta_1 = check_beta("beta_1", beta_1)
        self.beta_2 = check_beta("beta_2", beta_2)
        self.eps = check_non_negative("eps", eps)
        self.momentum_decay = check_non_negative("momentum_decay", momentum_decay)
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self._mu_product = (0, 1.0)  # (t, prod_{i<=t} mu_i)

    def _mu(self, t: int) -> float:
        return self.beta_1 * (1.0 - 0.5 * 0.96 ** (t * self.momentum_decay))

    def _coefficients(self, t: int, first: bool):
        done, product = self._mu_product
        if done > t - 1:  # the step count went back (load_state_dict): start over
            done, product = 0, 1.0
        for i in range(done + 1, t + 1):
            product *= self._mu(i)
        self._mu_product = (t, product)  # a cache: the next step multiplies in one more mu
        mu_next = self._mu(t + 1)
        return {"coef_g": (1.0 - self._mu(t)) / (1.0 - product),
                "coef_m": mu_next / (1.0 - product * mu_next),
                "bias_2": 1.0 - self.beta_2**t}

    def _slot_names(self):
        return ("exp_avg", "exp_avg_sq")

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        b1, b2 = self.beta_1, self.beta_2
        m = b1 * slots["exp_avg"] + (1.0 - b1) * g
        v = b2 * slots["exp_avg_sq"] + (1.0 - b2) * (g * g)
        denominator = xp.sqrt(v / c["bias_2"]) + self.eps
        direction = (c["coef_g"] * g + c["coef_m"] * m) / denominator
        return direction, {"exp_avg": m, "exp_avg_sq": v}

    def _hyperparameters(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "eps": self.eps,
                "momentum_decay": self.momentum_decay,
                "decoupled_weight_decay": self.decoupled_weight_decay}
