"""The ``portanet`` command: ``info`` (backends, devices, versions) and the jobs built on it:
``train``, ``generate``, ``gradcheck``, ``bench`` and ``parity``.

Errors. A user error (a bad option value, an unknown backend or device, a missing file or
optional dependency: ``ValueError``, ``TypeError``, ``ImportError``, ``OSError``) ends the
command with one line on stderr, ``portanet <command>: error: <message>``, and exit status 2,
as argparse does for malformed options. Anything else is a bug and keeps its traceback;
``--traceback`` (on every command) shows the traceback of a user error too.

The help text (``portanet --help``) is :data:`DESCRIPTION`, written plain: this docstring's
markup would show as is in a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys

from . import __version__, bench, bench_distributed, distributed, parity, plotting
from .backend import BACKEND_NAMES, get_backend, use_backend
from .backends import ADAPTERS
from .data import CharTokenizer, generate_text
from .gradcheck import main_check
from .io import load
from .layers import Standardize
from .sequence_tasks import (
    DEFAULT_TASK,
    EPOCHS,
    LEARNING_RATES,
    SEQUENCE_MODELS,
    SEQUENCE_TASKS,
    build_sequence_model,
    default_optimizer,
    load_sequence_task,
    nats_per_step,
    token_accuracy,
)


def _backend_rows() -> list[tuple[str, str, str, str]]:
    rows = []
    for name in BACKEND_NAMES:
        adapter = ADAPTERS[name]
        if not adapter.is_installed():
            rows.append((name, "-", "-", f"not installed ({adapter.install_hint})"))
            continue
        try:
            version = adapter.version()
            devices = adapter.device_names()
        except Exception as err:  # a broken install is reported, not raised
            rows.append((name, "?", "-", f"broken install: {err}"))
            continue
        usable = "usable" if devices else "no usable device"
        rows.append((name, version, ", ".join(devices) or "-", usable))
    return rows


def cmd_info(args: argparse.Namespace) -> int:
    """Print portanet's version, every backend with its version, devices and usability."""
    print(f"portanet {__version__}  (Python {platform.python_version()}, {platform.machine()})")
    rows = [("backend", "version", "devices", "status"), *_backend_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    try:
        active = repr(get_backend())
    except Exception as err:
        active = f"none ({err})"
    print(f"active backend: {active}  (set with PORTANET_BACKEND / PORTANET_DEVICE)")
    return 0


# ---------------------------------------------------------------------------------------------
# portanet train: the main job
# ---------------------------------------------------------------------------------------------
_EPOCHS = {("mlp", "digits"): 20, ("cnn", "digits"): 20, ("mlp", "spiral"): 100,
           ("mlp", "circles"): 40, ("mlp", "sine"): 200, ("mlp", "mnist"): 5,
           ("cnn", "mnist"): 3, ("mlp", "fashion-mnist"): 5, ("cnn", "fashion-mnist"): 3}
_LEARNING_RATES = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05,
                   "adadelta": 1.0, "rmsprop": 1e-3}


_JIT_CHOICES = {"auto": "auto", "on": True, "off": False}


def _default_dataset() -> str:
    from .data import sklearn_available

    return "digits" if sklearn_available() else "spiral"


