"""NumPy: the reference backend, always installed, one device (the host CPU)."""

from __future__ import annotations

import functools

import numpy as np

from ._adapter import Adapter


class PCG64Generators:
    """Saving and restoring the NumPy PCG64 generators the numpy and array-api-strict adapters
    draw from (their states are interchangeable: the same bytes, the same draws)."""

    def generator_kind(self, gen):
        return "numpy.PCG64"

    def generator_bytes(self, gen):
        return pcg64_bytes(gen)

    def restore_generator(self, gen, data):
        restore_pcg64(gen, data)


class NumpyAdapter(PCG64Generators, Adapter):
    name = "numpy"
    module_name = "numpy"
    install_hint = "pip install numpy"

    def namespace(self):
        # The same namespace array_namespace(x) gives for a NumPy array, so that code holding a
        # Backend and code holding only data see one xp (it fills NumPy 1.x/2.x gaps).
        import array_api_compat.numpy as compat_np

        return compat_np

    def devices(self):
        return ["cpu"]

    @functools.cached_property
    def erf_native(self) -> bool:  # type: ignore[override]
        # NumPy has no erf; SciPy's compiled one is ~3x faster than the portable rational
        # form, so it is used when SciPy happens to be installed (it is not a dependency).
        import importlib.util

        return importlib.util.find_spec("scipy") is not None

    def erf(self, x):
        from scipy.special import erf

        return erf(x)

    def relu(self, x):
        # max(x, 0) against a row of zeros rather than the scalar 0: NumPy 2.4 runs maximum's
        # SIMD loop for two array operands and a slower generic loop for an array and a scalar
        # (float32, measured: (128, 512) 19 vs 35 us, (1024, 512) 119 vs 256 us). Same values,
        # NaN included.
        return np.maximum(x, np.zeros(x.shape[-1:], x.dtype))

    def bias_relu(self, z, b):
        # Both passes of the portable form (z += b, then relu against a row of zeros) written
        # into z instead of a new array (float32, best of 5: (128, 512) 49 vs 77 us,
        # (1024, 512) 316 vs 538 us).
        if b.dtype != z.dtype or z.shape[-1:] != b.shape or not z.flags.writeable:
            return None
        np.add(z, b, out=z)
        return np.maximum(z, np.zeros(z.shape[-1:], z.dtype), out=z)

    def softmax_cross_entropy(self, z, ids):
        # The formula of fused.softmax_cross_entropy with NumPy's fancy indexing: z[n, t_n] is
        # read directly and the one-hot subtracted in place, instead of building the one-hot
        # (measured at (128, 10) float32: 40 vs 62 us).
        if z.ndim != 2:
            return None
        n_samples, n_classes = z.shape
        shifted = z - z.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        valid = (ids >= 0) & (ids < n_classes)
        safe = np.where(valid, ids, 0)
        rows = np.arange(n_samples)
        loss = np.log(total[:, 0]) - shifted[rows, safe]
        grad = np.divide(exp, total, out=exp)  # softmax, into exp's array
        grad[rows, safe] -= valid
        return np.where(valid, loss, np.nan), grad

    def generator(self, seed, device):
        return np.random.Generator(np.random.PCG64(seed))

    def uniform(self, gen, shape, dtype, device):
        return gen.random(shape, dtype=dtype) if dtype in (np.float32, np.float64) else \
            gen.random(shape).astype(dtype)

    def normal(self, gen, shape, dtype, device):
        return gen.standard_normal(shape, dtype=dtype)

    def permutation(self, gen, n, device):
        return gen.permutation(n).astype(np.int64, copy=False)

    def to_numpy(self, x):
        return np.asarray(x)

    def from_numpy(self, a, device):
        return a


def host_generator(seed: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    """A host generator for ``seed`` and sub-stream ``stream`` (e.g. the layer index).

    ``SeedSequence(seed, spawn_key=stream)`` gives statistically independent streams that do not
    depend on how many numbers other streams drew, so adding a layer never changes another's init.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=stream)))


def pcg64_bytes(gen: np.random.Generator) -> np.ndarray:
    """A PCG64 generator's whole state as 40 little-endian bytes: the 128-bit state and
    increment, then the buffered half of a 64-bit draw (a flag and 32 bits)."""
    s = gen.bit_generator.state
    raw = (s["state"]["state"].to_bytes(16, "little") + s["state"]["inc"].to_bytes(16, "little")
           + int(s["has_uint32"]).to_bytes(4, "little") + int(s["uinteger"]).to_bytes(4, "little"))
    return np.frombuffer(raw, dtype=np.uint8).copy()


def restore_pcg64(gen: np.random.Generator, data: np.ndarray) -> None:
    """Put 40 bytes from :func:`pcg64_bytes` back into a PCG64 generator."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    if len(raw) != 40:
        raise ValueError(f"a PCG64 state has 40 bytes, received {len(raw)}.")
    gen.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int.from_bytes(raw[:16], "little"),
                  "inc": int.from_bytes(raw[16:32], "little")},
        "has_uint32": int.from_bytes(raw[32:36], "little"),
        "uinteger": int.from_bytes(raw[36:40], "little"),
    }


def fresh_seed() -> int:
    """A seed from the operating system's entropy, for ``seed=None``."""
    return int(np.random.SeedSequence().entropy % (2**63))
