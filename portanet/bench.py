"""Fair device benchmarks: one training step of the same model on each backend and device.

What makes a comparison fair here (and where comparisons elsewhere go wrong):

* **Each backend in its own process.** NumPy's OpenBLAS threads and torch's OpenMP threads spin
  and fight for the cores when both run in one process; every figure then goes wrong. The driver
  (:func:`run`) starts one worker process per backend/device (``python -m portanet.bench``).
* **Thread counts fixed and stated**: BLAS (threadpoolctl) and torch intra-op threads are set to
  the same number in every worker, and the JSON records it.
* **Warm-up, then synchronize inside the timed region, on the outputs.** Every timed function
  returns what it computed (the step: its loss *and* the updated parameters, since the loss is
  ready before the update is; the floor: its products) and each round ends with
  ``Backend.synchronize(outputs)``: a device sync for CuPy/torch on CUDA, and
  ``jax.block_until_ready(outputs)`` for JAX, which has no device-wide barrier: waiting for
  anything but the outputs themselves times the dispatch, not the work.
* **Compiled steps apart from their compiling** (``--jit-compile``): where the backend has a
  compiler (``jax.jit``, ``torch.compile``) the compiled step is a row of its own next to the
  eager one, timed in the same rounds. Its compilation happens in its first calls, timed apart
  (``compile_s``), before the timed rounds; a compilation inside them is an error.
* **TF32 off** on CUDA unless asked (``allow_tf32=True``): float32 means float32.
* **Baselines in the same run**: the equivalent hand-built PyTorch model (eager + autograd +
  ``torch.optim.SGD``) on the same device, and the *floor*: the time of the step's matmuls alone on
  that backend, the work no implementation can skip.

Examples:
    $ portanet bench --model mlp --backends numpy,torch --batch-sizes 128,1024
    $ portanet bench --model mlp --backends numpy,jax --batch-sizes 128 --jit-compile
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

import portanet as pn

from . import layers as L
from .plotting import guess_input_shape

MODELS = ("mlp", "cnn")
MLP_SIZES = (784, 512, 512, 10)


# -- the models, in portanet and in PyTorch ----------------------------------------------------
def build_portanet(model: str, dtype: str, seed: int = 0, learning_rate: float = 0.01,
                   jit_compile: bool = False):
    """The benchmark model on the active backend: ``"mlp"``, ``"cnn"`` or a saved model's path.

    ``jit_compile`` goes to the model (``Sequential(jit_compile=...)``): False, the eager step
    (never the default "auto", which compiles on jax); True, the step compiled by the backend's
    compiler (an error where it has none).
    """

    if model == "mlp":
        a, h1, h2, k = MLP_SIZES
        stack = [L.Dense(a, h1, activation="relu"), L.Dense(h1, h2, activation="relu"),
                 L.Dense(h2, k)]
    elif model == "cnn":  # LeNet-5 sized, on 1x28x28
        stack = [L.Conv2D(1, 6, 5, padding=2, activation="relu"), L.MaxPool2D(2),
                 L.Conv2D(6, 16, 5, activation="relu"), L.MaxPool2D(2), L.Flatten(),
                 L.Dense(16 * 5 * 5, 120, activation="relu"), L.Dense(120, 84, activation="relu"),
                 L.Dense(84, 10)]
    else:
        loaded = pn.load(model)
        if loaded.optimizer is None:
            loaded.compile(optimizer=pn.optimizers.SGD(learning_rate))
        if loaded.loss is None:
            loaded.compile(loss=pn.losses.SoftmaxCrossEntropy())
        return loaded.compile(jit_compile=jit_compile)
    return pn.Sequential(stack, loss=pn.losses.SoftmaxCrossEntropy(),
                         optimizer=pn.optimizers.SGD(learning_rate), seed=seed, dtype=dtype,
                         jit_compile=jit_compile)


def build_torch(model: str, dtype: str, device: str, learning_rate: float = 0.01):
    """The same architecture by hand in PyTorch: nn modules, autograd, torch.optim.SGD."""
    import torch
    from torch import nn

    if model == "mlp":
        a, h1, h2, k = MLP_SIZES
        net = nn.Sequential(nn.Linear(a, h1), nn.ReLU(), nn.Linear(h1, h2), nn.ReLU(),
                            nn.Linear(h2, k))
    elif model == "cnn":
        net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                            nn.Linear(84, 10))
    else:
        raise ValueError(f"no PyTorch baseline for model {model!r}; baselines exist for {MODELS}.")
    net = net.to(device=device, dtype=getattr(torch, dtype))
    opt = torch.optim.SGD(net.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    step.module = net  # for inspection (parameter counts in the tests)
    return step


def input_shape(model: str) -> tuple[int, ...]:
    return (MLP_SIZES[0],) if model == "mlp" else (1, 28, 28)


def floor_shapes(model: str, batch: int) -> list[tuple[str, int, int, int]]:
    """``(product, rows, fan_in, fan_out)`` of every matrix product a training step must do.

    Per layer (x: rows x fan_in, W: fan_in x fan_out, dz: rows x fan_out): ``"forward"``
    x @ W, ``"weight_gradient"`` x^T @ dz and ``"input_gradient"`` dz @ W^T (none for the
    first layer: nothing needs dL/dx there). Convolutions count as their GEMM equivalent (im2col
    sizes): rows B*Ho*Wo, fan_in Cin*kh*kw, fan_out Cout, whatever way an implementation
    reaches it.
    """
    if model == "mlp":
        dims = [(batch, MLP_SIZES[i], MLP_SIZES[i + 1]) for i in range(3)]
    elif model == "cnn":
        dims = [(batch * 28 * 28, 1 * 25, 6), (batch * 10 * 10, 6 * 25, 16),
                (batch, 400, 120), (batch, 120, 84), (batch, 84, 10)]
    else:
        return []
    shapes = []
    for i, (rows, fan_in, fan_out) in enumerate(dims):
        shapes.append(("forward", rows, fan_in, fan_out))
        shapes.append(("weight_gradient", rows, fan_in, fan_out))
        if i > 0:
            shapes.append(("input_gradient", rows, fan_in, fan_out))
    return shapes


def floor_products(shapes: list[tuple[str, int, int, int]], backend: Any, dtype: str,
                   compiled: bool = False):
    """A function that computes the products of ``shapes`` (:func:`floor_shapes`) on ``backend``.

    The operands are laid out as Dense lays out its kernel and computes its gradient
    (``Adapter.weight_order``): the floor is the step's own matmuls, alone. The function
    returns the products, which a timer must wait for (``backend.synchronize(products)``).

    ``compiled=True`` (jax only) makes the products one ``jax.jit`` program, the floor of a
    compiled step: one dispatch for all of them, as the compiled step has one for everything.
    """
    adapter, xp = backend.adapter, backend.xp
    by_columns = adapter.weight_order == "F"
    rng = np.random.default_rng(0)

    def random(*shape):
        return adapter.from_numpy(rng.standard_normal(shape).astype(dtype), backend.device)

    operands = []
    for product, rows, fan_in, fan_out in shapes:
        x, dz = random(rows, fan_in), random(rows, fan_out)
        w = adapter.in_weight_order(random(fan_in, fan_out))
        if product == "forward":
            operands.append((x, w))
        elif product == "weight_gradient":  # (dz^T @ x)^T by columns: the transpose is free
            operands.append((dz.T, x) if by_columns else (x.T, dz))
        else:
            operands.append((dz, w.T))

    def products(operands=operands):
        return [xp.matmul(a, b) for a, b in operands]

    if not compiled:
        return products
    if backend.name != "jax":
        raise ValueError(f"a compiled floor is made with jax.jit, for the jax backend; received "
                         f"backend {backend.name!r}. Use compiled=False there (its compiled "
                         f"step calls the same GEMMs as its eager one).")
    import jax

    # The operands are arguments of the program, not constants closed over: XLA could fold
    # products of constants at compile time, and the floor would then skip the work.
    program = jax.jit(products)
    return lambda: program(operands)


# -- timing --------------------------------------------------------------------------------------
@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def iqr(self) -> float:
        if len(self.seconds) < 4:
            return 0.0
        q = statistics.quantiles(self.seconds, n=4)
        return q[2] - q[0]


def warm_up(fns: dict[str, Any], sync, rounds: int = 3) -> None:
    """Call each of ``fns`` ``rounds`` times, untimed, waiting for each call's outputs.

    What a first call does once (JAX and torch.compile compile, optimizers create their state,
    allocators grow) then stays out of the timed rounds.
    """
    for fn in fns.values():
        for _ in range(rounds):
            sync(fn())


def time_calls(fn, sync, warmup: int = 3, min_rounds: int = 7, min_time: float = 0.5,
               max_rounds: int = 200) -> Timing:
    """Call ``fn`` ``warmup`` times, then time each call, ``sync`` inside the timed region.

    ``fn`` returns its outputs, the arrays whose computation the timing covers, and each round
    ends with ``sync(outputs)`` (``Backend.synchronize``): JAX has no device-wide barrier, so
    only waiting for the outputs themselves makes a round cover the work and not its dispatch.
    """
    warm_up({"fn": fn}, sync, warmup)
    timing = Timing()
    start = time.perf_counter()
    while len(timing.seconds) < max_rounds and (
            len(timing.seconds) < min_rounds or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        sync(fn())
        timing.seconds.append(time.perf_counter() - t0)
    return timing


def time_alternating(fns: dict[str, Any], sync, warmup: int = 3, min_rounds: int = 7,
                     min_time: float = 0.5, max_rounds: int = 200) -> dict[str, Timing]:
    """Like :func:`time_calls` for several functions, called in turn: one call of each per round.

    For comparing two implementations in one process: a slow phase of the machine (another
    process, a frequency change) then slows both alike instead of whichever ran at that time.
    Each function returns its outputs and each call ends with ``sync(outputs)``, as in
    :func:`time_calls`.
    """
    warm_up(fns, sync, warmup)
    timings = {name: Timing() for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < min_time):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            sync(fn())
            timings[name].seconds.append(time.perf_counter() - t0)
        rounds += 1
    return timings


def set_threads(threads: int) -> dict[str, Any]:
    """Pin BLAS and torch intra-op threads to ``threads``; returns what was set."""
    info: dict[str, Any] = {"threads": threads}
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
        info["blas"] = "threadpoolctl"
    except ImportError:
        info["blas"] = "unpinned (install threadpoolctl)"
    if "torch" in sys.modules:  # only where torch is already in use: never load it just for this
        import torch

        torch.set_num_threads(threads)
        info["torch_threads"] = torch.get_num_threads()
    return info


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- one worker: one backend/device, all dtypes and batch sizes ----------------------------------
@dataclass
class Row:
    """One measured configuration; ``None`` where a figure was not measurable.

    ``jit`` is ``"eager"`` or ``"compiled"`` (``executor`` names how: ``"jax.jit"``, ...). Only
    compiled rows have ``compile_s`` (seconds the engine spent compiling in the first call and
    the warm-up, none of it inside the timed rounds), ``compilations`` and ``first_step_s``
    (wall time of the first, compiling call).
    """

    model: str
    backend: str
    device: str
    dtype: str
    batch: int
    median_s: float
    iqr_s: float
    samples_per_s: float
    floor_s: float | None
    torch_s: float | None
    peak_bytes: int | None
    rounds: int
    jit: str = "eager"
    executor: str = "eager"
    compile_s: float | None = None
    compilations: int | None = None
    first_step_s: float | None = None


def _peak_memory(backend, step) -> int | None:
    """Peak bytes of one step: CUDA allocator peaks, or tracemalloc for host NumPy memory.

    ``step`` returns its outputs; on a device the peak is read once they are computed."""
    name = backend.name
    if name in ("numpy", "array_api_strict"):
        import tracemalloc

        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak
    if name == "torch" and getattr(backend.device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(backend.device)
        backend.synchronize(step())
        return int(torch.cuda.max_memory_allocated(backend.device))
    if name == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        before = pool.total_bytes()
        backend.synchronize(step())
        return int(max(pool.total_bytes() - before, pool.used_bytes()))
    return None


def _train_step(net, x, y):
    """One training step as a timed function: it returns the loss AND the new parameters.

    The loss is computed before the optimizer's update, so on JAX waiting for the loss alone
    would not wait for the update."""
    return lambda: (net.train_step(x, y), net.parameters())


def build_compiled(model: str, dtype: str):
    """The benchmark model with its step compiled on the active backend, or None where the
    backend has no compiler (``Adapter.compiler``: numpy, array_api_strict, cupy)."""

    if pn.get_backend().adapter.compiler is None:
        return None
    return build_portanet(model, dtype, jit_compile=True)


def _engine_of(net, compiled: bool):
    """``net.engine``, checked to run what its row will say (an eager or a compiled step)."""
    engine = net.engine
    if bool(engine.compiled) != compiled:
        raise RuntimeError(f"asked for {'a compiled' if compiled else 'an eager'} step, the "
                           f"model's engine runs {engine.executor!r} (compiled="
                           f"{engine.compiled}); its row would be mislabelled.")
    return engine


def measure(model: str, backend_name: str, device: Any, dtypes: list[str], batches: list[int],
            floor: bool = True, min_time: float = 0.5, allow_tf32: bool = False,
            baseline: bool = True, jit_compile: bool = False) -> list[Row]:
    """Time ``model``'s training step on one backend/device (runs in the calling process).

    The PyTorch baseline of the other backends is measured by :func:`measure_torch` in a
    process of its own (their thread pools would fight torch's). The torch backend shares
    torch's pool, so its baseline runs here, alternating step by step with portanet's
    (:func:`time_alternating`): the ratio of two steps that ran through the same moments. The
    matmul floor alternates with the step the same way, on every backend.

    With ``jit_compile`` the same model with a compiled step (``jit_compile=True``) is timed
    too, where the backend has a compiler (jax, torch; elsewhere only the eager row comes
    back), alternating with the rest, as a row of its own. Its compilation happens in its first
    calls, before the timed rounds, and is reported apart (``Row.compile_s``); a compilation
    during the timed rounds is an error, not a figure. On jax its floor is compiled too
    (``floor_products(compiled=True)``).
    """

    backend = pn.set_backend(backend_name, device)
    if backend.name == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        torch.backends.cudnn.allow_tf32 = allow_tf32
    sync = backend.synchronize
    rows = []
    for dtype in dtypes:
        for batch in batches:
            nets = {"eager": build_portanet(model, dtype)}
            if jit_compile:
                compiled = build_compiled(model, dtype)
                if compiled is not None:
                    nets["compiled"] = compiled
            engines = {name: _engine_of(net, name == "compiled") for name, net in nets.items()}
            shape = input_shape(model) if model in MODELS else _input_shape_of(nets["eager"])
            # class ids the model has: 10 for the built-in models, its outputs for a saved one
            classes = nets["eager"].output_shape(shape)[-1]
            rng = np.random.default_rng(batch)
            x_host = rng.standard_normal((batch, *shape)).astype(dtype)
            y_host = rng.integers(0, classes, size=batch).astype(np.int64)
            x = pn.asarray(x_host)
            y = pn.asarray(y_host)
            # Timed in turn, round by round, with what the step is compared with in this
            # process: its matmul floor, and on the torch backend the PyTorch baseline.
            timed = {name: _train_step(net, x, y) for name, net in nets.items()}
            shapes = floor_shapes(model, batch) if floor else []
            if shapes:
                timed["floor"] = floor_products(shapes, backend, dtype)
                if "compiled" in nets and backend.name == "jax":
                    timed["compiled floor"] = floor_products(shapes, backend, dtype,
                                                             compiled=True)
            if baseline and backend.name == "torch" and model in MODELS:
                step = build_torch(model, dtype, backend.device_name)
                timed["torch"] = lambda step=step, x=x, y=y: step(x, y)
            # The compiled step compiles in its first call(s): the first call and the warm-up
            # are timed apart (the engine counts its compile seconds), and must finish
            # compiling before the timed rounds start.
            compiled_engine = engines.get("compiled")
            if compiled_engine is not None:
                count, seconds = compiled_engine.compilations, compiled_engine.compile_seconds
                t0 = time.perf_counter()
                sync(timed["compiled"]())
                first_step_s = time.perf_counter() - t0
            warm_up(timed, sync)
            compiling = {}
            if compiled_engine is not None:
                compiling = {"compile_s": compiled_engine.compile_seconds - seconds,
                             "compilations": compiled_engine.compilations - count,
                             "first_step_s": first_step_s}
                count = compiled_engine.compilations
            timings = time_alternating(timed, sync, warmup=0, min_time=min_time)
            if compiled_engine is not None and compiled_engine.compilations != count:
                raise RuntimeError(
                    f"the compiled {model} step on {backend.name} ({dtype}, batch {batch}) "
                    f"compiled again during the timed rounds ({count} compilations after the "
                    f"warm-up, {compiled_engine.compilations} after timing), so its time would "
                    "include compiling. Something the compiler specializes on changes between "
                    "calls (a shape, a dtype, a Python value).")
            torch_s = timings["torch"].median if "torch" in timings else None
            for name in nets:
                t = timings[name]
                of_floor = timings.get("compiled floor" if name == "compiled" else "floor",
                                       timings.get("floor"))
                engine = engines[name]
                rows.append(Row(model, backend.name, backend.device_name, dtype, batch,
                                t.median, t.iqr, batch / t.median,
                                of_floor.median if of_floor else None, torch_s,
                                _peak_memory(backend, timed[name]), len(t.seconds), jit=name,
                                executor=engine.executor,
                                **(compiling if name == "compiled" else {})))
    return rows


def _input_shape_of(net) -> tuple[int, ...]:
    """The per-sample input shape of a saved model: a first Dense layer's input size, or the
    statistics' shape of a first Standardize layer (``portanet train`` saves models that start
    with one), then the Dense after it."""
    shape = guess_input_shape(net)
    if shape is not None:
        return tuple(shape)
    first = net.layers[0]
    raise ValueError("a saved model to benchmark must start with a Dense or a Standardize "
                     f"layer (its input size is then known); received {type(first).__name__}.")


def baseline_device(backend_name: str, device_name: str) -> str:
    """The torch device a target is compared with: its own GPU, or the CPU for host backends."""
    if backend_name == "cupy":
        return device_name  # "cuda:N"
    if backend_name == "torch" or device_name.startswith("cuda"):
        return device_name
    return "cpu"


def measure_torch(model: str, device: str, dtypes: list[str], batches: list[int],
                  min_time: float = 0.5, allow_tf32: bool = False) -> list[dict[str, Any]]:
    """Time the hand-built PyTorch step (eager + autograd + torch.optim) on ``device``."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32

    def sync(outputs):  # the whole CUDA device: covers the outputs; CPU tensors are finished
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    out = []
    for dtype in dtypes:
        for batch in batches:
            step = build_torch(model, dtype, device)
            rng = np.random.default_rng(batch)
            x = torch.from_numpy(rng.standard_normal((batch, *input_shape(model)))
                                 .astype(dtype)).to(device)
            y = torch.from_numpy(rng.integers(0, 10, size=batch).astype(np.int64)).to(device)
            t = time_calls(lambda step=step, x=x, y=y: step(x, y), sync, min_time=min_time)
            out.append({"device": device, "dtype": dtype, "batch": batch, "median_s": t.median})
    return out


