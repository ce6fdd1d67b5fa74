"""portanet.io format versions: version 2 adds the random state; version-1 files still load.

``tests/fixtures/v1_*.safetensors`` were written by portanet 0.1.0 with format version 1
(before the "random" entry existed; see tests/fixtures/README.md), and
``v1_expected.json`` holds their values as plain JSON lists, written at the same time from the
model itself, so the expected values do not come from the reader under test.
``v2_model.safetensors`` and ``v2_expected.json`` were made the same way with format version 2,
before every kind wrote one config shape: its architecture holds the three older shapes.
"""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import safetensors
import safetensors.numpy

import portanet as pn
from portanet import activations, io, layers, losses, optimizers, regularizers, schedules
from portanet.model import Sequential

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "v1_expected.json").read_text())


def _v1_architecture():
    """The fixture's model, built in code (seed 5: weights unlike the file's)."""
    return Sequential([layers.Dense(2, 4, activation="relu"), layers.BatchNorm(4),
                       layers.Dense(4, 2)], loss="softmax_cross_entropy",
                      optimizer=optimizers.Adam(0.01), seed=5)


def _assert_values(arrays, expected):
    assert list(arrays) == list(expected)
    for name, value in expected.items():
        host = pn.to_numpy(arrays[name])
        assert host.dtype == np.float32, name
        np.testing.assert_array_equal(host, np.asarray(value, dtype=np.float32), err_msg=name)


# ---------------------------------------------------------------------------------------------
# Version 1 files
# ---------------------------------------------------------------------------------------------
def test_the_fixtures_are_version_1_files():
    for name in ("v1_model.safetensors", "v1_weights.safetensors"):
        with safetensors.safe_open(FIXTURES / name, "numpy") as f:
            metadata = f.metadata()
        assert metadata["format_version"] == "1" and "random" not in metadata


def test_a_version_1_model_loads_with_the_same_values(backend):
    ckpt = io.read_checkpoint(FIXTURES / "v1_model.safetensors")
    assert ckpt.kind == "model" and ckpt.random is None and ckpt.epoch == EXPECTED["epoch"]
    model = io.load(FIXTURES / "v1_model.safetensors", backend=backend.name,
                    device=backend.device)
    assert model.epoch == EXPECTED["epoch"]
    _assert_values(model.parameters(), EXPECTED["parameters"])
    _assert_values(model.buffers(), EXPECTED["buffers"])
    for p in model.parameters().values():
        assert pn.device_of(p) == pn.device_of(backend.asarray([0.0]))
    state = model.optimizer.state_dict()
    assert state["step"] == EXPECTED["step"]
    assert list(state["slots"]) == list(EXPECTED["slots"])
    for name, slots in EXPECTED["slots"].items():
        _assert_values(state["slots"][name], slots)


def test_a_version_1_weights_file_loads_into_a_model_built_in_code(backend):
    with pn.use_backend(backend.name, backend.device):
        model = _v1_architecture()
        model.load_weights(FIXTURES / "v1_weights.safetensors")
    _assert_values(model.parameters(), EXPECTED["parameters"])
    _assert_values(model.buffers(), EXPECTED["buffers"])


def test_a_version_1_file_saved_again_is_the_current_version(tmp_path):
    with pn.use_backend("numpy"):
        model = io.load(FIXTURES / "v1_model.safetensors")
        path = model.save(tmp_path / "again.safetensors")
    with safetensors.safe_open(path, "numpy") as f:
        assert f.metadata()["format_version"] == str(io.FORMAT_VERSION) == "3"
    _assert_values(io.read_checkpoint(path).parameters, EXPECTED["parameters"])


# ---------------------------------------------------------------------------------------------
# Version 2: the random state
# ---------------------------------------------------------------------------------------------
def _random_state():
    """A hand-made random state with every kind of leaf the format allows."""
    return {
        "layers": {"2.generator": {"kind": "numpy", "seed": 7,
                                   "state": np.arange(24, dtype=np.uint8)},
                   "5.generator": {"kind": "jax", "seed": 2**70 + 3,  # beyond int64
                                   "state": [np.full(3, 255, dtype=np.uint8),
                                             np.zeros((2, 0), dtype=np.uint8)]}},
        "fit": {"seed": None, "augment": None, "flags": [True, False], "p": 0.25,
                "nan": math.nan},
    }


def _checkpoint(random):
    with pn.use_backend("numpy"):
        model = Sequential([layers.Dense(2, 3)], optimizer="adam", seed=0)
    params = {k: pn.to_numpy(v) for k, v in model.parameters().items()}
    return io.Checkpoint("model", params, {}, model.get_config(), None, 4, random=random)


