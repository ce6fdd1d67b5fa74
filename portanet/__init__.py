"""portanet: a neural-network library written once against the Python array API standard.

    >>> import portanet as pn
    >>> pn.get_backend().name in pn.available_backends()
    True
"""

from . import (
    activations,
    callbacks,
    clipping,
    data,
    distributed,
    engine,
    initializers,
    io,
    layers,
    losses,
    metrics,
    ops,
    optimizers,
    random,
    regularizers,
    schedules,
    training,
    tuning,
)
from ._version import __version__
from .backend import Backend, available_backends, get_backend, set_backend, use_backend
from .devices import asarray, device_of, namespace_of, synchronize, to_backend, to_numpy
from .errors import BackendError, DeviceError, MixedArraysError
from .explain import explain  # the function; its module: see the module docstring
from .gradcheck import gradcheck  # the function, as torch.autograd.gradcheck; module: see its doc
from .io import load
from .lr_finder import lr_finder  # the function; the range test is a training loop (floor 5)
from .model import Sequential

__all__ = [
    "Backend",
    "BackendError",
    "DeviceError",
    "MixedArraysError",
    "Sequential",
    "__version__",
    "activations",
    "asarray",
    "available_backends",
    "callbacks",
    "clipping",
    "data",
    "device_of",
    "distributed",
    "engine",
    "explain",
    "get_backend",
    "gradcheck",
    "initializers",
    "io",
    "layers",
    "load",
    "losses",
    "lr_finder",
    "metrics",
    "namespace_of",
    "ops",
    "optimizers",
    "random",
    "regularizers",
    "schedules",
    "set_backend",
    "synchronize",
    "to_backend",
    "to_numpy",
    "training",
    "tuning",
    "use_backend",
]