# -- the driver: one process per backend/device ------------------------------------------------
def machine_info() -> dict[str, Any]:

    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "portanet": pn.__version__,
            "numpy": np.__version__,
            "torch": _version_of("torch"), "jax": _version_of("jax"),
            "cupy": _version_of("cupy")}


def _version_of(module: str) -> str | None:
    if not _importable(module):
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "unknown"


def parse_targets(spec: str) -> list[tuple[str, str | None]]:
    """``"numpy,torch:cuda:0,array_api_strict:device1"`` -> [(name, device or None), ...]."""
    targets = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, device = item.partition(":")
        targets.append((name, device or None))
    if not targets:
        raise ValueError(f"no backends in {spec!r}; expected e.g. 'numpy,torch:cpu'.")
    return targets


def run(model: str, targets: list[tuple[str, str | None]], dtypes: list[str], batches: list[int],
        threads: int | None = None, min_time: float = 0.5, baseline: bool = True,
        allow_tf32: bool = False, jit_compile: bool = False) -> dict[str, Any]:
    """Measure every target in its own process; returns the JSON-able report.

    ``jit_compile``: also the compiled step, a row next to the eager one, on every target
    whose backend has a compiler (:func:`measure`).
    """

    for name, device in targets:
        pn.backend.make_backend(name, device)  # fail fast, in the parent, with the clear error
    threads = threads or os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    common = {"model": model, "dtypes": dtypes, "batches": batches, "threads": threads,
              "min_time": min_time, "allow_tf32": allow_tf32}
    rows: list[dict[str, Any]] = []
    for name, device in targets:
        rows += _spawn(dict(common, kind="portanet", backend=name, device=device,
                            baseline=baseline and _importable("torch"), jit_compile=jit_compile),
                       env)
    if baseline and model in MODELS and _importable("torch"):
        baselines = []
        for device in sorted({baseline_device(r["backend"], r["device"]) for r in rows
                              if r.get("torch_s") is None}):
            baselines += _spawn(dict(common, kind="torch", device=device), env)
        times = {(b["device"], b["dtype"], b["batch"]): b["median_s"] for b in baselines}
        for r in rows:
            if r.get("torch_s") is None:  # the torch backend measured its own, alongside
                r["torch_s"] = times.get((baseline_device(r["backend"], r["device"]),
                                          r["dtype"], r["batch"]))
    return {"machine": machine_info(), "threads": threads, "allow_tf32": allow_tf32,
            "jit_compile": jit_compile, "model": model, "rows": rows}


