"""Batching, shuffling and splitting: how a data set is cut into the pieces training uses.

Two kinds of randomness, as everywhere in portanet (see ``portanet.random``):

* **Splits** (train/validation/test, k folds) are decided once, on the host, from a seed: the
  same seed gives the same split on every backend, so results stay comparable.
* **Per-epoch shuffles** of a batch iterator are drawn on the device by ``pn.random.Generator``
  (one permutation per epoch, one ``xp.take``, then every batch is a slice): no host round trip.
  ``shuffle="host"`` draws the permutation on the host from the seed instead, which gives the
  same order on every backend (one small transfer per epoch) -- what cross-backend parity runs
  need. In both modes epoch e's order is a function of (seed, e) alone, so a run resumed at
  epoch e shuffles as if it had never stopped.

Examples:
    >>> import numpy as np
    >>> from portanet.data import BatchIterator, train_test_split
    >>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10)
    >>> x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, seed=0)
    >>> x_tr.shape, x_te.shape
    ((7, 2), (3, 2))
    >>> [xb.shape[0] for xb, yb in BatchIterator(x_tr, y_tr, batch_size=3)]
    [3, 3, 1]
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .._typing import Array
from ..backend import adapter_of
from ..random import Generator, fresh_seed, host_generator
from ._util import as_array, check_same_length, host_labels, namespace_and_device, take_rows

__all__ = [
    "BatchIterator",
    "iterate_batches",
    "kfold_indices",
    "shuffle_arrays",
    "train_test_split",
    "train_val_test_split",
]


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, received {batch_size!r}.")
    return batch_size


class BatchIterator:
    """Mini-batches of one or more arrays that share their first (sample) axis.

    Each pass (``iter(batches)``) is one epoch. With ``shuffle=True`` the epoch's order is one
    on-device permutation, applied with a single ``xp.take``; the batches are then slices of the
    shuffled arrays, so no index array crosses to the host.

    Args:
        *arrays: arrays of one backend and device with the same length N (``None`` is skipped).
        batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
        shuffle: False (in order), True (device permutation) or "host" (host permutation
            from ``seed``: the same order on every backend).
        generator: a ``pn.random.Generator`` that draws every epoch's device permutation in
            turn (its state then decides the order). None (the default): epoch e's order
            comes from a generator seeded from (seed, e) on the arrays' backend and device.
        seed: seed of the shuffles (None: fresh entropy, kept in ``self.seed``).
        drop_last: drop a final batch smaller than ``batch_size``.
        start_epoch: the epoch number of the first pass; shuffles depend only on
            (seed, epoch), so a run resumed at epoch e shuffles as if it had never stopped.

    Examples:
        >>> import numpy as np
        >>> batches = BatchIterator(np.arange(5), batch_size=2, shuffle=True, seed=0)
        >>> len(batches), [len(b[0]) for b in batches]
        (3, [2, 2, 1])
    """

    def __init__(self, *arrays: Array, batch_size: int = 32, shuffle: bool | str = False,
                 generator: Generator | None = None, seed: int | None = None,
                 drop_last: bool = False, start_epoch: int = 0):
        if not arrays or all(a is None for a in arrays):
            raise ValueError("BatchIterator needs at least one array.")
        self.arrays = [None if a is None else as_array(a, f"array {i}")
                       for i, a in enumerate(arrays)]
        present = [a for a in self.arrays if a is not None]
        self.n = check_same_length(**{f"array {i}": a for i, a in enumerate(present)})
        self.xp, self.device = namespace_and_device(*present)
        self.batch_size = _check_batch_size(batch_size)
        if shuffle not in (True, False, "host"):
            raise ValueError(f"shuffle must be True, False or 'host', received {shuffle!r}.")
        self.shuffle = shuffle
        self.drop_last = bool(drop_last)
        self.seed = fresh_seed() if seed is None else seed
        self._epoch = int(start_epoch)
        self.generator = generator
        self._backend = adapter_of(present[0]).name

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def permutation(self) -> Array | None:
        """This epoch's order as an int64 array on the device (None when not shuffling)."""
        if self.shuffle is True:
            generator = self.generator
            if generator is None:
                # stream (epoch, 1): this epoch's own device generator, apart from the host
                # shuffles' stream (epoch,)
                epoch_seed = int(host_generator(self.seed, (self._epoch, 1)).integers(2**63))
                generator = Generator(epoch_seed, backend=self._backend, device=self.device)
            return generator.permutation(self.n)
        if self.shuffle == "host":
            # stream=(epoch,): each epoch's order depends only on (seed, epoch), on every backend
            perm = host_generator(self.seed, (self._epoch,)).permutation(self.n)
            present = next(a for a in self.arrays if a is not None)
            return adapter_of(present).from_numpy(perm.astype(np.int64), self.device)
        return None

    def __iter__(self) -> Iterator[tuple[Array, ...]]:
        perm = self.permutation()
        self._epoch += 1
        arrays = self.arrays
        if perm is not None:
            arrays = [None if a is None else self.xp.take(a, perm, axis=0) for a in arrays]
        for i in range(len(self)):
            start = i * self.batch_size
            stop = min(start + self.batch_size, self.n)
            yield tuple(None if a is None else a[start:stop, ...] for a in arrays)


