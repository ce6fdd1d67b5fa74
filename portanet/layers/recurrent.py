"""What SimpleRNN, LSTM and GRU share: the time loop, masks, states, weight gradients, loading.

A recurrent layer reads a batch of sequences ``x`` (N, T, F), batch first, one step at a time,
carrying a state from step to step. Each layer is a *cell* (rnn.py, lstm.py, gru.py: the gates,
forward and backward, written out) inside the loop written here once::

    xw = x @ W + b                       all T steps in ONE matmul: (T*N, F) @ (F, G*H), time-
                                         major rows, so step t is one contiguous block
    for t = 0 .. T-1:                    (the loop: T is a static shape, a Python loop is fine)
        hu_t = h_{t-1} @ U (+ b_h)       the recurrent half of every gate: (N, H) @ (H, G*H)
        state_t = cell(xw_t, hu_t, state_{t-1})
        y_t = h_t

G is the number of gates (SimpleRNN 1, GRU 3, LSTM 4) and H the hidden size. Kernels are stored
``W`` (F, G*H) and ``U`` (H, G*H), the gates side by side in PyTorch's order, so the forward
pass is ``x @ W`` with no transpose and ``W = weight_ih_l0.T``.

Backpropagation through time (BPTT) walks the same loop backwards. With ``g_t`` = dL/dstate_t
(from step t+1, plus dL/dy_t from the output)::

    for t = T-1 .. 0:
        dxw_t, dhu_t, direct = cell_backward(g_t)      the gates' chain rule (the cell's file)
        dh_{t-1} = dhu_t @ U^T + direct_h              the recurrence: back through U
    dL/dU = sum_t h_{t-1}^T dhu_t        = H_prev^T @ dHU   ONE matmul over all steps
    dL/dW = sum_t x_t^T dxw_t            = X^T @ dXW        ONE matmul
    dL/db = sum_t sum_n dxw_t[n]
    dL/dx_t = dxw_t @ W^T                                  ONE matmul

Only ``dhu_t @ U^T`` has to be inside the loop (it feeds the next step back); every other
product waits until the loop is done and runs as one large matmul on the stacked steps.

**Masks** (N, T), True at real steps: a padded step carries the state through unchanged and
outputs zeros (what ``torch.nn.utils.rnn.pad_packed_sequence`` gives)::

    state_t = where(m_t, cell(...), state_{t-1})      y_t = where(m_t, h_t, 0)

so padded steps may sit anywhere (post-padding is usual), the state at the end is each
sample's state after its last real step, and in the backward pass the gradient of a padded
step goes straight to the previous state (``where(m_t, 0, g_t)``) while the cell receives
``where(m_t, g_t, 0)``: padded inputs get a gradient of exactly 0 and change nothing. Padded
inputs are zeroed before the matmul, so even NaN padding cannot leak in.

Examples:
    >>> import portanet as pn
    >>> from portanet.layers.lstm import LSTM
    >>> layer = LSTM(3, 4, return_sequences=True).build(seed=0)
    >>> x = pn.asarray([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype="float32")  # N=1, T=2, F=3
    >>> y, backprop = layer.forward(x)
    >>> tuple(y.shape), tuple(backprop(y).shape)
    ((1, 2, 4), (1, 2, 3))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import array_api_compat as compat

from .. import initializers, regularizers
from .._typing import Array, Shape
from ..backend import adapter_of
from ..devices import namespace_of, to_numpy
from .base import Layer, _host_to_backend, _positive_int, dtype_name

__all__ = ["Recurrent", "RecurrentOutput", "gate_sigmoid"]


def _flag(value: Any, what: str, layer: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{layer} {what} must be True or False, received {what}={value!r}.")
    return value


class RecurrentOutput(tuple):
    """``(output, h_T)`` or ``(output, h_T, c_T)``: what a layer with ``return_state=True``
    returns. A plain tuple, except that code expecting one array (the next layer of a
    Sequential) gets a clear error instead of an AttributeError."""

    _ARRAY_ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "device", "T", "mT", "size",
                                   "__array_namespace__"})
    _owner = "a recurrent layer"

    def __getattr__(self, name: str):
        if name in RecurrentOutput._ARRAY_ATTRIBUTES:
            raise TypeError(
                f"{self._owner} with return_state=True returns a tuple (output, *final_states) "
                f"of {len(self)} arrays, not one array, so it cannot feed another layer (inside "
                "a Sequential, for example). Use return_state=False there, or call the layer "
                "directly: (output, *states), backprop = layer.forward(x).")
        raise AttributeError(name)


class Recurrent(Layer):
    """Base class of the recurrent layers: the time loop around a cell (see module docstring).

    A subclass sets ``gates`` (G), ``state_names`` and ``torch_module``, and implements the
    cell: ``_cell(xp, xw_t, hu_t, states, k) -> (new_states, tape)`` and
    ``_cell_backward(xp, tape, d_states, k) -> (dxw_t, dhu_t, direct)``, where ``direct``
    holds the gradient of each previous state along the paths that do not pass through ``U``
    (None where there is none) and ``k`` is what ``_constants`` made for this call.

    Call: ``y, backprop = layer.forward(x, training=None, mask=None, initial_state=None)``.

    * ``y`` is the output: the last state h (N, H) (``return_sequences=False``), or every
      step's h (N, T, H); with ``return_state=True`` the tuple ``(output, *final_states)``.
    * ``backprop(dy)`` takes dL/dy of the same structure (with ``return_state``, a tuple whose
      entries may be None for zero) and returns dL/dx (N, T, F); when ``initial_state`` was
      given, it returns ``(dx, d_initial_state)``, ``d_initial_state`` structured like
      ``initial_state``.
    """

    compiles_well = False  # the unrolled time loop: slower under jax.jit (Layer.compiles_well)
    gates: ClassVar[int] = 1
    state_names: ClassVar[tuple[str, ...]] = ("h",)
    torch_module: ClassVar[str] = "RNN"
    has_recurrent_bias: ClassVar[bool] = False
    supports_masking = True
    can_skip_input_gradient = True

    def __init__(self, input_size: int, hidden_size: int, return_sequences: bool = False,
                 return_state: bool = False, use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(name)
        kind = type(self).__name__
        self.input_size = _positive_int(input_size, "input_size", kind)
        self.hidden_size = _positive_int(hidden_size, "hidden_size", kind)
        self.return_sequences = _flag(return_sequences, "return_sequences", kind)
        self.return_state = _flag(return_state, "return_state", kind)
        self.use_bias = _flag(use_bias, "use_bias", kind)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.regularizers = {"kernel": regularizers.get(kernel_regularizer),
                             "recurrent_kernel": regularizers.get(recurrent_regularizer)}
        if self.use_bias:
            self.regularizers["bias"] = regularizers.get(bias_regularizer)
            if self.has_recurrent_bias:
                self.regularizers["recurrent_bias"] = regularizers.get(bias_regularizer)

    # -- parameters ------------------------------------------------------------------------------
    def _bias_init(self) -> initializers.Initializer:
        return self.bias_initializer

    def parameter_specs(self):
        width = self.gates * self.hidden_size
        specs = {"kernel": ((self.input_size, width), self.kernel_initializer),
                 "recurrent_kernel": ((self.hidden_size, width), self.recurrent_initializer)}
        if self.use_bias:
            specs["bias"] = ((width,), self._bias_init())
            if self.has_recurrent_bias:
                specs["recurrent_bias"] = ((width,), self.bias_initializer)
        return specs

    # -- the cell (subclasses) -------------------------------------------------------------------
    def _constants(self, xp, x: Array) -> Any:
        """Arrays the cell uses at every step, made once per call on ``x``'s device."""
        return None

    def _cell(self, xp, xw_t: Array, hu_t: Array, states: tuple[Array, ...], k: Any):
        raise NotImplementedError

    def _cell_backward(self, xp, tape: Any, d_states: tuple[Array, ...], k: Any):
        raise NotImplementedError

    # -- checks ----------------------------------------------------------------------------------
    def _check_input(self, x: Array, w: Array):
        kind = type(self).__name__
        if not hasattr(x, "shape") or x.ndim != 3:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(
                f"{kind} expects input of shape (batch, time, features) = (N, T, "
                f"{self.input_size}), received {shape}. Add a batch axis for one sequence "
                "(x[None]); token ids (N, T) need an Embedding first.")
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{kind} expected {self.input_size} features per time step (input_size="
                f"{self.input_size}), received input of shape {tuple(x.shape)}. Fix input_size "
                "or the data's last axis.")
        if x.shape[1] == 0:
            raise ValueError(f"{kind} needs at least one time step, received input of shape "
                             f"{tuple(x.shape)}.")
        self._check_dtype(x, w)
        return adapter_of(x).xp

    def _check_mask(self, xp, x: Array, mask: Array | None) -> None:
        if mask is None:
            return
        kind = type(self).__name__
        if not hasattr(mask, "shape"):
            raise TypeError(f"{kind} mask must be a boolean array (N, T), received "
                            f"{type(mask).__name__}.")
        namespace_of(x, mask)
        if not xp.isdtype(mask.dtype, "bool"):
            raise TypeError(
                f"{kind} mask must be boolean (True at real time steps), received dtype "
                f"{dtype_name(mask.dtype)}. Build one with portanet.ops.sequence_mask(lengths, "
                "T), or compare: mask = lengths_mask > 0.")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"{kind} mask must have shape (N, T) = {tuple(x.shape[:2])} like the input "
                f"{tuple(x.shape)}, received mask of shape {tuple(mask.shape)}.")

    def _check_state(self, xp, x: Array, state: Any, what: str) -> Array:
        kind = type(self).__name__
        n, h = x.shape[0], self.hidden_size
        if not hasattr(state, "shape"):
            raise TypeError(f"{kind} {what} must be an array of shape (N, H) = ({n}, {h}), "
                            f"received {type(state).__name__}.")
        namespace_of(x, state)
        if tuple(state.shape) != (n, h):
            raise ValueError(f"{kind} {what} must have shape (N, H) = ({n}, {h}), received "
                             f"shape {tuple(state.shape)}.")
        if state.dtype != x.dtype:
            raise TypeError(f"{kind} {what} must have the input's dtype {dtype_name(x.dtype)}, "
                            f"received {dtype_name(state.dtype)}.")
        return state

    def _initial_states(self, xp, x: Array, initial_state: Any) -> tuple[Array, ...]:
        """The states at t = -1: zeros, or the caller's, checked."""
        names = self.state_names
        if initial_state is None:
            zeros = xp.zeros((x.shape[0], self.hidden_size), dtype=x.dtype,
                             device=compat.device(x))
            return (zeros,) * len(names)
        if len(names) == 1:
            return (self._check_state(xp, x, initial_state, "initial_state"),)
        if not isinstance(initial_state, (tuple, list)) or len(initial_state) != len(names):
            wanted = ", ".join(n + "0" for n in names)
            got = type(initial_state).__name__
            if isinstance(initial_state, (tuple, list)):
                got += f" of length {len(initial_state)}"
            raise TypeError(f"{type(self).__name__} initial_state must be a tuple ({wanted}) of "
                            f"{len(names)} arrays (N, H), received {got}.")
        return tuple(self._check_state(xp, x, s, f"initial state {n}0")
                     for s, n in zip(initial_state, names, strict=True))

    # -- the loop --------------------------------------------------------------------------------
    def _apply(self, x: Array, mask: Array | None, initial_state: Any, sequences: bool):
        """``(output, final_states, backprop)`` with ``backprop(d_output, d_final_states,
        input_gradient=True) -> (dx, d_initial_states)``; what ``forward`` and Bidirectional
        build on. ``d_output`` and entries of ``d_final_states`` may be None (zero)."""
        self.ensure_built(x)
        p = self.parameters
        w, u = p["kernel"], p["recurrent_kernel"]
        b, bh = p.get("bias"), p.get("recurrent_bias")
        xp = self._check_input(x, w)
        self._check_mask(xp, x, mask)
        states = self._initial_states(xp, x, initial_state)
        n, steps, features = x.shape
        width = self.gates * self.hidden_size

        # Time-major rows (T*N, F), so step t's rows are one contiguous block.
        xs = xp.reshape(xp.permute_dims(x, (1, 0, 2)), (steps * n, features))
        if mask is not None:
            keep = xp.reshape(xp.permute_dims(mask, (1, 0)), (steps * n, 1))
            xs = xp.where(keep, xs, 0.0)  # padding may hold anything, even NaN
            masks = xp.unstack(xp.reshape(xp.permute_dims(mask, (1, 0)), (steps, n, 1)), axis=0)
        # The input half of every gate, for all steps at once: xw = x @ W + b.
        xw = xs @ w
        if b is not None:
            xw += b  # into the product nothing else holds (JAX rebinds)
        xw = xp.unstack(xp.reshape(xw, (steps, n, width)), axis=0)  # T views (N, G*H)
        k = self._constants(xp, x)

        h_prev, tapes, outputs = [], [], []
        for t in range(steps):
            if t == 0 and initial_state is None:  # h_{-1} = 0: no product to compute
                hu = xp.zeros((n, width), dtype=x.dtype, device=compat.device(x))
            else:
                hu = states[0] @ u
            if bh is not None:
                hu += bh
            new, tape = self._cell(xp, xw[t], hu, states, k)
            h_prev.append(states[0])
            tapes.append(tape)
            if mask is None:
                states = new
                if sequences:
                    outputs.append(new[0])
            else:
                m = masks[t]  # (N, 1): padded samples carry their state through this step
                states = tuple(xp.where(m, s, s_old) for s, s_old in zip(new, states, strict=True))
                if sequences:
                    outputs.append(xp.where(m, new[0], 0.0))
        output = xp.stack(outputs, axis=1) if sequences else states[0]
        final = states

        def backprop(d_output: Array | None, d_final: tuple, input_gradient: bool = True):
            zero = []  # one zeros array, made only if some gradient is missing

            def zeros():
                if not zero:
                    zero.append(xp.zeros_like(final[0]))
                return zero[0]

            # g = dL/dstate_t, starting at t = T-1 with the final states' gradients.
            g = [zeros() if d is None else d for d in d_final]
            if d_output is not None and not sequences:
                g[0] = g[0] + d_output  # the output is the final h
            d_steps = xp.unstack(d_output, axis=1) if d_output is not None and sequences \
                else None
            d_xw, d_hu = [None] * steps, [None] * steps
            # U^T laid out row by row, once: the loop's product dz @ U^T then takes ~30% less
            # time (NumPy and torch CPU) than with the transposed view of U.
            ut = _row_major(xp, u.T)
            for t in range(steps - 1, -1, -1):
                d_new = list(g)
                if d_steps is not None:
                    d_new[0] = d_new[0] + d_steps[t]  # y_t = h_t
                carried = None
                if mask is not None:
                    # A padded step passed the state through unchanged and output a constant
                    # 0: its state gradient goes straight to step t-1, y_t's is dropped.
                    m = masks[t]
                    carried = [xp.where(m, 0.0, gi) for gi in g]
                    d_new = [xp.where(m, di, 0.0) for di in d_new]
                d_xw[t], d_hu[t], direct = self._cell_backward(xp, tapes[t], tuple(d_new), k)
                if t == 0 and initial_state is None:
                    g = [None] * len(g)  # the zero initial state needs no gradient
                    break
                # The recurrence: h_{t-1} reached every gate through hu_t = h_{t-1} @ U.
                g = [d_hu[t] @ ut] + [None] * (len(g) - 1)
                for i, d in enumerate(direct):
                    if d is not None:
                        g[i] = d if g[i] is None else g[i] + d
                    if carried is not None:
                        g[i] = carried[i] if g[i] is None else g[i] + carried[i]
                g = [zeros() if gi is None else gi for gi in g]
            # Everything else waits for the loop: one matmul each over all T*N rows.
            dxw = xp.reshape(xp.stack(d_xw), (steps * n, width))
            dhu = dxw if d_hu[0] is d_xw[0] else xp.reshape(xp.stack(d_hu), (steps * n, width))
            hs = xp.reshape(xp.stack(h_prev), (steps * n, self.hidden_size))
            self.gradients["kernel"] = xs.T @ dxw
            self.gradients["recurrent_kernel"] = hs.T @ dhu
            if b is not None:
                self.gradients["bias"] = xp.sum(dxw, axis=0)
            if bh is not None:
                self.gradients["recurrent_bias"] = xp.sum(dhu, axis=0)
            if not input_gradient:
                return None, tuple(g)
            dx = dxw @ w.T
            if mask is not None:
                dx = xp.where(keep, dx, 0.0)  # the derivative of the where above
            return xp.permute_dims(xp.reshape(dx, (steps, n, features)), (1, 0, 2)), tuple(g)

        return output, final, backprop

    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None,
                initial_state: Any = None):
        """``(y, backprop)``; see the class docstring for ``y``, ``mask`` and
        ``initial_state``. ``training`` is accepted for the layer contract (no dropout)."""
        output, final, apply_backprop = self._apply(x, mask, initial_state,
                                                    self.return_sequences)
        if self.return_state:
            y = RecurrentOutput((output, *final))
            y._owner = type(self).__name__
        else:
            y = output
        given = initial_state is not None

        def backprop(dy: Any, input_gradient: bool = True):
            d_output, d_final = self._split_gradient(dy, output, final)
            dx, d0 = apply_backprop(d_output, d_final, input_gradient)
            if not given:
                return dx
            return dx, (d0[0] if len(d0) == 1 else d0)

        return y, backprop

    def _split_gradient(self, dy: Any, output: Array, final: tuple) -> tuple[Any, tuple]:
        """(dL/d_output, dL/d_final_states) from what backprop received."""
        kind = type(self).__name__
        if not self.return_state:
            parts = (dy,)
        elif isinstance(dy, (tuple, list)) and len(dy) == 1 + len(final):
            parts = tuple(dy)
        else:
            got = f"a {type(dy).__name__} of length {len(dy)}" if isinstance(
                dy, (tuple, list)) else type(dy).__name__
            raise TypeError(
                f"{kind} (return_state=True) backprop expects a tuple (d_output, "
                f"{', '.join('d_' + n + '_T' for n in self.state_names)}) like its output, "
                f"received {got}. Use None for a part with no gradient.")
        for part, like, what in zip(parts, (output, *final),
                                    ("output", *(n + "_T" for n in self.state_names)),
                                    strict=False):
            if part is not None and tuple(part.shape) != tuple(like.shape):
                raise ValueError(f"{kind} backprop received a gradient of shape "
                                 f"{tuple(part.shape)} for its {what} of shape "
                                 f"{tuple(like.shape)}.")
        if not self.return_state:
            return dy, (None,) * len(final)
        return parts[0], parts[1:]

    # -- the layer API ---------------------------------------------------------------------------
    def compute_mask(self, x: Array, mask: Array | None) -> Array | None:
        """The input mask with ``return_sequences`` (one output per step), else None."""
        return mask if self.return_sequences else None

    def output_shape(self, input_shape: Shape) -> Shape:
        """(T, H) or (H,) from a per-sample (T, F).

        With ``return_state=True`` the layer returns a tuple, which a model cannot pass on:
        this raises a ValueError that says so (``Sequential.summary`` and ``fit`` ask first);
        :meth:`state_shapes` gives the shapes of the whole tuple."""
        kind = type(self).__name__
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[-1] != self.input_size:
            raise ValueError(
                f"{kind} expects per-sample input (time, features) = (T, {self.input_size}), "
                f"received per-sample shape {shape}. Fix input_size or the data.")
        out = (shape[0], self.hidden_size) if self.return_sequences else (self.hidden_size,)
        if self.return_state:
            raise ValueError(
                f"{kind} with return_state=True returns a tuple (output, "
                f"{', '.join(n + '_T' for n in self.state_names)}) of per-sample shapes "
                f"{self.state_shapes(shape)}, not one array, so no layer or loss can follow it "
                "in a model. Use return_state=False inside a Sequential.")
        return out

    def state_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """Per-sample shapes of what ``forward`` returns with ``return_state=True``:
        ``(output shape, (H,), ...)``, one (H,) per state."""
        flat = type(self).from_config({**self.get_config(), "return_state": False})
        return (flat.output_shape(input_shape),
                *((self.hidden_size,),) * len(self.state_names))

    def get_config(self) -> dict:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer.get_config(),
            "recurrent_initializer": self.recurrent_initializer.get_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": regularizers.serialize(self.regularizers["kernel"]),
            "recurrent_regularizer": regularizers.serialize(
                self.regularizers["recurrent_kernel"]),
            "bias_regularizer": regularizers.serialize(self.regularizers.get("bias")),
            "name": self.name,
        }

    # -- PyTorch weights -------------------------------------------------------------------------
    @classmethod
    def from_torch(cls, source: Any, dtype: Any = "float32", backend: Any = None,
                   **kwargs: Any) -> Recurrent:
        """A built layer holding the weights of a ``torch.nn.{RNN, LSTM, GRU}`` (one layer,
        ``batch_first=True``) or of its ``state_dict()`` (tensors or NumPy arrays).

        Sizes and ``use_bias`` come from the weights (SimpleRNN's activation from the module's
        ``nonlinearity``); ``kwargs`` go to the constructor (``return_sequences=True`` gives
        torch's ``output``, ``return_state=True`` its ``h_n`` too).
        """
        arrays, module = _torch_arrays(source, cls.torch_module, bidirectional=False,
                                       owner=f"{cls.__name__}.from_torch")
        config = _sizes_from_torch(arrays, cls.gates, "", f"{cls.__name__}.from_torch")
        if module is not None and cls.torch_module == "RNN":
            kwargs.setdefault("activation", module.nonlinearity)
        layer = cls(**config, **kwargs).build(seed=0, dtype=dtype, backend=backend)
        layer._load_torch_arrays(arrays, "")
        return layer

    def load_torch(self, source: Any) -> Recurrent:
        """Copy the weights of a ``torch.nn.{RNN, LSTM, GRU}`` module (one layer,
        ``batch_first=True``) or of its ``state_dict()`` into this layer; returns self.

        ``kernel = weight_ih_l0.T``, ``recurrent_kernel = weight_hh_l0.T`` and ``bias =
        bias_ih_l0 + bias_hh_l0`` (GRU keeps ``recurrent_bias = bias_hh_l0`` apart). An unbuilt
        layer is built first on the active backend in float32.
        """
        arrays, module = _torch_arrays(source, self.torch_module, bidirectional=False,
                                       owner=f"{type(self).__name__}.load_torch")
        self._check_torch_module(module)
        if not self.built:
            self.build(seed=0)
        self._load_torch_arrays(arrays, "")
        return self

    def _check_torch_module(self, module: Any) -> None:
        """SimpleRNN checks the nonlinearity; the gates say the rest."""

    def _torch_values(self, arrays: dict, suffix: str) -> dict[str, Any]:
        """Our parameters (float64 host arrays) from torch's: transpose, add the biases."""
        values = {"kernel": arrays["weight_ih_l0" + suffix].T,
                  "recurrent_kernel": arrays["weight_hh_l0" + suffix].T}
        if self.use_bias:
            values["bias"] = arrays["bias_ih_l0" + suffix] + arrays["bias_hh_l0" + suffix]
        return values

    def _load_torch_arrays(self, arrays: dict, suffix: str) -> None:
        owner = type(self).__name__
        g, h, f = self.gates, self.hidden_size, self.input_size
        expected = {"weight_ih_l0": (g * h, f), "weight_hh_l0": (g * h, h)}
        if self.use_bias:
            expected.update({"bias_ih_l0": (g * h,), "bias_hh_l0": (g * h,)})
        has_bias = "bias_ih_l0" + suffix in arrays
        if has_bias != self.use_bias:
            raise ValueError(
                f"{owner}(use_bias={self.use_bias}) cannot take torch weights "
                f"{'with' if has_bias else 'without'} biases; build the layer with "
                f"use_bias={has_bias} (torch's bias={has_bias}).")
        for key, shape in expected.items():
            got = tuple(arrays[key + suffix].shape)
            if got != shape:
                raise ValueError(
                    f"{owner}(input_size={f}, hidden_size={h}) expects torch's {key + suffix} "
                    f"of shape {shape} ({g} gate{'s' if g > 1 else ''} of {h}), received shape "
                    f"{got}. Build the layer with the module's input_size and hidden_size "
                    f"(or use {owner}.from_torch).")
        backend = self.backend
        values = {k: _host_to_backend(v, self.dtype, backend)
                  for k, v in self._torch_values(arrays, suffix).items()}
        self.set_named_parameters(values)


