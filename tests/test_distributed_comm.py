"""The communicators (portanet/distributed/comm.py, mpi.py, torch_dist.py, nccl.py).

In this process: the launch environment read from fake variables, the one-process communicator
on every backend, the factory, the argument checks and the fault handling of the base class.
Launched jobs of 2 ranks (tests/distributed/comm_script.py): every collective over mpiexec
(NumPy, torch CPU, JAX, array-api-strict) and over torch.distributed gloo (NumPy, torch), and
the faults: a rank that raises, one that is SIGKILLed, one that hangs. Every launched process
has a hard deadline and is killed in a ``finally``, with every process it started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

from portanet.distributed.comm import (
    Communicator,
    DistributedError,
    LaunchEnvironment,
    LocalCommunicator,
    launch_environment,
)
from portanet.distributed.launch import communicator
from portanet.distributed.mpi import kinds_take_cuda
from portanet.distributed.nccl import NCCLCommunicator, _gpu_index

HERE = pathlib.Path(__file__).parent
SCRIPT = HERE / "distributed" / "comm_script.py"

# -- the launch environment ---------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "expected"), [
    pytest.param({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1", "PMI_FD": "9"},
                 LaunchEnvironment("mpi", 1, 2, 1), id="mpich-hydra"),
    pytest.param({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4",
                  "OMPI_COMM_WORLD_LOCAL_RANK": "1", "PMIX_RANK": "3"},
                 LaunchEnvironment("mpi", 3, 4, 1), id="open-mpi"),
    pytest.param({"PMIX_RANK": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"},
                 LaunchEnvironment("mpi", 2, 4, 0), id="pmix-srun"),
    pytest.param({"PMIX_RANK": "2"}, LaunchEnvironment("mpi", 2, 0, 0), id="pmix-no-size"),
    pytest.param({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                  "MASTER_PORT": "29500"}, LaunchEnvironment("torchrun", 1, 2, 1), id="torchrun"),
    pytest.param({"RANK": "5", "WORLD_SIZE": "8"}, LaunchEnvironment("torchrun", 5, 8, 0),
                 id="torch-no-local-rank"),
    pytest.param({"HOME": "/root", "LOCAL_RANK": "0"}, LaunchEnvironment(None, 0, 1, 0),
                 id="none"),
])
def test_launch_environment_reads_the_launchers_variables(environ, expected):
    assert launch_environment(environ) == expected


def test_launch_environment_reads_os_environ(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "3")
    assert launch_environment() == LaunchEnvironment("mpi", 0, 3, 0)


@pytest.mark.parametrize(("environ", "words"), [
    ({"PMI_RANK": "2", "PMI_SIZE": "2"}, ["PMI_RANK='2'", "0 <= rank < size"]),
    ({"RANK": "one", "WORLD_SIZE": "2"}, ["RANK='one'", "not an integer"]),
])
def test_launch_environment_refuses_inconsistent_variables(environ, words):
    with pytest.raises(DistributedError) as err:
        launch_environment(environ)
    assert all(w in str(err.value) for w in words), err.value


def test_launch_environment_and_the_local_factory_never_import_mpi4py(monkeypatch):
    """Importing mpi4py starts MPI: finding out who launched us must not do it."""
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # any import of it now fails
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "1")
    assert launch_environment().kind == "mpi"
    assert communicator("local").size == 1


# -- one process -----------------------------------------------------------------------------------


def test_local_communicator_collectives_are_identities(backend):
    import array_api_compat as compat

    comm = LocalCommunicator()
    assert (comm.name, comm.rank, comm.size) == ("local", 0, 1)
    for dtype in ("float32", "float64"):
        values = np.arange(6.0).reshape(2, 3)
        a = backend.asarray(values, dtype=dtype)
        for out, shape, expected in (
                (comm.allreduce_sum(a, "a test"), (2, 3), values),
                (comm.broadcast(a, 0, "a test"), (2, 3), values),
                (comm.allgather(a, "a test"), (1, 2, 3), values[None])):
            assert compat.array_namespace(out) is compat.array_namespace(a)
            assert out.dtype == a.dtype and compat.device(out) == compat.device(a)
            assert tuple(out.shape) == shape
            np.testing.assert_array_equal(backend.to_numpy(out), expected)
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]
    assert comm.broadcast_object(("x", 2)) == ("x", 2)
    comm.barrier()


def test_local_abort_prints_the_rank_and_exits(capsys):
    with pytest.raises(SystemExit) as stop:
        LocalCommunicator().abort("out of memory", code=3)
    assert stop.value.code == 3
    assert capsys.readouterr().err == "portanet.distributed: rank 0 of 1: out of memory\n"


def test_stop_all_on_error_reraises_on_one_process():
    with pytest.raises(KeyError, match="missing"), LocalCommunicator().stop_all_on_error():
        raise KeyError("missing")


class _Ended(Exception):
    """What the fake communicator's ``_end_all`` raises instead of ending the process."""


