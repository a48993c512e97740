"""Convolution layers for NumPy users: parameters, forward, backward, no framework.

    import numpy as np
    import numbaconv.nn as ncn

    conv = ncn.Conv2d(3, 16, 3, padding=1, rng=np.random.default_rng(0))
    y = conv.forward(x)                   # x: (N, 3, H, W) float32
    grad_x = conv.backward(grad_y)        # also sets conv.grad_weight, conv.grad_bias
    for p, g in zip(conv.parameters(), conv.gradients()):
        p -= 0.1 * g                      # plain SGD, in place

Initialisation is PyTorch's default: weight and bias drawn from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = weight.shape[1] * prod(kernel)
(kaiming_uniform with a=sqrt(5)). The gradient helpers here
(:func:`conv_gradients`, :func:`conv_transpose_gradients`) are shared with
``numbaconv.torch``, so both compute exactly the gradients asked for.
"""
from __future__ import annotations

import math

import numpy as np

from . import functional
from .signatures import zero_extend
from .spec import ConvSpec, normalize_ints

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "conv_gradients",
           "conv_transpose_gradients", "check_layer_input"]

_FLOAT_DTYPES = ("float32", "float64")


def _function(name: str, rank: int):
    return getattr(functional, name.format(rank=rank))


def conv_gradients(rank, grad_y, x, w, stride, padding, dilation, groups, *,
                   need_input=True, need_weight=True):
    """(grad_x, grad_w) of conv{rank}d; a gradient not needed is None and costs nothing."""
    options = (stride, padding, dilation, groups)
    if need_input and need_weight:
        grad_x, grad_w, _ = _function("conv{rank}d_backward", rank)(grad_y, x, w, *options, bias=False)
        return grad_x, grad_w
    grad_x = _function("conv{rank}d_input", rank)(x.shape, w, grad_y, *options) if need_input else None
    grad_w = _function("conv{rank}d_weight", rank)(x, w.shape, grad_y, *options) if need_weight else None
    return grad_x, grad_w


def conv_transpose_gradients(rank, grad_y, x, w, stride, padding, output_padding, groups, dilation,
                             *, need_input=True, need_weight=True):
    """(grad_x, grad_w) of conv_transpose{rank}d; a gradient not needed is None.

    The transposed convolution ``y = T(x)`` is the input gradient of the
    convolution ``C`` from y's shape to x's, so ``grad_x = C(grad_y)`` (a
    forward convolution) and ``grad_w`` is C's weight gradient with the roles
    swapped: grad_y as C's input and x as C's output gradient. When
    output_padding >= stride, C has extra outputs at the high end that x never
    reached: grad_x drops them and x is zero-extended over them.
    """
    options = (stride, padding, dilation, groups)
    c_y_shape = ConvSpec.create(tuple(grad_y.shape), tuple(w.shape), *options, rank=rank).y_shape
    grad_x = grad_w = None
    if need_input:
        grad_x = _function("conv{rank}d", rank)(grad_y, w, None, *options)
        if grad_x.shape != x.shape:
            grad_x = grad_x[tuple(slice(0, n) for n in x.shape)]
    if need_weight:
        grad_w = _function("conv{rank}d_weight", rank)(grad_y, w.shape, zero_extend(x, c_y_shape),
                                                     *options)
    return grad_x, grad_w


def check_layer_input(layer: str, x, weight, rank: int, in_channels: int, batched_only=True):
    """Raise a ValueError/TypeError naming ``layer`` unless ``x`` fits it.

    Works for anything with ``ndim``/``shape``/``dtype`` (NumPy arrays, torch
    tensors). Unbatched input (``rank + 1`` dims) passes when ``batched_only``
    is False.
    """
    dims = (rank + 2,) if batched_only else (rank + 1, rank + 2)
    if x.ndim not in dims:
        wanted = " or ".join(str(d) for d in dims)
        raise ValueError(f"{layer}: expected input with {wanted} dims, got shape {tuple(x.shape)}")
    channels = x.shape[x.ndim - rank - 1]
    if channels != in_channels:
        raise ValueError(f"{layer}: expected {in_channels} input channels, got {channels} "
                         f"(input shape {tuple(x.shape)})")
    if str(x.dtype).rpartition(".")[2] not in _FLOAT_DTYPES:
        raise TypeError(f"{layer}: input dtype {x.dtype} is not supported; use float32 or float64")
    if x.dtype != weight.dtype:
        raise TypeError(f"{layer}: input dtype {x.dtype} does not match the weight's {weight.dtype}")


