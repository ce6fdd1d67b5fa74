"""portanet.io, hardened (issue 14): loading is bounded by the file, saving never writes a file
that load refuses, nor leaves debris.

Hostile files are forged with consistent bytes and a recomputed checksum (``_forge``), so the
check under test is the one that refuses them. Expected values come from the tests' own NumPy
arrays and from the files' bytes, never from the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
import safetensors
import safetensors.numpy

import portanet as pn
from portanet import activations, io, layers, optimizers
from portanet.layers import base
from portanet.model import Sequential

X = np.random.default_rng(0).normal(size=(12, 2)).astype(np.float32)
Y = np.array([0, 1, 2] * 4)
NAME_MAX = 255  # what the tests assume of tmp_path's file system (checked in _name_max)


def _model(dtype="float32", activation="relu", seed=0):
    return Sequential([layers.Dense(2, 4, activation=activation), layers.BatchNorm(4),
                       layers.Dense(4, 3)], loss="softmax_cross_entropy",
                      optimizer=optimizers.Adam(0.01), seed=seed, dtype=dtype)


def _params(model):
    return {k: pn.to_numpy(v) for k, v in model.parameters().items()}


@pytest.fixture
def good(tmp_path):
    """A trained model saved on NumPy: (path, model)."""
    with pn.use_backend("numpy"):
        model = _model()
        model.fit(X, Y, epochs=1, batch_size=6, verbose=0, seed=0)
        path = model.save(tmp_path / "good.safetensors")
    return path, model


def _contents(path):
    """(tensors, metadata) of a safetensors file, read with safetensors itself."""
    with safetensors.safe_open(path, "numpy") as f:
        metadata = dict(f.metadata())
    return safetensors.numpy.load_file(path), metadata


def _forge(path, out, edit):
    """A copy of ``path`` whose tensors or metadata ``edit(tensors, metadata)`` changed, with
    the checksum recomputed, so only portanet's content checks can refuse it."""
    tensors, metadata = _contents(path)
    edit(tensors, metadata)
    metadata["checksum"] = io._digest(metadata, tensors)
    safetensors.numpy.save_file(tensors, str(out), metadata=metadata)
    return out


def _bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _name_max(folder) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):
        return 255


# ---------------------------------------------------------------------------------------------
# Loading is bounded by the file
# ---------------------------------------------------------------------------------------------
def _many_entries_file(tmp_path, n, duplicate):
    """A weights file of ``n`` zero-size parameters (header ~1.5 MB for 100,000), the names
    listed and the checksum right; ``duplicate`` repeats the first entry at the very end."""
    names = [f"p{i}" for i in range(n)]
    tensors = {f"parameters/{k}": np.zeros(0, dtype=np.float32) for k in names}
    metadata = {"format": io.FORMAT, "format_version": "2", "kind": "weights",
                "portanet_version": pn.__version__, "parameters": json.dumps(names),
                "buffers": "[]"}
    metadata["checksum"] = io._digest(metadata, tensors)
    entries = ",".join(f'"parameters/{k}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}'
                       for k in names)
    if duplicate:
        entries += ',"parameters/p0":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}'
    text = ('{"__metadata__":' + json.dumps(metadata) + "," + entries + "}").encode()
    path = tmp_path / ("dup.safetensors" if duplicate else "many.safetensors")
    path.write_bytes(struct.pack("<Q", len(text)) + text)
    return path


def test_a_header_with_100000_entries_is_checked_in_linear_time(tmp_path):
    """Issue 14: 100,000 zero-size tensors took 212 s to refuse (a quadratic duplicate check).

    No timed assertion in the usual sense: at this size a linear check takes well under a
    second here and a quadratic one minutes, so the 60 s bound only separates the two
    classes (it fails with the elapsed time). Both files go through every check: the
    duplicate is the last entry, and the valid one passes all of them."""
    n = 100_000
    dup, valid = _many_entries_file(tmp_path, n, True), _many_entries_file(tmp_path, n, False)
    assert dup.stat().st_size > 1_500_000
    start = time.perf_counter()
    with pytest.raises(io.CheckpointError, match=r"header is not valid JSON \(duplicate names "
                                                 r"\['parameters/p0'\]\)"):
        io.read_checkpoint(dup)
    ckpt = io.read_checkpoint(valid)
    elapsed = time.perf_counter() - start
    assert len(ckpt.parameters) == n and list(ckpt.parameters)[-1] == f"p{n - 1}"
    assert elapsed < 60, (f"reading two {n:,}-entry headers took {elapsed:.1f} s: some check is "
                          "not linear in the number of entries")