def _build_model(kind: str, dataset, hidden: int, optimizer, seed: int,
                 jit_compile="auto"):
    """The default models: a two-layer MLP, or a small two-convolution CNN for images.

    Both start with a :class:`~portanet.layers.Standardize` layer, one mean and scale per input
    value (what ``StandardScaler()`` computes); the caller adapts it to the training inputs, so
    the saved model standardizes raw inputs by itself."""
    from . import layers
    from .model import Sequential

    regression = dataset.task == "regression"
    outputs = dataset.y.shape[1] if regression else dataset.num_classes
    loss = "mean_squared_error" if regression else "softmax_cross_entropy"
    standardize = Standardize(tuple(dataset.x.shape[1:]))
    if kind == "mlp":
        features = int(math.prod(dataset.x.shape[1:]))
        stack = [standardize,
                 layers.Dense(features, hidden, activation="tanh" if regression else "relu"),
                 layers.Dense(hidden, outputs)]
    else:
        channels, height, width = dataset.image_shape
        stack = [standardize,
                 layers.Conv2D(channels, 16, 3, padding="same", activation="relu"),
                 layers.MaxPool2D(2),
                 layers.Conv2D(16, 32, 3, padding="same", activation="relu"),
                 layers.MaxPool2D(2),
                 layers.Flatten(),
                 layers.Dense(32 * (height // 4) * (width // 4), 64, activation="relu"),
                 layers.Dense(64, outputs)]
    return Sequential(stack, loss=loss, optimizer=optimizer, seed=seed, jit_compile=jit_compile)


def _check_output(path: str, overwrite: bool, *also: str) -> None:
    """Refuse, before any training, to replace an existing file without ``--overwrite``, and
    to save into a folder that does not exist (which would fail only after training)."""
    for target in (path, *also):
        if os.path.exists(target) and not overwrite:
            raise FileExistsError(f"{target} exists (saved by an earlier run?); pass --overwrite "
                                  "to replace it, or --output to save elsewhere.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {path}: the folder {folder} does not exist. "
                                "Create it first, or pass another --output.")


# Torch's intra-op threads for the CLI's jobs. Measured on the 2-core machine with another
# process keeping a core busy (portanet's torch backend, Adam steps, float32; docs/backends.md):
# a 2-64-3 MLP at batch 32 took 0.35 ms per step on one thread and 2.3 ms on torch's default two,
# 64-128-10 (the digits MLP) 0.41 vs 3.8 ms; at 784-128-10 (params x batch 3.3e6) the two were
# even, and at 784-1024-10 batch 256 two threads were 1.5x faster.
SMALL_STEP = 2**20
"""``--threads auto`` runs torch on one thread when parameters x batch size is below this."""


def _auto_threads(model, batch_size: int) -> int | None:
    """One intra-op thread for a small step, None (torch's default) for a large one."""
    return 1 if model.num_parameters * batch_size < SMALL_STEP else None


@contextlib.contextmanager
def _torch_threads(backend, model, batch_size: int, requested: int | None):
    """Set torch's intra-op threads for a job on the torch CPU backend; restore them after.

    ``requested`` is ``--threads`` (None: auto, :func:`_auto_threads`). Yields the count in use,
    or None where it does not apply (other backends, CUDA). cli reaches torch only through the
    backend's adapter (``threads``/``set_threads``).
    """
    adapter = backend.adapter
    if adapter.name != "torch" or getattr(backend.device, "type", "cpu") != "cpu":
        yield None
        return
    get, put = adapter.threads, adapter.set_threads
    before = get()
    wanted = requested if requested is not None else _auto_threads(model, batch_size)
    if wanted is None or wanted == before:
        yield before
        return
    put(wanted)
    try:
        yield wanted
    finally:
        put(before)


def _threads_note(threads: int | None) -> str:
    return "" if threads is None else f", torch threads: {threads}"


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a bundled or generated data set, report test scores, save the model."""
    import time

    if args.model in SEQUENCE_MODELS:
        return cmd_train_sequence(args)

    from . import data, optimizers, schedules

    started = time.perf_counter()
    chief = _distributed_role(args)
    name = args.dataset or _default_dataset()
    images = args.model == "cnn"
    if name in SEQUENCE_TASKS:
        raise ValueError(f"{name!r} is a sequence task: train it with --model lstm, gru or "
                         "transformer.")
    if images and name in ("spiral", "circles", "sine"):
        raise ValueError(f"--model cnn needs an image data set (digits, mnist, "
                         f"fashion-mnist); {name!r} has 2-D points. Use --model mlp.")
    output = args.output or f"portanet-{name}-{args.model}.safetensors"
    _check_output(output, args.overwrite)
    extra = {"spiral": {"n_samples": 600}, "circles": {"n_samples": 600, "noise": 0.1},
             "sine": {"n_samples": 600}}.get(name, {})
    dataset = data.load_dataset(name, images=images, seed=args.seed, path=args.data_dir,
                                **extra)
    classification = dataset.task == "classification"
    if dataset.x_test is not None:
        x_train, y_train = dataset.x, dataset.y
        x_test, y_test = dataset.x_test, dataset.y_test
    else:
        x_train, x_test, y_train, y_test = data.train_test_split(
            dataset.x, dataset.y, test_size=0.2, stratify=classification, seed=args.seed)
    epochs = args.epochs if args.epochs is not None else _EPOCHS.get((args.model, name), 10)
    lr = args.lr if args.lr is not None else _LEARNING_RATES.get(args.optimizer, 3e-3)
    if args.schedule == "cosine":  # anneal to 0 over the run's steps (10% is validation)
        steps = max(1, epochs * math.ceil((len(x_train) - round(0.1 * len(x_train)))
                                          / args.batch_size))
        lr = schedules.CosineAnnealing(lr, steps)
    with use_backend(*_chosen_backend(args)) as backend:
        optimizer = optimizers.get(args.optimizer, learning_rate=lr)
        model = _build_model(args.model, dataset, args.hidden, optimizer, args.seed,
                             _JIT_CHOICES[args.jit_compile])
        # The training part's statistics only (the test part stays unseen); the model keeps
        # them, so it is trained, evaluated and saved on raw inputs.
        model.layers[0].adapt(x_train)
        step = model.engine.executor  # raises here if "on" meets a backend with no compiler
        with _torch_threads(backend, model, args.batch_size, args.threads) as threads:
            if not args.quiet:
                print(f"portanet train: {dataset.description} ({len(x_train)} training, "
                      f"{len(x_test)} test samples) on {backend!r}, step: {step}"
                      f"{_threads_note(threads)}")
                print(model.summary(input_shape=tuple(x_train.shape[1:])))
            metrics = ["accuracy"] if classification else ["mae", "r2"]
            verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
            model.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                      validation_split=0.1, metrics=metrics, verbose=verbose, seed=args.seed,
                      shuffle="host", distributed=args.distributed)
            scores = model.evaluate(x_test, y_test, metrics=metrics)
    if not chief:  # rank 0 reports and saves; the others trained the same model with it
        return 0
    path = model.save(output)
    if classification:
        right = round(scores["accuracy"] * len(y_test))
        print(f"test accuracy: {100 * scores['accuracy']:.2f}% ({right}/{len(y_test)})  "
              f"test loss: {scores['loss']:.4f}")
    else:
        print(f"test MAE: {scores['mae']:.4f}  test R^2: {scores['r2']:.4f}  "
              f"test loss: {scores['loss']:.4f}")
    print(f"saved the model to {os.path.abspath(path)}  (load it with "
          f"portanet.load({path!r}); it takes raw inputs)")
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_train_sequence(args: argparse.Namespace) -> int:
    """``portanet train --model lstm|gru|transformer``: a task of portanet/sequence_tasks.py."""
    import json
    import time

    started = time.perf_counter()
    chief = _distributed_role(args)
    name = args.dataset or DEFAULT_TASK[args.model]
    if name not in SEQUENCE_TASKS:
        raise ValueError(f"--model {args.model} trains on a sequence task "
                         f"({', '.join(SEQUENCE_TASKS)}), received --dataset {name}. Use "
                         "--model mlp or cnn for it.")
    task = load_sequence_task(name, seed=args.seed)
    output = args.output or f"portanet-{name}-{args.model}.safetensors"
    # a text task also writes its tokenizer beside the model: refuse to replace either
    _check_output(output, args.overwrite,
                  *([tokenizer_path(output)] if task.tokenizer is not None else []))
    epochs = args.epochs if args.epochs is not None else EPOCHS.get((args.model, name), 10)
    lr = args.lr if args.lr is not None else LEARNING_RATES[name]
    steps = math.ceil((len(task.x) - round(0.1 * len(task.x))) / args.batch_size)
    with use_backend(*_chosen_backend(args)) as backend:
        model = build_sequence_model(args.model, task, args.hidden, args.seed,
                                     default_optimizer(lr, epochs, steps),
                                     _JIT_CHOICES[args.jit_compile])
        step = model.engine.executor
        with _torch_threads(backend, model, args.batch_size, args.threads) as threads:
            if not args.quiet:
                print(f"portanet train: {task.description} ({len(task.x)} training, "
                      f"{len(task.x_test)} test sequences) on {backend!r}, step: {step}"
                      f"{_threads_note(threads)}")
                print(model.summary(input_shape=tuple(task.x.shape[1:])))
            verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
            model.fit(task.x, task.y, epochs=epochs, batch_size=args.batch_size,
                      validation_split=0.1, verbose=verbose, seed=args.seed, shuffle="host",
                      distributed=args.distributed)
            loss = model.evaluate(task.x_test, task.y_test)["loss"]
            accuracy = token_accuracy(model, task.x_test, task.y_test)
    if not chief:
        return 0
    path = model.save(output)
    if task.tokenizer is not None:
        with open(tokenizer_path(path), "w", encoding="utf-8") as f:
            # the window: generation feeds the context length the model learned
            json.dump({"tokenizer": task.tokenizer.get_config(),
                       "window": int(task.x.shape[1])}, f)
    what = "next-character accuracy" if name == "text" else (
        "per-token accuracy" if task.per_token else "test accuracy")
    shown = nats_per_step(loss) if name == "text" else f"{loss:.4f}"
    print(f"{what}: {100 * accuracy:.2f}%  test loss: {shown}")
    print(f"saved the model to {os.path.abspath(path)}  (load it with "
          f"portanet.load({path!r}))")
    if task.tokenizer is not None:
        print(f"write text with it: portanet generate {path}")
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``portanet bench``: across backends and devices, or across processes (--distributed)."""
    if args.distributed is not None:
        return bench_distributed.main(args)
    return bench.main(args)


def _distributed_role(args: argparse.Namespace) -> bool:
    """``--distributed``: whether this process is rank 0 (it prints and saves; the others
    train quietly). Outside ``mpiexec``/``torchrun`` it is the only process, and says so."""
    if not args.distributed:
        return True
    size = distributed.world_size()
    if distributed.rank() != 0:
        args.quiet = True
        return False
    if not args.quiet:
        print(f"portanet train: data-parallel on {size} process{'es' if size > 1 else ''}"
              + ("" if size > 1 else " (launch with mpiexec -n N or torchrun "
                 "--nproc-per-node N to use more)"))
    return True


def tokenizer_path(model_path: str) -> str:
    """Where a text model's tokenizer is saved: beside the model, ``<model>.tokenizer.json``."""
    return f"{model_path}.tokenizer.json"


def cmd_generate(args: argparse.Namespace) -> int:
    """``portanet generate MODEL``: continue a prompt with a trained character model."""
    import json

    where = args.tokenizer or tokenizer_path(args.model)
    if not os.path.exists(where):
        raise FileNotFoundError(
            f"no tokenizer at {where}: generate needs the one portanet train saved beside a "
            "text model (train one with: portanet train --model lstm), or pass --tokenizer.")
    try:
        with open(where, encoding="utf-8") as f:
            saved = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:  # a model file, say
        raise ValueError(f"{where} is not a tokenizer file portanet train wrote: expected JSON "
                         f"text, {err}. Pass the <model>.tokenizer.json saved beside the model."
                         ) from None
    if not isinstance(saved, dict) or "tokenizer" not in saved or "window" not in saved:
        keys = sorted(saved) if isinstance(saved, dict) else "no keys"
        raise ValueError(f"{where} is not a tokenizer file portanet train wrote: expected "
                         "a JSON object with 'tokenizer' and 'window', received a "
                         f"{type(saved).__name__} ({keys}).")
    tokenizer = CharTokenizer.from_config(saved["tokenizer"])
    window = saved["window"]
    backend, device = _chosen_backend(args)
    model = load(args.model, backend=backend, device=device)
    with _torch_threads(model.backend, model, 1, args.threads):  # one sequence at a time
        text = generate_text(model, tokenizer, args.prompt, args.length,
                             temperature=args.temperature, seed=args.seed, window=window)
    print(text)
    return 0


def add_generate_parser(commands) -> None:
    gen = commands.add_parser(
        "generate", help="write text with a character model from portanet train --model lstm",
        description="Continue a prompt, one character at a time, sampling from the model's "
                    "softmax with a temperature.")
    gen.add_argument("model", help="the .safetensors file portanet train saved")
    gen.add_argument("--prompt", default="The ", help="the start of the text ('The ')")
    gen.add_argument("--length", type=_count(0), default=300, help="characters to write (300)")
    gen.add_argument("--temperature", type=float, default=0.8,
                     help="softmax temperature: lower is safer, 0 is greedy (0.8)")
    gen.add_argument("--tokenizer", default=None,
                     help="the tokenizer JSON (default: <model>.tokenizer.json)")
    gen.add_argument("--backend", default=None,
                     help="backend to run on (default: PORTANET_BACKEND, else numpy)")
    gen.add_argument("--device", default=None, help="device of the backend")
    gen.add_argument("--seed", type=int, default=0, help="seed of the sampling (0)")
    add_threads_option(gen)
    gen.set_defaults(run=cmd_generate)


# ---------------------------------------------------------------------------------------------
# portanet gradcheck: the model's backward pass against central differences
# ---------------------------------------------------------------------------------------------
def _gradcheck_model(args: argparse.Namespace):
    """The model ``--model`` names, on the chosen backend: a built-in one of the bench
    (``bench.build_portanet``, in float64: the dtype of the check), or a saved file."""
    backend, device = _chosen_backend(args)
    if args.model in bench.MODELS:
        with use_backend(backend, device):
            return bench.build_portanet(args.model, "float64", seed=args.seed)
    path = os.path.expanduser(args.model)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {args.model!r} is neither one of {list(bench.MODELS)} "
                                "nor a saved model's file (.safetensors from model.save or "
                                "portanet train).")
    model = load(path, backend=backend, device=device)
    if model.loss is None:
        raise ValueError(f"{args.model} holds a model without a loss, and gradcheck checks the "
                         "gradient of the training loss. Give it one before saving: "
                         "model.compile(loss=...).")
    return model


def _gradcheck_input_shape(model, args: argparse.Namespace) -> tuple[int, ...]:
    """One sample's shape: --input-shape, a built-in model's, or what the first layer tells
    (a Dense-like layer's in_features; a Standardize layer's statistics, as portanet train
    saves its models), checked against the whole model."""
    if args.input_shape is not None:
        shape = args.input_shape
    elif args.model in bench.MODELS:
        shape = bench.input_shape(args.model)
    else:
        shape = plotting.guess_input_shape(model)
        if shape is None:
            first = model.named_leaves()[0][1]
            raise ValueError(f"cannot tell the input shape of a model that starts with "
                             f"{type(first).__name__}; pass one sample's shape, e.g. "
                             "--input-shape 1,28,28 (an image) or --input-shape 20 (20 ids).")
    model.output_shape(shape)  # a wrong --input-shape: the layer's own message, before any work
    return tuple(shape)


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """``portanet gradcheck --model mlp|cnn|PATH``: every parameter gradient of the model's
    loss on a generated batch against central differences in float64
    (:func:`portanet.gradcheck.main_check`). Exit status 0 if it passes, 1 if not."""
    import time

    started = time.perf_counter()
    model = _gradcheck_model(args)
    shape = _gradcheck_input_shape(model, args)
    if not args.quiet:
        print(f"portanet gradcheck: model {args.model} ({model.num_parameters:,} parameters), "
              f"a batch of {args.batch_size} inputs of shape {shape}, at most "
              f"{args.max_checks} entries per tensor")
    with _torch_threads(model.backend, model, args.batch_size, args.threads):
        report, ok = main_check(model, input_shape=shape, batch_size=args.batch_size,
                                max_checks=args.max_checks, seed=args.seed)
    print(report)
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f}s")
    return 0 if ok else 1