class _TwoRanks(Communicator):
    """Rank 1 of 2, no engine: for the base class's fault handling."""

    name, rank, size, timeout = "fake", 1, 2, 0.2

    def _end_all(self, code):
        raise _Ended(code)


def test_stop_all_on_error_aborts_every_rank_with_the_exception(capsys):
    with pytest.raises(_Ended) as ended, _TwoRanks().stop_all_on_error():
        raise ValueError("bad batch.")
    assert ended.value.args == (1,)
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise ValueError("bad batch.")' in err  # traceback first
    assert err.endswith("portanet.distributed: rank 1 of 2: failed with ValueError: bad batch; "
                        "stopping all ranks\n"), err


@pytest.mark.parametrize(("exit_code", "aborts"), [(0, False), (None, False), (2, True)])
def test_stop_all_on_error_lets_a_clean_exit_through(exit_code, aborts, capsys):
    expected = _Ended if aborts else SystemExit
    with pytest.raises(expected), _TwoRanks().stop_all_on_error():
        sys.exit(exit_code)
    assert ("stopping all ranks" in capsys.readouterr().err) is aborts


def test_a_wait_that_times_out_names_the_rank_the_collective_and_the_fix():
    comm = _TwoRanks()
    start = time.monotonic()
    with pytest.raises(DistributedError) as err:
        comm._wait(lambda: False, "the gradient all-reduce of epoch 1, step 12")
    assert 0.2 <= time.monotonic() - start < 1.0
    message = str(err.value)
    for words in ("rank 1 of 2", "the gradient all-reduce of epoch 1, step 12", "waited 0 s",
                  "died or is stuck", "timeout="):
        assert words in message, message


# -- arguments -----------------------------------------------------------------------------------


def test_communicator_factory_kinds(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert type(communicator()) is LocalCommunicator
    assert type(communicator("Local", timeout=5)) is LocalCommunicator
    mine = _TwoRanks()
    assert communicator(mine) is mine
    with pytest.raises(ValueError, match=r"unknown communicator 'gloo'.*'mpi'"):
        communicator("gloo")
    for bad in (0, -1.0, float("nan"), "60", True):
        with pytest.raises(ValueError, match="timeout must be a positive number"):
            communicator("local", timeout=bad)


@pytest.mark.parametrize(("kind", "hidden", "environ", "hint"), [
    ("auto", "mpi4py", {"PMI_RANK": "0", "PMI_SIZE": "2"}, 'pip install "portanet[mpi]"'),
    ("mpi", "mpi4py", {}, "mpich"),
    ("auto", "torch", {"RANK": "0", "WORLD_SIZE": "2"}, "pip install torch"),
    ("nccl", "cupy", {}, 'pip install "portanet[cuda]"'),
])
def test_a_missing_engine_says_what_to_install(kind, hidden, environ, hint, monkeypatch):
    monkeypatch.setitem(sys.modules, hidden, None)  # as if it were not installed
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ImportError) as err:
        communicator(kind)
    assert hint in str(err.value), err.value


