"""Exact resume: a run interrupted, saved, loaded and continued equals the run that never
stopped, bit for bit, on the same backend and device, with Dropout, augmentation and every
shuffle mode (issue 14). The pieces: every generator saves its whole state
(``Generator.state_dict``), shuffles are functions of (seed, epoch), and the checkpoint keeps
the layers' generators, fit's seed and its augmentation generator (``model.random_state``)."""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet import data, layers

N, BATCH = 30, 8  # 30 = 3 full batches and a partial one
RNG = np.random.default_rng(11)
IMAGES = RNG.normal(size=(N, 1, 2, 2))
LABELS = RNG.integers(0, 3, size=N)


def _model(dropout: float = 0.3) -> pn.Sequential:
    return pn.Sequential([layers.Flatten(), layers.Dense(4, 8, activation="relu"),
                          layers.Dropout(dropout), layers.Dense(8, 3)],
                         loss="softmax_cross_entropy", optimizer=pn.optimizers.Adam(0.05),
                         seed=4, dtype="float64")


def _host(model: pn.Sequential) -> dict[str, np.ndarray]:
    return {k: np.array(pn.to_numpy(v)) for k, v in model.parameters().items()}


def _assert_bit_identical(a: pn.Sequential, b: pn.Sequential) -> None:
    ha, hb = _host(a), _host(b)
    assert ha.keys() == hb.keys()
    for name in ha:
        np.testing.assert_array_equal(ha[name], hb[name], err_msg=name)


# -- generators ------------------------------------------------------------------------------
def test_a_generator_state_continues_the_same_draws(backend):
    g = pn.random.Generator(5)
    g.uniform((3,))  # not at the start of its stream
    saved = g.state_dict()
    assert saved["state"].dtype == np.uint8 and saved["seed"] == 5
    expected = (backend.to_numpy(g.uniform((4,), dtype="float64")),
                backend.to_numpy(g.normal((2, 3), dtype="float32")),
                backend.to_numpy(g.permutation(9)))
    other = pn.random.Generator(99)
    assert other.load_state_dict(saved) is True
    got = (backend.to_numpy(other.uniform((4,), dtype="float64")),
           backend.to_numpy(other.normal((2, 3), dtype="float32")),
           backend.to_numpy(other.permutation(9)))
    for e, r in zip(expected, got, strict=True):
        np.testing.assert_array_equal(r, e)
    assert other.seed == 5


def test_another_kind_of_state_restarts_from_its_seed(backend):
    """Bytes of another backend's generator mean nothing here: restart from the saved seed."""
    foreign = {"kind": "somewhere.else", "seed": 7, "state": np.zeros(3, np.uint8)}
    g = pn.random.Generator(1)
    assert g.load_state_dict(foreign) is False
    fresh = pn.random.Generator(7)
    np.testing.assert_array_equal(backend.to_numpy(g.uniform((5,), dtype="float64")),
                                  backend.to_numpy(fresh.uniform((5,), dtype="float64")))


@pytest.mark.parametrize("bad", [None, {"kind": "numpy.PCG64"},
                                 {"kind": "x", "seed": -1, "state": np.zeros(1, np.uint8)},
                                 {"kind": "x", "seed": True, "state": np.zeros(1, np.uint8)}])
def test_a_malformed_generator_state_is_refused(bad):
    with pytest.raises(ValueError, match="generator state"):
        pn.random.Generator(0, backend="numpy").load_state_dict(bad)


def test_truncated_bytes_of_the_right_kind_are_refused():
    saved = pn.random.Generator(0, backend="numpy").state_dict()
    saved["state"] = saved["state"][:10]
    with pytest.raises(ValueError, match="40 bytes"):
        pn.random.Generator(0, backend="numpy").load_state_dict(saved)


# -- shuffles are functions of (seed, epoch) ---------------------------------------------------
@pytest.mark.parametrize("mode", [True, "host"])
def test_each_epochs_order_depends_only_on_seed_and_epoch(backend, mode):
    x = backend.asarray(np.arange(12.0))
    batches = data.BatchIterator(x, batch_size=12, shuffle=mode, seed=3)
    orders = [backend.to_numpy(next(iter(batches))[0]) for _ in range(3)]  # epochs 0, 1, 2
    assert not np.array_equal(orders[0], orders[1])  # a new order every epoch
    assert not np.array_equal(orders[1], orders[2])
    for epoch in range(3):  # an iterator that starts at epoch e gives epoch e's order
        started = data.BatchIterator(x, batch_size=12, shuffle=mode, seed=3, start_epoch=epoch)
        np.testing.assert_array_equal(backend.to_numpy(next(iter(started))[0]), orders[epoch])
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(12.0))


