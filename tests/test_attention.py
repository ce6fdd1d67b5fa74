"""Attention on every backend: MultiHeadAttention, the Transformer encoder block, positional
encodings and pooling over time.

References are independent of portanet: PyTorch float64 (``nn.MultiheadAttention``,
``nn.TransformerEncoderLayer(norm_first=True)``) for forwards and every gradient, central
finite differences in float64 (relative error < 1e-6), and plain NumPy loops for the positional
tables and the pooling. Shapes are tiny (N=2, T=3, E=4, 2 heads): every finite-difference
element costs two forward passes, and JAX dispatches each operation eagerly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import (
    assert_matches,
    assert_on_backend,
    assert_parameter_gradients,
    numerical_gradient,
    rand,
    relative_error,
    round_to,
)

import portanet as pn
from portanet.layers import Chain, Dense, deserialize, serialize
from portanet.layers.attention import (
    MultiHeadAttention,
    allowed_keys,
    scaled_dot_product_attention,
)
from portanet.layers.embedding import Embedding
from portanet.layers.positional import PositionalEmbedding, SinusoidalPositionalEncoding
from portanet.layers.temporal import GlobalAvgPool1D, LastStep
from portanet.layers.transformer import TransformerEncoderBlock

FD_TOL = 1e-6
N, T, E, H, FF = 2, 3, 4, 2, 8


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def lengths_mask(lengths, t=T):
    return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


def as_tuple(a):
    return a if isinstance(a, tuple) else (a,)


def check_gradients(layer, call, inputs, case, reset=None, seed=1, weight=None):
    """Backprop's input and parameter gradients against central differences of
    L = sum(y * r), float64. ``call(arrays)`` returns ``(y, backprop)``; ``weight`` (shaped like
    y) zeroes parts of r, e.g. the outputs at padded steps."""
    inputs = [np.asarray(a, dtype=np.float64) for a in inputs]

    def run(arrays):
        if reset is not None:
            reset()
        return call([case.asarray(a, "float64") for a in arrays])

    y, backprop = run(inputs)
    assert_on_backend(y, case, "float64")
    r = np.random.default_rng(seed).normal(size=tuple(y.shape))
    if weight is not None:
        r = r * weight
    dxs = as_tuple(backprop(case.asarray(r, "float64")))
    grads = {k: case.to_numpy(v) for k, v in layer.named_gradients().items()}

    def loss(arrays):
        return float(np.sum(case.to_numpy(run(arrays)[0]) * r))

    for i, dx in enumerate(dxs):
        assert_on_backend(dx, case, "float64")

        def of_input(a, i=i):
            return loss([a if j == i else b for j, b in enumerate(inputs)])

        err = relative_error(case.to_numpy(dx), numerical_gradient(of_input, inputs[i]))
        assert err < FD_TOL, f"gradient of input {i}: relative error {err:.2e}"
    params = {k: case.to_numpy(v).copy() for k, v in layer.named_parameters().items()}
    assert set(grads) == set(params), f"gradients for {sorted(grads)}, params {sorted(params)}"
    assert_parameter_gradients(
        grads, params, lambda name, p: layer.set_named_parameters({name: case.asarray(p)}),
        lambda: loss(inputs), FD_TOL)
    return dxs


def torch_mha(dtype="float64", seed=0, bias=True):
    """nn.MultiheadAttention(E, H, batch_first=True) in float64 with random weights (biases
    too), rounded to ``dtype``'s values."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    m = torch.nn.MultiheadAttention(E, H, batch_first=True, bias=bias, dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.tensor(round_to(rand(*p.shape, seed=seed + p.numel()) * 0.5, dtype)))
    return m


def torch_block(dtype="float64", seed=0):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    m = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, activation="gelu",
                                         norm_first=True, batch_first=True,
                                         dtype=torch.float64)
    with torch.no_grad():
        for i, (name, p) in enumerate(m.named_parameters()):
            base = 1.0 if name in ("norm1.weight", "norm2.weight") else 0.0  # gamma near 1
            p.copy_(torch.tensor(round_to(base + 0.4 * rand(*p.shape, seed=seed + 7 * i),
                                          dtype)))
    return m


def torch_masks(lengths, causal):
    """torch's boolean masks (True = NOT allowed), from portanet's conventions."""
    torch = pytest.importorskip("torch")
    kpm = None if lengths is None else torch.tensor(~lengths_mask(lengths))
    causal_mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1) if causal else None
    return kpm, causal_mask


def torch_grads(module, inputs, y, r):
    torch = pytest.importorskip("torch")
    (y * torch.tensor(r)).sum().backward()
    return ([t.grad.numpy() for t in inputs],
            {k: p.grad.numpy() for k, p in module.named_parameters()})


