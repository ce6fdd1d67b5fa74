"""Embedding, Masking, GroupNorm, Maxout and softmax with a temperature, on every backend.

Expected values come from independent sources: PyTorch float64 autograd (nn.functional.embedding,
group_norm, softmax of x / tau), a NumPy reference written here for Maxout (reshape + max, the
gradient routed with put_along_axis), and central finite differences in float64 of
L = sum(layer(x) * r) with a fixed random r. Shapes are tiny: JAX dispatches every op eagerly.
"""

from __future__ import annotations

import json

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
    set_params,
    torch_run,
)

from portanet import activations as A
from portanet import initializers, regularizers
from portanet.layers import Activation, Chain, Dense, deserialize, serialize
from portanet.layers.embedding import ONEHOT_MAX_VOCAB, Embedding, Masking, embedding_gradient
from portanet.layers.group_norm import GroupNorm
from portanet.layers.maxout import Maxout

FD_TOL = 1e-6


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def check_gradients(layer, x_np, case, seed=1):
    """backprop's dL/dx and dL/dp against central differences of sum(y * r), float64."""
    x_np = np.asarray(x_np, dtype=np.float64)
    y, backprop = layer.forward(case.asarray(x_np, "float64"))
    r = np.random.default_rng(seed).normal(size=tuple(y.shape))
    dx = backprop(case.asarray(r, "float64"))
    assert_on_backend(dx, case, "float64")
    grads = {k: case.to_numpy(v) for k, v in layer.named_gradients().items()}

    def loss_of_x(xn):
        return float(np.sum(case.to_numpy(layer.forward(case.asarray(xn, "float64"))[0]) * r))

    err = relative_error(case.to_numpy(dx), numerical_gradient(loss_of_x, x_np))
    assert err < FD_TOL, f"input gradient: relative error {err:.2e}"
    params = {k: case.to_numpy(v).copy() for k, v in layer.named_parameters().items()}
    assert set(grads) == set(params)
    assert_parameter_gradients(
        grads, params, lambda name, p: layer.set_named_parameters({name: case.asarray(p)}),
        lambda: loss_of_x(x_np), FD_TOL)


def round_trip(layer):
    again = deserialize(json.loads(json.dumps(serialize(layer))))
    assert serialize(again) == serialize(layer)
    return again


# ---------------------------------------------------------------------------------------------
# Embedding
# ---------------------------------------------------------------------------------------------
IDS = np.array([[1, 3, 1, 0], [4, 1, 3, 3]])  # duplicates; id 2 never occurs
V, D = 5, 3


