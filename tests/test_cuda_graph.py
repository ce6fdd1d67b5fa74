"""The CUDA-graph executor (engine/cuda_graph.py), driven on CPU and, when one is usable, on CUDA.

No CUDA device is needed for most of it: ``Rerun`` below stands in for ``torch.cuda.graph`` on
CPU torch. Like a graph it runs nothing when it "records", and each replay recomputes the
recorded function from the static buffers and writes the results into the same output memory.
So the executor's bookkeeping (static buffers, floats fed as 0-d arrays, the state copied
inside the graph, outputs copied out, a second signature, generator registration) runs for
real against eager torch. What only a GPU shows (the recording itself, the speed) is in the
``gpu`` tests at the end and in ``nox -s tests_gpu`` / ``nox -s bench``.

``test_the_step_has_nothing_a_graph_cannot_record`` runs the eager step under a torch dispatch
mode and refuses the ops that cannot be recorded: a host read (``.item()``, ``bool()``), a
tensor made from host data (``torch.tensor(0.5)`` is a host-to-device copy on CUDA), and ops
whose output shape depends on values (``nonzero``).
"""

from __future__ import annotations

import numpy as np
import pytest

import portanet as pn
from portanet.backends import ADAPTERS
from portanet.engine.cuda_graph import CudaGraph, flatten, unflatten

torch = pytest.importorskip("torch")
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

RNG = np.random.default_rng(3)
X = RNG.standard_normal((30, 6))
Y = np.arange(30) % 3
TOL = {"float64": 1e-12, "float32": 1e-5}


class Rerun:
    """A CUDA graph's stand-in on CPU: ``record`` runs nothing; ``replay`` re-runs the recorded
    body and copies its outputs into the memory the recording returned."""

    def __init__(self):
        self.generators = None  # what the last recording registered
        self.recorded = 0
        self.replays = 0
        self._last = None

    def warm_up(self, body):
        self._last = body()
        return self._last

    def record(self, body, generators):
        self.generators = list(generators)
        out, kept = self._last  # what the warm-up computed: the recording's shapes
        leaves, tree = flatten(out)
        state = set(kept)
        memory = [a.clone() if isinstance(a, torch.Tensor) and id(a) not in state else a
                  for a in leaves]

        def replay():
            self.replays += 1
            new = flatten(body()[0])[0]
            for dst, src in zip(memory, new, strict=True):
                if isinstance(dst, torch.Tensor) and id(dst) not in state:
                    dst.copy_(src)

        self.recorded += 1
        return replay, (unflatten(tree, memory), kept)

    def vector(self, n, like):
        return torch.empty(n, dtype=like.dtype, device=like.device)

    def write(self, vector, values):
        vector.copy_(torch.tensor(values, dtype=vector.dtype))

    def copy(self, dst, src):
        dst.copy_(src)

    def clone(self, a):
        return a.clone()


@pytest.fixture
def graphed(monkeypatch):
    """torch on CPU, with jit_compile=True running the CUDA-graph executor through Rerun."""
    recorders = []

    def recorder(self, device):
        recorders.append(Rerun())
        return recorders[-1]

    cls = type(ADAPTERS["torch"])
    monkeypatch.setattr(cls, "compiler_on", lambda self, device: CudaGraph.name)
    monkeypatch.setattr(cls, "graph_recorder", recorder)
    with pn.use_backend("torch", "cpu"):
        yield recorders


def _mlp(dtype="float64", jit_compile=True, optimizer=None, dropout=0.0, seed=0):
    layers = [pn.layers.Dense(6, 16, activation="relu"), pn.layers.BatchNorm(16)]
    if dropout:
        layers.append(pn.layers.Dropout(dropout))
    layers.append(pn.layers.Dense(16, 3))
    schedule = pn.schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.7)
    return pn.Sequential(layers, loss="softmax_cross_entropy", seed=seed, dtype=dtype,
                         optimizer=optimizer or pn.optimizers.Adam(schedule, weight_decay=0.01),
                         jit_compile=jit_compile)