def test_arrays_of_no_backend_and_bad_roots_are_refused():
    comm = LocalCommunicator()
    with pytest.raises(TypeError, match=r"received builtins.list; expected an array .*asarray"):
        comm.allreduce_sum([1.0, 2.0], "the loss sum")
    with pytest.raises(TypeError, match=r"the loss sum received an array of dtype bool"):
        comm.allreduce_sum(np.array([True]), "the loss sum")
    for root in (1, -1, "0", True):
        with pytest.raises(ValueError, match=r"root=.*expected a rank from 0 to 0"):
            comm.broadcast(np.zeros(2), root, "the state broadcast")


def test_nccl_checks_its_arguments_before_it_needs_cupy():
    with pytest.raises(ValueError, match="runs on a CUDA GPU, received device='cpu'"):
        NCCLCommunicator(device="cpu")
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        NCCLCommunicator(timeout=0)
    with pytest.raises(ValueError, match="TCP port number"):
        NCCLCommunicator(port=70000)
    # which GPU a rank takes: the hint's index, else local rank modulo the GPUs
    assert [_gpu_index(None, r, 2) for r in range(4)] == [0, 1, 0, 1]
    assert _gpu_index("cuda:1", 0, 2) == 1 and _gpu_index("cuda", 3, 2) == 1
    assert _gpu_index(0, 1, 2) == 0
    with pytest.raises(ValueError, match="asks for GPU 3, but this process sees 2"):
        _gpu_index("cuda:3", 0, 2)


def test_torch_without_the_launch_variables_says_how_to_launch(monkeypatch):
    pytest.importorskip("torch")
    from portanet.distributed.torch_dist import TorchCommunicator

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PMI_RANK",
                 "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributedError, match=r"needs the launch variables .* torchrun"):
        TorchCommunicator()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match=r"missing: \['MASTER_ADDR', 'MASTER_PORT'\]"):
        TorchCommunicator()


@pytest.mark.parametrize(("kinds", "aware"), [
    ("mpi,system", False), ("system,cuda:device", True), ("mpi, cuda", True),
    ("cuda:host,system", False), ("", False),
])
def test_cuda_awareness_from_the_memory_allocation_kinds(kinds, aware):
    assert kinds_take_cuda(kinds) is aware


# -- launched jobs: how they run -------------------------------------------------------------------


@dataclass
class Job:
    codes: list[int | None]  # per process; None: it had to be killed at the deadline
    out: str
    err: str
    ended: float  # time.monotonic() when the last process ended
    folder: pathlib.Path  # where its ranks wrote their verdicts


def _children(pids: set[int]) -> set[int]:
    """Every process descending from ``pids`` (read from /proc), so that none outlives a test."""
    found, parents = set(), {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    frontier = set(pids)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _kill(pids) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _run(commands: list[list[str]], envs: list[dict[str, str]], deadline: float,
         tmp_path: pathlib.Path) -> Job:
    """Start the processes, wait for all of them at most ``deadline`` seconds, then kill what
    is left (with everything it started). Output goes to files: a pipe could fill and block."""
    procs, seen = [], set()
    with contextlib.ExitStack() as files:
        logs = [(files.enter_context(open(tmp_path / f"out{i}", "w+")),
                 files.enter_context(open(tmp_path / f"err{i}", "w+"))) for i in range(len(envs))]
        try:
            for cmd, env, (out, err) in zip(commands, envs, logs, strict=True):
                procs.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=err,
                                              stdin=subprocess.DEVNULL, start_new_session=True))
            stop = time.monotonic() + deadline
            while time.monotonic() < stop and any(p.poll() is None for p in procs):
                seen |= _children({p.pid for p in procs})
                time.sleep(0.1)
            ended = time.monotonic()
            codes = [p.poll() for p in procs]
        finally:
            seen |= _children({p.pid for p in procs})
            _kill([p.pid for p in procs if p.poll() is None] + sorted(seen))
            for p in procs:
                p.wait(timeout=10)
        texts = []
        for out, err in logs:
            out.seek(0)
            err.seek(0)
            texts.append((out.read(), err.read()))
    gone_by = time.monotonic() + 5.0  # a SIGKILLed process takes a moment to go
    while (left := [pid for pid in seen if _state(pid) == "alive"]) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not left, f"processes outlived the job: {left}"
    return Job(codes, "".join(o for o, _ in texts), "".join(e for _, e in texts), ended,
               tmp_path)


