"""The learning-rate range test: train briefly while the rate grows, and watch the loss.

Smith, "Cyclical learning rates for training neural networks" (WACV 2017), section 3.3: run a
few hundred mini-batches with a rate that rises geometrically from ``start_lr`` to ``end_lr``,

    lr_i = start_lr * (end_lr / start_lr)^(i / (num_steps - 1)),     i = 0, ..., num_steps - 1

and record each mini-batch loss. The loss falls slowly while the rate is too small, fast in the
useful range, and explodes when the rate is too large; a good starting rate lies on the steep
descent. :func:`lr_finder` returns the curve and the rate where the smoothed loss falls fastest
per decade of learning rate.

This is a training loop, so it sits on the training floor, above the schedules (whose argument
checks it shares) and below the model: it drives any object with the ``train_step`` protocol
(a ``pn.Sequential``, or the ten-line model of tests/test_lr_finder.py). ``pn.lr_finder`` is this
module's function (as ``pn.gradcheck`` is gradcheck's).

Examples:
    >>> import portanet as pn
    >>> lrs, losses, lr = pn.lr_finder(model, x, y, num_steps=200)    # doctest: +SKIP
    >>> model.optimizer.learning_rate = lr                            # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat as compat

from ._typing import Array
from .backend import adapter_of
from .random import Generator
from .schedules import _in_range, _positive_int, _rate  # the same checks, the same messages

__all__ = ["lr_finder"]


def _copy(x: Array) -> Array:
    """An independent copy (an in-place optimizer path must not reach the saved values)."""
    return compat.array_namespace(x).asarray(x, copy=True)


def _copy_state(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "slots": {name: {k: _copy(v) for k, v in slots.items()}
                               for name, slots in state["slots"].items()}}


def _centered_average(values: list[float], half_width: int) -> list[float]:
    """Mean over a window centred on each point (shorter at the ends): smooths without lag."""
    n = len(values)
    out = []
    for i in range(n):
        lo, hi = max(0, i - half_width), min(n, i + half_width + 1)
        out.append(sum(values[lo:hi]) / (hi - lo))
    return out


def _steepest_descent(lrs: list[float], losses: list[float]) -> float:
    """The rate where the loss falls fastest per decade of learning rate.

    Mini-batch losses are noisy, so both the curve and its slope are taken over windows of about
    a tenth of the run: the losses are averaged over a centred window (an exponential average
    would lag and shift the answer to larger rates), and the slope at point i is measured
    between the points a window away on either side. Only the descent is searched: points
    before the smoothed minimum, at least a window away from the start.
    """
    w = max(1, len(lrs) // 20)
    smooth = _centered_average(losses, w)
    logs = [math.log10(lr) for lr in lrs]
    lowest = min(range(len(smooth)), key=smooth.__getitem__)
    candidates = range(w, min(lowest, len(lrs) - w))
    if not candidates:  # no descent to speak of: a tenth of the rate with the lowest loss
        return lrs[lowest] / 10.0
    slope = {i: (smooth[i + w] - smooth[i - w]) / (logs[i + w] - logs[i - w]) for i in candidates}
    return lrs[min(slope, key=slope.__getitem__)]


def lr_finder(model: Any, x: Array, y: Array, start_lr: float = 1e-7, end_lr: float = 10.0,
              num_steps: int = 100, batch_size: int = 32, smoothing: float = 0.9,
              diverge_factor: float = 4.0, seed: int = 0
              ) -> tuple[list[float], list[float], float]:
    """The learning-rate range test (Smith, WACV 2017): train briefly while the rate grows.

    The rate rises geometrically, lr_i = start * (end / start)^(i / (num_steps - 1)), one
    mini-batch per step. The loss falls slowly while the rate is too small, fast in the useful
    range, and explodes when the rate is too large; the test stops early once the smoothed loss
    (an exponential moving average with bias correction, ``smoothing`` its decay) exceeds
    ``diverge_factor`` times its best value, or the loss is not finite. The suggestion is the
    rate where the loss, averaged over a centred window, falls fastest against log(lr).

    The model's weights, its optimizer's state and its learning rate are restored afterwards, so
    the test leaves no trace. Each step reads the loss back to the host (to stop on divergence):
    a short loop for diagnosis, not the way ``fit`` trains.

    Args:
        model: anything with ``train_step(xb, yb) -> 0-d loss array``, ``parameters()`` ->
            dict, ``set_parameters(dict)`` and an ``optimizer`` with an assignable
            ``learning_rate`` and ``state_dict()`` / ``load_state_dict()``.
        x, y: the training inputs and targets, first axis the samples (N, ...).
        start_lr, end_lr: the range, 0 < start_lr < end_lr.
        num_steps: how many mini-batches (and rates) to try, >= 3.
        batch_size: mini-batch size; batches are drawn without replacement from a random
            order (seeded by ``seed``) and the order is redrawn after each pass.
        smoothing: decay of the loss's moving average, in [0, 1).
        diverge_factor: stop when the smoothed loss exceeds this multiple of the best one.

    Returns:
        ``(lrs, losses, suggested_lr)``: the rates tried and the raw mini-batch losses (Python
        floats, as long as the test ran), and the suggested rate.

    Examples:
        >>> lrs, losses, lr = pn.lr_finder(model, x, y, num_steps=200)  # doctest: +SKIP
    """
    start_lr, end_lr = _rate("start_lr", start_lr), _rate("end_lr", end_lr)
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_finder needs 0 < start_lr < end_lr, received start_lr={start_lr!r}, "
                         f"end_lr={end_lr!r}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 3:
        raise ValueError(f"num_steps must be an int >= 3, received {num_steps!r}.")
    batch_size = _positive_int("batch_size", batch_size)
    smoothing = _in_range("smoothing", smoothing, 0.0, 1.0, high_open=True)
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be > 1, received {diverge_factor!r}.")
    n = x.shape[0]
    if y.shape[0] != n or n == 0:
        raise ValueError(f"x and y must hold the same, non-zero number of samples; received "
                         f"x.shape={tuple(x.shape)} and y.shape={tuple(y.shape)}.")
    for needed in ("train_step", "parameters", "set_parameters", "optimizer"):
        if not hasattr(model, needed):
            raise TypeError(f"lr_finder needs a model with {needed!r}; {type(model).__name__} "
                            f"has none. See the docstring for the protocol.")

    xp = compat.array_namespace(x)
    optimizer = model.optimizer
    saved_params = {name: _copy(v) for name, v in model.parameters().items()}
    saved_state = _copy_state(optimizer.state_dict())
    saved_lr = optimizer.learning_rate
    generator = Generator(seed, backend=adapter_of(x).name, device=compat.device(x))
    batch_size = min(batch_size, n)
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    order, cursor = generator.permutation(n), 0
    try:
        for i in range(num_steps):
            if cursor + batch_size > n:
                order, cursor = generator.permutation(n), 0
            index = order[cursor:cursor + batch_size]
            cursor += batch_size
            lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
            optimizer.learning_rate = lr
            loss = float(model.train_step(xp.take(x, index, axis=0), xp.take(y, index, axis=0)))
            if not math.isfinite(loss):
                break
            average = smoothing * average + (1.0 - smoothing) * loss
            debiased = average / (1.0 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(loss)
            best = min(best, debiased)
            if debiased > diverge_factor * best:
                break
    finally:
        model.set_parameters(saved_params)
        optimizer.load_state_dict(saved_state)
        optimizer.learning_rate = saved_lr
    if len(lrs) < 3:
        raise RuntimeError(
            f"the loss diverged after {len(lrs)} step(s) of lr_finder (the last rate tried was "
            f"{lrs[-1] if lrs else start_lr:.3g}); lower start_lr, or check the model and data."
        )
    return lrs, losses, _steepest_descent(lrs, losses)
