"""Data-parallel fit on two real processes (``mpiexec -n 2``, and torch.distributed's gloo on
loopback) against the same fit in one process with the same global batch.

The claim (portanet/distributed/parallel.py): with each rank's gradient weighted by its share
of the batch, N processes compute what one process computes on the whole batch, up to the
order of float additions. float64, dropout off: 1e-12 relative on the parameters after the
run (measured: about 1e-15). The scenarios run in tests/distributed/fit_script.py, one launch
per backend; this file reads what each rank wrote.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).parent / "distributed" / "fit_script.py"
ROOT = pathlib.Path(__file__).parent.parent
TOLERANCE = 1e-12
LAUNCH_TIMEOUT = 180  # seconds: a hang fails the test instead of the run


def _mpiexec() -> str | None:
    beside = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    _mpiexec() is None or not __import__("importlib").util.find_spec("mpi4py"),
    reason='needs mpi4py and mpiexec: pip install "portanet[mpi]"')


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "OMPI_", "PMIX_", "MPI_")) and
           k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def launch_mpi(out: pathlib.Path, backend: str, scenarios: list[str], check: bool = True):
    """Run the scenarios on 2 ranks under mpiexec; returns the finished process."""
    command = [_mpiexec(), "-n", "2", sys.executable, str(SCRIPT), str(out), backend,
               ",".join(scenarios)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(),
                          timeout=LAUNCH_TIMEOUT)
    if check and done.returncode != 0:
        pytest.fail(f"mpiexec exited {done.returncode}:\n{done.stdout[-3000:]}\n"
                    f"{done.stderr[-3000:]}")
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_gloo(out: pathlib.Path, backend: str, scenarios: list[str]) -> list[str]:
    """The same scenarios as 2 torch.distributed ranks (what torchrun sets, on loopback);
    returns each rank's stdout."""
    port = str(_free_port())
    procs = []
    try:
        for rank in range(2):
            env = {**_env(), "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
            procs.append(subprocess.Popen(
                [sys.executable, str(SCRIPT), str(out), backend, ",".join(scenarios)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = [p.communicate(timeout=LAUNCH_TIMEOUT) for p in procs]
        for p, (stdout, stderr) in zip(procs, results, strict=True):
            if p.returncode != 0:
                pytest.fail(f"a gloo rank exited {p.returncode}:\n{stdout[-2000:]}\n"
                            f"{stderr[-3000:]}")
        return [stdout for stdout, _ in results]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def read(out: pathlib.Path, scenario: str, who: str) -> tuple[dict, dict]:
    with np.load(out / f"{scenario}.{who}.npz") as f:
        arrays = {k: f[k] for k in f.files if k != "logs"}
        logs = json.loads(bytes(f["logs"]).decode())
    return arrays, logs


def relative_error(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-300))
               for k in a)


def params(arrays: dict) -> dict:
    return {k: v for k, v in arrays.items() if k.startswith("p:")}


def assert_ranks_identical(out, scenario):
    """Both ranks end with the same parameters and buffers, bit for bit, and the same logs."""
    r0, logs0 = read(out, scenario, "rank0")
    r1, logs1 = read(out, scenario, "rank1")
    assert r0.keys() == r1.keys()
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k], err_msg=f"{scenario}: {k} differs")
    timed = ("time", "samples_per_second")  # each rank's own clock
    assert {k: v for k, v in logs0["history"].items() if k not in timed} == \
        {k: v for k, v in logs1["history"].items() if k not in timed}
    return r0, logs0


def assert_equals_one_process(out, scenario, buffers=True):
    r0, logs0 = assert_ranks_identical(out, scenario)
    single, logs1 = read(out, scenario, "single")
    chosen = r0 if buffers else params(r0)
    reference = single if buffers else params(single)
    error = relative_error(chosen, reference)
    assert error <= TOLERANCE, f"{scenario}: 2 processes vs 1: relative error {error:.2e}"
    assert len(logs0["history"]["loss"]) == len(logs1["history"]["loss"])
    np.testing.assert_allclose(logs0["history"]["loss"], logs1["history"]["loss"],
                               rtol=TOLERANCE)
    np.testing.assert_allclose(logs0["history"]["val_loss"], logs1["history"]["val_loss"],
                               rtol=TOLERANCE)
    return error


MPI_SCENARIOS = ["plain", "uneven", "syncbn", "localbn", "seeds", "noseed", "dropout",
                 "earlystop", "onestops", "writers", "resume"]


