"""Checkpoints: save a model on one backend, load it on any other, and never trust the file.

The file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: an 8-byte
little-endian header length N, N bytes of JSON header (each tensor's dtype, shape and byte
offsets, plus string metadata), then the raw little-endian tensor bytes. No pickle, no code:
loading a file can build only registered layer classes from JSON and fill arrays with bytes.

What portanet stores (tensor names and metadata keys)::

    parameters/<name>     the model's trainable arrays ("parameters/0.kernel", ...)
    buffers/<name>        non-trainable state (BatchNorm running statistics)
    optimizer/<k>         the optimizer's state arrays, referenced from the "optimizer" JSON

    format                "portanet.checkpoint"       format_version   "1"
    kind                  "model" or "weights"        portanet_version "0.1.0"
    parameters, buffers   JSON lists of names, in model order
    architecture          JSON of model.get_config()              (kind "model" only)
    optimizer             JSON {"config": ..., "state": ...}      (kind "model", if any)
    epoch                 JSON int or null                         (kind "model" only)
    checksum              "sha256:<hex>" of every other metadata entry and every tensor

Writing is atomic: a temporary file in the target folder, ``fsync``, then ``os.replace``, so a
crash leaves the old file or the new one, never half of one.

Reading checks, in order: the header length against portanet's limit and the file size; then
safetensors' own validation in its Rust core (header JSON, known dtypes, offsets inside the
file, contiguous and non-overlapping, byte counts equal to shape x dtype size, no trailing
bytes); then portanet's: unique names, exactly the metadata keys above, parseable JSON, the
format and version, tensor names that match the name lists and the optimizer references (no
missing or unknown entries), and the checksum (which catches a flipped bit anywhere). Loading a
model then reads every parameter's and buffer's name and shape from the architecture without
building anything (leaf layers unbuilt, containers such as a nested Sequential read from their
configs, at any depth) and checks them against the tensors, so a file that claims huge layers
is refused before they are allocated; only then does it build the model from known layer
classes. Any failure raises :class:`CheckpointError`, saying what is wrong.

Examples:
    >>> import portanet as pn
    >>> model.save("digits.safetensors")                               # doctest: +SKIP
    >>> model = pn.load("digits.safetensors", backend="torch")        # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import array_api_compat as compat
import numpy as np
import safetensors
import safetensors.numpy

from . import optimizers
from ._version import __version__
from .backend import Backend, adapter_of, get_backend, make_backend, use_backend
from .devices import to_numpy
from .layers.base import deserialize, registered_class

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "Checkpoint",
    "CheckpointError",
    "load",
    "load_weights",
    "read_checkpoint",
    "save",
    "save_weights",
    "write_checkpoint",
]

FORMAT = "portanet.checkpoint"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 16 * 2**20
"""portanet's header limit (16 MiB); safetensors' own is 100 MB. Real headers are kilobytes."""

_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}
_GROUPS = ("parameters", "buffers", "optimizer")
_MODEL_KEYS = {"format", "format_version", "kind", "portanet_version", "parameters", "buffers",
               "architecture", "optimizer", "epoch", "checksum"}
_WEIGHTS_KEYS = {"format", "format_version", "kind", "portanet_version", "parameters",
                 "buffers", "checksum"}
_TENSOR_REF = "__tensor__"


class CheckpointError(ValueError):
    """A file that is not a valid portanet checkpoint (the message says what is wrong)."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint, on the host (NumPy arrays).

    Attributes:
        kind: "model" (architecture, weights, optimizer, epoch) or "weights" (weights only).
        parameters, buffers: name -> NumPy array, in model order.
        architecture: the model's ``get_config()`` (kind "model").
        optimizer: {"config": optimizer config, "state": state dict with NumPy arrays} or None.
        epoch: epochs completed when saved, or None.
    """

    kind: str
    parameters: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    architecture: dict | None = None
    optimizer: dict | None = None
    epoch: int | None = None
    portanet_version: str = ""


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _version() -> str:
    return __version__


def _host(a: Any, what: str) -> np.ndarray:
    """A C-contiguous NumPy copy of a backend array (or NumPy array), with a supported dtype."""
    host = np.ascontiguousarray(to_numpy(a) if not isinstance(a, np.ndarray) else a)
    if host.dtype.name not in _DTYPES:
        raise TypeError(f"{what} has dtype {host.dtype.name}; checkpoints hold "
                        f"{sorted(_DTYPES)}.")
    return host


def _split_state(state: Any, tensors: dict[str, np.ndarray], path: str = "state") -> Any:
    """The optimizer state as JSON, each array replaced by {"__tensor__": "optimizer/<k>"}."""
    if isinstance(state, Mapping):
        out = {}
        for key, value in state.items():
            if not isinstance(key, str):
                raise TypeError(f"optimizer state keys must be strings; {path} has key {key!r}.")
            out[key] = _split_state(value, tensors, f"{path}.{key}")
        return out
    if isinstance(state, (list, tuple)):
        return [_split_state(v, tensors, f"{path}[{i}]") for i, v in enumerate(state)]
    if state is None or isinstance(state, (bool, int, str)):
        return state
    if isinstance(state, float):
        if not math.isfinite(state):
            return {"__float__": repr(state)}  # JSON has no NaN/Inf; keep them exact
        return state
    try:
        adapter_of(state)
    except TypeError:
        raise TypeError(f"optimizer state entry {path} is a {type(state).__name__}; checkpoints "
                        "hold arrays, numbers, strings, lists and dicts.") from None
    name = f"optimizer/{sum(k.startswith('optimizer/') for k in tensors)}"
    tensors[name] = _host(state, path)
    return {_TENSOR_REF: name}


def _digest(metadata: Mapping[str, str], tensors: Mapping[str, np.ndarray]) -> str:
    """sha256 over every metadata entry but the checksum, then every tensor's name, dtype,
    shape and little-endian bytes, all in sorted order (so it does not depend on file layout)."""
    h = hashlib.sha256()
    for key in sorted(k for k in metadata if k != "checksum"):
        h.update(key.encode() + b"\0" + metadata[key].encode() + b"\0")
    for name in sorted(tensors):
        a = tensors[name]
        h.update(f"{name}\0{a.dtype.name}\0{list(a.shape)}\0".encode())
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return "sha256:" + h.hexdigest()


def write_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> str:
    """Write ``checkpoint`` to ``path`` atomically. Returns the path as a string."""
    if checkpoint.kind not in ("model", "weights"):
        raise ValueError(f"checkpoint kind must be 'model' or 'weights', received "
                         f"{checkpoint.kind!r}.")
    tensors: dict[str, np.ndarray] = {}
    for group in ("parameters", "buffers"):
        for name, value in getattr(checkpoint, group).items():
            tensors[f"{group}/{name}"] = _host(value, f"{group[:-1]} {name!r}")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": checkpoint.kind,
        "portanet_version": _version(),
        "parameters": json.dumps(list(checkpoint.parameters)),
        "buffers": json.dumps(list(checkpoint.buffers)),
    }
    if checkpoint.kind == "model":
        optimizer = None
        if checkpoint.optimizer is not None:
            optimizer = {"config": checkpoint.optimizer.get("config"),
                         "state": _split_state(checkpoint.optimizer.get("state"), tensors)}
        epoch = checkpoint.epoch
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)
                                  or epoch < 0):
            raise ValueError(f"epoch must be an int >= 0 or None, received {epoch!r}.")
        try:
            metadata["architecture"] = json.dumps(checkpoint.architecture, allow_nan=False)
            metadata["optimizer"] = json.dumps(optimizer, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"the model or optimizer config is not JSON-serializable ({err}); "
                            "get_config() must return plain dicts, lists, numbers and "
                            "strings.") from None
        metadata["epoch"] = json.dumps(epoch)
    metadata["checksum"] = _digest(metadata, tensors)
    return _atomic_write(Path(path), tensors, metadata)


def _atomic_write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(folder)!r} does not "
                                "exist. Create it first.")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        safetensors.numpy.save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)
    return str(path)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------------
def _fail(path: Any, problem: str) -> CheckpointError:
    return CheckpointError(f"{os.fspath(path)!s} is not a valid portanet checkpoint: {problem}")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate names {dup} in the header")
    return dict(pairs)


def _json_field(path: Any, metadata: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key], object_pairs_hook=_unique_pairs,
                          parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise _fail(path, f"metadata entry {key!r} is not valid JSON ({err}).") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _join_state(path: Any, node: Any, tensors: Mapping[str, np.ndarray], used: set[str]) -> Any:
    if isinstance(node, dict):
        if set(node) == {_TENSOR_REF}:
            ref = node[_TENSOR_REF]
            if not isinstance(ref, str) or ref not in tensors or not ref.startswith("optimizer/"):
                raise _fail(path, f"the optimizer state refers to a tensor {ref!r} that is not "
                                  "in the file.")
            if ref in used:
                raise _fail(path, f"the optimizer state refers to tensor {ref!r} twice.")
            used.add(ref)
            return tensors[ref]
        if set(node) == {"__float__"}:
            if node["__float__"] not in ("nan", "inf", "-inf"):
                raise _fail(path, f"bad float {node['__float__']!r} in the optimizer state.")
            return float(node["__float__"])
        return {k: _join_state(path, v, tensors, used) for k, v in node.items()}
    if isinstance(node, list):
        return [_join_state(path, v, tensors, used) for v in node]
    return node


def _read_header_length(path: Path, size: int, max_header_bytes: int) -> int:
    if size < 8:
        raise _fail(path, f"the file has {size} bytes, fewer than the 8-byte header length "
                          "that starts every safetensors file (truncated or empty).")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    if n > max_header_bytes:
        raise _fail(path, f"its header claims {n:,} bytes, more than portanet's limit of "
                          f"{max_header_bytes:,} (MAX_HEADER_BYTES); the file is corrupt or "
                          "hostile. Raise max_header_bytes only for a file you trust.")
    if 8 + n > size:
        raise _fail(path, f"its header claims {n:,} bytes but only {size - 8:,} follow the "
                          "length field: the file is truncated.")
    return n


def read_checkpoint(path: str | os.PathLike, max_header_bytes: int = MAX_HEADER_BYTES
                    ) -> Checkpoint:
    """Read and fully validate a checkpoint file; returns its contents as NumPy arrays.

    Raises:
        FileNotFoundError: there is no such file.
        CheckpointError: anything about the file is wrong (see the module docstring).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}.")
    if not path.is_file():
        raise _fail(path, "it is not a regular file.")
    size = path.stat().st_size
    n = _read_header_length(path, size, max_header_bytes)
    data = path.read_bytes()
    if len(data) != size:
        raise _fail(path, "the file changed while it was being read.")
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as err:  # SafetensorError and the errors its Python layer raises
        raise _fail(path, f"safetensors rejected it: {err}.") from None
    try:
        header = json.loads(data[8:8 + n], object_pairs_hook=_unique_pairs,
                            parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"its header is not valid JSON ({err}).") from None
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _fail(path, "it is a safetensors file without portanet's metadata (format "
                          f"{FORMAT!r}); it was not written by portanet.save.")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise _fail(path, f"format_version {metadata.get('format_version')!r} is not an "
                          "integer.") from None
    if version > FORMAT_VERSION:
        raise _fail(path, f"it has format version {version}, newer than this portanet "
                          f"({_version()}) reads (version {FORMAT_VERSION}). Upgrade portanet.")
    if version < 1:
        raise _fail(path, f"format_version {version} is not a known version.")
    kind = metadata.get("kind")
    expected_keys = {"model": _MODEL_KEYS, "weights": _WEIGHTS_KEYS}.get(kind)
    if expected_keys is None:
        raise _fail(path, f"kind {kind!r} is neither 'model' nor 'weights'.")
    if set(metadata) != expected_keys:
        missing = sorted(expected_keys - set(metadata))
        extra = sorted(set(metadata) - expected_keys)
        raise _fail(path, f"metadata keys differ from a {kind} checkpoint's: missing {missing}, "
                          f"unknown {extra}.")
    checksum = _digest(metadata, tensors)
    if metadata["checksum"] != checksum:
        raise _fail(path, "its checksum does not match its contents: the file was modified or "
                          "corrupted (e.g. a flipped bit) after it was written.")

    for name, a in tensors.items():
        if a.dtype.name not in _DTYPES:
            raise _fail(path, f"tensor {name!r} has dtype {a.dtype.name}; portanet reads "
                              f"{sorted(_DTYPES)}.")
        if name.split("/", 1)[0] not in _GROUPS or "/" not in name:
            raise _fail(path, f"unknown tensor {name!r}: portanet writes only "
                              "parameters/..., buffers/... and optimizer/... entries.")
    groups: dict[str, dict[str, np.ndarray]] = {}
    for group in ("parameters", "buffers"):
        names = _json_field(path, metadata, group)
        if not isinstance(names, list) or not all(isinstance(s, str) for s in names) or \
                len(set(names)) != len(names):
            raise _fail(path, f"metadata {group!r} must be a list of unique names.")
        stored = {k.split("/", 1)[1] for k in tensors if k.startswith(group + "/")}
        if stored != set(names):
            raise _fail(path, f"the {group} listed in the metadata ({sorted(names)}) differ from "
                              f"the tensors stored ({sorted(stored)}).")
        groups[group] = {name: tensors[f"{group}/{name}"] for name in names}

    ckpt = Checkpoint(kind, groups["parameters"], groups["buffers"],
                      portanet_version=str(metadata["portanet_version"]))
    stored_optimizer = {k for k in tensors if k.startswith("optimizer/")}
    if kind == "weights":
        if stored_optimizer:
            raise _fail(path, f"a weights-only file holds optimizer tensors "
                              f"{sorted(stored_optimizer)}.")
        return ckpt
    ckpt.architecture = _json_field(path, metadata, "architecture")
    if not isinstance(ckpt.architecture, dict):
        raise _fail(path, "the architecture is not a JSON object.")
    epoch = _json_field(path, metadata, "epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0):
        raise _fail(path, f"epoch must be an int >= 0 or null, found {epoch!r}.")
    ckpt.epoch = epoch
    optimizer = _json_field(path, metadata, "optimizer")
    used: set[str] = set()
    if optimizer is not None:
        if not isinstance(optimizer, dict) or set(optimizer) != {"config", "state"}:
            raise _fail(path, "the optimizer entry must be {'config': ..., 'state': ...}.")
        try:
            state = _join_state(path, optimizer["state"], tensors, used)
        except RecursionError:
            raise _fail(path, "the optimizer state is nested too deeply.") from None
        optimizer = {"config": optimizer["config"], "state": state}
    if used != stored_optimizer:
        raise _fail(path, f"optimizer tensors {sorted(stored_optimizer - used)} are not "
                          "referenced by the optimizer state.")
    ckpt.optimizer = optimizer
    return ckpt


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def _model_parts(model: Any) -> tuple[dict, dict]:
    params = model.parameters()
    buffers = model.buffers() if hasattr(model, "buffers") else {}
    return dict(params), dict(buffers)


def save(model: Any, path: str | os.PathLike, epoch: int | None = None,
         include_optimizer: bool = True) -> str:
    """Save architecture, parameters, buffers, optimizer state and ``epoch`` to ``path``.

    Arrays are copied to the host (one transfer per array) and written atomically.
    ``pn.load(path, backend=..., device=...)`` rebuilds the model anywhere.

    Returns:
        The path written.
    """
    params, buffers = _model_parts(model)
    optimizer = getattr(model, "optimizer", None) if include_optimizer else None
    opt_entry = None
    if optimizer is not None:
        state = dict(optimizer.state_dict())
        config = state.pop("config", None) or optimizer.get_config()
        opt_entry = {"config": config, "state": state}
    if epoch is None:
        epoch = getattr(model, "epoch", None)
        epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    ckpt = Checkpoint("model", params, buffers, model.get_config(), opt_entry, epoch)
    return write_checkpoint(path, ckpt)


def save_weights(model: Any, path: str | os.PathLike) -> str:
    """Save only the parameters and buffers (restore with :func:`load_weights`)."""
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
        raise fail(f"its {what} do not match the model: missing {missing}, unknown {unknown}.")
    for name, a in stored.items():
        spec = expected[name]
        want = tuple(spec.shape)
        if tuple(a.shape) != want:
            declared = f" (declared by a {spec.layer})" if isinstance(spec, _Shape) else ""
            raise fail(f"{what[:-1]} {name!r} has shape {tuple(a.shape)} in the file but {want} "
                       f"in the model{declared}.")


def load_weights(model: Any, path: str | os.PathLike) -> Any:
    """Fill ``model``'s parameters and buffers from a checkpoint (weights or full model).

    Names and shapes must match exactly; values are cast to the model's dtype and placed on
    the device of each parameter. Returns the model.
    """
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


def _architecture_shapes(path: Any, architecture: dict) -> dict[str, dict[str, _Shape]]:
    """Parameter and buffer shapes the architecture declares, read without building anything.

    Names are dotted as in the built model ("0.kernel", "1.block.0.bias"), at any depth.
    """
    Sequential = _model_class()
    if not isinstance(architecture.get("layers"), list):
        raise _fail(path, "its architecture has no 'layers' list.")
    shapes: dict[str, dict[str, _Shape]] = {"parameters": {}, "buffers": {}}
    try:
        leaves = [leaf for child, config in Sequential.child_configs(architecture)
                  for leaf in _declared_leaves(config, f"{child}.")]
        for prefix, leaf in leaves:
            kind = type(leaf).__name__
            for key, (shape, _) in leaf.parameter_specs().items():
                shapes["parameters"][prefix + key] = _Shape(tuple(shape), kind)
            for key, (shape, _) in leaf.buffer_specs().items():
                shapes["buffers"][prefix + key] = _Shape(tuple(shape), kind)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        raise _fail(path, f"its architecture cannot be built: {err}") from None
    return shapes


def load(path: str | os.PathLike, backend: str | None = None, device: Any = None) -> Any:
    """Rebuild a saved model on ``backend`` and ``device`` (the active backend when None).

    The parameters' and buffers' names and shapes are checked against the architecture before
    anything is built; then the architecture is built from its JSON (known layer classes only),
    and the parameters, buffers and optimizer state are placed on the device. The epoch count
    saved with the model is available as ``model.epoch``.

    Containers inside the model are read from their configs (``child_configs``), so a custom
    container class loads this way when it defines that classmethod; otherwise build the model
    in code and call ``model.load_weights(path)``.

    Raises:
        CheckpointError: the file is invalid or does not match its own architecture.
    """
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
    # Shapes first, from the configs (nested containers included) and unbuilt leaf layers: a
    # hostile architecture that asks for huge parameters is refused before anything is
    # allocated.
    specs = _architecture_shapes(path, ckpt.architecture)
    for what, stored in (("parameters", ckpt.parameters), ("buffers", ckpt.buffers)):
        _check_against(path, what, stored, specs[what])
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
    model.epoch = ckpt.epoch
    return model
