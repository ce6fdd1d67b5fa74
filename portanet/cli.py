"""The ``portanet`` command: ``info`` (backends, devices, versions) and the jobs built on it."""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys

from . import __version__, bench, parity
from .backend import BACKEND_NAMES, get_backend, use_backend
from .backends import ADAPTERS
from .data import CharTokenizer, generate_text
from .io import load
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
    """The default models: a two-layer MLP, or a small two-convolution CNN for images."""
    from . import layers
    from .model import Sequential

    regression = dataset.task == "regression"
    outputs = dataset.y.shape[1] if regression else dataset.num_classes
    loss = "mean_squared_error" if regression else "softmax_cross_entropy"
    if kind == "mlp":
        features = int(math.prod(dataset.x.shape[1:]))
        stack = [layers.Dense(features, hidden, activation="tanh" if regression else "relu"),
                 layers.Dense(hidden, outputs)]
    else:
        channels, height, width = dataset.image_shape
        stack = [layers.Conv2D(channels, 16, 3, padding="same", activation="relu"),
                 layers.MaxPool2D(2),
                 layers.Conv2D(16, 32, 3, padding="same", activation="relu"),
                 layers.MaxPool2D(2),
                 layers.Flatten(),
                 layers.Dense(32 * (height // 4) * (width // 4), 64, activation="relu"),
                 layers.Dense(64, outputs)]
    return Sequential(stack, loss=loss, optimizer=optimizer, seed=seed, jit_compile=jit_compile)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model on a bundled or generated data set, report test scores, save the model."""
    import time

    if args.model in SEQUENCE_MODELS:
        return cmd_train_sequence(args)

    from . import data, optimizers, schedules

    started = time.perf_counter()
    name = args.dataset or _default_dataset()
    images = args.model == "cnn"
    try:
        if name in SEQUENCE_TASKS:
            raise ValueError(f"{name!r} is a sequence task: train it with --model lstm, gru or "
                             "transformer.")
        if images and name in ("spiral", "circles", "sine"):
            raise ValueError(f"--model cnn needs an image data set (digits, mnist, "
                             f"fashion-mnist); {name!r} has 2-D points. Use --model mlp.")
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
        scaler = data.StandardScaler().fit(x_train)  # statistics of the training part only
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
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
            step = model.engine.executor  # raises here if "on" meets a backend with no compiler
            if not args.quiet:
                print(f"portanet train: {dataset.description} ({len(x_train)} training, "
                      f"{len(x_test)} test samples) on {backend!r}, step: {step}")
                print(model.summary(input_shape=tuple(x_train.shape[1:])))
            metrics = ["accuracy"] if classification else ["mae", "r2"]
            verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
            model.fit(x_train, y_train, epochs=epochs, batch_size=args.batch_size,
                      validation_split=0.1, metrics=metrics, verbose=verbose, seed=args.seed,
                      shuffle="host")
            scores = model.evaluate(x_test, y_test, metrics=metrics)
        output = args.output or f"portanet-{name}-{args.model}.safetensors"
        path = model.save(output)
    except (ValueError, TypeError, ImportError, FileNotFoundError, OSError) as err:
        print(f"portanet train: error: {err}", file=sys.stderr)
        return 2
    if classification:
        right = round(scores["accuracy"] * len(y_test))
        print(f"test accuracy: {100 * scores['accuracy']:.2f}% ({right}/{len(y_test)})  "
              f"test loss: {scores['loss']:.4f}")
    else:
        print(f"test MAE: {scores['mae']:.4f}  test R^2: {scores['r2']:.4f}  "
              f"test loss: {scores['loss']:.4f}")
    print(f"saved the model to {os.path.abspath(path)}  (load it with "
          f"portanet.load({path!r}))")
    if not args.quiet:
        print(f"done in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_train_sequence(args: argparse.Namespace) -> int:
    """``portanet train --model lstm|gru|transformer``: a task of portanet/sequence_tasks.py."""
    import json
    import time

    started = time.perf_counter()
    name = args.dataset or DEFAULT_TASK[args.model]
    try:
        if name not in SEQUENCE_TASKS:
            raise ValueError(f"--model {args.model} trains on a sequence task "
                             f"({', '.join(SEQUENCE_TASKS)}), received --dataset {name}. Use "
                             "--model mlp or cnn for it.")
        task = load_sequence_task(name, seed=args.seed)
        epochs = args.epochs if args.epochs is not None else EPOCHS.get((args.model, name), 10)
        lr = args.lr if args.lr is not None else LEARNING_RATES[name]
        steps = math.ceil((len(task.x) - round(0.1 * len(task.x))) / args.batch_size)
        with use_backend(*_chosen_backend(args)) as backend:
            model = build_sequence_model(args.model, task, args.hidden, args.seed,
                                         default_optimizer(lr, epochs, steps),
                                         _JIT_CHOICES[args.jit_compile])
            step = model.engine.executor
            if not args.quiet:
                print(f"portanet train: {task.description} ({len(task.x)} training, "
                      f"{len(task.x_test)} test sequences) on {backend!r}, step: {step}")
                print(model.summary(input_shape=tuple(task.x.shape[1:])))
            verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
            model.fit(task.x, task.y, epochs=epochs, batch_size=args.batch_size,
                      validation_split=0.1, verbose=verbose, seed=args.seed, shuffle="host")
            loss = model.evaluate(task.x_test, task.y_test)["loss"]
            accuracy = token_accuracy(model, task.x_test, task.y_test)
        output = args.output or f"portanet-{name}-{args.model}.safetensors"
        path = model.save(output)
        if task.tokenizer is not None:
            with open(tokenizer_path(path), "w", encoding="utf-8") as f:
                # the window: generation feeds the context length the model learned
                json.dump({"tokenizer": task.tokenizer.get_config(),
                           "window": int(task.x.shape[1])}, f)
    except (ValueError, TypeError, ImportError, FileNotFoundError, OSError) as err:
        print(f"portanet train: error: {err}", file=sys.stderr)
        return 2
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


def tokenizer_path(model_path: str) -> str:
    """Where a text model's tokenizer is saved: beside the model, ``<model>.tokenizer.json``."""
    return f"{model_path}.tokenizer.json"


def cmd_generate(args: argparse.Namespace) -> int:
    """``portanet generate MODEL``: continue a prompt with a trained character model."""
    import json

    where = args.tokenizer or tokenizer_path(args.model)
    try:
        if not os.path.exists(where):
            raise FileNotFoundError(
                f"no tokenizer at {where}: generate needs the one portanet train saved beside a "
                "text model (train one with: portanet train --model lstm), or pass --tokenizer.")
        with open(where, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or "tokenizer" not in saved or "window" not in saved:
            keys = sorted(saved) if isinstance(saved, dict) else "no keys"
            raise ValueError(f"{where} is not a tokenizer file portanet train wrote: expected "
                             "a JSON object with 'tokenizer' and 'window', received a "
                             f"{type(saved).__name__} ({keys}).")
        tokenizer = CharTokenizer.from_config(saved["tokenizer"])
        window = saved["window"]
        backend, device = _chosen_backend(args)
        model = load(args.model, backend=backend, device=device)
        text = generate_text(model, tokenizer, args.prompt, args.length,
                             temperature=args.temperature, seed=args.seed, window=window)
    except (ValueError, TypeError, ImportError, FileNotFoundError, OSError) as err:
        print(f"portanet generate: error: {err}", file=sys.stderr)
        return 2
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
    gen.set_defaults(run=cmd_generate)


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
                       help="where to save (default portanet-<dataset>-<model>.safetensors)")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, split, shuffles")
    train.add_argument("--jit-compile", nargs="?", choices=tuple(_JIT_CHOICES), const="on",
                       default="auto",
                       help="compile the training step: auto (default: where it measures "
                            "faster, i.e. jax), on (--jit-compile alone; jax.jit or "
                            "torch.compile, an error elsewhere) or off (eager)")
    train.add_argument("--quiet", action="store_true", help="print only the final results")
    train.set_defaults(run=cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portanet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"portanet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="backends, devices and versions on this machine")
    info.set_defaults(run=cmd_info)
    add_train_parser(commands)
    add_generate_parser(commands)
    bench.add_command(commands)
    parity.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
