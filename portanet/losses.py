"""Loss functions: the loss value and its gradient with respect to the predictions.

Every loss is a small class. Build it once, call it on each batch::

    loss = SoftmaxCrossEntropy()
    value, grad = loss(y_pred, y_true)      # value: 0-d array; grad: like y_pred

``value`` stays on the device (reading it with ``float(value)`` is a host sync: do that once per
epoch, not per step); ``grad`` = d value / d y_pred has ``y_pred``'s shape, dtype and device, ready
for the last layer's ``backprop``.

Reductions (``reduction=`` in every constructor)
------------------------------------------------
Each loss first computes one value per *sample*:

* elementwise losses (MAE, MSE, Huber, log-cosh, hinges, binary cross-entropies, Poisson) take
  the mean over every axis but the first: ``y_pred`` of shape (N, D) gives N per-sample values,
  each the mean of D elementwise terms; (N,) gives the N terms themselves;
* distribution losses (categorical and softmax cross-entropy, categorical hinge, KL divergence)
  reduce the class axis (the last one): (N, C) gives N values, (N, H, W, C) gives N*H*W.

Then ``"none"`` returns those per-sample values, ``"sum"`` their sum, and ``"mean"`` (the default)
their mean. For ``"none"`` the gradient is that of the *sum* (each sample's own gradient).
Two exceptions, both documented in their class: :class:`RootMeanSquaredError` with ``"mean"`` is
the square root of the mean squared error over the batch, and :class:`SoftmaxCrossEntropy` with
class weights divides by the total weight of the targets, as PyTorch does.

So ``"mean"`` equals PyTorch's ``reduction="mean"`` for every loss PyTorch has (its mean over all
elements is the mean of the per-sample means), and ``KLDivergence`` equals
``kl_div(..., reduction="batchmean")``, the mathematically correct one. ``"sum"`` is the sum of
the per-sample losses (Keras' convention): for (N, D) predictions of an elementwise loss,
PyTorch's ``"sum"`` is D times ours; for (N,) they are equal.

Checking targets without slowing training down
----------------------------------------------
Each call checks what costs nothing, the shapes and dtypes of the targets (held on the host).
Their *values* are checked once per dataset, by ``loss.check_targets(y_true, num_classes)`` and
:func:`check_labels` (one host read each), never per step: inside the hot path an integer label
outside [0, C) makes its sample's loss NaN instead. The checks live in
:mod:`portanet.losses_targets`, which explains why.

Names and configs
-----------------
:func:`get` takes a class name or an alias in any spelling (``"mse"``, ``"SoftmaxCrossEntropy"``,
``"cross_entropy"``) and ``get_config()`` writes ``{"class_name": "Huber", "config": {...}}``
(see :mod:`portanet.registry`).

Examples:
    >>> import numpy as np
    >>> from portanet import losses
    >>> loss = losses.SoftmaxCrossEntropy()
    >>> value, grad = loss(np.asarray([[0.0, 0.0]]), np.asarray([1]))
    >>> round(float(value), 6), grad.tolist()
    (0.693147, [[0.5, -0.5]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import array_api_compat as compat

from . import fused, ops
from . import losses_targets as targets
from ._typing import Array, Namespace
from .activations import log_softmax, sigmoid
from .devices import namespace_of, to_numpy
from .losses_targets import check_labels
from .registry import Registry, make_config

__all__ = [
    "EPSILON",
    "MAE",
    "MSE",
    "REDUCTIONS",
    "RMSE",
    "BinaryCrossEntropy",
    "BinaryCrossEntropyWithLogits",
    "CategoricalCrossEntropy",
    "CategoricalHinge",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "Loss",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Poisson",
    "RootMeanSquaredError",
    "SoftmaxCrossEntropy",
    "SquaredHinge",
    "check_labels",
    "from_config",
    "get",
    "known_names",
]

REDUCTIONS = ("mean", "sum", "none")
"""The accepted values of ``reduction``."""

EPSILON = 1e-7
"""Probabilities are clipped to [EPSILON, 1 - EPSILON] before a log: finite at exactly 0 and 1."""


# =============================================================================================
# The base class: input checks, reductions, config
# =============================================================================================
class Loss:
    """Base class of the losses: ``value, grad = loss(y_pred, y_true)``.

    Subclasses set ``aliases`` (extra names for :func:`get`) and implement ``_compute`` (or, for
    elementwise losses, ``elementwise``). Subclasses register themselves by class name (one
    whose name starts with ``_`` does not), so ``get_config`` / :func:`from_config` round trip
    for user-defined losses too; a later class of the same name replaces the earlier one.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (see the module docstring).
    """

    aliases: ClassVar[tuple[str, ...]] = ()
    takes_class_ids: ClassVar[bool] = False
    """True for losses that accept integer class ids as ``y_true``."""

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_"):
            return
        _REGISTRY.register(cls.__name__, cls, cls.__dict__.get("aliases", ()), overwrite=True)

    def __init__(self, *, reduction: str = "mean"):
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, "
                             f"received {reduction!r}.")
        self.reduction = reduction

    # -- calling -------------------------------------------------------------------------------
    def __call__(self, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        """The loss value and d value / d y_pred.

        Args:
            y_pred: the model's output, real floating, shape (N, ...).
            y_true: the targets, on the same backend and device (shape rules per loss).

        Returns:
            ``(value, grad)``: ``value`` is a 0-d array for "mean"/"sum", the per-sample losses
            for "none"; ``grad`` has ``y_pred``'s shape, dtype and device.
        """
        xp = self._namespace(y_pred, y_true)
        return self._compute(xp, y_pred, y_true)

    def value(self, y_pred: Array, y_true: Array) -> Array:
        """Just the loss value (for evaluation)."""
        return self(y_pred, y_true)[0]

    def gradient(self, y_pred: Array, y_true: Array) -> Array:
        """Just d value / d y_pred."""
        return self(y_pred, y_true)[1]

    def _compute(self, xp: Namespace, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        raise NotImplementedError

    def _namespace(self, y_pred: Array, y_true: Array) -> Namespace:
        xp = namespace_of(y_pred, y_true)  # one backend, one device, or a clear error
        name = type(self).__name__
        if not xp.isdtype(y_pred.dtype, "real floating"):
            raise TypeError(f"{name}: y_pred must be real floating (float32 or float64), "
                            f"received dtype {y_pred.dtype}. Cast it with "
                            "xp.astype(y_pred, xp.float32).")
        if y_pred.ndim == 0:
            raise ValueError(f"{name}: y_pred must have a batch axis, received a 0-d array. "
                             "Pass shape (N,) or (N, ...).")
        if y_pred.shape[0] == 0:
            raise ValueError(f"{name}: received an empty batch, y_pred of shape "
                             f"{tuple(y_pred.shape)}; the loss of no samples is undefined.")
        return xp

    # -- checking target values (host reads: once per dataset) -------------------------------
    def check_targets(self, y_true: Array, num_classes: int | None = None) -> None:
        """Check the target *values* once per dataset; raise ``ValueError`` naming the problem.

        This reads ``y_true`` back to the host (a device sync), so it is not part of
        ``__call__``: the training loop calls it once, before the first epoch.

        Args:
            y_true: all targets (or one batch of them).
            num_classes: the number of model outputs; needed for integer class ids.
        """
        xp = namespace_of(y_true)
        targets.require_finite(xp, y_true, type(self).__name__)

    # -- config ----------------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {}

    def get_config(self) -> dict[str, Any]:
        """``{"class_name": ..., "config": {"reduction": ..., ...}}`` (JSON-able);
        :func:`from_config` (or :func:`get`) turns it back into this loss."""
        return make_config(type(self).__name__, {"reduction": self.reduction, **self._params()})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Loss:
        """Rebuild a loss from :meth:`get_config`'s dict."""
        return from_config(config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config()["config"].items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash(repr(self))


_REGISTRY = Registry("loss", base=Loss,
                     accepts="a name such as 'mse', a config dict, a Loss class or instance")
"""Every loss class by name and alias; the classes below register themselves."""


def _reduce(xp: Namespace, per_sample: Array, grad: Array, reduction: str,
            normalizer: float | Array | None = None) -> tuple[Array, Array]:
    """Apply ``reduction`` to per-sample losses whose gradient (of their sum) is ``grad``."""
    if reduction == "none":
        return per_sample, grad
    if reduction == "sum":
        return xp.sum(per_sample), grad
    if normalizer is None:
        normalizer = float(math.prod(per_sample.shape))
    return xp.sum(per_sample) / normalizer, grad / normalizer


def _poison_invalid(xp: Namespace, per_sample: Array, valid: Array | None) -> Array:
    """NaN for samples whose class id was out of range: visible, with no host sync."""
    return per_sample if valid is None else xp.where(valid, per_sample, math.nan)


# =============================================================================================
# Regression losses (elementwise)
# =============================================================================================
class _ElementwiseLoss(Loss):
    """A loss that is a mean of elementwise terms l(y_pred, y_true); see the module docstring."""

    def elementwise(self, xp: Namespace, y_pred: Array, y_true: Array) -> tuple[Array, Array]:
        """``(l, dl/dy_pred)``, both like ``y_pred``, for float targets of the same shape."""
        raise NotImplementedError

    def _compute(self, xp, y_pred, y_true):
        y_true = targets.same_shape(xp, y_pred, y_true, type(self).__name__)
        terms, dterms = self.elementwise(xp, y_pred, y_true)
        per_sample_size = math.prod(y_pred.shape[1:])  # D terms average into one sample's loss
        if per_sample_size != 1:
            dterms = dterms / float(per_sample_size)
        if self.reduction == "mean":
            return xp.mean(terms), dterms / float(y_pred.shape[0])
        if self.reduction == "sum":
            total = xp.sum(terms)
            return (total if per_sample_size == 1 else total / float(per_sample_size)), dterms
        per_sample = terms
        if y_pred.ndim > 1:
            per_sample = xp.mean(xp.reshape(terms, (y_pred.shape[0], -1)), axis=1)
        return per_sample, dterms


class MeanAbsoluteError(_ElementwiseLoss):
    """Mean absolute error (L1): robust to outliers, constant-size gradients.

    Formula: l = |y_pred - y|;  dl/dy_pred = sign(y_pred - y)  (0 where they are equal).
    Equals ``torch.nn.functional.l1_loss`` for reduction "mean".

    Examples:
        >>> import numpy as np
        >>> value, grad = MeanAbsoluteError()(np.asarray([1.0, 4.0]), np.asarray([2.0, 2.0]))
        >>> float(value), grad.tolist()
        (1.5, [-0.5, 0.5])
    """

    aliases = ("mae", "mean_absolute_error", "l1", "l1_loss")

    def elementwise(self, xp, y_pred, y_true):
        diff = y_pred - y_true
        return xp.abs(diff), ops.sign(diff)


class MeanSquaredError(_ElementwiseLoss):
    """Mean squared error: the Gaussian negative log-likelihood, up to constants.

    Formula: l = (y_pred - y)^2;  dl/dy_pred = 2 (y_pred - y).
    Equals ``torch.nn.functional.mse_loss`` for reduction "mean".

    Examples:
        >>> import numpy as np
        >>> value, grad = MeanSquaredError()(np.asarray([1.0, 4.0]), np.asarray([2.0, 2.0]))
        >>> float(value), grad.tolist()
        (2.5, [-1.0, 2.0])
    """

    aliases = ("mse", "mean_squared_error", "mse_loss")

    def elementwise(self, xp, y_pred, y_true):
        diff = y_pred - y_true
        return diff * diff, 2.0 * diff


class RootMeanSquaredError(Loss):
    """Root mean squared error: sqrt(MSE), in the units of the targets.

    Formula (reduction "mean"): L = sqrt(m),  m = mean over all N*D elements of (y_pred - y)^2;
    dL/dy_pred = (y_pred - y) / (N * D * L).

    A square root does not split over samples, so the reductions differ from the other losses:
    "mean" is the RMSE of the whole batch (not the mean of per-sample RMSEs); "none" gives each
    sample's own RMSE, sqrt(mean over its D elements); "sum" is the sum of those. Where L = 0
    (a perfect fit) the gradient is taken as 0 rather than 0/0.

    Examples:
        >>> import numpy as np
        >>> value, grad = RootMeanSquaredError()(np.asarray([1.0, 4.0]), np.asarray([2.0, 2.0]))
        >>> round(float(value), 6), [round(g, 6) for g in grad.tolist()]
        (1.581139, [-0.316228, 0.632456])
    """

    aliases = ("rmse", "root_mean_squared_error")

    def _compute(self, xp, y_pred, y_true):
        y_true = targets.same_shape(xp, y_pred, y_true, type(self).__name__)
        diff = y_pred - y_true
        n = y_pred.shape[0]
        per_sample_size = math.prod(y_pred.shape[1:])
        if self.reduction == "mean":
            root = xp.sqrt(xp.mean(diff * diff))
            safe = xp.where(root > 0, root, 1.0)  # diff is 0 wherever root is 0
            return root, diff / (float(n * per_sample_size) * safe)
        squares = xp.reshape(diff * diff, (n, -1))
        root = xp.sqrt(xp.mean(squares, axis=1))  # (N,)
        safe = xp.where(root > 0, root, 1.0)
        grad = diff / (float(per_sample_size)
                       * xp.reshape(safe, (n,) + (1,) * (y_pred.ndim - 1)))
        return (root if self.reduction == "none" else xp.sum(root)), grad


class Huber(_ElementwiseLoss):
    """Huber loss: quadratic for small errors, linear for large ones (robust regression).

    Formula, r = y_pred - y:  l = r^2 / 2 if |r| <= delta else delta * (|r| - delta / 2);
    dl/dy_pred = clip(r, -delta, delta).
    Equals ``torch.nn.functional.huber_loss(..., delta=delta)`` for reduction "mean".

    Args:
        delta: where the quadratic part turns linear (> 0).

    Examples:
        >>> import numpy as np
        >>> value, grad = Huber(delta=1.0)(np.asarray([0.5, 3.0]), np.asarray([0.0, 0.0]))
        >>> float(value), grad.tolist()
        (1.3125, [0.25, 0.5])
    """

    aliases = ("huber", "huber_loss")

    def __init__(self, delta: float = 1.0, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0:
            raise ValueError(f"Huber: delta must be a number > 0, received delta={delta!r}.")
        self.delta = float(delta)

    def _params(self):
        return {"delta": self.delta}

    def elementwise(self, xp, y_pred, y_true):
        r = y_pred - y_true
        a = xp.abs(r)
        d = self.delta
        loss = xp.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))
        return loss, xp.clip(r, min=-d, max=d)


