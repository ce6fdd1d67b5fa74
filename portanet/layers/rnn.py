"""SimpleRNN (Elman, 1990): one activation over the input and the previous state.

Forward, one step (the time loop, the masks and the weight gradients are in recurrent.py)::

    a_t = x_t W + b + h_{t-1} U             (N, H)
    h_t = phi(a_t)                          phi = tanh (default) or relu, or any activation

Backward through the step (BPTT), given dh = dL/dh_t::

    da_t     = dh * phi'(a_t)               (tanh' = 1 - h_t^2, relu' = [h_t > 0])
    dh_{t-1} = da_t @ U^T

Every step multiplies the gradient by ``phi'(a) U^T``: over many steps it shrinks or grows
geometrically (Bengio et al., 1994), which is why LSTM and GRU add paths without that factor.
Clip gradients by their global norm when training one (``global_clip_norm=`` of any optimizer).

Parameters: "kernel" W (F, H) = ``weight_ih_l0.T``, "recurrent_kernel" U (H, H) =
``weight_hh_l0.T``, "bias" b (H,) = ``bias_ih_l0 + bias_hh_l0``.
"""

from __future__ import annotations

from typing import Any

from .._typing import Array
from .activation import activation_config, activation_name, get_activation
from .base import register
from .recurrent import Recurrent

__all__ = ["SimpleRNN"]


def _identity_backprop(dy: Array) -> Array:
    return dy


@register
class SimpleRNN(Recurrent):
    """A fully connected recurrent layer over (N, T, F) sequences: h_t = phi(x_t W + b + h_{t-1} U).

    Args:
        input_size: F, features per time step.
        hidden_size: H, the size of h.
        activation: phi, "tanh" (default) or "relu" as torch.nn.RNN's ``nonlinearity``, or
            any portanet activation (None: linear).
        return_sequences: output every step's h (N, T, H) instead of the last (N, H).
        return_state: output the tuple ``(output, h_T)``; not inside a Sequential.
        use_bias: add the bias b (default True).
        kernel_initializer: W's (default "glorot_uniform"); recurrent_initializer: U's
            (default "orthogonal"); bias_initializer: b's (default "zeros").
        kernel_regularizer, recurrent_regularizer, bias_regularizer: or None.

    Call: ``forward(x, training=None, mask=None, initial_state=None)``: ``mask`` (N, T) bool,
    True at real steps (padded steps carry the state and output zeros); ``initial_state`` h0
    (N, H), and then ``backprop(dy)`` returns ``(dx, dh0)``. With ``return_state=True``,
    ``backprop`` takes ``(d_output, d_h_T)`` (None for zero).

    Shapes:
        input (N, T, F); output (N, H), or (N, T, H) with ``return_sequences``.
        Parameters "kernel" (F, H), "recurrent_kernel" (H, H), "bias" (H,).

    Loading PyTorch weights: ``SimpleRNN.from_torch(torch.nn.RNN(F, H, batch_first=True))``
    (or a state_dict), or ``layer.load_torch(module)``.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.rnn import SimpleRNN
        >>> layer = SimpleRNN(2, 3, activation="relu").build(seed=0, dtype="float64")
        >>> y, backprop = layer.forward(pn.asarray([[[1.0, 0.0], [0.0, 1.0]]]))
        >>> tuple(y.shape), bool((pn.to_numpy(y) >= 0).all())
        ((1, 3), True)
    """

    gates = 1
    torch_module = "RNN"

    def __init__(self, input_size: int, hidden_size: int, activation: Any = "tanh",
                 return_sequences: bool = False, return_state: bool = False,
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(input_size, hidden_size, return_sequences, return_state, use_bias,
                         kernel_initializer, recurrent_initializer, bias_initializer,
                         kernel_regularizer, recurrent_regularizer, bias_regularizer, name)
        self.activation = get_activation(activation)

    # -- one step, forward and backward --------------------------------------------------------
    def _cell(self, xp, xw_t: Array, hu_t: Array, states: tuple[Array, ...], k: Any):
        a = xw_t + hu_t
        if self.activation is None:
            return (a,), _identity_backprop
        h, phi_backprop = self.activation(a)  # (h, dh -> dh * phi'(a)), from the output
        return (h,), phi_backprop

    def _cell_backward(self, xp, tape: Any, d_states: tuple[Array, ...], k: Any):
        da = tape(d_states[0])
        return da, da, (None,)  # a = x_t W + b + h_{t-1} U: one gradient for both halves

    def _check_torch_module(self, module: Any) -> None:
        if module is None:
            return
        mine = activation_name(self.activation)
        if module.nonlinearity != mine:
            raise ValueError(f"SimpleRNN(activation={mine!r}) cannot run a torch.nn.RNN with "
                             f"nonlinearity={module.nonlinearity!r}; build it with "
                             f"activation={module.nonlinearity!r} (or use "
                             "SimpleRNN.from_torch).")

    def get_config(self) -> dict:
        config = super().get_config()
        config["activation"] = activation_config(self.activation)
        return config
