"""Fused kernels: hot expressions of a training step, in one library call where there is one.

The portable code writes ReLU's backward pass as a compare, a cast and a multiply
(``dy * relu_derivative_from_output(y)``), and the update ``p <- p - lr * d`` as a multiply and
a subtract: each operation is a pass over a whole array, and most allocate one. Some libraries
have one call for the whole expression (torch's ``threshold_backward`` and
``Tensor.add_(d, alpha=)``, which the hand-written PyTorch baseline runs through autograd and
``torch.optim``). An adapter that has such a kernel names it (``backends/_adapter.py``); each
function here calls it there and runs the portable form, written out below as the reference,
everywhere else.

These are the accelerated forms of documented functions, never second copies of their math:
:func:`portanet.activations.relu` calls :func:`relu`; :func:`relu_backward` receives
``activations.relu_derivative_from_output``, and :func:`gelu_backward`
``activations.gelu_derivative_from_output_and_input``, and each calls it in its portable form
(this module sits a floor below activations.py, so the function is passed in, not imported).

A kernel is found by its name, so a name outside the contract (a misspelling) is refused when
this module is imported (:func:`check_adapter`) rather than left unused.

The two forms compute the same formula. ReLU's agree bit for bit; ``add_`` rounds
``p + alpha * d`` once (a fused multiply-add) where the portable form rounds twice, so they may
differ in the last bit (tests/test_fused.py bounds it, on every backend).

Measured on this project's 2-core machine (torch 2.13 CPU, 2 threads, float32, median of 11):

| kernel | batch 128 fused / portable | batch 1024 fused / portable |
|---|---|---|
| relu, (N, 512) | 7 / 26 us | 36 / 53 us |
| relu_backward, (N, 512) | 14 / 71 us | 50 / 526 us |
| gelu_backward, (128, 512), 1 thread | 42 / ~190 us | |
| add_scaled_, all 669,706 MLP parameters | 55 / 127 us | 81 / 193 us |

NumPy has no such calls (SciPy's BLAS ``axpy`` would be one pass, but its OpenBLAS thread pool
is not NumPy's: the two spin against each other and a training step got 5x slower), so NumPy,
array-api-strict and JAX run the portable forms. NumPy's adapter has three kernels of its own
(``backends/numpy.py``): ReLU against a row of zeros, the operands NumPy's SIMD loop takes (2x),
Dense's bias add and ReLU written into the product (``bias_relu``: (128, 512) 49 vs 77 us,
(1024, 512) 316 vs 538 us), and the softmax cross-entropy with fancy indexing instead of a
one-hot (40 vs 62 us).

CuPy's adapter writes ``relu_backward``, ``gelu_backward``, ``bias_relu`` and ``add_scaled_`` as
``cupy.ElementwiseKernel``s, one pass each: CuPy cannot record a whole step as a CUDA graph
(cuBLAS refuses stream capture, CuPy #6290), so its launch count comes down by fusing instead
(and the optimizer's update by running over one buffer of all parameters, optimizers/flat.py).
They are not measured yet: no GPU was lent to the session that wrote them (``nox -s tests_gpu``
compares them with the portable forms, ``nox -s bench`` times them). Without a GPU,
tests/test_cupy_kernels.py compiles each with nvcc and runs its operation on the host, as C++,
against the portable form.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable

import array_api_compat as compat

from ._typing import Array
from .backend import adapter_of
from .backends import ADAPTERS, Adapter

KERNELS = ("relu", "relu_backward", "gelu_backward", "bias_relu", "add_scaled_",
           "softmax_cross_entropy")
"""The kernels an adapter may provide (attributes of ``backends/_adapter.py``'s Adapter)."""


def check_adapter(adapter: type[Adapter]) -> None:
    """Refuse an adapter class that defines a public name the Adapter contract does not have.

    The functions below find a kernel by its name (``adapter.relu_backward``), so a kernel
    defined under another name (``relu_backwards``) would never be called: the portable form
    would run instead, correct and slower, and nothing would say so. Every public attribute an
    adapter defines must therefore be one that ``Adapter`` declares; helpers of its own take a
    leading underscore. Run on every registered adapter when this module is imported.

    Raises:
        TypeError: naming the attribute, the closest name of the contract and the kernels.
    """
    contract = {n for n in dir(Adapter) if not n.startswith("_")}
    contract |= set(inspect.get_annotations(Adapter))  # declared without a default (name)
    for cls in adapter.__mro__:
        if not issubclass(cls, Adapter) or cls is Adapter:
            continue
        for name in vars(cls):
            if name.startswith("_") or name in contract:
                continue
            close = difflib.get_close_matches(name, sorted(contract), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{cls.__name__} ({cls.__module__}) defines {name!r}, which is not a name of the "
                f"Adapter contract (portanet/backends/_adapter.py), so nothing would call it.{hint}"
                f" Fused kernels are named {', '.join(KERNELS)}; a helper of the adapter's own "
                "takes a leading underscore.")


for _adapter in ADAPTERS.values():  # a misspelled kernel fails at import, not silently
    check_adapter(type(_adapter))


def relu(x: Array) -> Array:
    """max(x, 0), elementwise (the forward pass of ReLU; NaN stays NaN).

    Examples:
        >>> import numpy as np
        >>> relu(np.asarray([-1.0, 0.0, 2.0])).tolist()
        [0.0, 0.0, 2.0]
    """
    adapter = adapter_of(x)
    if adapter.relu is not None:
        return adapter.relu(x)
    # maximum rather than clip: array_api_compat's clip wrapper costs ~3x a maximum on NumPy.
    return adapter.xp.maximum(x, 0.0)


def relu_backward(dy: Array, y: Array, derivative_from_output: Callable[[Array], Array]) -> Array:
    """The chain rule through ReLU from its output: dx = dy * derivative_from_output(y).

    ``derivative_from_output`` is :func:`portanet.activations.relu_derivative_from_output`
    (1 where y > 0, else 0; y > 0 exactly where x > 0, and the derivative at the kink x = 0 is
    0, as in PyTorch). It is passed in, not imported: fused.py sits a floor below
    activations.py. The portable form is that product and calls it; a library's kernel computes
    the same numbers in one pass (torch's ``threshold_backward``; tests/test_fused.py checks
    they agree bit for bit). Where y is NaN, torch's kernel passes dy on and the portable form
    passes 0 * dy; by then the loss is NaN anyway.

    Args:
        dy: dL/dy, any shape.
        y: relu's output, the same shape.
        derivative_from_output: ``y -> dy/dx``, ReLU's derivative from its output.

    Examples:
        >>> import numpy as np
        >>> from portanet.activations import relu_derivative_from_output
        >>> relu_backward(np.asarray([5.0, 5.0]), np.asarray([0.0, 3.0]),
        ...               relu_derivative_from_output).tolist()
        [0.0, 5.0]
    """
    adapter = adapter_of(dy)
    if adapter.relu_backward is not None:
        return adapter.relu_backward(dy, y)
    # dy times a 0/1 mask rather than where(y > 0, dy, 0): a where over a random sign pattern is
    # ~10x slower in NumPy and PyTorch.
    return dy * derivative_from_output(y)


def gelu_backward(dy: Array, y: Array, x: Array,
                  derivative_from_output_and_input: Callable[[Array, Array], Array]) -> Array:
    """The chain rule through GELU: dx = dy * derivative_from_output_and_input(y, x).

    ``derivative_from_output_and_input`` is
    :func:`portanet.activations.gelu_derivative_from_output_and_input`, Phi(x) + x phi(x) with
    Phi(x) = y / x from the forward pass's output (passed in, as for :func:`relu_backward`). The
    portable form is that product and calls it; torch's kernel (``gelu_backward``, what GELU's
    autograd node runs) computes dy * (Phi(x) + x phi(x)) from x in one pass, with its own
    ``erf``: the two agree to a few roundings (tests/test_fused.py).

    Args:
        dy: dL/dy, any shape.
        y: gelu(x), the same shape.
        x: gelu's input, the same shape.
        derivative_from_output_and_input: ``(y, x) -> dy/dx``.

    Examples:
        >>> import numpy as np
        >>> from portanet.activations import gelu, gelu_derivative_from_output_and_input
        >>> x = np.asarray([0.0, 3.0])
        >>> gelu_backward(np.asarray([2.0, 0.0]), gelu(x), x,
        ...               gelu_derivative_from_output_and_input).tolist()
        [1.0, 0.0]
    """
    adapter = adapter_of(dy)
    if adapter.gelu_backward is not None:
        return adapter.gelu_backward(dy, x)
    return dy * derivative_from_output_and_input(y, x)


def bias_relu(z: Array, b: Array, relu: Callable[[Array], Array]) -> Array:
    """relu(z + b): a Dense layer's bias add and ReLU, in one pass where a library has a kernel.

    ``z`` is the layer's fresh product x @ W, which nothing else holds, so it may be written
    into: the result may be ``z`` itself. ``relu`` is :func:`portanet.activations.relu`, passed
    in as for :func:`relu_backward`. The portable form adds b into z (on JAX, where arrays
    cannot be written, ``+=`` makes a new array) and calls it: two passes over z. CuPy's kernel
    reads z and b once and writes max(z + b, 0) into z (a launch fewer on a GPU, where a small
    model's step is launch-bound); NumPy's writes both passes into z instead of a new array
    (float32, best of 5: (128, 512) 49 vs 77 us, (1024, 512) 316 vs 538 us). The same values
    either way (one rounding, the add's; NaN stays NaN).

    Args:
        z: (..., features), floating, writeable where the library's arrays are.
        b: (features,), z's dtype.
        relu: ``x -> max(x, 0)``.

    Examples:
        >>> import numpy as np
        >>> from portanet.activations import relu
        >>> bias_relu(np.asarray([[1.0, -1.0]]), np.asarray([-2.0, 3.0]), relu).tolist()
        [[0.0, 2.0]]
    """
    adapter = adapter_of(z)
    if adapter.bias_relu is not None:
        out = adapter.bias_relu(z, b)
        if out is not None:
            return out
    z += b
    return relu(z)


def add_scaled_(p: Array, d: Array, alpha: float) -> Array:
    """p <- p + alpha * d, written into ``p`` (the update of a parameter or a moving average).

    ``p`` must be writeable (not a JAX array) and ``d`` of its shape and dtype; ``alpha`` is a
    Python float. An optimizer step ``p <- p - lr * d`` is ``add_scaled_(p, d, -lr)``.

    Returns:
        ``p`` itself, updated.

    Examples:
        >>> import numpy as np
        >>> p = np.asarray([1.0, 1.0])
        >>> add_scaled_(p, np.asarray([2.0, 4.0]), -0.5).tolist(), p.tolist()
        ([0.0, -1.0], [0.0, -1.0])
    """
    native = adapter_of(p).add_scaled_
    if native is not None and native(p, d, alpha) is not None:
        return p
    p += alpha * d
    return p


def softmax_cross_entropy(z: Array, ids: Array) -> tuple[Array, Array]:
    """Cross-entropy of softmax(z) against class ids, per sample, and its gradient.

    Formula, logits z (N, C), ids t (N,), s = softmax(z)::

        L_n = -log s_{n, t_n} = logsumexp(z_n) - z_{n, t_n}
        dL/dz_n = s_n - onehot(t_n)          (the gradient of sum_n L_n)

    Stable form: log s = z - max(z) - log(sum(exp(z - max(z)))). An id outside [0, C) makes its
    L_n NaN (visible, with no host read) and leaves its gradient row at s_n. ``z`` may have more
    leading axes, (..., C) with ids (...); the torch kernel takes (N, C) and leaves the rest to
    the portable form.

    The portable form builds the one-hot targets and runs about a dozen array operations; the
    torch kernel is ``log_softmax`` and ``nll_loss`` (the calls ``nn.CrossEntropyLoss`` makes)
    plus the gradient written into softmax's own array; NumPy's reads z[n, t_n] by fancy
    indexing. They agree to a few roundings (tests/test_fused.py). Measured at (128, 10),
    float32: torch 53 us (PyTorch's ``cross_entropy`` forward and autograd backward: 85 us),
    NumPy 40 us, against 62 us for the portable form on NumPy.

    Returns:
        ``(L, dL/dz)``: per-sample losses of ``ids``'s shape, and the gradient of their sum.

    Examples:
        >>> import numpy as np
        >>> loss, grad = softmax_cross_entropy(np.asarray([[0.0, 0.0]]), np.asarray([1]))
        >>> round(float(loss[0]), 4), grad.tolist()
        (0.6931, [[0.5, -0.5]])
    """
    adapter = adapter_of(z)
    if adapter.softmax_cross_entropy is not None:
        out = adapter.softmax_cross_entropy(z, ids)
        if out is not None:
            return out
    xp = adapter.xp
    n_classes = z.shape[-1]
    # One-hot by comparing each id with 0..C-1: no scatter, no host read; a bad id matches none.
    classes = xp.arange(n_classes, dtype=ids.dtype, device=compat.device(ids))
    onehot = xp.astype(xp.expand_dims(ids, axis=-1) == classes, z.dtype)
    shifted = z - xp.max(z, axis=-1, keepdims=True)
    log_s = shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))
    loss = -xp.sum(onehot * log_s, axis=-1)
    valid = (ids >= 0) & (ids < n_classes)
    return xp.where(valid, loss, math.nan), xp.exp(log_s) - onehot
