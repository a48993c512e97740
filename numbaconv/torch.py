"""PyTorch layers and functions running on numbaconv's kernels (imported only on request).

    import numbaconv.torch as nct
    model = torch.nn.Sequential(nct.Conv2d(1, 32, 3), torch.nn.ReLU(), ...)   # for torch.nn.Conv2d
    model.load_state_dict(torch_model.state_dict())                           # same keys and shapes

``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` subclass their ``torch.nn``
counterparts (same constructor, parameters, initialisation, ``state_dict``)
and replace only the convolution. ``conv1d`` ... ``conv_transpose3d`` take
``torch.nn.functional``'s arguments. Both run through two
``torch.autograd.Function``s whose backward calls numbaconv's gradient kernels
for exactly the inputs in ``ctx.needs_input_grad``.

Devices: CPU tensors reach the kernels as NumPy views (no copies) and results
come back through ``torch.from_numpy``. Tensors on any other device raise a
RuntimeError in :func:`_to_engine`, the one place that knows about devices:
these layers run the CPU engine only.

Threads: the layers run the kernels on ``torch.get_num_threads()`` threads
(at most Numba's own count, ``numba.get_num_threads()``), so
``torch.set_num_threads`` governs them as it governs torch's operators;
neither library's setting is changed by a call.
"""
from __future__ import annotations

try:
    import torch
except ImportError as error:  # PyTorch is an optional dependency of numbaconv
    raise ImportError("numbaconv.torch needs PyTorch: pip install torch") from error

import contextlib

import numba
from torch.autograd.function import once_differentiable

from . import functional
from .nn import check_layer_input, conv_gradients, conv_transpose_gradients

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


def _to_engine(where: str, *tensors):
    """NumPy views (no copies) of CPU tensors for the kernels; None stays None.

    The one place that decides which engine a tensor's device needs.
    """
    for tensor in tensors:
        if tensor is not None and tensor.device.type != "cpu":
            raise RuntimeError(
                f"{where}: got a tensor on {tensor.device}; numbaconv runs CPU tensors only: "
                f"{tensor.device.type} tensors need the CUDA engine, which this build does not "
                f"have. Move the model and data to the CPU (.cpu()) or use torch.nn")
    return tuple(None if t is None else t.detach().numpy() for t in tensors)


@contextlib.contextmanager
def _threads_as_torch():
    """The kernels inside run on ``min(torch.get_num_threads(), numba.get_num_threads())``
    threads, so ``torch.set_num_threads`` holds for these layers as for torch's own; Numba's
    setting is restored afterwards (it is per calling thread) and torch's is never changed."""
    before = numba.get_num_threads()
    wanted = max(1, min(torch.get_num_threads(), before))
    if wanted == before:
        yield
        return
    numba.set_num_threads(wanted)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _from_engine(array):
    """A kernel's result as a tensor sharing its memory."""
    return None if array is None else torch.from_numpy(array)


def _bias_gradient(grad_y):
    return grad_y.sum(dim=(0, *range(2, grad_y.dim())))


def _backward(ctx, grad_y, gradients):
    """The gradients a Function's backward returns: input and weight through ``gradients``
    (only those ``ctx.needs_input_grad`` asks for), bias, and None for each option."""
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    x, weight = ctx.saved_tensors
    grad_y_np, x_np, w_np = _to_engine(ctx.where, grad_y, x, weight)
    grad_x = grad_w = None
    if need_x or need_w:
        rank, *options = ctx.options
        with _threads_as_torch():
            grad_x, grad_w = gradients(rank, grad_y_np, x_np, w_np, *options, need_input=need_x,
                                       need_weight=need_w)
    grad_b = _bias_gradient(grad_y) if need_b else None
    # None for ``where`` and each entry of ``ctx.options`` (rank and the convolution's arguments)
    return (_from_engine(grad_x), _from_engine(grad_w), grad_b) + (None,) * (1 + len(ctx.options))


