"""Data-parallel training: N processes, one model, each step on a slice of the global batch.

``fit(..., distributed=True)`` under ``mpiexec -n N`` or ``torchrun --nproc-per-node N`` (one
process is a no-op: the same script runs unchanged without them). What every rank does::

    start    agree on the configuration and the seed (hashes compared: a differing rank
             is named), then take rank 0's parameters, buffers and optimizer state
    step     x_r = rows [r*B/N, (r+1)*B/N) of the global batch (B rows, same order on
             every rank: the shuffles are functions of the shared seed)
             g_r = gradients of rank r's mean loss on x_r
             g   = sum_r w_r g_r,  w_r = n_r / B     one all-reduce over one flat bucket
             every rank applies the same update to the same parameters
    epoch    the loss: sum_r (loss sum, samples) reduced once; BatchNorm running statistics:
             rank 0's (as torch's DDP broadcasts them); validation rows split over the ranks
             and their outputs gathered once, so every rank scores the same numbers; the
             callbacks' stop decision is or-ed over the ranks, so all stop together
    output   only rank 0 prints progress and runs the callbacks that write
             (``Callback.chief_only``: ModelCheckpoint, CSVLogger)
    faults   an exception on one rank stops every rank with its message
             (``Communicator.stop_all_on_error``); a rank that died or hangs makes the others'
             next collective raise :class:`DistributedError` after ``timeout`` seconds

With w_r = n_r / B the averaged gradient is that of the global batch's mean loss, so N
processes compute what one process computes on the whole batch (up to the order of float
additions; tests/test_distributed.py checks 1e-12 in float64). BatchNorm normalizes with each
rank's own slice unless ``BatchNorm(..., synchronized=True)``; Dropout draws different masks on
each rank (ranks > 0 reseed from (seed, epoch, rank) every epoch, so resuming is exact).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import array_api_compat as compat

from .._typing import Array
from ..devices import to_numpy
from ..engine.state import StateLayout
from ..random import Generator
from ..replicas import Replicas
from .comm import Communicator, DistributedError
from .launch import communicator

__all__ = ["DataParallel", "data_parallel"]


class DataParallel:
    """How ``fit`` trains one model on several processes (``fit(..., distributed=...)``).

    Args:
        communicator: "auto" (``mpiexec`` -> MPI, ``torchrun`` -> torch.distributed, neither
            -> one process), "mpi", "torch", "nccl", or a
            :class:`~portanet.distributed.comm.Communicator`.
        timeout: seconds a rank waits for the others at a collective before it raises
            :class:`DistributedError` (a dead or stuck rank).
        check: compare a hash of the model's configuration, the optimizer, the loss, the
            fit arguments, the seed and the data's shape on every rank before training.

    Examples:
        >>> import portanet as pn
        >>> pn.distributed.DataParallel().size  # not launched by mpiexec/torchrun: one process
        1
    """

    def __init__(self, communicator: Any = "auto", timeout: float = 60.0, check: bool = True):
        self.requested = communicator
        self.timeout = float(timeout)
        self.check_hashes = bool(check)
        self._comm: Communicator | None = communicator if isinstance(communicator,
                                                                     Communicator) else None
        self.epoch = 0
        self.step = 0

    # -- who we are --------------------------------------------------------------------------
    def communicator_for(self, device: Any = None) -> Communicator:
        """The communicator (made on first use: importing MPI or torch.distributed)."""
        if self._comm is None:
            self._comm = communicator(self.requested, device=device, timeout=self.timeout)
        return self._comm

    @property
    def comm(self) -> Communicator:
        return self.communicator_for()

    @property
    def rank(self) -> int:
        return self.comm.rank

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def is_chief(self) -> bool:
        """Rank 0: the one that prints and writes files."""
        return self.rank == 0

    # -- start -------------------------------------------------------------------------------
    def shared_seed(self, seed: int, seed_given: bool) -> int:
        """The seed every rank uses: rank 0's where the user gave none (``seed=None`` draws
        fresh entropy on each rank); a given seed is compared by :meth:`check`."""
        if seed_given:
            return seed
        return self.comm.broadcast_object(seed, 0, "the seed broadcast at the start of fit")

    def check(self, model: Any, seed: int, settings: dict[str, Any], x: Array) -> None:
        """Refuse what cannot train in parallel, and compare what every rank is about to
        train (hashes of the model, the seed, fit's arguments and the data's shape): a rank
        that differs is named."""
        comm = self.comm
        if self.check_hashes:  # first: the refusals below then hold on every rank alike
            described = {"model": _describe(model), "seed": seed, "fit": settings,
                         "data": [list(x.shape), str(x.dtype)]}
            mine = {k: _hash(v) for k, v in described.items()}
            everyone = comm.allgather_object(mine, "the configuration check at the start of "
                                                   "fit")
            for rank, theirs in enumerate(everyone):
                differs = [k for k in mine if theirs.get(k) != everyone[0].get(k)]
                if differs:
                    what = ", ".join(_NAMES[k] for k in differs)
                    raise DistributedError(
                        f"rank {rank} of {comm.size} differs from rank 0 in {what} (hashes "
                        "compared at the start of fit). Every rank must build the same model "
                        "(layers, loss, optimizer), call fit with the same arguments and seed, "
                        "and hold the same data; check what the script reads from its rank or "
                        "environment.", on_every_rank=True)
        summed = getattr(model.loss, "reduction", "mean") == "sum"
        if summed and getattr(model, "_regularized", None):
            raise _everywhere(ValueError(
                "data-parallel training with a summed loss (reduction='sum') and regularizers "
                "would add each regularizer's gradient once per process. Use reduction='mean' "
                "(the default), or train in one process."))
        batch = settings["batch_size"]
        n = x.shape[0]
        smallest = min(batch, n % batch or batch)
        synchronized = [leaf for _, leaf in model.named_leaves()
                        if getattr(leaf, "synchronized", False)]
        if synchronized and smallest < comm.size:
            raise _everywhere(ValueError(
                f"a batch of {smallest} rows leaves some of the {comm.size} processes without "
                f"rows, and the synchronized BatchNorm {synchronized[0].name!r} needs every "
                f"process in every step. Use a batch_size (and a sample count: {n} % "
                f"batch_size) of at least {comm.size}."))

    def share_state(self, model: Any, layout: Any) -> None:
        """Rank 0's parameters, buffers and optimizer state on every rank (one broadcast per
        dtype: after it every rank starts from the same point whatever seed built it)."""
        state = layout.gather(model.optimizer)
        arrays = {"p": state.params, "s": state.opt.slots, "b": state.buffers}
        shared = self._bucketed(arrays, lambda flat, what: self.comm.broadcast(flat, 0, what),
                                "the broadcast of rank 0's state at the start of fit")
        step = self.comm.broadcast_object(state.opt.step, 0, "the broadcast of the step count")
        layout.scatter(type(state)(shared["p"], state.opt._replace(step=step,
                                                                   slots=shared["s"]),
                                   shared["b"], state.rng), model.optimizer)

    # -- every step --------------------------------------------------------------------------
    def shard(self, xb: Array, yb: Array) -> tuple[Array, Array, float]:
        """This rank's rows of the global batch and its weight w_r = n_r / B."""
        b, size, r = xb.shape[0], self.size, self.rank
        lo, hi = r * b // size, (r + 1) * b // size
        return xb[lo:hi, ...], yb[lo:hi, ...], (hi - lo) / b

    def replicas(self, weight: float, global_rows: int) -> Replicas:
        return Replicas(self.comm, weight, global_rows, self.where())

    def where(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.step + 1}"

    def average_gradients(self, grads: dict[str, Array], weight: float) -> dict[str, Array]:
        """g = sum_r w_r g_r: one all-reduce over one flat bucket (per dtype)."""
        return self._bucketed({"g": grads},
                              lambda flat, what: self.comm.allreduce_sum(flat * weight, what),
                              f"the gradient all-reduce of {self.where()}")["g"]

    def any(self, flag: bool, what: str) -> bool:
        """True on every rank if it is True on any (a stop decision all ranks follow)."""
        return any(self.comm.allgather_object(bool(flag), what))

    # -- every epoch -------------------------------------------------------------------------
    def reduce_sums(self, values: list[Array | float], like: Array) -> list[float]:
        """sum_r of each value (device scalars or floats), as Python floats: one all-reduce."""
        xp = compat.array_namespace(like)
        stacked = xp.stack([xp.astype(xp.asarray(v, device=compat.device(like)), xp.float64)
                            if not isinstance(v, (int, float)) else
                            xp.asarray(float(v), dtype=xp.float64, device=compat.device(like))
                            for v in values])
        total = self.comm.allreduce_sum(stacked, f"the loss reduction of epoch {self.epoch + 1}")
        return [float(v) for v in to_numpy(total).tolist()]  # the epoch's one read, as in fit

    def begin_epoch(self, model: Any, seed: int, epoch: int, augment: Any = None) -> None:
        """Where the messages say we are, and each rank's random streams for ``epoch``."""
        self.epoch, self.step = epoch, 0
        self.reseed(model, seed, epoch, augment)

    def agree_to_stop(self, state: Any) -> None:
        """``state.stop`` on every rank if a callback stopped on any (one tiny collective)."""
        stop = self.any(state.stop, f"the stop decision of epoch {self.epoch + 1}")
        if stop and not state.stop:
            state.stop = True
            state.stop_reason = "another_rank"
            state.stop_message = "another rank's callback stopped training"

    def share_buffers(self, model: Any) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every rank."""
        layout = StateLayout(model)
        if not layout.buffers:
            return
        buffers = {name: leaf.buffers[k] for name, leaf, k in layout.buffers}
        shared = self._bucketed({"b": buffers},
                                lambda flat, what: self.comm.broadcast(flat, 0, what),
                                f"the buffer broadcast of epoch {self.epoch + 1}")["b"]
        for name, leaf, k in layout.buffers:
            leaf.buffers[k] = shared[name]

    def predict(self, model: Any, x: Array, batch_size: int | None) -> Array:
        """``model.predict(x)`` with the rows split over the ranks: each predicts its part,
        one all-gather (rows padded to the same count) puts them back together everywhere."""
        n, size, r = x.shape[0], self.size, self.rank
        per = -(-n // size)
        lo, hi = min(r * per, n), min((r + 1) * per, n)
        part = model.predict(x[lo:hi, ...], batch_size=batch_size) if hi > lo else None
        if part is None:  # fewer rows than ranks: this rank predicts one row to know the shape
            part = model.predict(x[:1, ...], batch_size=batch_size)[:0, ...]
        xp = compat.array_namespace(part)
        if part.shape[0] < per:
            pad = xp.zeros((per - part.shape[0], *part.shape[1:]), dtype=part.dtype,
                           device=compat.device(part))
            part = xp.concat([part, pad], axis=0)
        gathered = self.comm.allgather(part, f"the validation all-gather of epoch "
                                             f"{self.epoch + 1}")
        rows = xp.reshape(gathered, (size * per, *part.shape[1:]))
        return rows[:n, ...]

    # -- per-rank randomness -----------------------------------------------------------------
    def reseed(self, model: Any, seed: int, epoch: int, augment: Any = None) -> None:
        """Ranks > 0 draw their own dropout masks and augmentations: their generators restart
        each epoch from (seed, epoch, rank), so a resumed run continues them exactly. Rank 0
        keeps its generators' streams (what one process would draw, and what checkpoints
        save)."""
        if self.rank == 0:
            return
        generators = [leaf.generator for _, leaf in model.named_leaves()
                      if isinstance(getattr(leaf, "generator", None), Generator)]
        if augment is not None and isinstance(getattr(augment, "generator", None), Generator):
            generators.append(augment.generator)
        for i, g in enumerate(generators):
            g.reseed(_derive(seed, epoch, self.rank, i))

    # -- buckets -----------------------------------------------------------------------------
    def _bucketed(self, groups: dict[str, dict[str, Array]], collective: Any,
                  what: str) -> dict[str, dict[str, Array]]:
        """Flatten every array of ``groups`` into one bucket per dtype, run ``collective`` on
        each bucket, and cut the result back into arrays of the original shapes."""
        entries = [(g, k, a) for g, arrays in groups.items() for k, a in _flat_items(arrays)]
        out: dict[str, dict] = {g: {} for g in groups}
        by_dtype: dict[str, list] = {}
        for entry in entries:
            by_dtype.setdefault(str(entry[2].dtype), []).append(entry)
        for bucket in by_dtype.values():
            xp = compat.array_namespace(bucket[0][2])
            flat = xp.concat([xp.reshape(a, (-1,)) for _, _, a in bucket])
            result = collective(flat, what)
            offset = 0
            for g, key, a in bucket:
                size = math.prod(a.shape)
                _set_nested(out[g], key, xp.reshape(result[offset:offset + size], a.shape))
                offset += size
        for g, arrays in groups.items():  # empty groups and empty nested dicts stay
            _fill_missing(out[g], arrays)
        return out


def data_parallel(distributed: Any, device: Any = None) -> DataParallel | None:
    """``fit``'s ``distributed`` argument as a strategy, or None when training in one process
    (False, None, or True outside a launcher). ``device`` is the model's (a CUDA device makes
    torch.distributed use NCCL, and picks the GPU of CuPy's NCCL)."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        strategy = DataParallel()
    elif isinstance(distributed, DataParallel):
        strategy = distributed
    elif isinstance(distributed, Communicator):
        strategy = DataParallel(distributed)
    else:
        raise TypeError("distributed must be True, False, a pn.distributed.DataParallel or a "
                        f"Communicator, received {type(distributed).__name__}.")
    return strategy if strategy.communicator_for(device).size > 1 else None


