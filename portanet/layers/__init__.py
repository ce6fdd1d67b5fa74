"""Layers, one family per file, each with its forward pass next to its backward pass.

=====================  =========================================================
file                   layers
=====================  =========================================================
``base.py``            :class:`Layer`, :class:`Container`, the config registry
``_weighted.py``       what Dense and Conv2D share: kernel, bias, initializers, regularizers
``dense.py``           :class:`Dense`
``conv.py``            :class:`Conv2D` (NCHW, strided slices + one matmul)
``pooling.py``         :class:`MaxPool2D`, :class:`AvgPool2D`, :class:`GlobalAvgPool2D`
``normalization.py``   :class:`BatchNorm`, :class:`LayerNorm`
``group_norm.py``      :class:`GroupNorm`
``embedding.py``       :class:`Embedding` (ids -> vectors), :class:`Masking`
``preprocessing.py``   :class:`Standardize` (statistics of the training data as buffers)
``maxout.py``          :class:`Maxout`
``recurrent.py``       what SimpleRNN, LSTM and GRU share: the time loop, masks, BPTT
``rnn.py``             :class:`SimpleRNN`
``lstm.py``            :class:`LSTM`
``gru.py``             :class:`GRU`
``bidirectional.py``   :class:`Bidirectional`
``attention.py``       :class:`MultiHeadAttention`, ``scaled_dot_product_attention``
``positional.py``      :class:`SinusoidalPositionalEncoding`, :class:`PositionalEmbedding`
``transformer.py``     :class:`TransformerEncoderBlock` (pre-LN)
``temporal.py``        :class:`GlobalAvgPool1D`, :class:`LastStep` (pooling over time, masked)
``dropout.py``         :class:`Dropout`
``shape.py``           :class:`Flatten`, :class:`Reshape`
``activation.py``      :class:`Activation`
``residual.py``        :class:`Residual`
``chain.py``           :class:`Chain` (layers in order; ``pn.Sequential`` is a Chain that trains)
=====================  =========================================================

Every layer: ``y, backprop = layer.forward(x, training)``; ``dx = backprop(dy)`` stores
``layer.gradients[name]``. See ``docs/layers.md``.
"""

from .activation import Activation
from .attention import MultiHeadAttention, scaled_dot_product_attention
from .base import Container, Layer, deserialize, get, register, serialize
from .bidirectional import Bidirectional
from .chain import Chain
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .embedding import Embedding, Masking
from .group_norm import GroupNorm
from .gru import GRU
from .lstm import LSTM
from .maxout import Maxout
from .normalization import BatchNorm, LayerNorm
from .pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from .positional import PositionalEmbedding, SinusoidalPositionalEncoding
from .preprocessing import Standardize
from .residual import Residual
from .rnn import SimpleRNN
from .shape import Flatten, Reshape
from .temporal import GlobalAvgPool1D, LastStep
from .transformer import TransformerEncoderBlock

__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Bidirectional",
    "Chain",
    "Container",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool1D",
    "GlobalAvgPool2D",
    "GroupNorm",
    "LastStep",
    "Layer",
    "LayerNorm",
    "Masking",
    "MaxPool2D",
    "Maxout",
    "MultiHeadAttention",
    "PositionalEmbedding",
    "Reshape",
    "Residual",
    "SimpleRNN",
    "SinusoidalPositionalEncoding",
    "Standardize",
    "TransformerEncoderBlock",
    "deserialize",
    "get",
    "register",
    "scaled_dot_product_attention",
    "serialize",
]