def _host(model):
    out = {k: pn.to_numpy(v).astype(np.float64) for k, v in model.parameters().items()}
    out.update({k: pn.to_numpy(v).astype(np.float64) for k, v in model.buffers().items()})
    return out


def _assert_close(a, b, rtol):
    assert a.keys() == b.keys()
    for k in a:
        scale = max(1.0, float(np.max(np.abs(b[k]))))
        err = float(np.max(np.abs(a[k] - b[k]))) / scale
        assert err <= rtol, f"{k}: relative difference {err:.3g} > {rtol:g}"


def _steps(model, dtype, n=20, batch=8):
    losses = []
    for i in range(n):
        j = (i * batch) % (X.shape[0] - batch + 1)
        xb = pn.asarray(X[j:j + batch], dtype=dtype)
        losses.append(float(pn.to_numpy(model.train_step(xb, pn.asarray(Y[j:j + batch])))))
    return np.asarray(losses)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_replayed_step_matches_eager(graphed, dtype):
    """20 steps with BatchNorm, Adam with weight decay and a decaying learning rate: the
    floats change every step, so a recording that baked them in would drift at once."""
    eager = _mlp(dtype, jit_compile=False)
    replayed = _mlp(dtype)
    assert replayed.engine.executor == "torch.cuda.graph" and eager.engine.executor == "eager"
    np.testing.assert_allclose(_steps(replayed, dtype), _steps(eager, dtype),
                               rtol=TOL[dtype], atol=TOL[dtype])
    _assert_close(_host(replayed), _host(eager), TOL[dtype])
    (recorder,) = graphed
    assert recorder.recorded == 1 and recorder.replays == 19  # the first step is the warm-up
    assert replayed.engine.compilations == 1 and replayed.optimizer.iterations == 20


def test_a_flat_update_replays_too(graphed):
    """Adam(flat=True) under the recording updates one array at a time (the graph has removed
    the launches a flat buffer saves) and follows the eager run, which is flat."""
    def adam():
        return pn.optimizers.Adam(0.02, weight_decay=0.01, flat=True)

    eager, replayed = _mlp(jit_compile=False, optimizer=adam()), _mlp(optimizer=adam())
    np.testing.assert_allclose(_steps(replayed, "float64"), _steps(eager, "float64"),
                               rtol=TOL["float64"], atol=TOL["float64"])
    _assert_close(_host(replayed), _host(eager), TOL["float64"])
    (recorder,) = graphed
    assert recorder.recorded == 1 and recorder.replays == 19


def test_the_model_holds_the_static_buffers_and_the_caller_owns_the_loss(graphed):
    model = _mlp()
    x, y = pn.asarray(X[:8], dtype="float64"), pn.asarray(Y[:8])
    losses = [model.train_step(x, y) for _ in range(4)]
    kernel = model.parameters()["0.kernel"]
    model.train_step(x, y)
    assert model.parameters()["0.kernel"] is kernel  # updated in place, nothing copied in
    # every loss is its own array: a replay does not overwrite the ones already returned
    values = [float(pn.to_numpy(v)) for v in losses]
    assert len(set(values)) == 4, values
    assert all(losses[i] is not losses[j] for i in range(4) for j in range(i))


def test_the_users_arrays_are_copied_in_not_written(graphed):
    model = _mlp()
    model.train_step(pn.asarray(X[:8], dtype="float64"), pn.asarray(Y[:8]))
    mine = torch.full((6, 16), 0.1, dtype=torch.float64)
    model.set_parameters({"0.kernel": mine})
    model.fit(X, Y, epochs=2, batch_size=8, verbose=0, seed=0)
    np.testing.assert_array_equal(mine.numpy(), np.full((6, 16), 0.1))
    assert not np.array_equal(pn.to_numpy(model.parameters()["0.kernel"]), mine.numpy())