@pytest.mark.parametrize("gradient", ["onehot", "sort"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_embedding_matches_torch(backend, gradient, dtype):
    torch = pytest.importorskip("torch")
    w = round_to(rand(V, D), dtype)
    r = rand(2, 4, D, seed=1)
    ids_t = torch.tensor(IDS)
    ref_y, (ref_dw,) = torch_run(lambda w: torch.nn.functional.embedding(ids_t, w), [w], r)
    layer = Embedding(V, D, gradient=gradient).build(dtype=dtype)
    set_params(layer, {"embeddings": w}, backend, dtype)
    y, backprop = layer.forward(backend.asarray(IDS))
    assert_matches(y, ref_y, backend, dtype)
    assert backprop(backend.asarray(r, dtype)) is None  # ids have no gradient
    assert_matches(layer.gradients["embeddings"], ref_dw, backend, dtype)


def test_embedding_gradient_paths_agree(backend):
    """One-hot matmul and sort-and-segment: the same sums, duplicates and unseen ids included."""
    rng = np.random.default_rng(3)
    ids = backend.asarray(rng.integers(0, 7, size=23))
    dy = backend.asarray(rng.normal(size=(23, 2)), "float64")
    onehot = embedding_gradient(ids, dy, 9, "onehot")  # ids 7, 8 never occur: zero rows
    by_sort = embedding_gradient(ids, dy, 9, "sort")
    assert_on_backend(by_sort, backend, "float64")
    expected = np.zeros((9, 2))
    np.add.at(expected, backend.to_numpy(ids), backend.to_numpy(dy))  # NumPy's own scatter-add
    assert_matches(onehot, expected, backend, "float64", rtol=1e-12)
    assert_matches(by_sort, expected, backend, "float64", rtol=1e-12)
    with pytest.raises(ValueError, match="method must be 'onehot' or 'sort', received 'scatter'"):
        embedding_gradient(ids, dy, 9, "scatter")


def test_embedding_finite_differences(backend):
    layer = Embedding(4, 2, gradient="sort").build(seed=0, dtype="float64")
    ids = backend.asarray(np.array([[3, 0, 3], [1, 3, 0]]))
    r = rand(2, 3, 2, seed=2)
    _, backprop = layer.forward(ids)
    backprop(backend.asarray(r, "float64"))
    grads = {"embeddings": backend.to_numpy(layer.gradients["embeddings"])}

    def objective():
        return float(np.sum(backend.to_numpy(layer.forward(ids)[0]) * r))

    params = {"embeddings": backend.to_numpy(layer.parameters["embeddings"]).copy()}
    assert_parameter_gradients(
        grads, params, lambda n, p: layer.set_named_parameters({n: backend.asarray(p)}),
        objective, FD_TOL)


def test_embedding_auto_gradient_rule(backend):
    name = backend.backend.name
    limit = ONEHOT_MAX_VOCAB.get(name, 128)
    assert Embedding(limit, 2).gradient_method(name) == "onehot"
    assert Embedding(limit + 1, 2).gradient_method(name) == "sort"
    assert Embedding(3, 2, gradient="sort").gradient_method(name) == "sort"
    # auto gives what the chosen path gives
    layer = Embedding(limit + 1, 2).build(seed=0, dtype="float64")
    ids = backend.asarray(np.array([[0, limit, 0]]))
    _, backprop = layer.forward(ids)
    backprop(backend.asarray(np.ones((1, 3, 2)), "float64"))
    expected = np.zeros((limit + 1, 2))
    expected[0], expected[limit] = 2.0, 1.0
    assert_matches(layer.gradients["embeddings"], expected, backend, "float64")


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2), ()])
def test_embedding_any_id_shape(backend, shape):
    ids = np.arange(int(np.prod(shape))).reshape(shape) % V
    layer = Embedding(V, D).build(seed=0, dtype="float64")
    w = backend.to_numpy(layer.parameters["embeddings"])
    y, backprop = layer.forward(backend.asarray(ids))
    assert tuple(y.shape) == (*shape, D) == layer.output_shape(shape)
    assert_matches(y, w[ids], backend, "float64")
    backprop(backend.asarray(np.ones((*shape, D)), "float64"))
    assert tuple(layer.gradients["embeddings"].shape) == (V, D)


@pytest.mark.parametrize("int_dtype", ["int32", "int64", "uint8", "int16"])
def test_embedding_integer_dtypes(backend, int_dtype):
    layer = Embedding(V, D).build(seed=0, dtype="float32")
    y, backprop = layer.forward(backend.asarray(IDS.astype(int_dtype)))
    w = backend.to_numpy(layer.parameters["embeddings"])
    assert_matches(y, w[IDS], backend, "float32")
    backprop(backend.asarray(np.ones((2, 4, D)), "float32"))
    counts = np.bincount(IDS.ravel(), minlength=V)[:, None] * np.ones((1, D))
    assert_matches(layer.gradients["embeddings"], counts, backend, "float32")


