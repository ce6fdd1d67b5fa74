"""Whole sequence models on every backend: finite differences through Embedding, a recurrent
layer or a Transformer block and the loss, with padded (masked) batches; padding changes
nothing that counts."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_parameter_gradients

import portanet as pn
from portanet import layers as L

IDS = np.asarray([[3, 1, 4, 0], [2, 5, 0, 0]])  # two sequences, right-padded with 0
LABELS = np.asarray([1, 0])


def models():
    return {
        "lstm": lambda: [L.Embedding(6, 3, mask_zero=True), L.LSTM(3, 2), L.Dense(2, 2)],
        "bigru": lambda: [L.Embedding(6, 3, mask_zero=True),
                          L.Bidirectional(L.GRU(3, 2), merge_mode="sum"), L.Dense(2, 2)],
        "transformer": lambda: [L.Embedding(6, 4, mask_zero=True), L.PositionalEmbedding(6, 4),
                                L.TransformerEncoderBlock(4, 2, 4, dropout=0.0),
                                L.GlobalAvgPool1D(), L.Dense(4, 2)],
    }


@pytest.mark.parametrize("kind", list(models()))
def test_whole_model_gradients_with_masks(backend, kind):
    model = pn.Sequential(models()[kind](), loss="softmax_cross_entropy", seed=0,
                          dtype="float64")
    x, y = backend.asarray(IDS), backend.asarray(LABELS)
    _, grads = model.value_and_gradients(x, y)
    grads = {k: backend.to_numpy(v) for k, v in grads.items()}
    params = {k: backend.to_numpy(v).copy() for k, v in model.parameters().items()}
    # padding id 0's embedding row never takes part: its gradient is exactly zero
    np.testing.assert_array_equal(grads["0.embeddings"][0], 0.0)

    def objective():
        value, _ = model.value_and_gradients(x, y)
        return float(backend.to_numpy(value))

    assert_parameter_gradients(
        grads, params,
        lambda name, p: model.set_parameters({name: backend.asarray(p, "float64")}),
        objective, 1e-6)


@pytest.mark.parametrize("kind", list(models()))
def test_padding_changes_nothing_that_counts(backend, kind):
    """Longer padding gives the same predictions (the mask hides the extra steps)."""
    model = pn.Sequential(models()[kind](), seed=0, dtype="float64")
    short = model.predict(backend.asarray(IDS))
    longer = model.predict(backend.asarray(np.pad(IDS, ((0, 0), (0, 2)))))
    np.testing.assert_allclose(backend.to_numpy(longer), backend.to_numpy(short), rtol=1e-12,
                               atol=1e-14)
