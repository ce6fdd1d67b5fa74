"""portanet.data: batching, splits, shuffles, preprocessing, augmentation, generated data sets.

References are independent: NumPy transcriptions (np.flip, np.rot90, np.pad + slicing),
scikit-learn's scalers and encoders, and counting by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend

import portanet as pn
from portanet import data


def _sklearn_preprocessing():
    return pytest.importorskip("sklearn.preprocessing")  # the reference, test-only


# ---------------------------------------------------------------------------------------------
# Batching and shuffling
# ---------------------------------------------------------------------------------------------
def test_batches_are_slices_in_order(backend):
    x = np.arange(20.0).reshape(10, 2)
    y = np.arange(10)
    it = data.BatchIterator(backend.asarray(x, "float32"), backend.asarray(y, "int64"),
                            batch_size=4)
    assert len(it) == 3
    got = list(it)
    assert [b[0].shape[0] for b in got] == [4, 4, 2]
    for i, (xb, yb) in enumerate(got):
        assert_matches(xb, x[4 * i: 4 * i + 4], backend, "float32", atol=0)
        assert_on_backend(yb, backend, "int64")


def test_drop_last(backend):
    it = data.BatchIterator(backend.asarray(np.arange(10.0), "float32"), batch_size=4,
                            drop_last=True)
    assert len(it) == 2 and [b[0].shape[0] for b in it] == [4, 4]


def test_device_shuffle_is_a_permutation_shared_by_x_and_y(backend):
    n = 37
    x = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 3))
    y = np.arange(n)
    it = data.BatchIterator(backend.asarray(x, "float64"), backend.asarray(y, "int64"),
                            batch_size=8, shuffle=True, seed=3)
    epochs = []
    for _ in range(2):
        xs, ys = zip(*it, strict=True)
        xs = np.concatenate([pn.to_numpy(a) for a in xs])
        ys = np.concatenate([pn.to_numpy(a) for a in ys])
        assert sorted(ys.tolist()) == list(range(n))  # every sample exactly once
        np.testing.assert_array_equal(xs[:, 0], ys)  # rows stay paired
        epochs.append(ys)
    assert not np.array_equal(epochs[0], epochs[1]), "each epoch needs a fresh order"
    assert not np.array_equal(epochs[0], np.arange(n))


def test_device_shuffle_reproducible_with_seed(backend):
    def order(seed):
        it = data.BatchIterator(backend.asarray(np.arange(50), "int64"), batch_size=50,
                                shuffle=True, seed=seed)
        return pn.to_numpy(next(iter(it))[0])

    np.testing.assert_array_equal(order(7), order(7))
    assert not np.array_equal(order(7), order(8))


def test_host_shuffle_is_the_same_on_every_backend(backend):
    it = data.BatchIterator(backend.asarray(np.arange(30), "int64"), batch_size=30,
                            shuffle="host", seed=5)
    ref = data.BatchIterator(np.arange(30), batch_size=30, shuffle="host", seed=5)
    for _ in range(2):
        np.testing.assert_array_equal(pn.to_numpy(next(iter(it))[0]), next(iter(ref))[0])


def test_host_shuffle_is_a_function_of_seed_and_epoch(backend):
    """The documented stream, from NumPy directly (not from a second iterator, which would share
    a bug): epoch e is default_rng(SeedSequence(seed, spawn_key=(e,))).permutation(N). Each
    epoch differs from the last, and start_epoch resumes the sequence where it was."""
    n, seed = 40, 9

    def reference(epoch):
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch,))) \
            .permutation(n)

    it = data.BatchIterator(backend.asarray(np.arange(n), "int64"), batch_size=16,
                            shuffle="host", seed=seed)
    orders = [np.concatenate([pn.to_numpy(b[0]) for b in it]) for _ in range(3)]
    for epoch, order in enumerate(orders):
        np.testing.assert_array_equal(order, reference(epoch), err_msg=f"epoch {epoch}")
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    resumed = data.BatchIterator(backend.asarray(np.arange(n), "int64"), batch_size=n,
                                 shuffle="host", seed=seed, start_epoch=2)
    np.testing.assert_array_equal(pn.to_numpy(next(iter(resumed))[0]), reference(2))


def test_batch_iterator_bad_input():
    with pytest.raises(ValueError, match="same number of samples.*array 0 has 3, array 1 has 4"):
        data.BatchIterator(np.zeros((3, 2)), np.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size must be a positive int, received 0"):
        data.BatchIterator(np.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="shuffle must be True, False or 'host'"):
        data.BatchIterator(np.zeros(3), shuffle="yes")
    with pytest.raises(ValueError, match="empty arrays"):
        data.BatchIterator(np.zeros((0, 2)))


def test_shuffle_arrays_keeps_pairs(backend):
    a, b = data.shuffle_arrays(backend.asarray(np.arange(12), "int64"),
                               backend.asarray(np.arange(12) * 10.0, "float64"), seed=1)
    a, b = pn.to_numpy(a), pn.to_numpy(b)
    np.testing.assert_array_equal(b, a * 10.0)
    assert sorted(a.tolist()) == list(range(12))


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def test_train_test_split_partitions_the_data(backend):
    n = 50
    x = backend.asarray(np.arange(n, dtype=np.float64)[:, None], "float64")
    y = backend.asarray(np.arange(n), "int64")
    x_tr, x_te, y_tr, y_te = data.train_test_split(x, y, test_size=0.2, seed=0)
    assert (x_tr.shape[0], x_te.shape[0]) == (40, 10)
    assert_on_backend(x_tr, backend, "float64")
    ids = np.concatenate([pn.to_numpy(y_tr), pn.to_numpy(y_te)])
    assert sorted(ids.tolist()) == list(range(n))
    np.testing.assert_array_equal(pn.to_numpy(x_te)[:, 0], pn.to_numpy(y_te))
    # the same seed splits the same way on every backend
    _, _, _, y_te_np = data.train_test_split(np.arange(n, dtype=float)[:, None], np.arange(n),
                                             test_size=0.2, seed=0)
    np.testing.assert_array_equal(pn.to_numpy(y_te), y_te_np)


def test_stratified_split_keeps_class_proportions():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    _, _, y_tr, y_te = data.train_test_split(np.zeros((100, 1)), y, test_size=0.2,
                                             stratify=True, seed=0)
    assert np.bincount(y_te).tolist() == [12, 6, 2]
    assert np.bincount(y_tr).tolist() == [48, 24, 8]
    # one-hot targets are stratified by their argmax
    onehot = np.eye(3)[y]
    _, _, _, oh_te = data.train_test_split(np.zeros((100, 1)), onehot, test_size=0.2,
                                           stratify=True, seed=0)
    assert np.bincount(oh_te.argmax(1)).tolist() == [12, 6, 2]


def test_train_val_test_split_sizes():
    x, y = np.arange(100.0)[:, None], np.arange(100) % 4
    parts = data.train_val_test_split(x, y, val_size=0.1, test_size=0.2, stratify=True, seed=0)
    assert [p.shape[0] for p in parts[:3]] == [70, 10, 20]  # fractions of the whole set
    ids = np.concatenate([p[:, 0] for p in parts[:3]])
    assert sorted(ids.tolist()) == list(range(100))


def test_split_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="x has 10, y has 9"):
        data.train_test_split(x, np.zeros(9))
    with pytest.raises(ValueError, match=r"test_size as a fraction must be in \(0, 1\), "
                                         r"received 1.5"):
        data.train_test_split(x, test_size=1.5)
    with pytest.raises(ValueError, match=r"at least 2 samples per class; class 2 has 1"):
        data.train_test_split(x, np.array([0] * 5 + [1] * 4 + [2]), stratify=True)
    with pytest.raises(ValueError, match="stratify=True needs the class labels"):
        data.train_test_split(x, stratify=True)


def test_kfold_indices_cover_each_sample_once():
    folds = data.kfold_indices(23, k=5, seed=0)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(23))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 23
    assert sorted(len(t) for _, t in folds) == [4, 4, 5, 5, 5]


def test_stratified_kfold_balances_classes():
    labels = np.repeat([0, 1], [40, 10])
    for _, test in data.kfold_indices(50, k=5, labels=labels, seed=1):
        assert np.bincount(labels[test]).tolist() == [8, 2]
    with pytest.raises(ValueError, match="k must be an int >= 2, received 1"):
        data.kfold_indices(10, k=1)
    with pytest.raises(ValueError, match="k=5 folds need at least 5 samples, received 3"):
        data.kfold_indices(3, k=5)


# ---------------------------------------------------------------------------------------------
# Preprocessing, against scikit-learn
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_standard_scaler_matches_sklearn(backend, dtype):
    skp = _sklearn_preprocessing()
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(40, 5))
    train[:, 2] = 7.0  # a constant feature maps to 0 (scale 1), as in scikit-learn
    test = rng.normal(size=(9, 5))
    ref = skp.StandardScaler().fit(train)
    scaler = data.StandardScaler().fit(backend.asarray(train, dtype))
    assert_matches(scaler.transform(backend.asarray(test, dtype)), ref.transform(test), backend,
                   dtype)
    z = scaler.transform(backend.asarray(train, dtype))
    assert_matches(scaler.inverse_transform(z), train, backend, dtype)


def test_standard_scaler_per_channel(backend):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(6, 3, 4, 4)) * np.array([1.0, 5.0, 0.1])[None, :, None, None]
    scaler = data.StandardScaler(axis=(0, 2, 3)).fit(backend.asarray(images, "float64"))
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    std = images.std(axis=(0, 2, 3), keepdims=True)
    assert_matches(scaler.transform(backend.asarray(images, "float64")), (images - mean) / std,
                   backend, "float64")


def test_min_max_scaler_matches_sklearn(backend):
    skp = _sklearn_preprocessing()
    rng = np.random.default_rng(2)
    train, test = rng.uniform(-5, 5, size=(30, 4)), rng.uniform(-6, 6, size=(7, 4))
    train[:, 1] = 2.0
    ref = skp.MinMaxScaler(feature_range=(-1, 1)).fit(train)
    scaler = data.MinMaxScaler((-1.0, 1.0)).fit(backend.asarray(train, "float64"))
    assert_matches(scaler.transform(backend.asarray(test, "float64")), ref.transform(test),
                   backend, "float64")
    z = scaler.transform(backend.asarray(test, "float64"))
    assert_matches(scaler.inverse_transform(z), test, backend, "float64")


def test_scalers_refuse_nan_and_unfitted(backend):
    bad = np.ones((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        data.StandardScaler().fit(backend.asarray(bad, "float64"))
    with pytest.raises(RuntimeError, match="StandardScaler is not fitted yet"):
        data.StandardScaler().transform(backend.asarray(bad, "float64"))
    with pytest.raises(ValueError, match=r"feature_range .* low < high, received \(1, 0\)"):
        data.MinMaxScaler((1, 0))


def test_label_encoder_matches_sklearn():
    skp = _sklearn_preprocessing()
    labels = ["dog", "cat", "bird", "cat", "dog", "dog"]
    ref = skp.LabelEncoder().fit(labels)
    enc = data.LabelEncoder().fit(labels)
    assert enc.classes_.tolist() == ref.classes_.tolist()
    np.testing.assert_array_equal(enc.transform(labels), ref.transform(labels))
    assert enc.inverse_transform([2, 0]).tolist() == ["dog", "bird"]
    with pytest.raises(ValueError, match=r"labels \['fish'\] were not seen in fit"):
        enc.transform(["cat", "fish"])


def test_label_encoder_keeps_backend(backend):
    y = backend.asarray(np.array([10, 30, 20, 30]), "int64")
    out = data.LabelEncoder().fit_transform(y)
    assert_on_backend(out, backend, "int64")
    assert pn.to_numpy(out).tolist() == [0, 2, 1, 2]


def test_one_hot_and_encoder(backend):
    y = backend.asarray(np.array([2, 0, 1]), "int64")
    assert_matches(data.one_hot(y), np.eye(3)[[2, 0, 1]], backend, "float32", atol=0)
    assert_matches(data.one_hot(y, 5, dtype="float64"), np.eye(5)[[2, 0, 1]], backend,
                   "float64", atol=0)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\] for num_classes=2, "
                                         r"received values from 0 to 2"):
        data.one_hot(y, 2)
    enc = data.OneHotEncoder().fit(["b", "a", "c"])
    np.testing.assert_array_equal(pn.to_numpy(enc.transform(["c", "a"])), np.eye(3)[[2, 0]])
    assert enc.inverse_transform(np.eye(3)[[1, 2]]).tolist() == ["b", "c"]


def test_flatten(backend):
    x = np.arange(24.0).reshape(2, 3, 2, 2)
    assert_matches(data.flatten(backend.asarray(x, "float32")), x.reshape(2, -1), backend,
                   "float32", atol=0)


@pytest.mark.parametrize("method", ["undersample", "oversample"])
def test_balance_classes(backend, method):
    y = np.repeat([0, 1, 2], [20, 5, 10])
    x = np.arange(35.0)[:, None]
    xb, yb = data.balance_classes(backend.asarray(x, "float32"), backend.asarray(y, "int64"),
                                  method=method, seed=0)
    assert_on_backend(xb, backend, "float32")
    counts = np.bincount(pn.to_numpy(yb))
    assert counts.tolist() == ([5, 5, 5] if method == "undersample" else [20, 20, 20])
    # rows and labels stay paired: x = index into the original arrays
    np.testing.assert_array_equal(y[pn.to_numpy(xb)[:, 0].astype(int)], pn.to_numpy(yb))
    if method == "oversample":  # every original sample is kept
        assert set(pn.to_numpy(xb)[:, 0].astype(int).tolist()) == set(range(35))


def test_class_weights_match_sklearn():
    compute_class_weight = pytest.importorskip("sklearn.utils.class_weight").compute_class_weight

    y = np.repeat([0, 1, 2], [50, 10, 40])
    np.testing.assert_allclose(data.class_weights(y),
                               compute_class_weight("balanced", classes=np.arange(3), y=y))


# ---------------------------------------------------------------------------------------------
# Augmentation on the device (each output sample is one of its allowed transforms)
# ---------------------------------------------------------------------------------------------
def _images(n=16, c=2, h=5, w=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, c, h, w))


def _which(out: np.ndarray, candidates: list[np.ndarray]) -> list[int]:
    """For each sample, the index of the candidate it equals exactly (a failure if none)."""
    picks = []
    for i in range(out.shape[0]):
        hits = [k for k, cand in enumerate(candidates) if np.array_equal(out[i], cand[i])]
        assert hits, f"sample {i} matches none of the allowed transforms"
        picks.append(hits[0])
    return picks


def test_random_flip(backend):
    x = _images()
    gen = pn.random.Generator(seed=0)
    out = data.random_flip(backend.asarray(x, "float32"), gen, horizontal=True, vertical=True)
    assert_on_backend(out, backend, "float32")
    x32 = x.astype(np.float32)
    cands = [x32, np.flip(x32, 3), np.flip(x32, 2), np.flip(np.flip(x32, 2), 3)]
    assert len(set(_which(pn.to_numpy(out), cands))) > 1, "all samples got the same flip"


def test_random_rot90(backend):
    x = _images(n=24)
    out = data.random_rot90(backend.asarray(x, "float64"), pn.random.Generator(seed=1))
    assert_on_backend(out, backend, "float64")
    cands = [np.rot90(x, k, axes=(2, 3)) for k in range(4)]
    assert len(set(_which(pn.to_numpy(out), cands))) >= 3
    with pytest.raises(ValueError, match=r"square images .* received H x W = 5 x 4"):
        data.random_rot90(backend.asarray(_images(w=4), "float64"), pn.random.Generator(0))


def _shifted(x: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """NumPy reference: translate by (dy, dx), filling uncovered pixels with ``fill``."""
    s = max(abs(dy), abs(dx), 1)
    padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)), constant_values=fill)
    h, w = x.shape[2:]
    return padded[:, :, s - dy: s - dy + h, s - dx: s - dx + w]


def test_random_shift(backend):
    x = _images(n=32)
    out = data.random_shift(backend.asarray(x, "float64"), pn.random.Generator(seed=2),
                            max_shift=1, fill=-9.0)
    assert_on_backend(out, backend, "float64")
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    cands = [_shifted(x, dy, dx, -9.0) for dy, dx in offsets]
    assert len(set(_which(pn.to_numpy(out), cands))) >= 4


def test_random_crop(backend):
    x = _images(n=20, h=6, w=6)
    out = data.random_crop(backend.asarray(x, "float32"), pn.random.Generator(seed=3), size=4)
    assert out.shape == (20, 2, 4, 4)
    x32 = x.astype(np.float32)
    cands = [x32[:, :, i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
    assert len(set(_which(pn.to_numpy(out), cands))) >= 4
    with pytest.raises(ValueError, match=r"crop size \(7, 7\) must fit"):
        data.random_crop(backend.asarray(x, "float32"), pn.random.Generator(0), size=7)


def test_augment_pipeline(backend):
    augment = data.Augment(["flip", "shift"], seed=0)
    x = backend.asarray(_images(), "float32")
    out = augment(x)
    assert_on_backend(out, backend, "float32")
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="unknown augmentation 'warp'"):
        data.Augment(["warp"])
    with pytest.raises(ValueError, match=r"batch of images \(N, C, H, W\), received shape "
                                         r"\(16, 2, 5\)"):
        data.random_flip(backend.asarray(np.zeros((16, 2, 5)), "float32"), pn.random.Generator(0))


# ---------------------------------------------------------------------------------------------
# Generated data sets and digits
# ---------------------------------------------------------------------------------------------
def test_generated_sets_shapes_and_determinism():
    x, y = data.make_spiral(n_samples=301, n_classes=4, seed=1)
    assert x.shape == (301, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [76, 75, 75, 75]
    np.testing.assert_array_equal(x, data.make_spiral(n_samples=301, n_classes=4, seed=1)[0])
    assert not np.array_equal(x, data.make_spiral(n_samples=301, n_classes=4, seed=2)[0])

    x, y = data.make_circles(n_samples=200, noise=0.0, factor=0.3, seed=0)
    radius = np.hypot(x[:, 0], x[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.3, rtol=1e-6)

    x, y = data.make_noisy_sine(n_samples=500, noise=0.0, seed=0)
    np.testing.assert_allclose(y, np.sin(x), atol=1e-6)
    _, y_noisy = data.make_noisy_sine(n_samples=5000, noise=0.1, seed=0)
    x_noisy, _ = data.make_noisy_sine(n_samples=5000, noise=0.1, seed=0)
    assert abs(float(np.std(y_noisy - np.sin(x_noisy))) - 0.1) < 0.005


def test_generated_sets_bad_input():
    with pytest.raises(ValueError, match="n_classes must be an int >= 2, received 1"):
        data.make_spiral(n_classes=1)
    with pytest.raises(ValueError, match=r"factor .* must be in \(0, 1\), received 1.5"):
        data.make_circles(factor=1.5)
    with pytest.raises(ValueError, match="noise must be a non-negative number, received -1"):
        data.make_noisy_sine(noise=-1)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="mnist is not bundled"):
        data.load_dataset("mnist")


def test_digits_from_sklearn():
    pytest.importorskip("sklearn")
    x, y = data.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and np.bincount(y).min() > 170
    images, _ = data.load_digits(images=True)
    np.testing.assert_array_equal(images.reshape(1797, 64), x)
    ds = data.load_dataset("digits", images=True)
    assert ds.image_shape == (1, 8, 8) and ds.num_classes == 10
    x2, _ = ds
    assert x2.shape == (1797, 1, 8, 8)