def _row_major(xp, a: Array) -> Array:
    """``a`` (2-D) as a row-by-row array: itself where it already is one, else a copy."""
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def gate_sigmoid(z: Array, xp: Any = None) -> Array:
    """The logistic function of the gates, as ``(1 + tanh(z / 2)) / 2``.

    The same function as :func:`portanet.activations.sigmoid` (sigmoid(z) = (1 + tanh(z/2)) / 2
    exactly), with one transcendental call instead of two ``exp``: 2.5x faster on NumPy and
    torch CPU, where the gates of every step pay for it. It never overflows and is accurate to
    a few ulp in absolute terms; values below ~1e-8 (float32) round to 0, which a gate, a
    factor in a product, does not notice. Its derivative is s (1 - s), from the output.
    ``xp``: ``z``'s namespace where the caller has it (the loop calls this T times).

    Examples:
        >>> import numpy as np
        >>> [round(v, 6) for v in gate_sigmoid(np.asarray([-1000.0, 0.0, 2.0])).tolist()]
        [0.0, 0.5, 0.880797]
    """
    xp = compat.array_namespace(z) if xp is None else xp
    return 0.5 * xp.tanh(0.5 * z) + 0.5


# ---------------------------------------------------------------------------------------------
# Reading torch modules and state dicts (torch itself is never imported here)
# ---------------------------------------------------------------------------------------------
_TORCH_KEYS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def _torch_arrays(source: Any, kind: str, bidirectional: bool,
                  owner: str) -> tuple[dict[str, Any], Any]:
    """(float64 host arrays by torch's names, the module or None), after the checks."""
    module = None
    if hasattr(source, "state_dict") and callable(source.state_dict):
        module = source
        found = type(module).__name__
        if found != kind:
            raise TypeError(f"{owner} expects a torch.nn.{kind} (or its state_dict), received "
                            f"a {type(module).__module__}.{found}.")
        if getattr(module, "num_layers", 1) != 1:
            raise ValueError(
                f"{owner} loads one layer, received a torch.nn.{kind} with num_layers="
                f"{module.num_layers}. Stack one portanet layer per torch layer "
                "(return_sequences=True) and load each from its own single-layer module.")
        if not getattr(module, "batch_first", True):
            raise ValueError(
                f"{owner}: portanet's recurrent layers are batch-first (N, T, F); received a "
                f"torch.nn.{kind} with batch_first=False. Build it with batch_first=True (the "
                "weights are the same), or pass module.state_dict() and transpose your inputs "
                "to (N, T, F).")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{owner} has no LSTM projection; received proj_size="
                             f"{module.proj_size}. Use proj_size=0.")
        if bool(getattr(module, "bidirectional", False)) != bidirectional:
            hint = ("use Bidirectional.from_torch" if module.bidirectional
                    else "Bidirectional needs a torch module with bidirectional=True")
            raise ValueError(f"{owner} received a torch.nn.{kind} with bidirectional="
                             f"{module.bidirectional}: {hint}.")
        state = module.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError(f"{owner} expects a torch.nn.{kind} module or its state_dict() (names "
                        f"-> tensors or NumPy arrays), received {type(source).__name__}.")
    suffixes = ("", "_reverse") if bidirectional else ("",)
    known = {k + s for k in _TORCH_KEYS for s in suffixes}
    unknown = sorted(k for k in state if k not in known)
    if unknown:
        deeper = [k for k in unknown if "_l" in k and not k.endswith(("_l0", "_l0_reverse"))]
        if any(k.startswith("weight_hr") for k in unknown):
            raise ValueError(f"{owner} has no LSTM projection; the state dict holds "
                             f"{[k for k in unknown if k.startswith('weight_hr')]} "
                             "(proj_size > 0). Use proj_size=0.")
        if deeper:
            raise ValueError(f"{owner} loads one layer; the state dict holds more: {deeper} "
                             "(num_layers > 1). Load each layer into its own portanet layer.")
        if any(k.endswith("_reverse") for k in unknown):
            raise ValueError(f"{owner} received bidirectional weights {unknown}: use "
                             "Bidirectional.from_torch.")
        raise ValueError(f"{owner} received unknown torch names {unknown}; a single-layer "
                         f"torch.nn.{kind} has {sorted(known)}.")
    for s in suffixes:
        missing = [k + s for k in _TORCH_KEYS[:2] if k + s not in state]
        if missing:
            raise ValueError(f"{owner}: the state dict lacks {missing}; received "
                             f"{sorted(state)}.")
    arrays = {}
    for key, value in state.items():
        try:
            host = to_numpy(value)
        except TypeError:
            raise TypeError(f"{owner}: {key!r} must be a tensor or a NumPy array, received "
                            f"{type(value).__name__}.") from None
        hxp = compat.array_namespace(host)
        arrays[key] = hxp.astype(hxp.asarray(host), hxp.float64)
    return arrays, module


