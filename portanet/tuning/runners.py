"""Where trials run: one after another here, in a pool of processes, or on a Dask cluster.

Each runner takes the trials' shared plan and data and the list of tasks, calls ``report``
with each :class:`~portanet.tuning.trial.Trial` as it finishes (the search prints progress
and stops there on ``on_error="raise"``), and cancels what has not run if that raises.

* :func:`run_here`: in this process, in order (a lambda ``build`` works).
* :func:`run_on_executor`: any ``concurrent.futures`` executor; :func:`process_pool` makes
  the one a search with ``n_jobs`` uses: "spawn" processes (``fork`` copies the threads of
  torch and JAX half-initialized) whose native thread pools are capped.
* :func:`run_on_dask`: ``client.submit(..., pure=False)`` per trial, the data scattered to
  every worker once; with ``devices`` each device is one worker's and a trial goes to the
  first worker that is free, its device with it.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing.context
import os
import pickle
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .trial import Trial, TrialData, TrialPlan, TrialTask, run_trial

__all__ = ["cpu_count", "process_pool", "run_here", "run_on_dask", "run_on_executor"]

Report = Callable[[Trial], None]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
"""The variables native thread pools (OpenMP: torch; OpenBLAS, MKL, BLIS, Accelerate: NumPy's
BLAS) read when they are loaded: a pool's processes get them before they import anything."""


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def run_here(plan: TrialPlan, data: TrialData, tasks: Sequence[TrialTask],
             report: Report) -> None:
    """Every trial in this process, in order."""
    for task in tasks:
        report(run_trial(plan, data, task))


# ---------------------------------------------------------------------------------------------
# A local pool of processes
# ---------------------------------------------------------------------------------------------
_ENVIRONMENT = threading.Lock()


class _CappedProcess(multiprocessing.context.SpawnProcess):
    """A spawned process that starts with ``thread_env`` in its environment.

    Libraries read their thread counts when they load (OpenBLAS when NumPy is imported), and a
    pool's worker imports NumPy (with portanet) before any initializer could run; so the
    variables must be in the environment the process is started with. ``start`` sets them in
    this process for the moment of the spawn (under a lock) and puts the old values back.
    """

    def start(self) -> None:
        wanted = getattr(self, "thread_env", {})  # set by _CappedContext.Process
        with _ENVIRONMENT:
            saved = {k: os.environ.get(k) for k in wanted}
            os.environ.update(wanted)
            try:
                super().start()
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


class _CappedContext(multiprocessing.context.SpawnContext):
    """The "spawn" start method, with processes capped to ``threads`` native threads."""

    def __init__(self, threads: int | None):
        super().__init__()
        self.thread_env = {} if threads is None else dict.fromkeys(THREAD_VARIABLES, str(threads))

    def Process(self, *args: Any, **kwargs: Any) -> _CappedProcess:
        process = _CappedProcess(*args, **kwargs)
        process.thread_env = self.thread_env
        return process


def _set_torch_threads(threads: int | None) -> None:
    """A pool worker's initializer: torch's intra-op threads, when torch is in use there (its
    OpenMP pool also reads OMP_NUM_THREADS; this makes the count explicit)."""
    if threads is not None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def pool_threads(threads: int | str | None, workers: int) -> int | None:
    """Threads per worker: "auto" shares this machine's CPUs (at least 1 each)."""
    if threads == "auto":
        return max(1, cpu_count() // workers)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise ValueError(f"threads must be 'auto', an int >= 1 or None (the libraries' own "
                         f"defaults), received {threads!r}.")
    return threads


def process_pool(n_jobs: int = -1, threads: int | str | None = "auto"
                 ) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``n_jobs`` "spawn" processes for searches (``search(..., executor=pool)``).

    Reuse one pool across searches to pay the processes' start (about a second each: Python,
    NumPy and portanet load) once. Close it with ``pool.shutdown()`` or a ``with`` block.

    Args:
        n_jobs: processes; -1 for one per CPU this process may use.
        threads: native threads per process (BLAS, OpenMP, torch intra-op): "auto" divides the
            CPUs among the processes (1 each when there are as many processes as cores), an
            int, or None to leave the libraries' defaults (then N processes each start one
            thread per core and oversubscribe the machine).
    """
    workers = check_n_jobs(n_jobs)
    capped = pool_threads(threads, workers)
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=_CappedContext(capped),
        initializer=_set_torch_threads, initargs=(capped,))


def check_n_jobs(n_jobs: Any) -> int:
    """The number of processes ``n_jobs`` asks for (-1: one per CPU)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be an int >= 1, or -1 for one process per CPU, received "
                         f"{n_jobs!r}.")
    return cpu_count() if n_jobs == -1 else n_jobs


