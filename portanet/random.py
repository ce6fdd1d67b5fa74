"""Randomness, two kinds.

* **Host draws for initial values.** Weights are drawn in float64 on the host by a NumPy
  generator seeded through ``SeedSequence``, cast to the target dtype on the host, then moved to
  the backend. The same seed therefore gives bit-identical initial weights on every backend.
* **Device draws for per-step randomness** (dropout masks, shuffles). :class:`Generator` wraps the
  backend's own generator on the device: reproducible per backend and seed, never a host round
  trip per step. Different backends give different (equally valid) streams.

Examples:
    >>> import portanet as pn
    >>> w = pn.random.host_normal(seed=0, shape=(2, 3), stream=(1,))   # NumPy float64
    >>> gen = pn.random.Generator(seed=0)                               # on the active backend
    >>> mask = gen.bernoulli((4, 5), p=0.8, dtype="float32")
"""

from __future__ import annotations

from typing import Any

from ._typing import Array, Shape
from .backend import Backend, get_backend, make_backend
from .backends.numpy import fresh_seed, host_generator
from .devices import resolve_dtype

__all__ = ["Generator", "fresh_seed", "host_generator", "host_normal", "host_uniform"]


def host_uniform(seed: int, shape: Shape, low: float = 0.0, high: float = 1.0,
                 stream: tuple[int, ...] = ()):
    """U[low, high) in float64 on the host (a NumPy array), from ``seed`` and ``stream``."""
    return host_generator(seed, stream).uniform(low, high, size=shape)


def host_normal(seed: int, shape: Shape, mean: float = 0.0, std: float = 1.0,
                stream: tuple[int, ...] = ()):
    """N(mean, std^2) in float64 on the host (a NumPy array), from ``seed`` and ``stream``."""
    return host_generator(seed, stream).normal(mean, std, size=shape)


def _check_shape(shape: Any) -> Shape:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"shape must be non-negative ints, received {shape!r}.")
    return shape


class Generator:
    """A random generator living on a backend's device.

    Args:
        seed: an int for reproducible draws; None for fresh OS entropy.
        backend: a backend name, or None for the active backend.
        device: the backend's device; None for the backend's device.
    """

    def __init__(self, seed: int | None = None, backend: str | Backend | None = None,
                 device: Any = None):
        if isinstance(backend, Backend):
            self.backend = backend if device is None else make_backend(backend.name, device)
        elif backend is None and device is None:
            self.backend = get_backend()
        else:
            self.backend = make_backend(backend or get_backend().name, device)
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, received {seed!r}.")
        self.seed = fresh_seed() if seed is None else seed
        self._native = self.backend.adapter.generator(self.seed, self.backend.device)

    def __repr__(self) -> str:
        return f"Generator(seed={self.seed}, backend={self.backend!r})"

    @property
    def native(self) -> Any:
        """The library's own generator object (a ``torch.Generator``, a NumPy ``Generator``,
        a JAX key holder); replaced by :meth:`reseed`. What a CUDA graph registers."""
        return self._native

    @property
    def functional(self) -> bool:
        """True where the state is a value that each draw replaces (JAX's key): a compiled
        training step threads it through (:meth:`get_state`, :meth:`set_state`)."""
        return self.backend.adapter.functional_rng

    def get_state(self) -> Any:
        """The current key of a functional generator (see :attr:`functional`)."""
        return self.backend.adapter.generator_state(self._native)

    def set_state(self, state: Any) -> None:
        """Continue from ``state`` (a key from :meth:`get_state`, possibly a later one)."""
        self.backend.adapter.set_generator_state(self._native, state)

    def reseed(self, seed: int) -> None:
        """Restart the draws from ``seed`` (on the same backend and device)."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, received {seed!r}.")
        self.seed = seed
        self._native = self.backend.adapter.generator(seed, self.backend.device)

    # -- saving and restoring (checkpoints resume exactly) -----------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue these draws: ``{"kind", "seed", "state"}``.

        ``state`` is a NumPy uint8 copy of the native generator's state (40 bytes for NumPy's
        PCG64, 5056 for torch's CPU Mersenne Twister, 8 for a JAX key); ``kind`` says what the
        bytes mean. One host read; call it between steps, not inside one.
        """
        adapter = self.backend.adapter
        return {"kind": adapter.generator_kind(self._native), "seed": self.seed,
                "state": adapter.generator_bytes(self._native)}

    def load_state_dict(self, saved: Any) -> bool:
        """Continue from ``saved`` (a :meth:`state_dict`, e.g. read from a checkpoint).

        Where the saved kind is this generator's (same backend, same kind of device) the next
        draws are exactly those the saved generator would have made, and this returns True.
        Another kind's bytes mean nothing here: the generator restarts from the saved seed
        instead (a valid stream, not the same one) and this returns False.

        Raises:
            ValueError: ``saved`` is not a state dict, or its bytes do not fit its kind.
        """
        if not isinstance(saved, dict) or set(saved) != {"kind", "seed", "state"}:
            keys = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
            raise ValueError("a generator state is a dict with keys ['kind', 'seed', 'state'] "
                             f"(from Generator.state_dict()), received {keys}.")
        seed = saved["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"a generator state's seed must be an int >= 0, received {seed!r}.")
        adapter = self.backend.adapter
        if saved["kind"] == adapter.generator_kind(self._native):
            try:
                adapter.restore_generator(self._native, saved["state"])
            except (TypeError, ValueError, RuntimeError) as err:
                raise ValueError(f"the saved {saved['kind']} generator state does not fit: "
                                 f"{err}") from None
            self.seed = seed
            return True
        self.seed = seed
        self._native = adapter.generator(seed, self.backend.device)
        return False

    def _float_dtype(self, dtype: Any):
        resolved = resolve_dtype(self.backend.xp, dtype)
        if resolved not in (self.backend.xp.float32, self.backend.xp.float64):
            raise TypeError(f"random floats need dtype float32 or float64, received {dtype!r}.")
        return resolved

    def uniform(self, shape: Shape, low: float = 0.0, high: float = 1.0,
                dtype: Any = "float32") -> Array:
        """Uniform draws in [low, high)."""
        b = self.backend
        u = b.adapter.uniform(self._native, _check_shape(shape), self._float_dtype(dtype),
                              b.device)
        return u if (low, high) == (0.0, 1.0) else u * float(high - low) + float(low)

    def normal(self, shape: Shape, mean: float = 0.0, std: float = 1.0,
               dtype: Any = "float32") -> Array:
        """Normal draws N(mean, std^2)."""
        b = self.backend
        z = b.adapter.normal(self._native, _check_shape(shape), self._float_dtype(dtype), b.device)
        return z if (mean, std) == (0.0, 1.0) else z * float(std) + float(mean)

    def bernoulli(self, shape: Shape, p: float, dtype: Any = "float32") -> Array:
        """1 with probability ``p``, else 0, as ``dtype`` ("bool" gives a boolean mask)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"bernoulli probability must be in [0, 1], received p={p!r}.")
        xp = self.backend.xp
        want = resolve_dtype(xp, dtype)
        draw_dtype = want if want in (xp.float32, xp.float64) else xp.float32
        hit = self.uniform(shape, dtype=draw_dtype) < float(p)
        return hit if want == xp.bool else xp.astype(hit, want)

    def permutation(self, n: int) -> Array:
        """A random ordering of ``0, 1, ..., n-1`` (int64) on the device."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"permutation length must be a non-negative int, received {n!r}.")
        return self.backend.adapter.permutation(self._native, n, self.backend.device)
