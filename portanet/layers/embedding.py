"""Embedding (a lookup table of learned vectors) and Masking (padding marked in float data).

Embedding, for integer ids ``i`` of any shape (N, T)::

    y[n, t, :] = W[i[n, t], :]                 W: (num_embeddings, embedding_dim)

A lookup is a product with a one-hot matrix, y = onehot(i) @ W, so its derivative is::

    dL/dW = onehot(i)^T @ dy                   row v of dL/dW = sum of dy over positions with i = v
    dL/di                                      does not exist (ids are not continuous): None

The rows of dy for a repeated id add up. A scatter-add (``W_grad[i] += dy``) would compute that
sum directly, but the standard has no scatter that accumulates duplicates (NumPy's
``a[i] += b`` keeps only one of them), so two duplicate-safe forms are offered:

``"onehot"``
    dL/dW = onehot(i)^T @ dy, one (V x M) @ (M x D) matmul on M = N*T ids: exact (each sum is
    one dot product) and fast for small vocabularies, but its cost grows with V.
``"sort"``
    sort-and-segment: ``order = argsort(i)``, ``s = i[order]`` (sorted ids), ``G = dy[order]``,
    ``C = cumulative_sum(G)`` with a leading zero row, and for every vocabulary entry v::

        dL/dW[v] = C[searchsorted(s, v, right)] - C[searchsorted(s, v, left)]

    the sum of v's segment of sorted rows. Every shape is known from (M, V, D) alone (no
    data-dependent shapes), and the cost is O(M log M + M*D + V*D). In float32 the difference
    of two running sums carries the rounding of the whole running sum: measured relative
    error ~3e-6 (of max|dL/dW|) at M = 3200, against ~1e-7 for the one-hot matmul.

``"auto"`` (default) picks one-hot for ``num_embeddings <= ONEHOT_MAX_VOCAB[backend]``, else
sort. The thresholds come from measurements on a 2-core CPU (float32, M = 64*50 = 3200 ids,
D = 64, one BLAS/torch thread, best of >= 0.5 s; JAX under ``jax.jit``), in ms per weight
gradient::

    V          numpy            strict           torch            jax (jit)
               onehot   sort    onehot   sort    onehot   sort    onehot   sort
    25         0.19     0.92    0.27     0.86    0.17     0.63    0.16     1.14
    100        0.64     0.84    0.69     0.86    0.58     0.66    0.37     1.21
    200        1.25     1.07    1.30     0.97    1.14     0.69    0.86     1.25
    400        2.43     0.97    2.35     0.96    2.17     0.96    1.38     1.03
    1000       6.08     0.88    5.80     0.91    5.71     0.80    2.83     1.04
    10000      75.7     1.56    70.3     1.70    127      1.64    48.5     1.38

One-hot's cost is proportional to V, the sort's nearly flat, and their ratio at a fixed V hardly
depends on M (both are linear in M), so a threshold on V alone is enough: 128 on NumPy,
array-api-strict and torch, 256 on JAX. CuPy and CUDA were not measured; they get 128.

Out-of-range ids (``i < 0`` or ``i >= num_embeddings``) cannot be checked without reading the
ids back to the host, which the forward pass never does. Libraries differ on them (NumPy wraps
negative ids, torch raises, JAX clamps), so the lookup makes them portable: such a position
gets a row of NaN (``where(valid, W[clip(i)], nan)``, ~0.1 ms for 3200 x 64), the loss turns
NaN and training stops at the first check of the loss. Call :meth:`Embedding.check_ids` once on
a dataset (one host read) for an error naming the bad ids instead.

Masking, for float sequences x (N, T, F)::

    m[n, t] = any_f(x[n, t, f] != mask_value)      True at real steps
    y = x * m[..., None]                           padded steps become 0, as in Keras
    dL/dx = dy * m[..., None]                      no gradient reaches a padded step
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import array_api_compat as compat

from .. import initializers, regularizers
from .._typing import Array, Shape
from ..backend import adapter_of, make_backend
from .base import Layer, _positive_int, register

__all__ = ["ONEHOT_MAX_VOCAB", "Embedding", "Masking", "embedding_gradient"]

ONEHOT_MAX_VOCAB: dict[str, int] = {"numpy": 128, "array_api_strict": 128, "torch": 128,
                                    "jax": 256}
"""Backend name -> the largest vocabulary for which ``gradient="auto"`` uses the one-hot
matmul (measured: see the module docstring); other backends use 128."""

_GRADIENTS = ("auto", "onehot", "sort")


def _onehot_gradient(xp: Any, ids: Array, dy: Array, num_embeddings: int) -> Array:
    """dL/dW = onehot(ids)^T @ dy: (V, M) @ (M, D). Ids outside [0, V) match no row."""
    vocab = xp.arange(num_embeddings, dtype=ids.dtype, device=compat.device(ids))
    onehot = xp.astype(ids[:, None] == vocab[None, :], dy.dtype)  # (M, V)
    return onehot.T @ dy


def _sorted_gradient(xp: Any, ids: Array, dy: Array, num_embeddings: int) -> Array:
    """dL/dW by sort-and-segment: segment sums as differences of one cumulative sum."""
    order = xp.argsort(ids)
    sorted_ids = xp.take(ids, order)
    # C[k] = sum of the first k sorted rows of dy; C[0] = 0 (include_initial).
    running = xp.cumulative_sum(xp.take(dy, order, axis=0), axis=0, include_initial=True)
    vocab = xp.arange(num_embeddings, dtype=ids.dtype, device=compat.device(ids))
    # Id v occupies sorted positions [start, stop): its rows sum to C[stop] - C[start]. An id
    # that never occurs has start == stop, a zero row; ids outside [0, V) sort before the
    # first or after the last segment and belong to none.
    start = xp.searchsorted(sorted_ids, vocab, side="left")
    stop = xp.searchsorted(sorted_ids, vocab, side="right")
    return xp.take(running, stop, axis=0) - xp.take(running, start, axis=0)


def embedding_gradient(ids: Array, dy: Array, num_embeddings: int,
                       method: str = "onehot") -> Array:
    """dL/dW of a lookup ``y = W[ids]``: the rows of ``dy`` summed per id, duplicates included.

    Formula: dL/dW[v] = sum over positions p with ids[p] = v of dy[p] = (onehot(ids)^T @ dy)[v].

    Args:
        ids: integer array (M,) (flattened ids).
        dy: dL/dy, (M, D), floating.
        num_embeddings: V, the number of rows of W.
        method: "onehot" (one matmul) or "sort" (sort-and-segment); see the module docstring.

    Returns:
        (V, D) array like ``dy``; ids outside [0, V) contribute nothing.

    Examples:
        >>> import numpy as np
        >>> ids, dy = np.asarray([2, 0, 2]), np.asarray([[1.0], [2.0], [4.0]])
        >>> embedding_gradient(ids, dy, 3).tolist(), embedding_gradient(ids, dy, 3, "sort").tolist()
        ([[2.0], [0.0], [5.0]], [[2.0], [0.0], [5.0]])
    """
    xp = compat.array_namespace(ids, dy)
    if method == "onehot":
        return _onehot_gradient(xp, ids, dy, num_embeddings)
    if method == "sort":
        return _sorted_gradient(xp, ids, dy, num_embeddings)
    raise ValueError(f"embedding_gradient method must be 'onehot' or 'sort', received "
                     f"{method!r}.")


def _check_integer_ids(x: Any, layer: str) -> None:
    try:
        xp = compat.array_namespace(x)
    except TypeError:
        raise TypeError(f"{layer} expects an array of integer ids, received "
                        f"{type(x).__name__}. Convert it with pn.asarray(ids, dtype='int64')."
                        ) from None
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{layer} expects integer ids, received dtype {x.dtype}. Convert them "
                        "with pn.asarray(ids, dtype='int64') (or xp.astype(ids, xp.int64)); "
                        "float token ids would be rounded, so they are refused.")


@register
class Embedding(Layer):
    """A table of learned vectors looked up by integer id: y[..., :] = W[ids[...], :].

    Formula: y = onehot(ids) @ W;  dL/dW = onehot(ids)^T @ dy (repeated ids add up);
    there is no dL/d(ids): ``backprop`` returns None, so Embedding is a model's first layer.

    Args:
        num_embeddings: V, the vocabulary size (ids are 0 .. V-1).
        embedding_dim: D, the size of each vector.
        mask_zero: id 0 is padding: :meth:`compute_mask` returns ``ids != 0`` for the sequence
            layers that follow (as Keras; the row W[0] still exists and is looked up).
        embeddings_initializer: initializer of W (default ``Normal(0, 1)``, as torch's
            ``nn.Embedding``).
        embeddings_regularizer: e.g. ``regularizers.L2(1e-4)``, or None.
        gradient: how dL/dW is computed: "onehot", "sort" or "auto" (by vocabulary size and
            backend, see :data:`ONEHOT_MAX_VOCAB`); the result is the same up to rounding.

    Shapes:
        input: integer ids of any shape, e.g. (N, T); output (..., embedding_dim).
        Parameter "embeddings" (num_embeddings, embedding_dim).

    Out-of-range ids give NaN rows (see the module docstring); :meth:`check_ids` finds them.
    A standalone Embedding (not in a model) builds in float32 on its first call.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.embedding import Embedding
        >>> emb = Embedding(10, 3, mask_zero=True).build(seed=0)
        >>> ids = pn.asarray([[4, 2, 0]], dtype="int64")
        >>> y, backprop = emb.forward(ids)
        >>> tuple(y.shape), pn.to_numpy(emb.compute_mask(ids, None)).tolist()
        ((1, 3, 3), [[True, True, False]])
        >>> backprop(y) is None, tuple(emb.gradients["embeddings"].shape)
        (True, (10, 3))
    """

    integer_input: ClassVar[bool] = True
    can_skip_input_gradient: ClassVar[bool] = True

    def __init__(self, num_embeddings: int, embedding_dim: int, mask_zero: bool = False,
                 embeddings_initializer: Any = None, embeddings_regularizer: Any = None,
                 gradient: str = "auto", name: str | None = None):
        super().__init__(name)
        self.num_embeddings = _positive_int(num_embeddings, "num_embeddings", "Embedding")
        self.embedding_dim = _positive_int(embedding_dim, "embedding_dim", "Embedding")
        if not isinstance(mask_zero, bool):
            raise TypeError(f"Embedding mask_zero must be True or False, received "
                            f"{mask_zero!r}.")
        if mask_zero and self.num_embeddings < 2:
            raise ValueError("Embedding(mask_zero=True) reserves id 0 for padding, so it needs "
                             f"num_embeddings >= 2, received {num_embeddings}.")
        if gradient not in _GRADIENTS:
            raise ValueError(f"Embedding gradient must be one of {list(_GRADIENTS)}, received "
                             f"{gradient!r}.")
        self.mask_zero = mask_zero
        self.creates_mask = mask_zero
        self.gradient = gradient
        self.embeddings_initializer = initializers.get(
            initializers.Normal(0.0, 1.0) if embeddings_initializer is None
            else embeddings_initializer)
        self.regularizers = {"embeddings": regularizers.get(embeddings_regularizer)}

    def parameter_specs(self):
        return {"embeddings": ((self.num_embeddings, self.embedding_dim),
                               self.embeddings_initializer)}

    def ensure_built(self, x: Array) -> None:
        """Build on ``x``'s backend and device in float32 (ids carry no float dtype)."""
        if not self.built:
            self.build(backend=make_backend(adapter_of(x).name, compat.device(x)))

    def gradient_method(self, backend_name: str) -> str:
        """"onehot" or "sort": what ``gradient="auto"`` chooses on ``backend_name``."""
        if self.gradient != "auto":
            return self.gradient
        limit = ONEHOT_MAX_VOCAB.get(backend_name, 128)
        return "onehot" if self.num_embeddings <= limit else "sort"

    def forward(self, x: Array, training: bool | None = None):
        _check_integer_ids(x, "Embedding")
        self.ensure_built(x)
        xp = compat.array_namespace(x)
        table = self.parameters["embeddings"]
        ids = xp.reshape(x, (-1,))
        if ids.dtype != xp.int64 and ids.dtype != xp.int32:
            ids = xp.astype(ids, xp.int64)  # uint8 & co.: torch's index_select wants int32/64
        # Portable out-of-range behaviour without a host read: look up a valid id (0) there,
        # then overwrite the row with NaN.
        valid = (ids >= 0) & (ids < self.num_embeddings)
        rows = xp.take(table, xp.where(valid, ids, 0), axis=0)
        rows = xp.where(valid[:, None], rows, math.nan)
        y = xp.reshape(rows, (*tuple(x.shape), self.embedding_dim))
        method = self.gradient_method(adapter_of(x).name)

        def backprop(dy: Array, input_gradient: bool = True) -> None:
            dy2 = xp.reshape(dy, (-1, self.embedding_dim))
            if method == "onehot":
                self.gradients["embeddings"] = _onehot_gradient(
                    xp, ids, dy2, self.num_embeddings)
            else:
                self.gradients["embeddings"] = _sorted_gradient(
                    xp, ids, dy2, self.num_embeddings)
            return None  # ids have no gradient, whether or not one was asked for

        return y, backprop

    def compute_mask(self, x: Array, mask: Array | None) -> Array | None:
        """``x != 0`` with ``mask_zero`` (and-ed with an incoming mask), else ``mask``."""
        if not self.mask_zero:
            return mask
        real = x != 0
        return real if mask is None else real & mask

    def check_ids(self, ids: Any) -> None:
        """Raise ValueError if any id is outside [0, num_embeddings). Reads ``ids`` on the host:
        call it once on a dataset, not in a training step."""
        _check_integer_ids(ids, "Embedding.check_ids")
        xp = compat.array_namespace(ids)
        flat = xp.reshape(ids, (-1,))
        if flat.shape[0] == 0:
            return
        low, high = int(xp.min(flat)), int(xp.max(flat))
        if low < 0 or high >= self.num_embeddings:
            raise ValueError(f"Embedding has num_embeddings={self.num_embeddings} (ids 0 .. "
                             f"{self.num_embeddings - 1}), received ids from {low} to {high}. "
                             "Enlarge num_embeddings or map unknown tokens to a reserved id.")

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*tuple(input_shape), self.embedding_dim)

    def get_config(self) -> dict:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "mask_zero": self.mask_zero,
                "embeddings_initializer": self.embeddings_initializer.get_config(),
                "embeddings_regularizer": regularizers.serialize(
                    self.regularizers["embeddings"]),
                "gradient": self.gradient, "name": self.name}


