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

from . import augmentation, sequences, text
from .augmentation import (
    Augment,
    random_brightness,
    random_contrast,
    random_crop,
    random_flip,
    random_grayscale,
    random_rot90,
    random_rotation,
    random_shift,
    random_zoom,
)
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
from .sequences import (
    ADDING_BASELINE_MSE,
    draw_patterns,
    lengths_from_mask,
    make_adding_problem,
    make_copy_task,
    make_pattern_classification,
    make_reverse_task,
    make_sign_of_sum,
    make_sine_forecast,
    mask_from_lengths,
    pad_sequences,
)
from .text import (
    TEXT_CORPORA,
    CharTokenizer,
    char_lm_windows,
    generate_text,
    load_text_corpus,
    sample_next,
)

__all__ = [
    "ADDING_BASELINE_MSE",
    "DATASETS",
    "FASHION_CLASSES",
    "TEXT_CORPORA",
    "Augment",
    "BatchIterator",
    "CharTokenizer",
    "Dataset",
    "IdxFormatError",
    "LabelEncoder",
    "MinMaxScaler",
    "OneHotEncoder",
    "StandardScaler",
    "augmentation",
    "balance_classes",
    "char_lm_windows",
    "class_weights",
    "draw_patterns",
    "flatten",
    "generate_text",
    "iterate_batches",
    "kfold_indices",
    "lengths_from_mask",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_text_corpus",
    "make_adding_problem",
    "make_circles",
    "make_copy_task",
    "make_noisy_sine",
    "make_pattern_classification",
    "make_reverse_task",
    "make_sign_of_sum",
    "make_sine_forecast",
    "make_spiral",
    "mask_from_lengths",
    "one_hot",
    "pad_sequences",
    "random_brightness",
    "random_contrast",
    "random_crop",
    "random_flip",
    "random_grayscale",
    "random_rot90",
    "random_rotation",
    "random_shift",
    "random_zoom",
    "read_idx",
    "sample_next",
    "sequences",
    "shuffle_arrays",
    "sklearn_available",
    "text",
    "train_test_split",
    "train_val_test_split",
]
