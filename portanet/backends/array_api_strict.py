"""array-api-strict: the conformance backend. It refuses anything outside the standard, and its
fake devices (``CPU_DEVICE``, ``device1``, ``device2``) catch arrays created on the wrong device.

It has no random generator or ``erf`` of its own, so draws come from a NumPy generator and are
wrapped onto the requested device (the data lives in host memory anyway).
"""

from __future__ import annotations

import numpy as np

from ._adapter import Adapter
from .numpy import PCG64Generators


class ArrayApiStrictAdapter(PCG64Generators, Adapter):
    name = "array_api_strict"
    module_name = "array_api_strict"
    install_hint = "pip install array-api-strict"

    def namespace(self):
        return self.library()

    def devices(self):
        xp = self.library()
        return [xp.Device("CPU_DEVICE"), xp.Device("device1"), xp.Device("device2")]

    def device_name(self, device):
        return device._device if hasattr(device, "_device") else str(device)

    def parse_device(self, spec):
        if isinstance(spec, str) and spec.lower() == "cpu":
            spec = "CPU_DEVICE"
        return super().parse_device(spec)

    def generator(self, seed, device):
        return np.random.Generator(np.random.PCG64(seed))

    def _wrap(self, a, device):
        return self.library().asarray(a, device=device)

    def uniform(self, gen, shape, dtype, device):
        return self._wrap(gen.random(shape).astype(_np_dtype(dtype)), device)

    def normal(self, gen, shape, dtype, device):
        return self._wrap(gen.standard_normal(shape).astype(_np_dtype(dtype)), device)

    def permutation(self, gen, n, device):
        return self._wrap(gen.permutation(n).astype(np.int64), device)

    def to_numpy(self, x):
        xp = self.library()
        return np.asarray(xp.asarray(x, device=xp.Device("CPU_DEVICE"), copy=True)
                          if x.device != xp.Device("CPU_DEVICE") else x)

    def from_numpy(self, a, device):
        return self.library().asarray(a, device=device)


def _np_dtype(dtype):
    return np.dtype(str(dtype).rsplit(".", 1)[-1])
