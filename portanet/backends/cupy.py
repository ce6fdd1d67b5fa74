"""CuPy: NumPy-compatible arrays on CUDA GPUs, devices ``cuda:N``.

Needs a CUDA build of CuPy (``pip install "portanet[cuda]"``) and a usable NVIDIA GPU.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import numpy as np

from ._adapter import Adapter


class CupyAdapter(Adapter):
    name = "cupy"
    module_name = "cupy"
    install_hint = 'pip install "portanet[cuda]"  (cupy-cuda12x; cupy-cuda11x on CUDA 11)'
    needs_gpu = True
    erf_native = True

    def namespace(self):
        import array_api_compat.cupy as xp

        return xp

    def devices(self):
        try:
            cp = self.library()
            count = cp.cuda.runtime.getDeviceCount()
        except Exception:  # no driver, no device, broken install: all mean "not usable"
            return []
        return [cp.cuda.Device(i) for i in range(count)]

    def device_name(self, device):
        return f"cuda:{device.id}"

    def parse_device(self, spec):
        if isinstance(spec, str):
            head, _, idx = spec.lower().partition(":")
            if head in ("cuda", "gpu"):
                spec = int(idx or 0)
        if isinstance(spec, int):
            for d in self.devices():
                if d.id == spec:
                    return d
            raise self._bad_device(spec)
        return super().parse_device(spec)

    # Philox with 2**14 thread states of 64 bytes (1 MiB). cupy.random.default_rng keeps
    # 2.56 million XORWOW states (117 MiB): too much to copy into every checkpoint, and the
    # state is what a checkpoint saves so that a resumed run draws the same masks.
    _GENERATOR_THREADS = 2**14

    def generator(self, seed, device):
        cp = self.library()
        with device:
            return cp.random.Generator(cp.random.Philox4x3210(seed, size=self._GENERATOR_THREADS))

    def generator_kind(self, gen):
        bits = gen.bit_generator
        return f"cupy.{type(bits).__name__}.{bits._size}"

    def generator_bytes(self, gen):
        return self.library().asnumpy(gen.bit_generator._state).view(np.uint8).copy()

    def restore_generator(self, gen, data):
        state = gen.bit_generator._state
        with self.library().cuda.Device(state.device.id):
            state[...] = self.library().asarray(np.asarray(data, dtype=np.uint8).view(np.int8))

    def uniform(self, gen, shape, dtype, device):
        with device:
            return gen.random(shape, dtype=dtype)

    def normal(self, gen, shape, dtype, device):
        with device:
            return gen.standard_normal(shape, dtype=dtype)

    def permutation(self, gen, n, device):
        cp = self.library()
        with device:
            return gen.permutation(n).astype(cp.int64, copy=False)

    def erf(self, x):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    # -- fused kernels: one pass each where the portable form makes two or three -------------
    # CuPy cannot record cuBLAS in a CUDA graph (CuPy #6290: setStream raises during capture),
    # so on CuPy the elementwise chains around the GEMMs are fused instead. Each kernel is the
    # formula of the portable form in fused.py, in CUDA C; tests/test_fused.py compares the two
    # on a CUDA device (written without one: no GPU was lent to the session that wrote them).
    # (in_params, out_params, operation, name): CuPy's ElementwiseKernel arguments. Kept as
    # data so that tests/test_cupy_kernels.py can compile each operation on the host (C++) and
    # compare it with the portable form without a GPU. An out param is read and written in place.
    _KERNEL_SOURCES: ClassVar[dict[str, tuple[str, str, str, str]]] = {
        # ReLU's derivative from its output, times dy: dy where y > 0, else 0
        "relu_backward": ("T dy, T y", "T dx", "dx = y > (T)0 ? dy : (T)0",
                          "portanet_relu_backward"),
        # GELU's derivative from its input, times dy: Phi(x) + x phi(x)
        "gelu_backward": ("T dy, T x", "T dx",
                          "const T cdf = (T)0.5 * ((T)1 + erf(x * (T)0.70710678118654752));"
                          "const T pdf = (T)0.39894228040143268 * exp((T)-0.5 * x * x);"
                          "dx = dy * (cdf + x * pdf)", "portanet_gelu_backward"),
        # max(z + b, 0), into z (b broadcast over the rows); NaN < 0 is false: NaN stays
        "bias_relu": ("T b", "T z", "const T v = z + b; z = v < (T)0 ? (T)0 : v",
                      "portanet_bias_relu"),
        # p <- p + alpha * d, into p
        "add_scaled_": ("T d, T alpha", "T p", "p += alpha * d", "portanet_add_scaled"),
    }

    @functools.cached_property
    def _kernels(self):
        cp = self.library()
        return {k: cp.ElementwiseKernel(*source) for k, source in self._KERNEL_SOURCES.items()}

    def relu_backward(self, dy, y):
        return self._kernels["relu_backward"](dy, y)

    def gelu_backward(self, dy, x):
        return self._kernels["gelu_backward"](dy, x)

    def bias_relu(self, z, b):
        if b.dtype != z.dtype or b.ndim != 1 or z.shape[-1:] != b.shape:
            return None  # the portable form broadcasts and promotes
        self._kernels["bias_relu"](b, z)
        return z

    def add_scaled_(self, p, d, alpha):
        if d.dtype != p.dtype or d.shape != p.shape or not isinstance(alpha, (int, float)):
            return None  # the portable form broadcasts and promotes
        self._kernels["add_scaled_"](d, alpha, p)
        return p

    def flat_update_on(self, device):
        # Launch-bound, as torch on CUDA: one buffer turns a dozen kernels per parameter into
        # a dozen in all (optimizers/flat.py). Not measured yet: no GPU was lent so far.
        return True

    def synchronize(self, device, outputs=None):
        # The whole device (all its streams), which covers whatever computes outputs.
        device.synchronize()

    def to_numpy(self, x):
        return x.get()

    def from_numpy(self, a, device):
        cp = self.library()
        with device:
            return cp.asarray(a)
