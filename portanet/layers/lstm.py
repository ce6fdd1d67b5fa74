"""LSTM (Hochreiter & Schmidhuber, 1997; the forget gate of Gers et al., 2000), PyTorch's form.

Forward, one step, gates in PyTorch's order i, f, g, o (the time loop, the masks and the
weight gradients are in recurrent.py)::

    z   = x_t W + b + h_{t-1} U                   (N, 4H): [z_i | z_f | z_g | z_o]
    i   = sigmoid(z_i)                            input gate: how much of g to write
    f   = sigmoid(z_f)                            forget gate: how much of c_{t-1} to keep
    g   = tanh(z_g)                               candidate cell values
    o   = sigmoid(z_o)                            output gate: how much of the cell to show
    c_t = f * c_{t-1} + i * g                     the cell: an additive memory
    h_t = o * tanh(c_t)

Backward through the step (BPTT), given dh = dL/dh_t and dc = dL/dc_t from later steps::

    do    = dh * tanh(c_t)
    dc    = dc + dh * o * (1 - tanh(c_t)^2)       both paths into c_t
    di    = dc * g,   dg = dc * i,   df = dc * c_{t-1}
    dc_{t-1} = dc * f                             the cell's own path back: only a product
    dz_i  = di * i (1 - i)    dz_f = df * f (1 - f)    dz_o = do * o (1 - o)    (sigmoid')
    dz_g  = dg * (1 - g^2)                        (tanh')
    dh_{t-1} = dz @ U^T                           (recurrent.py)

``dc_{t-1} = dc * f`` is why LSTMs remember: while f stays near 1 the gradient flows back
along the cell without being squashed by a derivative at every step (the "constant error
carousel"). ``unit_forget_bias=True`` starts f's bias at 1 for that reason (Jozefowicz et al.,
2015; Keras' default).

**All four gates from one tanh.** sigmoid(z) = (1 + tanh(z / 2)) / 2 exactly, so with a = 1/2
on the i, f, o blocks of z and a = 1 on the g block::

    [i | f | g | o] = a * tanh(a * z) + (1 - a)
    d gate / dz     = a^2 * (1 - tanh(a * z)^2)  =  a^2 - (gate - (1 - a))^2
                    = s (1 - s) for i, f, o;  1 - g^2 for g

The code computes exactly the equations above, with one tanh over (N, 4H) per step instead of
three sigmoids and a tanh, and one multiply for all four gate derivatives: on the CPU a step
costs as many passes over memory as it has operations, and this form has the fewest. It
never overflows. For the same reason o (1 - tanh(c_t)^2) is computed as o - h_t tanh(c_t)
(h_t = o tanh(c_t)).

Parameters: "kernel" W (F, 4H), "recurrent_kernel" U (H, 4H), "bias" b (4H,) = PyTorch's
``weight_ih_l0.T``, ``weight_hh_l0.T`` and ``bias_ih_l0 + bias_hh_l0`` (the two biases always
add, so one is enough).

Speed (``benchmarks/test_bench_recurrent.py``: forward + backward with dL/dx and every
parameter gradient, batch 64, T = 50, F = 64, H = 128, float32, one thread, 2-core machine):
about 1.85x the time of ``torch.nn.LSTM`` + autograd (its fused CPU kernels) on the NumPy
backend and 1.75x on the torch backend, in the same run (1.66-2.04x and 1.58-1.93x over eight
runs on a shared machine); NumPy's matrix products alone take as long as torch's whole step.
docs/recurrent.md says where the time goes.
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .. import initializers
from .._typing import Array
from .base import register
from .recurrent import Recurrent

__all__ = ["LSTM"]


class _UnitForgetBias(initializers.Initializer):
    """The bias initializer, with the forget gate's block set to 1: [b_i | 1 | b_g | b_o]."""

    name = "unit_forget_bias"

    def __init__(self, base: initializers.Initializer, hidden_size: int):
        self.base, self.hidden_size = base, hidden_size

    def draw(self, shape, rng):
        h = self.hidden_size
        first = self.base((h,), rng)  # as Keras draws it: base(H), ones(H), base(2H)
        rest = self.base((2 * h,), rng)
        hxp = compat.array_namespace(first)  # the host namespace
        return hxp.concat([first, hxp.ones((h,), dtype=first.dtype), rest])

    def get_config(self):
        raise TypeError("unit_forget_bias is a flag of LSTM's config, not an initializer.")


