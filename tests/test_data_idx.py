"""The IDX (MNIST / Fashion-MNIST) reader: valid files of every type, plain and gzipped, and
malformed files that must be refused with a message saying what is wrong."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from portanet import data
from portanet.data import IdxFormatError, read_idx

TYPE_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
              np.float64: 0x0E}


def idx_bytes(a: np.ndarray) -> bytes:
    """An independent IDX writer, from the format description (big-endian everything)."""
    code = TYPE_CODES[a.dtype.type]
    head = bytes([0, 0, code, a.ndim]) + b"".join(struct.pack(">I", d) for d in a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(TYPE_CODES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_every_type(tmp_path, dtype, compress):
    a = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4) * 10
    raw = idx_bytes(a)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def _write(tmp_path, raw: bytes, name="bad-idx"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


GOOD = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))


@pytest.mark.parametrize("raw, message", [
    (b"", "truncated file: the 4-byte magic number needs 4 bytes but only 0 remain"),
    (b"\x00\x00\x08", "needs 4 bytes but only 3 remain"),
    (b"<!DOCTYPE html><html>", "must start with bytes 00 00, found 3c 21.*HTML"),
    (b"\x00\x00\x07\x01" + b"\x00" * 8, "unknown IDX data type 0x07"),
    (b"\x00\x00\x08\x00", "declares 0 dimensions; expected 1 to 8"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x03", "the 2 dimension sizes needs 8 bytes but only 4"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x03\x00\x00\x00\x00", r"shape \(3, 0\) with a zero size"),
    (GOOD[:-1], r"truncated file: the header declares shape \(3, 4\) of uint8 \(24 bytes in "
                r"all\) but the file has 23 bytes"),
    (GOOD + b"\x00\x00", r"2 unexpected bytes after the data"),
    # a size field claiming 4 billion rows must not make the reader allocate anything
    (b"\x00\x00\x0e\x02\xff\xff\xff\xff\xff\xff\xff\xff", "truncated file"),
])
def test_malformed_files(tmp_path, raw, message):
    with pytest.raises(IdxFormatError, match=message):
        read_idx(_write(tmp_path, raw))


def test_malformed_gzip(tmp_path):
    with pytest.raises(IdxFormatError, match=r"truncated file: the data of shape \(3, 4\) needs "
                                             "12 bytes but only 11 remain"):
        read_idx(_write(tmp_path, gzip.compress(GOOD[:-1]), "a.gz"))
    with pytest.raises(IdxFormatError, match="unexpected bytes after the data"):
        read_idx(_write(tmp_path, gzip.compress(GOOD + b"\x01"), "b.gz"))
    broken = bytearray(gzip.compress(GOOD))
    broken[12:16] = b"\xff\xff\xff\xff"  # corrupt the deflate stream
    with pytest.raises(IdxFormatError, match="gzip stream is corrupt|not an IDX|truncated"):
        read_idx(_write(tmp_path, bytes(broken), "c.gz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_idx(tmp_path / "missing")


def _mnist_folder(tmp_path, n_train=6, n_test=4, labels_max=9, compress=True):
    rng = np.random.default_rng(0)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", n_train),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", n_test)}
    truth = {}
    for kind, (images, labels, n) in names.items():
        x = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        y = rng.integers(0, labels_max + 1, size=n).astype(np.uint8)
        for stem, arr in ((images, x), (labels, y)):
            raw = idx_bytes(arr)
            if compress:
                (tmp_path / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (tmp_path / stem).write_bytes(raw)
        truth[kind] = (x, y)
    return truth


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_folder(tmp_path, compress):
    truth = _mnist_folder(tmp_path, compress=compress)
    x, y = data.load_mnist(tmp_path, kind="train")
    assert x.shape == (6, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0], truth["train"][0] / 255.0, rtol=1e-7)
    np.testing.assert_array_equal(y, truth["train"][1])
    x, _ = data.load_fashion_mnist(tmp_path, kind="test", images=False, normalize=False)
    assert x.shape == (4, 784) and x.dtype == np.uint8
    ds = data.load_dataset("fashion-mnist", path=tmp_path, images=True)
    assert ds.class_names[9] == "Ankle boot" and ds.x_test.shape == (4, 1, 28, 28)


def test_load_mnist_inconsistent_files(tmp_path):
    _mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros(5, dtype=np.uint8))))
    with pytest.raises(IdxFormatError, match="has 4 images but t10k-labels-idx1-ubyte.gz has 5 "
                                             "labels"):
        data.load_mnist(tmp_path, kind="test")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.full(6, 12, dtype=np.uint8))))
    with pytest.raises(IdxFormatError, match="labels must be 0..9, found 12"):
        data.load_mnist(tmp_path, kind="train")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(np.zeros((6, 28, 28), dtype=np.float32))))
    with pytest.raises(IdxFormatError, match=r"expected uint8 images .* found float32"):
        data.load_mnist(tmp_path, kind="train")
    with pytest.raises(ValueError, match="kind must be 'train' or 'test', received 'val'"):
        data.load_mnist(tmp_path, kind="val")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.*not found"):
        data.load_mnist(tmp_path / "..", kind="train")
