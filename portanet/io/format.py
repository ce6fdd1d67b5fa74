"""The checkpoint file format: what a portanet file holds, how it is written, how it is checked.

This module knows files, not models: it writes a :class:`Checkpoint` (host arrays and JSON) to
disk and reads one back, validating every byte. Turning a model into a Checkpoint and back
(architecture checks, dtypes, placing arrays on a device) is :mod:`portanet.io.saving`.

The file is a `safetensors <https://github.com/huggingface/safetensors>`_ file: an 8-byte
little-endian header length N, N bytes of JSON header (each tensor's dtype, shape and byte
offsets, plus string metadata), then the raw little-endian tensor bytes. No pickle, no code:
reading a file can only parse JSON and fill arrays with bytes.

What portanet stores (tensor names and metadata keys)::

    parameters/<name>     the model's trainable arrays ("parameters/0.kernel", ...), floating
    buffers/<name>        non-trainable state (BatchNorm running statistics), floating
    optimizer/<k>         the optimizer's state arrays, referenced from the "optimizer" JSON
    random/<k>            uint8 arrays of the generators' states, referenced from "random"

    format                "portanet.checkpoint"       format_version   "3"
    kind                  "model" or "weights"        portanet_version "0.1.0"
    parameters, buffers   JSON lists of names, in model order
    architecture          JSON of model.get_config()              (kind "model" only)
    optimizer             JSON {"config": ..., "state": ...}      (kind "model", or null)
    epoch                 JSON int or null                         (kind "model" only)
    random                JSON of model.random_state(), or null    (kind "model", version >= 2)
    checksum              "sha256:<hex>" of every other metadata entry and every tensor

In the "optimizer" and "random" JSON each array is replaced by ``{"__tensor__": "<group>/<k>"}``.
Version 1 files (no "random" entry) still load.

Writing is atomic: a temporary file ``.<name>.<8 random characters>.tmp`` in the target folder
(the name cut and tagged with a hash where the file system's name limit requires), ``fsync``,
then ``os.replace``, so a crash leaves the old file or the new one, never half of one. A process
killed mid-write (SIGKILL) leaves its temporary file behind; the next save to the same target
removes such files, those older than its own write and not locked by a live writer.

Reading checks, in order, the cheap ones first (none costs more than sorting the entries):

1. the file: a regular file, the header length against portanet's limit and the file size;
2. the header alone (8 + N bytes read): UTF-8 JSON, an object without duplicate names;
   portanet's metadata (format, version, kind, exactly the keys of that kind and version);
   each entry's dtype (a known one; floating for parameters and buffers, uint8 for random) and
   byte offsets; the file size equals 8 + N + the largest end offset (no trailing bytes, no
   truncation), so a padded or cut file is refused without reading its data; the tensor names
   match the name lists, the optimizer's and random state's references (no missing, unknown,
   unreferenced or twice-referenced entries); every JSON entry parses (no NaN/Infinity);
3. the data, read exactly as far as the header accounts for: safetensors' own validation in
   its Rust core (offsets contiguous and non-overlapping, byte counts equal to shape x dtype
   size), then the checksum (which catches a flipped bit anywhere).

Any failure raises :class:`CheckpointError`, saying what is wrong.

Examples:
    >>> import pathlib, tempfile
    >>> import numpy as np
    >>> from portanet.io import Checkpoint, read_checkpoint, write_checkpoint
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_checkpoint(pathlib.Path(folder) / "w.safetensors",
    ...                             Checkpoint("weights", {"0.kernel": np.ones((2, 3))}))
    ...     ckpt = read_checkpoint(path)
    >>> ckpt.kind, ckpt.parameters["0.kernel"].shape
    ('weights', (2, 3))
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from .._version import __version__
from ..backend import adapter_of
from ..devices import to_numpy
from ..errors import abridged

try:  # POSIX: a live writer holds a lock on its temporary file, so cleanup never removes it
    import fcntl
except ImportError:  # Windows: only the age of a temporary file tells that it is stale
    fcntl = None

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_HEADER_BYTES",
    "Checkpoint",
    "CheckpointError",
    "read_checkpoint",
    "write_checkpoint",
]

FORMAT = "portanet.checkpoint"
FORMAT_VERSION = 3
"""1: the first format. 2: adds the ``random`` entry (every generator's state). 3: every config
in ``architecture`` and ``optimizer`` has the one shape ``{"class_name", "config"}``
(portanet.registry); the readers still take versions 1 and 2 and their configs' shapes."""
"""Version 2 added the "random" metadata entry and the random/<k> tensors; 1 still loads."""
MAX_HEADER_BYTES = 16 * 2**20
"""portanet's header limit (16 MiB); safetensors' own is 100 MB. Real headers are kilobytes."""

# safetensors' dtype codes -> NumPy names, for the dtypes portanet reads
_DTYPE_CODES = {"F16": "float16", "F32": "float32", "F64": "float64", "I8": "int8",
                "I16": "int16", "I32": "int32", "I64": "int64", "U8": "uint8", "BOOL": "bool"}
_DTYPES = set(_DTYPE_CODES.values())
_FLOATING = ("float16", "float32", "float64")
# The dtypes each tensor group may hold. Parameters and buffers are floating (layers compute
# in floating point); optimizer slots are checked against the model on load (zeros_like of a
# parameter); a generator's state is bytes.
_GROUP_DTYPES = {"parameters": _FLOATING, "buffers": _FLOATING,
                 "optimizer": tuple(sorted(_DTYPES)), "random": ("uint8",)}
_WEIGHTS_KEYS = {"format", "format_version", "kind", "portanet_version", "parameters",
                 "buffers", "checksum"}
_MODEL_KEYS_V1 = _WEIGHTS_KEYS | {"architecture", "optimizer", "epoch"}
_MODEL_KEYS = _MODEL_KEYS_V1 | {"random"}
_TENSOR_REF = "__tensor__"
_TEMP_RANDOM = 8  # random characters in a temporary file's name
_TEMP_SUFFIX = ".tmp"


def _expected_keys(kind: str, version: int) -> set[str] | None:
    """The metadata keys of a ``kind`` checkpoint of format ``version`` (None: unknown kind)."""
    if kind == "weights":
        return _WEIGHTS_KEYS
    if kind == "model":
        return _MODEL_KEYS_V1 if version == 1 else _MODEL_KEYS
    return None


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
        portanet_version: the version that wrote the file ("" for one not yet written).
        random: the model's ``random_state()`` (ints, strings, lists, dicts and NumPy uint8
            arrays), or None (kind "model"; always None in version-1 files).
    """

    kind: str
    parameters: dict[str, np.ndarray]
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    architecture: dict | None = None
    optimizer: dict | None = None
    epoch: int | None = None
    portanet_version: str = ""
    random: dict | None = None


def _as_path(path: Any) -> Path:
    """Every public function takes a str or an os.PathLike, with ``~`` expanded."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(name, str):
        raise TypeError(f"a checkpoint path is a str or an os.PathLike such as pathlib.Path, "
                        f"received {abridged(path)} ({type(path).__name__}).")
    return Path(name).expanduser()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _version() -> str:
    return __version__


