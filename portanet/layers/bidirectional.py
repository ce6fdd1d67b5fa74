"""Bidirectional: one recurrent layer reads the sequence forwards, a copy reads it backwards.

::

    y_fw = fw(x)                     h_t sees x_0 .. x_t
    y_bw = flip(bw(flip(x)))         h_t sees x_t .. x_{T-1}
    y    = merge(y_fw, y_bw)         concat (default) | sum | mul | ave

Backward: split dy by the merge (concat: the two halves; sum: dy to both; ave: dy / 2 to both;
mul: dy * y_bw and dy * y_fw), flip the backward half in time, and add the two layers' input
gradients: ``dx = dx_fw + flip(dx_bw)``.

**Masks and padding.** With a mask (padding anywhere; post-padding is usual) the backward
layer must read each sample's *real* steps in reverse, as PyTorch's packed bidirectional
layers do, not the padding first. No per-sample index is needed: the recurrent layers carry
their state unchanged through padded steps and output 0 there, so running ``bw`` on
``flip(x)`` with ``flip(mask)`` visits exactly the real steps of every sample, last to first,
whatever its length. Its final state is the state after x_0 (PyTorch's ``h_n[1]``), and its
outputs flipped back sit at their own time steps, zeros at padded ones.

Parameters are the two layers', named "forward.<name>" and "backward.<name>".
"""

from __future__ import annotations

from typing import Any

from .._typing import Array, Shape
from ..errors import abridged
from .base import Container, Layer, deserialize, register, serialize
from .gru import GRU
from .lstm import LSTM
from .recurrent import Recurrent, RecurrentOutput, _sizes_from_torch, _torch_arrays
from .rnn import SimpleRNN

__all__ = ["Bidirectional"]

MERGE_MODES = ("concat", "sum", "mul", "ave")