def test_fit_records_two_shapes_in_the_first_epoch_only(graphed):
    """24 training samples in batches of 10 (10, 10, 4) and 6 for validation: three
    recordings, all in the first epoch; the same history as eager."""
    counts = []

    def run(jit):
        model = _mlp(jit_compile=jit)

        class Count(pn.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                counts.append(model.engine.compilations)

        history = model.fit(X, Y, epochs=3, batch_size=10, validation_split=0.2, verbose=0,
                            seed=0, shuffle="host", callbacks=[Count()] if jit else [])
        return model, history

    replayed, h_graph = run(True)
    eager, h_eager = run(False)
    assert counts == [3, 3, 3]  # full and partial training batches + one validation shape
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(h_graph.history[key], h_eager.history[key], rtol=1e-12)
    _assert_close(_host(replayed), _host(eager), 1e-12)


def test_checkpoint_of_a_replayed_model_resumes_exactly(graphed, tmp_path):
    kwargs = dict(batch_size=8, verbose=0, seed=0, shuffle="host")
    straight = _mlp(optimizer=pn.optimizers.SGD(0.05, momentum=0.9))
    straight.fit(X, Y, epochs=3, **kwargs)
    first = _mlp(optimizer=pn.optimizers.SGD(0.05, momentum=0.9))
    first.fit(X, Y, epochs=2, **kwargs)
    first.save(tmp_path / "ckpt.safetensors")
    resumed = pn.load(tmp_path / "ckpt.safetensors", backend="torch", device="cpu")
    assert resumed.engine.executor == "torch.cuda.graph"
    resumed.fit(X, Y, epochs=3, initial_epoch=resumed.epoch, **kwargs)
    a, b = _host(resumed), _host(straight)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_dropout_generators_are_registered_and_a_reseed_records_again(graphed):
    model = _mlp(dropout=0.3)
    x, y = pn.asarray(X[:8], dtype="float64"), pn.asarray(Y[:8])
    for _ in range(3):
        model.train_step(x, y)
    dropout = model.layers[2]
    assert graphed[-1].generators == [dropout.generator.native]
    dropout.generator.reseed(11)
    model.train_step(x, y)
    assert len(graphed) == 2 and graphed[-1].generators == [dropout.generator.native]


def test_dropout_masks_change_between_replays(graphed):
    model = pn.Sequential([pn.layers.Dropout(0.5), pn.layers.Dense(6, 3)], loss="mse",
                          optimizer=pn.optimizers.SGD(0.0), seed=0, dtype="float64",
                          jit_compile=True)
    x = pn.asarray(np.ones((8, 6)), dtype="float64")
    y = pn.asarray(np.zeros((8, 3)), dtype="float64")
    losses = {float(pn.to_numpy(model.train_step(x, y))) for _ in range(5)}
    assert len(losses) > 1  # lr 0: only the masks change the loss


def test_data_parallel_halves_replay_too(graphed):
    """The two halves of a data-parallel step (gradients; the update) are recorded apart."""
    from portanet.distributed import LocalCommunicator
    from portanet.distributed.parallel import DataParallel

    eager, replayed = _mlp(jit_compile=False), _mlp()
    for model in (eager, replayed):
        strategy = DataParallel(LocalCommunicator())
        for i in range(6):
            xb = pn.asarray(X[i * 4:i * 4 + 4], dtype="float64")
            model.engine.data_parallel_step(xb, pn.asarray(Y[i * 4:i * 4 + 4]), strategy,
                                            1.0, 4)
    _assert_close(_host(replayed), _host(eager), 1e-12)
    assert replayed.engine.compilations == 2


# -- what a recording cannot hold -----------------------------------------------------------------
UNRECORDABLE = {
    "aten::_local_scalar_dense": "a host read (.item(), float(), bool())",
    "aten::is_nonzero": "a host read (bool() of a tensor)",
    "aten::lift_fresh": "a tensor made from host data (a host-to-device copy on CUDA)",
    "aten::nonzero": "a value-dependent shape (a host sync)",
    "aten::masked_select": "a value-dependent shape (a host sync)",
    "aten::unique_dim": "a value-dependent shape (a host sync)",
    "aten::_unique2": "a value-dependent shape (a host sync)",
}


class Unrecordable(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.found = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in UNRECORDABLE:
            self.found.append(f"{name}: {UNRECORDABLE[name]}")
        return func(*args, **(kwargs or {}))


def _every_layer_model(optimizer):
    L = pn.layers
    return pn.Sequential([
        L.Conv2D(1, 2, kernel_size=3, padding="same", activation="gelu"),
        L.BatchNorm(2), L.MaxPool2D(2), L.AvgPool2D(1),
        L.Residual([L.Conv2D(2, 2, kernel_size=3, padding="same")]),
        L.Activation("relu"), L.Dropout(0.1), L.Flatten(), L.Reshape((18,)), L.LayerNorm(18),
        L.Dense(18, 3, activation="selu", kernel_regularizer="l2"),
    ], loss="softmax_cross_entropy", optimizer=optimizer, seed=0, jit_compile=False)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adagrad", "adamw", "nadam",
                                       "adamax"])