class ConvFunction(torch.autograd.Function):
    """conv{rank}d(x, weight, bias) with numbaconv's forward and gradient kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, where, rank, stride, padding, dilation, groups):
        ctx.where, ctx.options = where, (rank, stride, padding, dilation, groups)
        ctx.save_for_backward(x, weight)
        x_np, w_np, b_np = _to_engine(where, x, weight, bias)
        with _threads_as_torch():
            return _from_engine(getattr(functional, f"conv{rank}d")(x_np, w_np, b_np, stride, padding,
                                                                    dilation, groups))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        return _backward(ctx, grad_y, conv_gradients)


class ConvTransposeFunction(torch.autograd.Function):
    """conv_transpose{rank}d(x, weight, bias) with numbaconv's forward and gradient kernels."""

    @staticmethod
    def forward(ctx, x, weight, bias, where, rank, stride, padding, output_padding, groups, dilation):
        ctx.where, ctx.options = where, (rank, stride, padding, output_padding, groups, dilation)
        ctx.save_for_backward(x, weight)
        x_np, w_np, b_np = _to_engine(where, x, weight, bias)
        with _threads_as_torch():
            return _from_engine(getattr(functional, f"conv_transpose{rank}d")(
                x_np, w_np, b_np, stride, padding, output_padding, groups, dilation))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        return _backward(ctx, grad_y, conv_transpose_gradients)


def _apply(function, x, weight, bias, where, rank, *options):
    """Run ``function`` on a batched or an unbatched (rank + 1 dims) input, as torch does."""
    if x.dim() == rank + 1:
        return function.apply(x.unsqueeze(0), weight, bias, where, rank, *options).squeeze(0)
    return function.apply(x, weight, bias, where, rank, *options)


def _make_functions(rank: int) -> dict:
    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        where = f"numbaconv.torch.conv{rank}d"
        check_layer_input(where, input, weight, rank, weight.shape[1] * groups, batched_only=False)
        return _apply(ConvFunction, input, weight, bias, where, rank, stride, padding, dilation,
                      groups)

    def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                       dilation=1):
        where = f"numbaconv.torch.conv_transpose{rank}d"
        check_layer_input(where, input, weight, rank, weight.shape[0], batched_only=False)
        return _apply(ConvTransposeFunction, input, weight, bias, where, rank, stride, padding,
                      output_padding, groups, dilation)

    conv.__name__ = conv.__qualname__ = f"conv{rank}d"
    conv.__doc__ = f"torch.nn.functional.conv{rank}d on numbaconv's kernels, with autograd."
    conv_transpose.__name__ = conv_transpose.__qualname__ = f"conv_transpose{rank}d"
    conv_transpose.__doc__ = (f"torch.nn.functional.conv_transpose{rank}d on numbaconv's kernels, "
                              "with autograd.")
    return {conv.__name__: conv, conv_transpose.__name__: conv_transpose}


for _rank in (1, 2, 3):
    globals().update(_make_functions(_rank))
del _rank


class _NumbaConv:
    """Mixin for a torch.nn.ConvNd: the convolution itself runs on numbaconv."""

    def _conv_forward(self, input, weight, bias):
        where, rank = f"numbaconv.torch.{type(self).__name__}", len(self.kernel_size)
        check_layer_input(where, input, weight, rank, self.in_channels, batched_only=False)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                            mode=self.padding_mode)
            padding = 0
        return _apply(ConvFunction, input, weight, bias, where, rank, self.stride, padding,
                      self.dilation, self.groups)


class _NumbaConvTranspose:
    """Mixin for a torch.nn.ConvTransposeNd: the transposed convolution runs on numbaconv."""

    def forward(self, input, output_size=None):
        """The transposed convolution; ``output_size`` picks output_padding as in torch.nn."""
        where, rank = f"numbaconv.torch.{type(self).__name__}", len(self.kernel_size)
        if self.padding_mode != "zeros":
            raise ValueError(f"{where}: only padding_mode='zeros' is supported, "
                             f"got {self.padding_mode!r}")
        check_layer_input(where, input, self.weight, rank, self.in_channels, batched_only=False)
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, rank, self.dilation)
        return _apply(ConvTransposeFunction, input, self.weight, self.bias, where, rank,
                      self.stride, self.padding, output_padding, self.groups, self.dilation)


class Conv1d(_NumbaConv, torch.nn.Conv1d):
    """torch.nn.Conv1d computed by numbaconv."""


class Conv2d(_NumbaConv, torch.nn.Conv2d):
    """torch.nn.Conv2d computed by numbaconv."""


class Conv3d(_NumbaConv, torch.nn.Conv3d):
    """torch.nn.Conv3d computed by numbaconv."""


class ConvTranspose1d(_NumbaConvTranspose, torch.nn.ConvTranspose1d):
    """torch.nn.ConvTranspose1d computed by numbaconv."""


class ConvTranspose2d(_NumbaConvTranspose, torch.nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d computed by numbaconv."""


class ConvTranspose3d(_NumbaConvTranspose, torch.nn.ConvTranspose3d):
    """torch.nn.ConvTranspose3d computed by numbaconv."""