def _spawn(job: dict[str, Any], env: dict[str, str]) -> list[dict[str, Any]]:
    done = subprocess.run([sys.executable, "-m", "portanet.bench", json.dumps(job)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {job['kind']} {job.get('backend', '')}:"
                           f"{job['device']} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(report: dict[str, Any]) -> str:
    """The comparison table: time, spread, throughput, the three ratios and compile time."""
    rows = report["rows"]
    fastest: dict[tuple, float] = {}
    numpy_s: dict[tuple, float] = {}
    for r in rows:
        key = (r["dtype"], r["batch"])
        fastest[key] = min(fastest.get(key, math.inf), r["median_s"])
        if r["backend"] == "numpy" and _jit(r) == "eager":
            numpy_s[key] = r["median_s"]
    head = ("backend", "device", "step", "dtype", "batch", "step ms", "iqr ms", "samples/s",
            "x fastest", "x numpy", "x torch", "x floor", "peak MB", "compile s")
    lines = [head]
    for r in rows:
        def ratio(other, r=r):
            return f"{r['median_s'] / other:.2f}" if other else "-"

        compiled = _jit(r) == "compiled"
        lines.append((r["backend"], r["device"], r.get("executor", "eager"), r["dtype"],
                      str(r["batch"]), f"{r['median_s'] * 1e3:.2f}", f"{r['iqr_s'] * 1e3:.2f}",
                      f"{r['samples_per_s']:.0f}", ratio(fastest[(r['dtype'], r['batch'])]),
                      ratio(numpy_s.get((r["dtype"], r["batch"]))), ratio(r["torch_s"]),
                      ratio(r["floor_s"]),
                      f"{r['peak_bytes'] / 2**20:.1f}" if r["peak_bytes"] else "-",
                      f"{r['compile_s']:.2f}" if compiled and r.get("compile_s") is not None
                      else "-"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = ["  ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True))
            for line in lines]
    m = report["machine"]
    text.append(f"model={report['model']}  threads={report['threads']}  "
                f"tf32={'on' if report['allow_tf32'] else 'off'}  cpus={m['cpus']}  "
                f"torch={m['torch']}  numpy={m['numpy']}  jax={m.get('jax')}")
    text.append("x numpy: step time / the numpy backend's; x torch: step time / PyTorch "
                "eager+autograd step time (same device; for the torch backend measured in the "
                "same process, alternating steps); x floor: step time / time of the step's "
                "matmuls alone on that backend (alternating with the step).")
    if report.get("jit_compile"):
        uncompiled = sorted({r["backend"] for r in rows} -
                            {r["backend"] for r in rows if _jit(r) == "compiled"})
        text.append("step: eager, or the compiler of the compiled step (its own row, timed in "
                    "the same rounds); compile s: seconds spent compiling in its first calls, "
                    "before and apart from the timed rounds; on jax its floor is the matmuls "
                    "compiled as one jax.jit program."
                    + (f" No compiled step for {', '.join(uncompiled)} (no compiler)."
                       if uncompiled else ""))
    return "\n".join(text)


def _jit(row: dict[str, Any]) -> str:
    return row.get("jit", "eager")  # reports written before compiled rows have no "jit"


def plot(report: dict[str, Any], path: str) -> str:
    """Throughput vs batch size, one line per backend/device/dtype and step (needs matplotlib).

    Compiled steps are dashed lines with square markers, labelled with their compiler.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plotting needs matplotlib: pip install "portanet[plot]"') from None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    series: dict[tuple[str, bool], list[tuple[int, float]]] = {}
    for r in report["rows"]:
        compiled = _jit(r) == "compiled"
        label = f"{r['backend']} {r['device']} {r['dtype']}"
        if compiled:
            label += f" compiled ({r.get('executor', 'jit')})"
        elif report.get("jit_compile"):
            label += " eager"
        series.setdefault((label, compiled), []).append((r["batch"], r["samples_per_s"]))
    for (label, compiled), points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label,
                marker="s" if compiled else "o", linestyle="--" if compiled else "-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples / s (training)")
    ax.set_title(f"portanet {report['model']} training throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _worker(job: dict[str, Any]) -> None:
    if job["kind"] == "torch" or job.get("backend") == "torch":
        import torch  # noqa: F401  (loaded first so set_threads pins its intra-op pool too)
    info = set_threads(job["threads"])
    if job["kind"] == "torch":
        out = measure_torch(job["model"], job["device"], job["dtypes"], job["batches"],
                            job["min_time"], job["allow_tf32"])
    else:
        rows = measure(job["model"], job["backend"], job["device"], job["dtypes"],
                       job["batches"], min_time=job["min_time"], allow_tf32=job["allow_tf32"],
                       baseline=job.get("baseline", True),
                       jit_compile=job.get("jit_compile", False))
        out = [dict(asdict(r), thread_setup=info) for r in rows]
    print(json.dumps(out))


# -- the `portanet bench` command ----------------------------------------------------------------
def add_command(commands) -> None:
    """Register ``portanet bench`` on the CLI's sub-command parser."""
    p = commands.add_parser(
        "bench", help="time a training step across backends and devices",
        description="Time one training step of the same model on each backend/device, each in "
                    "its own process with pinned threads, next to the same model written in "
                    "PyTorch and the step's matmuls alone (its floor); print the table and save "
                    "it as JSON (and a plot with --plot, which needs matplotlib).")
    p.add_argument("--model", default="mlp",
                   help="mlp (784-512-512-10), cnn (LeNet-5 sized) or a saved model's path")
    p.add_argument("--backends", default=None,
                   help="comma-separated backend[:device] list (default: every available one, "
                        "on its default device)")
    p.add_argument("--dtypes", default="float32", help="comma-separated, e.g. float32,float64")
    p.add_argument("--batch-sizes", default="128,1024", help="comma-separated ints")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS/torch threads in every worker (default: all cores)")
    p.add_argument("--min-time", type=float, default=0.5, help="seconds of timed steps, at least")
    p.add_argument("--no-baseline", action="store_true", help="skip the PyTorch baseline")
    p.add_argument("--allow-tf32", action="store_true", help="let CUDA matmuls use TF32")
    p.add_argument("--jit-compile", action="store_true",
                   help="also time the compiled step (jax.jit, torch.compile; torch on CUDA: the "
                        "step recorded as a CUDA graph) as a row next to "
                        "the eager one, on every backend with a compiler; compile time is "
                        "reported apart")
    p.add_argument("--distributed", type=int, default=None, metavar="N",
                   help="time data-parallel steps on N processes (launched with mpiexec) "
                        "against one: compute, all-reduce and its floor per step, and the "
                        "speedup (MLP, numpy and batch 1024 by default; one thread per process "
                        "unless --threads)")
    p.add_argument("--json", default="portanet-bench.json", help="where to save the report")
    p.add_argument("--plot", default=None,
                   help='save throughput vs batch size to this PNG (needs matplotlib: pip '
                        'install "portanet[plot]")')
    p.set_defaults(run=main)


def _int_list(text: str, option: str) -> list[int]:
    """``"128,1024"`` -> [128, 1024]: positive ints, or a ValueError naming the option."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{option} takes comma-separated positive ints, e.g. 128,1024; "
                         f"received {text!r}.")
    return values


def _check_writable(path: str, option: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{option} {path}: the folder {folder} does not exist; create "
                                "it first or pass another path.")


def check_arguments(args) -> tuple[list[tuple[str, str | None]], list[str], list[int]]:
    """Every check that can fail on the user's input, before any worker starts (a failure
    after minutes of timing, or inside a worker, would be worse): returns the targets, dtypes
    and batch sizes, or raises ValueError / ImportError / FileNotFoundError with the fix."""

    batches = _int_list(args.batch_sizes, "--batch-sizes")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad or not dtypes:
        raise ValueError(f"--dtypes takes float32 and/or float64, comma-separated; received "
                         f"{args.dtypes!r}.")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, received {args.threads} (leave it out "
                         "for all cores).")
    if not (args.min_time >= 0 and math.isfinite(args.min_time)):
        raise ValueError(f"--min-time is seconds of timed steps, at least 0; received "
                         f"{args.min_time}.")
    targets = (parse_targets(args.backends) if args.backends
               else [(name, None) for name in pn.available_backends()])
    for name, device in targets:
        pn.backend.make_backend(name, device)  # unknown, not installed, no such device
    if args.model not in MODELS:
        if not os.path.isfile(os.path.expanduser(args.model)):
            raise FileNotFoundError(f"--model {args.model!r} is neither one of {list(MODELS)} "
                                    "nor a saved model's file.")
        saved = pn.load(os.path.expanduser(args.model), backend="numpy")
        saved.output_shape(_input_shape_of(saved))  # a shape error here, not in a worker
    if args.plot and not _importable("matplotlib"):
        raise ImportError('--plot needs matplotlib, which is not installed here: '
                          'pip install "portanet[plot]" (or leave out --plot).')
    _check_writable(args.json, "--json")
    if args.plot:
        _check_writable(args.plot, "--plot")
    return targets, dtypes, batches


def main(args) -> int:
    """``portanet bench``: check the arguments, measure, print the table, save JSON (and PNG)."""
    targets, dtypes, batches = check_arguments(args)
    model = args.model if args.model in MODELS else os.path.expanduser(args.model)
    report = run(model, targets, dtypes, batches, args.threads, args.min_time,
                 not args.no_baseline, args.allow_tf32, args.jit_compile)
    print(table(report))
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(f"saved {args.json}")
    if args.plot:
        print(f"saved {plot(report, args.plot)}")
    return 0


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