def _shape(text: str) -> tuple[int, ...]:
    """An argparse type for --input-shape: comma-separated positive ints, "1,28,28"."""
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"expected one sample's shape as comma-separated "
                                         f"positive ints such as 1,28,28; received {text!r}")
    return dims


def add_gradcheck_parser(commands) -> None:
    check = commands.add_parser(
        "gradcheck", help="check a model's gradients against central differences",
        description="Compare every parameter gradient of a model's loss, on a generated batch, "
                    "with central finite differences in float64; print the per-tensor report "
                    "(max absolute and relative error, worst index) and exit with status 0 if "
                    "it passes, 1 if not.")
    check.add_argument("--model", required=True,
                       help="mlp (784-512-512-10), cnn (LeNet-5 sized) or a saved model's "
                            ".safetensors file")
    check.add_argument("--backend", default=None,
                       help="numpy, array_api_strict, torch, jax, cupy or auto (default: "
                            "PORTANET_BACKEND, else numpy)")
    check.add_argument("--device", default=None, help="device of the backend (e.g. cuda:0)")
    check.add_argument("--batch-size", type=_count(1), default=4,
                       help="samples in the generated batch (4)")
    check.add_argument("--max-checks", type=_count(1), default=32,
                       help="entries checked per tensor, a seeded sample of larger ones (32; "
                            "each costs two evaluations of the loss)")
    check.add_argument("--seed", type=int, default=0,
                       help="seed of the weights of mlp/cnn, the batch and the sampled entries")
    check.add_argument("--input-shape", type=_shape, default=None, metavar="D1,D2,...",
                       help="one sample's shape, for a saved model whose first layer does not "
                            "tell it (e.g. 1,28,28)")
    check.add_argument("--quiet", action="store_true", help="print only the report")
    add_threads_option(check)
    check.set_defaults(run=cmd_gradcheck)


