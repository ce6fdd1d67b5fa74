"""What every layer shares: parameters by name, the way back, building on a backend, moving.

The contract (DESIGN.md, "forward returns (y, backprop)"):

* ``y, backprop = layer.forward(x, training)`` computes the output and returns a closure that
  holds exactly what the backward pass needs. No ``self.x`` caches: two forwards followed by
  two backprops in any order each give their own, correct gradients.
* ``dx = backprop(dy)`` returns dL/dx and stores dL/dp for each parameter p in
  ``layer.gradients[name]``.
* ``layer.parameters`` (trainable, name -> array), ``layer.buffers`` (non-trainable state such
  as BatchNorm's running statistics) and ``layer.regularizers`` (name -> Regularizer).

Parameters are created by :meth:`Layer.build`: each is drawn by its initializer on the host in
float64 from ``host_generator(seed, stream + (k,))`` (k = the parameter's position), cast to the
model dtype on the host, then moved to the backend. So the same seed gives identical weights on
every backend, and adding a layer never changes another layer's draws.

:class:`Container` is a layer made of layers (``Sequential``, ``Residual``): its parameters are
those of its children, under dotted names ("0.kernel", "2.block.1.bias").
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import array_api_compat as compat

from .. import initializers
from .._typing import Array, Shape
from ..backend import Backend, adapter_of, get_backend, make_backend
from ..devices import to_backend
from ..errors import abridged
from ..random import fresh_seed, host_generator
from ..registry import Registry, make_config

__all__ = ["Container", "Layer", "deserialize", "get", "register", "serialize"]

_FLOAT_DTYPES = ("float32", "float64")


def dtype_name(dtype: Any) -> str:
    """"float32" from a string, a NumPy/torch/JAX/strict dtype object or class."""
    name = dtype if isinstance(dtype, str) else getattr(dtype, "__name__", None) or str(dtype)
    return name.rsplit(".", 1)[-1]


def _resolve_backend(backend: Any, device: Any = None) -> Backend:
    if backend is None:
        active = get_backend()
        return active if device is None else make_backend(active.name, device)
    if isinstance(backend, Backend):
        return backend if device is None else make_backend(backend.name, device)
    return make_backend(backend, device)


def _positive_int(value: Any, what: str, layer: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{layer} {what} must be a positive int, received {what}={value!r}.")
    return value


class Layer:
    """Base class of every layer.

    Subclasses declare their parameters in :meth:`parameter_specs` (name -> (shape,
    initializer)), their non-trainable state in :meth:`buffer_specs`, and implement
    :meth:`forward`, :meth:`output_shape` and :meth:`get_config`.

    Attributes:
        parameters: trainable arrays by name (empty until built).
        gradients: dL/dp by name, written by the most recent ``backprop`` call.
        buffers: non-trainable state by name (BatchNorm's running statistics).
        regularizers: name -> :class:`portanet.regularizers.Regularizer`.
        training: the mode used when ``forward`` is called with ``training=None``.
        dtype: "float32" or "float64" once built; backend: the :class:`Backend` it lives on.
    """

    is_container: ClassVar[bool] = False
    can_skip_input_gradient: ClassVar[bool] = False
    """True if ``backprop(dy, input_gradient=False)`` stores the parameter gradients and skips
    computing dL/dx (returns None). A model uses it for its first trainable layer, whose input
    gradient nobody reads (PyTorch skips it the same way for inputs without requires_grad)."""
    supports_masking: ClassVar[bool] = False
    """True if ``forward(x, training, mask=...)`` takes a padding mask: a boolean (N, T) array,
    True at real time steps. A Chain passes the mask only to such layers; see
    :meth:`compute_mask` for how the mask travels from layer to layer."""
    creates_mask: bool = False
    """True if :meth:`compute_mask` can make a mask from no mask (``Embedding(mask_zero=True)``,
    ``Masking``); a Chain asks a layer for its output mask only when there is a mask already or
    the layer creates one, so mask-free models pay nothing."""
    compiles_well: ClassVar[bool] = True
    """False if a model with this layer measures slower compiled than eager, so that
    ``jit_compile="auto"`` runs it eagerly (``True`` still compiles). The recurrent layers say
    so: their Python loop over time unrolls into one large program (LSTM training step, batch
    64, 50 steps, 64->128, 2 CPU cores: 88 ms under jax.jit after 30 s of compiling, 55 ms
    eager)."""
    integer_input: ClassVar[bool] = False
    """True if the layer takes integer ids (Embedding): a model starting with it keeps integer
    inputs as int64 instead of casting them to its float dtype."""

    def __init__(self, name: str | None = None):
        self._init_state(name)
        self.parameters: dict[str, Array] = {}
        self.gradients: dict[str, Array] = {}
        self.buffers: dict[str, Array] = {}

    def _init_state(self, name: str | None) -> None:
        """What every layer has, leaf or container: name, mode, build state, regularizers.
        (A container's parameters, gradients and buffers are methods over its children.)"""
        if name is not None and not isinstance(name, str):
            raise TypeError(f"layer name must be a string or None, received {name!r}.")
        self.name = name
        self.training = False
        self.built = False
        self.dtype: str | None = None
        self.backend: Backend | None = None
        self.regularizers: dict[str, Any] = {}
        self._trainable = True

    # -- freezing ------------------------------------------------------------------------------
    trainable_version: ClassVar[int] = 0
    """Counts every change of any layer's :attr:`trainable`, so a model's engine knows when the
    set of parameters it updates has changed (one int comparison per step)."""

    @property
    def trainable(self) -> bool:
        """Whether training updates this layer's parameters (default True).

        ``layer.trainable = False`` freezes it, for transfer learning and fine-tuning: its
        parameters get no gradients, optimizers skip them (and keep no state for them), and
        backpropagation stops early when nothing before the layer trains. On a container it
        sets every layer inside. A frozen BatchNorm normalizes with its running statistics
        (Keras' rule: fine-tuning must not disturb them). Checkpoints keep the flag.
        """
        return getattr(self, "_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"trainable must be True or False, received {value!r}.")
        self._trainable = value
        for _, child in self.children():
            child.trainable = value
        Layer.trainable_version += 1

    # -- what subclasses declare -------------------------------------------------------------
    def parameter_specs(self) -> dict[str, tuple[Shape, initializers.Initializer]]:
        """Trainable parameters: name -> (shape, initializer). Their order fixes the streams."""
        return {}

    def buffer_specs(self) -> dict[str, tuple[Shape, initializers.Initializer]]:
        """Non-trainable state: name -> (shape, initializer)."""
        return {}

    def forward(self, x: Array, training: bool | None = None):
        """``(y, backprop)``; ``training=None`` uses :attr:`training`."""
        raise NotImplementedError

    def compute_mask(self, x: Array, mask: Array | None) -> Array | None:
        """The padding mask of this layer's output, given its input ``x`` and input ``mask``.

        The default passes the mask on unchanged: right for layers that act on each time step
        (Dense on (N, T, F), Dropout, LayerNorm, Activation). A layer that removes the time axis
        (an RNN returning its last state, pooling over time) returns None; a layer that makes a
        mask (``Embedding(mask_zero=True)``) returns it.
        """
        return mask

    def output_shape(self, input_shape: Shape) -> Shape:
        """The per-sample output shape for a per-sample ``input_shape`` (no batch axis).

        Raises the same shape errors as :meth:`forward`; used by ``Sequential.summary``.
        """
        return tuple(input_shape)

    def get_config(self) -> dict:
        """The constructor arguments as a JSON-able dict; ``type(self)(**config)`` rebuilds it."""
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Layer:
        return cls(**config)

    # -- calling -----------------------------------------------------------------------------
    def __call__(self, x: Array, training: bool | None = None):
        """Same as :meth:`forward`: returns ``(y, backprop)``."""
        return self.forward(x, training)

    @property
    def kind(self) -> str:
        """The class name, or ``name`` if the user gave one (shown by ``summary``)."""
        return self.name or type(self).__name__

    def __repr__(self) -> str:
        # Only the arguments that differ from the constructor's defaults, like code one writes.
        try:
            defaults = {k: p.default for k, p in inspect.signature(type(self)).parameters.items()}
        except (TypeError, ValueError):
            defaults = {}
        args = []
        for k, v in self.get_config().items():
            d = defaults.get(k, inspect.Parameter.empty)
            if d is not inspect.Parameter.empty and (v == d or (
                    isinstance(v, list) and isinstance(d, int) and set(v) == {d}) or (
                    isinstance(v, dict) and _same_initializer(v, d))):
                continue
            args.append(f"{k}={v!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -- building ----------------------------------------------------------------------------
    def build(self, seed: int | None = None, stream: tuple[int, ...] = (),
              dtype: Any = "float32", backend: Any = None) -> Layer:
        """Create the parameters and buffers on ``backend`` (the active one when None).

        Args:
            seed: the model seed (None: fresh OS entropy).
            stream: this layer's position in the model, e.g. ``(3,)``; parameter k draws from
                ``host_generator(seed, stream + (k,))``.
            dtype: "float32" or "float64" (or a dtype object).
            backend: a backend name or :class:`Backend`; None for the active backend.

        Returns:
            ``self``, built.
        """
        name = dtype_name(dtype)
        if name not in _FLOAT_DTYPES:
            raise TypeError(f"layers compute in floating point; received dtype={dtype!r}. "
                            f"Use one of {list(_FLOAT_DTYPES)}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, received {seed!r}.")
        target = _resolve_backend(backend)
        seed = fresh_seed() if seed is None else seed
        stream = tuple(stream)
        specs = list(self.parameter_specs().items()) + list(self.buffer_specs().items())
        values = {}
        for k, (key, (shape, init)) in enumerate(specs):
            host = init(shape, host_generator(seed, (*stream, k)))
            values[key] = _host_to_backend(host, name, target)
        n_params = len(self.parameter_specs())
        self.parameters = {key: values[key] for key, _ in specs[:n_params]}
        self.buffers = {key: values[key] for key, _ in specs[n_params:]}
        self.gradients = {}
        self.dtype, self.backend, self.built = name, target, True
        self._seed, self._stream = seed, stream
        self.on_build()
        return self

    def on_build(self) -> None:
        """Hook after :meth:`build` and :meth:`to` (Dropout makes its device generator here)."""

    def ensure_built(self, x: Array) -> None:
        """Build on ``x``'s backend, device and dtype if the layer was never built.

        A standalone layer (not in a Sequential) can be called at once; a model builds its
        layers with its seed when it is created.
        """
        if not self.built:
            backend = make_backend(adapter_of(x).name, compat.device(x))
            self.build(dtype=dtype_name(x.dtype), backend=backend)

    # -- moving ------------------------------------------------------------------------------
    def to(self, backend: Any, device: Any = None) -> Layer:
        """Move parameters, gradients and buffers to ``backend`` on ``device``; returns self."""
        self._move(_resolve_backend(backend, device))
        return self

    def _move(self, target: Backend) -> None:
        def move(d):
            return {k: to_backend(v, target.name, target.device) for k, v in d.items()}

        self.parameters = move(self.parameters)
        self.gradients = move(self.gradients)
        self.buffers = move(self.buffers)
        self.backend = target
        if self.built:
            self.on_build()

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        """Set training mode (Dropout active, BatchNorm uses batch statistics); returns self."""
        self.training = bool(mode)
        for _, child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        """Set evaluation mode (Dropout is the identity, BatchNorm uses running statistics)."""
        return self.train(False)

    # -- parameters by name, for layers and containers alike ----------------------------------
    def children(self) -> list[tuple[str, Layer]]:
        """Sub-layers as (name, layer); empty for a leaf layer."""
        return []

    def named_leaves(self, prefix: str = "") -> list[tuple[str, Layer]]:
        """(dotted prefix, leaf layer) for every leaf layer inside, in order."""
        if not self.is_container:
            return [(prefix, self)]
        out = []
        for name, child in self.children():
            out += child.named_leaves(f"{prefix}{name}.")
        return out

    def named_parameters(self) -> dict[str, Array]:
        """All trainable arrays under dotted names ("kernel" for a leaf, "0.kernel" inside)."""
        return {p + k: v for p, leaf in self.named_leaves() for k, v in leaf.parameters.items()}

    def named_trainable_parameters(self) -> dict[str, Array]:
        """The parameters training updates: those of the layers with ``trainable`` True."""
        return {p + k: v for p, leaf in self.named_leaves() if leaf.trainable
                for k, v in leaf.parameters.items()}

    def named_gradients(self) -> dict[str, Array]:
        """The gradients stored by the last backprop, under the same names as the parameters."""
        return {p + k: v for p, leaf in self.named_leaves() for k, v in leaf.gradients.items()}

    def named_buffers(self) -> dict[str, Array]:
        """Non-trainable state under dotted names ("1.running_mean")."""
        return {p + k: v for p, leaf in self.named_leaves() for k, v in leaf.buffers.items()}

    def named_regularizers(self) -> dict[str, Any]:
        """Parameter name -> regularizer, for the regularized parameters."""
        return {p + k: r for p, leaf in self.named_leaves() for k, r in leaf.regularizers.items()
                if r is not None}

    def set_named_parameters(self, values: dict[str, Array]) -> None:
        """Replace parameters by dotted name; checks names, shapes and dtypes."""
        self._assign(values, "parameters")

    def set_named_buffers(self, values: dict[str, Array]) -> None:
        """Replace buffers by dotted name; checks names, shapes and dtypes."""
        self._assign(values, "buffers")

    def _assign(self, values: dict[str, Array], kind: str) -> None:
        if not isinstance(values, dict):
            raise TypeError(f"set_{kind} expects a dict name -> array, received "
                            f"{type(values).__name__}.")
        slots = {p + k: (leaf, k) for p, leaf in self.named_leaves()
                 for k in getattr(leaf, kind)}
        unknown = sorted(set(values) - set(slots))
        if unknown:
            raise KeyError(f"unknown {kind[:-1]} names {unknown}; the known names are "
                           f"{sorted(slots)}.")
        for full, value in values.items():
            leaf, key = slots[full]
            old = getattr(leaf, kind)[key]
            if tuple(value.shape) != tuple(old.shape):
                raise ValueError(f"{kind[:-1]} {full!r} has shape {tuple(old.shape)}, received "
                                 f"an array of shape {tuple(value.shape)}.")
            if dtype_name(value.dtype) != dtype_name(old.dtype):
                raise TypeError(f"{kind[:-1]} {full!r} is {dtype_name(old.dtype)}, received "
                                f"{dtype_name(value.dtype)}; cast it first or rebuild the model "
                                f"with dtype={dtype_name(value.dtype)!r}.")
            try:
                same_place = adapter_of(value) is adapter_of(old) and \
                    compat.device(value) == compat.device(old)
            except TypeError:
                same_place = False
            if not same_place:
                raise TypeError(f"{kind[:-1]} {full!r} lives on {leaf.backend!r}; received an "
                                f"array of {type(value).__module__}.{type(value).__name__} on "
                                "another backend or device. Move it with pn.to_backend first.")
        for full, value in values.items():
            leaf, key = slots[full]
            old = getattr(leaf, kind)[key]
            if compat.is_writeable_array(value):
                # The layer owns its arrays: the optimizer updates them in place, and that must
                # not reach the caller's array (or a callback's snapshot). The copy keeps the
                # memory layout the layer chose (Dense's kernel: Adapter.weight_order).
                value = adapter_of(old).copy_like(value, old)
            getattr(leaf, kind)[key] = value

    @property
    def num_parameters(self) -> int:
        """The number of trainable scalars (known before building, from the shapes)."""
        total = 0
        for _, leaf in self.named_leaves():
            for shape, _ in leaf.parameter_specs().values():
                total += math.prod(shape)
        return total

    @property
    def num_trainable_parameters(self) -> int:
        """The number of scalars training updates (those of layers with ``trainable`` True)."""
        return sum(math.prod(shape) for _, leaf in self.named_leaves() if leaf.trainable
                   for shape, _ in leaf.parameter_specs().values())

    # -- helpers for subclasses ----------------------------------------------------------------
    def _check_dtype(self, x: Array, like: Array | None = None) -> None:
        """Inputs must be floating point of the layer's dtype (float32 stays float32).

        ``like`` is one of the layer's arrays: comparing dtype objects is cheaper than names.
        """
        if like is not None and x.dtype == like.dtype:
            return
        if dtype_name(x.dtype) != self.dtype:
            raise TypeError(
                f"{type(self).__name__} has {self.dtype} parameters, received input of dtype "
                f"{dtype_name(x.dtype)}. Cast the input (pn.asarray(x, dtype={self.dtype!r})) or "
                f"build the model with dtype={dtype_name(x.dtype)!r}.")


def _same_initializer(config: dict, default: Any) -> bool:
    try:
        return isinstance(default, str) and initializers.get(config) == initializers.get(default)
    except (TypeError, ValueError):
        return False


def _host_to_backend(host: Array, dtype: str, backend: Backend) -> Array:
    """A float64 host (NumPy) array -> cast to ``dtype`` on the host -> onto ``backend``."""
    hxp = compat.array_namespace(host)
    host = hxp.astype(hxp.asarray(host), getattr(hxp, dtype))
    return backend.adapter.from_numpy(host, backend.device)


class Container(Layer):
    """A layer made of layers. Its parameters, gradients and buffers are its children's.

    Unlike a leaf layer, ``parameters()``, ``gradients()`` and ``buffers()`` are methods that
    return flat dicts with dotted names.
    """

    is_container: ClassVar[bool] = True

    @classmethod
    def child_configs(cls, config: dict) -> list[tuple[str, Any]]:
        """(name, layer config) of each child that ``from_config(config)`` would build, named
        as ``children()`` names them, read without building anything.

        ``pn.load`` uses it to check a file's shapes before any parameter is allocated; a
        container class that does not define it can still be saved, and loaded with
        ``model.load_weights`` into a model built in code.
        """
        raise NotImplementedError(f"{cls.__name__} does not list its children's configs "
                                  "(define the classmethod child_configs).")

    def __init__(self, name: str | None = None):
        self._init_state(name)

    def parameters(self) -> dict[str, Array]:  # type: ignore[override]
        """Trainable arrays of all sub-layers: {"0.kernel": ..., "0.bias": ..., ...}."""
        return self.named_parameters()

    def gradients(self) -> dict[str, Array]:  # type: ignore[override]
        """The gradients from the last backward pass, under the parameters' names."""
        return self.named_gradients()

    def buffers(self) -> dict[str, Array]:  # type: ignore[override]
        """Non-trainable state of all sub-layers (BatchNorm running statistics)."""
        return self.named_buffers()

    def set_parameters(self, values: dict[str, Array]) -> None:
        """Replace some or all parameters by name (shapes, dtypes and devices checked).

        The layer keeps copies: training updates its parameters in place, never ``values``."""
        self.set_named_parameters(values)

    def set_buffers(self, values: dict[str, Array]) -> None:
        """Replace some or all buffers by name (shapes, dtypes and devices checked)."""
        self.set_named_buffers(values)

    def build(self, seed: int | None = None, stream: tuple[int, ...] = (),
              dtype: Any = "float32", backend: Any = None) -> Container:
        """Build child i with stream ``stream + (i,)``, all with the same seed, dtype, backend."""
        target = _resolve_backend(backend)
        seed = fresh_seed() if seed is None else seed
        for i, (_, child) in enumerate(self.children()):
            child.build(seed, (*tuple(stream), i), dtype, target)
        self.dtype, self.backend, self.built = dtype_name(dtype), target, True
        return self

    def ensure_built(self, x: Array) -> None:
        if not self.built:
            backend = make_backend(adapter_of(x).name, compat.device(x))
            self.build(dtype=dtype_name(x.dtype), backend=backend)

    def _move(self, target: Backend) -> None:
        for _, child in self.children():
            child._move(target)
        self.backend = target


# ---------------------------------------------------------------------------------------------
# Registry: layer configs are {"class_name": "Dense", "config": {...}}.
# ---------------------------------------------------------------------------------------------
_REGISTRY = Registry("layer class", base=Layer, name_key=False,
                     accepts="a Layer, a registered layer class or its name, or a config dict",
                     hint="Decorate custom layers with @portanet.layers.register.")
"""Every layer class that configs can name (the built-in ones register as they are defined)."""


def register(cls: type) -> type:
    """Class decorator: make ``cls`` rebuildable from its config by class name.

    Registering a class of the same name again replaces the earlier one (a class defined
    anew); a name that differs only in case or ``_`` from another registered class's is
    refused, since lookups ignore those.
    """
    name = cls.__name__
    if name in _REGISTRY and _REGISTRY.canonical(name) != name:
        raise ValueError(f"layer class {name!r} would replace the registered layer class "
                         f"{_REGISTRY.canonical(name)!r} (class names are looked up ignoring "
                         "case and '_'); give it another name.")
    _REGISTRY.register(name, cls, overwrite=True)
    return cls


def serialize(layer: Layer) -> dict:
    """``{"class_name": ..., "config": layer.get_config()}`` (JSON-able)."""
    if not isinstance(layer, Layer):
        raise TypeError(f"serialize expects a Layer, received {type(layer).__name__}.")
    out = make_config(type(layer).__name__, layer.get_config())
    if not layer.trainable:
        out["trainable"] = False  # frozen layers stay frozen through a checkpoint
    return out


def registered_class(config: dict) -> type[Layer]:
    """The registered layer class that a :func:`serialize` dict names (nothing is built)."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError("a layer config is {'class_name': ..., 'config': {...}}, received "
                         f"{abridged(config)}.")
    return _REGISTRY.lookup(config["class_name"])


def deserialize(config: dict) -> Layer:
    """Rebuild a layer (unbuilt) from :func:`serialize`'s output.

    Layer configs have had this one shape since format version 1, so no older shape is read.
    """
    inner = config.get("config", {}) if isinstance(config, dict) else None
    cls = registered_class(config)
    if not isinstance(inner, dict):
        raise ValueError(f"the config of a {cls.__name__} must be a dict, received "
                         f"{abridged(inner)}.")
    layer = cls.from_config(dict(inner))
    trainable = config.get("trainable", True)
    if not isinstance(trainable, bool):
        raise ValueError(f"the 'trainable' flag of a {cls.__name__} config must be true or "
                         f"false, received {abridged(trainable)}.")
    if not trainable:
        layer.trainable = False
    return layer


def get(identifier: Any, **params: Any) -> Layer:
    """A layer from an instance (returned as is), a config dict (:func:`deserialize`), or a
    registered class or its name with the constructor's arguments.

    Examples:
        >>> get("dense", in_features=2, out_features=3)
        Dense(in_features=2, out_features=3)
    """
    if isinstance(identifier, dict):
        if params:
            raise TypeError(f"get(config, ...) received parameters {sorted(params)}; a layer "
                            "config holds all of them.")
        return deserialize(identifier)
    return _REGISTRY.resolve(identifier, **params)
