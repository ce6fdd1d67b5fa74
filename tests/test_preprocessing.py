"""pn.layers.Standardize on every backend: adapt's statistics and the forward pass against an
independent NumPy float64 reference, the backward pass by finite differences, agreement with
pn.data.StandardScaler, the checkpoint round trip and the errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend, numerical_gradient, rand, relative_error

import portanet as pn
from portanet import data
from portanet import layers as L


def _data(shape, seed=0):
    """Samples with a spread per feature, an offset, and one constant feature (the zero rule)."""
    x = rand(*shape, seed=seed, scale=3.0) + 5.0
    x.reshape(shape[0], -1)[:, 0] = 7.0  # the first feature never varies
    return x


def _reference(x, stats_shape):
    """mean, scale and (x - mean) / scale in float64 NumPy, written from the definition."""
    lead = x.ndim - len(stats_shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(stats_shape) if s == 1)
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True))
    scale = np.where(std < 1e-12, 1.0, std)  # the constant feature's std is exactly 0
    return mean.reshape(stats_shape), scale.reshape(stats_shape), (x - mean) / scale


CASES = [  # (data shape, statistics shape): features, pixels, channels, time-shared features
    ((6, 3), (3,)),
    ((5, 2, 3, 3), (2, 3, 3)),
    ((5, 2, 3, 3), (2, 1, 1)),
    ((4, 5, 2), (2,)),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, stats", CASES)
def test_adapt_and_forward_match_the_float64_reference(backend, dtype, shape, stats):
    x = _data(shape)
    mean, scale, expected = _reference(x, stats)
    layer = L.Standardize(stats).build(dtype=dtype)
    assert layer.adapt(backend.asarray(x, dtype)) is layer
    assert_matches(layer.buffers["mean"], mean, backend, dtype)
    assert_matches(layer.buffers["scale"], scale, backend, dtype)
    y, _ = layer.forward(backend.asarray(x, dtype))
    assert_matches(y, expected, backend, dtype)
    assert tuple(y.shape) == shape


def test_statistics_are_computed_in_float64_whatever_the_data(backend):
    """float32 data summed in float32 loses digits (1e4 + small spread); adapt does not."""
    x = (1e4 + rand(4000, 1, seed=3)).astype(np.float32)
    layer = L.Standardize(1).build(dtype="float64")
    layer.adapt(backend.asarray(x))  # float32 on the backend
    host = x.astype(np.float64)
    assert_matches(layer.buffers["mean"], host.mean(axis=0), backend, "float64", rtol=1e-13)
    assert_matches(layer.buffers["scale"], host.std(axis=0), backend, "float64", rtol=1e-12)


def test_unadapted_layer_is_the_identity(backend):
    x = backend.asarray(rand(3, 4), "float32")
    y, _ = L.Standardize(4).build(dtype="float32").forward(x)
    assert_matches(y, rand(3, 4), backend, "float32")


@pytest.mark.parametrize("shape, stats", CASES)
def test_input_gradient_by_finite_differences(backend, shape, stats):
    x = _data(shape, seed=1)
    layer = L.Standardize(stats).build(dtype="float64")
    layer.adapt(backend.asarray(_data(shape, seed=2), "float64"))
    y, backprop = layer.forward(backend.asarray(x, "float64"), training=True)
    assert tuple(y.shape) == shape
    r = rand(*shape, seed=4)
    dx = backprop(backend.asarray(r, "float64"))
    assert_on_backend(dx, backend, "float64")

    def loss(xn):
        return float(np.sum(pn.to_numpy(layer.forward(backend.asarray(xn, "float64"))[0]) * r))

    assert relative_error(pn.to_numpy(dx), numerical_gradient(loss, x)) < 1e-6
    assert layer.gradients == {} and layer.parameters == {}  # nothing here is trained


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_standard_scaler(backend, dtype):
    """The same numbers as pn.data.StandardScaler, also for a feature that varies by one ulp
    (below 10 machine epsilons: both give it scale 1)."""
    x = _data((8, 4)).astype(dtype)
    x[:, 1] = 1.0
    x[::2, 1] = np.nextafter(x.dtype.type(1.0), x.dtype.type(2.0))
    on_backend = backend.asarray(x)
    expected = pn.to_numpy(data.StandardScaler().fit(on_backend).transform(on_backend))
    layer = L.Standardize(4).build(dtype=dtype)
    y, _ = layer.adapt(on_backend).forward(backend.asarray(x))
    assert_matches(y, expected, backend, dtype)
    assert pn.to_numpy(layer.buffers["scale"])[1] == 1.0


def test_checkpoint_round_trip(backend, tmp_path):
    """A saved model keeps its statistics: the loaded model predicts the same on raw inputs."""
    x = _data((10, 3))
    model = pn.Sequential([L.Standardize(3), L.Dense(3, 2)], loss="mean_squared_error",
                          optimizer=pn.optimizers.SGD(0.1), seed=0, dtype="float64")
    model.layers[0].adapt(backend.asarray(x, "float64"))
    path = model.save(str(tmp_path / "m.safetensors"))
    loaded = pn.load(path, backend=backend.name, device=backend.device_spec)
    assert type(loaded.layers[0]) is L.Standardize and loaded.layers[0].shape == (3,)
    for key in ("mean", "scale"):
        np.testing.assert_array_equal(pn.to_numpy(loaded.layers[0].buffers[key]),
                                      pn.to_numpy(model.layers[0].buffers[key]))
    mean, scale, _ = _reference(x, (3,))
    assert_matches(loaded.layers[0].buffers["mean"], mean, backend, "float64")
    assert_matches(loaded.layers[0].buffers["scale"], scale, backend, "float64")
    assert_matches(loaded.predict(backend.asarray(x, "float64")),
                   pn.to_numpy(model.predict(backend.asarray(x, "float64"))), backend, "float64")
    assert L.deserialize(L.serialize(model.layers[0])).get_config() == {"shape": [3],
                                                                        "name": None}


def test_a_standalone_layer_builds_on_the_data(backend):
    layer = L.Standardize(2).adapt(backend.asarray(_data((4, 2)), "float64"))
    assert layer.dtype == "float64"
    assert_on_backend(layer.buffers["mean"], backend, "float64")


@pytest.mark.parametrize("bad, message", [
    (0, "positive int"), ((2, 0), "positive int"), ("3", "positive int"), ((), "positive int"),
])
def test_bad_shapes_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        L.Standardize(bad)


def test_bad_data_is_refused(backend):
    layer = L.Standardize(3).build(dtype="float32")
    with pytest.raises(ValueError, match=r"statistics of shape \(3,\).*received shape \(4, 2\)"):
        layer.adapt(backend.asarray(np.ones((4, 2)), "float32"))
    with pytest.raises(ValueError, match="received shape \\(3,\\)"):  # no sample axis
        layer.forward(backend.asarray(np.ones(3), "float32"))
    with pytest.raises(ValueError, match="at least one sample"):
        layer.adapt(backend.asarray(np.ones((0, 3)), "float32"))
    nan = np.ones((4, 3))
    nan[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer.adapt(backend.asarray(nan, "float32"))
    with pytest.raises(TypeError, match="received list. Convert it with numpy.asarray"):
        layer.adapt([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="float32 parameters, received input of dtype float64"):
        layer.forward(backend.asarray(np.ones((2, 3)), "float64"))
