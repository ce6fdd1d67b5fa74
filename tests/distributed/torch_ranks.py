"""Two-rank torch.distributed jobs without torchrun, importing torch once for all of them:
``python torch_ranks.py OUT_DIR MODE [MODE ...]``.

For each MODE of comm_script.py ("checks", "raise", "kill"), in turn, this process forks two
ranks, sets in each the variables torchrun would (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR=127.0.0.1, MASTER_PORT=a free port) and runs ``comm_script.run("torch", MODE,
OUT_DIR/MODE)`` with its stdout and stderr in OUT_DIR/MODE/rank<r>.out and .err. The ranks are
separate processes with their own gloo sockets (a SIGKILL or an ``os._exit`` is real); forking
them only spares the ~2.5 s of CPU that each fresh interpreter spends importing torch, which
is most of what these jobs cost on a 2-core machine.

Writes OUT_DIR/jobs.json: per MODE the ranks' exit codes (negative: the signal that ended it;
null: still running at the deadline, then killed) and ``ended``, the time.monotonic() at which
the last rank ended.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
import traceback

import comm_script  # the same folder: python puts a script's folder first on sys.path
import torch  # noqa: F401  (imported once, here: every forked rank has it)

import portanet.distributed.torch_dist  # noqa: F401

DEADLINE = 30.0  # seconds per job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank(r: int, mode: str, folder: str, port: int) -> None:
    """The forked rank ``r``: never returns."""
    code = 1
    try:
        for stream, name in ((1, "out"), (2, "err")):
            fd = os.open(os.path.join(folder, f"rank{r}.{name}"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, stream)
            os.close(fd)
        os.environ.update(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        comm_script.run("torch", mode, folder)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def job(mode: str, out_dir: str) -> dict:
    folder = os.path.join(out_dir, mode)
    os.makedirs(folder, exist_ok=True)
    port = free_port()
    sys.stdout.flush()
    sys.stderr.flush()
    pids = []
    for r in range(2):
        pid = os.fork()
        if pid == 0:
            rank(r, mode, folder, port)
        pids.append(pid)
    codes: dict[int, int] = {}  # pid -> exit code (negative: the signal)
    ended, stop = time.monotonic(), time.monotonic() + DEADLINE
    try:
        while len(codes) < len(pids) and time.monotonic() < stop:
            for pid in pids:
                if pid not in codes:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done == pid:
                        codes[pid] = os.waitstatus_to_exitcode(status)
                        ended = time.monotonic()
            time.sleep(0.01)
    finally:
        for pid in pids:
            if pid not in codes:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return {"codes": [codes.get(pid) for pid in pids], "ended": ended}


def main() -> None:
    out_dir, modes = sys.argv[1], sys.argv[2:]
    results = {mode: job(mode, out_dir) for mode in modes}
    with open(os.path.join(out_dir, "jobs.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
