"""Checkpoints: save a model on one backend, load it on any other, and never trust the file.

Two concepts, one module each, in the order they build on each other:

=======================  ====================================================================
``io/format.py``         the file: safetensors layout, portanet's metadata, format versions,
                         the checksum, atomic writing and temporary files, and every check a
                         read makes (:func:`read_checkpoint`, :func:`write_checkpoint`,
                         :class:`Checkpoint`, :class:`CheckpointError`)
``io/saving.py``         the model: what ``save`` puts into a :class:`Checkpoint` (refusing a
                         model ``load`` could not rebuild), and how ``load`` checks the
                         architecture's shapes and dtypes before it builds anything
                         (:func:`save`, :func:`load`, :func:`save_weights`,
                         :func:`load_weights`)
=======================  ====================================================================

Every name is available from here (``pn.io.save``, ``from portanet.io import CheckpointError``);
docs/checkpoints.md describes the file and its checks.

Examples:
    >>> import portanet as pn
    >>> model.save("digits.safetensors")                               # doctest: +SKIP
    >>> model = pn.load("digits.safetensors", backend="torch")        # doctest: +SKIP
    >>> pn.io.read_checkpoint("digits.safetensors").epoch              # doctest: +SKIP
    5
"""

from __future__ import annotations

from .format import (
    FORMAT,
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    Checkpoint,
    CheckpointError,
    read_checkpoint,
    write_checkpoint,
)
from .format import _digest as _digest  # private; tests forge valid checksums with it
from .saving import load, load_weights, save, save_weights

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "Checkpoint",
    "CheckpointError",
    "load",
    "load_weights",
    "read_checkpoint",
    "save",
    "save_weights",
    "write_checkpoint",
]
