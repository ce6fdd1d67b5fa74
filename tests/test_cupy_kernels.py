"""CuPy's kernels (backends/cupy.py) checked without a GPU: each ElementwiseKernel's operation
compiled by nvcc as a CUDA kernel (PTX, where nvcc is installed), and compiled on the host as C++
with T = float and double and run against fused.py's portable form on NumPy.

The operation is the CUDA C that CuPy pastes into its kernel; C++ gives it the same meaning
(the same casts, comparisons and IEEE arithmetic), except that the device's ``erf`` and ``exp``
are CUDA's (within 2 ulp) where this test gets the host's. ``nox -s tests_gpu`` runs the real
kernels (tests/test_fused.py's cupy cases); this test catches a wrong formula, a wrong branch
at NaN, 0 or -0, or a type error in a kernel on every machine with a C++ compiler. The harness
follows ElementwiseKernel's rules: every argument is broadcast to one shape, in params are read
as ``const T``, out params are references into the output array (read, then written).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from portanet import activations, fused
from portanet.backends.cupy import CupyAdapter

SOURCES = CupyAdapter._KERNEL_SOURCES
CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
NVCC = shutil.which("nvcc")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler on this machine")
TYPES = {np.float32: "float", np.float64: "double"}


def _params(decl: str) -> list[tuple[str, str]]:
    return [tuple(p.split()) for p in decl.split(",")]


def _signature(ins: str, outs: str) -> tuple[str, str]:
    """The C parameters (pointers) and the loads ElementwiseKernel makes of element i."""
    params = _params(ins) + _params(outs)
    n_in = len(_params(ins))
    args = ", ".join(f"{'const ' if j < n_in else ''}T* _raw_{n}"
                     for j, (_, n) in enumerate(params))
    loads = " ".join(f"const T {n} = _raw_{n}[i];" if j < n_in else f"T &{n} = _raw_{n}[i];"
                     for j, (_, n) in enumerate(params))
    return args, loads


def _build(sources: dict, folder) -> ctypes.CDLL:
    """A shared library of every operation in ``sources``, as ``name_float``/``name_double``."""
    lines = ["#include <cmath>", "using std::erf; using std::exp;"]
    for ins, outs, operation, name in sources.values():
        args, loads = _signature(ins, outs)
        for ctype in TYPES.values():
            lines.append(f'namespace {name}_{ctype} {{ typedef {ctype} T; extern "C" void '
                         f'{name}_{ctype}(long n, {args}) {{ for (long i = 0; i < n; ++i) '
                         f'{{ {loads} {operation}; }} }} }}')
    (folder / "kernels.cpp").write_text("\n".join(lines))
    # -ffp-contract=off: no FMA contraction, so the comparisons below are against plain
    # roundings (nvcc contracts a * b + c on the device; add_scaled_'s bound in test_fused
    # allows that one rounding).
    subprocess.run([CXX, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o",
                    str(folder / "kernels.so"), str(folder / "kernels.cpp")], check=True,
                   capture_output=True)
    return ctypes.CDLL(str(folder / "kernels.so"))


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    return _build(SOURCES, tmp_path_factory.mktemp("cupy_kernels"))


@pytest.mark.skipif(NVCC is None, reason="no CUDA compiler (nvcc) on this machine")
def test_every_operation_compiles_as_cuda(tmp_path):
    """nvcc compiles each operation into a kernel (PTX for sm_90, no GPU needed), with T float
    and double: the device's erf, exp and casts take these types."""
    lines = []
    for ins, outs, operation, name in SOURCES.values():
        args, loads = _signature(ins, outs)
        for ctype in TYPES.values():
            lines.append(f'namespace {name}_{ctype} {{ typedef {ctype} T; extern "C" __global__ '
                         f'void {name}_{ctype}(long n, {args}) {{ long i = blockIdx.x * '
                         f'(long)blockDim.x + threadIdx.x; if (i < n) {{ {loads} {operation}; '
                         f'}} }} }}')
    (tmp_path / "kernels.cu").write_text("\n".join(lines))
    done = subprocess.run([NVCC, "-ptx", "-arch=compute_90", "-o", str(tmp_path / "kernels.ptx"),
                           str(tmp_path / "kernels.cu")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    for *_, name in SOURCES.values():
        for ctype in TYPES.values():
            assert f".entry {name}_{ctype}" in ptx


def _run(kernels, kernel: str, dtype, sources=SOURCES, **arrays) -> np.ndarray:
    """The kernel over ``arrays`` (by parameter name), broadcast; returns its out param."""
    ins, outs, _, name = sources[kernel]
    names = [n for _, n in _params(ins) + _params(outs)]
    shape = np.broadcast_shapes(*(np.shape(a) for a in arrays.values()))
    buffers = [np.broadcast_to(np.asarray(arrays[n], dtype), shape).copy() if n in arrays
               else np.full(shape, np.nan, dtype) for n in names]
    function = getattr(kernels, f"{name}_{TYPES[dtype]}")
    function(ctypes.c_long(int(np.prod(shape))),
             *[b.ctypes.data_as(ctypes.c_void_p) for b in buffers])
    return buffers[-1]


def _data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((16, 9)) * 3).astype(dtype)
    x[0, :6] = [0.0, -0.0, 30.0, -30.0, np.inf, -np.inf]
    return x, rng.standard_normal((16, 9)).astype(dtype), rng.standard_normal(9).astype(dtype)


def test_every_kernel_is_checked_here():
    assert set(SOURCES) == {"relu_backward", "gelu_backward", "bias_relu", "add_scaled_"}
    assert {k for k in fused.KERNELS if getattr(CupyAdapter, k) is not None} == set(SOURCES)


@pytest.mark.parametrize("dtype", list(TYPES))
def test_relu_backward(kernels, dtype, portable_kernels):
    x, dy, _ = _data(dtype)
    y = activations.relu(x)
    got = _run(kernels, "relu_backward", dtype, dy=dy, y=y)
    np.testing.assert_array_equal(
        got, fused.relu_backward(dy, y, activations.relu_derivative_from_output))


@pytest.mark.parametrize("dtype", list(TYPES))
def test_gelu_backward(kernels, dtype, portable_kernels):
    """Within a few roundings: the kernel computes Phi(x) from erf, the portable form from y / x
    (measured: at most 2 eps relative, float32 and float64)."""
    x, dy, _ = _data(dtype, seed=1)
    x = x[np.isfinite(x)].reshape(-1, 1)
    dy = dy.reshape(-1, 1)[:x.shape[0]]
    got = _run(kernels, "gelu_backward", dtype, dy=dy, x=x)
    expected = fused.gelu_backward(dy, activations.gelu(x), x,
                                   activations.gelu_derivative_from_output_and_input)
    bound = 4 * np.finfo(dtype).eps * np.maximum(1.0, np.abs(expected))
    assert np.all(np.abs(got - expected) <= bound), np.max(np.abs(got - expected))


@pytest.mark.parametrize("dtype", list(TYPES))
def test_bias_relu(kernels, dtype, portable_kernels):
    """Bit for bit (one rounding, the add's), b broadcast over the rows, NaN kept."""
    z, _, b = _data(dtype, seed=2)
    z[1, 1] = np.nan
    got = _run(kernels, "bias_relu", dtype, b=b, z=z)
    expected = fused.bias_relu(z.copy(), b, activations.relu)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[1, 1])


@pytest.mark.parametrize("dtype", list(TYPES))
def test_add_scaled(kernels, dtype, portable_kernels):
    p, d, _ = _data(dtype, seed=3)
    p = p[:, 6:]  # finite values: inf - inf would be NaN in both, and compare unequal
    d = d[:, 6:]
    got = _run(kernels, "add_scaled_", dtype, d=d, alpha=-0.3, p=p)
    np.testing.assert_array_equal(got, fused.add_scaled_(p.copy(), d, -0.3))


def test_a_wrong_operation_fails_here(tmp_path, portable_kernels):
    """The harness can fail: ReLU's backward with >= instead of > passes dy on at y = 0."""
    ins, outs, operation, name = SOURCES["relu_backward"]
    wrong = {"relu_backward": (ins, outs, operation.replace(">", ">="), name)}
    x, dy, _ = _data(np.float64)
    y = activations.relu(x)
    got = _run(_build(wrong, tmp_path), "relu_backward", np.float64, sources=wrong, dy=dy, y=y)
    assert not np.array_equal(
        got, fused.relu_backward(dy, y, activations.relu_derivative_from_output))
