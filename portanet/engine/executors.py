"""Executors: who runs the pure step. One per backend capability.

* :class:`Eager` runs the step op by op on every backend. It is the reference, and where
  arrays are writeable (NumPy, torch, CuPy, array-api-strict) the optimizer writes into them
  (bit-identical to the pure form).
* :class:`Compiled` hands the step to the backend's compiler (``Adapter.compile``): ``jax.jit``
  with the state's buffers donated (XLA updates them in place), ``torch.compile``. It compiles
  once per input signature: a full batch and, when the data does not divide evenly, the last
  partial batch (a second shape, compiled once; the alternative, padding with a mask, would
  change what a BatchNorm layer sees). ``compilations`` counts them, ``compile_seconds`` sums
  the first call of each (trace + compile + that one step), so no epoch after the first
  compiles anything.

``resolve(jit_compile, adapter)`` picks one: False -> eager; True -> the backend's compiler or a
clear error; "auto" -> compiled where it measures faster (``Adapter.compile_by_default``: JAX).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..backends._adapter import Adapter

__all__ = ["JIT_CHOICES", "Compiled", "Eager", "check_jit_compile", "resolve"]

JIT_CHOICES = ("auto", True, False)


def check_jit_compile(value: Any) -> Any:
    """``"auto"``, True or False; anything else is refused with the choices."""
    if not (isinstance(value, bool) or value == "auto"):
        raise ValueError(f"jit_compile must be 'auto', True or False, received {value!r}.")
    return value


def resolve(jit_compile: Any, adapter: Adapter, compiles_well: bool = True) -> bool:
    """Whether to compile on ``adapter``'s backend (True raises where there is no compiler).

    ``compiles_well`` (False when a layer of the model says compiling it measures slower,
    ``Layer.compiles_well``) turns "auto" to eager; an explicit True still compiles."""
    if jit_compile is True:
        if adapter.compiler is None:
            raise ValueError(
                f"jit_compile=True, but the {adapter.name} backend has no compiler: it runs "
                "eagerly only. Use jit_compile='auto' (compiles where a compiler exists and "
                "measures faster) or False, or move the model to a backend with one "
                "(model.to('jax'), or 'torch' for torch.compile).")
        return True
    if jit_compile is False:
        return False
    return adapter.compiler is not None and adapter.compile_by_default and compiles_well


def signature(args: Any) -> tuple:
    """Shapes and dtypes of every array in ``args`` (nested tuples/dicts): what a compiler
    specializes on. Python scalars count by type only: their values are arguments."""
    if isinstance(args, dict):
        return tuple((k, signature(v)) for k, v in args.items())
    if isinstance(args, (tuple, list)):
        return tuple(signature(v) for v in args)
    shape = getattr(args, "shape", None)
    if shape is not None:
        return (tuple(shape), str(args.dtype))
    return (type(args).__name__,)


class Eager:
    """Calls the step as it is."""

    name = "eager"
    compiled = False
    donates = False
    compilations = 0
    compile_seconds = 0.0

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


class Compiled:
    """The step compiled by the backend's compiler, once per input signature.

    Args:
        fn: the pure step.
        adapter: the backend adapter whose ``compile`` is used.
        donate_argnums: arguments whose buffers the compiled step may reuse (the state).
        wait: ``outputs -> None``, blocks until outputs are computed (timing the first call).
        varying_argnums: the arguments whose shapes can change between calls (the batch);
            the others (the state) keep theirs, so only these make the signature. None: all.
        family: what ``fn`` traces alike with (the model's architecture): see
            ``Adapter.compile``.
    """

    compiled = True

    def __init__(self, fn: Callable, adapter: Adapter, donate_argnums: tuple[int, ...] = (),
                 wait: Callable[[Any], None] | None = None,
                 varying_argnums: tuple[int, ...] | None = None, family: Any = None):
        self.name = adapter.compiler
        # Where the compiler consumes donated buffers (jax.jit), the engine hands it only
        # buffers it produced (Engine._owned). torch.compile does not donate: copying the
        # model's arrays there made the first step trace other tensors than the later ones,
        # which alias the layers' own, and dynamo compiled the step a second time.
        self.donates = adapter.donates_buffers and bool(donate_argnums)
        self.fn = adapter.compile(fn, donate_argnums, family)
        self.wait = wait
        self.varying_argnums = varying_argnums
        self.signatures: set[tuple] = set()
        self.compile_seconds = 0.0

    @property
    def compilations(self) -> int:
        """How many signatures were compiled (the compiler's own cache where it exposes one)."""
        cache_size = getattr(self.fn, "_cache_size", None)  # jax.jit's count of executables
        return cache_size() if callable(cache_size) else len(self.signatures)

    def __call__(self, *args: Any) -> Any:
        varying = self.varying_argnums
        key = signature(args if varying is None else tuple(args[i] for i in varying))
        if key in self.signatures:
            return self.fn(*args)
        start = time.perf_counter()
        out = self.fn(*args)
        if self.wait is not None:
            self.wait(out)  # once per signature: the compile time must not leak into a step
        self.compile_seconds += time.perf_counter() - start
        self.signatures.add(key)
        return out
