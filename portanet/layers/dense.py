"""Dense (fully connected) layer: y = activation(x @ W + b).

Forward, for a batch ``x`` of shape (N, in_features)::

    z = x @ W + b            W: (in_features, out_features), b: (out_features,)
    y = activation(z)

Backward, given dL/dy (N, out_features)::

    dz = dL/dy * activation'(z)      (the activation's own backprop)
    dL/dW = x^T @ dz                 (in_features, out_features): sum over the batch
    dL/db = sum_n dz[n]              (out_features,)
    dL/dx = dz @ W^T                 (N, in_features)

The kernel is stored as (in, out) so the forward pass is one matmul with no transpose. Its
memory layout is the backend's choice (``Adapter.weight_order``): on torch it is column by
column, nn.Linear's (out, in) layout, where MKL's GEMM is fastest; dL/dW is then computed as
(dz^T @ x)^T, the same matrix, in the same layout, so the optimizer's update is one pass.
Inputs with more leading axes, (..., in_features), are handled as a batch of rows.
"""

from __future__ import annotations

from typing import Any

from .._typing import Array, Shape
from ..backend import adapter_of
from ._weighted import WeightedLayer
from .base import _positive_int, register


@register
class Dense(WeightedLayer):
    """A fully connected layer, y = activation(x @ W + b).

    Args:
        in_features: size of the last input axis.
        out_features: number of output units.
        activation: an activation name ("relu", "tanh", ...), an activation object or None.
        use_bias: add the bias b (default True).
        kernel_initializer: initializer of W. The default "auto" follows the activation
            (``initializers.for_activation``):

            ==========================================  =====================  ==============
            activation                                  initializer            Var(W)
            ==========================================  =====================  ==============
            relu, relu6, elu, gelu, gelu_tanh, silu,    he_uniform             2 / in
            swish, mish, hard_swish
            leaky_relu (slope alpha)                    He, PReLU gain         2 / ((1 + a^2)
                                                                               in)
            selu                                        lecun_normal           1 / in
            None, tanh, sigmoid, softmax, any other     glorot_uniform         2 / (in + out)
            ==========================================  =====================  ==============

            Any name or :class:`~portanet.initializers.Initializer` is used exactly as given.
        bias_initializer: initializer of b (default "zeros").
        kernel_regularizer, bias_regularizer: e.g. ``regularizers.L2(1e-4)``, or None.

    Shapes:
        input (N, in_features) or (..., in_features); output (..., out_features).
        Parameters: "kernel" (in_features, out_features), "bias" (out_features,).

    Examples:
        >>> import portanet as pn
        >>> layer = pn.layers.Dense(3, 2, activation="relu").build(seed=0)
        >>> y, backprop = layer.forward(pn.asarray([[1.0, 2.0, 3.0]], dtype="float32"))
        >>> y.shape
        (1, 2)
    """

    can_skip_input_gradient = True
    _kernel_by_columns = False  # set by on_build from the backend's weight_order

    def __init__(self, in_features: int, out_features: int, activation: Any = None,
                 use_bias: bool = True, kernel_initializer: Any = "auto",
                 bias_initializer: Any = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(name)
        self.in_features = _positive_int(in_features, "in_features", "Dense")
        self.out_features = _positive_int(out_features, "out_features", "Dense")
        self._set_weights(activation, use_bias, kernel_initializer, bias_initializer,
                          kernel_regularizer, bias_regularizer)

    def parameter_specs(self):
        specs = {"kernel": ((self.in_features, self.out_features), self.kernel_initializer)}
        if self.use_bias:
            specs["bias"] = ((self.out_features,), self.bias_initializer)
        return specs

    def on_build(self) -> None:
        kernel = self.parameters["kernel"]
        adapter = adapter_of(kernel)
        self.parameters["kernel"] = adapter.in_weight_order(kernel)
        self._kernel_by_columns = adapter.weight_order == "F"

    def _check(self, x: Array, w: Array | None = None) -> None:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Dense expected input with {self.in_features} features, received shape "
                f"{tuple(x.shape)}. The last axis must have size {self.in_features} (add a "
                "Flatten layer before Dense for images, or fix in_features).")
        self._check_dtype(x, w)

    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        w = self.parameters["kernel"]
        self._check(x, w)
        xp = adapter_of(x).xp
        b = self.parameters["bias"] if self.use_bias else None
        act = self.activation

        z = x @ w
        if act is None:
            if b is not None:
                # Into the product, which nothing else holds: one allocation fewer than
                # x @ w + b (and as fast as torch.addmm). On JAX's immutable arrays += rebinds z.
                z += b
            y, act_backprop = z, None
        elif b is not None:  # act(z + b), into the product too (ReLU: one pass on CuPy)
            y, act_backprop = act.with_bias(z, b)
        else:
            y, act_backprop = act(z)

        def backprop(dy: Array, input_gradient: bool = True) -> Array | None:
            dz = dy if act_backprop is None else act_backprop(dy)
            # Rows of any leading shape: flatten them to one batch axis for the weight gradient.
            x2 = x if x.ndim == 2 else xp.reshape(x, (-1, self.in_features))
            dz2 = dz if dz.ndim == 2 else xp.reshape(dz, (-1, self.out_features))
            if self._kernel_by_columns:
                # (dz^T @ x)^T = x^T @ dz, laid out column by column like the kernel.
                self.gradients["kernel"] = (dz2.T @ x2).T
            else:
                self.gradients["kernel"] = x2.T @ dz2
            if b is not None:
                self.gradients["bias"] = xp.sum(dz2, axis=0)
            if not input_gradient:  # the model's first layer: nobody needs dL/dx
                return None
            return dz @ w.T

        return y, backprop

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1 or input_shape[-1] != self.in_features:
            raise ValueError(
                f"Dense expected input with {self.in_features} features, received per-sample "
                f"shape {tuple(input_shape)}. Add a Flatten layer or fix in_features.")
        return (*tuple(input_shape[:-1]), self.out_features)

    def get_config(self) -> dict:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            **self._weights_config(),
            "name": self.name,
        }