def _state(pid: int) -> str:
    """"zombie" for an ended process its parent has not reaped (or one already gone)."""
    with contextlib.suppress(OSError, IndexError):
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return "zombie" if fields[0] == "Z" else "alive"
    return "zombie"


def _mpiexec() -> str:
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install \"portanet[mpi]\")")
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        pytest.skip("no mpiexec next to the Python interpreter nor on PATH")
    return found


def _run_mpi(mode: str, tmp_path, deadline: float) -> Job:
    command = [_mpiexec(), "-n", "2", sys.executable, str(SCRIPT), "mpi", mode, str(tmp_path)]
    return _run([command], [_environment()], deadline, tmp_path)


def _verdicts(job: Job, name: str) -> list[str]:
    """Both ranks ended well and wrote a verdict without failures, with the same checks;
    returns the names of the checks that passed."""
    found = {}
    for r in range(2):
        path = job.folder / f"rank{r}.json"
        assert path.exists(), f"rank {r} wrote no verdict.\nstdout:\n{job.out}\nstderr:\n{job.err}"
        found[r] = json.loads(path.read_text())
    for r, verdict in found.items():
        assert verdict["failures"] == [], "\n".join(verdict["failures"])
        assert (verdict["rank"], verdict["size"], verdict["name"]) == (r, 2, name)
    assert found[0]["passed"] == found[1]["passed"]
    assert all(code == 0 for code in job.codes), (job.codes, job.err)
    return found[0]["passed"]


def _fault_time(job: Job) -> float:
    lines = [line for line in job.out.splitlines() if line.startswith("FAULT ")]
    assert lines, f"rank 1 never reached the fault.\nstdout:\n{job.out}\nstderr:\n{job.err}"
    return float(lines[0].split()[1])


# -- launched jobs: MPI ----------------------------------------------------------------------------


def test_mpi_two_ranks_every_collective_on_every_namespace(tmp_path):
    passed = _verdicts(_run_mpi("checks", tmp_path, deadline=60), "mpi")
    modules = {"numpy": "numpy", "torch": "torch", "jax": "jax",
               "strict-device1": "array_api_strict"}
    for label, module in modules.items():
        if importlib.util.find_spec(module):
            for dtype in ("float64", "float32"):
                for check in ("allreduce", "allgather", "broadcast"):
                    assert f"{check} {label}/{dtype}" in passed, passed
    assert {"objects", "barrier", "bad input", "scalar and strided"} <= set(passed)


def test_mpi_a_rank_that_raises_stops_the_job(tmp_path):
    job = _run_mpi("raise", tmp_path, deadline=40)
    assert job.codes[0] not in (0, None), job.codes
    assert job.ended - _fault_time(job) < 5.0
    assert "portanet.distributed: rank 1 of 2: failed with ValueError: rank one is broken; " \
           "stopping all ranks" in job.err, job.err
    assert "came through the fault" not in job.out


def test_mpi_a_killed_rank_ends_the_job(tmp_path):
    job = _run_mpi("kill", tmp_path, deadline=40)
    assert job.codes[0] not in (0, None), job.codes
    assert job.ended - _fault_time(job) < 5.0


