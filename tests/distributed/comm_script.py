"""Run by tests/test_distributed_comm.py on every rank of a launched job (mpiexec, torchrun,
or the ranks that torch_ranks.py forks): ``python comm_script.py KIND MODE OUT_DIR``.

KIND: "mpi" or "torch" (the communicator under test). MODE:

* ``checks``: every collective on every namespace installed (NumPy, torch CPU, JAX,
  array-api-strict), float64 and float32, against values this script computes itself: each
  rank draws its data from ``default_rng([SEED, rank])``, so every rank can draw every other
  rank's data too, and the expected sum is NumPy's float64 sum of those. Each rank writes
  ``OUT_DIR/rank<r>.json``: its checks and the failures, with what was received.
* ``raise``, ``kill``, ``stuck``: faults. Rank 1 raises inside ``stop_all_on_error()``, is
  SIGKILLed, or sleeps, while rank 0 waits in an all-reduce labelled "the all-reduce rank 0
  waits in". Rank 1 prints ``FAULT <monotonic seconds>`` first, so the test can time how fast
  the job ends after the fault.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import sys
import time
import traceback

import numpy as np

import portanet as pn

SEED = 20261202
SHAPE = (3, 5)


def make_comm(kind: str, timeout: float):
    if kind == "mpi":
        from portanet.distributed.mpi import MPICommunicator

        return MPICommunicator(timeout=timeout)
    from portanet.distributed.torch_dist import TorchCommunicator

    return TorchCommunicator(timeout=timeout)


def data(rank: int, dtype: str, shape=SHAPE) -> np.ndarray:
    return np.random.default_rng([SEED, rank]).standard_normal(shape).astype(dtype)


class Checks:
    """Runs named checks, keeps going after a failure, and records what went wrong."""

    def __init__(self):
        self.passed, self.failures = [], []

    def run(self, name, fn):
        try:
            fn()
            self.passed.append(name)
        except Exception as err:
            self.failures.append(f"{name}: {type(err).__name__}: {err}\n"
                                 f"{traceback.format_exc(limit=3)}")


def namespaces(kind: str):
    """(label, to(numpy array) -> that namespace's array) for what is installed."""
    found = [("numpy", lambda n: n)]
    if importlib.util.find_spec("torch"):
        found.append(("torch", lambda n: pn.to_backend(n, "torch", "cpu")))
    if kind == "mpi" or os.environ.get("COMM_SCRIPT_ALL_NAMESPACES"):
        if importlib.util.find_spec("jax"):
            found.append(("jax", lambda n: pn.to_backend(n, "jax")))
        if importlib.util.find_spec("array_api_strict"):
            found.append(("strict-device1",
                          lambda n: pn.to_backend(n, "array_api_strict", "device1")))
    return found


def same_kind(result, like, shape) -> None:
    """``result`` is in ``like``'s namespace, dtype and device, with ``shape``."""
    import array_api_compat as compat

    assert compat.array_namespace(result) is compat.array_namespace(like), (
        f"namespace {type(result)}, expected {type(like)}")
    assert result.dtype == like.dtype, f"dtype {result.dtype}, expected {like.dtype}"
    assert compat.device(result) == compat.device(like), (
        f"device {compat.device(result)}, expected {compat.device(like)}")
    assert tuple(result.shape) == tuple(shape), f"shape {tuple(result.shape)}, expected {shape}"


def close(result, expected: np.ndarray, dtype: str) -> None:
    rtol = {"float64": 1e-12, "float32": 1e-6}[dtype]
    np.testing.assert_allclose(np.asarray(pn.to_numpy(result), dtype=np.float64), expected,
                               rtol=rtol, atol=rtol)


def check_allreduce(comm, label, to, dtype):
    mine, everyone = data(comm.rank, dtype), [data(k, dtype) for k in range(comm.size)]
    a = to(mine.copy())
    out = comm.allreduce_sum(a, f"the all-reduce check {label}/{dtype}")
    same_kind(out, a, SHAPE)
    close(out, np.sum([e.astype(np.float64) for e in everyone], axis=0), dtype)
    if label == "jax":  # a JAX array is immutable: staging must not write into it
        np.testing.assert_array_equal(pn.to_numpy(a), mine)


def check_allgather(comm, label, to, dtype):
    everyone = [data(k, dtype) for k in range(comm.size)]
    a = to(data(comm.rank, dtype))
    out = comm.allgather(a, f"the all-gather check {label}/{dtype}")
    same_kind(out, a, (comm.size, *SHAPE))
    close(out, np.stack(everyone).astype(np.float64), dtype)


def check_broadcast(comm, label, to, dtype):
    root = comm.size - 1
    a = to(data(comm.rank, dtype))
    out = comm.broadcast(a, root, f"the broadcast check {label}/{dtype}")
    same_kind(out, to(data(comm.rank, dtype)), SHAPE)
    close(out, data(root, dtype).astype(np.float64), dtype)


def checks(kind: str, out_dir: str) -> None:
    comm = make_comm(kind, timeout=30.0)
    r, n = comm.rank, comm.size
    c = Checks()
    for label, to in namespaces(kind):
        for dtype in ("float64", "float32"):
            for check in (check_allreduce, check_allgather, check_broadcast):
                c.run(f"{check.__name__[6:]} {label}/{dtype}",
                      functools.partial(check, comm, label, to, dtype))

    def scalar_and_strided():
        # a 0-d value (a loss) and a non-contiguous NumPy view (MPI needs contiguous memory)
        s = comm.allreduce_sum(np.asarray(float(r + 1)), "the scalar all-reduce")
        assert s.shape == () and float(s) == n * (n + 1) / 2, s
        wide = np.stack([data(r, "float64")] * 2, axis=-1)[..., 0]  # strided view
        assert not wide.flags.c_contiguous
        close(comm.allreduce_sum(wide, "the strided all-reduce"),
              np.sum([data(k, "float64") for k in range(n)], axis=0), "float64")

    def integers():
        out = comm.allreduce_sum(np.arange(4, dtype=np.int64) * (r + 1), "the int64 all-reduce")
        assert out.dtype == np.int64 and out.tolist() == [i * n * (n + 1) // 2 for i in range(4)]

    def objects():
        mine = {"rank": r, "tag": "x" * (10 * r), "nested": [r, (r, "t")]}
        got = comm.allgather_object(mine, "the object all-gather check")
        assert got == [{"rank": k, "tag": "x" * (10 * k), "nested": [k, (k, "t")]}
                       for k in range(n)], got
        sent = {"seed": 1234, "name": "from the last rank"} if r == n - 1 else None
        got = comm.broadcast_object(sent, n - 1, "the object broadcast check")
        assert got == {"seed": 1234, "name": "from the last rank"}, got

    def barrier():
        # rank 0 arrives late: nobody leaves the barrier before it arrives
        if r == 0:
            time.sleep(0.3)
        start = time.monotonic()
        comm.barrier("the barrier check")
        arrived = comm.allgather_object(time.monotonic(), "the barrier times")
        assert r == 0 or time.monotonic() - start >= 0.2, "left the barrier before rank 0 came"
        assert max(arrived) - min(arrived) < 5.0, arrived

    def bad_input():
        try:
            comm.allreduce_sum([1.0, 2.0], "the list check")
        except TypeError as err:
            assert "list" in str(err) and "pn.asarray" in str(err), err
        else:
            raise AssertionError("a list was accepted")

    def reuse_group():
        # a second torch communicator takes the group that is there, and leaves it open
        from portanet.distributed.torch_dist import TorchCommunicator

        again = TorchCommunicator(timeout=30.0)
        out = again.allreduce_sum(np.full(2, float(r)), "the all-reduce of the second one")
        assert out.tolist() == [n * (n - 1) / 2] * 2, out
        again.close()
        comm.barrier("a barrier after the second one closed")

    c.run("scalar and strided", scalar_and_strided)
    if kind == "torch":
        c.run("reuse the group", reuse_group)
    c.run("int64 allreduce_sum", integers)
    c.run("objects", objects)
    c.run("barrier", barrier)
    c.run("bad input", bad_input)
    verdict = {"rank": r, "size": n, "name": comm.name, "passed": c.passed,
               "failures": c.failures}
    with open(os.path.join(out_dir, f"rank{r}.json"), "w") as f:
        json.dump(verdict, f)
    comm.barrier("the end of the checks")
    comm.close()


def fault(kind: str, mode: str) -> None:
    comm = make_comm(kind, timeout=2.0 if mode == "stuck" else 30.0)
    comm.barrier("the start of the fault test")
    with comm.stop_all_on_error():
        if comm.rank == 1:
            print(f"FAULT {time.monotonic():.6f}", flush=True)
            if mode == "raise":
                raise ValueError("rank one is broken")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(60)  # stuck; the test kills it where no launcher does
        comm.allreduce_sum(np.ones(4), "the all-reduce rank 0 waits in")
    print("rank 0 came through the fault: it should not have", flush=True)


def run(kind: str, mode: str, out_dir: str) -> None:
    if mode == "checks":
        checks(kind, out_dir)
    else:
        fault(kind, mode)


if __name__ == "__main__":
    run(*sys.argv[1:4])