def _assert_same_tree(got, want, where="random"):
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == np.uint8, where
        np.testing.assert_array_equal(got, want, err_msg=where)
        assert got.shape == want.shape, where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), where
        for key in want:
            _assert_same_tree(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_same_tree(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and math.isnan(want):
        assert isinstance(got, float) and math.isnan(got), where
    else:
        assert got == want and type(got) is type(want), where


def test_the_random_state_round_trips(tmp_path):
    want = _random_state()
    path = io.write_checkpoint(tmp_path / "r.safetensors", _checkpoint(want))
    stored = safetensors.numpy.load_file(path)
    assert sorted(k for k in stored if k.startswith("random/")) == [
        "random/0", "random/1", "random/2"]
    ckpt = io.read_checkpoint(path)
    _assert_same_tree(ckpt.random, want)
    assert io.read_checkpoint(io.write_checkpoint(tmp_path / "none.safetensors",
                                                  _checkpoint(None))).random is None


def test_the_random_state_must_hold_uint8_arrays_and_plain_values(tmp_path):
    for bad, message in (
            ({"g": np.arange(3, dtype=np.int64)}, r"random state entry random\.g has dtype "
                                                  r"int64; checkpoints hold \['uint8'\]"),
            ({"g": np.zeros(2, dtype=np.float32)}, "has dtype float32"),
            ({"g": object()}, r"random state entry random\.g is a object"),
            ({1: np.zeros(2, dtype=np.uint8)}, "random state keys must be strings"),
            ([np.zeros(2, dtype=np.uint8)], "the random state must be a dict or None")):
        with pytest.raises(TypeError, match=message):
            io.write_checkpoint(tmp_path / "bad.safetensors", _checkpoint(bad))
    assert not (tmp_path / "bad.safetensors").exists()


def _forge(path, out, edit):
    """``path`` with ``edit(tensors, metadata)`` applied and the checksum recomputed."""
    with safetensors.safe_open(path, "numpy") as f:
        metadata = dict(f.metadata())
    tensors = safetensors.numpy.load_file(path)
    edit(tensors, metadata)
    metadata["checksum"] = io._digest(metadata, tensors)
    safetensors.numpy.save_file(tensors, str(out), metadata=metadata)
    return out


def _edit_random_json(change):
    def edit(tensors, metadata):
        metadata["random"] = change(metadata["random"])
    return edit


def _retype_random(tensors, metadata):
    tensors["random/1"] = tensors["random/1"].astype(np.int64)


def _extra_random(tensors, metadata):
    tensors["random/9"] = np.zeros(2, dtype=np.uint8)


def _random_in_weights(tensors, metadata):
    for key in ("architecture", "optimizer", "epoch", "random"):
        metadata.pop(key)
    metadata["kind"] = "weights"


def _random_in_version_1(tensors, metadata):
    metadata.pop("random")
    metadata["format_version"] = "1"


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(_edit_random_json(lambda s: s.replace('"random/1"', '"random/0"')),
                 "the random state refers to tensor 'random/0' twice", id="referenced-twice"),
    pytest.param(_edit_random_json(lambda s: s.replace('"random/1"', '"random/7"')),
                 "the random state refers to a tensor 'random/7' that is not in the file",
                 id="missing"),
    pytest.param(_edit_random_json(lambda s: s.replace('"random/1"', '"parameters/0.bias"')),
                 "the random state refers to a tensor 'parameters/0.bias' that is not",
                 id="another-group"),
    pytest.param(_retype_random, r"tensor 'random/1' is stored as int64, but random-state "
                                 r"tensors are stored as uint8", id="int64-tensor"),
    pytest.param(_extra_random, r"random tensors \['random/9'\] are not referenced by the "
                                "random state", id="unreferenced"),
    pytest.param(_edit_random_json(lambda s: "null"), r"random tensors \['random/0', "
                                                      r"'random/1', 'random/2'\] are not "
                                                      "referenced", id="null-with-tensors"),
    pytest.param(_edit_random_json(lambda s: '"seed"'), "the random entry must be a JSON "
                                                        "object or null", id="not-an-object"),
    pytest.param(_edit_random_json(lambda s: s.replace('"nan"', '"NaN!"')),
                 "bad float 'NaN!' in the random state", id="bad-float"),
    pytest.param(_random_in_weights, "a weights-only file holds random tensor 'random/0'",
                 id="in-a-weights-file"),
    pytest.param(_random_in_version_1, "a version-1 file holds random-state tensor 'random/0'",
                 id="in-a-version-1-file"),
])
def test_a_forged_random_state_is_refused(tmp_path, edit, message):
    good = io.write_checkpoint(tmp_path / "good.safetensors", _checkpoint(_random_state()))
    forged = _forge(good, tmp_path / "forged.safetensors", edit)
    with pytest.raises(io.CheckpointError, match=f"not a valid portanet checkpoint: {message}"):
        io.read_checkpoint(forged)


