"""The Transformer encoder block, pre-LN (Xiong et al., 2020), built from existing layers.

Forward, for x (N, T, E), as ``torch.nn.TransformerEncoderLayer(norm_first=True)``::

    a = Dropout_1(MHA(LN_1(x)))              MHA has its own dropout on the attention weights
    h = x + a                                 first residual connection
    f = Dropout_2(W_2 Dropout(act(W_1 LN_2(h) + b_1)) + b_2)
    y = h + f                                 second residual connection

Four dropouts in all, each at PyTorch's place: on the attention weights (inside MHA), after
the attention, after the activation inside the feed-forward network, after the feed-forward
network. Backward runs the same lines in reverse; each residual adds its two paths::

    dh = dy + LN_2'(W_1'(act'(... W_2'(Dropout_2'(dy)))))     the feed-forward branch
    dx = dh + LN_1'(MHA'(Dropout_1'(dh)))                      the attention branch

(f' is each layer's own backprop.) Pre-LN keeps an identity path from y to x, which is why such
blocks train without learning-rate warm-up more easily than the original post-LN ones.

The padding mask goes to the attention (padded keys get no weight); every other part acts on
each time step alone, so a real step's output never depends on a padded step's input.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._typing import Array, Shape
from ..backend import adapter_of
from .activation import activation_config, get_activation
from .attention import MultiHeadAttention, _torch_dtype, check_mask, torch_to_backend
from .base import Container, Layer, _positive_int, register, serialize
from .dense import Dense
from .dropout import Dropout
from .normalization import LayerNorm

__all__ = ["TransformerEncoderBlock"]


@register
class TransformerEncoderBlock(Container):
    """Pre-LN Transformer encoder block: h = x + Drop(MHA(LN(x))), y = h + Drop(FF(LN(h))).

    FF(z) = Dense(ff_dim, E)(Dropout(act(Dense(E, ff_dim)(z)))). See the module docstring for
    the dropout placement (PyTorch's) and the backward pass.

    Args:
        embed_dim: E, the feature size in and out.
        num_heads: attention heads (E must be a multiple).
        ff_dim: the hidden size of the feed-forward network (often 4 E).
        dropout: the rate of all four dropouts (default 0.1, as PyTorch).
        activation: of the feed-forward network (default "gelu", the exact erf form).
        causal: each step attends only to itself and earlier steps.
        eps: LayerNorm's epsilon (default 1e-5).

    Children (and parameter prefixes, PyTorch's names): "norm1", "self_attn", "dropout1",
    "norm2", "linear1" (with the activation), "dropout", "linear2", "dropout2".

    Shapes: input (N, T, E), output (N, T, E); mask (N, T) boolean, True at real steps.

    Examples:
        >>> import numpy as np, portanet as pn
        >>> from portanet.layers.transformer import TransformerEncoderBlock
        >>> block = TransformerEncoderBlock(4, 2, 8, dropout=0.0).build(seed=0, dtype="float64")
        >>> x = pn.asarray(np.ones((2, 3, 4)), dtype="float64")
        >>> mask = pn.asarray([[True, True, True], [True, False, False]])
        >>> y, backprop = block.forward(x, mask=mask)
        >>> tuple(y.shape), tuple(backprop(y).shape)
        ((2, 3, 4), (2, 3, 4))
    """

    supports_masking: ClassVar[bool] = True

    def __init__(self, embed_dim: int, num_heads: int, ff_dim: int, dropout: float = 0.1,
                 activation: Any = "gelu", causal: bool = False, eps: float = 1e-5,
                 name: str | None = None):
        super().__init__(name)
        self.embed_dim = _positive_int(embed_dim, "embed_dim", "TransformerEncoderBlock")
        self.ff_dim = _positive_int(ff_dim, "ff_dim", "TransformerEncoderBlock")
        if (isinstance(dropout, bool) or not isinstance(dropout, (int, float))
                or not 0.0 <= dropout < 1.0):
            raise ValueError(f"TransformerEncoderBlock dropout must be a number in [0, 1), "
                             f"received dropout={dropout!r}.")
        self.num_heads = num_heads
        self.norm1 = LayerNorm(embed_dim, eps=eps)
        self.self_attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout,
                                            causal=causal)
        self.dropout1 = Dropout(dropout)
        self.norm2 = LayerNorm(embed_dim, eps=eps)
        self.linear1 = Dense(embed_dim, ff_dim, activation=activation)
        self.dropout = Dropout(dropout)
        self.linear2 = Dense(ff_dim, embed_dim)
        self.dropout2 = Dropout(dropout)
        self.rate = self.dropout.rate
        self.activation = activation_config(get_activation(activation))
        self.causal = causal
        self.eps = self.norm1.eps

    def children(self) -> list[tuple[str, Layer]]:
        return [("norm1", self.norm1), ("self_attn", self.self_attn),
                ("dropout1", self.dropout1), ("norm2", self.norm2), ("linear1", self.linear1),
                ("dropout", self.dropout), ("linear2", self.linear2),
                ("dropout2", self.dropout2)]

    def _check(self, shape: Shape, batched: bool) -> None:
        rank = 3 if batched else 2
        if len(shape) != rank or shape[-1] != self.embed_dim:
            expected = "(N, T, E)" if batched else "per-sample (T, E)"
            raise ValueError(f"TransformerEncoderBlock expected input of shape {expected} with "
                             f"E={self.embed_dim}, received shape {tuple(shape)}.")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._check(tuple(input_shape), batched=False)
        return tuple(input_shape)

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        self.ensure_built(x)
        self._check(tuple(x.shape), batched=True)
        check_mask(mask, x, "TransformerEncoderBlock")
        training = self.training if training is None else bool(training)
        xp = adapter_of(x).xp
        n, t, e = x.shape

        # attention branch: h = x + Dropout_1(MHA(LN_1(x)))
        a, norm1_bp = self.norm1.forward(x, training)
        a, attn_bp = self.self_attn.forward(a, training, mask=mask)
        a, drop1_bp = self.dropout1.forward(a, training)
        h = x + a
        # feed-forward branch on the N*T rows (one 2-D matmul per Dense): y = h + f
        f, norm2_bp = self.norm2.forward(h, training)
        f, lin1_bp = self.linear1.forward(xp.reshape(f, (n * t, e)), training)
        f, drop_bp = self.dropout.forward(f, training)
        f, lin2_bp = self.linear2.forward(f, training)
        f, drop2_bp = self.dropout2.forward(xp.reshape(f, (n, t, e)), training)
        y = h + f

        def backprop(dy: Array) -> Array:
            df = xp.reshape(drop2_bp(dy), (n * t, e))
            df = lin1_bp(drop_bp(lin2_bp(df)))
            dh = dy + norm2_bp(xp.reshape(df, (n, t, e)))    # residual: both paths add
            da = attn_bp(drop1_bp(dh))
            return dh + norm1_bp(da)

        return y, backprop

    def attention_weights(self, x: Array, mask: Array | None = None) -> Array:
        """The attention weights (N, h, T, T) of the block's MHA on ``x`` (evaluation mode)."""
        self.ensure_built(x)
        self._check(tuple(x.shape), batched=True)
        a, _ = self.norm1.forward(x, False)
        return self.self_attn.attention_weights(a, mask=mask)

    # -- PyTorch -------------------------------------------------------------------------------
    def load_torch(self, module: Any) -> TransformerEncoderBlock:
        """Copy the weights of a ``torch.nn.TransformerEncoderLayer(norm_first=True)``; returns
        self. Its sizes, eps, activation and bias must match this block (``from_torch`` makes a
        matching one). Builds the block in the module's dtype first if it was never built."""
        config = _torch_block_config(module)
        mine = {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "activation": self.activation, "eps": self.eps}
        differ = {k: (config[k], v) for k, v in mine.items() if config[k] != v}
        if differ:
            raise ValueError(f"the torch layer differs from this block in (torch, portanet) = "
                             f"{differ}; use TransformerEncoderBlock.from_torch(module).")
        if not self.built:
            self.build(dtype=_torch_dtype(module.linear1.weight))
        self.self_attn.load_torch(module.self_attn)
        values = {}
        for mine_name, theirs in (("norm1", module.norm1), ("norm2", module.norm2)):
            values[f"{mine_name}.gamma"] = torch_to_backend(theirs.weight, self)
            values[f"{mine_name}.beta"] = torch_to_backend(theirs.bias, self)
        for mine_name, theirs in (("linear1", module.linear1), ("linear2", module.linear2)):
            values[f"{mine_name}.kernel"] = torch_to_backend(theirs.weight, self, transpose=True)
            values[f"{mine_name}.bias"] = torch_to_backend(theirs.bias, self)
        self.set_parameters(values)
        return self

    @classmethod
    def from_torch(cls, module: Any, causal: bool = False, seed: int | None = None,
                   backend: Any = None) -> TransformerEncoderBlock:
        """A new block with the configuration and weights of a
        ``torch.nn.TransformerEncoderLayer(norm_first=True)`` (its dtype; the active backend
        unless ``backend`` is given). ``causal`` stands for torch's ``is_causal=True``."""
        config = _torch_block_config(module)
        block = cls(causal=causal, **config)
        block.build(seed=0 if seed is None else seed, dtype=_torch_dtype(module.linear1.weight),
                    backend=backend)
        return block.load_torch(module)

    # -- config --------------------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.rate, "activation": self.activation,
                "causal": self.causal, "eps": self.eps, "name": self.name}

    @classmethod
    def child_configs(cls, config: dict) -> list[tuple[str, Any]]:
        """The children's configs, from an unbuilt block made from ``config`` (no arrays)."""
        return [(name, serialize(child)) for name, child in cls(**config).children()]

    def __repr__(self) -> str:
        return Layer.__repr__(self)


def _torch_activation(act: Any) -> str:
    """portanet's name for a TransformerEncoderLayer's activation (function or module)."""
    name = getattr(act, "__name__", None)           # F.gelu, F.relu
    if name is None:
        kind = type(act).__name__                   # nn.GELU(approximate=...), nn.ReLU
        name = {"GELU": "gelu", "ReLU": "relu"}.get(kind, kind)
        if kind == "GELU" and getattr(act, "approximate", "none") == "tanh":
            name = "gelu_tanh"
    if name not in ("gelu", "gelu_tanh", "relu"):
        raise ValueError(f"from_torch supports the activations gelu and relu, received {name!r}.")
    return name


def _torch_block_config(module: Any) -> dict:
    """TransformerEncoderBlock arguments read from a torch TransformerEncoderLayer."""
    needed = ("self_attn", "linear1", "linear2", "norm1", "norm2", "norm_first")
    missing = [a for a in needed if not hasattr(module, a)]
    if missing:
        raise TypeError(f"expected a torch.nn.TransformerEncoderLayer, received "
                        f"{type(module).__name__} (it has no {missing}).")
    if not module.norm_first:
        raise ValueError("TransformerEncoderBlock is pre-LN: build the torch layer with "
                         "norm_first=True (a post-LN layer computes a different function).")
    if module.linear1.bias is None or module.norm1.bias is None:
        raise ValueError("the torch layer was built with bias=False; TransformerEncoderBlock "
                         "has biases in its Dense and LayerNorm layers.")
    return {"embed_dim": module.self_attn.embed_dim, "num_heads": module.self_attn.num_heads,
            "ff_dim": module.linear1.out_features, "dropout": float(module.dropout.p),
            "activation": _torch_activation(module.activation), "eps": float(module.norm1.eps)}
