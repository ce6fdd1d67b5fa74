"""portanet: a neural-network library written once against the Python array API standard."""

from . import ops, random
from .backend import Backend, available_backends, get_backend, set_backend, use_backend
from .devices import asarray, device_of, namespace_of, synchronize, to_backend, to_numpy
from .errors import BackendError, DeviceError, MixedArraysError

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "DeviceError",
    "MixedArraysError",
    "__version__",
    "asarray",
    "available_backends",
    "device_of",
    "get_backend",
    "namespace_of",
    "ops",
    "random",
    "set_backend",
    "synchronize",
    "to_backend",
    "to_numpy",
    "use_backend",
]
