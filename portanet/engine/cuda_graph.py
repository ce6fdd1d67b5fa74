"""The whole step recorded once as a CUDA graph, then replayed with one launch (torch on CUDA).

Why: a small model's training step is dozens of kernels of a few microseconds each, and
launching them one by one from Python costs more than running them. A CUDA graph records the
kernels of one call and replays all of them with a single launch.

A recording fixes four things, and this executor feeds it accordingly:

* **Addresses.** The graph reads and writes the memory it recorded. Every array argument has a
  static buffer; a call whose array is not that buffer copies it in first (device to device, no
  host sync). The step updates the state's buffers in place and the model then holds those
  buffers themselves, so from the second step on nothing but the batch is copied.
* **Python numbers.** A float is baked into a recorded kernel as a constant, but the optimizer's
  scalars change every step (a schedule's learning rate, Adam's bias corrections). Every float
  argument therefore travels as a 0-d device array: a view of one static vector, written by
  one host-to-device copy per call.
* **Outputs.** They live in the graph's memory, and the next replay overwrites them. The step's
  new state is copied into the state's static buffers inside the graph (where the step did not
  already write into them), so it is the next step's input; every other output (the loss) is
  copied out after each replay, so what the caller holds stays its own.
* **Random draws.** Dropout's and augmentation's generators are registered with the graph,
  which advances them on each replay as an eager call would.

Nothing inside the step may talk to the host: a read (``float(loss)``) or an array made from
host data cannot be recorded. tests/test_host_reads.py and tests/test_cuda_graph.py check both
on CPU.

The first call of each signature (the full batch; the last partial batch is a second one) runs
the step eagerly, a real step whose result is kept, so that cuBLAS and the allocator initialise
outside the recording; then it records one more call (on a side stream) without running it.
Every later call replays. ``compilations`` counts the recordings.

The recorder (``Adapter.graph_recorder``) is the library's part: torch's ``torch.cuda.graph``
in ``backends/torch.py``; the tests drive this executor on CPU with a stand-in that re-runs the
recorded function instead (tests/test_cuda_graph.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["CudaGraph", "Recorder"]


class Recorder(Protocol):
    """What a library gives :class:`CudaGraph` (``Adapter.graph_recorder(device)``)."""

    def warm_up(self, body: Callable[[], Any]) -> Any:
        """Run ``body`` for real, outside any recording, and return its result."""

    def record(self, body: Callable[[], Any],
               generators: list[Any]) -> tuple[Callable[[], None], Any]:
        """Record ``body`` without running it: ``(replay, outputs)``, where each ``replay()``
        runs the recorded work again and writes into the same ``outputs``. ``generators``
        (native generators ``body`` draws from) are registered with the recording."""

    def vector(self, n: int, like: Any) -> Any:
        """A static vector of ``n`` numbers of ``like``'s floating dtype, on its device."""

    def write(self, vector: Any, values: list[float]) -> None:
        """Copy host floats into ``vector`` (queued; the host does not wait)."""

    def copy(self, dst: Any, src: Any) -> None:
        """``dst <- src`` on the device (queued)."""

    def clone(self, a: Any) -> Any:
        """A new array with ``a``'s values (queued)."""


