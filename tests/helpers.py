"""Helpers shared by the tests: parity against a float64 NumPy reference, and finite differences.

Tolerances (measured need, not padding): float64 results agree with the float64 reference to
~1e-12 relative for elementwise math, so 1e-10 leaves room for reductions; float32 results carry
~6e-8 rounding per operation, so 1e-5 relative covers chains of a few hundred operations.
An absolute floor of ``rtol * max|reference|`` keeps values that cancel to ~0 from failing on
pure rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat as compat
import numpy as np
import pytest
from array_api_extra.testing import assert_close

RTOL = {"float64": 1e-10, "float32": 1e-5}


def tolerance(dtype: str) -> float:
    return RTOL[dtype]


def assert_on_backend(actual, case, dtype: str | None = None) -> None:
    """``actual`` is an array of ``case``'s namespace, on its device, of ``dtype``."""
    assert compat.array_namespace(actual) is compat.array_namespace(
        case.asarray(np.zeros(1))), f"result left the backend: {type(actual)}"
    assert compat.device(actual) == case.device, (
        f"result on {compat.device(actual)}, expected {case.device}")
    if dtype is not None:
        assert actual.dtype == case.dtype(dtype), f"dtype {actual.dtype}, expected {dtype}"


def assert_matches(actual, reference, case, dtype: str, rtol: float | None = None,
                   atol: float | None = None, err_msg: str = "") -> None:
    """Compare a backend result with a NumPy reference, checking namespace, dtype and device."""
    assert_on_backend(actual, case, dtype)
    reference = np.asarray(reference, dtype=np.float64)
    rtol = tolerance(dtype) if rtol is None else rtol
    if atol is None:
        finite = reference[np.isfinite(reference)]
        atol = rtol * float(np.max(np.abs(finite))) if finite.size else 0.0
    desired = case.asarray(reference, dtype=dtype)
    assert_close(actual, desired, rtol=rtol, atol=atol, err_msg=err_msg)


def assert_parity(fn: Callable, inputs: Sequence[np.ndarray], case, dtype: str,
                  rtol: float | None = None, atol: float | None = None,
                  reference: Callable | None = None) -> Any:
    """Run ``fn`` on float64 NumPy ``inputs`` (the reference) and on ``case`` in ``dtype``.

    ``reference`` may be an independent NumPy implementation; by default ``fn`` itself is run on
    NumPy float64 (that checks portability, not the math: pair it with an independent check).
    Results may be an array or a tuple of arrays.
    """
    ref_fn = reference or fn
    expected = ref_fn(*[np.asarray(a, dtype=np.float64) for a in inputs])
    actual = fn(*[case.asarray(a, dtype=dtype) for a in inputs])
    if not isinstance(expected, tuple):
        expected, actual = (expected,), (actual,)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert_matches(a, e, case, dtype, rtol, atol, err_msg=f"output {i}")
    return actual


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray,
                       eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function, in float64: (f(x+e) - f(x-e)) / 2e."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat = x.reshape(-1)
    g = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = float(f(x))
        flat[i] = old - eps
        down = float(f(x))
        flat[i] = old
        g[i] = (up - down) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|a|, max|b|, tiny): the figure gradient checks compare with 1e-6."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(a), initial=0.0), np.max(np.abs(b), initial=0.0), 1e-12)
    return float(np.max(np.abs(a - b), initial=0.0) / scale)


def assert_parameter_gradients(grads: dict, params: dict, set_parameter: Callable,
                               objective: Callable[[], float], tol: float = 1e-6) -> None:
    """Central finite differences for every parameter against the analytic ``grads``.

    ``params`` holds float64 NumPy copies of the parameters; ``set_parameter(name, value)``
    installs a NumPy value into the model; ``objective()`` evaluates the scalar loss. Each
    parameter is put back to its original value afterwards.
    """
    for name, p0 in params.items():
        def of_p(p, name=name):
            set_parameter(name, p)
            return objective()

        numeric = numerical_gradient(of_p, p0)
        set_parameter(name, p0)
        err = relative_error(grads[name], numeric)
        assert err < tol, f"gradient of {name!r}: relative error {err:.2e}"


def rand(*shape, seed=0, scale=1.0):
    """Standard normal draws of ``shape`` (times ``scale``), float64, from ``seed``."""
    return np.random.default_rng(seed).normal(size=shape) * scale


def round_to(a, dtype):
    """The values a backend sees after casting to ``dtype``, as float64 (for the reference)."""
    return np.asarray(a).astype(dtype).astype(np.float64)


def set_params(layer, values, case, dtype):
    """Install NumPy ``values`` (dotted name -> array) as ``layer``'s parameters on ``case``."""
    layer.set_named_parameters({k: case.asarray(v, dtype) for k, v in values.items()})


def torch_run(fn, inputs, r):
    """Run ``fn(*tensors)`` in torch float64 with autograd; return y and the grads of sum(y*r)."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in inputs]
    y = fn(*ts)
    (y * torch.tensor(r, dtype=torch.float64)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]
