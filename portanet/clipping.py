"""Gradient clipping: keep one bad batch from throwing the parameters across the landscape.

Three rules, from the bluntest to the gentlest on the gradient's direction:

* **by value**: every entry is clipped into ``[-c, c]``. Cheap, but it changes the direction.
* **by norm, per parameter**: each gradient array ``g`` whose norm exceeds ``c`` is scaled down
  to norm ``c``; its direction is kept, the balance between parameters is not.
* **by global norm**: all gradients are scaled by one factor so that their joint norm is at most
  ``c`` (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
  networks"). The direction of the whole update is kept. This is
  ``torch.nn.utils.clip_grad_norm_``, to the same formula.

Scaling is written without a Python ``if`` on array values (that would read the norm back to the
host): the factor ``min(1, c / (norm + 1e-6))`` is an array and multiplies every gradient.

**A norm that is not finite cannot be clipped.** One ``inf`` entry makes the norm ``inf``, the
factor ``0``, and ``inf * 0`` is NaN: ``[1, inf, -2]`` clips to ``[0, nan, -0]`` (torch's
``clip_grad_norm_`` gives the same). So the norm rules report it, and each caller chooses:

* ``error_if_nonfinite=True`` (as in torch) raises ``FloatingPointError`` naming the gradients
  that hold NaN/Inf. That reads one boolean back to the host: for standalone use, not inside a
  compiled step.
* :func:`clip_gradients`, the optimizers' pipeline, returns a 0-d boolean array ``finite``
  next to the clipped gradients; the optimizers then *skip the update on the device*
  (``where(finite, new, old)`` for parameters and state), so a bad batch leaves the parameters
  as they were, with no host read (portanet/optimizers/base.py).

Examples:
    >>> import numpy as np
    >>> from portanet import clipping
    >>> grads = {"w": np.asarray([3.0, 4.0]), "b": np.asarray([12.0])}
    >>> clipped, norm = clipping.clip_by_global_norm(grads, max_norm=1.0)
    >>> float(norm)                           # sqrt(9 + 16 + 144)
    13.0
    >>> [round(float(v), 6) for v in clipped["w"]]
    [0.230769, 0.307692]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import array_api_compat as compat

from ._typing import Array
from .devices import namespace_of, to_numpy

__all__ = ["clip_by_global_norm", "clip_by_norm", "clip_by_value", "clip_gradients", "global_norm",
           "norm"]

_EPS = 1e-6
"""Added to the norm before dividing, as ``torch.nn.utils.clip_grad_norm_`` does: a zero
gradient then gets the factor ``min(1, c / 1e-6) = 1`` instead of ``0 / 0``."""


def _check_max(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a positive number, received {value!r} "
                        f"({type(value).__name__}).")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number, received {value!r}. "
                         f"Pass None to the optimizer to switch this clipping off.")
    return float(value)


def _check_norm_type(norm_type: float) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, int | float) or not norm_type > 0:
        raise ValueError(f"norm_type must be a positive number or math.inf, received "
                         f"{norm_type!r}. Use 2.0 for the Euclidean norm.")
    return float(norm_type)


def norm(g: Array, norm_type: float = 2.0) -> Array:
    """The p-norm of all entries of ``g`` as a 0-d array: ``(sum |g_i|^p)^(1/p)``.

    ``norm_type=2`` is the Euclidean norm ``sqrt(sum g_i^2)``; ``math.inf`` is ``max |g_i|``.

    Args:
        g: a real floating array of any shape.
        norm_type: p > 0, or ``math.inf``.

    Returns:
        A 0-d array of ``g``'s dtype, on its device.
    """
    xp = compat.array_namespace(g)
    if norm_type == math.inf:
        return xp.max(xp.abs(g))
    if norm_type == 2.0:
        return xp.sqrt(xp.sum(g * g))
    return xp.sum(xp.abs(g) ** norm_type) ** (1.0 / norm_type)


def global_norm(grads: Mapping[str, Array], norm_type: float = 2.0) -> Array:
    """The norm of all gradients joined into one vector, as a 0-d array on their device.

    ``||(g_1, ..., g_n)||_p = ||(||g_1||_p, ..., ||g_n||_p)||_p``: the norm of the per-array
    norms, which is how ``torch.nn.utils.get_total_norm`` computes it.
    """
    norm_type = _check_norm_type(norm_type)
    if not grads:
        raise ValueError("global_norm received no gradients; expected a non-empty dict "
                         "{parameter name: gradient array}.")
    xp = namespace_of(*grads.values())  # one device for all, or a clear error
    per_array = [norm(g, norm_type) for g in grads.values()]
    return norm(xp.stack(per_array), norm_type)


def clip_by_value(grads: Mapping[str, Array], clip_value: float) -> dict[str, Array]:
    """Clip every gradient entry into ``[-clip_value, clip_value]``.

    Forward: ``g'_i = min(max(g_i, -c), c)``.

    Args:
        grads: {name: gradient array}.
        clip_value: c > 0.

    Returns:
        A new dict of clipped arrays (same shapes, dtypes, devices).
    """
    c = _check_max("clip_value", clip_value)
    out = {}
    for name, g in grads.items():
        xp = compat.array_namespace(g)
        out[name] = xp.clip(g, min=-c, max=c)
    return out


def _scale_each(grads: Mapping[str, Array], c: float,
                norm_type: float) -> tuple[dict[str, Array], list[Array]]:
    """Each array scaled to norm <= c, and the per-array norms (0-d arrays) before scaling."""
    out, norms = {}, []
    for name, g in grads.items():
        xp = compat.array_namespace(g)
        n = norm(g, norm_type)
        out[name] = g * xp.clip(c / (n + _EPS), max=1.0)
        norms.append(n)
    return out, norms


def _all_finite(values: list[Array]) -> Array:
    """One 0-d boolean array: every value is finite (no host read)."""
    xp = namespace_of(*values)
    return xp.all(xp.isfinite(xp.stack(values)))


def _raise_if_nonfinite(rule: str, grads: Mapping[str, Array], finite: Array,
                        what: str) -> None:
    """``error_if_nonfinite=True``: one host read of ``finite``; on failure a second read names
    the gradients that hold NaN or Inf."""
    if bool(finite):
        return
    xp = namespace_of(*grads.values())
    flags = xp.stack([xp.all(xp.isfinite(g)) for g in grads.values()])
    bad = [name for name, ok in zip(grads, to_numpy(flags).tolist(), strict=True) if not ok]
    where = f"NaN or Inf entries in {bad}" if bad else \
        "every entry is finite, but the norm overflows their dtype"
    raise FloatingPointError(
        f"{rule}: {what} is not finite ({where}), so it cannot be scaled to the limit "
        "(the result would be NaN or zeros). Find where the gradient overflows (lower the "
        "learning rate, check the inputs and the loss), or pass error_if_nonfinite=False and "
        "check the norm yourself; the optimizers' clipping skips such a step on its own.")


def clip_by_norm(grads: Mapping[str, Array], max_norm: float, norm_type: float = 2.0, *,
                 error_if_nonfinite: bool = False) -> dict[str, Array]:
    """Scale each gradient array separately so that its own norm is at most ``max_norm``.

    Forward: ``g' = g * min(1, c / (||g|| + 1e-6))`` for each array ``g``.

    Args:
        grads: {name: gradient array}.
        max_norm: c > 0.
        norm_type: p of the p-norm (2 by default, ``math.inf`` allowed).
        error_if_nonfinite: raise ``FloatingPointError`` when an array's norm is NaN or Inf
            (one host read). False: such an array comes back with NaN entries (as torch's),
            e.g. ``[1, inf, -2] -> [0, nan, -0]``.

    Returns:
        A new dict of scaled arrays.
    """
    c = _check_max("max_norm", max_norm)
    norm_type = _check_norm_type(norm_type)
    out, norms = _scale_each(grads, c, norm_type)
    if error_if_nonfinite and norms:
        _raise_if_nonfinite("clip_by_norm", grads, _all_finite(norms),
                            f"the {norm_type:g}-norm of some gradient")
    return out


def clip_by_global_norm(grads: Mapping[str, Array], max_norm: float, norm_type: float = 2.0, *,
                        error_if_nonfinite: bool = False) -> tuple[dict[str, Array], Array]:
    """Scale all gradients by one factor so that their global norm is at most ``max_norm``.

    Forward: ``N = ||(g_1, ..., g_n)||``, ``g'_k = g_k * min(1, c / (N + 1e-6))``. Matches
    ``torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)``.

    Args:
        grads: {name: gradient array}, all on one device.
        max_norm: c > 0.
        norm_type: p of the p-norm (2 by default, ``math.inf`` allowed).
        error_if_nonfinite: raise ``FloatingPointError`` when ``N`` is NaN or Inf (one host
            read). False: every gradient is multiplied by ``c / inf = 0``, so finite entries
            become 0 and infinite ones NaN (as torch's); check ``isfinite(total_norm)``.

    Returns:
        ``(clipped, total_norm)``: a new dict of scaled arrays, and the global norm before
        clipping as a 0-d array on the device (log it when you need it; reading it is a sync).

    Examples:
        >>> import math, numpy as np
        >>> with np.errstate(invalid="ignore"):  # inf * 0: NumPy would warn
        ...     clipped, total = clip_by_global_norm({"w": np.asarray([1.0, math.inf, -2.0])}, 1.0)
        >>> clipped["w"].tolist(), float(total)
        ([0.0, nan, -0.0], inf)
    """
    c = _check_max("max_norm", max_norm)
    total = global_norm(grads, norm_type)
    if error_if_nonfinite:
        xp = compat.array_namespace(total)
        _raise_if_nonfinite("clip_by_global_norm", grads, xp.isfinite(total),
                            f"the global {_check_norm_type(norm_type):g}-norm of the gradients")
    xp = compat.array_namespace(total)
    factor = xp.clip(c / (total + _EPS), max=1.0)
    return {name: g * factor for name, g in grads.items()}, total


def clip_gradients(grads: Mapping[str, Array], *, clip_value: float | None = None,
                   clip_norm: float | None = None, global_clip_norm: float | None = None
                   ) -> tuple[Mapping[str, Array], Array | None]:
    """The optimizers' clipping step: by value, then per-array norm, then global norm (each
    where its limit is not None), and whether the norms were finite.

    Returns:
        ``(clipped, finite)``: ``finite`` is a 0-d boolean array on the gradients' device, False
        when the last norm rule applied met a NaN/Inf norm (its result then holds NaN), or None
        when no norm rule ran (value clipping alone maps +-inf to +-c and keeps NaN). Nothing is
        read back to the host: the optimizer uses ``finite`` on the device to skip the step.

    Examples:
        >>> import math, numpy as np
        >>> with np.errstate(invalid="ignore"):
        ...     clipped, finite = clip_gradients({"w": np.asarray([1.0, math.inf, -2.0])},
        ...                                      global_clip_norm=1.0)
        >>> bool(finite)
        False
    """
    finite = None
    if clip_value is not None:
        grads = clip_by_value(grads, clip_value)
    if clip_norm is not None:
        grads, norms = _scale_each(grads, _check_max("clip_norm", clip_norm), 2.0)
        finite = _all_finite(norms) if norms else None
    if global_clip_norm is not None and grads:
        grads, total = clip_by_global_norm(grads, global_clip_norm)
        # a NaN left by the per-array rule makes the global norm NaN too: one flag covers both
        finite = compat.array_namespace(total).isfinite(total)
    return grads, finite