class _ConvLayer:
    """Shared parts of the NumPy layers: parameters, initialisation, input checks.

    Subclasses set ``rank`` and ``transposed`` and implement ``_forward`` and
    ``_gradients``.
    """

    rank: int
    transposed: bool

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, *, dtype=np.float32, rng=None):
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{self._name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        if np.dtype(dtype).name not in _FLOAT_DTYPES:
            raise TypeError(f"{self._name}: dtype must be float32 or float64, got {np.dtype(dtype)}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = normalize_ints("kernel_size", kernel_size, self.rank, 1)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        rows, cols = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        weight_shape = (rows, cols // groups, *self.kernel_size)
        rng = np.random.default_rng() if rng is None else rng
        bound = 1 / math.sqrt(weight_shape[1] * math.prod(self.kernel_size))
        self.weight = rng.uniform(-bound, bound, weight_shape).astype(dtype)
        self.bias = rng.uniform(-bound, bound, out_channels).astype(dtype) if bias else None
        self.grad_weight = self.grad_bias = None
        self._input = self._output_shape = None

    @property
    def _name(self) -> str:
        return f"numbaconv.nn.{type(self).__name__}"

    def forward(self, x):
        """The layer's output for ``x`` of shape (N, in_channels, *spatial); keeps ``x`` for backward."""
        check_layer_input(self._name, x, self.weight, self.rank, self.in_channels)
        self._input = x
        y = self._forward(x)
        self._output_shape = y.shape
        return y

    __call__ = forward

    def backward(self, grad_output, *, input_grad=True):
        """Gradient with respect to the last forward's input; sets ``grad_weight`` and ``grad_bias``.

        ``input_grad=False`` skips the input gradient (a network's first
        layer needs none) and returns None.
        """
        if self._input is None:
            raise RuntimeError(f"{self._name}: backward called before forward")
        grad_output = np.asarray(grad_output)
        if grad_output.shape != self._output_shape:
            raise ValueError(f"{self._name}: grad_output has shape {grad_output.shape}, the last "
                             f"forward's output has {self._output_shape}")
        if grad_output.dtype != self.weight.dtype:
            raise TypeError(f"{self._name}: grad_output dtype {grad_output.dtype} does not match "
                            f"the weight's {self.weight.dtype}")
        grad_x, self.grad_weight = self._gradients(grad_output, self._input, input_grad)
        if self.bias is not None:
            self.grad_bias = grad_output.sum(axis=(0, *range(2, grad_output.ndim)))
        return grad_x

    def parameters(self) -> list:
        """[weight, bias] (bias left out when the layer has none): update these in place."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def gradients(self) -> list:
        """The gradients of :meth:`parameters`, in the same order, from the last backward."""
        if self.grad_weight is None:
            raise RuntimeError(f"{self._name}: no gradients yet; call backward first")
        return [self.grad_weight] if self.bias is None else [self.grad_weight, self.grad_bias]

    def __repr__(self):
        return (f"{self._name}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None})")


class _Conv(_ConvLayer):
    transposed = False

    def _forward(self, x):
        return _function("conv{rank}d", self.rank)(x, self.weight, self.bias, self.stride,
                                                   self.padding, self.dilation, self.groups)

    def _gradients(self, grad_output, x, input_grad):
        return conv_gradients(self.rank, grad_output, x, self.weight, self.stride, self.padding,
                              self.dilation, self.groups, need_input=input_grad)


class Conv1d(_Conv):
    """1-d convolution layer, arguments and initialisation as torch.nn.Conv1d (padding_mode zeros)."""
    rank = 1


class Conv2d(_Conv):
    """2-d convolution layer, arguments and initialisation as torch.nn.Conv2d (padding_mode zeros)."""
    rank = 2


class Conv3d(_Conv):
    """3-d convolution layer, arguments and initialisation as torch.nn.Conv3d (padding_mode zeros)."""
    rank = 3


class ConvTranspose2d(_ConvLayer):
    """2-d transposed convolution layer, as torch.nn.ConvTranspose2d.

    Weight (in_channels, out_channels // groups, kh, kw); ``output_padding``
    (< stride or < dilation) extends the output at the high end.
    """
    rank = 2
    transposed = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, *, dtype=np.float32, rng=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, dtype=dtype, rng=rng)
        self.output_padding = output_padding

    def _forward(self, x):
        return _function("conv_transpose{rank}d", self.rank)(
            x, self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups,
            self.dilation)

    def _gradients(self, grad_output, x, input_grad):
        return conv_transpose_gradients(self.rank, grad_output, x, self.weight, self.stride,
                                        self.padding, self.output_padding, self.groups,
                                        self.dilation, need_input=input_grad)
