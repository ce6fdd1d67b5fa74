"""The engine: the pure training step, its executors, and what a compiled step must keep.

Eager is the reference. Every backend with a compiler (JAX: jax.jit; torch: torch.compile) is
checked against it over 20 steps (float64 <= 1e-12 relative, float32 <= 1e-5), with BatchNorm,
dropout and augmentation inside the step where the executor threads their random keys. Backends
without a compiler check that "auto" runs eagerly and True says clearly why it cannot.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import portanet as pn
from portanet import engine
from portanet.backends import ADAPTERS

RNG = np.random.default_rng(7)
X = RNG.standard_normal((40, 6))
Y = np.arange(40) % 3
X_IMG = RNG.standard_normal((12, 1, 6, 6))
TOL = {"float64": 1e-12, "float32": 1e-5}


def _mlp(dtype="float64", optimizer=None, dropout=0.0, batchnorm=True, jit_compile="auto",
         seed=0):
    layers = [pn.layers.Dense(6, 16, activation="tanh")]
    if batchnorm:
        layers.append(pn.layers.BatchNorm(16))
    if dropout:
        layers.append(pn.layers.Dropout(dropout))
    layers.append(pn.layers.Dense(16, 3))
    return pn.Sequential(layers, loss="softmax_cross_entropy",
                         optimizer=optimizer or pn.optimizers.Adam(0.01), seed=seed, dtype=dtype,
                         jit_compile=jit_compile)


def _host(model):
    out = {k: pn.to_numpy(v).astype(np.float64) for k, v in model.parameters().items()}
    out.update({k: pn.to_numpy(v).astype(np.float64) for k, v in model.buffers().items()})
    return out


def _assert_close(a: dict, b: dict, rtol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        scale = max(1.0, float(np.max(np.abs(b[k]))))
        err = float(np.max(np.abs(a[k] - b[k]))) / scale
        assert err <= rtol, f"{k}: relative difference {err:.3g} > {rtol:g}"


def _train(model, backend, dtype, steps=20, x=X, y=Y, batch=8, augment=None):
    losses = []
    for i in range(steps):
        j = (i * batch) % (x.shape[0] - batch + 1)
        xb = backend.asarray(x[j:j + batch], dtype)
        yb = backend.asarray(y[j:j + batch])
        losses.append(float(pn.to_numpy(model.train_step(xb, yb, augment=augment))))
    return np.asarray(losses)


def _compilers():
    """(backend id, name, device) of every installed backend that has a compiler."""
    found = []
    if importlib.util.find_spec("jax"):
        found.append(pytest.param(("jax", None), id="jax"))
    if importlib.util.find_spec("torch"):
        found.append(pytest.param(("torch", "cpu"), id="torch-cpu", marks=pytest.mark.slow))
    cuda = importlib.util.find_spec("torch") is not None and any(
        getattr(d, "type", "") == "cuda" for d in ADAPTERS["torch"].devices())
    found.append(pytest.param(("torch", "cuda:0"), id="torch-cuda", marks=[pytest.mark.gpu] + (
        [] if cuda else [pytest.mark.skip("torch is not installed or has no usable CUDA device")])))
    return found


@pytest.fixture(params=_compilers())
def compiling(request):
    from conftest import BackendCase

    name, device = request.param
    case = BackendCase(name, name, device)
    with pn.use_backend(case.name, case.device):
        yield case


# -- choosing the executor ---------------------------------------------------------------------
def test_auto_compiles_where_it_measures_faster_and_true_says_why_it_cannot(backend):
    model = _mlp()
    adapter = model.backend.adapter
    assert model.engine.compiled == (adapter.compiler is not None and
                                     adapter.compile_by_default)
    on = adapter.compiler_on(model.backend.device)  # torch: torch.cuda.graph on CUDA
    assert model.engine.executor == (on if model.engine.compiled else "eager")
    model.jit_compile = False
    assert not model.engine.compiled and model.engine.executor == "eager"
    if adapter.compiler is None:
        with pytest.raises(ValueError, match=rf"the {backend.name} backend has no compiler.*"
                                             r"jit_compile='auto'"):
            pn.Sequential([pn.layers.Dense(6, 3)], jit_compile=True).engine.compiled  # noqa: B018
    else:
        model.jit_compile = True
        assert model.engine.compiled and model.engine.executor == on


@pytest.mark.parametrize("bad", ["yes", 1, None, "AUTO"])
def test_jit_compile_values_are_checked(bad):
    if bad is None:  # None means "keep the model's setting" in compile() and fit()
        model = _mlp().compile(jit_compile=None)
        assert model.jit_compile == "auto"
        return
    with pytest.raises(ValueError, match=r"jit_compile must be 'auto', True or False, "
                                         rf"received {bad!r}"):
        _mlp(jit_compile=bad)


def test_jit_compile_is_kept_by_config_and_checkpoints(tmp_path):
    model = _mlp(jit_compile=False)
    assert pn.Sequential.from_config(model.get_config()).jit_compile is False
    model.save(tmp_path / "m.safetensors")
    assert pn.load(tmp_path / "m.safetensors").jit_compile is False


# -- the pure pieces -----------------------------------------------------------------------------
OPTIMIZERS = [
    lambda: pn.optimizers.SGD(0.05),
    lambda: pn.optimizers.SGD(0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3),
    lambda: pn.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    lambda: pn.optimizers.Adam(0.01, amsgrad=True, weight_decay=1e-3),
    lambda: pn.optimizers.AdamW(0.01, global_clip_norm=0.5),
    lambda: pn.optimizers.NAdam(0.01),
    lambda: pn.optimizers.AdaGrad(0.05, lr_decay=0.01),
    lambda: pn.optimizers.RMSProp(0.01, momentum=0.5, centered=True),
    lambda: pn.optimizers.AdaDelta(1.0),
    lambda: pn.optimizers.Adamax(0.01),
]


@pytest.mark.parametrize("make", OPTIMIZERS, ids=lambda f: repr(f()))
def test_pure_update_equals_the_stateful_step(backend, make, portable_kernels):
    """init/update (no state in the optimizer) gives the same bits as step(), both on the
    in-place path and on the portable one; a schedule is read at the same step numbers."""
    rng = np.random.default_rng(3)
    shapes = {"w": (3, 4), "b": (4,)}
    params0 = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(4)]
    for inplace in (True, False):
        stateful, pure = make(), make()
        stateful.inplace = inplace
        p_s = {k: backend.asarray(v, "float64") for k, v in params0.items()}
        p_p = {k: backend.asarray(v, "float64") for k, v in params0.items()}
        state = pure.init(p_p)
        for g in grads:
            gb = {k: backend.asarray(v, "float64") for k, v in g.items()}
            p_s = stateful.step(p_s, gb)
            p_p, state = pure.update(gb, state, p_p, inplace=inplace)
        assert state.step == stateful.iterations == 4 and pure.iterations == 0
        for k in shapes:
            np.testing.assert_array_equal(pn.to_numpy(p_p[k]), pn.to_numpy(p_s[k]))
            for slot, a in state.slots[k].items():
                np.testing.assert_array_equal(pn.to_numpy(a),
                                              pn.to_numpy(stateful._slots[k][slot]))


def test_state_layout_borrows_the_model_and_gives_it_back(backend):
    """bound() runs code on a state's arrays and restores the model's own afterwards."""
    model = _mlp()
    layout = engine.StateLayout(model)
    state = layout.gather(model.optimizer)
    own = dict(model.parameters())
    other = {k: backend.xp.zeros_like(v) for k, v in state.params.items()}
    with layout.bound(state._replace(params=other)):
        inside = model.parameters()
        assert all(inside[k] is other[k] for k in other)
    after = model.parameters()
    assert all(after[k] is own[k] for k in own)


# -- compiled against eager ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_step_matches_eager(compiling, dtype):
    """20 steps with BatchNorm and Adam: same losses, parameters and running statistics."""
    eager, compiled = _mlp(dtype, jit_compile=False), _mlp(dtype, jit_compile=True)
    assert compiled.engine.compiled and not eager.engine.compiled
    loss_e = _train(eager, compiling, dtype)
    loss_c = _train(compiled, compiling, dtype)
    np.testing.assert_allclose(loss_c, loss_e, rtol=TOL[dtype], atol=TOL[dtype])
    _assert_close(_host(compiled), _host(eager), TOL[dtype])
    assert compiled.optimizer.iterations == eager.optimizer.iterations == 20
    assert compiled.engine.compilations == 1


def test_compiled_dropout_and_augmentation_match_eager_on_jax():
    """JAX's keys go through the compiled step: the same masks as eager, step after step."""
    pytest.importorskip("jax")
    from conftest import BackendCase

    case = BackendCase("jax", "jax", None)
    with pn.use_backend("jax"):
        results = []
        for jit in (False, True):
            model = pn.Sequential([
                pn.layers.Conv2D(1, 2, kernel_size=3, padding="same", activation="relu"),
                pn.layers.Dropout(0.3), pn.layers.Flatten(), pn.layers.Dense(72, 3),
            ], loss="softmax_cross_entropy", optimizer=pn.optimizers.SGD(0.05, momentum=0.9),
                seed=1, dtype="float64", jit_compile=jit)
            augment = pn.data.Augment(["flip", "shift"], seed=5)
            losses = _train(model, case, "float64", steps=6, x=X_IMG, y=Y[:12], batch=4,
                            augment=augment)
            key = model.layers[1].generator.get_state()
            results.append((losses, _host(model), key, augment.generator.get_state()))
        (le, pe, ke, ae), (lc, pc, kc, ac) = results
        np.testing.assert_allclose(lc, le, rtol=1e-12)
        _assert_close(pc, pe, 1e-12)
        import jax

        # the generators continue from the same keys: the next masks agree too
        assert (jax.random.key_data(kc) == jax.random.key_data(ke)).all()
        assert (jax.random.key_data(ac) == jax.random.key_data(ae)).all()


