"""``portanet bench --distributed N``: data-parallel scaling, step by step.

One training step on N processes is compute (forward, backward and the update on this process's
rows) plus communication (the gradient all-reduce). This benchmark times both, per step, in
the processes of a real launch (``mpiexec -n N``, started by the driver), next to:

* **one process** training the same global batch with the plain step (the speedup's base):
  throughput = global batch / step time;
* **the all-reduce's floor**: the bytes a ring all-reduce moves per process,
  2 (N - 1) / N * S for a bucket of S bytes, over the bandwidth measured between the same
  processes by the best of ten all-reduces of S bytes alone, every rank starting together.
  In a step the all-reduce also waits for the slower rank; the ratio to the floor says how
  much that costs.

Fairness, as in :mod:`portanet.bench`: each process pins its BLAS threads (``--threads``,
default 1 per process, so N processes use N cores), every round waits for the updated
parameters, warm-up rounds stay out of the timing, and every process times the same rounds
(the all-reduce makes them wait for each other; rank 0 reports the median over rounds).

Examples:
    $ portanet bench --distributed 2                      # MLP 784-512-512-10, numpy, 1024
    $ portanet bench --distributed 2 --backends torch --batch-sizes 256,1024
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import portanet as pn

from . import bench
from .distributed.comm import Communicator

__all__ = ["main", "mpiexec", "run"]


class TimedCommunicator(Communicator):
    """``inner``'s collectives, with the seconds spent in its all-reduces added to ``seconds``
    (the engines' hooks are delegated; the checks and the object collectives are the base
    class's, on top of them)."""

    def __init__(self, inner: Communicator):
        self.inner = inner
        self.name, self.rank, self.size = inner.name, inner.rank, inner.size
        self.timeout = inner.timeout
        self.seconds = 0.0

    def _allreduce_sum(self, a: Any, what: str) -> Any:
        t0 = time.perf_counter()
        out = self.inner._allreduce_sum(a, what)
        self.seconds += time.perf_counter() - t0  # host-staged transports return when done
        return out

    def _allgather(self, a: Any, what: str) -> Any:
        return self.inner._allgather(a, what)

    def _broadcast(self, a: Any, root: int, what: str) -> Any:
        return self.inner._broadcast(a, root, what)

    def _barrier(self, what: str) -> None:
        self.inner._barrier(what)

    def _end_all(self, code: int) -> None:
        self.inner._end_all(code)


def mpiexec() -> str:
    """The ``mpiexec`` of this environment (the mpich wheel puts it beside Python) or PATH's."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError('portanet bench --distributed launches mpiexec, which is not '
                                'installed here: pip install "portanet[mpi]" (mpi4py and the '
                                'mpich wheel), or install a system MPI.')
    return found


def _measure(job: dict[str, Any]) -> dict[str, Any] | None:
    """One process of the launch: time the steps; rank 0 returns the row."""
    info = bench.set_threads(job["threads"])
    pn.set_backend(job["backend"], job.get("device"))
    backend = pn.get_backend()
    net = bench.build_portanet(job["model"], job["dtype"], seed=0)
    batch = job["batch"]
    x, y = _data(net, job, backend)
    sync = backend.synchronize
    size = job["processes"]
    if size == 1:  # the base: the plain step on the whole batch
        step_time = bench.time_calls(lambda: _plain(net, x, y), sync, min_time=job["min_time"])
        return {**job, "step_s": step_time.median, "iqr_s": step_time.iqr, "comm_s": 0.0,
                "compute_s": step_time.median, "floor_s": 0.0, "bucket_bytes": 0,
                "bandwidth": None, "samples_per_second": batch / step_time.median, **info}
    comm = TimedCommunicator(pn.distributed.communicator("mpi"))
    strategy = pn.distributed.DataParallel(comm)
    x_r, y_r, weight = strategy.shard(x, y)
    bucket = sum(math.prod(p.shape) for p in net.parameters().values()) * \
        (4 if job["dtype"] == "float32" else 8)
    comm_times: list[float] = []

    def step():
        before = comm.seconds
        loss = net.engine.data_parallel_step(x_r, y_r, strategy, weight, batch)
        comm_times.append(comm.seconds - before)
        return loss, net.parameters()

    timing = bench.time_calls(step, sync, min_time=job["min_time"])
    comm_timed = comm_times[-len(timing.seconds):]
    bandwidth = _bandwidth(comm, job["dtype"], bucket)
    moved = 2 * (size - 1) / size * bucket
    # every rank runs the same rounds; rank 0's medians are the report
    if comm.rank != 0:
        return None
    step_s, comm_s = timing.median, statistics.median(comm_timed)
    return {**job, "step_s": step_s, "iqr_s": timing.iqr, "comm_s": comm_s,
            "compute_s": step_s - comm_s, "floor_s": moved / bandwidth,
            "bucket_bytes": bucket, "bandwidth": bandwidth,
            "samples_per_second": batch / step_s, **info}


def _data(net: Any, job: dict[str, Any], backend: Any):
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (job["batch"], *bench.input_shape(job["model"]))
    x = pn.asarray(rng.standard_normal(shape).astype(job["dtype"]))
    classes = net.output_shape(shape[1:])[-1]
    y = pn.asarray(rng.integers(0, classes, job["batch"]))
    return x, y


def _plain(net: Any, x: Any, y: Any):
    loss = net.train_step(x, y)
    return loss, net.parameters()


def _bandwidth(comm: Communicator, dtype: str, nbytes: int, rounds: int = 10) -> float:
    """Bytes per second a process moves in an all-reduce of ``nbytes`` (the ring's
    2 (N-1)/N * S) on its own: the best of ``rounds``, every rank starting together, so no
    wait for a slower rank is in it. The same size as the step's bucket: a larger probe would
    measure memory, not the transport (a 2.7 MB bucket stays in cache, 64 MB does not)."""
    import numpy as np

    buffer = np.ones(max(1, nbytes // np.dtype(dtype).itemsize), dtype=dtype)
    comm.allreduce_sum(buffer.copy(), "the bandwidth probe")  # warm-up
    times = []
    for _ in range(rounds):
        fresh = buffer.copy()  # the all-reduce works in place: a new input, copied untimed
        comm.barrier("the bandwidth probe")  # start together: no rank's lateness is timed
        t0 = time.perf_counter()
        comm.allreduce_sum(fresh, "the bandwidth probe")
        times.append(time.perf_counter() - t0)
    moved = 2 * (comm.size - 1) / comm.size * buffer.nbytes
    return moved / min(times)


def run(processes: list[int], model: str, backend: str, device: str | None, dtype: str,
        batches: list[int], threads: int, min_time: float) -> dict[str, Any]:
    """Launch every (processes, batch) job, 1 process included as the base; the report."""
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    for batch in batches:
        for n in sorted({1, *processes}):
            job = {"model": model, "backend": backend, "device": device, "dtype": dtype,
                   "batch": batch, "processes": n, "threads": threads, "min_time": min_time}
            command = [sys.executable, "-m", "portanet.bench_distributed", json.dumps(job)]
            if n > 1:
                command = [mpiexec(), "-n", str(n), *command]
            done = subprocess.run(command, capture_output=True, text=True, env=env,
                                  timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"the {n}-process benchmark failed (exit "
                                   f"{done.returncode}):\n{done.stderr[-2000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for row in rows:
        base = next(r for r in rows if r["batch"] == row["batch"] and r["processes"] == 1)
        row["speedup"] = row["samples_per_second"] / base["samples_per_second"]
    return {"machine": bench.machine_info(), "rows": rows}


def table(report: dict[str, Any]) -> str:
    head = (f"{'processes':>9} {'batch':>6} {'step ms':>8} {'compute':>8} {'all-red.':>8} "
            f"{'% step':>6} {'floor ms':>8} {'x floor':>7} {'samples/s':>10} {'speedup':>7}")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        share = 100 * r["comm_s"] / r["step_s"]
        over = f"{r['comm_s'] / r['floor_s']:.1f}" if r["floor_s"] else "-"
        floor = f"{1e3 * r['floor_s']:.2f}" if r["floor_s"] else "-"
        lines.append(f"{r['processes']:>9} {r['batch']:>6} {1e3 * r['step_s']:>8.2f} "
                     f"{1e3 * r['compute_s']:>8.2f} {1e3 * r['comm_s']:>8.2f} {share:>5.1f}% "
                     f"{floor:>8} {over:>7} {r['samples_per_second']:>10,.0f} "
                     f"{r['speedup']:>6.2f}x")
    return "\n".join(lines)


def main(args: Any) -> int:
    """``portanet bench --distributed N``: the scaling table, saved as JSON."""
    processes = [int(args.distributed)]
    if processes[0] < 2:
        raise ValueError(f"--distributed takes a process count of at least 2, received "
                         f"{args.distributed}.")
    mpiexec()  # missing MPI: say so before any work
    targets = bench.parse_targets(args.backends) if args.backends else [("numpy", None)]
    if len(targets) != 1:
        raise ValueError("--distributed times one backend at a time; pass --backends numpy "
                         f"(or torch, jax), received {args.backends!r}.")
    (backend, device), = targets
    pn.backend.make_backend(backend, device)
    dtypes = [d for d in args.dtypes.split(",") if d]
    batches = bench._int_list(args.batch_sizes, "--batch-sizes")
    if args.batch_sizes == "128,1024":  # the bench default; the scaling target's batch is 1024
        batches = [1024]
    bench._check_writable(args.json, "--json")
    report = run(processes, args.model, backend, device, dtypes[0], batches,
                 args.threads or 1, args.min_time)
    print(table(report))
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    row = _measure(json.loads(sys.argv[1]))
    if row is not None:
        print(json.dumps(row))
