"""Cross-backend parity: is it the same model on every backend and device?

Builds the same model (same seed, hence bit-identical initial weights) and the same batch on two
or more backends/devices, then compares with the first one, layer by layer:

* the activations of every layer (evaluation mode),
* the gradient of every parameter after one forward/backward pass,
* the loss curve over ``steps`` training steps.

Each difference is reported as max |a - b| and as a relative figure, max |a - b| / max |ref|
(relative to the tensor's scale, so values that cancel to ~0 do not blow it up). The run fails
when a relative figure passes the dtype's tolerance.

Tolerances. Measured on CPU (numpy vs strict device1, torch, jax; batch 16-32): float64 MLP
activations and gradients agree to 2e-15 relative and 5-step loss curves to 2e-16; float32 CNN
layers agree to 5e-7 relative. The defaults, 1e-9 (float64) and 1e-4 (float32), leave room for
GPU libraries that sum in other orders (cuBLAS, cuDNN split K differently) and for longer runs,
while still catching any real difference in the math, which shows up at 1e-3 and above.

Models with Dropout draw their masks from each backend's own generator, so their training curves
differ by design: parity compares them in evaluation mode only (``steps`` is then set to 0).

Examples:
    $ portanet parity --backends numpy,array_api_strict:device1,torch --dtype float64
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import portanet as pn

from .bench import build_portanet, input_shape, parse_targets

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


@dataclass
class Difference:
    """How far one tensor on a target is from the reference backend's."""

    target: str
    kind: str  # "activation", "gradient" or "loss"
    name: str
    max_abs: float
    max_rel: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return bool(self.max_rel <= self.tolerance)


def compare(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, max |a - b| / max |reference|), in float64; NaN anywhere fails."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf"), float("inf")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        same = np.array_equal(a, b, equal_nan=True)
        return (0.0, 0.0) if same else (float("inf"), float("inf"))
    diff = float(np.max(np.abs(a - b), initial=0.0))
    scale = float(np.max(np.abs(a), initial=0.0))
    return diff, diff / scale if scale > 0 else diff


def _has_dropout(model) -> bool:
    return any(type(leaf).__name__ == "Dropout" for _, leaf in model.named_leaves())


def trace(model_name: str, backend: str, device: Any, dtype: str, x_host: np.ndarray,
          y_host: np.ndarray, steps: int, seed: int = 0) -> dict[str, Any]:
    """Activations, gradients and the loss curve of the model on one backend (host copies)."""

    with pn.use_backend(backend, device) as b:
        model = build_portanet(model_name, dtype, seed=seed)
        x, y = pn.asarray(x_host), pn.asarray(y_host)
        activations = {}
        h = x
        for i, layer in enumerate(model.layers):
            h, _ = layer.forward(h, False)
            activations[f"{i}:{type(layer).__name__}"] = pn.to_numpy(h)
        y_pred, backprop = model.forward(x, training=True)
        _, grad = model.loss(y_pred, y)
        backprop(grad)
        gradients = {k: pn.to_numpy(v) for k, v in model.gradients().items()}
        losses = []
        for _ in range(0 if _has_dropout(model) else steps):
            # a diagnostic tool, not a training loop: one host read per step is intended
            losses.append(float(pn.to_numpy(model.train_step(x, y))))
        return {"target": f"{b.name}:{b.device_name}", "activations": activations,
                "gradients": gradients, "losses": np.asarray(losses)}


