"""Saving and loading models: a model becomes a checkpoint, and a checkpoint a model again.

:mod:`portanet.io.format` writes and validates the file; this module decides what goes into it
and what may come out:

* ``save`` refuses, before anything is written, a model that ``load`` could not rebuild as it
  is (an unregistered layer class or activation, a class registered under another's name, a
  config that declares other parameter shapes than the model has);
* ``load`` reads every parameter's and buffer's name and shape from the architecture without
  building anything (leaf layers unbuilt, containers such as a nested Sequential read from
  their configs, at any depth) and checks them, and the dtype of every parameter, buffer and
  optimizer slot, against the tensors, so a file that claims huge layers is refused before they
  are allocated; only then does it build the model from known layer classes and place the
  arrays on the target backend and device;
* ``save_weights`` / ``load_weights`` keep only the tensors, for a model built in code.

Any failure of a file raises :class:`~portanet.io.format.CheckpointError`, saying what is wrong.

Examples:
    >>> import portanet as pn
    >>> model.save("digits.safetensors")                               # doctest: +SKIP
    >>> model = pn.load("digits.safetensors", backend="torch")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import array_api_compat as compat
import numpy as np

from .. import activations, losses, optimizers
from ..backend import Backend, adapter_of, get_backend, make_backend, use_backend
from ..errors import abridged
from ..layers.base import deserialize, registered_class
from .format import (
    Checkpoint,
    CheckpointError,
    _as_path,
    _fail,
    _one_of,
    read_checkpoint,
    write_checkpoint,
)

__all__ = ["load", "load_weights", "save", "save_weights"]

_MODEL_FLOATS = ("float32", "float64")  # what a model computes in (Sequential's dtype)


def _model_parts(model: Any) -> tuple[dict, dict]:
    params = model.parameters()
    buffers = model.buffers() if hasattr(model, "buffers") else {}
    return dict(params), dict(buffers)


def _unsavable(path: Path, problem: str) -> ValueError:
    return ValueError(
        f"cannot save to {str(path)!r}: pn.load could not rebuild this model from the file. "
        f"{problem} Nothing was written. Register custom classes and functions under their own "
        "names (@portanet.layers.register for a layer class, "
        "portanet.activations.register(name, forward, derivative) for an activation), or save "
        "only the weights with model.save_weights(path) and restore them into a model built in "
        "code with model.load_weights(path).")


def _check_rebuildable(path: Path, model: Any, architecture: dict, params: Mapping[str, Any],
                       buffers: Mapping[str, Any]) -> None:
    """Refuse, before anything is written, a model that :func:`load` would not rebuild as it is.

    The architecture is read the way ``load`` reads it (every layer class, activation, loss
    and optimizer resolved through the registries, leaf layers created unbuilt), and what that
    gives must be this model: the same layer classes at the same places, the same activation
    functions, the same parameter and buffer names and shapes. A class or function that is not
    registered, or one registered under another's name, would otherwise give a file that
    ``load`` refuses or, worse, fills into a different model.
    """
    try:
        leaves = _architecture_leaves(architecture)
        specs = _declared_specs(leaves)
        for key, resolve in (("loss", losses.get), ("optimizer", optimizers.get)):
            config, own = architecture.get(key), getattr(model, key, None)
            rebuilt = None if config is None else resolve(config)
            if type(rebuilt) is not type(own):
                raise ValueError(f"its {key} config gives a {type(rebuilt).__name__}, but the "
                                 f"model's {key} is a {type(own).__name__}.")
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise _unsavable(path, f"Reading its architecture fails: {err}") from None
    live = model.named_leaves()
    if [p for p, _ in leaves] != [p for p, _ in live]:
        raise _unsavable(path, f"Its leaf layers are {[p[:-1] for p, _ in live]}, but its "
                               f"config describes {[p[:-1] for p, _ in leaves]}.")
    for (prefix, rebuilt), (_, layer) in zip(leaves, live, strict=True):
        where = prefix[:-1]
        if type(rebuilt) is not type(layer):
            cls = type(layer)
            raise _unsavable(path, f"Layer {where!r} is a {cls.__module__}.{cls.__qualname__}, "
                                   f"but its config names {cls.__name__!r}, which load builds as "
                                   f"the registered {type(rebuilt).__module__}."
                                   f"{type(rebuilt).__qualname__}.")
        for attr, act in vars(layer).items():
            if not isinstance(act, activations.Activation):
                continue
            again = getattr(rebuilt, attr, None)
            # An activation is saved by name: the name must give back the same function.
            # (Activation's == compares names and parameters only, so compare the functions.)
            if not isinstance(again, activations.Activation) or again._forward is not act._forward:
                raise _unsavable(path, f"Layer {where!r} has {attr} {act.name!r}, a function "
                                       "that is not the one registered under that name.")
    for what, stored in (("parameters", params), ("buffers", buffers)):
        declared = {k: tuple(s.shape) for k, s in specs[what].items()}
        actual = {k: tuple(v.shape) for k, v in stored.items()}
        if declared != actual:
            raise _unsavable(path, f"Its config declares the {what} {declared}, but the model "
                                   f"has {actual}.")


def save(model: Any, path: str | os.PathLike, epoch: int | None = None,
         include_optimizer: bool = True) -> str:
    """Save architecture, parameters, buffers, optimizer state, random state and ``epoch``.

    First checks that :func:`load` can rebuild the model from its config (every layer class
    and activation registered), and refuses before writing anything if not. Arrays are copied
    to the host (one transfer per array) and written atomically; stale temporary files of the
    same target, left by a killed save, are removed. ``pn.load(path, backend=..., device=...)``
    rebuilds the model anywhere.

    Args:
        model: a Sequential (anything with ``parameters``, ``get_config`` and
            ``named_leaves``); its ``random_state()`` is saved when it has one.
        path: a str or os.PathLike; ``~`` is expanded.
        epoch: epochs completed (default: ``model.epoch``).
        include_optimizer: save the optimizer's state (default True).

    Returns:
        The path written.

    Raises:
        ValueError: ``load`` could not rebuild the model (the message says how to fix it).
    """
    path = _as_path(path)
    params, buffers = _model_parts(model)
    architecture = model.get_config()
    _check_rebuildable(path, model, architecture, params, buffers)
    optimizer = getattr(model, "optimizer", None) if include_optimizer else None
    opt_entry = None
    if optimizer is not None:
        state = dict(optimizer.state_dict())
        config = state.pop("config", None) or optimizer.get_config()
        opt_entry = {"config": config, "state": state}
    if epoch is None:
        epoch = getattr(model, "epoch", None)
        epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    random = model.random_state() if hasattr(model, "random_state") else None
    ckpt = Checkpoint("model", params, buffers, architecture, opt_entry, epoch, random=random)
    return write_checkpoint(path, ckpt)


def save_weights(model: Any, path: str | os.PathLike) -> str:
    """Save only the parameters and buffers (restore with :func:`load_weights`)."""
    path = _as_path(path)
    params, buffers = _model_parts(model)
    return write_checkpoint(path, Checkpoint("weights", params, buffers))


def _place(arrays: Mapping[str, np.ndarray], backend: Backend,
           like: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Host arrays onto ``backend``'s device (in the dtype of ``like[name]`` when given)."""
    out = {}
    for name, host in arrays.items():
        target = like[name] if like is not None else None
        if target is not None:
            adapter, device = adapter_of(target), compat.device(target)
            dtype = np.dtype(str(target.dtype).rsplit(".", 1)[-1])
            host = host.astype(dtype, copy=False)
        else:
            adapter, device = backend.adapter, backend.device
        out[name] = adapter.from_numpy(np.ascontiguousarray(host), device)
    return out


