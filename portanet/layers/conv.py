"""2-D convolution on NCHW images, written with strided slices and one matmul.

Forward (cross-correlation, as in every deep-learning library)::

    z[n, o, p, q] = b[o] + sum_{c, i, j} W[o, c, i, j] * xpad[n, c, p*sh + i*dh, q*sw + j*dw]
    y = activation(z)

How it is computed without a convolution primitive: for each kernel offset (i, j), the input
pixels that offset reads for all output positions form one strided slice of the padded input,
``(C, OH, OW, N)`` of the CHWN view (see ``_windows.py``). Stacking the ``kh*kw`` slices
(offsets outermost) gives the column matrix ``cols`` of shape ``(kh*kw*C, OH*OW*N)``, whose row
``(i*kw + j)*C + c`` holds the pixels that tap (i, j) of channel c reads. The kernel is laid out
to match, and the convolution of the whole batch is one matmul::

    W_mat = W (O, C, kh, kw) permuted to (O, kh, kw, C), reshaped to (O, kh*kw*C)
    z     = W_mat @ cols + b                   z: (O, OH*OW*N)

Backward, given dz = dL/dz (O, OH*OW*N)::

    dL/dW   = dz @ cols^T                      (O, kh*kw*C) -> (O, kh, kw, C) -> (O, C, kh, kw)
    dL/db   = sum over n, p, q of dz
    dcols   = W_mat^T @ dz                     (kh*kw*C, OH*OW*N) -> (kh*kw, C, OH, OW, N)
    dL/dx   = crop( sum_{i,j} dcols[tap (i, j)] placed back into window (i, j) )

With the offsets outermost, each tap's rows of ``dcols`` are one contiguous block.

The last line is the "fold" (col2im): each offset's gradient is added into the same strided
slice it was read from; slices never repeat a position, so no scatter with duplicate indices.

Cost: ``cols`` holds kh*kw copies of the input (im2col-sized memory) in exchange for one
large matmul, which is where BLAS / cuBLAS are fast.
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat

from .._typing import Array, Shape
from . import _windows as win
from ._weighted import WeightedLayer
from .base import _positive_int, register


@register
class Conv2D(WeightedLayer):
    """2-D convolution (cross-correlation) over NCHW input, optionally followed by an activation.

    Args:
        in_channels: C, channels of the input.
        out_channels: O, number of filters.
        kernel_size: int or (kh, kw).
        stride: int or (sh, sw) (default 1).
        padding: int, (ph, pw), "valid" (= 0) or "same" (output size ceil(H / stride); with
            stride 1 the output keeps H x W; an odd total puts the extra pixel after).
        dilation: int or (dh, dw) (default 1): spacing between kernel taps.
        use_bias: add a per-filter bias (default True).
        activation: an activation name or None.
        kernel_initializer: initializer of W. The default "auto" follows the activation, as
            in Dense (with fan_in = C * kh * kw, fan_out = O * kh * kw):

            ==========================================  =====================  ==============
            activation                                  initializer            Var(W)
            ==========================================  =====================  ==============
            relu, relu6, elu, gelu, gelu_tanh, silu,    he_uniform             2 / fan_in
            swish, mish, hard_swish
            leaky_relu (slope alpha)                    He, PReLU gain         2 / ((1 + a^2)
                                                                               fan_in)
            selu                                        lecun_normal           1 / fan_in
            None, tanh, sigmoid, softmax, any other     glorot_uniform         2 / (fan_in +
                                                                               fan_out)
            ==========================================  =====================  ==============

        bias_initializer, kernel_regularizer, bias_regularizer: as Dense.

    Shapes:
        input (N, C, H, W); output (N, O, OH, OW) with
        OH = floor((H + pad_top + pad_bottom - dh * (kh - 1) - 1) / sh) + 1 (same for OW).
        Parameters: "kernel" (O, C, kh, kw) (PyTorch's layout), "bias" (O,).

    Examples:
        >>> import portanet as pn
        >>> conv = pn.layers.Conv2D(1, 4, kernel_size=3, padding="same").build(seed=0)
        >>> y, backprop = conv.forward(pn.asarray(pn.random.host_normal(0, (2, 1, 5, 5)),
        ...                                       dtype="float32"))
        >>> y.shape
        (2, 4, 5, 5)
    """

    can_skip_input_gradient = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, use_bias: bool = True,
                 activation: Any = None, kernel_initializer: Any = "auto",
                 bias_initializer: Any = "zeros", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, name: str | None = None):
        super().__init__(name)
        self.in_channels = _positive_int(in_channels, "in_channels", "Conv2D")
        self.out_channels = _positive_int(out_channels, "out_channels", "Conv2D")
        self.kernel_size = win.pair(kernel_size, "kernel_size", "Conv2D", 1)
        self.stride = win.pair(stride, "stride", "Conv2D", 1)
        self.dilation = win.pair(dilation, "dilation", "Conv2D", 1)
        if isinstance(padding, str):
            if padding.lower() not in ("same", "valid"):
                raise ValueError(f"Conv2D padding must be an int, a pair, 'valid' or 'same'; "
                                 f"received padding={padding!r}.")
            self.padding: Any = padding.lower()
        else:
            self.padding = win.pair(padding, "padding", "Conv2D", 0)
        self._set_weights(activation, use_bias, kernel_initializer, bias_initializer,
                          kernel_regularizer, bias_regularizer)

    def parameter_specs(self):
        kh, kw = self.kernel_size
        specs = {"kernel": ((self.out_channels, self.in_channels, kh, kw),
                            self.kernel_initializer)}
        if self.use_bias:
            specs["bias"] = ((self.out_channels,), self.bias_initializer)
        return specs

    # -- geometry ------------------------------------------------------------------------------
    def pads(self, height: int, width: int) -> tuple[win.Pair, win.Pair]:
        """((top, bottom), (left, right)) zero padding for an input of height x width."""
        if self.padding == "valid":
            return (0, 0), (0, 0)
        if self.padding == "same":
            return (win.same_padding(height, self.kernel_size[0], self.stride[0],
                                     self.dilation[0]),
                    win.same_padding(width, self.kernel_size[1], self.stride[1],
                                     self.dilation[1]))
        ph, pw = self.padding
        return (ph, ph), (pw, pw)

    def _geometry(self, shape: Shape, batched: bool):
        expected = "(N, C, H, W)" if batched else "(C, H, W)"
        if len(shape) != (4 if batched else 3) or shape[-3] != self.in_channels:
            raise ValueError(
                f"Conv2D expected input of shape {expected} with C={self.in_channels} (NCHW), "
                f"received shape {tuple(shape)}. Channels-last images (N, H, W, C) must be "
                "transposed to (N, C, H, W) first.")
        height, width = shape[-2], shape[-1]
        pads = self.pads(height, width)
        out = tuple(win.output_size(size, k, s, d, p) for size, k, s, d, p in zip(
            (height, width), self.kernel_size, self.stride, self.dilation, pads, strict=True))
        if min(out) < 1:
            raise ValueError(
                f"Conv2D input of spatial size {(height, width)} (padding {pads}) is smaller "
                f"than the dilated kernel {self.kernel_size} (dilation {self.dilation}); "
                "use a larger input, more padding or a smaller kernel.")
        return pads, out

    def output_shape(self, input_shape: Shape) -> Shape:
        _, (oh, ow) = self._geometry(tuple(input_shape), batched=False)
        return self.out_channels, oh, ow

    # -- forward and backward --------------------------------------------------------------------
    def forward(self, x: Array, training: bool | None = None):
        self.ensure_built(x)
        pads, (oh, ow) = self._geometry(tuple(x.shape), batched=True)
        self._check_dtype(x, self.parameters["kernel"])
        xp = compat.array_namespace(x)
        n, c, height, width = x.shape
        o, (kh, kw) = self.out_channels, self.kernel_size
        w = self.parameters["kernel"]
        b = self.parameters["bias"] if self.use_bias else None
        act = self.activation

        # Work on the CHWN view of x (batch innermost, see _windows.py): window slices are
        # long contiguous runs and the whole batch becomes one matmul.
        xpad = win.pad_spatial(win.to_chwn(x, xp), pads, 0.0, xp)
        slices = win.window_slices(self.kernel_size, self.stride, self.dilation, (oh, ow))
        windows = [xpad[:, rows, cols, :] for rows, cols in slices]  # each (C, OH, OW, N)
        # (kh*kw, C, OH, OW, N) -> (kh*kw*C, OH*OW*N): row (i*kw + j)*C + c holds the pixels
        # that tap (i, j) of channel c reads. W is laid out to match: (O, kh, kw, C) ->
        # (O, kh*kw*C). Offsets outermost make each offset's gradient one contiguous block.
        cols = xp.reshape(xp.stack(windows, axis=0), (kh * kw * c, oh * ow * n))
        w_mat = xp.reshape(xp.permute_dims(w, (0, 2, 3, 1)), (o, kh * kw * c))
        z = w_mat @ cols  # (O, OH*OW*N): one matmul for the whole batch
        if b is not None:
            z = z + b[:, None]
        z = win.to_nchw(xp.reshape(z, (o, oh, ow, n)), xp)  # NCHW view of CHWN memory
        y, act_backprop = (z, None) if act is None else act(z)

        def backprop(dy: Array, input_gradient: bool = True) -> Array | None:
            dz = dy if act_backprop is None else act_backprop(dy)
            dz = xp.reshape(win.to_chwn(dz, xp), (o, oh * ow * n))
            dw = dz @ cols.T  # (O, kh*kw*C) -> (O, C, kh, kw)
            self.gradients["kernel"] = xp.permute_dims(xp.reshape(dw, (o, kh, kw, c)),
                                                       (0, 3, 1, 2))
            if b is not None:
                self.gradients["bias"] = xp.sum(dz, axis=1)
            if not input_gradient:  # the model's first layer: skip the matmul and the fold
                return None
            dcols = xp.reshape(w_mat.T @ dz, (kh * kw, c, oh, ow, n))
            pieces = [dcols[k, ...] for k in range(kh * kw)]
            dxpad = win.fold(pieces, slices, tuple(xpad.shape), xp, x)
            return win.to_nchw(win.crop_spatial(dxpad, pads, (height, width)), xp)

        return y, backprop

    def get_config(self) -> dict:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            **self._weights_config(),
            "name": self.name,
        }
