"""Maxout (Goodfellow, Warde-Farley, Mirza, Courville & Bengio, 2013): the max of k linear pieces.

Each output unit j owns k = ``pieces`` affine functions of the input and outputs the largest::

    z = x @ W + b                       W: (in_features, out_features * k), b: (out_features * k,)
    y[..., j] = max_p z[..., j * k + p]         p = 0 .. k-1

A maxout unit is a learned convex, piecewise-linear activation: with k = 2 it can be ReLU
(one piece fixed at 0), |x|, or a leaky ReLU. There is no separate activation.

Backward: the max passes the gradient to the piece that won, and only to it::

    dL/dz[..., j * k + p] = dy[..., j] if p == argmax_p' z[..., j * k + p'] else 0
    dL/dW = x^T @ dz,   dL/db = sum_n dz,   dL/dx = dz @ W^T          (as in Dense)

On a tie the first maximal piece wins (``argmax``'s rule in the array API standard), so the
gradient is deterministic and sums to dy, not to a multiple of it. The winning piece is marked
by comparing ``argmax`` with ``arange(k)``, a one-hot array: no boolean indexing.

Layout of W: unit-major. The k pieces of unit j are the adjacent columns j*k .. j*k + k-1, so
z reshapes to (..., out_features, k) and the max runs over the last, contiguous axis (the
fastest reduction in row-major memory), and a unit's pieces stay together in W, b and their
gradients (pylearn2's maxout pools consecutive linear units the same way). With k = 1 the layer
is exactly ``Dense``.
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .. import regularizers
from .._typing import Array, Shape
from ._weighted import WeightedLayer
from .base import _positive_int, register

__all__ = ["Maxout"]


@register
class Maxout(WeightedLayer):
    """A maxout layer: y_j = max over p of (x @ W + b)[j * pieces + p].

    Formula: z = x @ W + b;  y = max(reshape(z, (..., out, pieces)), axis=-1);
    dL/dz = dy routed to the (first) maximal piece of each unit, then as in Dense.

    Args:
        in_features: size of the last input axis.
        out_features: number of maxout units.
        pieces: k, the linear pieces per unit (default 2).
        use_bias: add the bias b (default True).
        kernel_initializer: initializer of W (default "glorot_uniform", which is also what
            "auto" picks here: the max of k unit-variance pieces keeps E[y^2] >= 1, so there is
            no lost half to give back as He does for ReLU).
        bias_initializer: initializer of b (default "zeros").
        kernel_regularizer, bias_regularizer: e.g. ``regularizers.L2(1e-4)``, or None.

    Shapes:
        input (..., in_features); output (..., out_features).
        Parameters "kernel" (in_features, out_features * pieces), unit-major (the pieces of
        unit j are columns j*pieces .. j*pieces + pieces-1), "bias" (out_features * pieces,).

    Examples:
        >>> import portanet as pn
        >>> from portanet.layers.maxout import Maxout
        >>> layer = Maxout(1, 1, pieces=2, use_bias=False).build(dtype="float64")
        >>> layer.set_named_parameters({"kernel": pn.asarray([[1.0, -1.0]])})  # max(x, -x) = |x|
        >>> y, backprop = layer.forward(pn.asarray([[-3.0], [2.0]]))
        >>> pn.to_numpy(y).tolist(), pn.to_numpy(backprop(pn.asarray([[1.0], [1.0]]))).tolist()
        ([[3.0], [2.0]], [[-1.0], [1.0]])
    """

    can_skip_input_gradient = True

    def __init__(self, in_features: int, out_features: int, pieces: int = 2,
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 bias_initializer: Any = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(name)
        self.in_features = _positive_int(in_features, "in_features", "Maxout")
        self.out_features = _positive_int(out_features, "out_features", "Maxout")
        self.pieces = _positive_int(pieces, "pieces", "Maxout")
        # the max over pieces is the nonlinearity: no activation after the affine map
        self._set_weights(None, use_bias, kernel_initializer, bias_initializer,
                          kernel_regularizer, bias_regularizer)

    def parameter_specs(self):
        width = self.out_features * self.pieces
        specs = {"kernel": ((self.in_features, width), self.kernel_initializer)}
        if self.use_bias:
            specs["bias"] = ((width,), self.bias_initializer)
        return specs

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        w = self.parameters["kernel"]
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Maxout expected input with {self.in_features} features, received "
                             f"shape {tuple(x.shape)}. The last axis must have size "
                             f"{self.in_features}.")
        self._check_dtype(x, w)
        xp = compat.array_namespace(x)
        b = self.parameters["bias"] if self.use_bias else None
        lead = tuple(x.shape[:-1])
        k, units, width = self.pieces, self.out_features, self.out_features * self.pieces

        z = x @ w
        if b is not None:
            z = z + b
        z3 = xp.reshape(z, (*lead, units, k))  # unit-major: the pieces of a unit are adjacent
        y = xp.max(z3, axis=-1)

        def backprop(dy: Array, input_gradient: bool = True) -> Array | None:
            # One-hot of the first maximal piece: argmax compared with 0 .. k-1.
            winner = xp.argmax(z3, axis=-1)[..., None]
            pieces = xp.arange(k, dtype=winner.dtype, device=compat.device(z3))
            route = xp.astype(winner == pieces, dy.dtype)  # (..., units, k)
            dz = xp.reshape(route * dy[..., None], (-1, width))
            x2 = xp.reshape(x, (-1, self.in_features))
            self.gradients["kernel"] = x2.T @ dz
            if b is not None:
                self.gradients["bias"] = xp.sum(dz, axis=0)
            if not input_gradient:  # the model's first layer: nobody needs dL/dx
                return None
            return xp.reshape(dz @ w.T, tuple(x.shape))

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1 or input_shape[-1] != self.in_features:
            raise ValueError(f"Maxout expected input with {self.in_features} features, received "
                             f"per-sample shape {tuple(input_shape)}.")
        return (*tuple(input_shape[:-1]), self.out_features)

    def get_config(self) -> dict:
        return {
            "in_features": self.in_features, "out_features": self.out_features,
            "pieces": self.pieces, "use_bias": self.use_bias,
            "kernel_initializer": self._kernel_initializer_config(),
            "bias_initializer": self.bias_initializer.get_config(),
            "kernel_regularizer": regularizers.serialize(self.regularizers["kernel"]),
            "bias_regularizer": regularizers.serialize(self.regularizers.get("bias")),
            "name": self.name,
        }