@register
class Bidirectional(Container):
    """Runs a recurrent layer forwards and a copy backwards in time, and merges the two.

    Args:
        layer: a SimpleRNN, LSTM or GRU; its ``return_sequences`` and ``return_state`` say
            what this layer returns.
        merge_mode: "concat" (default: features side by side, 2H), "sum", "mul" or "ave".
        backward_layer: the layer for the reversed direction (default: a fresh copy of
            ``layer``'s configuration, with its own weights).

    Call: ``forward(x, training=None, mask=None, initial_state=None)``; ``initial_state`` is
    a pair ``(forward_state, backward_state)``, each as the wrapped layer takes it, and then
    ``backprop(dy)`` returns ``(dx, (d_forward_state, d_backward_state))``. With
    ``return_state=True`` the output is ``(y, *forward_final_states, *backward_final_states)``
    (Keras' order) and ``backprop`` takes a tuple of the same structure.

    Shapes:
        input (N, T, F); output (N, 2H) for "concat" ((N, T, 2H) with return_sequences),
        (N, H) / (N, T, H) for the others. Parameters "forward.kernel", ...,
        "backward.kernel", ...

    Loading PyTorch weights: ``Bidirectional.from_torch(torch.nn.LSTM(F, H, batch_first=True,
    bidirectional=True))`` (or its state_dict), or ``layer.load_torch(module)``.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.bidirectional import Bidirectional
        >>> from portanet.layers.gru import GRU
        >>> layer = Bidirectional(GRU(2, 3, return_sequences=True)).build(seed=0)
        >>> y, backprop = layer.forward(pn.asarray([[[1.0, 0.0], [0.0, 1.0]]], dtype="float32"))
        >>> tuple(y.shape), sorted(layer.parameters())[:2]
        ((1, 2, 6), ['backward.bias', 'backward.kernel'])
    """

    supports_masking = True
    can_skip_input_gradient = True

    def __init__(self, layer: Any, merge_mode: str = "concat", backward_layer: Any = None,
                 name: str | None = None):
        super().__init__(name)
        if not isinstance(layer, Recurrent):
            raise TypeError(f"Bidirectional wraps a recurrent layer (SimpleRNN, LSTM, GRU), "
                            f"received {type(layer).__name__}.")
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"Bidirectional merge_mode must be one of {list(MERGE_MODES)}, "
                             f"received merge_mode={merge_mode!r}.")
        self._explicit_backward = backward_layer is not None
        if backward_layer is None:
            backward_layer = deserialize(serialize(layer))
        elif not isinstance(backward_layer, Recurrent):
            raise TypeError(f"Bidirectional backward_layer must be a recurrent layer, received "
                            f"{type(backward_layer).__name__}.")
        if type(backward_layer) is not type(layer):
            raise TypeError(f"Bidirectional's backward_layer must be a {type(layer).__name__} "
                            f"like the forward layer, received {type(backward_layer).__name__}.")
        if backward_layer is layer:
            raise ValueError("Bidirectional needs two layer objects (each keeps its own "
                             "gradients); leave backward_layer=None for a copy.")
        for attr in ("input_size", "return_sequences", "return_state"):
            if getattr(layer, attr) != getattr(backward_layer, attr):
                raise ValueError(
                    f"Bidirectional's two layers must agree on {attr}: the forward layer has "
                    f"{attr}={getattr(layer, attr)!r}, backward_layer has "
                    f"{getattr(backward_layer, attr)!r}.")
        if merge_mode != "concat" and layer.hidden_size != backward_layer.hidden_size:
            raise ValueError(f"merge_mode={merge_mode!r} adds or multiplies the two outputs, so "
                             f"they need one hidden_size; received {layer.hidden_size} and "
                             f"{backward_layer.hidden_size}. Use merge_mode='concat'.")
        self.forward_layer, self.backward_layer = layer, backward_layer
        self.merge_mode = merge_mode

    def children(self) -> list[tuple[str, Layer]]:
        return [("forward", self.forward_layer), ("backward", self.backward_layer)]

    @property
    def return_sequences(self) -> bool:
        return self.forward_layer.return_sequences

    @property
    def return_state(self) -> bool:
        return self.forward_layer.return_state

    # -- forward and backward ----------------------------------------------------------------
    def forward(self, x: Array, training: bool | None = None, mask: Array | None = None,
                initial_state: Any = None):
        """``(y, backprop)``; see the class docstring."""
        self.ensure_built(x)
        fw, bw = self.forward_layer, self.backward_layer
        if initial_state is None:
            init_fw = init_bw = None
        elif isinstance(initial_state, (tuple, list)) and len(initial_state) == 2:
            init_fw, init_bw = initial_state
        else:
            raise TypeError("Bidirectional initial_state must be a pair (forward_state, "
                            "backward_state), each as the wrapped layer takes it; received "
                            f"{type(initial_state).__name__}.")
        xp = fw._check_input(x, fw.parameters["kernel"])  # before flipping: clear errors
        fw._check_mask(xp, x, mask)
        sequences = self.return_sequences
        flip_mask = None if mask is None else xp.flip(mask, axis=1)
        out_f, fin_f, backprop_f = fw._apply(x, mask, init_fw, sequences)
        out_b, fin_b, backprop_b = bw._apply(xp.flip(x, axis=1), flip_mask, init_bw, sequences)
        if sequences:
            out_b = xp.flip(out_b, axis=1)  # back to the time steps the outputs describe
        mode = self.merge_mode
        if mode == "concat":
            y = xp.concat([out_f, out_b], axis=-1)
        elif mode == "sum":
            y = out_f + out_b
        elif mode == "mul":
            y = out_f * out_b
        else:
            y = 0.5 * (out_f + out_b)
        n_states = len(fin_f)
        if self.return_state:
            y = RecurrentOutput((y, *fin_f, *fin_b))
            y._owner = "Bidirectional"
        given = initial_state is not None
        h_f = out_f.shape[-1]

        def backprop(dy: Any, input_gradient: bool = True):
            if self.return_state:
                if not isinstance(dy, (tuple, list)) or len(dy) != 1 + 2 * n_states:
                    raise TypeError(
                        f"Bidirectional (return_state=True) backprop expects a tuple of "
                        f"{1 + 2 * n_states} gradients (d_output, forward states..., backward "
                        f"states...) like its output, received {type(dy).__name__}.")
                d_out, d_fin_f, d_fin_b = dy[0], tuple(dy[1:1 + n_states]), tuple(
                    dy[1 + n_states:])
            else:
                d_out, d_fin_f, d_fin_b = dy, (None,) * n_states, (None,) * n_states
            if d_out is None:
                d_f = d_b = None
            elif mode == "concat":
                d_f, d_b = d_out[..., :h_f], d_out[..., h_f:]
            elif mode == "sum":
                d_f = d_b = d_out
            elif mode == "mul":
                d_f, d_b = d_out * out_b, d_out * out_f
            else:
                d_f = d_b = 0.5 * d_out
            if d_b is not None and sequences:
                d_b = xp.flip(d_b, axis=1)
            dx_f, d0_f = backprop_f(d_f, d_fin_f, input_gradient)
            dx_b, d0_b = backprop_b(d_b, d_fin_b, input_gradient)
            dx = None if not input_gradient else dx_f + xp.flip(dx_b, axis=1)
            if not given:
                return dx
            return dx, (d0_f[0] if n_states == 1 else d0_f, d0_b[0] if n_states == 1 else d0_b)

        return y, backprop

    # -- the layer API -----------------------------------------------------------------------
    def compute_mask(self, x: Array, mask: Array | None) -> Array | None:
        """The input mask with ``return_sequences``, else None."""
        return mask if self.return_sequences else None

    def output_shape(self, input_shape: Shape) -> Shape:
        """The merged output's per-sample shape; with ``return_state=True`` a ValueError that
        says why a model cannot use it (see :meth:`state_shapes`)."""
        if self.return_state:
            raise ValueError(
                "Bidirectional with return_state=True returns a tuple (output, forward states, "
                f"backward states) of per-sample shapes {self.state_shapes(input_shape)}, not "
                "one array, so no layer or loss can follow it in a model. Use "
                "return_state=False inside a Sequential.")
        out_f = self.forward_layer.output_shape(input_shape)
        out_b = self.backward_layer.output_shape(input_shape)
        width = out_f[-1] + out_b[-1] if self.merge_mode == "concat" else out_f[-1]
        return (*tuple(out_f[:-1]), width)

    def state_shapes(self, input_shape: Shape) -> tuple[Shape, ...]:
        """Per-sample shapes of ``(output, *forward_states, *backward_states)``."""
        (out_f, *states_f) = self.forward_layer.state_shapes(input_shape)
        (out_b, *states_b) = self.backward_layer.state_shapes(input_shape)
        width = out_f[-1] + out_b[-1] if self.merge_mode == "concat" else out_f[-1]
        return ((*tuple(out_f[:-1]), width), *states_f, *states_b)

    def get_config(self) -> dict:
        return {"layer": serialize(self.forward_layer), "merge_mode": self.merge_mode,
                "backward_layer": (serialize(self.backward_layer) if self._explicit_backward
                                   else None),
                "name": self.name}

    @classmethod
    def child_configs(cls, config: dict) -> list[tuple[str, Any]]:
        """("forward", layer config), ("backward", backward_layer config or the same)."""
        if not isinstance(config, dict) or not isinstance(config.get("layer"), dict):
            raise ValueError(f"a Bidirectional config needs a 'layer' config (from "
                             f"get_config()), received {abridged(config)}.")
        backward = config.get("backward_layer") or config["layer"]
        return [("forward", config["layer"]), ("backward", backward)]

    @classmethod
    def from_config(cls, config: dict) -> Bidirectional:
        (_, fw), (_, bw) = cls.child_configs(config)
        return cls(deserialize(fw), merge_mode=config.get("merge_mode", "concat"),
                   backward_layer=deserialize(bw) if config.get("backward_layer") else None,
                   name=config.get("name"))

    def __repr__(self) -> str:
        extra = "" if self.merge_mode == "concat" else f", merge_mode={self.merge_mode!r}"
        return f"Bidirectional({self.forward_layer!r}{extra})"

    # -- PyTorch weights ---------------------------------------------------------------------
    @classmethod
    def from_torch(cls, source: Any, dtype: Any = "float32", backend: Any = None,
                   merge_mode: str = "concat", **kwargs: Any) -> Bidirectional:
        """A built Bidirectional from a ``torch.nn.{RNN, LSTM, GRU}`` with
        ``bidirectional=True`` (one layer, ``batch_first=True``) or its ``state_dict()``.

        The layer class comes from the module's type (from a state dict: 1, 3 or 4 gates give
        SimpleRNN, GRU, LSTM); ``kwargs`` go to its constructor. With ``merge_mode="concat"``
        and ``return_sequences=True`` the output is torch's ``output``.
        """
        by_module = {"RNN": SimpleRNN, "LSTM": LSTM, "GRU": GRU}
        by_gates = {1: SimpleRNN, 3: GRU, 4: LSTM}
        if hasattr(source, "state_dict") and callable(source.state_dict):
            kind = type(source).__name__
            if kind not in by_module:
                raise TypeError("Bidirectional.from_torch expects a torch.nn.RNN, LSTM or GRU "
                                f"(or its state_dict), received {type(source).__name__}.")
            layer_cls = by_module[kind]
        elif isinstance(source, dict) and "weight_hh_l0" in source:
            w_hh = source["weight_hh_l0"]
            gates = w_hh.shape[0] // max(w_hh.shape[1], 1)
            if gates not in by_gates:
                raise ValueError(f"Bidirectional.from_torch: weight_hh_l0 of shape "
                                 f"{tuple(w_hh.shape)} is not an RNN's, GRU's or LSTM's.")
            layer_cls = by_gates[gates]
        else:
            raise TypeError("Bidirectional.from_torch expects a torch.nn.RNN, LSTM or GRU with "
                            "bidirectional=True, or its state_dict(); received "
                            f"{type(source).__name__}.")
        owner = "Bidirectional.from_torch"
        arrays, module = _torch_arrays(source, layer_cls.torch_module, True, owner)
        config = _sizes_from_torch(arrays, layer_cls.gates, "", owner)
        if module is not None and layer_cls.torch_module == "RNN":
            kwargs.setdefault("activation", module.nonlinearity)
        layer = cls(layer_cls(**config, **kwargs), merge_mode=merge_mode)
        layer.build(seed=0, dtype=dtype, backend=backend)
        layer.forward_layer._load_torch_arrays(arrays, "")
        layer.backward_layer._load_torch_arrays(arrays, "_reverse")
        return layer

    def load_torch(self, source: Any) -> Bidirectional:
        """Copy a bidirectional torch module's (or state dict's) weights: ``*_l0`` into
        "forward.*", ``*_l0_reverse`` into "backward.*"; returns self."""
        fw, bw = self.forward_layer, self.backward_layer
        arrays, module = _torch_arrays(source, fw.torch_module, True,
                                       "Bidirectional.load_torch")
        fw._check_torch_module(module)
        if not self.built:
            self.build(seed=0)
        fw._load_torch_arrays(arrays, "")
        bw._load_torch_arrays(arrays, "_reverse")
        return self
