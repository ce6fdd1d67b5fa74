"""What the deadline costs: ``MPICommunicator.allreduce_sum`` (Iallreduce polled until a
deadline) against a blocking ``Allreduce`` of the same buffer, 2.7 MB of float32 by default.

    mpiexec -n 2 python tests/distributed/bench_polling.py [MEGABYTES] [ROUNDS]

A measurement, not a test (timings on a shared machine vary): the two calls alternate round by
round so that both see the same moments of the machine, and rank 0 prints the median, the
10th percentile and the mean of each, and the median ratio.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from mpi4py import MPI

from portanet.distributed.mpi import MPICommunicator


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 2.7
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    comm = MPICommunicator(timeout=60)
    raw = MPI.COMM_WORLD.Dup()
    a = np.ones(int(megabytes * 1e6) // 4, dtype=np.float32)
    calls = {
        "blocking Allreduce": lambda: raw.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM),
        "allreduce_sum (polled)": lambda: comm.allreduce_sum(a, "the benchmark"),
    }
    times = {name: [] for name in calls}
    for _ in range(10):  # warm up both paths
        for call in calls.values():
            call()
    for _ in range(rounds):
        for name, call in calls.items():
            raw.Barrier()
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    if comm.rank == 0:
        print(f"{a.nbytes / 1e6:.1f} MB float32, {comm.size} ranks, {rounds} rounds (ms):")
        for name, t in times.items():
            t = np.array(t) * 1e3
            print(f"  {name:24s} median {np.median(t):7.3f}  p10 {np.percentile(t, 10):7.3f}  "
                  f"mean {t.mean():7.3f}")
        ratio = np.median(times["allreduce_sum (polled)"]) / np.median(
            times["blocking Allreduce"])
        print(f"  polled / blocking (medians): {ratio:.3f}")
    raw.Free()
    comm.close()


if __name__ == "__main__":
    main()