def iterate_batches(*arrays: Array, batch_size: int = 32, shuffle: bool | str = False,
                    seed: int | None = None, drop_last: bool = False):
    """One epoch of mini-batches (a shortcut for ``iter(BatchIterator(...))``)."""
    return iter(BatchIterator(*arrays, batch_size=batch_size, shuffle=shuffle, seed=seed,
                              drop_last=drop_last))


def shuffle_arrays(*arrays: Array, seed: int | None = None) -> tuple[Array, ...]:
    """The arrays with their rows in one shared random order, drawn on the host from ``seed``.

    Examples:
        >>> import numpy as np
        >>> a, b = shuffle_arrays(np.arange(4), np.arange(4) * 10, seed=1)
        >>> bool(((b // 10) == a).all())
        True
    """
    arrays = tuple(as_array(a, f"array {i}") for i, a in enumerate(arrays))
    n = check_same_length(**{f"array {i}": a for i, a in enumerate(arrays)})
    perm = host_generator(_seed(seed)).permutation(n)
    return tuple(take_rows(a, perm) for a in arrays)


def _seed(seed: int | None) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**63))
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, received {seed!r}.")
    return seed


def _count(size: float | int, n: int, what: str) -> int:
    """A split size given as a fraction in (0, 1) or an absolute count -> a count."""
    if isinstance(size, bool):
        raise TypeError(f"{what} must be a fraction or a count, received {size!r}.")
    if isinstance(size, float):
        if not 0.0 < size < 1.0:
            raise ValueError(f"{what} as a fraction must be in (0, 1), received {size!r}.")
        return max(1, round(size * n))
    if isinstance(size, int):
        if not 0 < size < n:
            raise ValueError(f"{what} as a count must be in [1, {n - 1}] for {n} samples, "
                             f"received {size!r}.")
        return size
    raise TypeError(f"{what} must be a float fraction or an int count, received "
                    f"{type(size).__name__}.")