def test_a_padded_file_is_refused_before_its_data_is_read(good, tmp_path):
    """A valid checkpoint padded to 6 GiB (a sparse file: no disk space, nothing allocated)
    is refused from its header and size alone; so is a truncated one."""
    path, _ = good
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(raw)
    with open(padded, "r+b") as f:
        f.truncate(6 * 2**30)
    tracemalloc.start()
    try:
        for read in (io.read_checkpoint, io.load):
            with pytest.raises(io.CheckpointError, match=(
                    f"the file has {6 * 2**30:,} bytes but its header accounts for "
                    rf"{len(raw):,} \(8 \+ {n:,} header \+ {len(raw) - 8 - n:,} data\); it has "
                    f"{6 * 2**30 - len(raw):,} trailing bytes after the data")):
                read(padded)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"refusing the padded file allocated {peak:,} bytes"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(raw[:-10])
    with pytest.raises(io.CheckpointError, match=r"it is truncated \(10 bytes of data missing\)"):
        io.read_checkpoint(cut)


def test_a_file_that_grows_after_the_size_check_is_refused(good, tmp_path, monkeypatch):
    """What is read is what the header accounts for: bytes appended between the size check
    and the data read are noticed, not ignored."""
    path, _ = good
    copy = tmp_path / "growing.safetensors"
    with open(path, "rb") as f:
        copy.write_bytes(f.read())
    real_check_entries = io.format._check_entries  # read_checkpoint's module

    def grow_then_check(*args):  # runs after the size check, before the data is read
        with open(copy, "ab") as f:
            f.write(b"\0" * 16)
        return real_check_entries(*args)

    monkeypatch.setattr(io.format, "_check_entries", grow_then_check)
    with pytest.raises(io.CheckpointError, match="changed while it was being read"):
        io.read_checkpoint(copy)


def _cast(name, dtype, values=None):
    def edit(tensors, metadata):
        tensors[name] = (tensors[name] if values is None else values).astype(dtype)
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(_cast("parameters/0.kernel", np.int64, np.arange(8).reshape(2, 4)),
                 r"parameter '0\.kernel' is stored as int64, but parameters are stored as "
                 r"float16, float32 or float64", id="int64-parameter"),
    pytest.param(_cast("parameters/2.bias", np.bool_),
                 r"parameter '2\.bias' is stored as bool, but parameters are stored as float16",
                 id="bool-parameter"),
    pytest.param(_cast("buffers/1.running_var", np.int32),
                 r"buffer '1\.running_var' is stored as int32, but buffers are stored as float16",
                 id="int32-buffer"),
])
def test_integer_and_bool_weights_are_refused_by_every_reader(good, tmp_path, edit, message):
    """int64 weights used to be cast (to zeros, or 0/1); now no reader accepts them."""
    path, _ = good
    forged = _forge(path, tmp_path / "forged.safetensors", edit)
    with pytest.raises(io.CheckpointError, match=f"not a valid portanet checkpoint: {message}"):
        io.read_checkpoint(forged)
    with pytest.raises(io.CheckpointError, match=message):
        io.load(forged)
    with pn.use_backend("numpy"), pytest.raises(io.CheckpointError, match=message):
        _model(seed=3).load_weights(forged)


def _optimizer_tensor_of(metadata, parameter, slot):
    """The tensor name of optimizer slot ``slot`` of ``parameter``, from the file's JSON."""
    return json.loads(metadata["optimizer"])["state"]["slots"][parameter][slot]["__tensor__"]


def _cast_slot(parameter, slot, dtype):
    def edit(tensors, metadata):
        name = _optimizer_tensor_of(metadata, parameter, slot)
        tensors[name] = (tensors[name] * 1000).astype(dtype)
    return edit


@pytest.mark.parametrize(("edit", "message"), [
    pytest.param(_cast("parameters/0.kernel", np.float64),
                 r"parameter '0\.kernel' is stored as float64, but the model its architecture "
                 r"describes computes in float32", id="float64-parameter"),
    pytest.param(_cast("buffers/1.running_mean", np.float16),
                 r"buffer '1\.running_mean' is stored as float16, but the model .* computes in "
                 r"float32", id="float16-buffer"),
    pytest.param(_cast_slot("0.kernel", "exp_avg", np.int64),
                 r"optimizer state state\.slots\.0\.kernel\.exp_avg is stored as int64, but the "
                 r"model .* computes in float32", id="int64-slot"),
    pytest.param(_cast_slot("2.bias", "exp_avg_sq", np.float64),
                 r"optimizer state state\.slots\.2\.bias\.exp_avg_sq is stored as float64",
                 id="f64-slot"),
    pytest.param(_cast_slot("2.bias", "exp_avg_sq", np.bool_),
                 r"optimizer state state\.slots\.2\.bias\.exp_avg_sq is stored as bool",
                 id="bool-slot"),
])
def test_load_refuses_dtypes_that_contradict_the_architecture(good, tmp_path, edit, message):
    path, _ = good
    forged = _forge(path, tmp_path / "forged.safetensors", edit)
    with pytest.raises(io.CheckpointError, match=f"not a valid portanet checkpoint: {message}"):
        io.load(forged, backend="numpy")