def test_save_stores_the_models_random_state_and_load_hands_it_back(tmp_path, monkeypatch):
    """save calls model.random_state() and load model.load_random_state(state), when the
    model has them (patched here, so the test does not depend on what Sequential draws)."""
    loaded = []
    monkeypatch.setattr(Sequential, "random_state", lambda self: _random_state(), raising=False)
    monkeypatch.setattr(Sequential, "load_random_state", lambda self, s: loaded.append(s),
                        raising=False)
    with pn.use_backend("numpy"):
        path = Sequential([layers.Dense(2, 3)], seed=0).save(tmp_path / "m.safetensors")
        _assert_same_tree(io.read_checkpoint(path).random, _random_state())
        io.load(path)
        (state,) = loaded
        _assert_same_tree(state, _random_state())

        def refuse(self, state):
            raise ValueError("this model has no generator '5.generator'")

        monkeypatch.setattr(Sequential, "load_random_state", refuse)
        with pytest.raises(io.CheckpointError, match="its random state does not fit the model: "
                                                     "this model has no generator"):
            io.load(path)
        # a model without the hooks saves null, and loads without calling anything
        monkeypatch.delattr(Sequential, "random_state")
        path = Sequential([layers.Dense(2, 3)], seed=0).save(tmp_path / "plain.safetensors")
        assert io.read_checkpoint(path).random is None
        io.load(path)


# ---------------------------------------------------------------------------------------------
# Version 2 files: the three config shapes of that time (tests/fixtures/README.md)
# ---------------------------------------------------------------------------------------------
EXPECTED_V2 = json.loads((FIXTURES / "v2_expected.json").read_text())


def _v2_architecture() -> dict:
    with safetensors.safe_open(FIXTURES / "v2_model.safetensors", "numpy") as f:
        metadata = f.metadata()
    assert metadata["format_version"] == "2" and "random" in metadata
    return json.loads(metadata["architecture"])


def test_the_v2_fixture_holds_the_three_old_config_shapes():
    """What the loading test below reads: if the file changed, that test would prove less."""
    arch = _v2_architecture()
    assert arch["loss"] == {"name": "SoftmaxCrossEntropy", "reduction": "mean",
                            "label_smoothing": 0.1, "class_weights": None}
    opt = arch["optimizer"]
    assert opt["class_name"] == "Adam" and "config" not in opt
    assert opt["learning_rate"]["class_name"] == "LinearWarmup"
    assert opt["learning_rate"]["schedule"]["class_name"] == "ExponentialDecay"
    dense, _, _, leaky, _ = arch["layers"]
    assert dense["config"]["activation"] == "relu"
    assert dense["config"]["kernel_regularizer"] == {"class_name": "L2", "config": {"l2": 0.01}}
    assert leaky["config"]["activation"] == {"name": "leaky_relu", "alpha": 0.2}


def test_a_version_2_model_loads_with_the_same_values(backend):
    path = FIXTURES / "v2_model.safetensors"
    assert io.read_checkpoint(path).epoch == EXPECTED_V2["epoch"]
    model = io.load(path, backend=backend.name, device=backend.device)
    assert model.epoch == EXPECTED_V2["epoch"]
    _assert_values(model.parameters(), EXPECTED_V2["parameters"])
    _assert_values(model.buffers(), EXPECTED_V2["buffers"])
    for p in model.parameters().values():
        assert pn.device_of(p) == pn.device_of(backend.asarray([0.0]))
    state = model.optimizer.state_dict()
    assert state["step"] == EXPECTED_V2["step"]
    assert list(state["slots"]) == list(EXPECTED_V2["slots"])
    for name, slots in EXPECTED_V2["slots"].items():
        _assert_values(state["slots"][name], slots)
    # Each old config shape became the object it described.
    assert model.loss == losses.SoftmaxCrossEntropy(label_smoothing=0.1)
    lr = model.optimizer.learning_rate
    assert type(model.optimizer) is optimizers.Adam
    assert type(lr) is schedules.LinearWarmup and type(lr.schedule) is schedules.ExponentialDecay
    assert [lr(t) for t in range(8)] == EXPECTED_V2["learning_rates"]
    assert model.layers[0].activation.name == "relu"
    assert model.layers[0].regularizers["kernel"] == regularizers.L2(0.01)
    assert model.layers[3].activation == activations.get("leaky_relu", alpha=0.2)
    # The same function of the input (dropout is off outside training).
    x = backend.asarray(np.asarray(EXPECTED_V2["predictions"]["x"], dtype=np.float32))
    np.testing.assert_allclose(pn.to_numpy(model.predict(x)),
                               np.asarray(EXPECTED_V2["predictions"]["y"], dtype=np.float32),
                               rtol=1e-5, atol=1e-6)
    # The dropout generator continues exactly where its kind is this backend's (else it
    # restarts from the saved seed: random.Generator.load_state_dict).
    (name, want), = EXPECTED_V2["random_layers"].items()
    got = model.random_state()["layers"][name]
    assert got["seed"] == want["seed"]
    if got["kind"] == want["kind"]:
        assert np.asarray(got["state"]).tolist() == want["state"]