def run(model: str, targets: list[tuple[str, str | None]], dtype: str = "float64",
        steps: int = 10, batch: int = 32, seed: int = 0,
        tolerance: float | None = None) -> tuple[list[Difference], list[dict[str, Any]]]:
    """Trace every target and compare each with the first. Returns (differences, traces)."""

    if len(targets) < 2:
        raise ValueError(f"parity needs at least two backends/devices, received {targets}; "
                         "e.g. --backends numpy,array_api_strict:device1")
    if dtype not in TOLERANCE:
        raise ValueError(f"dtype must be one of {list(TOLERANCE)}, received {dtype!r}.")
    tol = TOLERANCE[dtype] if tolerance is None else tolerance
    rng = np.random.default_rng(seed)
    x_host = rng.standard_normal((batch, *input_shape(model))).astype(dtype)
    y_host = rng.integers(0, 10, size=batch).astype(np.int64)
    traces = [trace(model, name, device, dtype, x_host, y_host, steps, seed)
              for name, device in targets]
    ref = traces[0]
    found = []
    for other in traces[1:]:
        for kind, key in (("activation", "activations"), ("gradient", "gradients")):
            for name, value in ref[key].items():
                found.append(Difference(other["target"], kind, name,
                                        *compare(value, other[key][name]), tol))
        if len(ref["losses"]):
            found.append(Difference(other["target"], "loss", f"{steps} steps",
                                    *compare(ref["losses"], other["losses"]), tol))
    return found, traces


def report(differences: list[Difference], traces: list[dict[str, Any]]) -> str:
    """A readable table: one line per compared tensor, and the verdict."""
    lines = [f"reference: {traces[0]['target']}"]
    head = ("target", "kind", "tensor", "max abs", "max rel", "tol", "")
    rows = [head] + [(d.target, d.kind, d.name, f"{d.max_abs:.3e}", f"{d.max_rel:.3e}",
                      f"{d.tolerance:.0e}", "ok" if d.ok else "FAIL") for d in differences]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    for t in traces:
        if len(t["losses"]):
            curve = ", ".join(f"{v:.6f}" for v in t["losses"])
            lines.append(f"loss curve {t['target']}: {curve}")
    bad = [d for d in differences if not d.ok]
    lines.append(f"{'PARITY OK' if not bad else 'PARITY FAILED'}: {len(differences) - len(bad)}"
                 f"/{len(differences)} tensors within tolerance")
    return "\n".join(lines)


# -- the `portanet parity` command ---------------------------------------------------------------
def add_command(commands) -> None:
    """Register ``portanet parity`` on the CLI's sub-command parser."""
    p = commands.add_parser(
        "parity", help="compare one model across backends/devices",
        description="Build the same model and batch on each backend/device and compare, with "
                    "the first: every layer's activations, every parameter's gradient and the "
                    "loss curve. Exit status 0 when all are within the dtype's tolerance, 1 "
                    "when one is not, 2 for a user error.")
    p.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    p.add_argument("--backends", default="numpy,array_api_strict:device1",
                   help="comma-separated backend[:device] list; the first is the reference")
    p.add_argument("--dtype", default="float64", choices=sorted(TOLERANCE))
    p.add_argument("--steps", type=int, default=10,
                   help="training steps in the loss curves (10; 0 for none)")
    p.add_argument("--batch-size", type=int, default=32, help="samples in the batch (32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the batch (0)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="relative tolerance (default: 1e-9 for float64, 1e-4 for float32)")
    p.set_defaults(run=main)


def check_arguments(args) -> list[tuple[str, str | None]]:
    """Every check that can fail on the user's input, before the first trace: returns the
    targets, or raises ValueError (an unknown backend or device says how to fix it)."""

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, received {args.batch_size}.")
    if args.steps < 0:
        raise ValueError(f"--steps must be at least 0 (0: no loss curves), received "
                         f"{args.steps}.")
    if args.tolerance is not None and not (args.tolerance >= 0 and
                                           math.isfinite(args.tolerance)):
        raise ValueError(f"--tolerance is a relative difference, a number >= 0; received "
                         f"{args.tolerance}.")
    targets = parse_targets(args.backends)
    if len(targets) < 2:
        raise ValueError(f"parity compares at least two backends/devices, received --backends "
                         f"{args.backends!r}; e.g. --backends numpy,array_api_strict:device1")
    for name, device in targets:
        pn.backend.make_backend(name, device)  # unknown, not installed, no such device
    return targets


def main(args) -> int:
    """``portanet parity``: 0 when every tensor is within tolerance, 1 when one is not."""
    targets = check_arguments(args)
    differences, traces = run(args.model, targets, args.dtype, args.steps, args.batch_size,
                              args.seed, args.tolerance)
    print(report(differences, traces))
    return 0 if all(d.ok for d in differences) else 1