def test_mpi_a_stuck_rank_times_out_with_the_label(tmp_path):
    job = _run_mpi("stuck", tmp_path, deadline=40)
    assert job.codes[0] not in (0, None), job.codes
    waited = job.ended - _fault_time(job)
    assert 1.5 < waited < 2.0 + 5.0, waited  # timeout=2 in the script, then the abort
    assert ("DistributedError: rank 0 of 2 waited 2 s at the all-reduce rank 0 waits in for "
            "the other ranks") in job.err, job.err
    assert "portanet.distributed: rank 0 of 2: failed with DistributedError" in job.err


# -- launched jobs: torch.distributed (gloo) -------------------------------------------------------

TORCH_MODES = ("checks", "raise", "kill")


@pytest.fixture(scope="module")
def torch_jobs(tmp_path_factory) -> dict[str, Job]:
    """The 2-rank gloo jobs of TORCH_MODES, run by tests/distributed/torch_ranks.py: it imports
    torch once and forks the ranks with torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); fresh interpreters would spend ~2.5 s of CPU each on the import.
    The real torchrun runs below."""
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    folder = tmp_path_factory.mktemp("torch_jobs")
    command = [sys.executable, str(HERE / "distributed" / "torch_ranks.py"), str(folder),
               *TORCH_MODES]
    runner = _run([command], [_environment()], 120, folder)
    assert runner.codes == [0], (runner.codes, runner.out, runner.err)
    jobs = json.loads((folder / "jobs.json").read_text())
    found = {}
    for mode in TORCH_MODES:
        logs = [((folder / mode / f"rank{r}.out").read_text(),
                 (folder / mode / f"rank{r}.err").read_text()) for r in range(2)]
        found[mode] = Job(jobs[mode]["codes"], "".join(o for o, _ in logs),
                          "".join(e for _, e in logs), jobs[mode]["ended"], folder / mode)
    return found


def test_torch_gloo_two_ranks_every_collective(torch_jobs):
    passed = _verdicts(torch_jobs["checks"], "torch-gloo")
    for label in ("numpy", "torch"):
        for dtype in ("float64", "float32"):
            for check in ("allreduce", "allgather", "broadcast"):
                assert f"{check} {label}/{dtype}" in passed, passed
    assert {"objects", "barrier", "bad input", "scalar and strided", "reuse the group"} <= set(
        passed)


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_torch_gloo_a_dead_rank_fails_the_others_at_once(mode, torch_jobs):
    """gloo reports the closed socket ("Connection closed by peer") within milliseconds: rank 0
    raises DistributedError and its stop_all_on_error ends it."""
    job = torch_jobs[mode]
    assert None not in job.codes and 0 not in job.codes, job.codes
    assert job.ended - _fault_time(job) < 5.0
    assert "DistributedError: rank 0 of 2 lost the other ranks at the all-reduce rank 0 " \
           "waits in" in job.err, job.err
    assert "portanet.distributed: rank 0 of 2: failed with DistributedError" in job.err
    if mode == "raise":
        assert "rank 1 of 2: failed with ValueError: rank one is broken" in job.err
    else:
        assert job.codes[1] == -signal.SIGKILL


def test_torchrun_a_stuck_rank_times_out_and_torchrun_ends_the_job(tmp_path):
    """Through the real launcher: rank 0's timeout (2 s) ends it, then torchrun stops rank 1,
    which sleeps (without torchrun a stuck rank stays until its own next collective)."""
    torchrun = pathlib.Path(sys.executable).parent / "torchrun"
    if importlib.util.find_spec("torch") is None or not torchrun.exists():
        pytest.skip("torch (and its torchrun) is not installed next to this Python")
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
               "--monitor-interval", "0.1", str(SCRIPT), "torch", "stuck", str(tmp_path)]
    job = _run([command], [_environment()], 60, tmp_path)
    assert job.codes[0] not in (0, None), job.codes
    waited = job.ended - _fault_time(job)
    assert 1.5 < waited < 2.0 + 5.0, waited
    assert "rank 0 of 2 waited 2 s at the all-reduce rank 0 waits in" in job.err, job.err