def test_load_weights_still_casts_between_floating_dtypes(good, tmp_path):
    """Documented: load_weights casts floating values to the model's dtype (float64 -> float32
    rounds, float32 -> float64 is exact)."""
    path, model = good
    wide = _forge(path, tmp_path / "wide.safetensors", lambda t, m: t.update(
        {k: v.astype(np.float64) for k, v in t.items() if not k.startswith("optimizer/")}))
    with pn.use_backend("numpy"):
        narrow = _model(seed=7).load_weights(wide)
    for name, value in _params(model).items():
        np.testing.assert_array_equal(_params(narrow)[name], value)
        assert _params(narrow)[name].dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Saving: file names, paths
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [
    pytest.param("m" * 240 + ".safetensors", id="251-ascii"),
    pytest.param("x" * 243 + ".safetensors", id="255-ascii"),
    pytest.param("é" * 121 + ".safetensors", id="254-bytes-utf8"),
])
def test_a_long_valid_file_name_saves_and_loads(tmp_path, name):
    if _name_max(tmp_path) != NAME_MAX:
        pytest.skip("the names are sized for a 255-byte file name limit")
    with pn.use_backend("numpy"):
        model = _model()
        path = model.save(tmp_path / name)
        model.save(tmp_path / name)  # over an existing file
        model.save_weights(tmp_path / ("w" + name[1:]))
        restored = pn.load(path)
    assert sorted(os.listdir(tmp_path)) == sorted([name, "w" + name[1:]])  # nothing else left
    for key, value in _params(model).items():
        np.testing.assert_array_equal(_params(restored)[key], value)


def test_a_file_name_longer_than_the_file_system_allows_is_refused_clearly(tmp_path):
    if _name_max(tmp_path) != NAME_MAX:
        pytest.skip("the name is sized for a 255-byte file name limit")
    with pn.use_backend("numpy"):
        model = _model()
    with pytest.raises(ValueError, match="the file name has 256 bytes, but this file system "
                                         "allows at most 255. Choose a shorter name"):
        model.save(tmp_path / ("m" * 244 + ".safetensors"))
    assert os.listdir(tmp_path) == []


class _PathLike:
    """An os.PathLike that is not a pathlib.Path."""

    def __init__(self, path):
        self.path = str(path)

    def __fspath__(self):
        return self.path


