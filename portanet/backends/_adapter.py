"""The contract every backend adapter fulfils: only what the array API standard lacks.

An adapter knows how to import its library, list and parse its devices, make an on-device random
generator, compute ``erf`` natively where the library has it, bring an array to the host as NumPy,
and wait for queued device work (``synchronize``). Everything else is plain array API code.

An adapter may also offer *fused kernels*: one library call for an expression that the portable
code writes as several array operations (torch's ``threshold_backward`` for ReLU's backward).
``portanet/fused.py`` holds the portable form of each, calls the adapter's kernel where there is
one, and the tests compare the two.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, ClassVar

from .._typing import Array, Device, Namespace


class Adapter:
    """Base class of the backend adapters. Subclasses override what their library does natively."""

    name: ClassVar[str]
    module_name: ClassVar[str]  # what must be importable for the backend to exist
    install_hint: ClassVar[str]
    needs_gpu: ClassVar[bool] = False

    # -- library -----------------------------------------------------------------------------
    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module_name) is not None

    def library(self):
        return importlib.import_module(self.module_name)

    def version(self) -> str:
        return getattr(self.library(), "__version__", "unknown")

    def namespace(self) -> Namespace:
        """The array API namespace (array_api_compat's wrapper where the library needs one)."""
        raise NotImplementedError

    @functools.cached_property
    def xp(self) -> Namespace:
        """``namespace()``, looked up once (the one ``array_namespace`` gives this library's
        arrays), for hot paths that already hold the adapter."""
        return self.namespace()

    # -- devices -----------------------------------------------------------------------------
    def devices(self) -> list[Device]:
        """Usable devices, default first. Empty means the backend is installed but cannot run."""
        raise NotImplementedError

    def default_device(self) -> Device:
        return self.devices()[0]

    def device_names(self) -> list[str]:
        return [self.device_name(d) for d in self.devices()]

    def device_name(self, device: Device) -> str:
        return str(device)

    def parse_device(self, spec: Any) -> Device:
        """Turn a user's device spec (string, int, native object, None) into a native device."""
        if spec is None:
            return self.default_device()
        for d in self.devices():
            if spec == d or (isinstance(spec, str) and spec.lower() == self.device_name(d).lower()):
                return d
        raise self._bad_device(spec)

    def _bad_device(self, spec: Any):
        from ..errors import DeviceError

        return DeviceError(
            f"backend {self.name!r} has no device {spec!r}; its usable devices are "
            f"{self.device_names()}. Pass one of those, or device=None for the default."
        )

    # -- what the standard lacks ---------------------------------------------------------------
    def generator(self, seed: int, device: Device) -> Any:
        """A native random generator living on ``device`` (state advances with each draw)."""
        raise NotImplementedError

    def uniform(self, gen: Any, shape: tuple[int, ...], dtype: Any, device: Device) -> Array:
        """Draw U[0, 1) of ``shape`` and ``dtype`` on ``device`` from ``gen``."""
        raise NotImplementedError

    def normal(self, gen: Any, shape: tuple[int, ...], dtype: Any, device: Device) -> Array:
        """Draw N(0, 1) of ``shape`` and ``dtype`` on ``device`` from ``gen``."""
        raise NotImplementedError

    def permutation(self, gen: Any, n: int, device: Device) -> Array:
        """A random permutation of ``0..n-1`` as an int64 array on ``device``."""
        raise NotImplementedError

    functional_rng: ClassVar[bool] = False
    """True where the generator's state is a value (JAX's key) that each draw replaces: a
    compiled training step then takes the key in and hands the next one out
    (portanet/engine/state.py). Elsewhere generators advance in place and stay outside."""

    def generator_state(self, gen: Any) -> Any:
        """The state of a functional generator (JAX: its key)."""
        raise NotImplementedError(f"the {self.name} generator is not functional")

    def set_generator_state(self, gen: Any, state: Any) -> None:
        """Replace the state of a functional generator (JAX: its key)."""
        raise NotImplementedError(f"the {self.name} generator is not functional")

    # -- a generator's whole state as bytes (checkpoints resume exactly) ---------------------
    def generator_kind(self, gen: Any) -> str:
        """What :meth:`generator_bytes` holds ("numpy.PCG64", "torch.cpu", "jax.threefry2x32",
        ...). A saved state restores only into a generator of the same kind: another backend or
        device kind draws another stream anyway."""
        raise NotImplementedError(f"the {self.name} adapter cannot save a generator's state")

    def generator_bytes(self, gen: Any) -> Any:
        """The generator's state as a NumPy uint8 array on the host (a copy): everything it
        needs to continue with the same draws."""
        raise NotImplementedError(f"the {self.name} adapter cannot save a generator's state")

    def restore_generator(self, gen: Any, data: Any) -> None:
        """Put the state ``data`` (from :meth:`generator_bytes`, same kind) into ``gen``."""
        raise NotImplementedError(f"the {self.name} adapter cannot restore a generator's state")

    # -- threads -----------------------------------------------------------------------------
    def threads(self) -> int | None:
        """The library's intra-op CPU threads, where it has a setting for them (torch); None
        elsewhere."""
        return None

    def set_threads(self, n: int) -> None:
        """Set the library's intra-op CPU threads (a no-op where it has no such setting)."""

    erf_native: ClassVar[bool] = False

    def erf(self, x: Array) -> Array:
        """Native ``erf``; only called when ``erf_native`` is True."""
        raise NotImplementedError

    # -- fused kernels (optional; None: fused.py's portable form runs) -----------------------
    relu: ClassVar[Callable[[Array], Array] | None] = None
    """``x -> max(x, 0)``."""
    relu_backward: ClassVar[Callable[[Array, Array], Array] | None] = None
    """``(dy, y) -> dy where y > 0, else 0`` (``y`` is relu's output)."""
    gelu_backward: ClassVar[Callable[[Array, Array], Array] | None] = None
    """``(dy, x) -> dy * (Phi(x) + x phi(x))``, GELU's backward from its input ``x``."""
    bias_relu: ClassVar[Callable[[Array, Array], Array | None] | None] = None
    """``(z, b) -> max(z + b, 0)`` (NaN stays NaN), written into ``z`` (a layer's fresh GEMM
    output, which nothing else holds); returns it, or None where it cannot take these arrays
    (then the portable form runs)."""
    add_scaled_: ClassVar[Callable[[Array, Array, float], Array | None] | None] = None
    """``(p, d, alpha)``: ``p <- p + alpha * d`` written into the writeable ``p``; returns
    ``p``, or None where it cannot take these arrays (then the portable form runs)."""
    softmax_cross_entropy: ClassVar[Callable[[Array, Array], Any] | None] = None
    """``(z, ids) -> (per-sample loss, gradient of their sum)``, or None where it cannot take
    these arrays (then the portable form runs)."""

    # -- compiling a training step (optional) ---------------------------------------------------
    compiler: ClassVar[str | None] = None
    """The library's compiler of whole functions ("jax.jit", "torch.compile"), or None: the
    backend runs eagerly only (portanet/engine/executors.py)."""
    compile_by_default: ClassVar[bool] = False
    """Whether ``jit_compile="auto"`` compiles here: only where it measures faster."""
    donates_buffers: ClassVar[bool] = False
    """Whether ``compile``'s ``donate_argnums`` let the compiled function consume its inputs'
    buffers (jax.jit). Only then must the engine copy the arrays it did not produce first."""

    def compile(self, fn: Callable, donate_argnums: tuple[int, ...] = (),
                family: Any = None) -> Callable:
        """``fn`` compiled by the library, called like ``fn``; it compiles on the first call of
        each input signature (shapes and dtypes). ``donate_argnums``: arguments whose buffers
        the result may reuse (the caller must not use them again). ``family``: a hashable
        name shared by the functions that trace alike (one model architecture), for a
        compiler that caches by the function's code (torch's dynamo)."""
        raise NotImplementedError(f"the {self.name} backend has no compiler")

    def compiler_on(self, device: Device) -> str | None:
        """The compiler of a training step on ``device``: ``compiler``, or another one the
        library has for that device ("torch.cuda.graph" on CUDA, ``graph_recorder``)."""
        return self.compiler

    def graph_recorder(self, device: Device) -> Any:
        """A recorder of CUDA graphs on ``device`` (``engine/cuda_graph.py``'s ``Recorder``).
        Only where ``compiler_on(device)`` is "torch.cuda.graph"."""
        raise NotImplementedError(f"the {self.name} backend records no CUDA graphs")

    # -- memory layout of weight matrices ------------------------------------------------------
    weight_order: ClassVar[str] = "C"
    """How Dense lays out its kernel W, of shape (in, out), in memory: ``"C"``, row by row
    (NumPy's default), or ``"F"``, column by column, so that W^T is the C-contiguous (out, in)
    matrix, the layout of ``torch.nn.Linear``'s weight. The math is the same; a library's GEMM
    may be faster in one order (``backends/torch.py`` has the figures). Dense computes dL/dW in
    the kernel's order too, so the optimizer's update reads both in one contiguous pass."""

    def in_weight_order(self, w: Array) -> Array:
        """``w`` (2-D) laid out in :attr:`weight_order`: ``w`` itself where it already is."""
        return w

    def column_major(self, a: Array) -> bool:
        """Whether ``a`` is a 2-D array stored column by column (:attr:`weight_order` "F"), so
        that a copy or a view of it should keep that layout (``optimizers/flat.py``)."""
        return False

    # -- the optimizer's update over one buffer (optimizers/flat.py) ----------------------------
    def flat_update_on(self, device: Device) -> bool:
        """Whether an optimizer's update runs over one buffer of all parameters by default
        (``Optimizer(flat=None)``) on ``device``: where a call costs more than a pass over the
        gradients' memory (a GPU's kernel launch), never on the host, where it measured slower."""
        return False

    def copy_like(self, a: Array, like: Array) -> Array:
        """A copy of ``a`` in the dtype and memory layout of ``like`` (same shape and device).

        How a layer takes a caller's array (``set_parameters``) and an optimizer a loaded state:
        the copy keeps the layout of the array it replaces.
        """
        return self.xp.astype(a, like.dtype, copy=True)

    def synchronize(self, device: Device, outputs: Any = None) -> None:
        """Wait until the work that computes ``outputs`` has finished; read a timer after this.

        Libraries return from a call before a device has done the work in two ways, and they
        need different waits:

        * **A queue per device** (CUDA streams: CuPy, torch on ``cuda``). The adapter waits for
          everything queued on ``device`` (``cudaDeviceSynchronize``), which includes whatever
          computes ``outputs``; ``outputs`` may be left out.
        * **A future per array** (JAX). There is no device-wide barrier: the adapter must wait
          for the arrays themselves, so pass the step's outputs, every array it produced that
          the timing should cover (e.g. ``(loss, model.parameters())``: the loss alone is
          ready before the optimizer's update is). See ``backends/jax.py`` for what it does
          without them.

        On the host (NumPy, array-api-strict, torch on ``cpu``) every call returns finished
        arrays and this returns at once.

        Args:
            device: the device whose work to wait for.
            outputs: an array or a pytree of them (dicts, lists, tuples; other leaves are
                ignored), or None.
        """

    def to_numpy(self, x: Array):
        """A NumPy copy (or view, on the host) of ``x``."""
        import numpy as np

        return np.asarray(x)

    def from_numpy(self, a, device: Device) -> Array:
        """``a`` (a NumPy array) onto ``device``, keeping its dtype."""
        return self.namespace().asarray(a, device=device)
