"""Read MNIST / Fashion-MNIST from the IDX files a user has, validating every header field.

The IDX format (Y. LeCun's MNIST page) is a 4-byte magic number, then one 4-byte big-endian
size per dimension, then the values, big-endian, row-major::

    byte 0-1   0x00 0x00
    byte 2     type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte 3     number of dimensions d
    then       d sizes (uint32, big-endian), then prod(sizes) values

A file is accepted only if its byte count is exactly header + prod(sizes) * itemsize; anything
else (a wrong magic number, an unknown type, a truncated download, extra bytes, an HTML error
page saved under the right name) gets an :class:`IdxFormatError` that says what is wrong.
Gzipped files (``.gz``, as distributed) are read through a bounded stream, so a hostile file
cannot make the reader decompress more than the header announces.

Examples:
    >>> from portanet.data import load_mnist
    >>> x, y = load_mnist("~/data/mnist", kind="train")        # doctest: +SKIP
    >>> x.shape, y.shape                                       # doctest: +SKIP
    ((60000, 1, 28, 28), (60000,))
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["FASHION_CLASSES", "IdxFormatError", "load_fashion_mnist", "load_mnist", "read_idx"]

_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_DIMS = 8
_GZIP_MAGIC = b"\x1f\x8b"

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
"""Fashion-MNIST's class names, in label order 0..9."""


class IdxFormatError(ValueError):
    """A file that is not a valid IDX file (the message says which check failed)."""


def _reader(path: Path):
    """An open binary stream of the file's IDX bytes (decompressing gzip transparently)."""
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed there
    head = raw.read(2)
    raw.seek(0)
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb"), True, raw
    return raw, False, None


def _read_exact(stream, n: int, path: Path, what: str) -> bytes:
    try:
        data = stream.read(n)
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise IdxFormatError(f"{path}: the gzip stream is corrupt while reading {what} ({err}). "
                             "Download the file again.") from None
    if len(data) != n:
        raise IdxFormatError(f"{path}: truncated file: {what} needs {n} bytes but only "
                             f"{len(data)} remain. The download is probably incomplete.")
    return data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a native-endian NumPy array.

    Raises:
        FileNotFoundError: no such file.
        IdxFormatError: the file is not a well-formed IDX file (the message says why).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist (or is not a file).")
    stream, compressed, raw = _reader(path)
    try:
        magic = _read_exact(stream, 4, path, "the 4-byte magic number")
        if magic[:2] != b"\x00\x00":
            hint = " It looks like HTML (an error page?)." if magic[:1] == b"<" else ""
            raise IdxFormatError(f"{path}: not an IDX file: the magic number must start with "
                                 f"bytes 00 00, found {magic[:2].hex(' ')}.{hint}")
        if magic[2] not in _TYPES:
            known = ", ".join(f"0x{t:02X}" for t in _TYPES)
            raise IdxFormatError(f"{path}: unknown IDX data type 0x{magic[2]:02X}; known types: "
                                 f"{known}.")
        ndim = magic[3]
        if not 1 <= ndim <= _MAX_DIMS:
            raise IdxFormatError(f"{path}: the header declares {ndim} dimensions; expected 1 to "
                                 f"{_MAX_DIMS}.")
        dims_bytes = _read_exact(stream, 4 * ndim, path, f"the {ndim} dimension sizes")
        shape = tuple(int.from_bytes(dims_bytes[4 * i: 4 * i + 4], "big") for i in range(ndim))
        if 0 in shape:
            raise IdxFormatError(f"{path}: the header declares shape {shape} with a zero size; "
                                 "an IDX data file needs at least one value.")
        dtype = _TYPES[magic[2]]
        payload = math.prod(shape) * dtype.itemsize
        header = 4 + 4 * ndim
        if not compressed:
            size = path.stat().st_size
            if size < header + payload:
                raise IdxFormatError(
                    f"{path}: truncated file: the header declares shape {shape} of "
                    f"{dtype.name} ({header + payload} bytes in all) but the file has {size} "
                    "bytes. The download is probably incomplete.")
            if size > header + payload:
                raise IdxFormatError(
                    f"{path}: {size - header - payload} unexpected bytes after the data: the "
                    f"header declares shape {shape} of {dtype.name} ({header + payload} bytes) "
                    f"but the file has {size}. It is not a valid IDX file.")
        data = _read_exact(stream, payload, path, f"the data of shape {shape}")
        if _read_exact_or_empty(stream, path):
            raise IdxFormatError(f"{path}: unexpected bytes after the data declared by the "
                                 f"header (shape {shape} of {dtype.name}). It is not a valid "
                                 "IDX file.")
    finally:
        stream.close()
        if raw is not None:
            raw.close()
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _read_exact_or_empty(stream, path: Path) -> bool:
    """True if the stream has at least one more byte (read at most one)."""
    try:
        return len(stream.read(1)) > 0
    except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
        raise IdxFormatError(f"{path}: the gzip stream is corrupt after the data ({err}).") \
            from None


_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find(folder: Path, stem: str) -> Path:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"),
                      stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"{stem}[.gz] not found in {str(folder)!r}. Put the four MNIST / "
                            "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) there.")


def load_mnist(path: str | os.PathLike, kind: str = "train", images: bool = True,
               normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST (same file names and layout) from a local folder.

    Args:
        path: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
        kind: "train" (60,000 samples) or "test" (10,000).
        images: x as (N, 1, 28, 28) for a CNN; False gives flat (N, 784) vectors.
        normalize: scale pixels from 0..255 to [0, 1] float32 (False keeps uint8).

    Returns:
        x and y (int64 labels 0..9).

    Raises:
        IdxFormatError: a malformed file, images that are not (N, rows, cols) uint8, labels that
            are not (N,) uint8 in 0..9, or image and label counts that differ.
    """
    if kind not in _FILES:
        raise ValueError(f"kind must be 'train' or 'test', received {kind!r}.")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {str(folder)!r} does not exist.")
    image_file, label_file = (_find(folder, stem) for stem in _FILES[kind])
    x = read_idx(image_file)
    y = read_idx(label_file)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise IdxFormatError(f"{image_file}: expected uint8 images of shape (N, rows, cols), "
                             f"found {x.dtype} of shape {x.shape}.")
    if y.ndim != 1 or y.dtype != np.uint8:
        raise IdxFormatError(f"{label_file}: expected uint8 labels of shape (N,), found "
                             f"{y.dtype} of shape {y.shape}.")
    if len(x) != len(y):
        raise IdxFormatError(f"{image_file.name} has {len(x)} images but {label_file.name} has "
                             f"{len(y)} labels; the files do not belong together.")
    if y.max() > 9:
        raise IdxFormatError(f"{label_file}: labels must be 0..9, found {int(y.max())}.")
    x = x[:, None, :, :] if images else x.reshape(len(x), -1)
    if normalize:
        x = x.astype(np.float32) / 255.0
    return x, y.astype(np.int64)


def load_fashion_mnist(path: str | os.PathLike, kind: str = "train", images: bool = True,
                       normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST from a local folder (class names in :data:`FASHION_CLASSES`)."""
    return load_mnist(path, kind, images, normalize)