@pytest.fixture(scope="module")
def mpi_numpy(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi_numpy")
    launch_mpi(out, "numpy", MPI_SCENARIOS)
    return out


@needs_mpi
@pytest.mark.parametrize("scenario", ["plain", "uneven", "syncbn", "seeds", "earlystop"])
def test_two_processes_equal_one_process_numpy_mpi(mpi_numpy, scenario):
    assert_equals_one_process(mpi_numpy, scenario)


@needs_mpi
def test_early_stopping_stops_every_rank_at_the_same_epoch(mpi_numpy):
    _, logs = assert_ranks_identical(mpi_numpy, "earlystop")
    assert logs["stop_reason"] == "early_stopping"
    assert len(logs["history"]["loss"]) < 30  # it did stop early, on both (identical logs)
    _, single = read(mpi_numpy, "earlystop", "single")
    assert len(single["history"]["loss"]) == len(logs["history"]["loss"])


@needs_mpi
def test_local_batchnorm_differs_from_one_process_but_ranks_agree(mpi_numpy):
    """Each rank normalizes with its own 16 rows: the run is not the one-process run, but the
    parameters (same averaged update) and the running statistics (rank 0's) agree."""
    assert_ranks_identical(mpi_numpy, "localbn")
    synced, _ = read(mpi_numpy, "syncbn", "rank0")
    local, _ = read(mpi_numpy, "localbn", "rank0")
    assert any(k.startswith("b:") for k in local)
    assert relative_error(params(local), params(synced)) > 1e-6  # the statistics mattered


@needs_mpi
def test_seed_none_is_rank_zeros_seed(mpi_numpy):
    assert_ranks_identical(mpi_numpy, "noseed")


@needs_mpi
def test_dropout_masks_differ_between_ranks_but_the_update_is_shared(mpi_numpy):
    """Same weights on both ranks; and not the weights of one process, whose masks for the
    second half of each batch are not those rank 1 drew."""
    assert_ranks_identical(mpi_numpy, "dropout")


@needs_mpi
def test_a_callback_stopping_on_one_rank_stops_all(mpi_numpy):
    r0, logs0 = read(mpi_numpy, "onestops", "rank0")
    r1, logs1 = read(mpi_numpy, "onestops", "rank1")
    assert len(logs0["history"]["loss"]) == len(logs1["history"]["loss"]) == 2
    assert logs1["stop_reason"] == "test" and logs0["stop_reason"] == "another_rank"
    for k in r0:
        np.testing.assert_array_equal(r0[k], r1[k])


@needs_mpi
def test_only_rank_zero_writes_checkpoints_and_logs(mpi_numpy):
    folder = mpi_numpy / "writers"
    assert sorted(p.name for p in folder.iterdir()) == \
        ["ckpt-1.safetensors", "ckpt-2.safetensors", "log.csv"]
    rows = (folder / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 3, rows  # a header and one row per epoch: not one per rank


@needs_mpi
def test_resume_from_a_checkpoint_on_two_ranks_is_exact(mpi_numpy):
    """1 epoch, ModelCheckpoint, pn.load on both ranks, 1 more epoch == 2 epochs straight,
    bit for bit, with Dropout drawing on both ranks (rank 1's streams are per epoch)."""
    straight, logs_s = assert_ranks_identical(mpi_numpy, "resume_straight")
    resumed, logs_r = assert_ranks_identical(mpi_numpy, "resume_resumed")
    for k in straight:
        np.testing.assert_array_equal(resumed[k], straight[k], err_msg=k)
    assert logs_r["history"]["loss"] == logs_s["history"]["loss"][1:]


@needs_mpi
@pytest.mark.parametrize("scenario, message", [
    ("differ_model", "rank 1 of 2 differs from rank 0 in the model"),
    ("differ_seed", "rank 1 of 2 differs from rank 0 in the seed"),
])
def test_ranks_that_disagree_are_refused_naming_the_rank(tmp_path, scenario, message):
    done = launch_mpi(tmp_path, "numpy", [scenario], check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr[-3000:]
    assert not list(tmp_path.glob("*.npz"))  # refused before training


@needs_mpi
def test_a_rank_that_raises_stops_every_rank(tmp_path):
    """Rank 1 raises in epoch 2 of 50: the job ends (no hang), exit != 0, with its message."""
    done = launch_mpi(tmp_path, "numpy", ["fails"], check=False)
    assert done.returncode != 0
    assert "a planted failure on rank 1" in done.stderr
    assert "rank 1 of 2" in done.stderr


@needs_mpi
@pytest.mark.parametrize("backend", ["torch", "jax", "array_api_strict"])
def test_two_processes_equal_one_process_other_backends_mpi(tmp_path, backend):
    """Host staging (strict, JAX: its compiled halves around the all-reduce), torch tensors."""
    pytest.importorskip(backend)
    # JAX compiles each half of the step per batch shape: one scenario keeps it to seconds
    scenarios = ["plain"] if backend == "jax" else ["plain", "syncbn"]
    launch_mpi(tmp_path, backend, scenarios)
    for scenario in scenarios:
        assert_equals_one_process(tmp_path, scenario)


def test_two_processes_equal_one_process_torch_gloo(tmp_path):
    pytest.importorskip("torch")
    stdouts = launch_gloo(tmp_path, "torch", ["plain", "uneven"])
    for scenario in ("plain", "uneven"):
        assert_equals_one_process(tmp_path, scenario)
    # the group fit made is destroyed at exit, before the interpreter's teardown (where gloo's
    # threads freeing finished work could abort the process: seen once in CI)
    for r, stdout in enumerate(stdouts):
        assert f"rank {r}: group open at exit: False" in stdout, stdout[-500:]


def test_one_process_is_unchanged_by_distributed_true():
    """Outside a launcher, distributed=True is the plain fit, bit for bit."""
    import portanet as pn
    from portanet import data

    x, y = data.make_spiral(n_samples=60, seed=0)
    runs = []
    for distributed in (False, True):
        model = pn.Sequential([pn.layers.Dense(2, 8, activation="relu"),
                               pn.layers.Dense(8, 3)], loss="softmax_cross_entropy",
                              optimizer="adam", seed=0, dtype="float64")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, seed=0, distributed=distributed)
        runs.append({k: pn.to_numpy(v) for k, v in model.parameters().items()})
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_distributed_argument_is_checked():
    import portanet as pn

    model = pn.Sequential([pn.layers.Dense(2, 3)], loss="mse", optimizer="sgd", seed=0)
    with pytest.raises(TypeError, match="distributed must be True, False"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 3)), verbose=0, distributed="yes")