@register
class Masking(Layer):
    """Mark padded time steps: a step whose features all equal ``mask_value`` is padding.

    Formula: m = any(x != mask_value, axis=-1);  y = x * m;  dL/dx = dy * m.

    The output mask ``m`` (N, T) travels to the sequence layers that follow
    (:meth:`compute_mask`); an incoming mask is and-ed with it.

    Args:
        mask_value: the padding value (default 0.0).

    Shapes: (N, T, F) floating; output the same. No parameters.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.embedding import Masking
        >>> x = pn.asarray([[[1.0, 2.0], [0.0, 0.0]]])
        >>> pn.to_numpy(Masking().compute_mask(x, None)).tolist()
        [[True, False]]
    """

    supports_masking: ClassVar[bool] = True
    creates_mask = True

    def __init__(self, mask_value: float = 0.0, name: str | None = None):
        super().__init__(name)
        if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)):
            raise TypeError(f"Masking mask_value must be a Python number, received "
                            f"{mask_value!r} ({type(mask_value).__name__}).")
        self.mask_value = float(mask_value)

    def _check(self, x: Array) -> Any:
        xp = compat.array_namespace(x)
        if x.ndim != 3:
            raise ValueError(f"Masking expects sequences of shape (N, T, F), received shape "
                             f"{tuple(x.shape)}.")
        if not xp.isdtype(x.dtype, "real floating"):
            raise TypeError(f"Masking expects floating input, received dtype {x.dtype}. Cast "
                            "it with pn.asarray(x, dtype='float32').")
        return xp

    def _mask(self, xp: Any, x: Array, mask: Array | None) -> Array:
        real = xp.any(x != self.mask_value, axis=-1)
        if mask is None:
            return real
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"Masking received a mask of shape {tuple(mask.shape)} for input "
                             f"of shape {tuple(x.shape)}; expected (N, T) = "
                             f"{tuple(x.shape[:2])}.")
        return real & mask

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        xp = self._check(x)
        keep = xp.astype(self._mask(xp, x, mask), x.dtype)[..., None]  # (N, T, 1)
        return x * keep, lambda dy: dy * keep

    def compute_mask(self, x: Array, mask: Array | None) -> Array:
        return self._mask(self._check(x), x, mask)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise ValueError(f"Masking expects sequences of shape (N, T, F), received "
                             f"per-sample shape {tuple(input_shape)} (expected (T, F)).")
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"mask_value": self.mask_value, "name": self.name}