def test_tilde_and_path_likes_are_accepted_everywhere(tmp_path, monkeypatch):
    """Every public function expands ``~`` (issue 14: load did, save did not)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)  # a "~" folder created by mistake would appear here
    with pn.use_backend("numpy"):
        model = _model()
        assert model.save("~/m.safetensors") == str(home / "m.safetensors")
        io.save(model, _PathLike("~/m2.safetensors"))
        model.save_weights("~/w.safetensors")
        io.save_weights(model, _PathLike("~/w2.safetensors"))
        io.write_checkpoint("~/c.safetensors", io.Checkpoint("weights", _params(model)))
        assert sorted(os.listdir(home)) == ["c.safetensors", "m.safetensors", "m2.safetensors",
                                            "w.safetensors", "w2.safetensors"]
        assert sorted(os.listdir(tmp_path)) == ["home"]
        for restored in (pn.load("~/m.safetensors"), io.load(_PathLike("~/m2.safetensors")),
                         _model(seed=5).load_weights("~/w.safetensors"),
                         io.load_weights(_model(seed=5), _PathLike("~/w2.safetensors"))):
            for key, value in _params(model).items():
                np.testing.assert_array_equal(_params(restored)[key], value)
        assert io.read_checkpoint(_PathLike("~/c.safetensors")).kind == "weights"
        for bad in (b"~/m.safetensors", 3, None):
            with pytest.raises(TypeError, match="a checkpoint path is a str or an os.PathLike"):
                io.save(model, bad)
            with pytest.raises(TypeError, match="a checkpoint path is a str or an os.PathLike"):
                io.read_checkpoint(bad)


# ---------------------------------------------------------------------------------------------
# Saving refuses what load could not rebuild, before writing anything
# ---------------------------------------------------------------------------------------------
def _double(x):
    return 2.0 * x


_double.derivative = lambda x: 2.0 + 0.0 * x


def relu(x):  # a user function that happens to share a registered activation's name
    return 3.0 * x


relu.derivative = lambda x: 3.0 + 0.0 * x


class _Unregistered(base.Layer):
    """A parameter-free custom layer, never registered."""

    def forward(self, x, training=None):
        return x, lambda dy, input_gradient=True: dy


class Dense(layers.Dense):  # an unregistered subclass named like a registered class
    pass


@pytest.mark.parametrize(("make", "message"), [
    pytest.param(lambda: _model(activation=_double),
                 r"unknown activation '_double'.*activations\.register", id="function"),
    pytest.param(lambda: Sequential([layers.Dense(2, 3), layers.Activation(activations.Activation(
                     _double, _double.derivative, name="twice"))], seed=0),
                 r"layer '1': unknown activation 'twice'", id="Activation-layer"),
    pytest.param(lambda: _model(activation=relu),
                 r"Layer '0' has activation 'relu', a function that is not the one registered "
                 r"under that name", id="same-name-as-registered"),
    pytest.param(lambda: Sequential([layers.Dense(2, 3), _Unregistered()], seed=0),
                 r"layer '1': unknown layer class '_Unregistered'.*@portanet\.layers\.register",
                 id="unregistered-layer"),
    pytest.param(lambda: Sequential([Dense(2, 3)], seed=0),
                 r"Layer '0' is a test_io_hardening\.Dense, but its config names 'Dense', which "
                 r"load builds as the registered portanet\.layers\.dense\.Dense",
                 id="unregistered-subclass-named-like-a-registered-class"),
    pytest.param(lambda: Sequential([layers.Dense(2, 3), Sequential([layers.Dense(
                     3, 3, activation=_double)])], seed=0),
                 r"layer '1\.0': unknown activation '_double'", id="nested"),
])
def test_save_refuses_a_model_that_load_could_not_rebuild(good, make, message):
    """Nothing is written: the good checkpoint at the target stays byte for byte."""
    path, _ = good
    before = _bytes(path)
    with pn.use_backend("numpy"):
        model = make()
        with pytest.raises(ValueError, match=rf"cannot save to .*good\.safetensors': pn\.load "
                                             rf"could not rebuild this model from the file\. "
                                             rf".*{message}.*Nothing was written\. Register"):
            model.save(path)
    assert _bytes(path) == before
    assert sorted(os.listdir(os.path.dirname(path))) == ["good.safetensors"]


def test_registered_custom_parts_save_and_load(tmp_path, monkeypatch):
    """The fix the message names works: registered, the same model saves and loads."""
    monkeypatch.setitem(activations._REGISTRY, "_double", (_double, _double.derivative, None))
    monkeypatch.setitem(base._REGISTRY, "_Unregistered", _Unregistered)
    with pn.use_backend("numpy"):
        model = Sequential([layers.Dense(2, 3, activation="_double"), _Unregistered(),
                            layers.Dense(3, 2, activation=_double)], seed=0)
        restored = pn.load(model.save(tmp_path / "custom.safetensors"))
        np.testing.assert_array_equal(pn.to_numpy(restored.predict(X)),
                                      pn.to_numpy(model.predict(X)))
    np.testing.assert_allclose(pn.to_numpy(model.predict(X)),
                               _reference_double_model(model, X), rtol=1e-6)


def _reference_double_model(model, x):
    """The model's forward pass in float64 NumPy: 2 * (2 * (x W0 + b0)) W1 + b1."""
    p = {k: v.astype(np.float64) for k, v in _params(model).items()}
    h = 2.0 * (x.astype(np.float64) @ p["0.kernel"] + p["0.bias"])
    return 2.0 * (h @ p["2.kernel"] + p["2.bias"])


# ---------------------------------------------------------------------------------------------
# Saving leaves no debris: the next save removes what a killed one left
# ---------------------------------------------------------------------------------------------
_KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import safetensors.numpy
    import portanet as pn

    def serialized(tensors, metadata=None):  # the bytes the write has got when it dies
        return b"half a checkpoint"

    def killed_before_the_bytes_are_durable(fd):
        os.kill(os.getpid(), signal.SIGKILL)

    safetensors.numpy.save = serialized
    os.fsync = killed_before_the_bytes_are_durable
    model = pn.Sequential([pn.layers.Dense(2, 3)], seed=0)
    model.save(sys.argv[1])
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")
@pytest.mark.parametrize("name", ["m.safetensors", "L" * 240 + ".safetensors"],
                         ids=["short-name", "cut-name"])