def test_the_step_has_nothing_a_graph_cannot_record(optimizer):
    with pn.use_backend("torch", "cpu"):
        model = _every_layer_model(optimizer)
        x = pn.asarray(RNG.standard_normal((4, 1, 6, 6)), dtype="float32")
        y = pn.asarray(np.arange(4) % 3)
        model.train_step(x, y)  # builds the optimizer's slots outside the watch
        mode = Unrecordable()
        with mode:
            model.train_step(x, y)
            model.train_step(x, y)
        assert mode.found == []


def test_the_watch_catches_a_host_read():
    """The check above can fail: .item() and torch.tensor(float) inside it are reported."""
    with pn.use_backend("torch", "cpu"):
        mode = Unrecordable()
        with mode:
            t = torch.ones(3)
            _ = t.sum().item()
            _ = torch.tensor(0.5)
        assert [f.split(": ")[0] for f in mode.found] == \
            ["aten::_local_scalar_dense", "aten::lift_fresh"]


# -- on a CUDA device ---------------------------------------------------------------------------
cuda = pytest.mark.skipif(
    not any(getattr(d, "type", "") == "cuda" for d in ADAPTERS["torch"].devices()),
    reason="torch has no usable CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_graph_matches_eager_on_cuda(dtype):
    with pn.use_backend("torch", "cuda:0"):
        eager, replayed = _mlp(dtype, jit_compile=False), _mlp(dtype)
        assert replayed.engine.executor == "torch.cuda.graph"
        np.testing.assert_allclose(_steps(replayed, dtype), _steps(eager, dtype),
                                   rtol=TOL[dtype], atol=TOL[dtype])
        _assert_close(_host(replayed), _host(eager), TOL[dtype])
        assert replayed.engine.compilations == 1


@pytest.mark.gpu
@cuda
def test_cuda_graph_with_dropout_trains_on_cuda():
    with pn.use_backend("torch", "cuda:0"):
        model = _mlp("float32", dropout=0.3)
        history = model.fit(X, Y, epochs=3, batch_size=8, verbose=0, seed=0)
        assert np.isfinite(history.history["loss"]).all()
        assert model.engine.compilations == 2


def test_argument_trees_flatten_and_come_back():
    from portanet.optimizers.base import OptState

    tree = ({"a": 1.0, "b": [2, (3, None)]}, OptState(4, {"w": 5.0}))
    leaves, structure = flatten(tree)
    assert leaves == [1.0, 2, 3, None, 4, 5.0]
    back = unflatten(structure, leaves)
    assert back == tree and isinstance(back[1], OptState) and isinstance(back[0]["b"], list)
    hash(structure)  # a recording's key


def test_a_failed_recording_says_what_to_do_and_leaves_the_model_as_it_was(graphed,
                                                                             monkeypatch):
    model = _mlp()
    before = _host(model)

    def refuse(self, body, generators):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(Rerun, "record", refuse)
    with pytest.raises(RuntimeError, match=r"CUDA graph failed.*jit_compile=False.*not changed"):
        model.train_step(pn.asarray(X[:8], dtype="float64"), pn.asarray(Y[:8]))
    after = _host(model)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k])
    assert model.optimizer.iterations == 0
    model.jit_compile = False
    model.train_step(pn.asarray(X[:8], dtype="float64"), pn.asarray(Y[:8]))