def test_dropout_masks_change_from_step_to_step_when_compiled():
    """The compiled step takes a new key each time: a constant mask would be a frozen key."""
    pytest.importorskip("jax")
    with pn.use_backend("jax"):
        model = pn.Sequential([pn.layers.Dropout(0.5), pn.layers.Dense(6, 3)],
                              loss="mse", optimizer=pn.optimizers.SGD(0.0), seed=0,
                              dtype="float64", jit_compile=True)
        x = pn.asarray(np.ones((8, 6)), dtype="float64")
        y = pn.asarray(np.zeros((8, 3)), dtype="float64")
        losses = {float(pn.to_numpy(model.train_step(x, y))) for _ in range(5)}
        assert len(losses) > 1  # lr 0: only the masks change the loss


# -- what a compiled model must keep ------------------------------------------------------------
def test_no_recompilation_after_the_first_epoch(compiling):
    """A full batch and the last partial batch: two step compilations, in the first epoch
    only; the validation forward passes compile their shapes once too. On torch, dynamo's own
    count too: no graph break inside the step and no graph after the first epoch (Adam's bias
    corrections change at every step: as Python floats they were baked into the graph, and
    dynamo compiled it again at every step until its recompile limit, then ran it eagerly)."""
    model = _mlp("float32", jit_compile=True)
    counts, graphs = [], []
    dynamo = None
    if compiling.name == "torch":
        from torch._dynamo.utils import counters as dynamo

        dynamo.clear()

    class Count(pn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            counts.append(model.engine.compilations)
            if dynamo is not None:
                graphs.append(dynamo["stats"]["unique_graphs"])

    model.fit(X, Y, epochs=4, batch_size=12, validation_split=0.25, verbose=0, seed=0,
              callbacks=[Count()], metrics=["accuracy"])  # 30 training samples: 12, 12, 6
    assert counts[0] == counts[-1] and len(set(counts)) == 1, counts
    assert counts[0] == 3  # two training shapes + one validation shape
    assert model.engine.compile_seconds > 0
    if dynamo is not None:
        assert len(set(graphs)) == 1, f"dynamo compiled graphs after the first epoch: {graphs}"
        assert not dynamo["graph_break"], dict(dynamo["graph_break"])


def test_the_users_arrays_survive_donation():
    """jax.jit donates the state's buffers; arrays a user passed in or holds stay valid."""
    pytest.importorskip("jax")
    with pn.use_backend("jax"):
        model = _mlp(jit_compile=True)
        held = model.parameters()["0.kernel"]
        before = np.array(pn.to_numpy(held))
        mine = pn.asarray(np.full((6, 16), 0.1), dtype="float64")
        model.set_parameters({"0.kernel": mine})
        model.fit(X, Y, epochs=2, batch_size=8, verbose=0, seed=0)
        np.testing.assert_array_equal(pn.to_numpy(held), before)
        np.testing.assert_array_equal(pn.to_numpy(mine), np.full((6, 16), 0.1))
        assert not np.array_equal(pn.to_numpy(model.parameters()["0.kernel"]),
                                  np.full((6, 16), 0.1))


def test_checkpoint_of_a_compiled_model_resumes_exactly(compiling, tmp_path):
    """Save after 2 compiled epochs, load, train 1 more: the same bits as 3 uninterrupted."""
    kwargs = dict(batch_size=8, verbose=0, seed=0, shuffle="host")
    straight = _mlp(optimizer=pn.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
    straight.fit(X, Y, epochs=3, **kwargs)
    first = _mlp(optimizer=pn.optimizers.SGD(0.05, momentum=0.9), jit_compile=True)
    first.fit(X, Y, epochs=2, **kwargs)
    first.save(tmp_path / "ckpt.safetensors")
    resumed = pn.load(tmp_path / "ckpt.safetensors", backend=compiling.name,
                      device=compiling.device_spec)
    assert resumed.engine.compiled
    resumed.fit(X, Y, epochs=3, initial_epoch=resumed.epoch, **kwargs)
    a, b = _host(resumed), _host(straight)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_a_compiled_model_moves_between_backends(compiling):
    """to() drops the compiled step; training continues as if the model had never moved."""
    stay = _mlp(optimizer=pn.optimizers.Adam(0.01), jit_compile=False)
    move = _mlp(optimizer=pn.optimizers.Adam(0.01))
    move.jit_compile = True
    _train(stay, compiling, "float64", steps=5)
    _train(move, compiling, "float64", steps=5)
    move.to("numpy")
    with pytest.raises(ValueError, match="the numpy backend has no compiler"):
        move.train_step(X[:8], Y[:8])  # jit_compile=True on numpy: said clearly
    move.jit_compile = False
    with pn.use_backend("numpy"):
        from conftest import BackendCase

        _train(move, BackendCase("numpy", "numpy", None), "float64", steps=5)
    move.to(compiling.name, compiling.device_spec)
    move.jit_compile = True
    assert move.engine.compiled
    _train(move, compiling, "float64", steps=5)
    for _ in range(2):  # the same three runs of 5 steps, never moved
        _train(stay, compiling, "float64", steps=5)
    _assert_close(_host(move), _host(stay), 1e-12)


# -- no host reads inside the step ----------------------------------------------------------------
def _every_layer_model():
    return pn.Sequential([
        pn.layers.Conv2D(1, 2, kernel_size=3, padding="same", activation="gelu"),
        pn.layers.BatchNorm(2), pn.layers.MaxPool2D(2), pn.layers.AvgPool2D(1),
        pn.layers.Residual([pn.layers.Conv2D(2, 2, kernel_size=3, padding="same")]),
        pn.layers.Activation("relu"), pn.layers.Dropout(0.1), pn.layers.Flatten(),
        pn.layers.Reshape((18,)), pn.layers.LayerNorm(18),
        pn.layers.Dense(18, 3, activation="selu", kernel_regularizer="l2"),
    ], loss="softmax_cross_entropy", optimizer="adam", seed=0, jit_compile=True)


LOSSES = ["softmax_cross_entropy", "categorical_cross_entropy", "mse", "mae", "huber",
          "binary_cross_entropy_with_logits", "hinge", "log_cosh"]


def test_every_layer_traces_with_no_host_read():
    """jax.jit refuses float(), bool(), .item() and Python branches on traced values: every
    built-in layer, in one model, compiles. A host read added to any of them fails here."""
    pytest.importorskip("jax")
    with pn.use_backend("jax"):
        model = _every_layer_model()
        x = pn.asarray(X_IMG, dtype="float32")
        y = pn.asarray(Y[:12])
        model.train_step(x, y)
        assert model.engine.compilations == 1
        model.predict(x)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("make", OPTIMIZERS[1::2], ids=lambda f: type(f()).__name__)
def test_losses_and_optimizers_trace_with_no_host_read(loss, make):
    pytest.importorskip("jax")
    with pn.use_backend("jax"):
        probs = loss in ("categorical_cross_entropy",)
        layers = [pn.layers.Dense(6, 3, activation="softmax" if probs else None)]
        model = pn.Sequential(layers, loss=loss, optimizer=make(), seed=0, jit_compile=True)
        if loss in ("mse", "mae", "huber", "log_cosh", "binary_cross_entropy_with_logits",
                    "hinge"):
            y = (RNG.random((8, 3)) > 0.5).astype(np.float32)
        else:
            y = Y[:8]
        model.train_step(pn.asarray(X[:8], dtype="float32"), pn.asarray(y))
        assert model.engine.compilations == 1


def test_a_host_read_in_a_layer_fails_the_trace():
    """The check above can fail: a layer that reads a value on the host does not compile."""
    pytest.importorskip("jax")

    class Peek(pn.layers.Layer):
        def forward(self, x, training=None):
            scale = 2.0 if float(pn.to_numpy(x[0, 0])) > 0 else 1.0  # a host read
            return x * scale, lambda dy: dy * scale

    with pn.use_backend("jax"):
        model = pn.Sequential([Peek(), pn.layers.Dense(6, 3)], loss="mse", optimizer="sgd",
                              seed=0, jit_compile=True)
        x = pn.asarray(X[:4], dtype="float32")
        with pytest.raises(Exception, match="(?i)concret|tracer"):
            model.train_step(x, pn.asarray(np.zeros((4, 3)), dtype="float32"))
        # eagerly the same layer runs (reading the value is only slow, not wrong)
        model.jit_compile = False
        model.train_step(x, pn.asarray(np.zeros((4, 3)), dtype="float32"))


def test_adapters_that_compile_say_how():
    for adapter in ADAPTERS.values():
        if adapter.compiler is None:
            assert not adapter.compile_by_default
        else:
            assert isinstance(adapter.compiler, str)


def test_auto_runs_eagerly_where_a_layer_compiles_badly():
    """Layer.compiles_well: a recurrent model stays eager under "auto"; True still compiles."""
    pytest.importorskip("jax")
    from portanet import layers as L

    with pn.use_backend("jax"):
        assert pn.Sequential([L.LSTM(2, 3)]).engine.executor == "eager"
        assert pn.Sequential([L.Bidirectional(L.GRU(2, 3))], jit_compile=True).engine.executor \
            == "jax.jit"
        assert pn.Sequential([L.Dense(2, 3)]).engine.executor == "jax.jit"


def test_torch_compile_keeps_a_cache_per_architecture():
    """Dynamo keeps at most ``recompile_limit`` (8) graphs per code object and every model's
    step is the same code: the torch adapter compiles one copy of it per family
    (architecture), so architectures past the limit in one process are compiled too, not run
    eagerly."""
    torch = pytest.importorskip("torch")
    from torch._dynamo.utils import counters

    adapter = ADAPTERS["torch"]

    def make_step():
        def step(x, scalars):  # one closure code for every "model", as engine/step.py's
            return x * scalars["lr"]
        return step

    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2):  # 2, not 8: fewer compilations to wait
        for i in range(4):
            step = adapter.compile(make_step(), family=("test_engine", i))
            out = step(torch.ones(i + 1), {"lr": 0.5})  # a new shape: a new graph per family
            assert torch.equal(out, torch.full((i + 1,), 0.5))
    assert counters["stats"]["unique_graphs"] == 4