def _sizes_from_torch(arrays: dict, gates: int, suffix: str, owner: str) -> dict[str, Any]:
    """input_size, hidden_size and use_bias read from the weights' shapes."""
    w_ih, w_hh = arrays["weight_ih_l0" + suffix], arrays["weight_hh_l0" + suffix]
    if w_ih.ndim != 2 or w_hh.ndim != 2:
        raise ValueError(f"{owner}: weight_ih_l0 and weight_hh_l0 must be matrices, received "
                         f"shapes {tuple(w_ih.shape)} and {tuple(w_hh.shape)}.")
    hidden = w_hh.shape[1]
    if w_ih.shape[0] != gates * hidden or w_hh.shape[0] != gates * hidden:
        found = w_hh.shape[0] // max(hidden, 1)
        names = {1: "an RNN's", 3: "a GRU's", 4: "an LSTM's"}
        raise ValueError(
            f"{owner} expects {gates} gate{'s' if gates > 1 else ''} of hidden_size {hidden}: "
            f"weight_ih_l0 ({gates * hidden}, F) and weight_hh_l0 ({gates * hidden}, {hidden}); "
            f"received {tuple(w_ih.shape)} and {tuple(w_hh.shape)}, "
            f"{names.get(found, f'{found} gates')} weights.")
    return {"input_size": w_ih.shape[1], "hidden_size": hidden,
            "use_bias": "bias_ih_l0" + suffix in arrays}
