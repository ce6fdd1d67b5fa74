"""The mask protocol: a (N, T) boolean mask, True at real steps, travels through a Chain to the
layers that take one; ops.sequence_mask builds it from lengths; integer inputs stay ids."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet import layers as L
from portanet.ops import sequence_mask


class MakesMask(L.Layer):
    """Test double of Embedding(mask_zero=True): passes x on, mask = (x[..., 0] != 0)."""

    creates_mask = True

    def forward(self, x, training=None):
        return x, lambda dy: dy

    def compute_mask(self, x, mask):
        return x[..., 0] != 0.0


class Records(L.Layer):
    """Records the mask it receives; zeroes masked steps (an explicit, checkable effect)."""

    supports_masking = True

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def forward(self, x, training=None, mask=None):
        self.seen.append(None if mask is None else pn.to_numpy(mask).copy())
        if mask is None:
            return x, lambda dy: dy
        xp = pn.backend.get_backend().xp
        m = xp.astype(mask, x.dtype)[..., None]
        return x * m, lambda dy: dy * m


class DropsTime(L.Layer):
    supports_masking = True

    def forward(self, x, training=None, mask=None):
        xp = pn.backend.get_backend().xp
        shape = tuple(x.shape)
        return xp.sum(x, axis=1), lambda dy: xp.broadcast_to(dy[:, None, :], shape)

    def compute_mask(self, x, mask):
        return None


def test_sequence_mask(backend):
    lengths = backend.asarray(np.asarray([0, 2, 4]))
    mask = sequence_mask(lengths, 4)
    assert_on_backend(mask, backend)
    assert mask.dtype == backend.xp.bool
    expected = np.arange(4)[None, :] < np.asarray([0, 2, 4])[:, None]
    np.testing.assert_array_equal(pn.to_numpy(mask), expected)
    with pytest.raises(TypeError, match=r"integer lengths of shape \(N,\), received dtype"):
        sequence_mask(backend.asarray(np.ones(3), "float32"), 4)
    with pytest.raises(ValueError, match="maxlen must be a non-negative int, received -1"):
        sequence_mask(lengths, -1)


def test_mask_travels_through_a_chain(backend):
    x = np.ones((2, 3, 2))
    x[0, 2] = 0.0  # sample 0: last step is padding
    seen = []
    chain = L.Chain([MakesMask(), L.Dense(2, 2), Records(seen), DropsTime(), Records(seen)])
    chain.build(seed=0, dtype="float64")
    y, backprop = chain.forward(backend.asarray(x, "float64"))
    expected = np.asarray([[True, True, False], [True, True, True]])
    np.testing.assert_array_equal(seen[0], expected)  # through Dense unchanged
    assert seen[1] is None  # DropsTime removed the time axis and the mask with it
    dx = backprop(backend.asarray(np.ones(tuple(y.shape)), "float64"))
    assert_on_backend(dx, backend, "float64")
    np.testing.assert_array_equal(chain.compute_mask(backend.asarray(x, "float64"), None), None)


def test_explicit_mask_and_nested_chains(backend):
    x = backend.asarray(np.ones((2, 3, 2)), "float64")
    mask = sequence_mask(backend.asarray(np.asarray([1, 3])), 3)
    seen = []
    inner = L.Chain([L.Dense(2, 2), Records(seen)])
    model = pn.Sequential([inner, Records(seen)], seed=0, dtype="float64")
    y, _ = model.forward(x, mask=mask)
    np.testing.assert_array_equal(seen[0], pn.to_numpy(mask))
    np.testing.assert_array_equal(seen[1], pn.to_numpy(mask))
    np.testing.assert_array_equal(pn.to_numpy(y)[0, 1:], 0.0)
    # a mask maker after the first layer of a nested chain gets its own input
    late = L.Chain([L.Dense(2, 2), MakesMask()]).build(seed=0, dtype="float64")
    z = np.ones((1, 2, 2))
    first, _ = late.layers[0].forward(backend.asarray(z, "float64"))
    np.testing.assert_array_equal(pn.to_numpy(late.compute_mask(backend.asarray(z, "float64"),
                                                                None)),
                                  pn.to_numpy(first)[..., 0] != 0.0)
    # Flatten ends the time axis: no mask after it
    assert L.Flatten().compute_mask(x, mask) is None
    assert L.Dense(2, 2).compute_mask(x, mask) is mask


class TakesIds(L.Layer):
    integer_input = True

    def __init__(self):
        super().__init__()

    def forward(self, x, training=None):
        xp = pn.backend.get_backend().xp
        return xp.astype(x, xp.float32)[..., None], lambda dy, input_gradient=True: None


def test_integer_inputs_stay_ids_for_an_id_model(backend):
    from portanet.training import to_model

    m = pn.Sequential([TakesIds(), L.Dense(1, 1)], seed=0)
    ids = to_model(m, np.asarray([[1, 2], [3, 4]], dtype=np.int32), "x")
    assert ids.dtype == backend.xp.int64
    with pytest.raises(TypeError, match="must hold integer token ids for a model whose first "
                                        "layer is TakesIds, received dtype float"):
        to_model(m, np.ones((2, 2)), "x")
    plain = pn.Sequential([L.Dense(2, 1)], seed=0)
    assert to_model(plain, np.ones((2, 2), dtype=np.int64), "x").dtype == backend.xp.float32
