"""The Sequential model: a chain of layers (portanet/layers/chain.py) that trains.

Forward and backward are the chain rule written out (:class:`portanet.layers.Chain`)::

    y = f_L(... f_2(f_1(x)))                    forward: each layer returns (y_i, backprop_i)
    dL/dx = backprop_1(backprop_2(... backprop_L(dL/dy)))

``train_step(x, y)`` is one step of gradient descent:

1. forward with ``training=True`` (Dropout active, BatchNorm on batch statistics);
2. loss value and dL/dy from the loss; regularization penalties added to the value;
3. backward through every layer (parameter gradients land in ``layer.gradients``),
   plus each regularizer's gradient;
4. the optimizer returns new parameters, which replace the old ones.

Nothing in a step reads an array value back to the host: the loss is returned as a 0-d array
on the device, and ``fit`` (portanet.training) reads it once per epoch.

Examples:
    >>> import portanet as pn
    >>> model = pn.Sequential([pn.layers.Dense(4, 8, activation="relu"),
    ...                        pn.layers.Dense(8, 3)],
    ...                       loss="softmax_cross_entropy", optimizer="sgd", seed=0)
    >>> model.num_parameters
    67
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from . import io, losses, optimizers, plotting, training
from ._typing import Array, Shape
from .devices import namespace_of
from .engine import Engine, check_jit_compile
from .layers.base import (
    _FLOAT_DTYPES,
    Layer,
    _resolve_backend,
    deserialize,
    dtype_name,
    register,
    serialize,
)
from .layers.chain import Chain
from .random import Generator, fresh_seed

__all__ = ["Sequential"]


@register
class Sequential(Chain):
    """A chain of layers (:class:`portanet.layers.Chain`), trained with a loss and an optimizer.

    Args:
        layers: the layers, in order. A Sequential is itself a layer, so it can be nested or
            wrapped in a Residual.
        loss: a loss instance or name (see :mod:`portanet.losses`); needed by ``train_step``.
        optimizer: an optimizer instance, name or config (see :mod:`portanet.optimizers`).
        seed: seed of the initial weights: layer i draws from stream (i,), so the same seed
            gives the same weights on every backend. None: fresh entropy (stored in ``seed``).
        dtype: "float32" (default) or "float64" for every parameter.
        name: optional display name.
        jit_compile: "auto" (default: compile the training step and the forward pass where
            the backend has a compiler that measures faster, i.e. JAX), True (compile:
            ``jax.jit``, ``torch.compile``; an error on backends without a compiler) or False
            (eager). See :mod:`portanet.engine`; ``model.engine`` reports what runs.

    The model is built at once on the active backend (``pn.get_backend()``); move it with
    :meth:`to`.

    Parameter names are "<layer index>.<parameter>": "0.kernel", "0.bias", "3.block.0.kernel".
    """

    def __init__(self, layers: Any = None, loss: Any = None, optimizer: Any = None,
                 seed: int | None = None, dtype: Any = "float32", name: str | None = None,
                 jit_compile: Any = "auto"):
        super().__init__(layers, name)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, received {seed!r}.")
        if dtype_name(dtype) not in _FLOAT_DTYPES:
            raise TypeError(f"Sequential dtype must be one of {list(_FLOAT_DTYPES)}, received "
                            f"{dtype!r}.")
        self.loss = None if loss is None else losses.get(loss)
        self.optimizer = None if optimizer is None else optimizers.get(optimizer)
        self.seed = fresh_seed() if seed is None else seed
        self.epoch = 0  # epochs trained so far (fit and checkpoints keep it)
        self.fit_random: dict[str, Any] = {}  # what the last fit drew from (see random_state)
        self._resume_random: dict[str, Any] | None = None  # a checkpoint's, for the next fit
        self._last_backprop = None
        self.engine = Engine(self, jit_compile)
        self.build(self.seed, (), dtype, None)

    # -- structure -----------------------------------------------------------------------------
    def build(self, seed: int | None = None, stream: tuple[int, ...] = (),
              dtype: Any = "float32", backend: Any = None) -> Sequential:
        super().build(seed, stream, dtype, backend)
        self._index()
        return self

    @property
    def jit_compile(self) -> Any:
        """"auto", True or False: see the constructor; assignable."""
        return self.engine.jit_compile

    @jit_compile.setter
    def jit_compile(self, value: Any) -> None:
        value = check_jit_compile(value)
        if value != self.engine.jit_compile or isinstance(value, bool) != \
                isinstance(self.engine.jit_compile, bool):
            self.engine.jit_compile = value
            self.engine.reset()

    def _index(self) -> None:
        """Cache where each flat parameter name lives (the structure, not the values)."""
        self._slots = [(p + k, leaf, k) for p, leaf in self.named_leaves()
                       for k in leaf.parameters]
        self._where = {name: (leaf, key) for name, leaf, key in self._slots}
        self._regularized = list(self.named_regularizers().items())
        self._frozen_at = -1  # Layer.trainable_version that _first_trainable was computed at
        # Computed now, with the layers built, not inside the first training step: under
        # torch.compile that first step would trace the cache's update, and the second one
        # compile again with it done.
        self._first_trainable  # noqa: B018

    @property
    def _first_trainable(self) -> int:
        """Index of the first layer with parameters that train: backprop stops there.

        Recomputed only when some layer's ``trainable`` flag changed."""
        if self._frozen_at != Layer.trainable_version:
            self._first_index = next((i for i, layer in enumerate(self.layers)
                                      if layer.num_trainable_parameters > 0), len(self.layers))
            self._frozen_at = Layer.trainable_version
        return self._first_index

    def add(self, layer: Layer) -> Sequential:
        """Append ``layer``, built with the model's seed (stream = its index), dtype and backend."""
        if not isinstance(layer, Layer):
            raise TypeError(f"add expects a layer, received {type(layer).__name__}.")
        if any(layer is other for other in self.layers):
            raise ValueError("this layer object is already in the model; create a new one.")
        layer.build(self.seed, (len(self.layers),), self.dtype, self.backend)
        layer.train(self.training)
        self.layers.append(layer)
        self._index()
        self.engine.reset()
        return self

    def pop(self) -> Layer:
        """Remove the last layer and return it (e.g. an old classification head, before
        ``add``-ing a new one for transfer learning)."""
        if not self.layers:
            raise IndexError("pop from a Sequential with no layers.")
        layer = self.layers.pop()
        self._index()
        self.engine.reset()
        return layer

    def compile(self, loss: Any = None, optimizer: Any = None,
                jit_compile: Any = None) -> Sequential:
        """Set (or replace) the loss, the optimizer and/or ``jit_compile``; returns self."""
        if jit_compile is not None:
            self.jit_compile = jit_compile
        if loss is not None:
            self.loss = losses.get(loss)
        if optimizer is not None:
            self.optimizer = optimizers.get(optimizer)
        if loss is not None or optimizer is not None:
            self.engine.reset()
        return self

    # -- forward and backward ------------------------------------------------------------------
    def _forward(self, x: Array, training: bool, input_gradient: bool = True,
                 mask: Array | None = None):
        """Forward through every layer; the returned backprop walks them in reverse.

        With ``input_gradient=False`` (training: dL/dx of the data is never used) the walk stops
        at the first layer that has parameters (:meth:`Chain.chain`).
        """
        return self.chain(x, training, None if input_gradient else self._first_trainable, mask)

    def _check_input(self, x: Array) -> None:
        """Input on the model's backend and device (a clear error instead of a deep one)."""
        if self._slots:
            namespace_of(x, self._slots[0][1].parameters[self._slots[0][2]])
        elif not hasattr(x, "shape"):
            raise TypeError(f"Sequential expects an array, received {type(x).__name__}; convert "
                            "it with pn.asarray(...).")
        self._seen_input_shape = tuple(x.shape[1:])  # lets summary() show conv output shapes

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None):
        """``(y, backprop)`` through every layer; ``training=None`` uses the model's mode.

        ``mask`` (N, T), True at real time steps, goes to the sequence layers (a model that
        starts with ``Embedding(mask_zero=True)`` makes its own). The returned ``backprop`` is
        also kept for :meth:`backward`.
        """
        self._check_input(x)
        training = self.training if training is None else bool(training)
        y, backprop = self._forward(x, training, mask=mask)
        self._last_backprop = backprop
        return y, backprop

    def backward(self, dy: Array) -> Array:
        """Backpropagate ``dy`` = dL/dy through the most recent :meth:`forward`; returns dL/dx.

        Parameter gradients are then in :meth:`gradients`. Prefer the ``backprop`` that
        ``forward`` returns when you interleave several forward passes.
        """
        if self._last_backprop is None:
            raise RuntimeError("backward needs a forward pass first: call "
                               "y, _ = model.forward(x, training=True), then model.backward(dy).")
        return self._last_backprop(dy)

    def predict(self, x: Array, batch_size: int | None = None) -> Array:
        """The outputs for ``x`` in evaluation mode, in batches of ``batch_size`` (all at once
        when None). Returns an array on the model's device.

        Host data (a NumPy array or nested lists) is converted as ``fit`` converts it: onto the
        model's device, in its dtype (token ids stay int64). An array of another backend or
        device is refused, never moved silently."""
        if not compat.is_array_api_obj(x) or compat.is_numpy_array(x):
            x = training.to_model(self, x, "x")
        self._check_input(x)
        if x.ndim == 1:  # N samples of shape (), or one sample without its axis: the shapes say
            training.output_width(self, x)
        n = x.shape[0]
        if batch_size is None or batch_size >= n:
            return self.engine.forward(x)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int or None, received "
                             f"{batch_size!r}.")
        xp = compat.array_namespace(x)
        parts = [self.engine.forward(x[i:min(i + batch_size, n), ...])
                 for i in range(0, n, batch_size)]
        return xp.concat(parts, axis=0)

    # -- training ------------------------------------------------------------------------------
    def regularization_loss(self) -> Any:
        """Sum of every regularizer's penalty (a 0-d array), or 0.0 without regularizers."""
        total: Any = 0.0
        for name, reg in self._regularized:
            leaf, key = self._where[name]
            total = total + reg.penalty(leaf.parameters[key])
        return total

    def _require(self, *what: str) -> None:
        missing = [n for n in what if getattr(self, n) is None]
        if missing:
            raise RuntimeError(f"this model has no {' and no '.join(missing)}; pass "
                               f"{', '.join(f'{n}=...' for n in missing)} to Sequential(...) "
                               "or call model.compile(...).")

    def value_and_gradients(self, x: Array, y: Array, training: bool = True):
        """The loss on (x, y) and its gradient for every parameter, without updating anything.

        value = loss(model(x), y) + sum of regularization penalties; gradients include each
        regularizer's gradient. Both stay on the device.

        Returns:
            ``(value, grads)``: a 0-d array and {parameter name: array}.
        """
        self._require("loss")
        self._check_input(x)
        y_pred, backprop = self._forward(x, training, input_gradient=False)
        value, grad = self.loss(y_pred, y)
        backprop(grad)
        grads = {name: leaf.gradients[key] for name, leaf, key in self._slots
                 if leaf.trainable and key in leaf.gradients}
        for name, reg in self._regularized:
            leaf, key = self._where[name]
            if not leaf.trainable:  # a frozen weight's penalty is a constant: no gradient
                value = value + reg.penalty(leaf.parameters[key])
                continue
            w = leaf.parameters[key]
            value = value + reg.penalty(w)
            grads[name] = grads[name] + reg.gradient(w)
        return value, grads

    def train_step(self, x: Array, y: Array, augment: Any = None) -> Array:
        """One optimization step on the batch (x, y); returns the loss as a 0-d device array.

        Forward (training mode), loss + regularization penalties, backward, optimizer update,
        as one pure step over the model's state (:mod:`portanet.engine`), compiled where
        ``jit_compile`` says. Nothing is read back to the host. ``augment``: a
        ``pn.data.Augment`` applied to x inside the step.
        """
        self._require("loss", "optimizer")
        self._check_input(x)
        return self.engine.train_step(x, y, augment)

    # -- inspection ----------------------------------------------------------------------------
    def summary(self, input_shape: Shape | None = None, print_fn: Any = None) -> str:
        """A table of layers, output shapes and parameter counts, with the total.

        Args:
            input_shape: the per-sample input shape, e.g. (1, 28, 28); needed for output shapes
                unless the first layer is Dense.
            print_fn: called with the text (e.g. ``print``); None only returns it.

        Returns:
            The table as a string.
        """
        rows = [("#", "layer", "output shape", "params")] + [
            (row.index, row.label, row.shape_text, row.params_text)
            for row in plotting.summary_rows(self, input_shape)]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        line = "-" * (sum(widths) + 6)
        text = [f"{self.name or 'Sequential'} on {self.backend!r}, dtype {self.dtype}", line]
        for j, r in enumerate(rows):
            text.append(f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                        f"{r[3]:>{widths[3]}}")
            if j == 0:
                text.append(line)
        text += [line, f"Total parameters: {self.num_parameters:,}"]
        frozen = self.num_parameters - self.num_trainable_parameters
        if frozen:
            text += [f"Trainable parameters: {self.num_trainable_parameters:,}",
                     f"Frozen parameters: {frozen:,}"]
        out = "\n".join(text)
        if print_fn is not None:
            print_fn(out)
        return out

    def plot(self, path: Any = None, **kwargs: Any):
        """A picture of the layers: boxes with output shapes and parameter counts, arrows for
        the data flow, residual skips, framed containers (the rows of :meth:`summary`); see
        :func:`portanet.plotting.plot_model`. Returns the matplotlib Figure; writes ``path``
        (.png, .svg, .pdf by its suffix) when given."""
        return plotting.plot_model(self, path, **kwargs)

    # -- moving and configuration ----------------------------------------------------------------
    def to(self, backend: Any, device: Any = None) -> Sequential:
        """Move parameters, gradients, buffers AND optimizer state to ``backend`` on ``device``.

        Returns self. Training continues where it stopped: a float64 model moved between
        backends after some steps takes the same next steps as if it had never moved.
        """
        target = _resolve_backend(backend, device)
        self._move(target)
        if self.optimizer is not None:
            self.optimizer.to(target.name, target.device)
        self._last_backprop = None
        self.engine.reset()  # compiled for the old backend
        return self

    def get_config(self) -> dict:
        """JSON-able architecture, loss, optimizer, seed and dtype (no weights)."""
        return {
            "layers": [serialize(layer) for layer in self.layers],
            "loss": None if self.loss is None else self.loss.get_config(),
            "optimizer": None if self.optimizer is None else self.optimizer.get_config(),
            "seed": self.seed,
            "dtype": self.dtype,
            "name": self.name,
            "jit_compile": self.jit_compile,
        }

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        """Rebuild a model (same architecture, same seed, so the same initial weights)."""
        layers = [deserialize(c) for _, c in cls.child_configs(config)]
        loss = config.get("loss")
        optimizer = config.get("optimizer")
        return cls(layers, loss=None if loss is None else losses.get(loss),
                   optimizer=None if optimizer is None else optimizers.get(optimizer),
                   seed=config.get("seed"), dtype=config.get("dtype", "float32"),
                   name=config.get("name"), jit_compile=config.get("jit_compile", "auto"))

    # -- random state (a checkpoint resumes exactly) --------------------------------------------
    def _generators(self) -> dict[str, Generator]:
        return {prefix + "generator": leaf.generator for prefix, leaf in self.named_leaves()
                if isinstance(getattr(leaf, "generator", None), Generator)}

    def random_state(self) -> dict[str, Any]:
        """The state of every generator a training run draws from, for a checkpoint::

            {"layers": {"2.generator": {"kind", "seed", "state"}, ...},   Dropout & co.
             "fit": {"seed": 7, "augment": {"kind", "seed", "state"} or None}}

        ``fit``'s seed is enough for its shuffles and validation split: every shuffle order is
        a function of (seed, epoch). Its ``augment`` generator is the one a
        ``pn.data.Augment`` drew from in the last ``fit``. One host read per generator.
        """
        augment = self.fit_random.get("augment")
        generator = getattr(augment, "generator", None)
        return {
            "layers": {name: g.state_dict() for name, g in self._generators().items()},
            "fit": {"seed": self.fit_random.get("seed"),
                    "augment": generator.state_dict() if isinstance(generator, Generator)
                    else None},
        }

    def load_random_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`random_state`: the layers' generators at once; ``fit``'s seed
        and augmentation state wait for the next ``fit`` that resumes at ``initial_epoch ==
        model.epoch`` (with ``seed=None`` it takes the saved seed).

        Generators of another backend or device kind restart from their saved seeds instead
        (see :meth:`portanet.random.Generator.load_state_dict`).

        Raises:
            ValueError: ``state`` does not have the shape above, or names generators this
                model does not have.
        """
        if not isinstance(state, dict) or set(state) != {"layers", "fit"}:
            raise ValueError("a model's random state is {'layers': ..., 'fit': ...} (from "
                             f"model.random_state()), received {state!r:.200}.")
        layers, run = state["layers"], state["fit"]
        generators = self._generators()
        if not isinstance(layers, dict) or set(layers) != set(generators):
            names = sorted(layers) if isinstance(layers, dict) else layers
            raise ValueError(f"the saved random state has generators {names!r:.200}, this "
                             f"model has {sorted(generators)}.")
        if not isinstance(run, dict) or set(run) != {"seed", "augment"}:
            raise ValueError("the saved random state's 'fit' entry is {'seed': ..., "
                             f"'augment': ...}}, received {run!r:.200}.")
        seed = run["seed"]
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                                 or seed < 0):
            raise ValueError(f"the saved fit seed must be an int >= 0 or None, received "
                             f"{seed!r}.")
        for name, generator in generators.items():
            generator.load_state_dict(layers[name])
        self._resume_random = {"seed": seed, "augment": run["augment"]}

    # -- training and checkpoints: portanet.training and portanet.io (the floor below) ---------
    def fit(self, x: Array, y: Array, **kwargs: Any):
        """Train for several epochs; see :func:`portanet.training.fit`."""
        return training.fit(self, x, y, **kwargs)

    def evaluate(self, x: Array, y: Array, **kwargs: Any):
        """Loss and metrics on (x, y); see :func:`portanet.training.evaluate`."""
        return training.evaluate(self, x, y, **kwargs)

    def predict_proba(self, x: Array, **kwargs: Any):
        """Class probabilities; see :func:`portanet.training.predict_proba`."""
        return training.predict_proba(self, x, **kwargs)

    def predict_classes(self, x: Array, **kwargs: Any):
        """Predicted class ids; see :func:`portanet.training.predict_classes`."""
        return training.predict_classes(self, x, **kwargs)

    def save(self, path: Any, **kwargs: Any):
        """Save architecture, weights and optimizer state; see :func:`portanet.io.save`."""
        return io.save(self, path, **kwargs)

    def save_weights(self, path: Any, **kwargs: Any):
        """Save the parameters only; see :func:`portanet.io.save_weights`."""
        return io.save_weights(self, path, **kwargs)

    def load_weights(self, path: Any, **kwargs: Any):
        """Load parameters saved by :meth:`save_weights`; see :func:`portanet.io.load_weights`."""
        return io.load_weights(self, path, **kwargs)