def _host(a: Any, what: str, allowed: tuple[str, ...] = tuple(sorted(_DTYPES))) -> np.ndarray:
    """A C-contiguous NumPy copy of a backend array (or NumPy array) with an ``allowed`` dtype."""
    host = np.ascontiguousarray(to_numpy(a) if not isinstance(a, np.ndarray) else a)
    if host.dtype.name not in allowed:
        raise TypeError(f"{what} has dtype {host.dtype.name}; checkpoints hold {list(allowed)} "
                        "there.")
    return host


def _split_state(state: Any, group: str, tensors: dict[str, np.ndarray]) -> Any:
    """``state`` as JSON, each array moved into ``tensors`` as "<group>/<k>" (k = 0, 1, ...)
    and replaced by {"__tensor__": "<group>/<k>"}; non-finite floats as {"__float__": "nan"}.

    Used for the optimizer state (group "optimizer") and the random state (group "random").
    """
    count = 0

    def split(node: Any, where: str) -> Any:
        nonlocal count
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                if not isinstance(key, str):
                    raise TypeError(f"{group} state keys must be strings; {where} has key "
                                    f"{key!r}.")
                out[key] = split(value, f"{where}.{key}")
            return out
        if isinstance(node, (list, tuple)):
            return [split(v, f"{where}[{i}]") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, str)):
            return node
        if isinstance(node, float):
            if not math.isfinite(node):
                return {"__float__": repr(node)}  # JSON has no NaN/Inf; keep them exact
            return node
        try:
            adapter_of(node)
        except TypeError:
            raise TypeError(f"{group} state entry {where} is a {type(node).__name__}; "
                            "checkpoints hold arrays, numbers, strings, lists and dicts."
                            ) from None
        name = f"{group}/{count}"
        count += 1
        tensors[name] = _host(node, f"{group} state entry {where}", _GROUP_DTYPES[group])
        return {_TENSOR_REF: name}

    return split(state, "state" if group == "optimizer" else group)


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
    """Write ``checkpoint`` to ``path`` atomically (format version 3). Returns the path.

    Only the format is checked here (names, dtypes, JSON); :func:`portanet.io.save` also
    checks that the architecture can be rebuilt.
    """
    path = _as_path(path)
    if checkpoint.kind not in ("model", "weights"):
        raise ValueError(f"checkpoint kind must be 'model' or 'weights', received "
                         f"{checkpoint.kind!r}.")
    tensors: dict[str, np.ndarray] = {}
    for group in ("parameters", "buffers"):
        for name, value in getattr(checkpoint, group).items():
            tensors[f"{group}/{name}"] = _host(value, f"{group[:-1]} {name!r}",
                                               _GROUP_DTYPES[group])
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
                         "state": _split_state(checkpoint.optimizer.get("state"), "optimizer",
                                               tensors)}
        if checkpoint.random is not None and not isinstance(checkpoint.random, Mapping):
            raise TypeError(f"the random state must be a dict or None, received "
                            f"{type(checkpoint.random).__name__}.")
        random = None if checkpoint.random is None else _split_state(checkpoint.random,
                                                                      "random", tensors)
        epoch = checkpoint.epoch
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)
                                  or epoch < 0):
            raise ValueError(f"epoch must be an int >= 0 or None, received {epoch!r}.")
        try:
            metadata["architecture"] = json.dumps(checkpoint.architecture, allow_nan=False)
            metadata["optimizer"] = json.dumps(optimizer, allow_nan=False)
            metadata["random"] = json.dumps(random, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"the model, optimizer or random config is not JSON-serializable "
                            f"({err}); get_config(), state_dict() and random_state() must "
                            "return plain dicts, lists, numbers and strings.") from None
        metadata["epoch"] = json.dumps(epoch)
    metadata["checksum"] = _digest(metadata, tensors)
    return _atomic_write(path, tensors, metadata)


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (255 if unknown)."""
    try:
        limit = int(os.pathconf(folder, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer
        return 255
    return limit if limit > 0 else 255  # -1: the file system states no limit


def _temp_prefix(name: str, name_max: int) -> str:
    """The start of the temporary names for target ``name``: ".<name>.".

    The full temporary name, prefix + 8 random characters + ".tmp", must fit the file
    system's limit. Where ``name`` is too long for that, it is cut (at a character boundary)
    and tagged with a hash of the whole name, ".<start of name>~<8 hex>.", so two long names
    that share their start still have distinct temporary files.
    """
    budget = name_max - 2 - _TEMP_RANDOM - len(_TEMP_SUFFIX)  # the two dots, random, suffix
    if len(os.fsencode(name)) <= budget:
        return f".{name}."
    tag = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    stem = name
    while stem and len(os.fsencode(stem)) > budget - 1 - len(tag):
        stem = stem[:-1]
    return f".{stem}~{tag}."


def _stale_pattern(prefix: str) -> re.Pattern:
    # [a-z0-9_]: the random characters of this module's names (hex) and of tempfile's, which
    # earlier versions used with the same prefix, so their leftovers are found too.
    return re.compile(f"{re.escape(prefix)}[a-z0-9_]{{{_TEMP_RANDOM}}}"
                      f"{re.escape(_TEMP_SUFFIX)}\\Z")


def _create_temp(folder: Path, prefix: str) -> tuple[int, Path]:
    """Create a fresh temporary file (O_EXCL) and lock it where locks exist.

    Mode 0666 less the umask, as ``open(path, "w")`` gives: the checkpoint that replaces the
    target is as readable as any file the user writes (mkstemp's 0600 made it private)."""
    for _ in range(100):
        tmp = folder / f"{prefix}{secrets.token_hex(_TEMP_RANDOM // 2)}{_TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            # A fresh file, so the lock is free; where the file system has no locks (some
            # network mounts) the write goes on, and cleanup relies on age alone.
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd, tmp
    raise FileExistsError(f"could not create a temporary file {prefix}*{_TEMP_SUFFIX} in "
                          f"{str(folder)!r}: 100 random names were all taken.")


def _held_by_live_writer(path: str) -> bool:
    """True if a running process holds the lock on ``path`` (a killed one holds none)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return True  # cannot look: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by a live process
        return True
    except OSError:  # no locks on this file system: its age alone decides, as on Windows
        return False
    finally:
        os.close(fd)  # closing releases the probe's own lock
    return False


def _remove_stale_temps(folder: Path, prefix: str, own: Path) -> None:
    """Remove the temporary files of this target that a killed save left behind.

    A file is removed only if its name has this target's pattern, it is a regular file older
    than ``own`` (the current write's temporary file), and no live process holds its lock.
    Another target's files, and files with other names, are never touched.
    """
    pattern = _stale_pattern(prefix)
    started = os.stat(own).st_mtime_ns
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == own.name or not pattern.match(entry.name):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and \
                        entry.stat(follow_symlinks=False).st_mtime_ns < started and \
                        not _held_by_live_writer(entry.path):
                    os.unlink(entry.path)


def _atomic_write(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot save to {str(path)!r}: folder {str(folder)!r} does not "
                                "exist. Create it first.")
    name_max = _name_max(folder)
    if len(os.fsencode(path.name)) > name_max:
        raise ValueError(f"cannot save to {str(path)!r}: the file name has "
                         f"{len(os.fsencode(path.name))} bytes, but this file system allows at "
                         f"most {name_max}. Choose a shorter name.")
    prefix = _temp_prefix(path.name, name_max)
    fd, tmp = _create_temp(folder, prefix)
    try:
        if fcntl is None:  # Windows cannot rename a file that is still open
            os.close(fd)
            fd = -1
        _remove_stale_temps(folder, prefix, tmp)  # before writing: frees the space they hold
        # The bytes go into the file created above (safetensors' save_file would replace it by
        # a new one: mode 0600, and not the file the lock is on).
        data = safetensors.numpy.save(tensors, metadata=metadata)
        with (open(fd, "wb", closefd=False) if fd >= 0 else open(tmp, "r+b")) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        del data
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock
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
    """A JSON object without duplicate names (one pass: a dict drops duplicates silently)."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = sorted({k for k, _ in pairs if k in seen or seen.add(k)})
        raise ValueError(f"duplicate names {abridged(dup)}")
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _json_field(path: Any, metadata: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key], object_pairs_hook=_unique_pairs,
                          parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as err:
        raise _fail(path, f"metadata entry {key!r} is not valid JSON ({err}).") from None


@dataclass(frozen=True)
class _Ref:
    """A validated reference to a tensor, replaced by the array once the data is read."""

    name: str


def _parse_refs(path: Any, node: Any, group: str, entries: Mapping[str, Any],
                used: set[str]) -> Any:
    """The "optimizer" or "random" JSON with each {"__tensor__": name} checked (a ``group``
    tensor in the header, not referenced before: ``used`` collects them) and replaced by a
    :class:`_Ref`; {"__float__": "nan"} becomes the float."""
    if isinstance(node, dict):
        if set(node) == {_TENSOR_REF}:
            ref = node[_TENSOR_REF]
            if not isinstance(ref, str) or ref not in entries or \
                    not ref.startswith(group + "/"):
                raise _fail(path, f"the {group} state refers to a tensor {abridged(ref)} that is "
                                  "not in the file.")
            if ref in used:
                raise _fail(path, f"the {group} state refers to tensor {ref!r} twice.")
            used.add(ref)
            return _Ref(ref)
        if set(node) == {"__float__"}:
            if node["__float__"] not in ("nan", "inf", "-inf"):
                raise _fail(path, f"bad float {abridged(node['__float__'])} in the {group} "
                                  "state.")
            return float(node["__float__"])
        return {k: _parse_refs(path, v, group, entries, used) for k, v in node.items()}
    if isinstance(node, list):
        return [_parse_refs(path, v, group, entries, used) for v in node]
    return node


def _fill(node: Any, tensors: Mapping[str, np.ndarray]) -> Any:
    """Replace every :class:`_Ref` in ``node`` by its array."""
    if isinstance(node, _Ref):
        return tensors[node.name]
    if isinstance(node, dict):
        return {k: _fill(v, tensors) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, tensors) for v in node]
    return node


def _state_with_refs(path: Any, metadata: Mapping[str, str], group: str,
                     entries: Mapping[str, Any]) -> Any:
    """The parsed "optimizer" or "random" entry, with its tensor references checked (every
    tensor of that group referenced exactly once) and replaced by :class:`_Ref`."""
    value = _json_field(path, metadata, group)
    used: set[str] = set()
    if group == "optimizer" and value is not None and (not isinstance(value, dict) or
                                                       set(value) != {"config", "state"}):
        raise _fail(path, "the optimizer entry must be {'config': ..., 'state': ...}.")
    if group == "random" and value is not None and not isinstance(value, dict):
        raise _fail(path, f"the random entry must be a JSON object or null, found "
                          f"{type(value).__name__}.")
    try:
        if group == "optimizer" and value is not None:
            value = {"config": value["config"],
                     "state": _parse_refs(path, value["state"], group, entries, used)}
        elif value is not None:
            value = _parse_refs(path, value, group, entries, used)
    except RecursionError:
        raise _fail(path, f"the {group} state is nested too deeply.") from None
    stored = {k for k in entries if k.startswith(group + "/")}
    if used != stored:
        raise _fail(path, f"{group} tensors {abridged(sorted(stored - used))} are not "
                          f"referenced by the {group} state.")
    return value


def _read_header_length(path: Path, f: Any, size: int, max_header_bytes: int) -> int:
    if size < 8:
        raise _fail(path, f"the file has {size} bytes, fewer than the 8-byte header length "
                          "that starts every safetensors file (truncated or empty).")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > max_header_bytes:
        raise _fail(path, f"its header claims {n:,} bytes, more than portanet's limit of "
                          f"{max_header_bytes:,} (MAX_HEADER_BYTES); the file is corrupt or "
                          "hostile. Raise max_header_bytes only for a file you trust.")
    if 8 + n > size:
        raise _fail(path, f"its header claims {n:,} bytes but only {size - 8:,} follow the "
                          "length field: the file is truncated.")
    return n


def _one_of(names: tuple[str, ...]) -> str:
    """"a", "a or b", "a, b or c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _count(k: int, unit: str) -> str:
    return f"{k:,} {unit}" + ("" if k == 1 else "s")


def _parse_header(path: Path, text: bytes) -> dict:
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_unique_pairs,
                            parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise _fail(path, "its header is not UTF-8 text.") from None
    except (ValueError, RecursionError) as err:
        raise _fail(path, f"its header is not valid JSON ({err}).") from None
    if not isinstance(header, dict):
        raise _fail(path, f"its header is a JSON {type(header).__name__}, not an object.")
    return header


def _portanet_metadata(path: Path, header: dict) -> tuple[dict, int, str]:
    """The metadata, its format version and kind, with exactly the keys of that kind."""
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise _fail(path, "it is a safetensors file without portanet's metadata (format "
                          f"{FORMAT!r}); it was not written by portanet.save.")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise _fail(path, "its metadata values must all be strings (safetensors metadata).")
    try:
        version = int(metadata.get("format_version", ""))
    except ValueError:
        raise _fail(path, f"format_version {abridged(metadata.get('format_version'))} is not "
                          "an integer.") from None
    if version > FORMAT_VERSION:
        raise _fail(path, f"it has format version {version}, newer than this portanet "
                          f"({_version()}) reads (version {FORMAT_VERSION}). Upgrade portanet.")
    if version < 1:
        raise _fail(path, f"format_version {version} is not a known version.")
    kind = metadata.get("kind")
    expected_keys = _expected_keys(kind, version)
    if expected_keys is None:
        raise _fail(path, f"kind {abridged(kind)} is neither 'model' nor 'weights'.")
    if set(metadata) != expected_keys:
        missing = sorted(expected_keys - set(metadata))
        extra = sorted(set(metadata) - expected_keys)
        raise _fail(path, f"metadata keys differ from a version-{version} {kind} checkpoint's: "
                          f"missing {missing}, unknown {abridged(extra)}.")
    return metadata, version, kind


def _data_end(path: Path, entries: Mapping[str, Any]) -> int:
    """The largest end offset: how many data bytes the header accounts for."""
    end = 0
    for name, entry in entries.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int and o >= 0 for o in offsets) and offsets[0] <= offsets[1]):
            raise _fail(path, f"tensor {abridged(name)} has data_offsets {abridged(offsets)}; a "
                              "safetensors entry has [begin, end] byte offsets with "
                              "0 <= begin <= end.")
        end = max(end, offsets[1])
    return end


def _check_entries(path: Path, entries: Mapping[str, Any], kind: str, version: int) -> None:
    """Each tensor's name and dtype, from the header: a known group that this kind and
    version of file holds, and a dtype that group may hold."""
    for name, entry in entries.items():
        code = entry.get("dtype")
        if not isinstance(code, str) or code not in _DTYPE_CODES:
            raise _fail(path, f"tensor {abridged(name)} has dtype {abridged(code)}; portanet reads "
                              f"{', '.join(_DTYPE_CODES)} ({', '.join(_DTYPE_CODES.values())}).")
        group = name.split("/", 1)[0]
        if "/" not in name or group not in _GROUP_DTYPES:
            raise _fail(path, f"unknown tensor {abridged(name)}: portanet writes only "
                              "parameters/..., buffers/..., optimizer/... and random/... "
                              "entries.")
        if kind == "weights" and group in ("optimizer", "random"):
            raise _fail(path, f"a weights-only file holds {group} tensor {abridged(name)}.")
        if version < 2 and group == "random":
            raise _fail(path, f"a version-1 file holds random-state tensor {abridged(name)}; "
                              "random state came with version 2.")
        dtype = _DTYPE_CODES[code]
        allowed = _GROUP_DTYPES[group]
        if dtype not in allowed:
            what = {"parameters": "parameter", "buffers": "buffer"}.get(group, "tensor")
            shown = name.split("/", 1)[1] if group in ("parameters", "buffers") else name
            kinds = {"random": "random-state tensors"}.get(group, group)
            raise _fail(path, f"{what} {abridged(shown)} is stored as {dtype}, but {kinds} are "
                              f"stored as {_one_of(allowed)}: the file was edited or made by "
                              "other software. Save the model again.")


def _listed_names(path: Path, metadata: Mapping[str, str], group: str,
                  entries: Mapping[str, Any]) -> list[str]:
    names = _json_field(path, metadata, group)
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names) or \
            len(set(names)) != len(names):
        raise _fail(path, f"metadata {group!r} must be a list of unique names.")
    stored = {k.split("/", 1)[1] for k in entries if k.startswith(group + "/")}
    if stored != set(names):
        raise _fail(path, f"the {group} listed in the metadata differ from the tensors stored: "
                          f"listed but not stored {abridged(sorted(set(names) - stored))}, "
                          f"stored but not listed {abridged(sorted(stored - set(names)))}.")
    return names


def read_checkpoint(path: str | os.PathLike, max_header_bytes: int = MAX_HEADER_BYTES
                    ) -> Checkpoint:
    """Read and fully validate a checkpoint file; returns its contents as NumPy arrays.

    The header is read and checked first; the data only if the header is valid and the file
    has exactly the size the header accounts for (see the module docstring for every check).

    Raises:
        FileNotFoundError: there is no such file.
        CheckpointError: anything about the file is wrong (see the module docstring).
    """
    path = _as_path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}.")
    if not path.is_file():
        raise _fail(path, "it is not a regular file.")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = _read_header_length(path, f, size, max_header_bytes)
        head = f.read(n)
        if len(head) != n:
            raise _fail(path, "the file changed while it was being read.")

        # 2. The header alone: structure, metadata, names, sizes, references.
        header = _parse_header(path, head)
        metadata, version, kind = _portanet_metadata(path, header)
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        data_end = _data_end(path, entries)
        accounted = 8 + n + data_end
        if size != accounted:
            extra = size - accounted
            problem = (f"it has {_count(extra, 'trailing byte')} after the data" if extra > 0
                       else f"it is truncated ({_count(-extra, 'byte')} of data missing)")
            raise _fail(path, f"the file has {size:,} bytes but its header accounts for "
                              f"{accounted:,} (8 + {n:,} header + {data_end:,} data); "
                              f"{problem}.")
        _check_entries(path, entries, kind, version)
        names = {group: _listed_names(path, metadata, group, entries)
                 for group in ("parameters", "buffers")}
        ckpt = Checkpoint(kind, {}, {}, portanet_version=metadata["portanet_version"])
        if kind == "model":
            ckpt.architecture = _json_field(path, metadata, "architecture")
            if not isinstance(ckpt.architecture, dict):
                raise _fail(path, "the architecture is not a JSON object.")
            epoch = _json_field(path, metadata, "epoch")
            if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)
                                      or epoch < 0):
                raise _fail(path, f"epoch must be an int >= 0 or null, found {abridged(epoch)}.")
            ckpt.epoch = epoch
            optimizer = _state_with_refs(path, metadata, "optimizer", entries)
            random = None if version < 2 else _state_with_refs(path, metadata, "random",
                                                               entries)

        # 3. The data, exactly as far as the header accounts for, then the checksum.
        f.seek(0)
        raw = f.read(accounted)
        if len(raw) != accounted or raw[:8 + n] != struct.pack("<Q", n) + head or f.read(1):
            raise _fail(path, "the file changed while it was being read.")
    try:
        tensors = safetensors.numpy.load(raw)
    except Exception as err:  # SafetensorError and the errors its Python layer raises
        raise _fail(path, f"safetensors rejected it: {err}.") from None
    del raw
    if metadata["checksum"] != _digest(metadata, tensors):
        raise _fail(path, "its checksum does not match its contents: the file was modified or "
                          "corrupted (e.g. a flipped bit) after it was written.")
    ckpt.parameters = {k: tensors[f"parameters/{k}"] for k in names["parameters"]}
    ckpt.buffers = {k: tensors[f"buffers/{k}"] for k in names["buffers"]}
    if kind == "model":
        ckpt.optimizer = _fill(optimizer, tensors)
        ckpt.random = _fill(random, tensors)
    return ckpt
