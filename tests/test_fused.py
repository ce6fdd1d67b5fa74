"""The fused kernels (portanet/fused.py): each against a float64 NumPy reference on every backend,
and the library's fused call against the portable form on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_matches, assert_on_backend, tolerance

import portanet as pn
from portanet import activations, fused
from portanet.backend import adapter_of
from portanet.backends import ADAPTERS, Adapter
from portanet.fused import KERNELS

DTYPES = ["float32", "float64"]


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"z": rng.standard_normal((6, 4)),
            "dy": rng.standard_normal((6, 4)), "p": rng.standard_normal((4, 6)),
            "d": rng.standard_normal((4, 6))}


# ---------------------------------------------------------------------------------------------
# Against float64 NumPy references written here
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_its_backward_match_reference(backend, dtype):
    v = _data()
    z = v["z"].copy()
    z[0, :4] = [0.0, -np.inf, np.inf, np.nan]  # the kink, both infinities, NaN
    z = z.astype(dtype)
    y = fused.relu(backend.asarray(z, dtype))
    expected = np.where(np.isnan(z), np.nan, np.maximum(z, 0.0)).astype(np.float64)
    assert_on_backend(y, backend, dtype)
    np.testing.assert_array_equal(pn.to_numpy(y).astype(np.float64), expected)
    dx = pn.to_numpy(fused.relu_backward(backend.asarray(v["dy"], dtype), y,
                                         activations.relu_derivative_from_output))
    # derivative 1 where x > 0, else 0 (0 at the kink, as in PyTorch)
    expected_dx = np.where(z > 0, v["dy"].astype(dtype), 0.0)
    number = ~np.isnan(z)
    np.testing.assert_array_equal(dx[number].astype(np.float64), expected_dx[number])
    # at a NaN activation torch's kernel passes dy on, the portable form 0 * dy (documented)
    assert dx[0, 3] in (0.0, v["dy"].astype(dtype)[0, 3])


def _gelu_derivative_reference(x: np.ndarray) -> np.ndarray:
    """float64, from the formula with math.erf: Phi(x) + x phi(x)."""
    x = x.astype(np.float64)
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in x.ravel()])
    return cdf.reshape(x.shape) + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_backward_matches_reference(backend, dtype):
    v = _data(seed=7)
    x = (v["z"] * 3.0).astype(dtype)
    x[0, :3] = [0.0, -30.0, 30.0]
    xb, dy = backend.asarray(x, dtype), backend.asarray(v["dy"], dtype)
    dx = fused.gelu_backward(dy, activations.gelu(xb), xb,
                             activations.gelu_derivative_from_output_and_input)
    # a few roundings of numbers up to |dy| * 1.13 (rtol alone would fail near gelu' = 0)
    expected = v["dy"].astype(dtype).astype(np.float64) * _gelu_derivative_reference(x)
    assert_matches(dx, expected, backend, dtype, rtol=tolerance(dtype),
                   atol=8 * np.finfo(dtype).eps * np.max(np.abs(v["dy"])))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_relu_matches_reference(backend, dtype):
    """max(z + b, 0) with b broadcast over the rows, NaN kept, b never written; the float64
    reference rounds z + b in the array's dtype first, so the values agree exactly."""
    v = _data(seed=3)
    z = v["z"].astype(dtype)
    z[0, :4] = [np.nan, -np.inf, np.inf, 0.0]
    b = v["d"][0, :4].astype(dtype)
    b[3] = -0.0
    bb = backend.asarray(b, dtype)
    y = fused.bias_relu(backend.asarray(z, dtype), bb, activations.relu)
    assert_on_backend(y, backend, dtype)
    summed = (z + b).astype(np.float64)
    expected = np.where(np.isnan(summed), np.nan, np.maximum(summed, 0.0))
    np.testing.assert_array_equal(pn.to_numpy(y).astype(np.float64), expected)
    np.testing.assert_array_equal(pn.to_numpy(bb), b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_bias_relu_equals_the_portable_form_exactly(backend, dtype, monkeypatch):
    """One rounding (the add's) in both forms: the kernel and the portable form agree bit for
    bit, on a 3-D z too (Dense over a sequence)."""
    rng = np.random.default_rng(11)
    for shape in ((6, 4), (2, 3, 4)):
        z_host = rng.standard_normal(shape)
        b = backend.asarray(rng.standard_normal(4), dtype)
        got, portable = _both("bias_relu",
                              lambda z_host=z_host, b=b: (backend.asarray(z_host, dtype), b,
                                                          activations.relu),
                              backend, monkeypatch)
        np.testing.assert_array_equal(got, portable)


@pytest.mark.parametrize("dtype", DTYPES)
def test_add_scaled_writes_into_p_and_never_into_d(backend, dtype):
    v = _data()
    p, d = backend.asarray(v["p"], dtype), backend.asarray(v["d"], dtype)
    out = fused.add_scaled_(p, d, -0.25)
    assert_matches(out, v["p"] - 0.25 * v["d"], backend, dtype)
    np.testing.assert_array_equal(pn.to_numpy(d), v["d"].astype(dtype))
    if backend.name != "jax":  # JAX arrays cannot be written: the result is a new array
        assert out is p


def _softmax_cross_entropy_reference(z, ids):
    """float64 NumPy, written from the formula: L = logsumexp(z) - z[t]; dL/dz = s - onehot(t)."""
    z = z.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    lse = (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0]
    s = np.exp(z - lse[..., None])
    n_classes = z.shape[-1]
    valid = (ids >= 0) & (ids < n_classes)
    safe = np.where(valid, ids, 0)
    picked = np.take_along_axis(z, safe[..., None], axis=-1)[..., 0]
    onehot = (ids[..., None] == np.arange(n_classes)).astype(np.float64)
    return np.where(valid, lse - picked, np.nan), s - onehot


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 5), (2, 3, 4)])
def test_softmax_cross_entropy_matches_reference(backend, dtype, shape):
    rng = np.random.default_rng(4)
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    ids = rng.integers(0, shape[-1], size=shape[:-1])
    ids.reshape(-1)[1], ids.reshape(-1)[2] = -1, shape[-1]  # two bad ids: NaN loss, grad = s
    loss, grad = fused.softmax_cross_entropy(backend.asarray(z, dtype),
                                             backend.asarray(ids, "int64"))
    expected_loss, expected_grad = _softmax_cross_entropy_reference(z, ids)
    assert_matches(grad, expected_grad, backend, dtype)
    assert_on_backend(loss, backend, dtype)
    got = pn.to_numpy(loss).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected_loss))
    # The loss is a difference, logsumexp(z) - z_t, of numbers of order 1: its error is a few
    # roundings of those, so an absolute floor (not a relative one) for confident samples.
    tol = tolerance(dtype)
    number = ~np.isnan(expected_loss)
    np.testing.assert_allclose(got[number], expected_loss[number], rtol=tol, atol=tol)