@needs_mpi
def test_cli_train_distributed_under_mpiexec(tmp_path):
    """`mpiexec -n 2 portanet train --distributed`: rank 0 alone reports and saves."""
    output = tmp_path / "spiral.safetensors"
    command = [_mpiexec(), "-n", "2", sys.executable, "-c",
               "import sys; from portanet.cli import main; sys.exit(main())", "train",
               "--distributed", "--dataset", "spiral", "--epochs", "3", "--output",
               str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=_env(),
                          timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test accuracy:") == 1, done.stdout
    assert "data-parallel on 2 processes" in done.stdout
    assert output.exists() and not list(tmp_path.glob("*.tmp"))


@needs_mpi
def test_bench_distributed_splits_each_step(tmp_path):
    """`portanet bench --distributed 2`'s rows: compute + all-reduce = step, a floor from the
    measured bandwidth, a 1-process base with speedup 1."""
    from portanet import bench_distributed

    report = bench_distributed.run([2], "mlp", "numpy", None, "float32", [64], threads=1,
                                   min_time=0.0)
    one, two = sorted(report["rows"], key=lambda r: r["processes"])
    assert one["processes"] == 1 and one["speedup"] == 1.0 and one["comm_s"] == 0.0
    assert two["processes"] == 2 and two["comm_s"] > 0 and two["floor_s"] > 0
    assert abs(two["compute_s"] + two["comm_s"] - two["step_s"]) < 1e-12
    params = 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    assert two["bucket_bytes"] == 4 * params
    assert "speedup" in bench_distributed.table(report)


# ---------------------------------------------------------------------------------------------
# In one process, on every backend: the data-parallel step's halves and their pieces
# ---------------------------------------------------------------------------------------------
def _net(pn, batchnorm=None, jit_compile="auto"):
    layers = [pn.layers.Dense(6, 16, activation="tanh")]
    if batchnorm is not None:
        layers.append(pn.layers.BatchNorm(16, synchronized=batchnorm))
    layers.append(pn.layers.Dense(16, 3))
    return pn.Sequential(layers, loss="softmax_cross_entropy",
                         optimizer=pn.optimizers.Adam(0.01), seed=0, dtype="float64",
                         jit_compile=jit_compile)


@pytest.mark.parametrize("batchnorm", [None, True])
def test_the_split_step_on_one_process_equals_train_step(backend, batchnorm):
    """loss_and_gradients, the (identity) all-reduce of one process, apply_gradients: the same
    10 steps as train_step, bit for bit where both run eagerly (and to 1e-12 where JAX
    compiles each half apart from the whole step)."""
    import portanet as pn
    from portanet.distributed import DataParallel, LocalCommunicator

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 6)), np.arange(40) % 3
    with pn.use_backend(backend.name, backend.device):
        whole, split = _net(pn, batchnorm), _net(pn, batchnorm)
        strategy = DataParallel(LocalCommunicator())
        for i in range(10):
            xb = backend.asarray(x[4 * i:4 * i + 8], "float64")
            yb = backend.asarray(y[4 * i:4 * i + 8])
            a = whole.train_step(xb, yb)
            b = split.engine.data_parallel_step(xb, yb, strategy, 1.0, xb.shape[0])
            assert compat_namespace(b) is compat_namespace(xb)
        host = {k: pn.to_numpy(v) for k, v in whole.parameters().items()}
        other = {k: pn.to_numpy(v) for k, v in split.parameters().items()}
        exact = not whole.engine.compiled
        for k in host:
            if exact:
                np.testing.assert_array_equal(other[k], host[k], err_msg=k)
            else:
                np.testing.assert_allclose(other[k], host[k], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(float(pn.to_numpy(b)), float(pn.to_numpy(a)), rtol=1e-12)
        assert split.optimizer.state().step == 10


def compat_namespace(a):
    import array_api_compat

    return array_api_compat.array_namespace(a)


def test_a_process_without_rows_adds_zero_gradients(backend):
    """The last batch smaller than the process count: a process with 0 rows still joins the
    all-reduce, with zeros, and its step counts like everyone's."""
    import portanet as pn
    from portanet.distributed import DataParallel, LocalCommunicator

    with pn.use_backend(backend.name, backend.device):
        model = _net(pn, jit_compile=False)
        before = {k: pn.to_numpy(v).copy() for k, v in model.parameters().items()}
        empty = backend.asarray(np.zeros((0, 6)), "float64")
        ids = backend.asarray(np.zeros((0,), dtype=np.int64))
        loss = model.engine.data_parallel_step(empty, ids, DataParallel(LocalCommunicator()),
                                               0.0, 3)
        assert loss is None and model.optimizer.state().step == 1
        after = {k: pn.to_numpy(v) for k, v in model.parameters().items()}
        for k in before:  # Adam on a zero gradient from zero moments moves nothing
            np.testing.assert_array_equal(after[k], before[k])


def test_synchronized_batchnorm_cannot_compile_and_says_so():
    pytest.importorskip("jax")
    import portanet as pn
    from portanet.distributed import DataParallel, LocalCommunicator

    with pn.use_backend("jax"):
        model = _net(pn, batchnorm=True, jit_compile=True)
        x = pn.asarray(np.ones((4, 6)), dtype="float64")
        y = pn.asarray(np.zeros(4, dtype=np.int64))
        with pytest.raises(ValueError, match="synchronized=True.*cannot be compiled"):
            model.engine.data_parallel_step(x, y, DataParallel(LocalCommunicator()), 1.0, 4)
        model.jit_compile = "auto"  # auto: the halves run eagerly
        model.engine.data_parallel_step(x, y, DataParallel(LocalCommunicator()), 1.0, 4)


def test_synchronized_batchnorm_config_round_trips(tmp_path):
    import portanet as pn

    model = _net(pn, batchnorm=True)
    path = model.save(tmp_path / "m.safetensors")
    assert pn.load(path).layers[1].synchronized is True
    assert "synchronized" not in pn.layers.BatchNorm(3).get_config()  # older files unchanged
    with pytest.raises(ValueError, match="synchronized must be True or False"):
        pn.layers.BatchNorm(3, synchronized="yes")


def test_flat_buckets_cut_back_to_the_shapes(backend):
    """One bucket per dtype, cut back into the original shapes and names (nested slots too)."""
    import portanet as pn
    from portanet.distributed import DataParallel, LocalCommunicator

    strategy = DataParallel(LocalCommunicator())
    arrays = {"g": {"a": backend.asarray(np.arange(6.0).reshape(2, 3), "float64"),
                    "b": backend.asarray(np.arange(3.0), "float32"),
                    "c": {"m": backend.asarray(np.ones((1, 2)), "float64")}, "empty": {}}}
    seen = []
    out = strategy._bucketed(arrays, lambda flat, what: seen.append(flat.shape) or flat * 2,
                             "a test")
    assert sorted(seen) == [(3,), (8,)]
    np.testing.assert_array_equal(pn.to_numpy(out["g"]["a"]),
                                  2 * np.arange(6.0).reshape(2, 3))
    assert pn.to_numpy(out["g"]["b"]).dtype == np.float32
    np.testing.assert_array_equal(pn.to_numpy(out["g"]["c"]["m"]), 2 * np.ones((1, 2)))
    assert out["g"]["empty"] == {}
