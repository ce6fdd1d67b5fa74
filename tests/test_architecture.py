"""Imports point down (README, "Architecture"): every import of a portanet module, at the top of
a file or inside a function, goes to a module on the same floor or below. Within floor 5 the
modules build on each other in the order README lists them."""

from __future__ import annotations

import ast
import pathlib

import portanet

ROOT = pathlib.Path(portanet.__file__).parent

# README's floors, by module path prefix (the longest matching prefix wins).
FLOORS = {
    "_typing": 1, "_version": 1, "_config": 1, "errors": 1, "backend": 1, "backends": 1,
    "registry": 1,  # names and configs -> objects, for every kind (standard library only)
    "devices": 2, "random": 2, "ops": 2, "fused": 2,
    "replicas": 2,  # the processes of a data-parallel step, as a layer sees them (a ContextVar)
    # the transports (MPI, torch.distributed, NCCL): arrays in, arrays out, like devices.py
    "distributed.comm": 2, "distributed.mpi": 2, "distributed.torch_dist": 2,
    "distributed.nccl": 2,
    "activations": 3, "losses_targets": 3, "losses": 3, "initializers": 3, "regularizers": 3,
    "layers": 4, "optimizers": 4, "clipping": 4, "schedules": 4,
    "metrics": 5.0, "data": 5.1,
    "io.format": 5.2, "io.saving": 5.21, "io": 5.22,  # the file, then models in and out of it
    "callbacks": 5.3, "engine": 5.4,
    "distributed": 5.45,  # DataParallel: fit's data-parallel steps, on the engine
    "training": 5.5,
    "lr_finder": 5.52,  # a short training loop (the learning-rate range test), on train_step
    "plotting": 5.55,  # the summary rows and the picture, under model.py (Sequential.plot)
    "model": 5.6,
    "tuning": 5.62,  # sweeps on fit/cross_validate; ``import portanet`` re-exports it
    # A tool users run (DESIGN.md's top floor), but ``import portanet`` re-exports it
    # (pn.gradcheck), so it sits just below the package: it may use floors 1-5, never the tools.
    "gradcheck": 5.65,
    "explain": 5.65,  # the same for pn.explain, the traced training step
    "bench": 6, "bench_distributed": 6, "parity": 6, "sequence_tasks": 6, "cli": 6, "__main__": 6,
}
PACKAGE = 5.7  # ``import portanet`` brings floors 1-5 (its __init__ re-exports up to model)


def _floor(module: str) -> float:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in FLOORS:
            return FLOORS[key]
    raise KeyError(f"module portanet.{module} has no floor in this test; add it to FLOORS "
                   "and to README's architecture table")


def _module_or_package(package: str, name: str) -> str:
    """``from <package> import <name>``: the module <name>, or the package for an attribute."""
    full = f"{package}.{name}".strip(".")
    folder = ROOT.joinpath(*full.split("."))
    if folder.is_dir() or folder.with_suffix(".py").exists():
        return full
    return package


def _imports(path: pathlib.Path, module: str):
    """(line, imported portanet module) for every portanet import in the file."""
    if module == "__init__":  # portanet/__init__.py itself
        package = []
    else:
        package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "portanet":
                target = node.module.partition(".")[2]
            else:
                continue
            names = [target] if node.module else [_module_or_package(target, a.name)
                                                   for a in node.names]
            for name in names:
                yield node.lineno, name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "portanet":
                    yield node.lineno, alias.name.partition(".")[2] or "__init__"


def test_imports_point_down():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        module = ".".join(rel.parts)
        if rel.name == "__init__":
            module = ".".join(rel.parts[:-1]) or "__init__"
        own = _floor(module) if module != "__init__" else PACKAGE
        for line, target in _imports(path, module):
            if not target or target == "__init__":
                if own < PACKAGE:
                    wrong.append(f"portanet/{rel}.py:{line} (floor {own}) imports the package")
                continue
            if _floor(target) > own:
                wrong.append(f"portanet/{rel}.py:{line} (floor {own}) imports {target} "
                             f"(floor {_floor(target)})")
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk above finds imports inside functions too (how the old circles hid)."""
    source = tmp_path / "residual.py"
    source.write_text("def f():\n    from ..model import Sequential\n")
    found = list(_imports(source, "layers.residual"))
    assert found == [(2, "model")] and _floor("model") > _floor("layers.residual")
