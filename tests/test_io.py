"""portanet.io: checkpoints round-trip between backends, and hostile files are refused.

The valid-file tests save on each backend and load on NumPy and back; a model restored with
its optimizer state takes exactly the same next steps (float64) as the original. The invalid
files are made byte by byte: truncated at every kind of boundary, every header byte and a
sample of data bytes bit-flipped, an oversized header length (a "header-size bomb"), trailing
bytes, duplicate names, unknown entries, and well-formed files whose contents contradict the
architecture (written with a correct checksum, so portanet's own checks are what refuse them).
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc

import numpy as np
import pytest
import safetensors.numpy

import portanet as pn
from portanet import data, io, layers, optimizers
from portanet.layers import base
from portanet.model import Sequential

X, Y = data.make_spiral(n_samples=40, seed=0)
IMAGES = np.random.default_rng(0).normal(size=(8, 1, 6, 6))


def _model(dtype="float32", seed=0):
    return Sequential([layers.Dense(2, 16, activation="relu"), layers.BatchNorm(16),
                       layers.Dense(16, 3)],
                      loss="softmax_cross_entropy", optimizer=optimizers.Adam(0.01), seed=seed,
                      dtype=dtype)


def _params(model):
    return {k: pn.to_numpy(v) for k, v in model.parameters().items()}


def _buffers(model):
    return {k: pn.to_numpy(v) for k, v in model.buffers().items()}


def _assert_same_model(a, b):
    for get in (_params, _buffers):
        pa, pb = get(a), get(b)
        assert list(pa) == list(pb)
        for name in pa:
            np.testing.assert_array_equal(pa[name], pb[name], err_msg=name)


def test_save_and_load_across_backends(backend, tmp_path):
    model = _model()
    model.fit(X, Y, epochs=2, batch_size=20, verbose=0, seed=0)
    path = model.save(tmp_path / "m.safetensors")
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temp file left
    on_numpy = pn.load(path, backend="numpy") if hasattr(pn, "load") else io.load(path,
                                                                                   "numpy")
    _assert_same_model(model, on_numpy)
    assert on_numpy.epoch == 2 and on_numpy.optimizer.iterations == 4
    # ... and back onto the backend it came from, on the same device
    back = io.load(path, backend=backend.name, device=backend.device)
    _assert_same_model(model, back)
    for p in back.parameters().values():
        assert pn.device_of(p) == pn.device_of(model.parameters()["0.kernel"])
    np.testing.assert_allclose(pn.to_numpy(back.predict_proba(X)),
                               pn.to_numpy(model.predict_proba(X)), rtol=1e-6)


def test_resumed_training_is_identical(backend, tmp_path):
    """Save mid-training (float64), load, continue: the same steps as never stopping."""
    model, never_stopped = _model("float64"), _model("float64")
    never_stopped.fit(X, Y, epochs=3, batch_size=20, verbose=0, seed=0, shuffle="host")
    model.fit(X, Y, epochs=1, batch_size=20, verbose=0, seed=0, shuffle="host")
    model.save(tmp_path / "mid.safetensors")
    restored = io.load(tmp_path / "mid.safetensors", backend=backend.name,
                       device=backend.device)
    for m in (model, restored):
        m.fit(X, Y, epochs=3, initial_epoch=restored.epoch, batch_size=20, verbose=0, seed=0,
              shuffle="host")
    _assert_same_model(model, restored)
    for name, value in _params(never_stopped).items():
        np.testing.assert_allclose(_params(restored)[name], value, rtol=1e-12, atol=1e-14)
    state_a, state_b = model.optimizer.state_dict(), restored.optimizer.state_dict()
    assert state_a["step"] == state_b["step"] == 6
    for name, slots in state_a["slots"].items():
        for slot, value in slots.items():
            np.testing.assert_array_equal(pn.to_numpy(value),
                                          pn.to_numpy(state_b["slots"][name][slot]))


def test_weights_only_round_trip(backend, tmp_path):
    model = _model()
    model.fit(X, Y, epochs=1, batch_size=20, verbose=0, seed=0)
    model.save_weights(tmp_path / "w.safetensors")
    fresh = _model(seed=5)
    fresh.load_weights(tmp_path / "w.safetensors")
    _assert_same_model(model, fresh)
    ckpt = io.read_checkpoint(tmp_path / "w.safetensors")
    assert ckpt.kind == "weights" and ckpt.architecture is None and ckpt.optimizer is None
    with pytest.raises(io.CheckpointError, match="holds weights only"):
        io.load(tmp_path / "w.safetensors")
    # a float64 model takes float32 weights (cast), but not weights of other shapes
    wide = _model("float64")
    wide.load_weights(tmp_path / "w.safetensors")
    assert wide.parameters()["0.kernel"].dtype == backend.dtype("float64")
    other = Sequential([layers.Dense(2, 9), layers.Dense(9, 3)], seed=0)  # no BatchNorm
    with pytest.raises(io.CheckpointError, match=r"does not fit this model: its parameters do "
                                                 r"not match the model: missing \['1.bias', "
                                                 r"'1.kernel'\], unknown \['1.beta'"):
        other.load_weights(tmp_path / "w.safetensors")


def test_cnn_round_trip(tmp_path):
    model = Sequential([layers.Conv2D(1, 4, 3, padding="same", activation="relu"),
                        layers.MaxPool2D(2), layers.Flatten(), layers.Dense(36, 2)],
                       loss="softmax_cross_entropy", optimizer="sgd", seed=1)
    path = model.save(tmp_path / "cnn.safetensors", epoch=7)
    restored = io.load(path, backend="array_api_strict", device="device1")
    assert restored.epoch == 7
    np.testing.assert_allclose(pn.to_numpy(restored.predict(pn.asarray(
        IMAGES, dtype="float32", backend="array_api_strict", device="device1"))),
        pn.to_numpy(model.predict(IMAGES.astype(np.float32))), rtol=1e-6)


def test_file_layout_is_plain_safetensors(tmp_path):
    model = _model()
    path = model.save(tmp_path / "m.safetensors")
    raw = safetensors.numpy.load_file(path)  # any safetensors reader can open it
    assert set(raw) >= {"parameters/0.kernel", "parameters/2.bias", "buffers/1.running_mean"}
    with safetensors.safe_open(path, "numpy") as f:
        meta = f.metadata()
    assert meta["format"] == io.FORMAT and meta["kind"] == "model"
    assert json.loads(meta["architecture"])["layers"][0]["class_name"] == "Dense"
    assert meta["checksum"].startswith("sha256:")


def test_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / "m.safetensors"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.numpy, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _model(seed=9).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        io.save_weights(model, tmp_path / "missing" / "m.safetensors")


# ---------------------------------------------------------------------------------------------
# Invalid and hostile files
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    with pn.use_backend("numpy"):
        model = _model()
        model.fit(X, Y, epochs=1, batch_size=20, verbose=0, seed=0)
        path = tmp_path_factory.mktemp("ckpt") / "good.safetensors"
        model.save(path)
    return path.read_bytes()


def _write(tmp_path, raw: bytes, name="bad.safetensors"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def _header(raw: bytes) -> tuple[int, dict]:
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n])


def _rebuild(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def test_good_file_loads(good_file, tmp_path):
    assert io.load(_write(tmp_path, good_file)).epoch == 1


def test_truncated_files(good_file, tmp_path):
    n, _ = _header(good_file)
    cuts = [0, 4, 7, 8, 9, 8 + n // 2, 8 + n - 1, 8 + n, 8 + n + 1, len(good_file) - 1]
    for cut in cuts:
        with pytest.raises(io.CheckpointError, match="not a valid portanet checkpoint: .*"
                                                     "(truncated|incomplete|8-byte|too small)"):
            io.read_checkpoint(_write(tmp_path, good_file[:cut]))


def test_trailing_bytes(good_file, tmp_path):
    n, _ = _header(good_file)
    with pytest.raises(io.CheckpointError, match=f"has {len(good_file) + 1:,} bytes but its "
                                                 f"header accounts for {len(good_file):,} "
                                                 rf"\(8 \+ {n:,} header \+ "
                                                 rf"{len(good_file) - 8 - n:,} data\); it has 1 "
                                                 "trailing byte after the data"):
        io.read_checkpoint(_write(tmp_path, good_file + b"\0"))


def test_header_size_bombs(good_file, tmp_path):
    body = good_file[8:]
    for claimed in (2**64 - 1, 2**40, 100_000_001, io.MAX_HEADER_BYTES + 1):
        with pytest.raises(io.CheckpointError, match=f"header claims {claimed:,} bytes, more "
                                                     "than portanet's limit"):
            io.read_checkpoint(_write(tmp_path, struct.pack("<Q", claimed) + body))
    # a header that claims more than the file holds, under the limit
    with pytest.raises(io.CheckpointError, match="the file is truncated"):
        io.read_checkpoint(_write(tmp_path, struct.pack("<Q", 10_000_000) + body))
    # an actually large (padded) header passes the length check but is refused by a lower limit
    n, header = _header(good_file)
    padded = json.dumps(header).encode() + b" " * 3_000_000
    big = struct.pack("<Q", len(padded)) + padded + good_file[8 + n:]
    with pytest.raises(io.CheckpointError, match="more than portanet's limit of 1,000,000"):
        io.read_checkpoint(_write(tmp_path, big), max_header_bytes=1_000_000)


def test_bit_flips_anywhere_are_refused(good_file, tmp_path):
    """A flipped bit anywhere is refused: in the length field and the header by safetensors'
    JSON and offset checks or portanet's metadata checks; in data bytes and metadata values by
    the checksum. Every byte of the length field and of the header (~4,000), one random bit
    each, and 150 random data bytes."""
    n, _ = _header(good_file)
    rng = np.random.default_rng(0)
    positions = list(range(8 + n)) + rng.choice(np.arange(8 + n, len(good_file)), size=150,
                                                 replace=False).tolist()
    path = tmp_path / "flip.safetensors"
    for pos in positions:
        flipped = bytearray(good_file)
        flipped[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(flipped))
        with pytest.raises(io.CheckpointError, match="not a valid portanet checkpoint"):
            io.read_checkpoint(path)


def test_data_bit_flip_names_the_checksum(good_file, tmp_path):
    flipped = bytearray(good_file)
    flipped[-3] ^= 0x10
    with pytest.raises(io.CheckpointError, match="checksum does not match.*flipped bit"):
        io.read_checkpoint(_write(tmp_path, bytes(flipped)))


def test_not_portanet_and_garbage(tmp_path):
    plain = safetensors.numpy.save({"w": np.zeros(3, dtype=np.float32)})
    with pytest.raises(io.CheckpointError, match="without portanet's metadata"):
        io.read_checkpoint(_write(tmp_path, plain))
    html = b"<html><body>404 Not Found</body></html>"
    with pytest.raises(io.CheckpointError, match="not a valid portanet checkpoint"):
        io.read_checkpoint(_write(tmp_path, html))
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        io.read_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(io.CheckpointError, match="not a regular file"):
        io.read_checkpoint(tmp_path)


def test_duplicate_names_in_header(good_file, tmp_path):
    n, header = _header(good_file)
    text = json.dumps(header)
    name = '"parameters/0.bias": '
    entry_start = text.index(name)
    entry_end = text.index("}", entry_start) + 1
    duplicated = text[:entry_end] + ", " + text[entry_start:entry_end] + text[entry_end:]
    raw = struct.pack("<Q", len(duplicated)) + duplicated.encode() + good_file[8 + n:]
    with pytest.raises(io.CheckpointError, match="not a valid portanet checkpoint"):
        io.read_checkpoint(_write(tmp_path, raw))


def test_offsets_outside_the_file_or_overlapping(good_file, tmp_path):
    n, header = _header(good_file)
    body = good_file[8 + n:]
    name = next(k for k in header if k != "__metadata__")
    size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
    for offsets, message in (
            ([0, len(body) + 8], r"its header accounts for .*it is truncated \(8 bytes of data "
                                 r"missing\)"),  # past the end: refused before reading data
            ([4, 4 + size], "safetensors rejected it"),  # overlapping: safetensors' own check
            ([8, 4], r"data_offsets \[8, 4\]; a safetensors entry has \[begin, end\]"),
            ([0, "12"], "data_offsets"), (None, "data_offsets None")):
        bad = json.loads(json.dumps(header))
        bad[name]["data_offsets"] = offsets
        with pytest.raises(io.CheckpointError, match=message):
            io.read_checkpoint(_write(tmp_path, _rebuild(bad, body)))
    bad = json.loads(json.dumps(header))
    bad[name]["dtype"] = "Q99"
    with pytest.raises(io.CheckpointError, match=f"tensor '{name}' has dtype 'Q99'; portanet "
                                                 "reads F16, F32"):
        io.read_checkpoint(_write(tmp_path, _rebuild(bad, body)))


def _forged(tmp_path, edit) -> str:
    """A file with consistent bytes and a correct checksum whose contents ``edit`` changed."""
    with pn.use_backend("numpy"):
        model = _model()
    ckpt = io.Checkpoint("model", _params(model), _buffers(model), model.get_config(),
                         {"config": model.optimizer.get_config(),
                          "state": model.optimizer.state_dict() | {"config": None}}, 3)
    ckpt.optimizer["state"].pop("config")
    edit(ckpt)
    return io.write_checkpoint(tmp_path / "forged.safetensors", ckpt)


def test_contents_that_contradict_the_architecture(tmp_path):
    def wrong_shape(c):
        c.parameters["0.kernel"] = np.zeros((3, 16), dtype=np.float32)

    def missing(c):
        del c.parameters["2.bias"]

    def unknown(c):
        c.parameters["9.kernel"] = np.zeros(2, dtype=np.float32)

    def hostile_class(c):
        c.architecture["layers"][0]["class_name"] = "os.system"

    def bad_config(c):
        c.architecture["layers"][0]["config"]["in_features"] = -4

    def allocation_bomb(c):  # 10^12 parameters declared; the file holds a few floats
        c.architecture["layers"][0]["config"]["out_features"] = 10**6
        c.architecture["layers"][1]["config"]["num_features"] = 10**6
        c.architecture["layers"][2]["config"]["in_features"] = 10**6

    cases = [(wrong_shape, r"parameter '0.kernel' has shape \(3, 16\) in the file but "
                           r"\(2, 16\)"),
             (missing, r"missing \['2.bias'\]"),
             (unknown, r"unknown \['9.kernel'\]"),
             (hostile_class, "architecture cannot be built: layer '0': unknown layer class "
                             "'os.system'"),
             (bad_config, "architecture cannot be built"),
             (allocation_bomb, r"parameter '0.kernel' has shape \(2, 16\) in the file but "
                               r"\(2, 1000000\)")]
    for edit, message in cases:
        with pytest.raises(io.CheckpointError, match=message):
            io.load(_forged(tmp_path, edit))


def test_metadata_entries_are_validated(good_file, tmp_path):
    n, header = _header(good_file)
    body = good_file[8 + n:]

    def variant(change):
        bad = json.loads(json.dumps(header))
        change(bad["__metadata__"])
        meta = bad["__metadata__"]
        tensors = safetensors.numpy.load(good_file)
        if "checksum" in meta:  # recompute, so only the targeted check can fail
            meta["checksum"] = io._digest(meta, tensors)
        return _write(tmp_path, _rebuild(bad, body))

    cases = [
        (lambda m: m.update(extra="1"), r"unknown \['extra'\]"),
        (lambda m: m.pop("epoch"), r"missing \['epoch'\]"),
        (lambda m: m.update(format_version=str(io.FORMAT_VERSION + 1)), "newer than"),
        (lambda m: m.update(format_version="0"), "format_version 0 is not a known version"),
        # version 1 has no "random" entry, version 2 needs one
        (lambda m: m.update(format_version="1"), r"version-1 model checkpoint's: missing \[\], "
                                                 r"unknown \['random'\]"),
        (lambda m: m.pop("random"), r"version-3 model checkpoint's: missing \['random'\]"),
        (lambda m: m.update(random="[1, 2]"), "the random entry must be a JSON object or null"),
        (lambda m: m.update(format_version="x"), "format_version 'x' is not an integer"),
        (lambda m: m.update(kind="pickle"), "kind 'pickle' is neither"),
        (lambda m: m.update(architecture="{not json"), "'architecture' is not valid JSON"),
        (lambda m: m.update(epoch="-3"), "epoch must be an int >= 0"),
        (lambda m: m.update(parameters='["0.kernel"]'), "parameters listed in the metadata"),
        (lambda m: m.update(optimizer=m["optimizer"].replace('"optimizer/0"',
                                                              '"optimizer/99"')),
         "refers to a tensor 'optimizer/99' that is not in the file"),
        (lambda m: m.update(architecture='{"layers": NaN}'), "non-standard JSON constant"),
        (lambda m: m.update(optimizer='{"config": null, "state": ' + '{"x": ' * 100_000 + "0"
                            + "}" * 100_001), "'optimizer' is not valid JSON"),
    ]
    for change, message in cases:
        with pytest.raises(io.CheckpointError, match=message):
            io.load(variant(change))


def test_unknown_tensor_entry(good_file, tmp_path):
    tensors = safetensors.numpy.load(good_file)
    with safetensors.safe_open(_write(tmp_path, good_file), "numpy") as f:
        meta = dict(f.metadata())
    tensors["evil/payload"] = np.zeros(4, dtype=np.uint8)
    meta["checksum"] = io._digest(meta, tensors)
    path = tmp_path / "extra.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata=meta)
    with pytest.raises(io.CheckpointError, match="unknown tensor 'evil/payload'"):
        io.read_checkpoint(path)


# ---------------------------------------------------------------------------------------------
# Nested containers: checked at every depth, before anything is built
# ---------------------------------------------------------------------------------------------
def _nested_model(dtype="float32", seed=0):
    """Containers inside containers: a Sequential, a Residual whose block (a list, so a
    Sequential) holds another Sequential, and a Residual around a single layer."""
    return Sequential([
        layers.Dense(2, 8, activation="tanh"),
        Sequential([layers.Dense(8, 8), layers.BatchNorm(8)]),
        layers.Residual([layers.Dense(8, 8, activation="relu"), Sequential([layers.Dense(8, 8)])]),
        layers.Residual(layers.Dense(8, 8)),
        layers.Dense(8, 3),
    ], loss="softmax_cross_entropy", optimizer=optimizers.Adam(0.01), seed=seed, dtype=dtype)


# The names the documented scheme gives (index or "block", then the parameter), written out.
NESTED_PARAMETERS = ["0.kernel", "0.bias", "1.0.kernel", "1.0.bias", "1.1.gamma", "1.1.beta",
                     "2.block.0.kernel", "2.block.0.bias", "2.block.1.0.kernel",
                     "2.block.1.0.bias", "3.block.kernel", "3.block.bias", "4.kernel", "4.bias"]
NESTED_BUFFERS = ["1.1.running_mean", "1.1.running_var"]


def _layer_config(architecture, *path):
    """The config of the layer at ``path`` ("1", "block", "0", ...) inside ``architecture``."""
    config = architecture
    for step in path:
        config = config["block"] if step == "block" else config["layers"][int(step)]
        config = config["config"]
    return config


class _Built(Exception):
    """Raised by the patched build methods: something was built that should not have been."""


def _forbid_building(monkeypatch):
    """Make every build (leaf or container) raise, so a test sees whether load got that far."""
    def build(self, *args, **kwargs):
        raise _Built(f"{type(self).__name__} was built")

    monkeypatch.setattr(base.Layer, "build", build)
    monkeypatch.setattr(base.Container, "build", build)


def _forged_nested(tmp_path, edit):
    """A consistent, correctly checksummed file of ``_nested_model`` whose architecture
    ``edit`` changed after the tensors were taken."""
    with pn.use_backend("numpy"):
        model = _nested_model()
    ckpt = io.Checkpoint("model", _params(model), _buffers(model), model.get_config(), None, 0)
    edit(ckpt.architecture)
    return io.write_checkpoint(tmp_path / "nested.safetensors", ckpt)


def test_nested_model_round_trips_exactly(backend, tmp_path):
    model = _nested_model()
    model.fit(X, Y, epochs=1, batch_size=20, verbose=0, seed=0)  # weights unlike a fresh build
    assert list(model.parameters()) == NESTED_PARAMETERS
    assert list(model.buffers()) == NESTED_BUFFERS
    path = model.save(tmp_path / "nested.safetensors")
    restored = io.load(path, backend=backend.name, device=backend.device)
    _assert_same_model(model, restored)
    assert restored.epoch == 1 and restored.optimizer.iterations == 2
    for p in restored.parameters().values():
        assert pn.device_of(p) == pn.device_of(model.parameters()["0.kernel"])
    x = backend.asarray(X, dtype="float32")
    np.testing.assert_array_equal(pn.to_numpy(restored.predict(x)), pn.to_numpy(model.predict(x)))


@pytest.mark.parametrize(("edit", "message"), [
    # 2.block.1.0 is three containers deep; Dense(5, 8) declares a (5, 8) kernel, not (8, 8)
    pytest.param(lambda a: _layer_config(a, "2", "block", "1", "0").update(in_features=5),
                 r"parameter '2\.block\.1\.0\.kernel' has shape \(8, 8\) in the file but "
                 r"\(5, 8\) in the model \(declared by a Dense\)\. .*Save the model again",
                 id="shape-3-deep"),
    pytest.param(lambda a: _layer_config(a, "1", "1").update(num_features=4),
                 r"parameter '1\.1\.gamma' has shape \(8,\) in the file but \(4,\)",
                 id="shape-in-sequential"),
    pytest.param(lambda a: _layer_config(a, "3", "block").update(use_bias=False),
                 r"missing \[\], unknown \['3\.block\.bias'\]", id="names-in-residual"),
    pytest.param(lambda a: _layer_config(a, "1")["layers"].append(
                     {"class_name": "Dense", "config": {"in_features": 8, "out_features": 8}}),
                 r"missing \['1\.2\.bias', '1\.2\.kernel'\], unknown \[\]", id="extra-layer"),
    pytest.param(lambda a: _layer_config(a, "2", "block").update(layers="Dense"),
                 r"layer '2\.block': a Chain config is a dict with a 'layers' list",
                 id="no-layers-list"),
    pytest.param(lambda a: _layer_config(a, "3").pop("block"),
                 r"layer '3': a Residual config needs a 'block' layer config", id="no-block"),
    pytest.param(lambda a: _layer_config(a, "2", "block", "1")["layers"][0].update(
                     class_name="os.system"),
                 r"layer '2\.block\.1\.0': unknown layer class 'os\.system'",
                 id="unknown-class-3-deep"),
])
def test_nested_architecture_that_contradicts_the_tensors(tmp_path, monkeypatch, edit, message):
    """Refused with what is wrong and where, before any layer is built."""
    path = _forged_nested(tmp_path, edit)
    _forbid_building(monkeypatch)
    with pytest.raises(io.CheckpointError, match=f"not a valid portanet checkpoint: .*{message}"):
        io.load(path, backend="numpy")


def test_nested_allocation_bomb_is_refused_before_allocating(tmp_path):
    """A Dense three containers deep claims 8 x 1,000,000 (64 MB as the float64 draws, 32 MB as
    float32); the file holds 8 x 8. Loading must stay far below that."""
    def bomb(architecture):
        _layer_config(architecture, "2", "block", "1", "0").update(out_features=1_000_000)

    path = _forged_nested(tmp_path, bomb)
    tracemalloc.start()
    try:
        with pytest.raises(io.CheckpointError, match=r"'2\.block\.1\.0\.kernel' has shape "
                                                     r"\(8, 8\) in the file but \(8, 1000000\)"):
            io.load(path, backend="numpy")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"loading allocated {peak:,} bytes before refusing the file"


class _PairChain(base.Container):
    """A custom container: first, then second (for the tests below)."""

    def __init__(self, first, second, name=None):
        super().__init__(name)
        self.first, self.second = first, second

    def children(self):
        return [("first", self.first), ("second", self.second)]

    def forward(self, x, training=None):
        h, first_backprop = self.first.forward(x, training)
        y, second_backprop = self.second.forward(h, training)
        return y, lambda dy, input_gradient=True: first_backprop(second_backprop(dy))

    def output_shape(self, input_shape):
        return self.second.output_shape(self.first.output_shape(input_shape))

    def get_config(self):
        return {"first": base.serialize(self.first), "second": base.serialize(self.second),
                "name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(base.deserialize(config["first"]), base.deserialize(config["second"]),
                   name=config.get("name"))


class _ReadableChain(_PairChain):
    @classmethod
    def child_configs(cls, config):
        return [("first", config["first"]), ("second", config["second"])]


def test_custom_container_without_child_configs_is_refused_and_load_weights_is_the_way(
        tmp_path, monkeypatch):
    """A registered container whose children load cannot read: save refuses it (load could
    not rebuild it), save_weights and load_weights work, and a full file of such a model (as
    earlier versions wrote, or write_checkpoint writes) is never built by load."""
    monkeypatch.setitem(base._REGISTRY, "_PairChain", _PairChain)  # registered for this test only
    with pn.use_backend("numpy"):
        model = Sequential([layers.Dense(2, 4),
                            _PairChain(layers.Dense(4, 4), layers.Dense(4, 3))], seed=0)
        with pytest.raises(ValueError, match=r"cannot save .*layer '1' is a _PairChain, a "
                                             r"container .*Nothing was written"
                                             r".*model\.save_weights"):
            model.save(tmp_path / "custom.safetensors")
        assert os.listdir(tmp_path) == []
        path = io.write_checkpoint(tmp_path / "custom.safetensors", io.Checkpoint(
            "model", _params(model), _buffers(model), model.get_config(), None, 0))
        with monkeypatch.context() as patch:
            _forbid_building(patch)
            with pytest.raises(io.CheckpointError, match=r"layer '1' is a _PairChain, a container "
                                                         r".*model\.load_weights\(path\)"):
                io.load(path)
        weights = model.save_weights(tmp_path / "custom-weights.safetensors")
        fresh = Sequential([layers.Dense(2, 4),
                            _PairChain(layers.Dense(4, 4), layers.Dense(4, 3))], seed=1)
        fresh.load_weights(weights)
    _assert_same_model(model, fresh)


def test_custom_containers_with_child_configs_load_and_are_checked(tmp_path, monkeypatch):
    """Sequential's subclasses inherit child_configs; a custom container may define its own."""
    class Block(Sequential):
        pass

    monkeypatch.setitem(base._REGISTRY, "Block", Block)
    monkeypatch.setitem(base._REGISTRY, "_ReadableChain", _ReadableChain)
    with pn.use_backend("numpy"):
        model = Sequential([layers.Dense(2, 4), Block([layers.Dense(4, 4)]),
                            _ReadableChain(layers.Dense(4, 5), layers.Dense(5, 3))], seed=0)
        model.parameters()["2.second.kernel"][...] = 7.0  # not what seed 0 draws
        path = model.save(tmp_path / "custom.safetensors")
        loaded = io.load(path)
        assert [type(layer) for layer in loaded.layers] == [layers.Dense, Block, _ReadableChain]
        _assert_same_model(model, loaded)
        # the shapes it declares are checked before anything is built
        bad = Sequential([layers.Dense(2, 4), Block([layers.Dense(4, 4)]),
                          _ReadableChain(layers.Dense(4, 6), layers.Dense(6, 3))], seed=0)
        ckpt = io.Checkpoint("model", _params(model), _buffers(model), bad.get_config(), None, 0)
        forged = io.write_checkpoint(tmp_path / "forged.safetensors", ckpt)
        with monkeypatch.context() as patch:
            _forbid_building(patch)
            with pytest.raises(io.CheckpointError, match=r"'2\.first\.kernel' has shape "
                                                         r"\(4, 5\) in the file but \(4, 6\)"):
                io.load(forged)
