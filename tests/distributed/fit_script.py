"""Data-parallel fit scenarios, run by tests/test_distributed.py under ``mpiexec -n 2`` (or as
torch.distributed ranks). Usage: ``fit_script.py OUT_DIR BACKEND SCENARIO[,SCENARIO...]``.

Every rank trains each scenario with ``distributed=True`` and writes what it ended with
(parameters, buffers, history) to ``OUT_DIR/<scenario>.rank<r>.npz``; rank 0 also trains the
same scenario in one process (``distributed=False``, the whole global batch per step) and writes
``<scenario>.single.npz``. The test compares them. Scenarios that must fail (a rank that
differs) raise, and the test reads stderr.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

import numpy as np

import portanet as pn
from portanet import data

OUT, BACKEND, SCENARIOS = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
pn.set_backend(BACKEND)
RANK, SIZE = pn.distributed.rank(), pn.distributed.world_size()
X, Y = data.make_spiral(n_samples=200, seed=0)

if os.environ.get("MASTER_PORT"):  # a torch.distributed rank
    def report_group():
        # registered before fit makes the group, so it runs after portanet's own exit
        # handler (atexit is last in, first out): the group must be gone by then
        import torch.distributed as dist
        print(f"rank {RANK}: group open at exit: {dist.is_initialized()}", flush=True)

    atexit.register(report_group)


def build(seed=0, batchnorm=None, dropout=0.0, hidden=16, optimizer="adam"):
    layers = [pn.layers.Dense(2, hidden, activation="relu")]
    if batchnorm is not None:
        layers.append(pn.layers.BatchNorm(hidden, synchronized=batchnorm))
    if dropout:
        layers.append(pn.layers.Dropout(dropout))
    layers.append(pn.layers.Dense(hidden, 3))
    opt = pn.optimizers.Adam(1e-2) if optimizer == "adam" else pn.optimizers.get(optimizer)
    return pn.Sequential(layers, loss="softmax_cross_entropy", optimizer=opt, seed=seed,
                         dtype="float64")


def dump(name, model, history, who):
    arrays = {f"p:{k}": pn.to_numpy(v) for k, v in model.parameters().items()}
    for _, leaf in model.named_leaves():
        for k, v in leaf.buffers.items():
            arrays[f"b:{leaf.name}.{k}"] = pn.to_numpy(v)
    logs = {"history": history.history, "stop_reason": history.stop_reason,
            "epoch": model.epoch}
    arrays["logs"] = np.frombuffer(json.dumps(logs).encode(), dtype=np.uint8)
    np.savez(os.path.join(OUT, f"{name}.{who}.npz"), **arrays)


def run(name, make, fit_kwargs, single=True):
    """The scenario on every rank (data-parallel) and, on rank 0, in one process."""
    model = make()
    history = model.fit(X, Y, verbose=0, distributed=True, **fit_kwargs)
    dump(name, model, history, f"rank{RANK}")
    if single and RANK == 0:
        model = make()
        history = model.fit(X, Y, verbose=0, distributed=False, **fit_kwargs)
        dump(name, model, history, "single")


COMMON = {"epochs": 2, "seed": 1, "validation_split": 0.2, "metrics": ["accuracy"]}

for scenario in SCENARIOS:
    if scenario == "plain":  # 160 training rows, batch 32: 16 rows per rank per step
        run(scenario, build, {**COMMON, "batch_size": 32})
    elif scenario == "uneven":  # batch 33: 16 and 17 rows, a last batch of 28: 14 and 14
        run(scenario, lambda: build(optimizer="sgd"), {**COMMON, "batch_size": 33})
    elif scenario == "syncbn":  # BatchNorm over the global batch equals one process
        run(scenario, lambda: build(batchnorm=True), {**COMMON, "batch_size": 33})
    elif scenario == "localbn":  # each rank's statistics: not one process's, but all agree
        run(scenario, lambda: build(batchnorm=False), {**COMMON, "batch_size": 32},
            single=False)
    elif scenario == "seeds":  # built from different seeds: rank 0's weights win at the start
        run(scenario, lambda: build(seed=RANK),
            {**COMMON, "batch_size": 32})
    elif scenario == "noseed":  # seed=None: rank 0's fresh seed for shuffles and split
        run(scenario, build, {**COMMON, "batch_size": 32, "seed": None}, single=False)
    elif scenario == "dropout":  # per-rank masks; every rank still ends with the same weights
        run(scenario, lambda: build(dropout=0.5), {**COMMON, "batch_size": 32}, single=False)
    elif scenario == "earlystop":  # callbacks decide alike on every rank: all stop together
        run(scenario, lambda: build(optimizer="sgd"),
            {**COMMON, "epochs": 30, "batch_size": 32,
             "callbacks": [pn.callbacks.EarlyStopping(monitor="val_loss", patience=1,
                                                      min_delta=0.05),
                           pn.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1)]})
    elif scenario == "onestops":  # a callback stops on rank 1 only: rank 0 stops with it
        class StopOnRankOne(pn.callbacks.Callback):
            def on_epoch_end(self, epoch, logs):
                if RANK == 1 and epoch == 1:
                    self.stop_training("rank 1 stops", "test")

        run(scenario, build, {**COMMON, "epochs": 5, "batch_size": 32,
                              "callbacks": [StopOnRankOne()]}, single=False)
    elif scenario == "writers":  # ModelCheckpoint and CSVLogger write on rank 0 only
        folder = os.path.join(OUT, "writers")
        os.makedirs(folder, exist_ok=True)
        callbacks = [pn.callbacks.ModelCheckpoint(os.path.join(folder, "ckpt-{epoch}.safetensors")),
                     pn.callbacks.CSVLogger(os.path.join(folder, "log.csv"))]
        run(scenario, build, {**COMMON, "batch_size": 32, "callbacks": callbacks}, single=False)
    elif scenario == "resume":  # 1 epoch, save, load on every rank, 1 more == 2 epochs
        fit = {**COMMON, "batch_size": 32}
        model = build(dropout=0.3)
        history = model.fit(X, Y, verbose=0, distributed=True, **fit)
        dump(scenario + "_straight", model, history, f"rank{RANK}")
        model = build(dropout=0.3)
        path = os.path.join(OUT, "resume.safetensors")
        callbacks = [pn.callbacks.ModelCheckpoint(path)]
        model.fit(X, Y, verbose=0, distributed=True, callbacks=callbacks,
                  **{**fit, "epochs": 1})
        pn.distributed.communicator().barrier("the checkpoint written by rank 0")
        resumed = pn.load(path)
        history = resumed.fit(X, Y, verbose=0, distributed=True,
                              initial_epoch=resumed.epoch, **{**fit, "seed": None})
        dump(scenario + "_resumed", resumed, history, f"rank{RANK}")
    elif scenario == "differ_model":  # rank 1 builds a wider layer: refused, rank 1 named
        run(scenario, lambda: build(hidden=16 + RANK), {**COMMON, "batch_size": 32},
            single=False)
    elif scenario == "differ_seed":  # explicit seeds that differ: refused, rank 1 named
        run(scenario, build, {**COMMON, "batch_size": 32, "seed": 1 + RANK}, single=False)
    elif scenario == "fails":  # rank 1 raises in epoch 2: every rank stops, none hangs
        def fail(epoch, logs):
            if RANK == 1 and epoch == 1:
                raise RuntimeError("a planted failure on rank 1")

        run(scenario, build, {**COMMON, "epochs": 50, "batch_size": 32,
                              "callbacks": [pn.callbacks.LambdaCallback(on_epoch_end=fail)]},
            single=False)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
print(f"rank {RANK} of {SIZE}: done")
