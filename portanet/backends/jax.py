"""JAX arrays (immutable): devices ``cpu:N`` and, with a CUDA jaxlib, ``cuda:N``.

portanet turns on ``jax_enable_x64`` when this backend is first used: without it JAX silently
turns every float64 array into float32, which would break portanet's "dtype is kept" rule and
the float64 gradient checks. JAX's generator is functional (a key); the adapter keeps the key in
a small box and splits it on each draw, on the device, with no host round trip.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ._adapter import Adapter


class _KeyBox:
    """Mutable holder of a JAX PRNG key, so draws advance like a stateful generator."""

    def __init__(self, key):
        self.key = key

    def next(self):
        import jax

        self.key, sub = jax.random.split(self.key)
        return sub


class JaxAdapter(Adapter):
    name = "jax"
    module_name = "jax"
    install_hint = "pip install jax  (CPU); see JAX's docs for CUDA builds"
    erf_native = True

    def library(self):
        jax = super().library()
        if not jax.config.read("jax_enable_x64"):
            jax.config.update("jax_enable_x64", True)
        return jax

    def version(self):
        return self.library().__version__

    def namespace(self):
        self.library()
        import jax.numpy as jnp

        return jnp

    def devices(self):
        jax = self.library()
        found = []
        for platform in ("cpu", "cuda", "gpu"):
            with contextlib.suppress(RuntimeError):  # platform not present in this jaxlib
                found += [d for d in jax.devices(platform) if d not in found]
        return found

    def device_name(self, device):
        return f"{device.platform}:{device.id}"

    def parse_device(self, spec):
        if isinstance(spec, str) and ":" not in spec:
            spec = f"{spec}:0"
        if isinstance(spec, str) and spec.startswith("gpu:"):
            spec = "cuda:" + spec[4:]
        return super().parse_device(spec)

    def generator(self, seed, device):
        jax = self.library()
        return _KeyBox(jax.device_put(jax.random.key(seed), device))

    functional_rng = True
    compiler = "jax.jit"
    compile_by_default = True  # LeNet-5 step 104 -> ~16 ms on 2 cores (docs/benchmarks.md)
    donates_buffers = True

    def compile(self, fn, donate_argnums=(), family=None):
        return self.library().jit(fn, donate_argnums=donate_argnums)

    def generator_state(self, gen):
        return gen.key

    def set_generator_state(self, gen, state):
        gen.key = state

    def generator_kind(self, gen):
        return f"jax.{self.library().random.key_impl(gen.key)}"

    def generator_bytes(self, gen):
        data = np.asarray(self.library().random.key_data(gen.key))  # uint32 words
        return data.astype("<u4").view(np.uint8).copy()

    def restore_generator(self, gen, data):
        jax = self.library()
        words = np.asarray(data, dtype=np.uint8).view("<u4").astype(np.uint32)
        impl = str(jax.random.key_impl(gen.key))
        device = next(iter(gen.key.devices()))
        gen.key = jax.device_put(jax.random.wrap_key_data(words, impl=impl), device)

    def uniform(self, gen, shape, dtype, device):
        jax = self.library()
        return jax.device_put(jax.random.uniform(gen.next(), shape, dtype=dtype), device)

    def normal(self, gen, shape, dtype, device):
        jax = self.library()
        return jax.device_put(jax.random.normal(gen.next(), shape, dtype=dtype), device)

    def permutation(self, gen, n, device):
        jax = self.library()
        import jax.numpy as jnp

        return jax.device_put(jax.random.permutation(gen.next(), jnp.arange(n, dtype=jnp.int64)),
                              device)

    def erf(self, x):
        import jax.scipy.special

        return jax.scipy.special.erf(x)

    def synchronize(self, device, outputs=None):
        """Wait for ``outputs`` (``jax.block_until_ready`` on the pytree); see ``Adapter``.

        JAX dispatches asynchronously: each array is a future of the computation that makes it,
        and independent computations may run in any order. There is no device-wide barrier:
        waiting for a fresh array (``jax.device_put(0.0, device)``) waits for nothing queued
        before it, and a timer read after that measures the dispatch, not the work.

        Without ``outputs`` this is a best effort: it waits for every array still alive on
        ``device`` (``jax.live_arrays``), which covers work whose results are still referenced
        but not work whose results were already dropped, and it costs a pass over all live
        arrays. Pass the outputs wherever you have them.
        """
        jax = self.library()
        if outputs is None:
            outputs = [a for a in jax.live_arrays()
                       if not a.is_deleted() and device in a.devices()]
        jax.block_until_ready(outputs)

    def to_numpy(self, x):
        return np.asarray(x)

    def from_numpy(self, a, device):
        return self.library().device_put(a, device)