@dataclass
class _Shape:
    """A shape the architecture declares, and the class of the layer that declares it."""

    shape: tuple[int, ...]
    layer: str = ""


def _check_against(path: Any, what: str, stored: Mapping[str, np.ndarray],
                   expected: Mapping[str, Any], own_architecture: bool = True) -> None:
    """Names and shapes of ``stored`` equal those of the model's ``expected`` arrays.

    Against the file's own architecture a mismatch means the file is invalid; against a model
    the user built (``load_weights``) it means the file belongs to another model.
    """
    def fail(problem: str) -> CheckpointError:
        if own_architecture:
            return _fail(path, f"{problem} The file's tensors and its own architecture "
                               "disagree, so it is not as pn.save wrote it (edited, or made by "
                               "other software). Save the model again, or build the "
                               "architecture in code and read only the tensors with "
                               "model.load_weights(path).")
        return CheckpointError(f"{os.fspath(path)!s} does not fit this model: {problem} Build "
                               "the model it was saved from, or use pn.load(path) for a full "
                               "checkpoint.")

    missing = sorted(set(expected) - set(stored))
    unknown = sorted(set(stored) - set(expected))
    if missing or unknown:
        raise fail(f"its {what} do not match the model: missing {abridged(missing)}, unknown "
                   f"{abridged(unknown)}.")
    for name, a in stored.items():
        spec = expected[name]
        want = tuple(spec.shape)
        if tuple(a.shape) != want:
            declared = f" (declared by a {spec.layer})" if isinstance(spec, _Shape) else ""
            raise fail(f"{what[:-1]} {name!r} has shape {tuple(a.shape)} in the file but {want} "
                       f"in the model{declared}.")