@pytest.mark.parametrize("gradient", ["onehot", "sort"])
def test_embedding_out_of_range_ids_give_nan_rows(backend, gradient):
    """No host read on the hot path: ids < 0 or >= V look up NaN, the same on every backend
    (NumPy alone would wrap -1 to the last row, torch raise, JAX clamp); check_ids finds them."""
    layer = Embedding(V, D, gradient=gradient).build(seed=0, dtype="float64")
    w = backend.to_numpy(layer.parameters["embeddings"])
    ids = np.array([[0, -1, 4], [5, 2, 7]])
    y, backprop = layer.forward(backend.asarray(ids))
    assert_on_backend(y, backend, "float64")
    y_np = backend.to_numpy(y)
    bad = (ids < 0) | (ids >= V)
    assert np.isnan(y_np[bad]).all()
    np.testing.assert_array_equal(y_np[~bad], w[ids[~bad]])
    # Finite dy at those positions: they add to no row.
    backprop(backend.asarray(np.ones((2, 3, D)), "float64"))
    expected = np.zeros((V, D))
    expected[[0, 4, 2]] = 1.0
    assert_matches(layer.gradients["embeddings"], expected, backend, "float64")
    with pytest.raises(ValueError, match=r"num_embeddings=5 \(ids 0 .. 4\), received ids from "
                                         r"-1 to 7"):
        layer.check_ids(backend.asarray(ids))
    layer.check_ids(backend.asarray(IDS))  # in range: no error


def test_embedding_mask_zero(backend):
    layer = Embedding(V, D, mask_zero=True).build(seed=0)
    assert layer.creates_mask and not Embedding(V, D).creates_mask
    ids = backend.asarray(IDS)
    mask = layer.compute_mask(ids, None)
    assert_on_backend(mask, backend)
    np.testing.assert_array_equal(backend.to_numpy(mask), IDS != 0)
    incoming = np.array([[True, True, False, True], [True, True, True, True]])
    both = layer.compute_mask(ids, backend.asarray(incoming))
    np.testing.assert_array_equal(backend.to_numpy(both), (IDS != 0) & incoming)
    given = backend.asarray(incoming)
    assert Embedding(V, D).compute_mask(ids, given) is given
    assert Embedding(V, D).compute_mask(ids, None) is None


def test_embedding_first_in_a_chain(backend):
    """Chain handles a first layer whose backprop returns None, and the training walk asks it
    to skip dL/dx (input_gradient=False)."""
    chain = Chain([Embedding(V, D), Dense(D, 2)]).build(seed=0, dtype="float64")
    ids = backend.asarray(IDS)
    y, backprop = chain.forward(ids)
    assert tuple(y.shape) == (2, 4, 2)
    assert backprop(backend.asarray(np.ones((2, 4, 2)), "float64")) is None
    full = backend.to_numpy(chain.named_gradients()["0.embeddings"])
    y, backprop = chain.chain(ids, True, stop=0)
    assert backprop(backend.asarray(np.ones((2, 4, 2)), "float64")) is None
    assert_matches(chain.named_gradients()["0.embeddings"], full, backend, "float64")


def test_embedding_mask_reaches_the_next_layer(backend):
    """Embedding(mask_zero) -> Masking: the chain hands the ids' mask to Masking, which zeroes
    the padded steps (and their gradient), and reports the mask as the chain's output mask."""
    chain = Chain([Embedding(V, D, mask_zero=True), Masking()]).build(seed=0, dtype="float64")
    ids = backend.asarray(IDS)
    y, backprop = chain.forward(ids)
    w = backend.to_numpy(chain[0].parameters["embeddings"])
    expected = w[IDS] * (IDS != 0)[..., None]
    assert_matches(y, expected, backend, "float64")
    backprop(backend.asarray(np.ones((2, 4, D)), "float64"))
    counts = np.bincount(IDS[IDS != 0], minlength=V)[:, None] * np.ones((1, D))
    assert_matches(chain.named_gradients()["0.embeddings"], counts, backend, "float64")
    mask = chain.compute_mask(ids, None)
    np.testing.assert_array_equal(backend.to_numpy(mask), IDS != 0)