def test_softmax_cross_entropy_is_exact_at_logits_of_1000(backend):
    z = np.asarray([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0]])
    for dtype in DTYPES:
        loss, grad = fused.softmax_cross_entropy(backend.asarray(z, dtype),
                                                 backend.asarray([1, 0], "int64"))
        assert pn.to_numpy(loss).tolist() == [2000.0, 0.0]
        assert pn.to_numpy(grad).tolist() == [[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]]


@pytest.mark.parametrize("ids_dtype", ["int32", "int64", "uint8"])
def test_softmax_cross_entropy_takes_any_integer_ids(backend, ids_dtype):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 4))
    ids = rng.integers(0, 4, size=6)
    loss, grad = fused.softmax_cross_entropy(backend.asarray(z, "float64"),
                                             backend.asarray(ids, ids_dtype))
    expected_loss, expected_grad = _softmax_cross_entropy_reference(z, ids)
    assert_matches(loss, expected_loss, backend, "float64")
    assert_matches(grad, expected_grad, backend, "float64")


# ---------------------------------------------------------------------------------------------
# The library's own kernel against the portable form, on the same arrays
# ---------------------------------------------------------------------------------------------
def _both(kernel, args_of, backend, monkeypatch):
    """Run ``kernel`` with the adapter's fused call, then with the portable form."""
    got = pn.to_numpy(getattr(fused, kernel)(*args_of())).astype(np.float64)
    for adapter in ADAPTERS.values():
        monkeypatch.setattr(type(adapter), kernel, None)
    portable = pn.to_numpy(getattr(fused, kernel)(*args_of())).astype(np.float64)
    monkeypatch.undo()
    return got, portable


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_relu_kernels_equal_the_portable_form_exactly(backend, dtype, monkeypatch):
    """No rounding happens in relu or its mask, so the two forms agree bit for bit (on numbers:
    at NaN activations they differ as fused.relu_backward documents)."""
    v = _data()
    z = backend.asarray(v["z"], dtype)
    got, portable = _both("relu", lambda: (z,), backend, monkeypatch)
    np.testing.assert_array_equal(got, portable)
    y = fused.relu(z)
    dy = backend.asarray(v["dy"], dtype)
    got, portable = _both("relu_backward",
                          lambda: (dy, y, activations.relu_derivative_from_output), backend,
                          monkeypatch)
    np.testing.assert_array_equal(got, portable)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_kernels_are_the_documented_relu_and_its_derivative(backend, dtype, monkeypatch):
    """fused.relu is activations.relu (which calls it), and relu_backward is
    dy * activations.relu_derivative_from_output(y), bit for bit, with the library's kernel and
    without; the portable form gets its mask from the derivative it is given, not its own."""
    v = _data(seed=5)
    z, dy = backend.asarray(v["z"], dtype), backend.asarray(v["dy"], dtype)
    y = fused.relu(z)
    np.testing.assert_array_equal(pn.to_numpy(activations.relu(z)), pn.to_numpy(y))
    documented = pn.to_numpy(dy * activations.relu_derivative_from_output(y))
    np.testing.assert_array_equal(
        pn.to_numpy(fused.relu_backward(dy, y, activations.relu_derivative_from_output)),
        documented)

    for adapter in ADAPTERS.values():  # the portable form everywhere
        monkeypatch.setattr(type(adapter), "relu_backward", None)
    seen = []

    def derivative(out):
        seen.append(out)
        return activations.relu_derivative_from_output(out)

    np.testing.assert_array_equal(pn.to_numpy(fused.relu_backward(dy, y, derivative)), documented)
    assert len(seen) == 1 and seen[0] is y
    # a different derivative gives a different answer: the portable form has no mask of its own
    half = fused.relu_backward(dy, y,
                               lambda out: 0.5 * activations.relu_derivative_from_output(out))
    np.testing.assert_array_equal(pn.to_numpy(half), 0.5 * documented)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_gelu_backward_is_within_a_few_roundings_of_the_portable_form(backend, dtype,
                                                                           monkeypatch):
    """torch's kernel computes Phi(x) with its own erf, the portable form takes Phi(x) = y / x
    from the forward pass: measured at most 5.5 float32 and 1.9 float64 epsilons apart
    (relative to max(1, |dx|)), so the bound is 8."""
    v = _data(seed=8)
    x = backend.asarray(v["z"] * 3.0, dtype)
    dy = backend.asarray(v["dy"], dtype)
    y = activations.gelu(x)
    got, portable = _both("gelu_backward",
                          lambda: (dy, y, x, activations.gelu_derivative_from_output_and_input),
                          backend, monkeypatch)
    bound = 8 * np.finfo(dtype).eps * np.maximum(1.0, np.abs(portable))
    assert np.all(np.abs(got - portable) <= bound), np.max(np.abs(got - portable))
    # the portable form is the documented function, times dy
    documented = pn.to_numpy(dy * activations.gelu_derivative_from_output_and_input(y, x))
    np.testing.assert_array_equal(portable, documented.astype(np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_scaled_is_within_one_rounding_of_the_portable_form(backend, dtype,
                                                                     monkeypatch):
    """torch's add_ uses a fused multiply-add: p + alpha*d rounded once instead of
    twice. The two results then differ by at most one rounding of alpha*d plus one of the sum."""
    v = _data(seed=3)
    alpha = -0.1

    def args():
        return backend.asarray(v["p"], dtype), backend.asarray(v["d"], dtype), alpha

    got, portable = _both("add_scaled_", args, backend, monkeypatch)
    p32, d32 = v["p"].astype(dtype), v["d"].astype(dtype)
    step = np.abs(alpha * d32.astype(np.float64))
    bound = np.spacing(step.astype(dtype)) + np.spacing(np.abs(portable).astype(dtype))
    assert np.all(np.abs(got - portable) <= bound.astype(np.float64)), (got - portable)
    exact = p32.astype(np.float64) + alpha * d32.astype(np.float64)
    assert np.all(np.abs(got - exact) <= bound)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_softmax_cross_entropy_is_within_a_few_roundings_of_the_portable_form(
        backend, dtype, monkeypatch):
    """torch's log_softmax and the portable stable form round differently (the sum of exps
    in another order, then its log). The loss is a difference of numbers of order 1 and the
    gradient entries are at most 1 in size, so the bound is 4 roundings of max(1, |value|);
    measured on these logits (losses up to ~10): at most 9.5e-7 apart in float32, 1.8e-15 in
    float64."""
    rng = np.random.default_rng(6)
    z, ids = rng.standard_normal((64, 10)) * 4, rng.integers(0, 10, size=64)

    got = fused.softmax_cross_entropy(backend.asarray(z, dtype), backend.asarray(ids, "int64"))
    for adapter in ADAPTERS.values():
        monkeypatch.setattr(type(adapter), "softmax_cross_entropy", None)
    portable = fused.softmax_cross_entropy(backend.asarray(z, dtype),
                                           backend.asarray(ids, "int64"))
    for what, a, b in zip(("loss", "gradient"), got, portable, strict=True):
        a, b = pn.to_numpy(a).astype(np.float64), pn.to_numpy(b).astype(np.float64)
        bound = 4 * np.finfo(dtype).eps * np.maximum(1.0, np.abs(b))
        assert np.all(np.abs(a - b) <= bound), (what, np.max(np.abs(a - b)))


# ---------------------------------------------------------------------------------------------
# Which kernels each adapter has, and that the public functions really call them
# ---------------------------------------------------------------------------------------------
FUSED = {  # the kernels each adapter provides (fused.py's docstring; backends/*.py)
    "numpy": {"relu", "bias_relu", "softmax_cross_entropy"},
    "torch": set(KERNELS) - {"bias_relu"},
    "cupy": {"relu_backward", "gelu_backward", "bias_relu", "add_scaled_"},
    "jax": set(),
    "array_api_strict": set(),
}


def _declared(adapter_type) -> set[str]:
    return {k for k in KERNELS if getattr(adapter_type, k) is not None}


def test_every_kernel_is_in_the_contract_and_has_a_public_function():
    for kernel in KERNELS:
        assert getattr(Adapter, kernel) is None, kernel  # the contract's default: portable
        assert callable(getattr(fused, kernel)), kernel


def test_adapters_define_only_names_of_the_contract_and_the_documented_kernels():
    """A kernel under a misspelled name would be an extra public name (refused) and leave the
    kernel it meant at None (the table differs): either check fails."""
    assert set(FUSED) == set(ADAPTERS)
    for name, adapter in ADAPTERS.items():
        fused.check_adapter(type(adapter))
        assert _declared(type(adapter)) == FUSED[name], name


@pytest.mark.parametrize(("name", "kernel", "typo"), [
    ("numpy", "softmax_cross_entropy", "softmax_crossentropy"),
    ("torch", "relu_backward", "relu_backwards"),
    ("torch", "add_scaled_", "add_scaled"),
])
def test_a_misspelled_kernel_is_refused(monkeypatch, name, kernel, typo):
    cls = type(ADAPTERS[name])
    monkeypatch.setattr(cls, typo, vars(cls)[kernel], raising=False)
    monkeypatch.delattr(cls, kernel)  # the adapter no longer defines the right name
    with pytest.raises(TypeError, match=rf"{cls.__name__} \(.*\) defines '{typo}', which is "
                                        rf"not a name of the Adapter contract.*Did you mean "
                                        rf"'{kernel}'\? Fused kernels are named relu, "):
        fused.check_adapter(cls)
    assert _declared(cls) != FUSED[name]


def _spy_on(monkeypatch, adapter_type, kernels) -> dict[str, list]:
    """Wrap each kernel of the adapter class so that its calls are recorded (and still run)."""
    calls: dict[str, list] = {k: [] for k in kernels}
    for kernel in kernels:
        original = getattr(adapter_type, kernel)

        def spy(self, *args, _kernel=kernel, _original=original):
            out = _original(self, *args)
            calls[_kernel].append(out)
            return out

        monkeypatch.setattr(adapter_type, kernel, spy)
    return calls


def test_public_functions_dispatch_to_the_declared_kernels(backend, monkeypatch):
    """Each function of fused.py calls the kernel the adapter declares, once, and returns what
    it returned (a kernel that is declared but never called would escape the tests above)."""
    kernels = FUSED[backend.name]
    calls = _spy_on(monkeypatch, type(backend.backend.adapter), kernels)
    v = _data()
    z = backend.asarray(v["z"], "float64")
    results = {
        "relu": lambda: fused.relu(z),
        "relu_backward": lambda: fused.relu_backward(backend.asarray(v["dy"], "float64"), z,
                                                     activations.relu_derivative_from_output),
        "gelu_backward": lambda: fused.gelu_backward(
            backend.asarray(v["dy"], "float64"), activations.gelu(z), z,
            activations.gelu_derivative_from_output_and_input),
        "bias_relu": lambda: fused.bias_relu(backend.asarray(v["z"], "float64"),
                                             backend.asarray(v["d"][0, :4], "float64"),
                                             activations.relu),
        "add_scaled_": lambda: fused.add_scaled_(backend.asarray(v["p"], "float64"),
                                                 backend.asarray(v["d"], "float64"), -0.5),
        "softmax_cross_entropy": lambda: fused.softmax_cross_entropy(
            z, backend.asarray([0, 1, 2, 3, 0, 1], "int64")),
    }
    for kernel in KERNELS:
        out = results[kernel]()
        if kernel in kernels:
            assert len(calls[kernel]) == 1, kernel
            assert out is calls[kernel][0], kernel  # the kernel's own result, passed on
    # relu is called once more where bias_relu runs its portable form (which calls relu)
    expected = {k: 1 + (k == "relu" and "bias_relu" not in kernels) for k in calls}
    assert {k: len(c) for k, c in calls.items()} == expected


def test_a_training_step_runs_every_declared_kernel(backend, monkeypatch):
    """Through the public API: Dense(relu) with and without a bias, Dense(gelu),
    SoftmaxCrossEntropy and SGD's in-place update reach the adapter's kernels (no layer, loss
    or optimizer bypasses fused.py)."""
    kernels = FUSED[backend.name]
    model = pn.Sequential([pn.layers.Dense(4, 5, activation="relu"),
                           pn.layers.Dense(5, 5, activation="relu", use_bias=False),
                           pn.layers.Dense(5, 5, activation="gelu"), pn.layers.Dense(5, 3)],
                          loss=pn.losses.SoftmaxCrossEntropy(), optimizer=pn.optimizers.SGD(0.1),
                          seed=0, dtype="float64", jit_compile=False)
    calls = _spy_on(monkeypatch, type(backend.backend.adapter), kernels)
    x = backend.asarray(np.random.default_rng(1).standard_normal((6, 4)), "float64")
    model.train_step(x, backend.asarray([0, 1, 2, 0, 1, 2], "int64"))
    assert all(calls[k] for k in kernels), {k: len(c) for k, c in calls.items()}


def test_adapter_of_caches_by_type_and_still_refuses_foreign_objects():
    assert adapter_of(np.zeros(2)) is ADAPTERS["numpy"]
    assert adapter_of(np.zeros(2)) is ADAPTERS["numpy"]  # from the cache
    with pytest.raises(TypeError, match="Convert it with pn.asarray"):
        adapter_of([1.0, 2.0])