def _split_indices(n: int, n_test: int, labels: np.ndarray | None,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Host indices of (train, test), random, optionally keeping class proportions."""
    rng = host_generator(seed)
    if labels is None:
        perm = rng.permutation(n)
        return np.sort(perm[n_test:]), np.sort(perm[:n_test])
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        rare = classes[counts.argmin()].tolist()
        raise ValueError(f"stratified split needs at least 2 samples per class; class {rare!r} "
                         "has 1. Merge rare classes or split without stratify.")
    # Largest-remainder allocation: each class gives round-down of its share, then the classes
    # with the largest remainders give one more, so the totals are exact.
    share = counts * (n_test / n)
    take = np.floor(share).astype(int)
    order = np.argsort(-(share - take), kind="stable")
    take[order[: n_test - take.sum()]] += 1
    take = np.clip(take, 1, counts - 1)  # every class on both sides
    test = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        test.append(members[rng.permutation(len(members))[:k]])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(n), test, assume_unique=True)
    return train, test


def train_test_split(x: Array, y: Array | None = None, test_size: float | int = 0.2,
                     stratify: bool = False, seed: int | None = 0):
    """Split ``x`` (and ``y``) into a random training part and a test part.

    Args:
        x: inputs (N, ...), any backend; the parts stay on its device.
        y: targets (N, ...) or None.
        test_size: fraction of samples in (0, 1) or a count.
        stratify: keep each class's proportion in both parts (``y`` holds class labels or
            one-hot rows; they are read on the host once).
        seed: the host seed deciding the split (same split on every backend).

    Returns:
        ``(x_train, x_test)`` or, with ``y``, ``(x_train, x_test, y_train, y_test)``.
    """
    x = as_array(x, "x")
    y = None if y is None else as_array(y, "y")
    n = check_same_length(x=x, y=y)
    n_test = _count(test_size, n, "test_size")
    if n_test >= n:
        raise ValueError(f"test_size={test_size!r} leaves no training samples out of {n}.")
    if stratify and y is None:
        raise ValueError("stratify=True needs the class labels y.")
    labels = host_labels(y) if stratify else None
    train, test = _split_indices(n, n_test, labels, _seed(seed))
    if y is None:
        return take_rows(x, train), take_rows(x, test)
    return take_rows(x, train), take_rows(x, test), take_rows(y, train), take_rows(y, test)


def train_val_test_split(x: Array, y: Array, val_size: float | int = 0.1,
                         test_size: float | int = 0.2, stratify: bool = False,
                         seed: int | None = 0):
    """Three parts: ``(x_train, x_val, x_test, y_train, y_val, y_test)``.

    Sizes are fractions of the whole set (or counts). The test part is split off first, then the
    validation part from the rest, both from the same host seed.
    """
    x, y = as_array(x, "x"), as_array(y, "y")
    n = check_same_length(x=x, y=y)
    n_test = _count(test_size, n, "test_size")
    n_val = _count(val_size, n, "val_size")
    if n_test + n_val >= n:
        raise ValueError(f"val_size={val_size!r} and test_size={test_size!r} leave no training "
                         f"samples out of {n}.")
    seed = _seed(seed)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, n_test, stratify, seed)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, n_val, stratify, seed + 1)
    return x_train, x_val, x_test, y_train, y_val, y_test


def kfold_indices(n: int, k: int = 5, labels: Any = None, shuffle: bool = True,
                  seed: int | None = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Host index arrays ``(train, test)`` for each of ``k`` folds of ``n`` samples.

    Every sample is in exactly one test fold; fold sizes differ by at most one. With
    ``labels`` the folds are stratified: each class is dealt round-robin over the folds, so
    each fold keeps the class proportions.

    Examples:
        >>> [len(test) for _, test in kfold_indices(10, k=3, shuffle=False)]
        [4, 3, 3]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2, received {k!r}.")
    if k > n:
        raise ValueError(f"k={k} folds need at least {k} samples, received {n}.")
    rng = host_generator(_seed(seed))
    if labels is None:
        order = rng.permutation(n) if shuffle else np.arange(n)
        folds = np.array_split(order, k)
    else:
        labels = host_labels(as_array(labels, "labels"))
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries, expected {n}.")
        buckets: list[list[int]] = [[] for _ in range(k)]
        position = 0
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            if shuffle:
                members = members[rng.permutation(len(members))]
            for m in members:  # deal the class round-robin, continuing where the last ended
                buckets[position % k].append(int(m))
                position += 1
        folds = [np.asarray(b, dtype=np.int64) for b in buckets]
    result = []
    for i in range(k):
        test = np.sort(folds[i])
        train = np.sort(np.concatenate([folds[j] for j in range(k) if j != i]))
        result.append((train, test))
    return result

