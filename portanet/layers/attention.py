"""Multi-head attention (Vaswani et al., 2017): every position looks at every other position.

Scaled dot-product attention, for queries Q (T, d), keys K (S, d) and values V (S, d_v) of one
head::

    Z = Q K^T / sqrt(d)                        (T, S) scores: how well query i matches key j
    Z[i, j] = -inf  where j is masked          (padding keys; keys after i when causal)
    A = softmax(Z)  along j                    each row a distribution over the keys
    P = A * keep / (1 - rate)                  dropout on the weights (training only)
    Y = P V                                    (T, d_v) a weighted average of the values

Backward, given dY (the derivation is the chain rule through each line above, in reverse)::

    dV = P^T dY                                (S, d_v)
    dP = dY V^T                                (T, S)
    dA = dP * keep / (1 - rate)                dropout passes the gradient through its mask
    dZ = A * (dA - sum_j(dA * A))              softmax's vector-Jacobian product (row-wise)
    dQ = dZ K / sqrt(d),   dK = dZ^T Q / sqrt(d)

Masked entries have A = 0 exactly, so dZ = 0 there: no gradient reaches a masked key.

Masked softmax, numerically stable at any logit size: the row maximum m is subtracted before
exp (so the largest term is exp(0) = 1, no overflow even for logits of 1e6 in float32), and
masked scores are -inf, whose exp is exactly 0. A row whose keys are ALL masked (a sample of
length 0) would be 0/0 = NaN; here its m is taken as 0 and its sum of exponentials (0) as 1, so
its weights are all 0 and its output Y is 0 (the attention output is then the output bias).
PyTorch's ``scaled_dot_product_attention`` returns the same zeros (the path
``nn.MultiheadAttention`` takes with ``need_weights=False`` during training); its
``need_weights=True`` path returns NaN.

Multi-head attention runs h heads of size d = E / h side by side, on projections of the input::

    [Q | K | V] = x W_qkv + b_qkv              W_qkv (E, 3E): the three projections in one matmul
    Q, K, V -> (N, h, T, d)                    split the last axis into heads (a reshape)
    Y_h = attention(Q_h, K_h, V_h)             all heads at once: batched matmuls over (N, h)
    y = concat_h(Y_h) W_out + b_out            W_out (E, E)

and its backward runs the same lines in reverse: the output projection (dW_out = C^T dy,
dC = dy W_out^T), the heads, then dW_qkv = x^T [dQ | dK | dV] and dx = [dQ | dK | dV] W_qkv^T.

Parameter layout (PyTorch's ``nn.MultiheadAttention`` stores the transposes):

=================  ========  ==============================================================
name               shape     PyTorch
=================  ========  ==============================================================
``qkv_kernel``     (E, 3E)   ``in_proj_weight.T``: columns [0, E) make Q, [E, 2E) K, [2E, 3E) V
``qkv_bias``       (3E,)     ``in_proj_bias``
``out_kernel``     (E, E)    ``out_proj.weight.T``
``out_bias``       (E,)      ``out_proj.bias``
=================  ========  ==============================================================

Head k uses columns [k d, (k + 1) d) of each of Q, K and V, as in PyTorch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import array_api_compat as compat

from .. import initializers, ops
from .._typing import Array, Shape
from ..activations import softmax_vjp
from ..backend import adapter_of
from ..random import Generator, host_generator
from .base import Layer, _host_to_backend, _positive_int, dtype_name, register

__all__ = ["MultiHeadAttention", "allowed_keys", "check_mask",
           "scaled_dot_product_attention", "torch_to_backend"]


# ---------------------------------------------------------------------------------------------
# masks
# ---------------------------------------------------------------------------------------------
def check_mask(mask: Array | None, x: Array, layer: str, what: str = "mask") -> None:
    """A padding mask must be a boolean (N, T) array on ``x``'s backend and device.

    ``x`` is the (N, T, ...) sequence it belongs to. Only metadata is read (no host sync).
    """
    if mask is None:
        return
    try:
        same_place = adapter_of(mask) is adapter_of(x) and compat.device(mask) == compat.device(x)
    except TypeError:
        same_place = False
    if not same_place:
        raise TypeError(f"{layer} {what} must be an array on the input's backend and device, "
                        f"received {type(mask).__module__}.{type(mask).__name__}. Move it with "
                        "pn.to_backend, or build it from the data (pn.ops.sequence_mask).")
    xp = adapter_of(x).xp
    if mask.dtype != xp.bool:
        raise TypeError(f"{layer} {what} must be boolean (True at real time steps), received "
                        f"dtype {mask.dtype}. Build one with pn.ops.sequence_mask(lengths, T) "
                        "or compare: ids != 0.")
    if mask.ndim != 2 or tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"{layer} {what} must have shape (N, T) = {tuple(x.shape[:2])} to "
                         f"match the sequence of shape {tuple(x.shape)}, received shape "
                         f"{tuple(mask.shape)}.")


def allowed_keys(t: int, s: int, key_mask: Array | None, causal: bool,
                 like: Array) -> Array | None:
    """Which keys each query may attend to: boolean, broadcastable to (N, h, T, S); None for all.

    ``key_mask`` (N, S) is True at real keys; ``causal`` lets query i see keys j <= i (aligned
    at the top left when T != S, as in PyTorch). Created on ``like``'s device.
    """
    if key_mask is None and not causal:
        return None
    allowed = None
    if causal:
        xp = adapter_of(like).xp
        dev = compat.device(like)
        rows = xp.arange(t, dtype=xp.int64, device=dev)
        cols = xp.arange(s, dtype=xp.int64, device=dev)
        allowed = cols[None, :] <= rows[:, None]                         # (T, S)
    if key_mask is not None:
        keys = key_mask[:, None, None, :]                                # (N, 1, 1, S)
        allowed = keys if allowed is None else keys & allowed
    return allowed


# ---------------------------------------------------------------------------------------------
# the attention function, forward next to backward
# ---------------------------------------------------------------------------------------------
def scaled_dot_product_attention(q: Array, k: Array, v: Array, allowed: Array | None = None,
                                 keep: Array | None = None):
    """softmax(Q K^T / sqrt(d), masked) V over the last two axes, with its backward.

    Formula: A = softmax(Z), Z = Q K^T / sqrt(d) (-inf where not ``allowed``); Y = (A * keep) V.
    Backward: dV = P^T dY, dA = (dY V^T) * keep, dZ = A (dA - sum(dA A)),
    dQ = dZ K / sqrt(d), dK = dZ^T Q / sqrt(d). A row with no allowed key gets A = 0, Y = 0.

    Args:
        q: queries (..., T, d); k: keys (..., S, d); v: values (..., S, d_v).
        allowed: boolean, broadcastable to (..., T, S) (see :func:`allowed_keys`), or None.
        keep: dropout's scaled keep mask (..., T, S), values 0 or 1 / (1 - rate), or None.

    Returns:
        ``(y, weights, backprop)``: y (..., T, d_v); weights A (..., T, S) (before dropout);
        ``backprop(dy) -> (dq, dk, dv)``.

    Examples:
        >>> import numpy as np
        >>> q = k = v = np.asarray([[1.0, 0.0], [0.0, 1.0]])
        >>> y, a, backprop = scaled_dot_product_attention(q, k, v)
        >>> a.round(3).tolist()
        [[0.67, 0.33], [0.33, 0.67]]
        >>> [g.shape for g in backprop(np.ones((2, 2)))]
        [(2, 2), (2, 2), (2, 2)]
    """
    xp = adapter_of(q).xp
    scale = 1.0 / math.sqrt(q.shape[-1])
    qs = q * scale                              # scaling Q (T x d) is cheaper than Z (T x S)
    z = qs @ xp.matrix_transpose(k)             # (..., T, S)
    # softmax along the keys, shifted by the row max (as activations.softmax). The in-place
    # operators work on arrays made just here (JAX rebinds instead): two (T, S) passes fewer.
    if allowed is not None:
        z = xp.where(allowed, z, -math.inf)     # exp(-inf) = 0: masked keys weigh exactly 0
    m = xp.max(z, axis=-1, keepdims=True)
    if allowed is not None:
        m = xp.where(m == -math.inf, 0.0, m)    # a fully masked row: keep -inf - m = -inf
    z -= m
    a = xp.exp(z)
    total = xp.sum(a, axis=-1, keepdims=True)
    if allowed is not None:
        # total >= 1 wherever a key is allowed (the max term is exp(0)); 0 on a fully masked
        # row, whose exponentials are all 0: max(total, 1) leaves its weights at 0, not NaN.
        total = ops.maximum(total, 1.0)
    a /= total
    p = a if keep is None else a * keep
    y = p @ v

    def backprop(dy: Array):
        dv = xp.matrix_transpose(p) @ dy        # dV = P^T dY
        da = dy @ xp.matrix_transpose(v)        # dP = dY V^T
        if keep is not None:
            da *= keep                          # through dropout's mask (da is ours)
        dz = softmax_vjp(a, da, axis=-1)        # A (dA - sum(dA A)): 0 where A = 0
        dq = dz @ k
        dq *= scale                             # Z = (Q / sqrt(d)) K^T
        dk = xp.matrix_transpose(dz) @ qs
        return dq, dk, dv

    return y, a, backprop


# ---------------------------------------------------------------------------------------------
# moving PyTorch weights in (no torch import: the tensors' own methods do the work)
# ---------------------------------------------------------------------------------------------
def torch_to_backend(tensor: Any, layer: Layer, transpose: bool = False) -> Array:
    """A torch tensor (a parameter of a torch module) as an array of ``layer``'s dtype, on its
    backend and device; ``transpose`` turns torch's (out, in) weights into portanet's (in, out)."""
    t = tensor.detach().to("cpu").double()
    if transpose:
        t = t.T
    return _host_to_backend(t.contiguous().numpy(), layer.dtype, layer.backend)


def _torch_dtype(tensor: Any) -> str:
    name = dtype_name(tensor.dtype)
    if name not in ("float32", "float64"):
        raise TypeError(f"portanet layers are float32 or float64; the torch module is {name}. "
                        "Convert it first (module.float() or module.double()).")
    return name


# ---------------------------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------------------------
@register
class MultiHeadAttention(Layer):
    """Multi-head attention: y = concat_h(softmax(Q_h K_h^T / sqrt(d)) V_h) W_out + b_out.

    Self-attention in a model (``forward(x, mask=...)``: queries, keys and values are all
    ``x``), and cross-attention between sequences with :meth:`attend`. See the module
    docstring for the formulas, the backward pass and the parameter layout.

    Args:
        embed_dim: E, the feature size of the input and output; a multiple of ``num_heads``.
        num_heads: h; each head has d = E / h features.
        dropout: probability of dropping an attention weight in training (default 0.0), as
            ``nn.MultiheadAttention(dropout=...)``.
        use_bias: add the projection biases (default True).
        causal: each position attends only to itself and earlier positions (default False).
        kernel_initializer: initializer of both kernels (default "glorot_uniform"; for
            ``qkv_kernel`` (E, 3E) this is PyTorch's xavier_uniform of ``in_proj_weight``).
        bias_initializer: initializer of both biases (default "zeros", as PyTorch).
        seed: seed of the dropout generator; default: derived from the model seed.

    Shapes:
        input (N, T, E), output (N, T, E); mask (N, T) boolean, True at real steps: padded
        keys get no attention (padded queries still compute an output, which later masked
        layers ignore). Parameters: "qkv_kernel" (E, 3E), "qkv_bias" (3E,), "out_kernel"
        (E, E), "out_bias" (E,).

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.attention import MultiHeadAttention
        >>> mha = MultiHeadAttention(4, num_heads=2).build(seed=0, dtype="float64")
        >>> x = pn.asarray([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
        >>> y, backprop = mha.forward(x, mask=pn.asarray([[True, True, False]]))
        >>> tuple(y.shape), tuple(backprop(y).shape)
        ((1, 3, 4), (1, 3, 4))
        >>> w = mha.attention_weights(x, mask=pn.asarray([[True, True, False]]))
        >>> tuple(w.shape), pn.to_numpy(w)[0, :, :, 2].tolist()   # padded key: weight 0
        ((1, 2, 3, 3), [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """

    supports_masking: ClassVar[bool] = True
    can_skip_input_gradient: ClassVar[bool] = True
    _kernel_by_columns = False  # set by on_build from the backend's weight_order (as Dense)

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0,
                 use_bias: bool = True, causal: bool = False,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 seed: int | None = None, name: str | None = None):
        super().__init__(name)
        self.embed_dim = _positive_int(embed_dim, "embed_dim", "MultiHeadAttention")
        self.num_heads = _positive_int(num_heads, "num_heads", "MultiHeadAttention")
        if self.embed_dim % self.num_heads:
            divisors = [h for h in range(1, self.embed_dim + 1) if self.embed_dim % h == 0]
            raise ValueError(f"MultiHeadAttention embed_dim must be divisible by num_heads, "
                             f"received embed_dim={embed_dim}, num_heads={num_heads}. Choose "
                             f"num_heads among {divisors}.")
        self.head_dim = self.embed_dim // self.num_heads
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                or not 0.0 <= dropout < 1.0):
            raise ValueError(f"MultiHeadAttention dropout must be a number in [0, 1), received "
                             f"dropout={dropout!r}.")
        for flag, value in (("use_bias", use_bias), ("causal", causal)):
            if not isinstance(value, bool):
                raise TypeError(f"MultiHeadAttention {flag} must be True or False, received "
                                f"{value!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"MultiHeadAttention seed must be a non-negative int or None, "
                             f"received {seed!r}.")
        self.dropout = float(dropout)
        self.use_bias = use_bias
        self.causal = causal
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.seed = seed
        self.generator: Generator | None = None

    # -- parameters ----------------------------------------------------------------------------
    def parameter_specs(self):
        e = self.embed_dim
        specs = {"qkv_kernel": ((e, 3 * e), self.kernel_initializer)}
        if self.use_bias:
            specs["qkv_bias"] = ((3 * e,), self.bias_initializer)
        specs["out_kernel"] = ((e, e), self.kernel_initializer)
        if self.use_bias:
            specs["out_bias"] = ((e,), self.bias_initializer)
        return specs

    def on_build(self) -> None:
        adapter = adapter_of(self.parameters["qkv_kernel"])
        for key in ("qkv_kernel", "out_kernel"):
            self.parameters[key] = adapter.in_weight_order(self.parameters[key])
        self._kernel_by_columns = adapter.weight_order == "F"
        if self.dropout > 0.0:  # the dropout generator, seeded like Dropout's
            seed = self.seed
            if seed is None:
                seed = int(host_generator(self._seed, self._stream).integers(2**62))
            self.generator = Generator(seed, backend=self.backend)

    def _kernel_gradient(self, a2: Array, dz2: Array) -> Array:
        """a2^T dz2, laid out like the kernels (column by column where the backend wants it)."""
        if self._kernel_by_columns:
            return (dz2.T @ a2).T
        return a2.T @ dz2

    # -- checks --------------------------------------------------------------------------------
    def _check_sequence(self, x: Array, what: str, like: Array) -> None:
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention expected {what} of shape (N, T, "
                             f"{self.embed_dim}) (batch, time, embed_dim), received shape "
                             f"{tuple(x.shape)}.")
        self._check_dtype(x, like)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2 or input_shape[-1] != self.embed_dim:
            raise ValueError(f"MultiHeadAttention expected per-sample input of shape (T, "
                             f"{self.embed_dim}), received {tuple(input_shape)}.")
        return tuple(input_shape)

    # -- heads ---------------------------------------------------------------------------------
    def _split(self, xp, z: Array, n: int, t: int) -> Array:
        """(N*T, E) -> (N, h, T, d)."""
        return xp.permute_dims(xp.reshape(z, (n, t, self.num_heads, self.head_dim)), (0, 2, 1, 3))

    def _merge(self, xp, z: Array, n: int, t: int) -> Array:
        """(N, h, T, d) -> (N*T, E)."""
        return xp.reshape(xp.permute_dims(z, (0, 2, 1, 3)), (n * t, self.embed_dim))

    def _keep_mask(self, shape: Shape, dtype: Any, training: bool) -> Array | None:
        if not training or self.dropout == 0.0:
            return None
        keep = 1.0 - self.dropout
        return self.generator.bernoulli(shape, p=keep, dtype=dtype) * (1.0 / keep)

    def _output(self, xp, heads: Array, n: int, t: int):
        """y = concat_h(heads) W_out + b_out, and its backward to the heads."""
        w_out = self.parameters["out_kernel"]
        c2 = self._merge(xp, heads, n, t)                                  # (N*T, E)
        y2 = c2 @ w_out
        if self.use_bias:
            y2 += self.parameters["out_bias"]

        def backprop(dy: Array) -> Array:
            dy2 = xp.reshape(dy, (n * t, self.embed_dim))
            self.gradients["out_kernel"] = self._kernel_gradient(c2, dy2)   # C^T dy
            if self.use_bias:
                self.gradients["out_bias"] = xp.sum(dy2, axis=0)
            return self._split(xp, dy2 @ w_out.T, n, t)                     # dC = dy W_out^T

        return xp.reshape(y2, (n, t, self.embed_dim)), backprop

    # -- self-attention ------------------------------------------------------------------------
    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        """Self-attention of ``x`` (N, T, E); ``mask`` (N, T), True at real steps, hides the
        padded keys. Returns ``(y, backprop)``, ``backprop(dy) -> dL/dx``."""
        self.ensure_built(x)
        w_qkv = self.parameters["qkv_kernel"]
        self._check_sequence(x, "input", w_qkv)
        check_mask(mask, x, "MultiHeadAttention")
        training = self.training if training is None else bool(training)
        xp = adapter_of(x).xp
        n, t, e = x.shape
        h, d = self.num_heads, self.head_dim

        # [Q | K | V] = x W_qkv + b_qkv: one matmul; the heads are views of its output
        x2 = xp.reshape(x, (n * t, e))
        qkv = x2 @ w_qkv
        if self.use_bias:
            qkv += self.parameters["qkv_bias"]
        qkv5 = xp.reshape(qkv, (n, t, 3, h, d))
        q, k, v = (xp.permute_dims(qkv5[:, :, i, :, :], (0, 2, 1, 3)) for i in range(3))

        allowed = allowed_keys(t, t, mask, self.causal, x)
        keep = self._keep_mask((n, h, t, t), x.dtype, training)
        heads, _, attention_backprop = scaled_dot_product_attention(q, k, v, allowed, keep)
        y, output_backprop = self._output(xp, heads, n, t)

        def backprop(dy: Array, input_gradient: bool = True) -> Array | None:
            dq, dk, dv = attention_backprop(output_backprop(dy))
            # [dQ | dK | dV] in the layout of qkv: (N, T, 3, h, d), one copy
            dqkv = xp.reshape(xp.stack([xp.permute_dims(g, (0, 2, 1, 3)) for g in (dq, dk, dv)],
                                       axis=2), (n * t, 3 * e))
            self.gradients["qkv_kernel"] = self._kernel_gradient(x2, dqkv)  # x^T dQKV
            if self.use_bias:
                self.gradients["qkv_bias"] = xp.sum(dqkv, axis=0)
            if not input_gradient:
                return None
            return xp.reshape(dqkv @ w_qkv.T, (n, t, e))                    # dQKV W_qkv^T

        return y, backprop

    # -- cross-attention -----------------------------------------------------------------------
    def attend(self, query: Array, key: Array, value: Array, key_mask: Array | None = None,
               causal: bool | None = None, training: bool | None = None):
        """Attention of ``query`` (N, T, E) over ``key`` and ``value`` (N, S, E).

        Q = query W_q + b_q, K = key W_k + b_k, V = value W_v + b_v, with W_q, W_k, W_v the
        three column blocks of ``qkv_kernel``; then the heads and the output projection as in
        :meth:`forward` (which is ``attend(x, x, x, mask)`` with one fused projection).

        Args:
            query: (N, T, E); key, value: (N, S, E), S may differ from T.
            key_mask: (N, S) boolean, True at real keys; None: all keys are real.
            causal: query i sees keys j <= i; None uses the layer's ``causal``.
            training: dropout on the weights; None uses the layer's mode.

        Returns:
            ``(y, backprop)``: y (N, T, E); ``backprop(dy) -> (dquery, dkey, dvalue)``; the
            parameter gradients go to ``gradients`` as for :meth:`forward`.
        """
        self.ensure_built(query)
        w_qkv = self.parameters["qkv_kernel"]
        for what, a in (("query", query), ("key", key), ("value", value)):
            self._check_sequence(a, what, w_qkv)
        if tuple(key.shape) != tuple(value.shape) or key.shape[0] != query.shape[0]:
            raise ValueError(f"MultiHeadAttention.attend needs key and value of the same shape "
                             f"(N, S, E) with the query's N; received query "
                             f"{tuple(query.shape)}, key {tuple(key.shape)}, value "
                             f"{tuple(value.shape)}.")
        check_mask(key_mask, key, "MultiHeadAttention.attend", "key_mask")
        training = self.training if training is None else bool(training)
        causal = self.causal if causal is None else bool(causal)
        xp = adapter_of(query).xp
        n, t, e = query.shape
        s = key.shape[1]
        b = self.parameters["qkv_bias"] if self.use_bias else None

        inputs, projected = [], []
        for i, (a, length) in enumerate(((query, t), (key, s), (value, s))):
            a2 = xp.reshape(a, (n * length, e))
            z = a2 @ w_qkv[:, i * e:(i + 1) * e]
            if b is not None:
                z += b[i * e:(i + 1) * e]
            inputs.append(a2)
            projected.append(self._split(xp, z, n, length))
        q, k, v = projected

        allowed = allowed_keys(t, s, key_mask, causal, query)
        keep = self._keep_mask((n, self.num_heads, t, s), query.dtype, training)
        heads, _, attention_backprop = scaled_dot_product_attention(q, k, v, allowed, keep)
        y, output_backprop = self._output(xp, heads, n, t)

        def backprop(dy: Array):
            grads = attention_backprop(output_backprop(dy))
            outs, kernel_blocks, bias_blocks = [], [], []
            for i, (g, a2, length) in enumerate(zip(grads, inputs, (t, s, s), strict=True)):
                g2 = self._merge(xp, g, n, length)                          # (N*L, E)
                kernel_blocks.append(self._kernel_gradient(a2, g2))
                bias_blocks.append(xp.sum(g2, axis=0))
                w_i = w_qkv[:, i * e:(i + 1) * e]
                outs.append(xp.reshape(g2 @ w_i.T, (n, length, e)))
            self.gradients["qkv_kernel"] = xp.concat(kernel_blocks, axis=1)
            if b is not None:
                self.gradients["qkv_bias"] = xp.concat(bias_blocks, axis=0)
            return tuple(outs)

        return y, backprop

    # -- looking inside ------------------------------------------------------------------------
    def attention_weights(self, query: Array, key: Array | None = None,
                          mask: Array | None = None, causal: bool | None = None) -> Array:
        """The attention weights A (N, h, T, S) of every head, in evaluation mode (no dropout).

        ``key`` defaults to ``query`` (self-attention); ``mask`` (N, S) marks the real keys.
        Row i of head k is the distribution over keys that query i averages; it sums to 1
        (to 0 if every key is masked). For plots: ``pn.to_numpy(w)[n, k]`` is a (T, S) map.
        """
        self.ensure_built(query)
        key = query if key is None else key
        w_qkv = self.parameters["qkv_kernel"]
        for what, a in (("query", query), ("key", key)):
            self._check_sequence(a, what, w_qkv)
        check_mask(mask, key, "MultiHeadAttention.attention_weights")
        causal = self.causal if causal is None else bool(causal)
        xp = adapter_of(query).xp
        n, t, e = query.shape
        s = key.shape[1]
        qk = []
        for i, (a, length) in enumerate(((query, t), (key, s))):
            z = xp.reshape(a, (n * length, e)) @ w_qkv[:, i * e:(i + 1) * e]
            if self.use_bias:
                z += self.parameters["qkv_bias"][i * e:(i + 1) * e]
            qk.append(self._split(xp, z, n, length))
        q, k = qk
        allowed = allowed_keys(t, s, mask, causal, query)
        _, weights, _ = scaled_dot_product_attention(q, k, k, allowed)
        return weights

    # -- PyTorch -------------------------------------------------------------------------------
    def load_torch(self, module: Any) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` into this layer; returns self.

        The module must have this layer's embed_dim, num_heads and use_bias, and one packed
        ``in_proj_weight`` (kdim = vdim = embed_dim), no ``add_bias_kv`` and no
        ``add_zero_attn``. ``batch_first`` does not change the weights (portanet's sequences
        are batch first: compare with ``batch_first=True``). Builds the layer first, in the
        module's dtype on the active backend, if it was never built.
        """
        _check_torch_mha(module, self)
        if not self.built:
            self.build(dtype=_torch_dtype(module.in_proj_weight))
        values = {"qkv_kernel": torch_to_backend(module.in_proj_weight, self, transpose=True),
                  "out_kernel": torch_to_backend(module.out_proj.weight, self, transpose=True)}
        if self.use_bias:
            values["qkv_bias"] = torch_to_backend(module.in_proj_bias, self)
            values["out_bias"] = torch_to_backend(module.out_proj.bias, self)
        self.set_named_parameters(values)
        return self

    @classmethod
    def from_torch(cls, module: Any, causal: bool = False, seed: int | None = None,
                   backend: Any = None) -> MultiHeadAttention:
        """A new layer with the configuration and weights of a ``torch.nn.MultiheadAttention``
        (its dtype; the active backend unless ``backend`` is given)."""
        for attr in ("embed_dim", "num_heads", "in_proj_weight", "out_proj"):
            if not hasattr(module, attr):
                raise TypeError(f"from_torch expects a torch.nn.MultiheadAttention, received "
                                f"{type(module).__name__} (it has no {attr!r}).")
        layer = cls(module.embed_dim, module.num_heads, dropout=float(module.dropout),
                    use_bias=module.in_proj_bias is not None, causal=causal, seed=seed)
        if getattr(module, "in_proj_weight", None) is not None:
            layer.build(seed=0, dtype=_torch_dtype(module.in_proj_weight), backend=backend)
        return layer.load_torch(module)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "dropout": self.dropout, "use_bias": self.use_bias, "causal": self.causal,
                "kernel_initializer": self.kernel_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config(),
                "seed": self.seed, "name": self.name}


def _check_torch_mha(module: Any, layer: MultiHeadAttention) -> None:
    """The torch module must be a packed-projection MultiheadAttention shaped like ``layer``."""
    kind = type(module).__name__
    if not hasattr(module, "embed_dim") or not hasattr(module, "out_proj"):
        raise TypeError(f"load_torch expects a torch.nn.MultiheadAttention, received {kind}.")
    if getattr(module, "in_proj_weight", None) is None:
        raise ValueError("load_torch needs one packed in_proj_weight; the module has separate "
                         "q/k/v projections (kdim or vdim != embed_dim), which portanet's "
                         "MultiHeadAttention does not support.")
    if getattr(module, "bias_k", None) is not None or getattr(module, "add_zero_attn", False):
        raise ValueError("load_torch does not support add_bias_kv=True or add_zero_attn=True.")
    got = (module.embed_dim, module.num_heads, module.in_proj_bias is not None)
    want = (layer.embed_dim, layer.num_heads, layer.use_bias)
    if got != want:
        raise ValueError(f"the torch module has (embed_dim, num_heads, bias) = {got}, this layer "
                         f"{want}; use MultiHeadAttention.from_torch(module) to match it.")