class LogCosh(_ElementwiseLoss):
    """Log-cosh loss: like r^2 / 2 for small errors and |r| - log 2 for large ones, smooth.

    Formula, r = y_pred - y:  l = log(cosh(r));  dl/dy_pred = tanh(r).

    Stable form: log(cosh(r)) = |r| + log1p(exp(-2|r|)) - log(2), which never overflows
    (cosh(r) itself overflows float32 at |r| > 89).

    Examples:
        >>> import numpy as np
        >>> value, grad = LogCosh()(np.asarray([1000.0]), np.asarray([0.0]))
        >>> round(float(value), 6), grad.tolist()
        (999.306853, [1.0])
    """

    aliases = ("log_cosh", "logcosh")

    def elementwise(self, xp, y_pred, y_true):
        r = y_pred - y_true
        a = xp.abs(r)
        return a + xp.log1p(xp.exp(-2.0 * a)) - math.log(2.0), xp.tanh(r)


class Poisson(_ElementwiseLoss):
    """Poisson negative log-likelihood, for count targets (without the log(y!) constant).

    Formula, y_pred a rate (> 0):  l = y_pred - y * log(y_pred + eps);
    dl/dy_pred = 1 - y / (y_pred + eps).
    With ``log_input=True`` y_pred is the log-rate:  l = exp(y_pred) - y * y_pred;
    dl/dy_pred = exp(y_pred) - y.
    Equals ``torch.nn.functional.poisson_nll_loss(..., log_input=log_input, full=False,
    eps=epsilon)`` for reduction "mean".

    Args:
        log_input: whether y_pred is log(rate) (no log of a non-positive number possible).
        epsilon: added to the rate inside the log, so a rate of 0 stays finite.

    Examples:
        >>> import numpy as np
        >>> value, grad = Poisson()(np.asarray([2.0]), np.asarray([2.0]))
        >>> round(float(value), 6), [round(g, 6) for g in grad.tolist()]
        (0.613706, [0.0])
    """

    aliases = ("poisson", "poisson_nll", "poisson_nll_loss")

    def __init__(self, *, log_input: bool = False, epsilon: float = EPSILON,
                 reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if not isinstance(log_input, bool):
            raise TypeError(f"Poisson: log_input must be True or False, received {log_input!r}.")
        self.log_input = log_input
        self.epsilon = _check_epsilon(epsilon, "Poisson")

    def _params(self):
        return {"log_input": self.log_input, "epsilon": self.epsilon}

    def elementwise(self, xp, y_pred, y_true):
        if self.log_input:
            rate = xp.exp(y_pred)
            return rate - y_true * y_pred, rate - y_true
        shifted = y_pred + self.epsilon
        return y_pred - y_true * xp.log(shifted), 1.0 - y_true / shifted

    def check_targets(self, y_true, num_classes=None):
        targets.require_range(namespace_of(y_true), y_true, 0.0, None, "Poisson", "counts")


def _check_epsilon(epsilon: Any, name: str) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (
            0.0 < epsilon < 0.5):
        raise ValueError(f"{name}: epsilon must be a number in (0, 0.5), received "
                         f"epsilon={epsilon!r}.")
    return float(epsilon)


# =============================================================================================
# Margin losses: hinge, squared hinge, categorical hinge
# =============================================================================================
def _plus_minus_one(xp: Namespace, y: Array) -> Array:
    """Labels in {0, 1} become {-1, 1}; labels already in {-1, 1} stay.

    Decided on the device (one reduction, no host read): if every label is 0 or 1, map
    y -> 2y - 1. The two conventions agree on 1, so only a 0 tells them apart.
    """
    zero_one = xp.all((y == 0.0) | (y == 1.0))
    return xp.where(zero_one, 2.0 * y - 1.0, y)


class Hinge(_ElementwiseLoss):
    """Hinge loss of a binary max-margin classifier (SVM) on raw scores.

    Formula, y in {-1, 1} (labels in {0, 1} are mapped to {-1, 1}):
    l = max(0, 1 - y * y_pred);  dl/dy_pred = -y where 1 - y * y_pred > 0, else 0.

    Examples:
        >>> import numpy as np
        >>> value, grad = Hinge()(np.asarray([0.5, 2.0]), np.asarray([1, 0]))
        >>> float(value), grad.tolist()
        (1.75, [-0.5, 0.5])
    """

    aliases = ("hinge",)

    def elementwise(self, xp, y_pred, y_true):
        y = _plus_minus_one(xp, y_true)
        margin = 1.0 - y * y_pred
        return ops.maximum(margin, 0.0), xp.where(margin > 0, -y, 0.0)

    def check_targets(self, y_true, num_classes=None):
        targets.check_binary(namespace_of(y_true), y_true, type(self).__name__)


class SquaredHinge(_ElementwiseLoss):
    """Squared hinge loss: the hinge squared, differentiable at the margin.

    Formula, y in {-1, 1} (labels in {0, 1} are mapped to {-1, 1}):
    l = max(0, 1 - y * y_pred)^2;  dl/dy_pred = -2 y max(0, 1 - y * y_pred).

    Examples:
        >>> import numpy as np
        >>> value, grad = SquaredHinge()(np.asarray([0.5, 2.0]), np.asarray([1, -1]))
        >>> float(value), grad.tolist()
        (4.625, [-0.5, 3.0])
    """

    aliases = ("squared_hinge",)

    def elementwise(self, xp, y_pred, y_true):
        y = _plus_minus_one(xp, y_true)
        margin = ops.maximum(1.0 - y * y_pred, 0.0)
        return margin * margin, -2.0 * y * margin

    def check_targets(self, y_true, num_classes=None):
        targets.check_binary(namespace_of(y_true), y_true, type(self).__name__)


class _ClassLoss(Loss):
    """A loss over the class axis (the last one); y_true one-hot/probabilities or class ids."""

    takes_class_ids = True

    def check_targets(self, y_true, num_classes=None):
        targets.check_classes(namespace_of(y_true), y_true, num_classes, type(self).__name__,
                              allow_ids=self.takes_class_ids)


class CategoricalHinge(_ClassLoss):
    """Multiclass hinge (Weston-Watkins): each wrong class must score ``margin`` below the true.

    Formula, scores z (N, C), true class t of each sample:
    L = (1/C) * sum_{j != t} max(0, margin - z_t + z_j);
    dL/dz_j = (1/C) * [margin - z_t + z_j > 0] for j != t,
    dL/dz_t = -(1/C) * (number of j != t violating the margin).
    Equals ``torch.nn.functional.multi_margin_loss`` (p=1) for reduction "mean", including its
    1/C factor. (Keras' ``categorical_hinge`` is the Crammer-Singer variant, which keeps only the
    largest wrong score.) ``y_true``: integer class ids (N,) or one-hot (N, C).

    Examples:
        >>> import numpy as np
        >>> value, grad = CategoricalHinge()(np.asarray([[2.0, 1.5, -1.0]]), np.asarray([0]))
        >>> float(value), grad.tolist()
        (0.16666666666666666, [[-0.3333333333333333, 0.3333333333333333, 0.0]])
    """

    aliases = ("categorical_hinge", "multi_margin", "multiclass_hinge", "multi_margin_loss")

    def __init__(self, margin: float = 1.0, *, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
            raise ValueError(f"CategoricalHinge: margin must be a number > 0, received "
                             f"margin={margin!r}.")
        self.margin = float(margin)

    def _params(self):
        return {"margin": self.margin}

    def _compute(self, xp, y_pred, y_true):
        y, valid = targets.for_classes(xp, y_pred, y_true, type(self).__name__)
        n_classes = float(y_pred.shape[-1])
        true_score = xp.sum(y * y_pred, axis=-1, keepdims=True)
        margins = self.margin - true_score + y_pred
        violated = xp.astype((margins > 0) & (y == 0.0), y_pred.dtype)  # wrong classes only
        per_sample = xp.sum(violated * margins, axis=-1) / n_classes
        grad = (violated - y * xp.sum(violated, axis=-1, keepdims=True)) / n_classes
        return _reduce(xp, _poison_invalid(xp, per_sample, valid), grad, self.reduction)

    def check_targets(self, y_true, num_classes=None):
        xp = namespace_of(y_true)
        super().check_targets(y_true, num_classes)
        if xp.isdtype(y_true.dtype, "real floating"):
            one_hot = xp.all((y_true == 0.0) | (y_true == 1.0)) & xp.all(
                xp.sum(y_true, axis=-1) == 1.0)
            if not bool(one_hot):
                raise ValueError("CategoricalHinge: float y_true must be one-hot (one 1 per "
                                 "row, zeros elsewhere); pass integer class ids or one-hot "
                                 "targets.")


# =============================================================================================
# Cross-entropies: binary (probabilities, logits), categorical (probabilities), softmax (logits)
# =============================================================================================
class BinaryCrossEntropy(_ElementwiseLoss):
    """Binary cross-entropy on probabilities (e.g. a sigmoid output).

    Formula, p = clip(y_pred, eps, 1 - eps):
    l = -(y log p + (1 - y) log(1 - p));  dl/dy_pred = (p - y) / (p (1 - p)).

    The clip keeps predictions of exactly 0 and 1 finite (the loss is at most -log(eps) = 16.1).
    Outside [eps, 1 - eps] the gradient is the formula's value at the clip point (not 0, which
    autograd of a clip would give), so a confidently wrong prediction is still pushed back.
    Targets may be soft, anywhere in [0, 1]. Equals ``torch.nn.functional.binary_cross_entropy``
    for predictions inside [eps, 1 - eps], reduction "mean". Prefer
    :class:`BinaryCrossEntropyWithLogits` on the raw scores: it is exact everywhere.

    Args:
        epsilon: the clip, 1e-7 by default.

    Examples:
        >>> import numpy as np
        >>> value, grad = BinaryCrossEntropy()(np.asarray([0.0, 1.0]), np.asarray([0.0, 1.0]))
        >>> round(float(value), 6), [round(g, 6) for g in grad.tolist()]
        (0.0, [0.5, -0.5])
    """

    aliases = ("binary_crossentropy", "binary_cross_entropy", "bce")

    def __init__(self, *, epsilon: float = EPSILON, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        self.epsilon = _check_epsilon(epsilon, "BinaryCrossEntropy")

    def _params(self):
        return {"epsilon": self.epsilon}

    def elementwise(self, xp, y_pred, y_true):
        p = xp.clip(y_pred, min=self.epsilon, max=1.0 - self.epsilon)
        loss = -(y_true * xp.log(p) + (1.0 - y_true) * xp.log1p(-p))
        return loss, (p - y_true) / (p * (1.0 - p))

    def check_targets(self, y_true, num_classes=None):
        targets.require_range(namespace_of(y_true), y_true, 0.0, 1.0, "BinaryCrossEntropy",
                              "probabilities")


class BinaryCrossEntropyWithLogits(_ElementwiseLoss):
    """Binary cross-entropy on logits z: sigmoid and cross-entropy fused, exact everywhere.

    Formula: l = -(y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))) = softplus(z) - y z;
    dl/dz = sigmoid(z) - y.

    Stable form: softplus(z) = max(z, 0) + log1p(exp(-|z|)), so logits of +-1000 give finite,
    exact values (0 or 1000) where the two-step version would take log(0).
    Equals ``torch.nn.functional.binary_cross_entropy_with_logits`` for reduction "mean".

    Examples:
        >>> import numpy as np
        >>> loss = BinaryCrossEntropyWithLogits(reduction="none")
        >>> value, grad = loss(np.asarray([-1000.0, 0.0]), np.asarray([1.0, 1.0]))
        >>> [round(v, 6) for v in value.tolist()], grad.tolist()
        ([1000.0, 0.693147], [-1.0, -0.5])
    """

    aliases = ("binary_crossentropy_with_logits", "binary_cross_entropy_with_logits",
               "bce_with_logits", "sigmoid_cross_entropy")

    def elementwise(self, xp, y_pred, y_true):
        z = y_pred
        softplus = ops.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))
        return softplus - y_true * z, sigmoid(z) - y_true

    def check_targets(self, y_true, num_classes=None):
        targets.require_range(namespace_of(y_true), y_true, 0.0, 1.0,
                              "BinaryCrossEntropyWithLogits", "probabilities")


class CategoricalCrossEntropy(_ClassLoss):
    """Cross-entropy of a predicted distribution (e.g. a softmax output) against the targets.

    Formula, q = clip(y_pred, eps, 1) over the class axis (last), targets y:
    L = -sum_c y_c log q_c;  dL/dy_pred_c = -y_c / q_c.

    ``y_true``: one-hot or probabilities of y_pred's shape, or integer class ids of shape
    ``y_pred.shape[:-1]``. y_pred is used as given (not renormalized to sum to 1). As in
    :class:`BinaryCrossEntropy`, the clip keeps q = 0 finite and the gradient there is the
    formula's value at the clip point. Matches PyTorch's ``nll_loss(log(y_pred), ids)`` (and, for
    one-hot or soft targets, ``-(y * log(y_pred)).sum(-1).mean()``) for reduction "mean".
    On logits, :class:`SoftmaxCrossEntropy` is faster and exact.

    Args:
        epsilon: the clip, 1e-7 by default.

    Examples:
        >>> import numpy as np
        >>> value, grad = CategoricalCrossEntropy()(np.asarray([[0.5, 0.25, 0.25]]),
        ...                                         np.asarray([0]))
        >>> round(float(value), 6), grad.tolist()
        (0.693147, [[-2.0, -0.0, -0.0]])
    """

    aliases = ("categorical_crossentropy", "categorical_cross_entropy", "cce",
               "sparse_categorical_crossentropy")

    def __init__(self, *, epsilon: float = EPSILON, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        self.epsilon = _check_epsilon(epsilon, "CategoricalCrossEntropy")

    def _params(self):
        return {"epsilon": self.epsilon}

    def _compute(self, xp, y_pred, y_true):
        y, valid = targets.for_classes(xp, y_pred, y_true, type(self).__name__)
        q = xp.clip(y_pred, min=self.epsilon, max=1.0)
        per_sample = -xp.sum(y * xp.log(q), axis=-1)
        return _reduce(xp, _poison_invalid(xp, per_sample, valid), -y / q, self.reduction)


class SoftmaxCrossEntropy(_ClassLoss):
    """Softmax and cross-entropy fused, on logits: the classification loss.

    Formula, logits z (..., C), targets y (one-hot, probabilities or class ids), s = softmax(z):
    L = -sum_c y_c log s_c = logsumexp(z) * sum_c y_c - sum_c y_c z_c;
    dL/dz = s * sum_c y_c - y, which is the famous ``softmax(z) - y`` for one-hot targets.

    With ``label_smoothing`` = e, the targets become y' = (1 - e) y + e / C; with
    ``class_weights`` w, each target class c counts w_c times: L = -sum_c w_c y'_c log s_c and
    dL/dz = s * sum_c w_c y'_c - w * y'.

    Reduction "mean" divides the summed loss by the number of samples, or, with class weights,
    by the total weight of the (unsmoothed) targets, sum_i sum_c w_c y_ic = sum_i w_{t_i}. This
    is exactly ``torch.nn.functional.cross_entropy(z, ids, weight=w, label_smoothing=e)`` for
    class ids, with and without weights and smoothing, and for probability targets without
    weights. (For probability targets *with* weights PyTorch divides by N instead; portanet
    divides by the target weight so one-hot and class-id targets give the same loss.)

    Stable form: log s = z - max(z) - log(sum(exp(z - max(z)))), finite for logits of +-1000
    in float32; the loss never takes log of a rounded-off 0.

    Args:
        label_smoothing: e in [0, 1): how much target mass spreads uniformly over the classes.
        class_weights: C non-negative numbers (a list, tuple, or an array of any backend), or
            None for equal weights.

    Examples:
        >>> import numpy as np
        >>> value, grad = SoftmaxCrossEntropy()(np.asarray([[1000.0, -1000.0]]), np.asarray([1]))
        >>> float(value), grad.tolist()
        (2000.0, [[1.0, -1.0]])
    """

    aliases = ("softmax_cross_entropy", "softmax_crossentropy", "cross_entropy",
               "sparse_softmax_cross_entropy")

    def __init__(self, *, label_smoothing: float = 0.0,
                 class_weights: Sequence[float] | Array | None = None, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0.0 <= label_smoothing < 1.0:
            raise ValueError("SoftmaxCrossEntropy: label_smoothing must be a number in [0, 1), "
                             f"received label_smoothing={label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)
        self.class_weights = _check_class_weights(class_weights)
        self._weights_on: dict[tuple[str, str, str], Array] = {}

    def _params(self):
        return {"label_smoothing": self.label_smoothing, "class_weights": self.class_weights}

    def _weights(self, xp: Namespace, like: Array) -> Array | None:
        """The class weights as an array of ``like``'s namespace, dtype and device (cached)."""
        if self.class_weights is None:
            return None
        if len(self.class_weights) != like.shape[-1]:
            raise ValueError(f"SoftmaxCrossEntropy: class_weights has "
                             f"{len(self.class_weights)} entries but y_pred has "
                             f"{like.shape[-1]} classes (shape {tuple(like.shape)}); give one "
                             "weight per class.")
        device = compat.device(like)
        key = (xp.__name__, str(device), str(like.dtype))
        weights = self._weights_on.get(key)
        if weights is None:  # one host-to-device copy per backend/device/dtype, not per step
            weights = xp.asarray(self.class_weights, dtype=like.dtype, device=device)
            self._weights_on[key] = weights
        return weights

    def _compute(self, xp, y_pred, y_true):
        plain = self.class_weights is None and self.label_smoothing == 0.0
        if plain and targets.are_class_ids(xp, y_pred, y_true, type(self).__name__):
            # The common case, one fused kernel where the backend has one (fused.py).
            per_sample, grad = fused.softmax_cross_entropy(y_pred, y_true)
            return _reduce(xp, per_sample, grad, self.reduction)
        y, valid = targets.for_classes(xp, y_pred, y_true, type(self).__name__)
        weights = self._weights(xp, y_pred)
        e = self.label_smoothing
        target = y if e == 0.0 else (1.0 - e) * y + e / float(y_pred.shape[-1])
        weighted = target if weights is None else target * weights
        log_s = log_softmax(y_pred, axis=-1)
        per_sample = -xp.sum(weighted * log_s, axis=-1)
        s = xp.exp(log_s)
        if weights is None and valid is not None:
            grad = s - weighted  # class ids: the (smoothed) targets sum to exactly 1
        else:
            grad = s * xp.sum(weighted, axis=-1, keepdims=True) - weighted
        normalizer = None if weights is None else xp.sum(y * weights)
        return _reduce(xp, _poison_invalid(xp, per_sample, valid), grad, self.reduction,
                       normalizer)


def _check_class_weights(weights: Any) -> list[float] | None:
    if weights is None:
        return None
    if not isinstance(weights, (list, tuple)):
        try:  # an array of any backend: read it once, here at construction
            weights = to_numpy(weights).tolist()
        except TypeError:
            raise TypeError("SoftmaxCrossEntropy: class_weights must be a list of numbers or a "
                            f"1-d array, received {type(weights).__name__}.") from None
    if not isinstance(weights, (list, tuple)) or not weights or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights):
        raise TypeError("SoftmaxCrossEntropy: class_weights must be a non-empty 1-d sequence "
                        f"of numbers, received {weights!r}.")
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError("SoftmaxCrossEntropy: class_weights must be finite and >= 0, received "
                         f"{list(weights)!r}.")
    return [float(w) for w in weights]


# =============================================================================================
# KL divergence
# =============================================================================================
class KLDivergence(_ClassLoss):
    """Kullback-Leibler divergence KL(y || y_pred) between target and predicted distributions.

    Formula, p = y_true, q = clip(y_pred, eps, 1), over the class axis (last):
    L = sum_c p_c log(p_c / q_c)  (terms with p_c = 0 count 0);  dL/dy_pred_c = -p_c / q_c.

    Both arguments are probabilities (PyTorch's ``kl_div`` takes log q instead). Reduction
    "mean" averages over samples: ``torch.nn.functional.kl_div(log(q), p,
    reduction="batchmean")``. Integer class ids are refused: a one-hot target makes this the
    categorical cross-entropy, so use :class:`CategoricalCrossEntropy`.

    Args:
        epsilon: the clip of q, 1e-7 by default.

    Examples:
        >>> import numpy as np
        >>> value, grad = KLDivergence()(np.asarray([[0.5, 0.5]]), np.asarray([[0.5, 0.5]]))
        >>> float(value), grad.tolist()
        (0.0, [[-1.0, -1.0]])
    """

    aliases = ("kl_divergence", "kld", "kl_div", "kullback_leibler_divergence")
    takes_class_ids = False

    def __init__(self, *, epsilon: float = EPSILON, reduction: str = "mean"):
        super().__init__(reduction=reduction)
        self.epsilon = _check_epsilon(epsilon, "KLDivergence")

    def _params(self):
        return {"epsilon": self.epsilon}

    def _compute(self, xp, y_pred, y_true):
        p, _ = targets.for_classes(xp, y_pred, y_true, type(self).__name__, allow_ids=False)
        q = xp.clip(y_pred, min=self.epsilon, max=1.0)
        positive = p > 0
        # p log p with the limit 0 log 0 = 0, without ever evaluating log(0)
        p_log_p = xp.where(positive, p * xp.log(xp.where(positive, p, 1.0)), 0.0)
        per_sample = xp.sum(p_log_p - p * xp.log(q), axis=-1)
        return _reduce(xp, per_sample, -p / q, self.reduction)


# =============================================================================================
# Short names and lookup
# =============================================================================================
MAE = MeanAbsoluteError
MSE = MeanSquaredError
RMSE = RootMeanSquaredError


def known_names() -> list[str]:
    """The class names and aliases :func:`get` accepts (case, ``_``, ``-`` and spaces are
    ignored)."""
    return _REGISTRY.names()


def from_config(config: dict[str, Any]) -> Loss:
    """A loss from ``get_config()``'s dict, e.g. ``{"class_name": "Huber", "config": {"delta":
    2.0}}``; the format-1/2 shape ``{"name": "Huber", "delta": 2.0}`` is read too.

    Examples:
        >>> from_config(Huber(delta=2.0).get_config())
        Huber(reduction='mean', delta=2.0)
        >>> from_config({"name": "huber", "delta": 2.0})
        Huber(reduction='mean', delta=2.0)
    """
    if not isinstance(config, dict):
        raise ValueError(f"a loss config is a dict {{'class_name': ..., 'config': {{...}}}} (from "
                         f"get_config()), received {config!r:.200}.")
    return _REGISTRY.resolve(config)


def get(identifier: str | dict | Loss | type[Loss], **params: Any) -> Loss:
    """A loss instance from a name, a config dict, a class or an instance (returned as is).

    Args:
        identifier: ``"mse"``, ``"SoftmaxCrossEntropy"``, ``"cross_entropy"``, ... (see
            :func:`known_names`), a ``get_config()`` dict, a Loss class or a Loss instance.
        **params: constructor arguments, e.g. ``reduction="sum"`` or ``delta=2.0``.

    Raises:
        ValueError: an unknown name (the message suggests the closest known ones).
        TypeError: parameters the loss does not take, or an identifier of another type.

    Examples:
        >>> get("huber", delta=2.0)
        Huber(reduction='mean', delta=2.0)
    """
    return _REGISTRY.resolve(identifier, **params)
