"""The data pipeline: batching and splits, preprocessing, augmentation, data sets, IDX files.

Examples:
    >>> import portanet as pn
    >>> from portanet import data
    >>> x, y = data.make_spiral(n_samples=300, seed=0)
    >>> x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_size=0.2,
    ...                                                          stratify=True, seed=0)
    >>> scaler = data.StandardScaler().fit(x_train)       # statistics of the training part only
    >>> x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
"""

from . import augmentation
from .augmentation import Augment, random_crop, random_flip, random_rot90, random_shift
from .batching import (
    BatchIterator,
    iterate_batches,
    kfold_indices,
    shuffle_arrays,
    train_test_split,
    train_val_test_split,
)
from .datasets import (
    DATASETS,
    Dataset,
    load_dataset,
    load_digits,
    make_circles,
    make_noisy_sine,
    make_spiral,
    sklearn_available,
)
from .idx import FASHION_CLASSES, IdxFormatError, load_fashion_mnist, load_mnist, read_idx
from .preprocessing import (
    LabelEncoder,
    MinMaxScaler,
    OneHotEncoder,
    StandardScaler,
    balance_classes,
    class_weights,
    flatten,
    one_hot,
)

__all__ = [
    "DATASETS",
    "FASHION_CLASSES",
    "Augment",
    "BatchIterator",
    "Dataset",
    "IdxFormatError",
    "LabelEncoder",
    "MinMaxScaler",
    "OneHotEncoder",
    "StandardScaler",
    "augmentation",
    "balance_classes",
    "class_weights",
    "flatten",
    "iterate_batches",
    "kfold_indices",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "make_circles",
    "make_noisy_sine",
    "make_spiral",
    "one_hot",
    "random_crop",
    "random_flip",
    "random_rot90",
    "random_shift",
    "read_idx",
    "shuffle_arrays",
    "sklearn_available",
    "train_test_split",
    "train_val_test_split",
]