def test_embedding_builds_standalone_and_round_trips(backend):
    layer = Embedding(V, D, mask_zero=True, embeddings_regularizer=regularizers.L2(1e-3))
    y, _ = layer.forward(backend.asarray(IDS))  # builds in float32 on the ids' device
    assert_on_backend(y, backend, "float32")
    assert_on_backend(layer.parameters["embeddings"], backend, "float32")
    again = round_trip(layer)
    assert again.mask_zero and again.creates_mask and again.regularizers["embeddings"] is not None
    assert again.embeddings_initializer == initializers.Normal(0.0, 1.0)
    assert Embedding.integer_input and Embedding.can_skip_input_gradient
    # Same seed, same table, on every backend: N(0, 1) like torch's nn.Embedding.
    w = backend.to_numpy(Embedding(50, 40).build(seed=3, dtype="float64").parameters[
        "embeddings"])
    assert abs(w.std() - 1.0) < 0.05 and abs(w.mean()) < 0.05
    assert layer.num_parameters == V * D


def test_embedding_bad_input(backend):
    layer = Embedding(V, D).build(seed=0)
    with pytest.raises(TypeError, match=r"Embedding expects integer ids, received dtype .*float32"
                                        r".*dtype='int64'"):
        layer.forward(backend.asarray(IDS, "float32"))
    with pytest.raises(TypeError, match="Embedding expects integer ids"):
        layer.forward(backend.asarray(IDS != 0))
    with pytest.raises(TypeError, match="expects an array of integer ids, received list"):
        layer.forward([[1, 2]])
    with pytest.raises(ValueError, match="num_embeddings must be a positive int, received "
                                         "num_embeddings=0"):
        Embedding(0, 3)
    with pytest.raises(ValueError, match="embedding_dim must be a positive int"):
        Embedding(3, 2.5)
    with pytest.raises(ValueError, match=r"gradient must be one of \['auto', 'onehot', 'sort'\], "
                                         r"received 'scatter'"):
        Embedding(3, 2, gradient="scatter")
    with pytest.raises(TypeError, match="mask_zero must be True or False, received 1"):
        Embedding(3, 2, mask_zero=1)
    with pytest.raises(ValueError, match="needs num_embeddings >= 2, received 1"):
        Embedding(1, 2, mask_zero=True)


# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------
def _padded(mask_value):
    x = rand(2, 4, 3, seed=5)
    x[0, 2:] = mask_value  # sample 0 has 2 real steps
    x[1, 1] = mask_value   # a padded step in the middle
    x[1, 3, 0] = mask_value  # one feature equal to the value does not make padding
    return x, np.array([[True, True, False, False], [True, False, True, True]])


@pytest.mark.parametrize("mask_value", [0.0, -1.0])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_masking_forward_backward(backend, mask_value, dtype):
    x, real = _padded(mask_value)
    layer = Masking(mask_value)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    assert_matches(y, round_to(x, dtype) * real[..., None], backend, dtype)
    r = rand(2, 4, 3, seed=6)
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(dx, round_to(r, dtype) * real[..., None], backend, dtype)
    assert (backend.to_numpy(dx)[~real] == 0.0).all()  # exactly 0 at padded steps
    mask = layer.compute_mask(backend.asarray(x, dtype), None)
    assert_on_backend(mask, backend)
    np.testing.assert_array_equal(backend.to_numpy(mask), real)


def test_masking_finite_differences(backend):
    """Away from the padded steps (where the mask switches, so y jumps), dL/dx is the FD one."""
    x, real = _padded(-1.0)
    r = rand(2, 4, 3, seed=7)
    layer = Masking(-1.0)
    _, backprop = layer.forward(backend.asarray(x, "float64"))
    dx = backend.to_numpy(backprop(backend.asarray(r, "float64")))

    def loss(xn):
        return float(np.sum(backend.to_numpy(layer.forward(backend.asarray(xn, "float64"))[0])
                            * r))

    numeric = numerical_gradient(loss, x)
    assert relative_error(dx[real], numeric[real]) < FD_TOL
    assert (dx[~real] == 0.0).all()