# -- whole runs ------------------------------------------------------------------------------
def _fit(model, epochs, initial_epoch=0, shuffle=True, seed=3, **kwargs):
    return model.fit(IMAGES, LABELS, epochs=epochs, initial_epoch=initial_epoch,
                     batch_size=BATCH, shuffle=shuffle, seed=seed, verbose=0,
                     augment=data.Augment(["flip"], seed=8), **kwargs)


@pytest.mark.parametrize("shuffle", [True, "host", False])
def test_an_interrupted_run_resumes_bit_identically(backend, shuffle, tmp_path):
    """Dropout, augmentation and shuffles all continue where they stopped."""
    straight = _model()
    _fit(straight, 4, shuffle=shuffle)
    first = _model()
    _fit(first, 2, shuffle=shuffle)
    first.save(tmp_path / "mid.safetensors")
    resumed = pn.load(tmp_path / "mid.safetensors", backend=backend.name,
                      device=backend.device)
    assert resumed.epoch == 2
    _fit(resumed, 4, initial_epoch=resumed.epoch, shuffle=shuffle)
    _assert_bit_identical(resumed, straight)


def test_a_run_with_a_fresh_seed_resumes_with_that_seed(backend, tmp_path):
    """seed=None draws a seed; the checkpoint keeps it and the resumed fit takes it."""
    first = _model()
    _fit(first, 2, seed=None)
    drawn = first.fit_random["seed"]
    assert isinstance(drawn, int)
    first.save(tmp_path / "mid.safetensors")
    straight = _model()
    _fit(straight, 4, seed=drawn, validation_split=0.2)
    again = _model()
    _fit(again, 2, seed=drawn, validation_split=0.2)
    again.save(tmp_path / "again.safetensors")
    resumed = pn.load(tmp_path / "again.safetensors", backend=backend.name,
                      device=backend.device)
    _fit(resumed, 4, initial_epoch=resumed.epoch, seed=None, validation_split=0.2)
    _assert_bit_identical(resumed, straight)  # same shuffles AND the same validation split


class _StopAfter(pn.callbacks.Callback):
    """Stands in for a crash: training ends after ``epochs`` epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs):
        if epoch + 1 == self.epochs:
            self.state.stop = True


def test_resume_from_modelcheckpoint_files(backend, tmp_path):
    """The files a ModelCheckpoint writes during fit resume exactly too."""
    straight = _model()
    _fit(straight, 3)
    crashed = _model()
    pattern = str(tmp_path / "ckpt-{epoch}.safetensors")
    _fit(crashed, 3, callbacks=[pn.callbacks.ModelCheckpoint(pattern), _StopAfter(1)])
    resumed = pn.load(tmp_path / "ckpt-1.safetensors", backend=backend.name,
                      device=backend.device)
    _fit(resumed, 3, initial_epoch=resumed.epoch)
    _assert_bit_identical(resumed, straight)


def test_resuming_on_another_backend_trains_on(tmp_path):
    """Another backend's generators restart from their seeds: training goes on, finitely."""
    pytest.importorskip("torch")
    first = _model()
    with pn.use_backend("numpy"):
        first = _model()
        _fit(first, 1)
        first.save(tmp_path / "numpy.safetensors")
    moved = pn.load(tmp_path / "numpy.safetensors", backend="torch")
    history = _fit(moved, 2, initial_epoch=moved.epoch)
    assert np.isfinite(history.history["loss"]).all()
    assert moved.epoch == 2


def test_random_state_refuses_a_state_of_another_model():
    model = _model()
    saved = model.random_state()
    assert set(saved["layers"]) == {"2.generator"}
    with pytest.raises(ValueError, match="generators"):
        _model(dropout=0.0).load_random_state({**saved, "layers": {"9.generator": {}}})
    with pytest.raises(ValueError, match="random state"):
        model.load_random_state({"layers": {}})