def check_picklable(plan: TrialPlan, what: str) -> None:
    """Processes receive ``build`` (and the fit arguments) by pickling: refuse early what they
    could not receive, with the way out."""
    name = getattr(plan.build, "__qualname__", type(plan.build).__name__)
    main = sys.modules.get("__main__")
    if getattr(plan.build, "__module__", None) == "__main__" and \
            not getattr(main, "__file__", None):
        raise TypeError(f"{what} runs trials in other processes, which import build by name; "
                        f"build ({name}) is defined in an interactive session (a notebook or "
                        "the REPL), which they cannot import. Put it in a module (a .py file) "
                        "and import it, or use n_jobs=1 (trials run in this process, and any "
                        "function works), or a Dask client (which pickles it by value).")
    parts = [("build", plan.build), *((f"fit_kwargs[{k!r}]", v) for k, v in
                                      plan.fit_kwargs.items()), ("metrics", plan.metrics)]
    for label, value in parts:
        try:
            pickle.dumps(value)
        except Exception as err:
            fix = (f"Define build ({name}) as a module-level function (def build(...): at the "
                   "top level of a module; not a lambda or a nested function)"
                   if label == "build" else f"Pass a picklable {label}")
            raise TypeError(f"{what} runs trials in other processes, which receive {label} by "
                            f"pickling, and it cannot be pickled: {err}. {fix}, or use n_jobs=1, "
                            "which runs the trials in this process and takes a lambda (a Dask "
                            "client pickles by value and takes one too).") from None


def run_on_executor(executor: concurrent.futures.Executor, plan: TrialPlan, data: TrialData,
                    tasks: Sequence[TrialTask], report: Report) -> None:
    """Every trial submitted to ``executor``, reported as each finishes."""
    futures = [executor.submit(run_trial, plan, data, task) for task in tasks]
    try:
        for future in concurrent.futures.as_completed(futures):
            report(future.result())
    finally:
        for future in futures:
            future.cancel()  # a no-op for the finished; the running ones run to their end


# ---------------------------------------------------------------------------------------------
# A Dask cluster
# ---------------------------------------------------------------------------------------------
def import_distributed() -> Any:
    """``dask.distributed``, or an error that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise ImportError('running trials on a Dask cluster needs dask.distributed: pip install '
                          '"portanet[dask]" (or pip install "dask[distributed]").') from None
    return distributed


def _workers(client: Any) -> list[str]:
    """The cluster's worker addresses, sorted (a fixed worker for each device)."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def check_devices(client: Any, devices: Sequence[str]) -> list[str]:
    """The worker that owns each device: the i-th device goes to the i-th worker."""
    workers = _workers(client)
    if len(workers) < len(devices):
        raise ValueError(f"devices={list(devices)} needs one Dask worker per device, but the "
                         f"cluster has {len(workers)} ({workers}). Start more workers (e.g. "
                         "LocalCluster(n_workers=len(devices))) or list fewer devices.")
    return workers[:len(devices)]


def run_on_dask(client: Any, plan: TrialPlan, data: TrialData, tasks: Sequence[TrialTask],
                report: Report, devices: Sequence[str] | None = None) -> None:
    """Every trial as a Dask task; with ``devices``, each on a free device's worker."""
    distributed = import_distributed()
    shared = client.scatter(data, broadcast=True, hash=False)  # sent once, not per trial
    pending = deque(tasks)
    finished = distributed.as_completed()
    futures = []

    def submit(task: TrialTask, worker: str | None = None) -> None:
        future = client.submit(run_trial, plan, shared, task, pure=False,
                               workers=None if worker is None else [worker],
                               allow_other_workers=False)
        futures.append(future)
        finished.add(future)

    slots: dict[Any, tuple[str, str]] = {}  # future -> (device, worker) while it runs
    try:
        if devices is None:
            while pending:
                task = pending.popleft()
                submit(_on(task, task.device))
        else:
            for device, worker in zip(devices, check_devices(client, devices), strict=True):
                if pending:
                    submit(_on(pending.popleft(), device), worker)
                    slots[futures[-1]] = (device, worker)
        for future in finished:
            report(future.result())
            freed = slots.pop(future, None)
            if freed is not None and pending:  # the device's worker takes the next trial
                submit(_on(pending.popleft(), freed[0]), freed[1])
                slots[futures[-1]] = freed
    finally:
        client.cancel([f for f in futures if not f.done()])


def _on(task: TrialTask, device: str | None) -> TrialTask:
    return TrialTask(task.index, task.params, task.seed, device, "dask")