def test_masking_with_incoming_mask(backend):
    x, real = _padded(0.0)
    incoming = np.array([[True, False, True, True], [True, True, True, False]])
    layer = Masking()
    y, _ = layer.forward(backend.asarray(x, "float64"), mask=backend.asarray(incoming))
    both = real & incoming
    assert_matches(y, x * both[..., None], backend, "float64")
    mask = layer.compute_mask(backend.asarray(x, "float64"), backend.asarray(incoming))
    np.testing.assert_array_equal(backend.to_numpy(mask), both)
    assert Masking.supports_masking and Masking.creates_mask
    assert round_trip(Masking(-2.5)).mask_value == -2.5
    assert layer.output_shape((4, 3)) == (4, 3)


def test_masking_bad_input(backend):
    layer = Masking()
    with pytest.raises(ValueError, match=r"shape \(N, T, F\), received shape \(2, 4\)"):
        layer.forward(backend.asarray(np.zeros((2, 4)), "float32"))
    with pytest.raises(TypeError, match="Masking expects floating input, received dtype"):
        layer.forward(backend.asarray(np.zeros((2, 4, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"mask of shape \(2, 3\) for input of shape "
                                         r"\(2, 4, 3\); expected \(N, T\) = \(2, 4\)"):
        layer.forward(backend.asarray(np.zeros((2, 4, 3)), "float32"),
                      mask=backend.asarray(np.ones((2, 3), dtype=bool)))
    with pytest.raises(ValueError, match=r"per-sample shape \(4,\) \(expected \(T, F\)\)"):
        layer.output_shape((4,))
    with pytest.raises(TypeError, match="mask_value must be a Python number, received 'pad'"):
        Masking("pad")


# ---------------------------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------------------------
GN_CASES = [((2, 4), 1), ((2, 6), 2), ((2, 4, 3), 4), ((2, 4, 2, 2), 2), ((2, 6, 3), 3)]


@pytest.mark.parametrize("shape, groups", GN_CASES, ids=[f"{s}-G{g}" for s, g in GN_CASES])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_group_norm_matches_torch(backend, shape, groups, dtype):
    torch = pytest.importorskip("torch")
    c = shape[1]
    x = round_to(rand(*shape) * 2 + 1, dtype)
    gamma, beta = round_to(rand(c, seed=1), dtype), round_to(rand(c, seed=2), dtype)
    r = rand(*shape, seed=3)
    ref_y, (ref_dx, ref_dg, ref_db) = torch_run(
        lambda x, g, b: torch.nn.functional.group_norm(x, groups, g, b, eps=1e-5),
        [x, gamma, beta], r)
    layer = GroupNorm(groups, c).build(dtype=dtype)
    set_params(layer, {"gamma": gamma, "beta": beta}, backend, dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    dx = backprop(backend.asarray(r, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(dx, ref_dx, backend, dtype)
    assert_matches(layer.gradients["gamma"], ref_dg, backend, dtype)
    assert_matches(layer.gradients["beta"], ref_db, backend, dtype)


def test_group_norm_without_affine_matches_torch(backend):
    torch = pytest.importorskip("torch")
    x, r = rand(2, 4, 3), rand(2, 4, 3, seed=1)
    ref_y, (ref_dx,) = torch_run(lambda x: torch.nn.functional.group_norm(x, 2), [x], r)
    layer = GroupNorm(2, 4, affine=False)
    y, backprop = layer.forward(backend.asarray(x, "float64"))
    assert layer.parameters == {}
    assert_matches(y, ref_y, backend, "float64")
    assert_matches(backprop(backend.asarray(r, "float64")), ref_dx, backend, "float64")


@pytest.mark.parametrize("shape, groups", [((2, 6), 2), ((1, 4, 2, 2), 2), ((2, 3, 3), 3),
                                           ((2, 2, 3), 1)])
def test_group_norm_finite_differences(backend, shape, groups):
    layer = GroupNorm(groups, shape[1]).build(seed=0, dtype="float64")
    # non-trivial gamma and beta, so their gradients and the g = dy * gamma path are exercised
    set_params(layer, {"gamma": rand(shape[1], seed=8), "beta": rand(shape[1], seed=9)},
               backend, "float64")
    check_gradients(layer, rand(*shape, seed=4), backend)


def test_group_norm_round_trip_and_shapes(backend):
    layer = GroupNorm(2, 6, eps=1e-3, affine=False)
    again = round_trip(layer)
    assert (again.num_groups, again.num_channels, again.eps, again.affine) == (2, 6, 1e-3, False)
    assert GroupNorm(3, 6).output_shape((6, 5, 5)) == (6, 5, 5)
    assert GroupNorm(3, 6).num_parameters == 12
    y, _ = GroupNorm(1, 2).forward(backend.asarray(rand(3, 2), "float32"))  # standalone build
    assert_on_backend(y, backend, "float32")


def test_group_norm_bad_input(backend):
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups, received "
                                         "num_channels=6, num_groups=4"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        GroupNorm(0, 6)
    layer = GroupNorm(2, 4).build(seed=0)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C, \*\) with C=4, "
                                         r"received shape \(2, 3, 5\)"):
        layer.forward(backend.asarray(np.zeros((2, 3, 5)), "float32"))
    with pytest.raises(ValueError, match=r"received shape \(4,\)"):
        layer.forward(backend.asarray(np.zeros(4), "float32"))
    with pytest.raises(TypeError, match="float32 parameters, received input of dtype float64"):
        layer.forward(backend.asarray(np.zeros((2, 4)), "float64"))
    with pytest.raises(ValueError, match=r"expected input of shape \(C, \*\) with C=4, received "
                                         r"shape \(3,\)"):
        layer.output_shape((3,))
    with pytest.raises(ValueError, match="eps must be a number"):
        GroupNorm(2, 4, eps=-1.0)


# ---------------------------------------------------------------------------------------------
# Maxout
# ---------------------------------------------------------------------------------------------
def maxout_reference(x, w, b, units, k, dy):
    """Independent NumPy float64 maxout: reshape + max; dy routed with put_along_axis."""
    z = (x.reshape(-1, x.shape[-1]) @ w + b).reshape(-1, units, k)
    y = z.max(axis=-1)
    dz = np.zeros_like(z)
    winner = z.argmax(axis=-1)[..., None]
    np.put_along_axis(dz, winner, dy.reshape(-1, units)[..., None], axis=-1)
    dz = dz.reshape(-1, units * k)
    dx = (dz @ w.T).reshape(x.shape)
    return (y.reshape(*x.shape[:-1], units), dx, x.reshape(-1, x.shape[-1]).T @ dz,
            dz.sum(axis=0))


@pytest.mark.parametrize("shape, pieces", [((3, 4), 2), ((2, 2, 4), 3), ((3, 4), 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_maxout_matches_numpy_reference(backend, shape, pieces, dtype):
    units = 2
    x = round_to(rand(*shape), dtype)
    w = round_to(rand(4, units * pieces, seed=1), dtype)
    b = round_to(rand(units * pieces, seed=2), dtype)
    dy = rand(*shape[:-1], units, seed=3)
    ref_y, ref_dx, ref_dw, ref_db = maxout_reference(x, w, b, units, pieces, round_to(dy, dtype))
    layer = Maxout(4, units, pieces=pieces).build(dtype=dtype)
    set_params(layer, {"kernel": w, "bias": b}, backend, dtype)
    y, backprop = layer.forward(backend.asarray(x, dtype))
    dx = backprop(backend.asarray(dy, dtype))
    assert_matches(y, ref_y, backend, dtype)
    assert_matches(dx, ref_dx, backend, dtype)
    assert_matches(layer.gradients["kernel"], ref_dw, backend, dtype)
    assert_matches(layer.gradients["bias"], ref_db, backend, dtype)


@pytest.mark.parametrize("pieces, use_bias", [(2, True), (3, False)])
def test_maxout_finite_differences(backend, pieces, use_bias):
    layer = Maxout(3, 2, pieces=pieces, use_bias=use_bias).build(seed=0, dtype="float64")
    if use_bias:
        set_params(layer, {"bias": rand(2 * pieces, seed=5)}, backend, "float64")
    check_gradients(layer, rand(2, 3, seed=6), backend)


def test_maxout_ties_go_to_the_first_piece(backend):
    """Identical pieces tie everywhere: the whole gradient goes to piece 0 of each unit."""
    w = np.repeat(rand(2, 2, seed=7), 3, axis=1)  # unit-major: columns j*3 .. j*3+2 equal
    layer = Maxout(2, 2, pieces=3, use_bias=False).build(dtype="float64")
    set_params(layer, {"kernel": w}, backend, "float64")
    x = rand(3, 2, seed=8)
    y, backprop = layer.forward(backend.asarray(x, "float64"))
    assert_matches(y, x @ w[:, ::3], backend, "float64")
    dx = backprop(backend.asarray(np.ones((3, 2)), "float64"))
    expected = np.zeros((2, 6))
    expected[:, [0, 3]] = x.sum(axis=0)[:, None]
    assert_matches(layer.gradients["kernel"], expected, backend, "float64")
    assert_matches(dx, np.ones((3, 2)) @ w[:, ::3].T, backend, "float64")  # not 3x


def test_maxout_with_one_piece_is_dense(backend):
    maxout = Maxout(3, 2, pieces=1).build(seed=4, dtype="float64")
    dense = Dense(3, 2).build(seed=4, dtype="float64")  # same seed and specs: same draws
    x = backend.asarray(rand(4, 3), "float64")
    assert_matches(maxout.forward(x)[0], backend.to_numpy(dense.forward(x)[0]), backend,
                   "float64")


def test_maxout_skips_input_gradient_and_round_trips(backend):
    layer = Maxout(3, 2, pieces=2, kernel_regularizer=regularizers.L1(0.1)).build(seed=0)
    _, backprop = layer.forward(backend.asarray(rand(2, 3), "float32"))
    assert backprop(backend.asarray(np.ones((2, 2)), "float32"), input_gradient=False) is None
    assert tuple(layer.gradients["kernel"].shape) == (3, 4)
    again = round_trip(layer)
    assert again.pieces == 2 and again.regularizers["kernel"] is not None
    assert layer.output_shape((5, 3)) == (5, 2)
    assert layer.num_parameters == 3 * 4 + 4


def test_maxout_bad_input(backend):
    layer = Maxout(3, 2).build(seed=0)
    with pytest.raises(ValueError, match=r"Maxout expected input with 3 features, received shape "
                                         r"\(2, 4\)"):
        layer.forward(backend.asarray(np.zeros((2, 4)), "float32"))
    with pytest.raises(TypeError, match="float32 parameters, received input of dtype float64"):
        layer.forward(backend.asarray(np.zeros((2, 3)), "float64"))
    with pytest.raises(ValueError, match="pieces must be a positive int, received pieces=0"):
        Maxout(3, 2, pieces=0)
    with pytest.raises(ValueError, match=r"per-sample shape \(4,\)"):
        layer.output_shape((4,))


# ---------------------------------------------------------------------------------------------
# Softmax with a temperature
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.5, 3.0])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_temperature_matches_torch(backend, tau, axis):
    torch = pytest.importorskip("torch")
    x = rand(3, 4) * 3
    g = rand(3, 4, seed=1)
    t = torch.tensor(x, requires_grad=True)
    y_ref = torch.softmax(t / tau, dim=axis)
    (dx_ref,) = torch.autograd.grad(y_ref, t, torch.tensor(g))
    y_ref = y_ref.detach().numpy()
    for dtype in ("float64", "float32"):
        xb, gb = backend.asarray(x, dtype), backend.asarray(g, dtype)
        s = A.softmax(xb, axis=axis, temperature=tau)
        assert_matches(s, y_ref, backend, dtype)
        assert_matches(A.softmax_vjp(s, gb, axis=axis, temperature=tau), dx_ref.numpy(),
                       backend, dtype)
        y, backprop = A.get("softmax", axis=axis, temperature=tau)(xb)
        assert_matches(y, y_ref, backend, dtype)
        assert_matches(backprop(gb), dx_ref.numpy(), backend, dtype)


def test_softmax_temperature_finite_differences(backend):
    tau = 0.7
    x = rand(2, 3, seed=2) * 2
    g = rand(2, 3, seed=3)
    numeric = numerical_gradient(lambda a: np.sum(backend.to_numpy(
        A.softmax(backend.asarray(a, "float64"), temperature=tau)) * g), x)
    s = A.softmax(backend.asarray(x, "float64"), temperature=tau)
    vjp = A.softmax_vjp(s, backend.asarray(g, "float64"), temperature=tau)
    assert relative_error(backend.to_numpy(vjp), numeric) < FD_TOL
    # The Jacobian, column by column, against differences of softmax(x / tau).
    x1, eps = np.array([0.3, -1.2, 2.0]), 1e-6
    jac = A.softmax_jacobian(backend.asarray(x1, "float64"), temperature=tau)
    assert_on_backend(jac, backend, "float64")
    numeric_j = np.stack([(backend.to_numpy(A.softmax(backend.asarray(x1 + e, "float64"),
                                                      temperature=tau))
                           - backend.to_numpy(A.softmax(backend.asarray(x1 - e, "float64"),
                                                        temperature=tau))) / (2 * eps)
                          for e in np.eye(3) * eps], axis=1)
    assert relative_error(backend.to_numpy(jac), numeric_j) < FD_TOL


def test_softmax_temperature_one_is_plain_softmax(backend):
    xb = backend.asarray(rand(2, 3), "float32")
    plain = backend.to_numpy(A.softmax(xb))
    np.testing.assert_array_equal(backend.to_numpy(A.softmax(xb, temperature=1.0)), plain)
    np.testing.assert_array_equal(backend.to_numpy(A.softmax(xb, temperature=1)), plain)
    assert A.get("softmax").get_config() == {"class_name": "softmax", "config": {}}


def test_softmax_temperature_in_the_activation_layer(backend):
    """Reachable from a layer config and from an Activation object; the config round-trips."""
    x = rand(2, 4, seed=4)
    expected = np.exp(x / 2.0) / np.exp(x / 2.0).sum(axis=1, keepdims=True)
    for layer in (Activation({"name": "softmax", "temperature": 2.0}),
                  Activation("softmax", temperature=2.0),
                  Activation(A.get("softmax", temperature=2.0))):
        again = round_trip(layer)
        assert again.get_config()["activation"] == {"class_name": "softmax",
                                                    "config": {"temperature": 2.0}}
        y, backprop = again.forward(backend.asarray(x, "float64"))
        assert_matches(y, expected, backend, "float64")
        g = rand(2, 4, seed=5)
        dx = backprop(backend.asarray(g, "float64"))
        ref = expected * (g - (g * expected).sum(axis=1, keepdims=True)) / 2.0
        assert_matches(dx, ref, backend, "float64")
    dense = Dense(4, 3, activation={"name": "softmax", "temperature": 0.5})
    assert round_trip(dense).activation == A.get("softmax", temperature=0.5)


@pytest.mark.parametrize("tau", [0.0, -1.0, float("inf"), float("nan"), "hot", True])
def test_softmax_temperature_must_be_positive(backend, tau):
    xb = backend.asarray(rand(2, 3), "float64")
    message = r"softmax temperature must be a finite number > 0, received temperature="
    with pytest.raises((ValueError, TypeError), match=message):
        A.softmax(xb, temperature=tau)
    with pytest.raises((ValueError, TypeError), match=message):
        A.get("softmax", temperature=tau)
    with pytest.raises((ValueError, TypeError), match=message):
        A.softmax_vjp(xb, xb, temperature=tau)
    with pytest.raises(TypeError, match="has no parameter 'temperature'"):
        A.get("log_softmax", temperature=2.0)
