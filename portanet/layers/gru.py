"""GRU (Cho et al., 2014), in PyTorch's form: the reset gate acts after the recurrent product.

Forward, one step, gates in PyTorch's order r, z, n (the time loop, the masks and the weight
gradients are in recurrent.py)::

    xw  = x_t W + b                             (N, 3H): [xw_r | xw_z | xw_n]
    hu  = h_{t-1} U + b_h                       (N, 3H): [hu_r | hu_z | hu_n]
    r   = sigmoid(xw_r + hu_r)                  reset gate: how much of the past the candidate sees
    z   = sigmoid(xw_z + hu_z)                  update gate: how much of h_{t-1} to keep
    n   = tanh(xw_n + r * hu_n)                 the candidate
    h_t = (1 - z) * n + z * h_{t-1}  =  n + z * (h_{t-1} - n)

``r * hu_n`` multiplies the recurrent product *with its bias* b_hn (Keras' ``reset_after=True``,
cuDNN's and PyTorch's form), so the recurrent bias must be kept apart from b: "recurrent_bias".

Backward through the step (BPTT), given dh = dL/dh_t::

    dn   = dh * (1 - z)
    dz   = dh * (h_{t-1} - n)
    dh_{t-1} (direct) = dh * z                  the "keep" path: no derivative squashes it
    da_n = dn * (1 - n^2)                       (tanh')
    dr   = da_n * hu_n
    da_r = dr * r (1 - r),   da_z = dz * z (1 - z)          (sigmoid')
    d xw = [da_r | da_z | da_n]                 -> dL/dW, dL/db, dL/dx  (recurrent.py)
    d hu = [da_r | da_z | da_n * r]             -> dL/dU, dL/db_h, and dh_{t-1} += d hu @ U^T

Parameters: "kernel" W (F, 3H) = ``weight_ih_l0.T``, "recurrent_kernel" U (H, 3H) =
``weight_hh_l0.T``, "bias" b (3H,) = ``bias_ih_l0`` and "recurrent_bias" b_h (3H,) =
``bias_hh_l0``.
"""

from __future__ import annotations

from typing import Any

from .._typing import Array
from .base import register
from .recurrent import Recurrent, gate_sigmoid

__all__ = ["GRU"]


@register
class GRU(Recurrent):
    """Gated recurrent unit over (N, T, F) sequences: h_t = (1 - z) n + z h_{t-1}.

    Gates (PyTorch's order) r = sigmoid, z = sigmoid, n = tanh(x_t W_n + b_n + r (h_{t-1} U_n
    + b_hn)); the equations of the forward and backward passes are in the module docstring.

    Args:
        input_size: F, features per time step.
        hidden_size: H, the size of h.
        return_sequences: output every step's h (N, T, H) instead of the last (N, H).
        return_state: output the tuple ``(output, h_T)``; not inside a Sequential.
        use_bias: add the biases b and b_h (default True).
        kernel_initializer: W's (default "glorot_uniform"); recurrent_initializer: U's
            (default "orthogonal"); bias_initializer: b's and b_h's (default "zeros").
        kernel_regularizer, recurrent_regularizer, bias_regularizer (b and b_h): or None.

    Call: ``forward(x, training=None, mask=None, initial_state=None)``: ``mask`` (N, T) bool,
    True at real steps (padded steps carry the state and output zeros); ``initial_state`` h0
    (N, H), and then ``backprop(dy)`` returns ``(dx, dh0)``. With ``return_state=True``,
    ``backprop`` takes ``(d_output, d_h_T)`` (None for zero).

    Shapes:
        input (N, T, F); output (N, H), or (N, T, H) with ``return_sequences``.
        Parameters "kernel" (F, 3H), "recurrent_kernel" (H, 3H), "bias" (3H,),
        "recurrent_bias" (3H,); the 3H axis holds the gates r, z, n in blocks of H.

    Loading PyTorch weights: ``GRU.from_torch(torch.nn.GRU(F, H, batch_first=True))`` (or a
    state_dict), or ``layer.load_torch(module)``.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.gru import GRU
        >>> layer = GRU(2, 3, return_sequences=True).build(seed=0, dtype="float64")
        >>> y, backprop = layer.forward(pn.asarray([[[1.0, 0.0], [0.0, 1.0]]]))
        >>> tuple(y.shape), sorted(layer.parameters)
        ((1, 2, 3), ['bias', 'kernel', 'recurrent_bias', 'recurrent_kernel'])
    """

    gates = 3
    torch_module = "GRU"
    has_recurrent_bias = True

    # -- one step, forward and backward --------------------------------------------------------
    def _cell(self, xp, xw_t: Array, hu_t: Array, states: tuple[Array, ...], k: Any):
        (h_prev,) = states
        k = self.hidden_size
        rz = gate_sigmoid(xw_t[:, :2 * k] + hu_t[:, :2 * k], xp)  # both gates in one call
        r, z = rz[:, :k], rz[:, k:]
        hu_n = hu_t[:, 2 * k:]                          # h_{t-1} U_n + b_hn
        n = xp.tanh(xw_t[:, 2 * k:] + r * hu_n)        # tanh (activations.tanh is xp.tanh)
        h = n + z * (h_prev - n)                        # (1 - z) n + z h_{t-1}
        return (h,), (r, z, n, hu_n, h_prev)

    def _cell_backward(self, xp, tape: Any, d_states: tuple[Array, ...], k: Any):
        r, z, n, hu_n, h_prev = tape
        (dh,) = d_states
        dn = dh * (1.0 - z)                             # h = (1 - z) n + z h_prev
        dz = dh * (h_prev - n)
        da_n = dn * (1.0 - n * n)                       # tanh'(a) = 1 - tanh(a)^2
        dr = da_n * hu_n                                # a_n = xw_n + r hu_n
        da_r = dr * (r * (1.0 - r))                     # sigmoid'(a) = s (1 - s)
        da_z = dz * (z * (1.0 - z))
        d_xw = xp.concat([da_r, da_z, da_n], axis=1)
        d_hu = xp.concat([da_r, da_z, da_n * r], axis=1)
        return d_xw, d_hu, (dh * z,)                    # h_prev's direct path: z h_prev

    def _torch_values(self, arrays: dict, suffix: str) -> dict[str, Any]:
        values = {"kernel": arrays["weight_ih_l0" + suffix].T,
                  "recurrent_kernel": arrays["weight_hh_l0" + suffix].T}
        if self.use_bias:  # the reset gate multiplies b_hn: the two biases stay apart
            values["bias"] = arrays["bias_ih_l0" + suffix]
            values["recurrent_bias"] = arrays["bias_hh_l0" + suffix]
        return values