@register
class LSTM(Recurrent):
    """Long short-term memory over (N, T, F) sequences: c_t = f c_{t-1} + i g, h_t = o tanh(c_t).

    Gates (PyTorch's order) i = sigmoid, f = sigmoid, g = tanh, o = sigmoid of
    ``x_t W + b + h_{t-1} U``; the equations of the forward and backward passes are in the
    module docstring.

    Args:
        input_size: F, features per time step.
        hidden_size: H, the size of h and c.
        return_sequences: output every step's h (N, T, H) instead of the last (N, H).
        return_state: output the tuple ``(output, h_T, c_T)``; not inside a Sequential.
        use_bias: add the bias b (default True).
        unit_forget_bias: start the forget gate's bias at 1 (default True, as Keras).
        kernel_initializer: W's (default "glorot_uniform"); recurrent_initializer: U's
            (default "orthogonal"); bias_initializer: b's (default "zeros").
        kernel_regularizer, recurrent_regularizer, bias_regularizer: e.g.
            ``regularizers.L2(1e-4)``, or None.

    Call: ``forward(x, training=None, mask=None, initial_state=None)``: ``mask`` (N, T) bool,
    True at real steps (padded steps carry the state and output zeros); ``initial_state`` a
    tuple ``(h0, c0)`` of (N, H) arrays, and then ``backprop(dy)`` returns ``(dx, (dh0,
    dc0))``. With ``return_state=True``, ``backprop`` takes ``(d_output, d_h_T, d_c_T)``
    (None for zero).

    Shapes:
        input (N, T, F); output (N, H), or (N, T, H) with ``return_sequences``.
        Parameters "kernel" (F, 4H), "recurrent_kernel" (H, 4H), "bias" (4H,); the 4H axis
        holds the gates i, f, g, o in blocks of H.

    Loading PyTorch weights: ``LSTM.from_torch(torch.nn.LSTM(F, H, batch_first=True))`` (or a
    state_dict), or ``layer.load_torch(module)``.

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.lstm import LSTM
        >>> layer = LSTM(2, 3).build(seed=0, dtype="float64")
        >>> x = pn.asarray([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])       # N=1, T=3, F=2
        >>> y, backprop = layer.forward(x)
        >>> tuple(y.shape), tuple(backprop(y).shape), tuple(layer.gradients["kernel"].shape)
        ((1, 3), (1, 3, 2), (2, 12))
    """

    gates = 4
    state_names = ("h", "c")
    torch_module = "LSTM"

    def __init__(self, input_size: int, hidden_size: int, return_sequences: bool = False,
                 return_state: bool = False, use_bias: bool = True,
                 unit_forget_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(input_size, hidden_size, return_sequences, return_state, use_bias,
                         kernel_initializer, recurrent_initializer, bias_initializer,
                         kernel_regularizer, recurrent_regularizer, bias_regularizer, name)
        if not isinstance(unit_forget_bias, bool):
            raise TypeError(f"LSTM unit_forget_bias must be True or False, received "
                            f"unit_forget_bias={unit_forget_bias!r}.")
        self.unit_forget_bias = unit_forget_bias

    def _bias_init(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.hidden_size)
        return self.bias_initializer

    # -- one step, forward and backward --------------------------------------------------------
    def _constants(self, xp, x: Array):
        # a = 1/2 on the blocks of the sigmoid gates i, f, o and 1 on g (module docstring)
        n, device = self.hidden_size, compat.device(x)
        half = xp.full((n,), 0.5, dtype=x.dtype, device=device)
        a = xp.concat([half, half, xp.ones((n,), dtype=x.dtype, device=device), half])
        return a, 1.0 - a, a * a

    def _cell(self, xp, xw_t: Array, hu_t: Array, states: tuple[Array, ...], k: Any):
        a, b, _ = k
        c_prev = states[1]  # h_{t-1} arrived already, through hu_t = h_{t-1} U
        n = self.hidden_size
        z = xw_t + hu_t                        # (N, 4H): [z_i | z_f | z_g | z_o]
        # tanh straight from the namespace (activations.tanh is the same xp.tanh): this runs
        # T times per call, and the sigmoids ride on it, sigma(z) = tanh(z/2)/2 + 1/2
        gates = xp.tanh(z * a) * a + b         # ONE tanh: [i | f | g | o], a = 1/2 or 1
        i, f, g, o = gates[:, :n], gates[:, n:2 * n], gates[:, 2 * n:3 * n], gates[:, 3 * n:]
        c = f * c_prev + i * g                 # c_t = f c_{t-1} + i g
        tanh_c = xp.tanh(c)
        h = o * tanh_c                         # h_t = o tanh(c_t)
        return (h, c), (gates, i, f, g, o, c_prev, tanh_c, h)

    def _cell_backward(self, xp, tape: Any, d_states: tuple[Array, ...], k: Any):
        gates, i, f, g, o, c_prev, tanh_c, h = tape
        _, b, a2 = k
        dh, dc = d_states
        do = dh * tanh_c                       # h = o tanh(c)
        dc = dc + dh * (o - h * tanh_c)        # ... and through tanh(c): o (1 - tanh(c)^2)
        d_gates = xp.concat([dc * g,           # di   (c = f c_prev + i g)
                             dc * c_prev,      # df
                             dc * i,           # dg
                             do], axis=1)      # do
        # d gate / dz = a^2 (1 - tanh(a z)^2) = a^2 - (gate - b)^2, from the gates alone:
        # s (1 - s) for the sigmoids, 1 - g^2 for g
        centered = gates - b
        dz = d_gates * (a2 - centered * centered)
        # dz is the gradient of both halves of z: x_t W + b and h_{t-1} U; c_{t-1} also gets
        # dc * f directly (h_{t-1} only through U).
        return dz, dz, (None, dc * f)

    def get_config(self) -> dict:
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config