def _arrays_in(node: Any, where: str) -> Iterator[tuple[str, np.ndarray]]:
    """(where, array) for every array inside a state tree, e.g. ("state.slots.0.kernel.m", m)."""
    if isinstance(node, np.ndarray):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _arrays_in(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _arrays_in(value, f"{where}[{i}]")


def _check_dtypes(path: Any, ckpt: Checkpoint) -> None:
    """Every parameter, buffer and optimizer slot is stored in the dtype the architecture
    declares: pn.save writes them so, and a cast would hide an edited file (int64 weights
    cast to float, or float64 values rounded to float32, would load as something never saved).
    Optimizer slots are per-parameter arrays made like their parameter (zeros_like)."""
    dtype = ckpt.architecture.get("dtype", "float32")
    if dtype not in _MODEL_FLOATS:
        raise _fail(path, f"its architecture declares dtype {abridged(dtype)}; models compute in "
                          f"{_one_of(_MODEL_FLOATS)}.")
    stored = [(f"parameter {k!r}", a) for k, a in ckpt.parameters.items()]
    stored += [(f"buffer {k!r}", a) for k, a in ckpt.buffers.items()]
    if ckpt.optimizer is not None:
        stored += [(f"optimizer state {where}", a)
                   for where, a in _arrays_in(ckpt.optimizer["state"], "state")]
    for what, a in stored:
        if a.dtype.name != dtype:
            raise _fail(path, f"{what} is stored as {a.dtype.name}, but the model its "
                              f"architecture describes computes in {dtype}: pn.save writes "
                              "every parameter, buffer and optimizer slot in the model's "
                              "dtype, so the file was edited or made by other software.")


def load_weights(model: Any, path: str | os.PathLike) -> Any:
    """Fill ``model``'s parameters and buffers from a checkpoint (weights or full model).

    Names and shapes must match exactly; the values (floating point, as every checkpoint
    stores them) are cast to the model's dtype and placed on the device of each parameter.
    Returns the model.
    """
    path = _as_path(path)
    ckpt = read_checkpoint(path)
    params, buffers = _model_parts(model)
    _check_against(path, "parameters", ckpt.parameters, params, own_architecture=False)
    _check_against(path, "buffers", ckpt.buffers, buffers, own_architecture=False)
    model.set_parameters(_place(ckpt.parameters, get_backend(), params))
    if buffers:
        model.set_buffers(_place(ckpt.buffers, get_backend(), buffers))
    return model


def _move_state(node: Any, backend: Backend) -> Any:
    if isinstance(node, np.ndarray):
        return backend.adapter.from_numpy(np.ascontiguousarray(node), backend.device)
    if isinstance(node, dict):
        return {k: _move_state(v, backend) for k, v in node.items()}
    if isinstance(node, list):
        return [_move_state(v, backend) for v in node]
    return node


def _declared_leaves(config: Any, prefix: str) -> list[tuple[str, Any]]:
    """(dotted prefix, unbuilt leaf layer) for every leaf in a layer config, at any depth.

    Containers are never constructed here: a Sequential builds (allocates) its layers as soon
    as it exists, so constructing one from a hostile file would allocate whatever the file
    claims before any check. Their children are read from their configs instead. Leaf layers
    are constructed, which only records their arguments; ``build`` is what allocates.
    """
    where = prefix[:-1]
    try:
        cls = registered_class(config)
        if not cls.is_container:
            return [(prefix, deserialize(config))]
        inner = config.get("config", {})
        children = cls.child_configs(inner if isinstance(inner, dict) else {})
    except NotImplementedError:
        raise ValueError(f"layer {where!r} is a {cls.__name__}, a container whose children "
                         "pn.load cannot read without building it (it defines no "
                         "child_configs). Build the model in code and call "
                         "model.load_weights(path).") from None
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"layer {where!r}: {err}") from None
    return [leaf for child, child_config in children
            for leaf in _declared_leaves(child_config, f"{prefix}{child}.")]


def _model_class() -> type:
    """The model class, Sequential, found by name in the layer registry: the model module
    sits above this one (it saves and loads through it), so io never imports it."""
    return registered_class({"class_name": "Sequential"})


