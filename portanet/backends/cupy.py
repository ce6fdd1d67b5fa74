"""CuPy: NumPy-compatible arrays on CUDA GPUs, devices ``cuda:N``.

Needs a CUDA build of CuPy (``pip install "portanet[cuda]"``) and a usable NVIDIA GPU.
"""

from __future__ import annotations

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

    def synchronize(self, device, outputs=None):
        # The whole device (all its streams), which covers whatever computes outputs.
        device.synchronize()

    def to_numpy(self, x):
        return x.get()

    def from_numpy(self, a, device):
        cp = self.library()
        with device:
            return cp.asarray(a)
