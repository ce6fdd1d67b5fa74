"""Adam and AdamW: momentum plus RMSProp, with bias-corrected moment estimates."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from .. import fused
from .._typing import Array
from .base import LearningRate, Optimizer, check_beta, check_non_negative


class Adam(Optimizer):
    """Adam (Kingma & Ba, "Adam: a method for stochastic optimization", ICLR 2015), with the
    AMSGrad fix (Reddi, Kale & Kumar, "On the convergence of Adam and beyond", ICLR 2018).

    ::

        m <- b1 * m + (1 - b1) * g                  first moment (momentum)
        v <- b2 * v + (1 - b2) * g^2                second moment (as RMSProp)
        amsgrad:  v_max <- max(v_max, v), and v_max replaces v below
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)     undo the bias of starting at 0
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    ``weight_decay`` adds lambda * p to g (L2, coupled: it is then divided by sqrt(v_hat) like
    the rest of g); for decay that is not, use :class:`AdamW`. Matches ``torch.optim.Adam``.

    Args:
        learning_rate: lr (default 0.001), a number or a schedule.
        beta_1, beta_2: moment decays in [0, 1) (defaults 0.9, 0.999).
        eps: default 1e-8.
        amsgrad: keep the running maximum of v (non-increasing step sizes).
        weight_decay, clip_value, clip_norm, global_clip_norm, inplace, flat: see
            :class:`Optimizer`.

    Examples:
        >>> import numpy as np
        >>> opt = Adam(learning_rate=0.1)   # the first step has size lr in every coordinate
        >>> w = opt.step({"w": np.asarray([1.0])}, {"w": np.asarray([-3.0])})["w"]
        >>> round(float(w[0]), 6)
        1.1
    """

    def __init__(self, learning_rate: LearningRate = 1e-3, *, beta_1: float = 0.9,
                 beta_2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False,
                 weight_decay: float = 0.0, clip_value: float | None = None,
                 clip_norm: float | None = None, global_clip_norm: float | None = None,
                 inplace: bool = True, flat: bool | None = None):
        super().__init__(learning_rate, weight_decay=weight_decay, clip_value=clip_value,
                         clip_norm=clip_norm, global_clip_norm=global_clip_norm,
                         inplace=inplace, flat=flat)
        self.beta_1 = check_beta("beta_1", beta_1)
        self.beta_2 = check_beta("beta_2", beta_2)
        self.eps = check_non_negative("eps", eps)
        self.amsgrad = bool(amsgrad)

    def _slot_names(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def _coefficients(self, t: int, first: bool):
        # the bias corrections, host floats: 1 - b1^t and sqrt(1 - b2^t)
        return {"bias_1": 1.0 - self.beta_1**t, "sqrt_bias_2": math.sqrt(1.0 - self.beta_2**t)}

    def _rule(self, g: Array, slots: dict[str, Array], c):
        xp = compat.array_namespace(g)
        b1, b2 = self.beta_1, self.beta_2
        m = b1 * slots["exp_avg"] + (1.0 - b1) * g
        v = b2 * slots["exp_avg_sq"] + (1.0 - b2) * (g * g)
        new = {"exp_avg": m, "exp_avg_sq": v}
        if self.amsgrad:
            v = new["max_exp_avg_sq"] = xp.maximum(slots["max_exp_avg_sq"], v)
        m_hat = m / c["bias_1"]
        sqrt_v_hat = xp.sqrt(v) / c["sqrt_bias_2"]
        return m_hat / (sqrt_v_hat + self.eps), new

    def _rule_inplace(self, g: Array, slots: dict[str, Array], c):
        # The same arithmetic in the same order as _rule, written into the moments and into
        # two fresh temporaries instead of allocating an array per operation.
        xp = compat.array_namespace(g)
        b1, b2 = self.beta_1, self.beta_2
        m, v = slots["exp_avg"], slots["exp_avg_sq"]
        m *= b1
        m = fused.add_scaled_(m, g, 1.0 - b1)
        g2 = g * g
        g2 *= 1.0 - b2
        v *= b2
        v += g2
        new = {"exp_avg": m, "exp_avg_sq": v}
        if self.amsgrad:
            v = new["max_exp_avg_sq"] = xp.maximum(slots["max_exp_avg_sq"], v)
        direction = m / c["bias_1"]
        denominator = xp.sqrt(v)
        denominator /= c["sqrt_bias_2"]
        denominator += self.eps
        direction /= denominator
        return direction, new

    def _hyperparameters(self) -> dict[str, Any]:
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "eps": self.eps,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, "Decoupled weight decay
    regularization", ICLR 2019).

    The decay shrinks p directly instead of entering g, so it is not rescaled by Adam's
    per-coordinate step sizes::

        p <- p * (1 - lr * lambda) - lr * m_hat / (sqrt(v_hat) + eps)

    with m_hat and v_hat as in :class:`Adam`. Default lambda = 0.01. Matches
    ``torch.optim.AdamW``.
    """

    decoupled_weight_decay = True

    def __init__(self, learning_rate: LearningRate = 1e-3, *, beta_1: float = 0.9,
                 beta_2: float = 0.999, eps: float = 1e-8, amsgrad: bool = False,
                 weight_decay: float = 1e-2, clip_value: float | None = None,
                 clip_norm: float | None = None, global_clip_norm: float | None = None,
                 inplace: bool = True, flat: bool | None = None):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, eps=eps, amsgrad=amsgrad,
                         weight_decay=weight_decay, clip_value=clip_value, clip_norm=clip_norm,
                         global_clip_norm=global_clip_norm, inplace=inplace,
                         flat=flat)