class CudaGraph:
    """Runs ``fn`` by recording it once per input signature and replaying the recording.

    Args:
        fn: the step, a function of arrays and Python floats (nested in tuples and dicts).
        recorder: the library's recorder (:class:`Recorder`).
        state_argnums: the arguments that are state: the step's outputs hold their new values.
        state_out: ``outputs -> tuple`` of the new values of the ``state_argnums`` arguments,
            each with its argument's structure (the step: ``lambda out: (out[1],)``).
        generators: ``() -> list`` of the native generators the step draws from, asked at
            each recording (after the warm-up step, when every layer has built its own).
        wait: ``outputs -> None``, blocks until outputs are computed (timing a recording).

    Attributes:
        compilations: how many signatures were recorded.
        registered: the generators the last recording registered (None before the first):
            a reseeded generator is a new object, which a recording would not advance.
        compile_seconds: time spent recording (the warm-up step, the recording, one wait).
    """

    name = "torch.cuda.graph"
    compiled = True
    donates = False  # the inputs are copied into static buffers, never consumed

    def __init__(self, fn: Callable, recorder: Recorder, state_argnums: tuple[int, ...] = (),
                 state_out: Callable[[Any], tuple] | None = None,
                 generators: Callable[[], list] = list,
                 wait: Callable[[Any], None] | None = None):
        self.fn = fn
        self.recorder = recorder
        self.state_argnums = tuple(state_argnums)
        self.state_out = state_out if state_out is not None else (lambda out: ())
        self.wait = wait
        self.generators = generators
        self.registered: list | None = None
        self._recordings: dict[tuple, _Recording] = {}
        self._buffers: dict[tuple, Any] = {}  # (leaf index, shape, dtype, device) -> buffer
        self.compile_seconds = 0.0

    @property
    def compilations(self) -> int:
        return len(self._recordings)

    def __call__(self, *args: Any) -> Any:
        leaves, tree = flatten(args)
        key = (tree, tuple(_leaf_key(a) for a in leaves))
        recording = self._recordings.get(key)
        if recording is None:
            start = time.perf_counter()
            out = self._record(key, leaves, tree)
            if self.wait is not None:
                self.wait(out)
            self.compile_seconds += time.perf_counter() - start
            return out
        return recording.run(leaves)

    def _record(self, key: tuple, leaves: list, tree: Any) -> Any:
        """Warm up, record, and keep the recording of this signature; the warm-up's outputs."""
        recorder = self.recorder
        arrays = [i for i, a in enumerate(leaves) if _is_array(a)]
        floats = [i for i, a in enumerate(leaves) if isinstance(a, float)]
        statics = list(leaves)
        for i in arrays:
            statics[i] = self._buffer(i, leaves[i])
        vector = None
        if floats:
            like = next((leaves[i] for i in arrays if _is_floating(leaves[i])), None)
            if like is None:
                raise TypeError("a CUDA graph step with float arguments needs a floating-point "
                                "array among its arguments to place them on its device.")
            vector = recorder.vector(len(floats), like)
            for j, i in enumerate(floats):
                statics[i] = vector[j]
        static_args = unflatten(tree, statics)
        state_in = flatten(tuple(static_args[i] for i in self.state_argnums))[0]

        def body() -> tuple[Any, dict[int, Any]]:
            out = self.fn(*static_args)
            new_state = flatten(self.state_out(out))[0]
            if len(new_state) != len(state_in):
                raise ValueError(f"state_out gave {len(new_state)} arrays for {len(state_in)} "
                                 "state arrays: it must mirror the state arguments.")
            kept = {}  # id(new state array) -> its static buffer
            for dst, new in zip(state_in, new_state, strict=True):
                if new is not dst:
                    recorder.copy(dst, new)
                kept[id(new)] = dst
            return out, kept

        recording = _Recording(recorder, arrays, floats, statics, vector)
        recording.feed(leaves)
        out, kept = recorder.warm_up(body)
        result = _swap(out, kept)
        self.registered = self.generators()
        try:
            replay, (recorded, kept) = recorder.record(body, self.registered)
        except Exception as err:  # the model is as before the call: its arrays were copied
            raise RuntimeError(
                f"recording the step as a CUDA graph failed ({type(err).__name__}: {err}). "
                "Usually an operation in it cannot be recorded (a host read, an array made "
                "from host data, a shape that depends on values; tests/test_cuda_graph.py "
                "lists them). "
                "Train with jit_compile=False (eager) or 'auto'; the model was not changed "
                "by this call.") from err
        recording.finish(replay, recorded, kept)
        self._recordings[key] = recording
        return result

    def _buffer(self, i: int, a: Any) -> Any:
        """The static buffer of argument leaf ``i`` (shared by the signatures where it has the
        same shape and dtype: the state, between the full batch and the last partial one)."""
        key = (i, *_leaf_key(a))
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = self.recorder.clone(a)
        return buffer


class _Recording:
    """One recorded signature: its static buffers, float slots, replay and outputs."""

    def __init__(self, recorder: Recorder, arrays: list[int], floats: list[int], statics: list,
                 vector: Any):
        self.recorder = recorder
        self.arrays = arrays
        self.floats = floats
        self.statics = statics
        self.vector = vector

    def finish(self, replay: Callable[[], None], outputs: Any, kept: dict[int, Any]) -> None:
        self.replay = replay
        # (owned, leaf): owned = in the graph's memory, copied out after each replay
        leaves, self.tree = flatten(_swap(outputs, kept))
        statics = {id(a) for a in kept.values()}
        self.outputs = [(_is_array(a) and id(a) not in statics, a) for a in leaves]

    def feed(self, leaves: list) -> None:
        """Copy the call's arrays into the static buffers (those that are not them already)
        and its floats into the static vector."""
        copy, statics = self.recorder.copy, self.statics
        for i in self.arrays:
            if leaves[i] is not statics[i]:
                copy(statics[i], leaves[i])
        if self.floats:
            self.recorder.write(self.vector, [leaves[i] for i in self.floats])

    def run(self, leaves: list) -> Any:
        self.feed(leaves)
        self.replay()
        clone = self.recorder.clone
        return unflatten(self.tree, [clone(a) if owned else a for owned, a in self.outputs])


def _swap(out: Any, kept: dict[int, Any]) -> Any:
    """``out`` with each new state array replaced by its static buffer."""
    leaves, tree = flatten(out)
    return unflatten(tree, [kept.get(id(a), a) if _is_array(a) else a for a in leaves])


# -- trees of arguments: nested tuples, lists and dicts with arrays and Python scalars --------
def flatten(tree: Any) -> tuple[list, Any]:
    """``(leaves, structure)``: the leaves in order and a hashable description of the rest."""
    leaves: list = []

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return ("dict", tuple((k, walk(v)) for k, v in node.items()))
        if isinstance(node, (tuple, list)):  # a NamedTuple keeps its type
            return (type(node), tuple(walk(v) for v in node))
        leaves.append(node)
        return None

    return leaves, walk(tree)


def unflatten(tree: Any, leaves: list) -> Any:
    """The inverse of :func:`flatten`."""
    it = iter(leaves)

    def build(node: Any) -> Any:
        if node is None:
            return next(it)
        kind, children = node
        if kind == "dict":
            return {k: build(v) for k, v in children}
        built = [build(v) for v in children]
        if kind is list or kind is tuple:
            return kind(built)
        return kind(*built)  # a NamedTuple

    return build(tree)


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype") and not isinstance(a, (int, float))


def _is_floating(a: Any) -> bool:
    return getattr(a.dtype, "is_floating_point", False) or "float" in str(a.dtype)


def _leaf_key(a: Any) -> tuple:
    """What a recording is specialised on: an array's shape, dtype and device; a float's type
    (its value is fed each call); any other value itself (it is baked in)."""
    if _is_array(a):
        return (tuple(a.shape), str(a.dtype), str(getattr(a, "device", "")))
    if isinstance(a, float):
        return ("float",)
    return ("const", type(a).__name__, a)
