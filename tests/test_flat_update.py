"""optimizers/flat.py: the update over one buffer of all parameters, on every backend.

tests/test_optimizers.py checks that 100-step trajectories of every optimizer agree bit for bit
with the update one array at a time. Here: what the buffer does to the arrays (views of one
buffer, the layout of torch's column-major kernels kept), packing again when the arrays handed
in are not the group's views (a loaded checkpoint, new weights), groups per dtype, parameters
without gradients, the pure form, a whole training run, the backend's default, configs.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_on_backend

import portanet as pn
from portanet.optimizers import SGD, Adam, AdamW
from portanet.optimizers.flat import FlatGroup

SHAPES = {"conv": (3, 2, 2, 2), "kernel": (5, 3), "bias": (3,), "scale": ()}


def _arrays(backend, seed, dtype="float64", shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return {n: backend.asarray(rng.normal(size=s), dtype) for n, s in shapes.items()}


def _numpy(arrays):
    return {n: pn.to_numpy(a) for n, a in arrays.items()}


def _run(opt, backend, steps=4, dtype="float64", shapes=SHAPES, between=None):
    params = _arrays(backend, 0, dtype, shapes)
    for t in range(steps):
        params = opt.step(params, _arrays(backend, 1 + t, dtype, shapes))
        if between is not None:
            params = between(t, params, opt)
    return params


def test_flat_group_lays_arrays_out_back_to_back(backend):
    xp = backend.xp
    likes = _arrays(backend, 0)
    group = FlatGroup(list(SHAPES), likes)
    flat = group.flatten(likes)
    assert flat.shape == (3 * 2 * 2 * 2 + 5 * 3 + 3 + 1,)
    views = group.split(flat)
    for n, a in likes.items():
        np.testing.assert_array_equal(pn.to_numpy(views[n]), pn.to_numpy(a))
        assert tuple(views[n].shape) == SHAPES[n]
    # and back: flattening the views gives the buffer
    np.testing.assert_array_equal(pn.to_numpy(group.flatten(views)), pn.to_numpy(flat))
    assert flat.dtype == xp.float64


def test_parameters_become_views_of_one_buffer_and_stay_them(backend):
    """After the first flat in-place update every parameter is a view of one buffer; later
    updates write into it and return the same arrays (on JAX, new arrays every step)."""
    opt = Adam(0.1, flat=True)
    params = _arrays(backend, 0)
    first = opt.step(params, _arrays(backend, 1))
    second = opt.step(first, _arrays(backend, 2))
    writeable = backend.name != "jax"
    for n in SHAPES:
        assert (second[n] is first[n]) == writeable
        assert first[n] is not params[n]  # the first update moves them into the buffer
    if backend.name == "numpy":  # NumPy says which array owns a view's memory
        owners = {id(_owner(a)) for a in second.values()}
        assert len(owners) == 1 and _owner(second["kernel"]).shape == (43,)
        slots = opt.state().slots
        for k in ("exp_avg", "exp_avg_sq"):
            owners = {id(_owner(slots[n][k])) for n in SHAPES}
            assert len(owners) == 1 and _owner(slots["kernel"][k]) is not _owner(second["kernel"])


def _owner(a):
    while a.base is not None:
        a = a.base
    return a


def test_a_dense_kernel_keeps_its_memory_layout(backend):
    """torch's Dense kernels are stored column by column (Adapter.weight_order "F"); their views
    in the buffer are too, so the GEMMs read them as before, and the numbers are the same. The
    other backends store them row by row and keep that."""
    adapter = backend.backend.adapter
    shapes = {"kernel": (5, 3), "bias": (3,)}
    model = pn.Sequential([pn.layers.Dense(5, 3)], loss="mse", seed=0)
    kernel = model.layers[0].parameters["kernel"]
    assert adapter.column_major(kernel) == (adapter.weight_order == "F")
    params = {"kernel": kernel, "bias": model.layers[0].parameters["bias"]}
    copies = {n: adapter.copy_like(a, a) for n, a in params.items()}
    expected = SGD(0.1, momentum=0.9, flat=False).step(copies,
                                                       _arrays(backend, 1, "float32", shapes))
    got = SGD(0.1, momentum=0.9, flat=True).step(params, _arrays(backend, 1, "float32", shapes))
    assert adapter.column_major(got["kernel"]) == adapter.column_major(kernel)
    for n in shapes:
        np.testing.assert_array_equal(pn.to_numpy(got[n]), pn.to_numpy(expected[n]))


@pytest.mark.parametrize("make", [lambda f: Adam(0.05, amsgrad=True, flat=f),
                                  lambda f: SGD(0.1, momentum=0.9, flat=f),
                                  lambda f: AdamW(0.05, global_clip_norm=1.0, flat=f)],
                         ids=["adam-amsgrad", "sgd-momentum", "adamw-global-clip"])
def test_new_arrays_between_steps_are_packed_again(backend, make):
    """Between steps the model's weights are replaced by copies and the optimizer state is
    reloaded from a state_dict (what a checkpoint does): the flat update notices that the arrays
    are not its views, packs them again and follows the update one array at a time exactly."""

    def replace(t, params, opt):
        if t == 1:
            params = {n: backend.asarray(pn.to_numpy(a)) for n, a in params.items()}
        if t == 2:
            opt.load_state_dict(opt.state_dict())
        return params

    expected = _run(make(False), backend, steps=5, between=replace)
    got = _run(make(True), backend, steps=5, between=replace)
    for n in SHAPES:
        np.testing.assert_array_equal(pn.to_numpy(got[n]), pn.to_numpy(expected[n]))


def test_one_group_per_dtype_and_parameters_without_gradients_stay(backend):
    opt, reference = Adam(0.1, flat=True), Adam(0.1, flat=False)
    params = {**_arrays(backend, 0, "float64"),
              **{f"{n}32": a for n, a in _arrays(backend, 5, "float32").items()}}
    frozen = "kernel32"
    before = pn.to_numpy(params[frozen]).copy()
    for t in range(3):
        grads = {**_arrays(backend, 1 + t, "float64"),
                 **{f"{n}32": a for n, a in _arrays(backend, 9 + t, "float32").items()}}
        del grads[frozen]
        expected = reference.step({n: backend.asarray(v) for n, v in _numpy(params).items()},
                                  grads)
        params = opt.step(params, grads)
        for n in params:
            np.testing.assert_array_equal(pn.to_numpy(params[n]), pn.to_numpy(expected[n]))
            assert params[n].dtype == expected[n].dtype
    np.testing.assert_array_equal(pn.to_numpy(params[frozen]), before)
    assert frozen not in opt.state().slots


def test_the_pure_form_runs_flat_too(backend):
    """``update`` (optax's shape, what a compiled step calls) with flat=True: the same numbers,
    and with ``inplace=False`` the inputs are left as they were."""
    for flat in (True, False):
        opt = Adam(0.1, flat=flat)
        params = _arrays(backend, 0)
        kept = _numpy(params)
        state = opt.init(params)
        for t in range(3):
            params, state = opt.update(_arrays(backend, 1 + t), state, params, inplace=False)
        if flat:
            got = _numpy(params)
        else:
            expected = _numpy(params)
    for n in SHAPES:
        np.testing.assert_array_equal(got[n], expected[n])
    fresh = _arrays(backend, 0)
    Adam(0.1, flat=True).update(_arrays(backend, 1), Adam(0.1).init(fresh), fresh,
                                inplace=False)
    for n in SHAPES:
        np.testing.assert_array_equal(pn.to_numpy(fresh[n]), kept[n])


def _fit(backend, flat):
    rng = np.random.default_rng(3)
    x = backend.asarray(rng.normal(size=(40, 6)), "float32")
    y = backend.asarray(rng.integers(0, 3, size=40), "int64")
    model = pn.Sequential([pn.layers.Dense(6, 8, activation="relu"),
                           pn.layers.BatchNorm(8),
                           pn.layers.Dense(8, 3)],
                          loss=pn.losses.SoftmaxCrossEntropy(),
                          optimizer=Adam(0.01, weight_decay=1e-3, flat=flat), seed=0)
    history = model.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0)
    return model, history


def test_training_with_a_flat_update_is_the_same_training(backend):
    """fit with Adam(flat=True) against flat=False: the same weights after 3 epochs and the
    same history, bit for bit (on JAX the step is compiled, and a compiled step updates one
    array at a time either way)."""
    per_array, h_ref = _fit(backend, False)
    flat, h_flat = _fit(backend, True)
    for (name, a), (_, b) in zip(per_array.parameters().items(), flat.parameters().items(),
                                 strict=True):
        np.testing.assert_array_equal(pn.to_numpy(b), pn.to_numpy(a), err_msg=name)
    assert h_flat.history["loss"] == h_ref.history["loss"]


def test_a_compiled_step_updates_one_array_at_a_time(backend):
    """Under a compiler or a CUDA graph (``compiled=True``) the update skips the flat buffer:
    the compiler has removed the launches it saves, and its bookkeeping of array identities
    would make torch.compile guard on them (it recompiled until its limit)."""
    from portanet.engine import make_apply_gradients

    model, _ = _fit(backend, True)
    opt = model.optimizer
    opt._flat_groups.clear()
    params, slots = model.parameters(), opt.state().slots
    grads = {n: backend.xp.ones_like(p) for n, p in params.items()}
    scalars = opt.scalars(opt.iterations)
    make_apply_gradients(model, traced=False, compiled=True)(params, slots, grads, scalars)
    assert not opt._flat_groups
    make_apply_gradients(model, traced=False)(params, slots, grads, scalars)
    assert opt._flat_groups  # eager: flat, as the optimizer asks


def test_the_default_is_the_backends_choice(backend):
    """flat=None: one buffer where the backend says it measures faster (CuPy, torch on CUDA)
    and the in-place path runs; one array at a time elsewhere (the host: measured slower)."""
    adapter = backend.backend.adapter
    opt = Adam(0.1)
    assert opt.flat is None
    params = _arrays(backend, 0)
    new = opt.step(params, _arrays(backend, 1))
    expected_flat = backend.name != "jax" and adapter.flat_update_on(backend.device)
    assert expected_flat == (backend.name in ("cupy",) or str(backend.device).startswith("cuda"))
    for n in SHAPES:
        if backend.name != "jax":
            assert (new[n] is params[n]) == (not expected_flat)


def test_flat_is_in_the_config_and_checked():
    opt = Adam(0.01, flat=True)
    assert opt.get_config()["config"]["flat"] is True
    assert pn.optimizers.from_config(opt.get_config()).flat is True
    assert SGD(0.1).get_config()["config"]["flat"] is None
    with pytest.raises(TypeError, match="flat must be True, False or None"):
        Adam(0.01, flat="yes")


def test_a_model_moved_to_another_backend_keeps_training(backend):
    """Two epochs on NumPy with flat updates, ``model.to(...)`` onto this backend, one more: the
    optimizer builds a new group there (the old one's buffers belong to NumPy) and the weights
    follow the same run without flat, bit for bit."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(32, 6)), rng.integers(0, 3, size=32)
    results = []
    for flat in (True, False):
        with pn.use_backend("numpy"):
            model = pn.Sequential([pn.layers.Dense(6, 8, activation="relu"),
                                   pn.layers.Dense(8, 3)],
                                  loss=pn.losses.SoftmaxCrossEntropy(),
                                  optimizer=SGD(0.05, momentum=0.9, flat=flat), seed=0)
            model.fit(x.astype("float32"), y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        model.to(backend.name, backend.device)
        model.fit(backend.asarray(x, "float32"), backend.asarray(y, "int64"), epochs=1,
                  batch_size=8, shuffle=False, verbose=0)
        results.append({n: pn.to_numpy(a) for n, a in model.parameters().items()})
        for a in model.parameters().values():
            assert_on_backend(a, backend, "float32")
    for n in results[0]:
        np.testing.assert_array_equal(results[0][n], results[1][n], err_msg=n)