def test_sigkill_mid_write_leaves_a_temporary_file_that_the_next_save_removes(tmp_path, name):
    """A real SIGKILL in the middle of writing: the temporary file stays (nothing can run in
    a killed process); the next save to the same target removes it, never another target's."""
    if len(name) > 200 and _name_max(tmp_path) != NAME_MAX:
        pytest.skip("the long name is sized for a 255-byte file name limit")
    env = {**os.environ, "PORTANET_BACKEND": "numpy"}

    def killed_save(target):
        done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(target)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, done.stderr
        past = time.time() - 60  # older than any later write, whatever the clock's resolution
        for p in os.listdir(tmp_path):
            os.utime(tmp_path / p, (past, past))

    target = tmp_path / name
    killed_save(target)
    (first,) = os.listdir(tmp_path)
    assert first.startswith(".") and first.endswith(".tmp")
    assert len(os.fsencode(first)) <= _name_max(tmp_path)
    killed_save(target)  # a killed save cleans up before it writes, too
    (second,) = os.listdir(tmp_path)
    assert second != first and second[:-12] == first[:-12]  # same prefix, new random part
    other = tmp_path / (name[:-12] + "X.safetensors")  # a similar name, for long ones the
    killed_save(other)                                  # same first 240 characters
    (others,) = set(os.listdir(tmp_path)) - {second}
    with pn.use_backend("numpy"):
        model = _model()
        model.save(target)
        assert sorted(os.listdir(tmp_path)) == sorted([name, others])
        np.testing.assert_array_equal(_params(pn.load(target))["0.kernel"],
                                      _params(model)["0.kernel"])


@pytest.mark.skipif(sys.platform == "win32", reason="file locks and names are POSIX here")
def test_cleanup_removes_only_this_targets_stale_temporary_files(tmp_path, monkeypatch):
    import fcntl

    stale = [".m.safetensors.abcd1234.tmp", ".m.safetensors.k2_9zzzq.tmp"]  # hex; tempfile's
    kept = [".m.safetensors.abcd123.tmp",     # 7 random characters: not the pattern
            ".m.safetensors.abcd12345.tmp",   # 9
            ".m.safetensors.ABCD1234.tmp",    # upper case: not the pattern
            ".m.safetensors.abcd1234.tmp.bak",
            "m.safetensors.abcd1234.tmp",     # no leading dot
            ".n.safetensors.abcd1234.tmp",    # another target
            ".xm.safetensors.abcd1234.tmp",
            ".m.safetensors.x.abcd1234.tmp",
            ".m.safetensors.fresh123.tmp",    # not older than this write: maybe a live one
            ".m.safetensors.locked12.tmp"]    # locked by a live writer
    past = time.time() - 3600
    for p in stale + kept:
        (tmp_path / p).write_bytes(b"debris")
        if p != ".m.safetensors.fresh123.tmp":
            os.utime(tmp_path / p, (past, past))
    future = time.time() + 3600
    os.utime(tmp_path / ".m.safetensors.fresh123.tmp", (future, future))
    (tmp_path / ".m.safetensors.dir12345.tmp").mkdir()  # a folder with the pattern: kept
    os.utime(tmp_path / ".m.safetensors.dir12345.tmp", (past, past))
    kept.append(".m.safetensors.dir12345.tmp")
    with open(tmp_path / ".m.safetensors.locked12.tmp", "rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        with pn.use_backend("numpy"):
            _model().save(tmp_path / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.safetensors", *kept])
    # a failed save cleans up too (and removes its own temporary file)
    os.utime(tmp_path / ".m.safetensors.fresh123.tmp", (past, past))
    with pn.use_backend("numpy"):
        model = _model()
    monkeypatch.setattr(safetensors.numpy, "save", _disk_full)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "m.safetensors")
    kept.remove(".m.safetensors.fresh123.tmp")
    kept.remove(".m.safetensors.locked12.tmp")  # its writer is gone now
    assert sorted(os.listdir(tmp_path)) == sorted(["m.safetensors", *kept])


def _disk_full(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_saved_checkpoint_has_the_mode_open_would_give(tmp_path):
    """0666 less the umask, as any file the user writes (not a temporary file's private 0600)."""
    umask = os.umask(0o022)
    try:
        path = pn.Sequential([pn.layers.Dense(2, 2)], seed=0).save(tmp_path / "m.safetensors")
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777 == 0o644