_NAMES = {"model": "the model (layers, loss or optimizer)", "seed": "the seed",
          "fit": "fit's arguments", "data": "the training data's shape or dtype"}


def _everywhere(err: Exception) -> Exception:
    """Mark ``err`` as raised alike on every rank (see ``DistributedError.on_every_rank``)."""
    err.on_every_rank = True
    return err


def _describe(model: Any) -> Any:
    # the model's seed may differ: share_state gives every rank rank 0's weights
    config = {"model": {k: v for k, v in model.get_config().items() if k != "seed"}}
    for part in ("loss", "optimizer"):
        obj = getattr(model, part, None)
        config[part] = [type(obj).__name__, obj.get_config() if hasattr(obj, "get_config")
                        else repr(obj)]
    return config


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _derive(seed: int, epoch: int, rank: int, index: int) -> int:
    digest = hashlib.sha256(f"portanet-rank-stream:{seed}:{epoch}:{rank}:{index}".encode())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def _flat_items(arrays: dict, prefix: tuple = ()) -> list[tuple[tuple, Array]]:
    items = []
    for k, v in arrays.items():
        if isinstance(v, dict):
            items.extend(_flat_items(v, (*prefix, k)))
        else:
            items.append(((*prefix, k), v))
    return items


def _set_nested(out: dict, key: tuple, value: Any) -> None:
    for k in key[:-1]:
        out = out.setdefault(k, {})
    out[key[-1]] = value


def _fill_missing(out: dict, like: dict) -> None:
    for k, v in like.items():
        if isinstance(v, dict):
            _fill_missing(out.setdefault(k, {}), v)