MHA_NAMES = {"qkv_kernel": ("in_proj_weight", True), "qkv_bias": ("in_proj_bias", False),
             "out_kernel": ("out_proj.weight", True), "out_bias": ("out_proj.bias", False)}
BLOCK_NAMES = {**{f"self_attn.{k}": (f"self_attn.{t}", tr) for k, (t, tr) in MHA_NAMES.items()},
               "norm1.gamma": ("norm1.weight", False), "norm1.beta": ("norm1.bias", False),
               "norm2.gamma": ("norm2.weight", False), "norm2.beta": ("norm2.bias", False),
               "linear1.kernel": ("linear1.weight", True), "linear1.bias": ("linear1.bias", False),
               "linear2.kernel": ("linear2.weight", True), "linear2.bias": ("linear2.bias", False)}


def assert_gradients_match(layer, torch_params, names, case, dtype):
    grads = layer.named_gradients()
    assert set(grads) == set(names)
    for mine, (theirs, transpose) in names.items():
        ref = torch_params[theirs].T if transpose else torch_params[theirs]
        assert_matches(grads[mine], ref, case, dtype, err_msg=mine)


# ---------------------------------------------------------------------------------------------
# MultiHeadAttention against PyTorch
# ---------------------------------------------------------------------------------------------
MASKINGS = {  # name -> (lengths or None, causal)
    "none": (None, False), "causal": (None, True), "padding": ([3, 2], False),
    "both": ([3, 2], True), "empty": ([3, 0], False),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("masking", list(MASKINGS))
def test_mha_matches_torch(backend, masking, dtype):
    torch = pytest.importorskip("torch")
    lengths, causal = MASKINGS[masking]
    module = torch_mha(dtype)
    layer = MultiHeadAttention(E, H, causal=causal).build(dtype=dtype).load_torch(module)
    x = round_to(rand(N, T, E, seed=3), dtype)
    xt = torch.tensor(x, requires_grad=True)
    kpm, attn_mask = torch_masks(lengths, causal)
    # need_weights=False with autograd: torch's SDPA path, which gives a fully masked row zeros
    yt, _ = module(xt, xt, xt, key_padding_mask=kpm, attn_mask=attn_mask, need_weights=False)
    r = rand(N, T, E, seed=4)
    (dx_ref,), params_ref = torch_grads(module, [xt], yt, r)

    mask = None if lengths is None else backend.asarray(lengths_mask(lengths))
    y, backprop = layer.forward(backend.asarray(x, dtype), mask=mask)
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(y, yt.detach().numpy(), backend, dtype)
    assert_matches(dx, dx_ref, backend, dtype)
    assert_gradients_match(layer, params_ref, MHA_NAMES, backend, dtype)
    if masking == "empty":  # no real key: the attention output is 0, so y = out_bias
        bias = module.out_proj.bias.detach().numpy()
        assert_matches(y[1, ...], np.broadcast_to(bias, (T, E)), backend, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mha_large_logits_stay_finite_and_match_torch(backend, dtype):
    """x * 1e3 gives scores ~1e6: the shift by the row max keeps exp finite (float32 too)."""
    torch = pytest.importorskip("torch")
    module = torch_mha(dtype, seed=5)
    layer = MultiHeadAttention(E, H).build(dtype=dtype).load_torch(module)
    x = round_to(rand(N, T, E, seed=6) * 1e3, dtype)
    mask = lengths_mask([3, 2])
    xt = torch.tensor(x, requires_grad=True)
    yt, _ = module(xt, xt, xt, key_padding_mask=torch.tensor(~mask), need_weights=False)
    r = rand(N, T, E, seed=7)
    (dx_ref,), params_ref = torch_grads(module, [xt], yt, r)
    y, backprop = layer.forward(backend.asarray(x, dtype), mask=backend.asarray(mask))
    dx = backprop(backend.asarray(r, dtype))
    for a in (y, dx, *layer.gradients.values()):
        assert np.all(np.isfinite(backend.to_numpy(a)))
    assert_matches(y, yt.detach().numpy(), backend, dtype)
    assert_matches(dx, dx_ref, backend, dtype)
    assert_gradients_match(layer, params_ref, MHA_NAMES, backend, dtype)


def test_mha_cross_attention_matches_torch(backend):
    torch = pytest.importorskip("torch")
    module = torch_mha(seed=8)
    layer = MultiHeadAttention.from_torch(module)
    s = 4
    q, k, v = rand(N, 2, E, seed=1), rand(N, s, E, seed=2), rand(N, s, E, seed=3)
    key_mask = np.arange(s)[None, :] < np.asarray([4, 1])[:, None]
    ts = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
    yt, _ = module(*ts, key_padding_mask=torch.tensor(~key_mask), need_weights=False)
    r = rand(N, 2, E, seed=4)
    refs, params_ref = torch_grads(module, ts, yt, r)
    y, backprop = layer.attend(*(backend.asarray(a, "float64") for a in (q, k, v)),
                               key_mask=backend.asarray(key_mask))
    grads = backprop(backend.asarray(r, "float64"))
    assert_matches(y, yt.detach().numpy(), backend, "float64")
    for g, ref in zip(grads, refs, strict=True):
        assert_matches(g, ref, backend, "float64")
    assert_gradients_match(layer, params_ref, MHA_NAMES, backend, "float64")


def test_attention_weights_match_torch(backend):
    torch = pytest.importorskip("torch")
    module = torch_mha(seed=9)
    layer = MultiHeadAttention.from_torch(module, causal=True)
    x = rand(N, T, E, seed=10)
    xt = torch.tensor(x)
    _, causal = torch_masks(None, True)
    _, w_ref = module(xt, xt, xt, attn_mask=causal, need_weights=True,
                      average_attn_weights=False)
    w = layer.attention_weights(backend.asarray(x, "float64"))
    assert tuple(w.shape) == (N, H, T, T)
    assert_matches(w, w_ref.detach().numpy(), backend, "float64")
    mask = backend.asarray(lengths_mask([2, 3]))
    w = backend.to_numpy(layer.attention_weights(backend.asarray(x, "float64"), mask=mask))
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(w[0, :, :, 2] == 0.0) and np.all(np.triu(w[1, 0], 1) == 0.0)


def test_mha_without_bias_matches_torch(backend):
    torch = pytest.importorskip("torch")
    module = torch_mha(seed=11, bias=False)
    layer = MultiHeadAttention.from_torch(module)
    assert sorted(layer.parameters) == ["out_kernel", "qkv_kernel"]
    x = rand(N, T, E, seed=12)
    xt = torch.tensor(x, requires_grad=True)
    yt, _ = module(xt, xt, xt, need_weights=False)
    r = rand(N, T, E, seed=13)
    (dx_ref,), params_ref = torch_grads(module, [xt], yt, r)
    y, backprop = layer.forward(backend.asarray(x, "float64"))
    assert_matches(y, yt.detach().numpy(), backend, "float64")
    assert_matches(backprop(backend.asarray(r, "float64")), dx_ref, backend, "float64")
    names = {k: v for k, v in MHA_NAMES.items() if "bias" not in k}
    assert_gradients_match(layer, params_ref, names, backend, "float64")


# ---------------------------------------------------------------------------------------------
# MultiHeadAttention: finite differences, causality, padding
# ---------------------------------------------------------------------------------------------
def _mha(seed=0, **kwargs):
    layer = MultiHeadAttention(E, H, **kwargs).build(seed=seed, dtype="float64")
    # non-zero biases, so their gradients are checked at a generic point
    layer.set_named_parameters({k: pn.asarray(rand(*v.shape, seed=20 + i), dtype="float64")
                                for i, (k, v) in enumerate(layer.parameters.items())
                                if "bias" in k})
    return layer


@pytest.mark.parametrize("masking", ["none", "both"])
def test_mha_gradients(backend, masking):
    lengths, causal = MASKINGS[masking]
    layer = _mha(causal=causal)
    mask = None if lengths is None else backend.asarray(lengths_mask(lengths))
    check_gradients(layer, lambda xs: layer.forward(xs[0], mask=mask), [rand(N, T, E)], backend)


def test_mha_cross_attention_gradients(backend):
    layer = _mha(seed=1)
    key_mask = backend.asarray(np.arange(3)[None, :] < np.asarray([3, 2])[:, None])
    check_gradients(layer, lambda xs: layer.attend(*xs, key_mask=key_mask, causal=True),
                    [rand(N, 2, E, seed=1), rand(N, 3, E, seed=2), rand(N, 3, E, seed=3)],
                    backend)


def test_mha_gradients_with_dropout(backend):
    """With the dropout mask held fixed (the generator restarted before each forward), the
    gradient of the dropped-out attention is exact too."""
    layer = _mha(dropout=0.4, seed=2)
    check_gradients(layer, lambda xs: layer.forward(xs[0], training=True), [rand(N, T, E)],
                    backend, reset=layer.on_build)


def test_sdpa_function_gradients(backend):
    """The bare function on (..., T, d) arrays; dq, dk, dv against finite differences."""
    q, k, v = rand(2, 3, 2, seed=1), rand(2, 4, 2, seed=2), rand(2, 4, 3, seed=3)
    allowed = backend.asarray(np.asarray([[True, True, False, True]]))

    def call(xs):
        y, _, backprop = scaled_dot_product_attention(*xs, allowed=allowed)
        return y, backprop

    dummy = Chain([])  # no parameters
    check_gradients(dummy, call, [q, k, v], backend)
    # against a plain NumPy evaluation of softmax(q k^T / sqrt(d)) v
    z = q @ np.swapaxes(k, -1, -2) / math.sqrt(2)
    z = np.where(np.asarray([True, True, False, True]), z, -np.inf)
    a = np.exp(z - z.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    y, weights, _ = scaled_dot_product_attention(*(backend.asarray(x, "float64")
                                                   for x in (q, k, v)), allowed=allowed)
    assert_matches(weights, a, backend, "float64")
    assert_matches(y, a @ v, backend, "float64")


def test_allowed_keys(backend):
    x = backend.asarray(np.zeros((2, 3, 4)), "float64")
    assert allowed_keys(3, 3, None, False, x) is None
    causal = backend.to_numpy(allowed_keys(2, 3, None, True, x))
    assert causal.tolist() == [[True, False, False], [True, True, False]]
    both = allowed_keys(3, 3, backend.asarray(lengths_mask([3, 1])), True, x)
    assert tuple(both.shape) == (2, 1, 3, 3)
    assert backend.to_numpy(both)[1, 0].tolist() == [[True, False, False]] * 3


@pytest.mark.parametrize("make", ["mha", "block"])
def test_causal_output_ignores_the_future(backend, make):
    """y[:, :t+1] is unchanged (bit for bit) when x[:, t+1:] changes, and d y[:, t] / d x[:, u]
    is exactly 0 for u > t."""
    layer = (MultiHeadAttention(E, H, causal=True) if make == "mha" else
             TransformerEncoderBlock(E, H, FF, dropout=0.0, causal=True))
    layer.build(seed=3, dtype="float64")
    t = 1
    x = rand(N, T, E, seed=1)
    x2 = x.copy()
    x2[:, t + 1:] = rand(N, T - t - 1, E, seed=2) * 5
    y1, backprop = layer.forward(backend.asarray(x, "float64"))
    y2, _ = layer.forward(backend.asarray(x2, "float64"))
    np.testing.assert_array_equal(backend.to_numpy(y1)[:, :t + 1],
                                  backend.to_numpy(y2)[:, :t + 1])
    r = np.zeros((N, T, E))
    r[:, t] = rand(N, E, seed=3)
    dx = backend.to_numpy(backprop(backend.asarray(r, "float64")))
    assert np.all(dx[:, t + 1:] == 0.0) and np.any(dx[:, :t + 1] != 0.0)


@pytest.mark.parametrize("make", ["mha", "block"])
def test_padded_steps_change_nothing_that_counts(backend, make):
    """Outputs at real steps do not depend on padded inputs (bit for bit), and a loss on the
    real steps has an exactly-zero gradient at the padded ones."""
    layer = (MultiHeadAttention(E, H) if make == "mha" else
             TransformerEncoderBlock(E, H, FF, dropout=0.0))
    layer.build(seed=4, dtype="float64")
    real = lengths_mask([3, 1])
    mask = backend.asarray(real)
    x = rand(N, T, E, seed=1)
    x2 = np.where(real[:, :, None], x, 1e3 * rand(N, T, E, seed=2))
    y1, backprop = layer.forward(backend.asarray(x, "float64"), mask=mask)
    y2, _ = layer.forward(backend.asarray(x2, "float64"), mask=mask)
    y1, y2 = backend.to_numpy(y1), backend.to_numpy(y2)
    np.testing.assert_array_equal(y1[real], y2[real])
    r = rand(N, T, E, seed=3) * real[:, :, None]
    dx = backend.to_numpy(backprop(backend.asarray(r, "float64")))
    assert np.all(dx[~real] == 0.0) and np.all(np.abs(dx[real]).sum(-1) > 0)


# ---------------------------------------------------------------------------------------------
# TransformerEncoderBlock
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("masking", ["none", "padding", "both"])
def test_block_matches_torch(backend, masking, dtype):
    torch = pytest.importorskip("torch")
    lengths, causal = MASKINGS[masking]
    module = torch_block(dtype)
    block = TransformerEncoderBlock(E, H, FF, dropout=0.0, causal=causal).build(dtype=dtype)
    block.load_torch(module)
    x = round_to(rand(N, T, E, seed=5), dtype)
    xt = torch.tensor(x, requires_grad=True)
    kpm, causal_mask = torch_masks(lengths, causal)
    yt = module(xt, src_mask=causal_mask, src_key_padding_mask=kpm, is_causal=causal)
    r = rand(N, T, E, seed=6)
    (dx_ref,), params_ref = torch_grads(module, [xt], yt, r)
    mask = None if lengths is None else backend.asarray(lengths_mask(lengths))
    y, backprop = block.forward(backend.asarray(x, dtype), mask=mask)
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(y, yt.detach().numpy(), backend, dtype)
    assert_matches(dx, dx_ref, backend, dtype)
    assert_gradients_match(block, params_ref, BLOCK_NAMES, backend, dtype)


def test_block_gradients(backend):
    block = TransformerEncoderBlock(E, H, FF, dropout=0.0).build(seed=5, dtype="float64")
    block.set_parameters({k: pn.asarray(rand(*v.shape, seed=30 + i) * 0.3 +
                                        (1.0 if "gamma" in k else 0.0), dtype="float64")
                          for i, (k, v) in enumerate(block.parameters().items())
                          if "bias" in k or "beta" in k or "gamma" in k})
    mask = backend.asarray(lengths_mask([3, 2]))
    check_gradients(block, lambda xs: block.forward(xs[0], mask=mask), [rand(N, T, E)],
                    backend, weight=lengths_mask([3, 2])[:, :, None])


def test_block_dropout_placement_matches_torch(backend):
    """From a torch layer with dropout: the four dropouts are where torch has them (attention
    weights, after attention, after the activation, after the feed-forward network)."""
    torch = pytest.importorskip("torch")
    module = torch.nn.TransformerEncoderLayer(E, H, FF, dropout=0.25, activation="gelu",
                                              norm_first=True, batch_first=True)
    block = TransformerEncoderBlock.from_torch(module)
    assert block.self_attn.dropout == block.dropout1.rate == block.dropout.rate == \
        block.dropout2.rate == 0.25
    assert block.dtype == "float32" and block.get_config()["ff_dim"] == FF


def test_block_dropout_reproducible_and_identity_in_eval(backend):
    x = backend.asarray(rand(N, T, E), "float64")
    blocks = [TransformerEncoderBlock(E, H, FF, dropout=0.3).build(seed=7, dtype="float64")
              for _ in range(2)]
    plain = TransformerEncoderBlock(E, H, FF, dropout=0.0).build(seed=7, dtype="float64")
    a1, _ = blocks[0].forward(x, training=True)
    b1, _ = blocks[1].forward(x, training=True)
    a2, _ = blocks[0].forward(x, training=True)
    np.testing.assert_array_equal(backend.to_numpy(a1), backend.to_numpy(b1))  # same seed
    assert not np.array_equal(backend.to_numpy(a1), backend.to_numpy(a2))     # new masks
    assert not np.array_equal(backend.to_numpy(a1), backend.to_numpy(plain.forward(x)[0]))
    y_eval, _ = blocks[0].forward(x, training=False)
    np.testing.assert_array_equal(backend.to_numpy(y_eval), backend.to_numpy(plain.forward(x)[0]))


def test_mha_dropout_drops_attention_weights(backend):
    layer = MultiHeadAttention(E, H, dropout=0.5, seed=3).build(seed=0, dtype="float64")
    same = MultiHeadAttention(E, H, dropout=0.5, seed=3).build(seed=0, dtype="float64")
    x = backend.asarray(rand(N, T, E), "float64")
    y1, _ = layer.forward(x, training=True)
    np.testing.assert_array_equal(backend.to_numpy(y1),
                                  backend.to_numpy(same.forward(x, training=True)[0]))
    y_eval, _ = layer.forward(x)  # training=None: the layer's mode, eval by default
    y_plain, _ = MultiHeadAttention(E, H).build(seed=0, dtype="float64").forward(x)
    np.testing.assert_array_equal(backend.to_numpy(y_eval), backend.to_numpy(y_plain))
    assert not np.array_equal(backend.to_numpy(y1), backend.to_numpy(y_eval))


# ---------------------------------------------------------------------------------------------
# positional encodings
# ---------------------------------------------------------------------------------------------
def sinusoid_reference(max_len, dim, base=10000.0):
    table = np.zeros((max_len, dim))
    for p in range(max_len):
        for i in range(dim):
            angle = p / base ** (2 * (i // 2) / dim)
            table[p, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sinusoidal_encoding(backend, dtype):
    dim = 5  # odd: the last feature is a sine
    layer = SinusoidalPositionalEncoding(6, dim).build(dtype=dtype)
    x = round_to(rand(N, 4, dim), dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    assert_matches(y, x + sinusoid_reference(6, dim)[:4], backend, dtype)
    r = backend.asarray(rand(N, 4, dim, seed=1), dtype)
    assert backprop(r) is r  # y = x + constant: dL/dx = dy
    assert layer.parameters == {} and layer.output_shape((4, dim)) == (4, dim)


def test_positional_embedding(backend):
    layer = PositionalEmbedding(4, E).build(seed=0, dtype="float64")
    table = backend.to_numpy(layer.parameters["embeddings"])
    x = rand(N, T, E)
    y, _ = layer.forward(backend.asarray(x, "float64"))
    assert_matches(y, x + table[:T], backend, "float64")
    dxs = check_gradients(layer, lambda xs: layer.forward(xs[0]), [x], backend)
    grad = backend.to_numpy(layer.gradients["embeddings"])
    assert np.all(grad[T:] == 0.0)  # row 3 was not used
    assert_on_backend(dxs[0], backend, "float64")


def test_positional_layers_in_a_chain_keep_the_mask(backend):
    ids = backend.asarray(np.asarray([[3, 1, 4], [2, 1, 0]]))
    chain = Chain([Embedding(5, E, mask_zero=True), SinusoidalPositionalEncoding(3, E),
                   PositionalEmbedding(3, E), TransformerEncoderBlock(E, H, FF, dropout=0.0),
                   GlobalAvgPool1D(), Dense(E, 2)]).build(seed=0, dtype="float64")
    y, backprop = chain.forward(ids)
    assert tuple(y.shape) == (2, 2)
    assert backprop(backend.asarray(np.ones((2, 2)), "float64")) is None  # ids: no gradient
    assert tuple(chain[0].gradients["embeddings"].shape) == (5, E)
    assert chain.compute_mask(ids, None) is None  # pooled: the time axis is gone
    # the mask from the ids reached the attention: changing a padded position's vector
    # (by changing the positional embedding of step 2) leaves sample 1 unchanged
    pos = chain[2]
    table = backend.to_numpy(pos.parameters["embeddings"]).copy()
    table[2] += 10.0
    pos.set_named_parameters({"embeddings": backend.asarray(table)})
    y2, _ = chain.forward(ids)
    np.testing.assert_array_equal(backend.to_numpy(y2)[1], backend.to_numpy(y)[1])
    assert not np.array_equal(backend.to_numpy(y2)[0], backend.to_numpy(y)[0])


# ---------------------------------------------------------------------------------------------
# pooling over time
# ---------------------------------------------------------------------------------------------
def test_global_avg_pool_1d(backend):
    x = rand(3, 4, 2)
    lengths = [4, 2, 0]
    mask = lengths_mask(lengths, 4)
    layer = GlobalAvgPool1D()
    y, _ = layer.forward(backend.asarray(x, "float64"), mask=backend.asarray(mask))
    expected = np.stack([x[n, :n_len].mean(0) if n_len else np.zeros(2)
                         for n, n_len in enumerate(lengths)])
    assert_matches(y, expected, backend, "float64")
    y, _ = layer.forward(backend.asarray(x, "float64"))
    assert_matches(y, x.mean(1), backend, "float64")
    for m in (None, backend.asarray(mask)):
        dxs = check_gradients(layer, lambda xs, m=m: layer.forward(xs[0], mask=m), [x], backend)
    dx = backend.to_numpy(dxs[0])
    assert np.all(dx[~mask] == 0.0)
    assert layer.compute_mask(x, mask) is None and layer.output_shape((4, 2)) == (2,)


def test_last_step(backend):
    x = rand(3, 4, 2)
    mask = lengths_mask([4, 2, 0], 4)
    layer = LastStep()
    y, _ = layer.forward(backend.asarray(x, "float64"), mask=backend.asarray(mask))
    assert_matches(y, np.stack([x[0, 3], x[1, 1], np.zeros(2)]), backend, "float64")
    y, _ = layer.forward(backend.asarray(x, "float64"))
    assert_matches(y, x[:, -1], backend, "float64")
    gappy = np.asarray([[True, False, True, False]] * 3)  # the last True, not the length
    y, _ = layer.forward(backend.asarray(x, "float64"), mask=backend.asarray(gappy))
    assert_matches(y, x[:, 2], backend, "float64")
    for m in (None, backend.asarray(mask)):
        dxs = check_gradients(layer, lambda xs, m=m: layer.forward(xs[0], mask=m), [x], backend)
    dx = backend.to_numpy(dxs[0])
    assert np.count_nonzero(np.abs(dx).sum(-1)) == 2 and np.all(dx[2] == 0.0)
    assert layer.compute_mask(x, mask) is None and layer.output_shape((4, 2)) == (2,)


@pytest.mark.parametrize("layer", [GlobalAvgPool1D(), LastStep()], ids=["avg", "last"])
def test_pooling_ignores_inf_at_padded_steps(backend, layer):
    x = rand(2, 3, 2)
    mask = lengths_mask([3, 1])
    x[~mask] = np.inf
    y, backprop = layer.forward(backend.asarray(x, "float64"), mask=backend.asarray(mask))
    dx = backend.to_numpy(backprop(backend.asarray(np.ones((2, 2)), "float64")))
    assert np.all(np.isfinite(backend.to_numpy(y))) and np.all(dx[~mask] == 0.0)


# ---------------------------------------------------------------------------------------------
# training through a model
# ---------------------------------------------------------------------------------------------
def test_transformer_classifier_trains(backend):
    """Sequence classification: ids -> embedding (mask) -> position -> block -> mean -> Dense.
    The class is whether token 1 occurs; the loss falls."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 5, size=32)
    ids = rng.integers(1, 6, size=(32, 4)) * lengths_mask(lengths, 4)
    labels = (ids == 1).any(axis=1).astype(np.int64)
    model = pn.Sequential([Embedding(6, 8, mask_zero=True), SinusoidalPositionalEncoding(4, 8),
                           TransformerEncoderBlock(8, 2, 16, dropout=0.1),
                           GlobalAvgPool1D(), Dense(8, 2)],
                          loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(0.01),
                          seed=0)
    history = model.fit(ids, labels, epochs=4, batch_size=32, verbose=0, seed=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


# ---------------------------------------------------------------------------------------------
# configs, shapes, errors
# ---------------------------------------------------------------------------------------------
CONFIG_LAYERS = [
    lambda: MultiHeadAttention(E, H, dropout=0.1, use_bias=False, causal=True, seed=3),
    lambda: TransformerEncoderBlock(E, H, FF, dropout=0.2, activation="relu", causal=True,
                                    eps=1e-6),
    lambda: SinusoidalPositionalEncoding(7, E, base=100.0),
    lambda: PositionalEmbedding(7, E, initializer="zeros"),
    lambda: GlobalAvgPool1D(name="pool"),
    lambda: LastStep(),
]


@pytest.mark.parametrize("make", CONFIG_LAYERS, ids=lambda f: type(f()).__name__)
def test_config_round_trip(backend, make):
    layer = make()
    config = json.loads(json.dumps(serialize(layer)))
    clone = deserialize(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    layer.build(seed=1, dtype="float64")
    clone.build(seed=1, dtype="float64")
    x = backend.asarray(rand(N, T, E), "float64")
    mask = backend.asarray(lengths_mask([3, 2]))
    kwargs = {"mask": mask} if layer.supports_masking else {}
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x, **kwargs)[0]),
                                  backend.to_numpy(clone.forward(x, **kwargs)[0]))
    out = layer.output_shape((T, E))
    assert out == tuple(layer.forward(x, **kwargs)[0].shape[1:])


def test_checkpoint_round_trip(backend, tmp_path):
    """A model with every layer of this family saves and loads to the same predictions."""
    ids = np.asarray([[1, 2, 3, 0], [4, 5, 0, 0]])
    model = pn.Sequential([Embedding(6, E, mask_zero=True), SinusoidalPositionalEncoding(4, E),
                           PositionalEmbedding(4, E), TransformerEncoderBlock(E, H, FF),
                           MultiHeadAttention(E, H, causal=True), LastStep(), Dense(E, 2)],
                          seed=0, dtype="float64")
    path = tmp_path / "model.safetensors"
    model.save(str(path))
    clone = pn.load(str(path), backend=backend.name, device=backend.device)
    x = backend.asarray(ids)
    np.testing.assert_array_equal(backend.to_numpy(clone.predict(x)),
                                  backend.to_numpy(model.predict(x)))


def test_block_child_configs_and_names():
    config = TransformerEncoderBlock(E, H, FF).get_config()
    names = [name for name, _ in TransformerEncoderBlock.child_configs(config)]
    assert names == ["norm1", "self_attn", "dropout1", "norm2", "linear1", "dropout",
                     "linear2", "dropout2"]
    block = TransformerEncoderBlock(E, H, FF)
    assert block.num_parameters == 2 * 2 * E + (E * 3 * E + 3 * E + E * E + E) + \
        (E * FF + FF) + (FF * E + E)


def test_errors(backend):
    with pytest.raises(ValueError, match=r"embed_dim must be divisible by num_heads, "
                                         r"received embed_dim=6, num_heads=4.*\[1, 2, 3, 6\]"):
        MultiHeadAttention(6, 4)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        MultiHeadAttention(4, 2, dropout=1.0)
    with pytest.raises(TypeError, match="causal must be True or False"):
        MultiHeadAttention(4, 2, causal=1)
    with pytest.raises(ValueError, match="TransformerEncoderBlock dropout must be"):
        TransformerEncoderBlock(4, 2, 8, dropout=-0.1)
    with pytest.raises(ValueError, match="ff_dim must be a positive int"):
        TransformerEncoderBlock(4, 2, 0)
    with pytest.raises(ValueError, match="base must be a number > 1"):
        SinusoidalPositionalEncoding(4, 4, base=1.0)
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        PositionalEmbedding(0, 4)

    mha = MultiHeadAttention(E, H).build(seed=0, dtype="float64")
    x = backend.asarray(rand(N, T, E), "float64")
    with pytest.raises(ValueError, match=r"expected input of shape \(N, T, 4\).*received "
                                         r"shape \(2, 3, 5\)"):
        mha.forward(backend.asarray(rand(N, T, 5), "float64"))
    with pytest.raises(ValueError, match=r"received shape \(3, 4\)"):
        mha.forward(backend.asarray(rand(T, E), "float64"))
    with pytest.raises(TypeError, match="float64 parameters, received input of dtype float32"):
        mha.forward(backend.asarray(rand(N, T, E), "float32"))
    with pytest.raises(ValueError, match=r"mask must have shape \(N, T\) = \(2, 3\).*received "
                                         r"shape \(2, 4\)"):
        mha.forward(x, mask=backend.asarray(lengths_mask([1, 2], 4)))
    with pytest.raises(TypeError, match="mask must be boolean.*received dtype"):
        mha.forward(x, mask=backend.asarray(lengths_mask([1, 2]).astype("float64")))
    if backend.name != "numpy":
        with pytest.raises(TypeError, match="mask must be an array on the input's backend"):
            mha.forward(x, mask=lengths_mask([1, 2]))
    with pytest.raises(ValueError, match=r"key and value of the same shape"):
        mha.attend(x, x, backend.asarray(rand(N, 2, E), "float64"))
    with pytest.raises(ValueError, match=r"key_mask must have shape \(N, T\) = \(2, 2\)"):
        k = backend.asarray(rand(N, 2, E), "float64")
        mha.attend(x, k, k, key_mask=backend.asarray(lengths_mask([1, 2])))
    with pytest.raises(ValueError, match=r"per-sample input of shape \(T, 4\)"):
        mha.output_shape((3, 5))

    pe = SinusoidalPositionalEncoding(2, E).build(dtype="float64")
    with pytest.raises(ValueError, match=r"max_len=2, received a sequence of 3 steps"):
        pe.forward(x)
    with pytest.raises(ValueError, match=r"max_len=2, received a sequence of 3 steps"):
        pe.output_shape((3, E))
    with pytest.raises(ValueError, match=r"max_len=2, received a sequence of 3 steps"):
        PositionalEmbedding(2, E).build(dtype="float64").forward(x)
    with pytest.raises(ValueError, match=r"with E=4, received shape \(2, 3, 5\)"):
        PositionalEmbedding(3, E).build(dtype="float64").forward(
            backend.asarray(rand(N, T, 5), "float64"))
    with pytest.raises(ValueError, match=r"GlobalAvgPool1D expected input of shape \(N, T, F\)"):
        GlobalAvgPool1D().forward(backend.asarray(rand(N, T), "float64"))
    with pytest.raises(TypeError, match="LastStep mask must be boolean"):
        LastStep().forward(x, mask=backend.asarray(np.ones((N, T))))
    block = TransformerEncoderBlock(E, H, FF).build(seed=0, dtype="float64")
    with pytest.raises(ValueError, match=r"TransformerEncoderBlock expected input of shape"):
        block.forward(backend.asarray(rand(N, T, 5), "float64"))
    with pytest.raises(ValueError, match=r"TransformerEncoderBlock mask must have shape"):
        block.forward(x, mask=backend.asarray(lengths_mask([1, 2], 4)))


def test_torch_loading_errors():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"\(embed_dim, num_heads, bias\) = \(4, 2, True\), "
                                         r"this layer \(4, 1, True\)"):
        MultiHeadAttention(4, 1).load_torch(torch.nn.MultiheadAttention(4, 2))
    with pytest.raises(ValueError, match="separate q/k/v projections"):
        MultiHeadAttention(4, 2).load_torch(torch.nn.MultiheadAttention(4, 2, kdim=3))
    with pytest.raises(ValueError, match="add_bias_kv"):
        MultiHeadAttention(4, 2).load_torch(torch.nn.MultiheadAttention(4, 2, add_bias_kv=True))
    with pytest.raises(TypeError, match="expects a torch.nn.MultiheadAttention"):
        MultiHeadAttention.from_torch(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="norm_first=True"):
        TransformerEncoderBlock.from_torch(torch.nn.TransformerEncoderLayer(4, 2, 8))
    with pytest.raises(ValueError, match="supports the activations gelu and relu"):
        TransformerEncoderBlock.from_torch(torch.nn.TransformerEncoderLayer(
            4, 2, 8, norm_first=True, activation=torch.nn.functional.silu))
    with pytest.raises(ValueError, match=r"differs from this block.*'ff_dim': \(8, 16\)"):
        TransformerEncoderBlock(4, 2, 16).load_torch(
            torch.nn.TransformerEncoderLayer(4, 2, 8, norm_first=True, activation="gelu"))
    with pytest.raises(TypeError, match="float32 or float64; the torch module is float16"):
        MultiHeadAttention.from_torch(torch.nn.MultiheadAttention(4, 2).half())