def _count(minimum: int):
    """An argparse type: an int >= ``minimum`` (argparse prints one line and exits 2 if not)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, received {value}")
        return value

    return parse


def _threads(text: str) -> int | None:
    """An argparse type for --threads: "auto" (None) or an int >= 1."""
    return None if text == "auto" else _count(1)(text)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_threads, default=None, metavar="N|auto",
                        help="torch intra-op threads on the torch CPU backend (default auto: 1 "
                             "for small models, whose steps threads slow down, else torch's "
                             "default; see docs/backends.md)")


def _chosen_backend(args: argparse.Namespace) -> tuple[str, str | None]:
    """--backend/--device, else PORTANET_BACKEND/PORTANET_DEVICE, else numpy on its device."""
    if args.backend is not None:
        return args.backend, args.device
    name = os.environ.get("PORTANET_BACKEND") or "numpy"
    return name, args.device or os.environ.get("PORTANET_DEVICE") or None


def add_train_parser(commands) -> None:
    """Register ``portanet train`` and its options."""
    from .data import DATASETS

    train = commands.add_parser(
        "train", help="train a model on an embedded data set (the main job)",
        description="Train a two-layer MLP (or a small CNN) on the 8x8 digits (when scikit-learn "
                    "is installed; else the generated spiral), print per-epoch progress and the "
                    "test score, and save the model.")
    train.add_argument("--dataset", choices=(*DATASETS, *SEQUENCE_TASKS), default=None,
                       help="data set (default: digits if scikit-learn is installed, else "
                            "spiral; for sequence models: lstm text, gru patterns, "
                            "transformer reverse)")
    train.add_argument("--data-dir", default=None,
                       help="folder with the IDX files for mnist / fashion-mnist")
    train.add_argument("--model", choices=("mlp", "cnn", *SEQUENCE_MODELS), default="mlp",
                       help="mlp: Dense-ReLU-Dense; cnn: two conv+pool blocks (image sets "
                            "only); lstm, gru, transformer: sequence models")
    train.add_argument("--backend", default=None,
                       help="numpy, array_api_strict, torch, jax, cupy or auto (default: "
                            "PORTANET_BACKEND, else numpy)")
    train.add_argument("--device", default=None, help="device of the backend (e.g. cuda:0)")
    train.add_argument("--epochs", type=_count(1), default=None,
                       help="epochs (default depends on data set and model, e.g. 20)")
    train.add_argument("--batch-size", type=_count(1), default=32, help="samples per step (32)")
    train.add_argument("--optimizer", default="adam", help="adam, sgd, momentum, rmsprop, ...")
    train.add_argument("--lr", type=float, default=None,
                       help="learning rate (default 3e-3 for adam)")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                       help="learning-rate schedule: cosine annealing to 0 (default) or constant")
    train.add_argument("--hidden", type=_count(1), default=128,
                       help="hidden units of the MLP, LSTM or GRU (128)")
    train.add_argument("--output", default=None,
                       help="where to save (default portanet-<dataset>-<model>.safetensors); "
                            "an existing file is kept unless --overwrite")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the output file (and a text model's tokenizer file) if "
                            "it exists; without it train refuses before training")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, split, shuffles")
    train.add_argument("--jit-compile", nargs="?", choices=tuple(_JIT_CHOICES), const="on",
                       default="auto",
                       help="compile the training step: auto (default: where it measures "
                            "faster, i.e. jax), on (--jit-compile alone; jax.jit, "
                            "torch.compile on CPU, a CUDA graph on torch-CUDA; an error "
                            "elsewhere) or off (eager)")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel training on the processes of an mpiexec -n N or "
                            "torchrun --nproc-per-node N launch (each takes its share of "
                            "every batch); rank 0 prints and saves")
    train.add_argument("--quiet", action="store_true", help="print only the final results")
    add_threads_option(train)
    train.set_defaults(run=cmd_train)


DESCRIPTION = """\
portanet: one neural-network library on NumPy, CuPy, PyTorch, JAX and array-api-strict.
Commands: info (backends, devices and versions here), train (the main job), generate (text from
a character model), gradcheck (a model's gradients against finite differences), bench (time a
training step across backends and devices) and parity (the same model compared across
backends). A user error prints one line and exits with status 2; --traceback (on every command)
shows its traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The ``portanet`` parser with its sub-commands (plain help text, no markup)."""
    parser = argparse.ArgumentParser(prog="portanet", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"portanet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="backends, devices and versions on this machine",
                               description="List portanet's version and every backend with its "
                                           "version, devices and whether it is usable here.")
    info.set_defaults(run=cmd_info)
    add_train_parser(commands)
    add_generate_parser(commands)
    add_gradcheck_parser(commands)
    bench.add_command(commands)
    commands.choices["bench"].set_defaults(run=cmd_bench)
    parity.add_command(commands)
    for command in commands.choices.values():
        command.add_argument("--traceback", action="store_true",
                             help="show the full traceback of an error, not one line")
    return parser


# What a user can cause and fix: bad values, unknown backends or devices (BackendError and
# DeviceError are ValueErrors), malformed checkpoints (CheckpointError), missing files and
# optional libraries. Any other exception is a bug in portanet and keeps its traceback.
USER_ERRORS = (ValueError, TypeError, ImportError, OSError)


def one_line(err: BaseException) -> str:
    """The error's message on one line (a message may hold line breaks; stderr gets one)."""
    return " ".join(str(err).split()) or type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's last flush at exit does not
    raise BrokenPipeError again (the recipe of Python's signal module documentation)."""
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    # no file descriptor to replace where output is captured (io.StringIO)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: list[str] | None = None) -> int:
    """Run ``portanet`` with ``argv`` (default: the command line); returns the exit status.

    0 success; 1 a check that ran and failed (parity or gradcheck past its tolerance); 2 a
    user error (one line on stderr, as argparse does for bad options); 130 interrupted (Ctrl-C).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader went away (portanet info | head -1): not an error
        _silence_stdout()
        return 1
    except USER_ERRORS as err:
        if args.traceback:
            raise
        print(f"portanet {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print(f"portanet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