def _architecture_leaves(architecture: dict) -> list[tuple[str, Any]]:
    """(dotted prefix, unbuilt leaf layer) for every leaf of a model's architecture.

    Raises ValueError (or TypeError, KeyError) saying which layer's config is wrong."""
    Sequential = _model_class()
    return [leaf for child, config in Sequential.child_configs(architecture)
            for leaf in _declared_leaves(config, f"{child}.")]


def _declared_specs(leaves: list[tuple[str, Any]]) -> dict[str, dict[str, _Shape]]:
    """Parameter and buffer shapes the unbuilt leaves declare, under dotted names as in the
    built model ("0.kernel", "1.block.0.bias")."""
    shapes: dict[str, dict[str, _Shape]] = {"parameters": {}, "buffers": {}}
    for prefix, leaf in leaves:
        kind = type(leaf).__name__
        for key, (shape, _) in leaf.parameter_specs().items():
            shapes["parameters"][prefix + key] = _Shape(tuple(shape), kind)
        for key, (shape, _) in leaf.buffer_specs().items():
            shapes["buffers"][prefix + key] = _Shape(tuple(shape), kind)
    return shapes


def _architecture_shapes(path: Any, architecture: dict) -> dict[str, dict[str, _Shape]]:
    """Parameter and buffer shapes the architecture declares, read without building anything.

    Names are dotted as in the built model ("0.kernel", "1.block.0.bias"), at any depth.
    """
    if not isinstance(architecture.get("layers"), list):
        raise _fail(path, "its architecture has no 'layers' list.")
    try:
        return _declared_specs(_architecture_leaves(architecture))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise _fail(path, f"its architecture cannot be built: {err}") from None


def load(path: str | os.PathLike, backend: str | None = None, device: Any = None) -> Any:
    """Rebuild a saved model on ``backend`` and ``device`` (the active backend when None).

    The parameters', buffers' and optimizer slots' names, shapes and dtypes are checked
    against the architecture before anything is built; then the architecture is built from its
    JSON (known layer classes only), and the parameters, buffers and optimizer state are
    placed on the device, and the random state (format version 2) handed to the model's
    ``load_random_state``. The epoch count saved with the model is available as
    ``model.epoch``.

    Containers inside the model are read from their configs (``child_configs``), so a custom
    container class loads this way when it defines that classmethod; otherwise build the model
    in code and call ``model.load_weights(path)``.

    Raises:
        CheckpointError: the file is invalid or does not match its own architecture.
    """
    path = _as_path(path)
    Sequential = _model_class()
    ckpt = read_checkpoint(path)
    if ckpt.kind != "model":
        raise CheckpointError(f"{os.fspath(path)} holds weights only (written by save_weights): "
                              "build the model, then call model.load_weights(path).")
    if backend is None:
        active = get_backend()
        target = active if device is None else make_backend(active.name, device)
    else:
        target = make_backend(backend, device)
    # Shapes and dtypes first, from the configs (nested containers included) and unbuilt leaf
    # layers: a hostile architecture that asks for huge parameters is refused before anything
    # is allocated.
    specs = _architecture_shapes(path, ckpt.architecture)
    for what, stored in (("parameters", ckpt.parameters), ("buffers", ckpt.buffers)):
        _check_against(path, what, stored, specs[what])
    _check_dtypes(path, ckpt)
    with use_backend(target.name, target.device):
        try:
            model = Sequential.from_config(ckpt.architecture)
        except (ValueError, TypeError, KeyError, RecursionError) as err:
            raise _fail(path, f"its architecture cannot be built: {err}") from None
        params, buffers = _model_parts(model)
        _check_against(path, "parameters", ckpt.parameters, params)
        _check_against(path, "buffers", ckpt.buffers, buffers)
        model.set_parameters(_place(ckpt.parameters, target, params))
        if buffers:
            model.set_buffers(_place(ckpt.buffers, target, buffers))
        if ckpt.optimizer is not None:
            try:
                opt = getattr(model, "optimizer", None)
                if opt is None or opt.get_config() != ckpt.optimizer["config"]:
                    opt = optimizers.get(ckpt.optimizer["config"])
                opt.build(model.parameters())
                state = _move_state(ckpt.optimizer["state"], target)
                opt.load_state_dict({**state, "config": ckpt.optimizer["config"]})
            except (ValueError, TypeError, KeyError) as err:
                raise _fail(path, f"its optimizer state does not fit the model: {err}") \
                    from None
            model.optimizer = opt
        if ckpt.random is not None and hasattr(model, "load_random_state"):
            try:
                model.load_random_state(ckpt.random)
            except (ValueError, TypeError, KeyError) as err:
                raise _fail(path, f"its random state does not fit the model: {err}") from None
    model.epoch = ckpt.epoch
    return model
