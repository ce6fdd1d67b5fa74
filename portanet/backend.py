"""Which array library and device portanet computes on.

The active backend lives in a :class:`contextvars.ContextVar`, so each thread and each asyncio
task sees its own choice: ``use_backend`` in one thread never changes another's.

Examples:
    >>> import portanet as pn
    >>> pn.set_backend("numpy")
    Backend(name='numpy', device='cpu')
    >>> with pn.use_backend("array_api_strict", device="device1") as b:
    ...     b.name, b.device_name
    ('array_api_strict', 'device1')
    >>> pn.get_backend().name
    'numpy'
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from ._typing import Device, Namespace
from .backends import ADAPTERS, Adapter
from .errors import BackendError

BACKEND_NAMES = tuple(ADAPTERS)
"""Every backend portanet knows, installed or not."""


@dataclass(frozen=True)
class Backend:
    """An array library, its array API namespace ``xp`` and the device new arrays go to."""

    name: str
    xp: Namespace = field(repr=False)
    device: Device = field(repr=False)
    adapter: Adapter = field(repr=False, compare=False)

    @property
    def device_name(self) -> str:
        return self.adapter.device_name(self.device)

    def __repr__(self) -> str:
        return f"Backend(name={self.name!r}, device={self.device_name!r})"

    def synchronize(self, outputs: Any = None) -> None:
        """Wait until the work computing ``outputs`` is done on this backend's device (use
        before reading a timer).

        ``outputs`` is an array or a pytree of them (dicts, lists, tuples): what the timed code
        produced. CUDA backends wait for the whole device and need no outputs; JAX has no
        device-wide barrier and waits for exactly these arrays (without them it does a best
        effort, see ``Adapter.synchronize``). On the host it returns at once.
        """
        self.adapter.synchronize(self.device, outputs)


def _cuda_usable() -> bool:
    adapter = ADAPTERS["cupy"]
    return adapter.is_installed() and bool(adapter.devices())


def make_backend(name: str, device: Any = None) -> Backend:
    """Resolve ``name`` (and ``device``) to a :class:`Backend`, with errors that say the fix."""
    if not isinstance(name, str):
        raise BackendError(f"backend name must be a string, received {name!r} "
                           f"({type(name).__name__}); valid names: {_valid()}.")
    key = name.strip().lower().replace("-", "_")
    key = {"strict": "array_api_strict", "np": "numpy", "cp": "cupy"}.get(key, key)
    if key == "auto":
        key = "cupy" if _cuda_usable() else "numpy"
    if key not in ADAPTERS:
        raise BackendError(f"unknown backend {name!r}; valid names: {_valid()}.")
    adapter = ADAPTERS[key]
    if not adapter.is_installed():
        raise BackendError(
            f"backend {key!r} is not installed. Install it with: {adapter.install_hint}. "
            f"Installed backends here: {available_backends()}."
        )
    if adapter.needs_gpu and not adapter.devices():
        raise BackendError(
            f"backend {key!r} is installed but finds no usable CUDA device (no NVIDIA GPU, no "
            "driver, or a CuPy build that does not match the CUDA version). Fall back with "
            "set_backend('numpy') or set_backend('auto'), which picks cupy only when a GPU works."
        )
    return Backend(key, adapter.namespace(), adapter.parse_device(device), adapter)


def _valid() -> str:
    return ", ".join(repr(n) for n in (*BACKEND_NAMES, "auto"))


def _from_environment() -> Backend:
    name = os.environ.get("PORTANET_BACKEND", "numpy") or "numpy"
    device = os.environ.get("PORTANET_DEVICE") or None
    try:
        return make_backend(name, device)
    except BackendError as err:
        raise BackendError(f"from the environment (PORTANET_BACKEND={name!r}, "
                           f"PORTANET_DEVICE={device!r}): {err}") from None


_active: ContextVar[Backend | None] = ContextVar("portanet_backend", default=None)
_process_default: list[Backend] = []  # set_backend's choice, seen by threads started later


def get_backend() -> Backend:
    """The backend active in this thread/task: ``use_backend`` > ``set_backend`` > environment."""
    backend = _active.get()
    if backend is not None:
        return backend
    if not _process_default:
        _process_default.append(_from_environment())
    return _process_default[0]


def set_backend(name: str, device: Any = None) -> Backend:
    """Make ``name`` on ``device`` the backend for this context and the process default.

    Args:
        name: "numpy", "cupy", "torch", "jax", "array_api_strict" or "auto" (cupy when a CUDA
            device is usable, else numpy).
        device: the backend's device ("cpu", "cuda:0", "device1", ...); None for its default.

    Returns:
        The new :class:`Backend`.
    """
    backend = make_backend(name, device)
    _process_default[:] = [backend]
    _active.set(backend)
    return backend


@contextlib.contextmanager
def use_backend(name: str, device: Any = None):
    """Use ``name`` on ``device`` inside a ``with`` block, then restore the previous choice."""
    token = _active.set(make_backend(name, device))
    try:
        yield _active.get()
    finally:
        _active.reset(token)


def available_backends() -> list[str]:
    """Backends that are installed here AND have at least one usable device."""
    found = []
    for name, adapter in ADAPTERS.items():
        try:
            if adapter.is_installed() and adapter.devices():
                found.append(name)
        except Exception:  # a broken install is "not available", never a crash here
            continue
    return found


_ADAPTER_OF_TYPE: dict[type, Adapter] = {}  # array type -> adapter, filled as types are seen


def adapter_of(x: Any) -> Adapter:
    """The adapter of the library that ``x`` belongs to."""
    known = _ADAPTER_OF_TYPE.get(type(x))
    if known is not None:  # the hot path: one dict lookup per call
        return known
    import array_api_compat as compat

    checks = (
        ("numpy", compat.is_numpy_array),
        ("torch", compat.is_torch_array),
        ("cupy", compat.is_cupy_array),
        ("jax", compat.is_jax_array),
        ("array_api_strict", lambda a: type(a).__module__.startswith("array_api_strict")),
    )
    for name, is_kind in checks:
        if is_kind(x):
            _ADAPTER_OF_TYPE[type(x)] = ADAPTERS[name]
            return ADAPTERS[name]
    raise TypeError(f"expected an array of one of {list(BACKEND_NAMES)}, received "
                    f"{type(x).__module__}.{type(x).__name__}. Convert it with pn.asarray(...).")
