"""PyTorch layers, functions and operators running on numbaconv's kernels (imported only on request).

    import numbaconv.torch as nct
    model = torch.nn.Sequential(nct.Conv2d(1, 32, 3), torch.nn.ReLU(), ...)   # for torch.nn.Conv2d
    model.load_state_dict(torch_model.state_dict())                           # same keys and shapes
    compiled = torch.compile(model, fullgraph=True)                           # no graph breaks

``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` subclass their ``torch.nn``
counterparts (same constructor, parameters, initialisation, ``state_dict``)
and replace only the convolution. ``conv1d`` ... ``conv_transpose3d`` take
``torch.nn.functional``'s arguments.

Operators. Everything runs on three linear operators of one convolution
(stride, padding as low and high of each dim, dilation, groups), registered
as PyTorch custom operators:

- ``numbaconv::conv(input, weight, bias)``: the convolution;
- ``numbaconv::conv_input(grad_output, weight, bias, input_size)``: its input
  gradient, plus bias: a transposed convolution is this operator;
- ``numbaconv::conv_weight(input, grad_output, weight_size)``: its weight gradient.

The gradients of each are the other two (and a sum for the bias), computed
through the same operators, so derivatives of any order work
(``gradgradcheck``, gradient penalties, Hessian-vector products), and each
computes only the gradients its inputs need. Where no graph of the gradients
is recorded (eager mode, first derivatives), the convolution's input and
weight gradients come from one call of numbaconv's ``conv{rank}d_backward``.

Where they run. Under ``torch.compile`` and ``torch.export`` (and for meta
tensors) the custom operators are called: Dynamo sees one opaque node per
operator, with a shape function (``register_fake``) and gradients
(``register_autograd``), and never traces numbaconv's engine. In eager mode
the kernels are called directly, through a ``torch.autograd.Function`` when a
gradient is needed: a custom operator's Python path through the dispatcher
costs tens of microseconds a call more than an autograd.Function.

Memory format: where an operand is channels_last (channels_last_3d), the
result is too, as torch.nn's CPU convolutions do, gradients included. The
kernels read and write contiguous arrays, so such a call copies its operands
in and its result out.

Devices: CPU tensors reach the kernels as NumPy views (no copies) and
results come back through ``torch.from_numpy``. CUDA tensors reach numbaconv's
CUDA engine as Numba device arrays on the same memory
(``__cuda_array_interface__``) and its results come back as CUDA tensors on
the memory of its device arrays; the engine launches on Numba's default stream
(torch's default stream), after the work queued on torch's current stream and
before the work queued on it afterwards. Strided operands (channels_last,
expanded gradients) are made contiguous by torch first. Meta tensors get their
shapes. Other devices, or operands on different devices, raise a RuntimeError
naming the layer.

Threads: on the CPU the kernels run on ``torch.get_num_threads()`` threads
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
from dataclasses import dataclass
from typing import Callable

import numba

from . import functional
from .nn import check_layer_input
from .signatures import transpose_arguments
from .spec import ConvSpec, _same_padding, check_groups, normalize_ints, normalize_padding

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
           "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
# The options every operator ends with, in its schema; padding is flat: low, high of each dim.
_OPTIONS_SCHEMA = "int[] stride, SymInt[] padding, int[] dilation, int groups"


# ---- the kernels, on the tensors' device ------------------------------------------------------

def _with_torch_threads(call, *args):
    """``call(*args)`` on ``min(torch.get_num_threads(), numba.get_num_threads())`` of Numba's
    threads; Numba's setting (per calling thread) is restored afterwards, torch's never changed."""
    torch_threads = torch.get_num_threads()
    before = numba.get_num_threads()
    if torch.get_num_threads() != torch_threads:
        # the first call starts Numba's OpenMP workers, which resets the count OpenMP gives torch
        torch.set_num_threads(torch_threads)
    wanted = max(1, min(torch_threads, before))
    if wanted == before:
        return call(*args)
    numba.set_num_threads(wanted)
    try:
        return call(*args)
    finally:
        numba.set_num_threads(before)


def _gpu_array(tensor):
    """A Numba device array on a (detached) CUDA tensor's memory."""
    from numba import cuda
    return cuda.as_cuda_array(tensor)


def _gpu_tensor(array, device):
    """A CUDA tensor on a Numba device array's memory (it keeps the array alive)."""
    return torch.as_tensor(array, device=device)


@contextlib.contextmanager
def _on_torch_stream(device):
    """Order the work launched inside after what torch's current stream has queued, and what it
    queues afterwards after that work. numbaconv launches on Numba's default stream: the legacy
    default stream, which is torch's default stream (Numba's per-thread default stream, when
    chosen, synchronises with it), so only another current stream needs the two waits."""
    current, default = torch.cuda.current_stream(device), torch.cuda.default_stream(device)
    if current.cuda_stream == default.cuda_stream:
        yield
        return
    default.wait_stream(current)
    yield
    current.wait_stream(default)


def _each(convert, result):
    """``convert`` applied to a result, or to each of a tuple of them."""
    return tuple(map(convert, result)) if isinstance(result, tuple) else convert(result)


def _on_gpu(device, call, tensors):
    """``call`` on device arrays sharing the CUDA tensors' memory, its results as CUDA tensors."""
    from numba import cuda
    with cuda.gpus[device.index]:
        arrays = [None if t is None else _gpu_array(t) for t in tensors]
        with _on_torch_stream(device):
            result = call(*arrays)
        return _each(lambda array: _gpu_tensor(array, device), result)


def _on_device(name: str, call, *tensors):
    """``call(*arrays)`` on the engine of the tensors' device (the first tensor's: the wrappers
    check they share it), its result (or tuple of results) as new tensors there; None operands
    stay None. Strided operands (channels_last, expanded gradients) are made contiguous by torch,
    whose copy is faster than numbaconv's."""
    first = tensors[0]
    if not (first.is_cpu or first.is_cuda):
        raise RuntimeError(f"{name}: got a tensor on {first.device}; numbaconv runs CPU and CUDA tensors")
    operands = [None if t is None else t.detach().contiguous() for t in tensors]
    if first.is_cuda:
        return _on_gpu(first.device, call, operands)
    arrays = [None if t is None else t.numpy() for t in operands]
    return _each(torch.from_numpy, _with_torch_threads(call, *arrays))


def _numbaconv(pattern: str, rank: int):
    """numbaconv's function of ``pattern`` ("conv{}d", ...) for ``rank`` spatial dims."""
    return getattr(functional, pattern.format(rank))


def _numbaconv_options(stride, padding, dilation, groups):
    """An operator's options as numbaconv takes them: tuples; padding one int per dim where low
    and high are equal (torch.nn's spelling, so a problem met through both libraries is one
    ConvSpec in numbaconv's caches, found there by identity), else (low, high) pairs."""
    low, high = tuple(padding[0::2]), tuple(padding[1::2])
    return tuple(stride), low if low == high else tuple(zip(low, high)), tuple(dilation), groups


def _conv_kernel(input, weight, bias, stride, padding, dilation, groups):
    """numbaconv::conv: ``conv{rank}d(input, weight) + bias``."""
    options = _numbaconv_options(stride, padding, dilation, groups)
    convolve = _numbaconv("conv{}d", weight.dim() - 2)
    return _on_device("numbaconv::conv", lambda x, w, b: convolve(x, w, b, *options), input, weight, bias)


def _conv_input_kernel(grad_output, weight, bias, input_size, stride, padding, dilation, groups):
    """numbaconv::conv_input: ``conv{rank}d_input(input_size, weight, grad_output) + bias``."""
    options = _numbaconv_options(stride, padding, dilation, groups)
    input_gradient, input_size = _numbaconv("conv{}d_input", weight.dim() - 2), tuple(input_size)
    grad_input = _on_device("numbaconv::conv_input",
                            lambda grad_y, w: input_gradient(input_size, w, grad_y, *options),
                            grad_output, weight)
    if bias is not None:
        grad_input += bias.reshape(-1, *(1,) * (grad_input.dim() - 2))
    return grad_input


def _conv_weight_kernel(input, grad_output, weight_size, stride, padding, dilation, groups):
    """numbaconv::conv_weight: ``conv{rank}d_weight(input, weight_size, grad_output)``."""
    options = _numbaconv_options(stride, padding, dilation, groups)
    weight_gradient, weight_size = _numbaconv("conv{}d_weight", input.dim() - 2), tuple(weight_size)
    return _on_device("numbaconv::conv_weight",
                      lambda x, grad_y: weight_gradient(x, weight_size, grad_y, *options),
                      input, grad_output)


def _conv_backward_kernel(grad_output, input, weight, stride, padding, dilation, groups):
    """conv_input and conv_weight of one convolution in one call of numbaconv (eager backward)."""
    options = _numbaconv_options(stride, padding, dilation, groups)
    backward = _numbaconv("conv{}d_backward", weight.dim() - 2)
    return _on_device("numbaconv.torch",
                      lambda grad_y, x, w: backward(grad_y, x, w, *options, bias=False)[:2],
                      grad_output, input, weight)


# ---- shapes for torch.compile, torch.export and meta tensors ---------------------------------

def _spec(x_shape, w_shape, stride, padding, dilation, groups) -> ConvSpec:
    """The ConvSpec of an operator's convolution. Sizes that are ints are validated by numbaconv
    (its errors, at trace time); symbolic ones (torch.compile's dynamic shapes) only enter the
    shape arithmetic, and the kernels validate them when they run."""
    x_shape, w_shape = tuple(x_shape), tuple(w_shape)
    pads = tuple(zip(padding[0::2], padding[1::2]))
    if all(type(n) is int for n in (*x_shape, *w_shape, *padding)):
        return ConvSpec.create(x_shape, w_shape, tuple(stride), pads, tuple(dilation), groups)
    return ConvSpec(x_shape[0], x_shape[1], w_shape[0], groups, x_shape[2:], w_shape[2:], tuple(stride),
                    tuple(dilation), tuple(lo for lo, _ in pads), tuple(hi for _, hi in pads))


def _conv_shape(input, weight, bias, *options):
    return input.new_empty(_spec(input.shape, weight.shape, *options).y_shape)


def _conv_input_shape(grad_output, weight, bias, input_size, *options):
    return grad_output.new_empty(_spec(input_size, weight.shape, *options).x_shape)


def _conv_weight_shape(input, grad_output, weight_size, *options):
    return input.new_empty(_spec(input.shape, weight_size, *options).w_shape)


# ---- gradients, through the operators themselves ----------------------------------------------
# Each takes the operator's two saved operands, its options (stride, padding, dilation, groups),
# the gradient of its result and which of its arguments need one; it returns one gradient per
# argument (None for the others).

def _bias_gradient(grad):
    return grad.sum(dim=(0, *range(2, grad.dim())))


def _conv_gradients(operands, options, grad, needs):
    """conv(x, w) + b: x's gradient is conv_input(grad, w), w's conv_weight(x, grad); both
    in one call of the kernels where no graph of them is recorded (eager, first derivatives)."""
    x, w = operands
    if needs[0] and needs[1] and not torch.is_grad_enabled() and _eager(x, grad):
        grad_x, grad_w = _conv_backward_kernel(grad, x, w, *options)
        grad_x, grad_w = _in_layout(grad_x, grad, w), _in_layout(grad_w, x, grad)
    else:
        grad_x = _call(_CONV_INPUT, grad, w, None, x.shape, *options) if needs[0] else None
        grad_w = _call(_CONV_WEIGHT, x, grad, w.shape, *options) if needs[1] else None
    return grad_x, grad_w, _bias_gradient(grad) if needs[2] else None, None, None, None, None


def _conv_input_gradients(operands, options, grad, needs):
    """conv_input(g, w) + b, the adjoint of conv(., w): g's gradient is conv(grad, w), w's
    conv_weight(grad, g)."""
    grad_y, w = operands
    return (_call(_CONV, grad, w, None, *options) if needs[0] else None,
            _call(_CONV_WEIGHT, grad, grad_y, w.shape, *options) if needs[1] else None,
            _bias_gradient(grad) if needs[2] else None, None, None, None, None, None)


def _conv_weight_gradients(operands, options, grad, needs):
    """conv_weight(x, g), the adjoint of conv(x, .): x's gradient is conv_input(g, grad), g's
    conv(x, grad)."""
    x, grad_y = operands
    return (_call(_CONV_INPUT, grad_y, grad, None, x.shape, *options) if needs[0] else None,
            _call(_CONV, x, grad, None, *options) if needs[1] else None, None, None, None, None, None)


# ---- the operators ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Operator:
    """One of the three operators: its kernel, its gradients and its registered custom op.

    Arguments: two operands, bias (conv and conv_input), a size (conv_input, conv_weight), then
    the options (stride, padding, dilation, groups).
    """

    kernel: Callable
    gradients: Callable
    custom: torch._ops.OpOverload

    @classmethod
    def register(cls, name: str, arguments: str, kernel, shape, gradients) -> "_Operator":
        """Register ``numbaconv::name`` with PyTorch: kernel, shape function and gradients."""
        op = torch.library.custom_op(f"numbaconv::{name}", kernel, mutates_args=(),
                                     schema=f"({arguments}, {_OPTIONS_SCHEMA}) -> Tensor")
        op.register_fake(shape)
        op.register_autograd(
            lambda ctx, grad: gradients(ctx.saved_tensors, ctx.options, grad, ctx.needs_input_grad),
            setup_context=_save_operands)
        return cls(kernel, gradients, getattr(torch.ops.numbaconv, name).default)


def _save_operands(ctx, inputs, output):
    """What the gradients need: the two operands and the options."""
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.options = tuple(inputs[-4:])


class _Eager(torch.autograd.Function):
    """An operator in eager mode: the kernel forward, the operator's gradients backward."""

    @staticmethod
    def forward(ctx, operator, *inputs):
        ctx.operator = operator
        _save_operands(ctx, inputs, None)
        return operator.kernel(*inputs)

    @staticmethod
    def backward(ctx, grad):
        return None, *ctx.operator.gradients(ctx.saved_tensors, ctx.options, grad, ctx.needs_input_grad[1:])


def _in_layout(result, a, b):
    """``result`` channels_last (channels_last_3d) when operand ``a`` or ``b`` is laid out so (and
    not also contiguous, as size-1 dims allow), as torch.nn's CPU convolutions give it."""
    layout = _CHANNELS_LAST.get(a.dim())
    if layout is not None:
        for operand in (a, b):
            if not operand.is_contiguous() and operand.is_contiguous(memory_format=layout):
                return result.contiguous(memory_format=layout)
    return result


def _eager(a, b) -> bool:
    """True where the kernels are called directly: eager mode, plain tensors (not the subclasses
    tracing uses, nor others: those reach their own handling through the custom op), not meta."""
    return not torch.compiler.is_compiling() and type(a) in _PLAIN and type(b) in _PLAIN and not a.is_meta


def _call(operator: _Operator, *inputs):
    """``operator`` on its arguments: the kernel in eager mode (through an autograd.Function when
    a gradient is needed), else the custom op (torch.compile, torch.export, other tracing, tensor
    subclasses, meta tensors)."""
    a, b = inputs[0], inputs[1]
    if not _eager(a, b):
        result = operator.custom(*inputs)
    elif torch.is_grad_enabled() and (a.requires_grad or b.requires_grad
                                      or (isinstance(inputs[2], torch.Tensor) and inputs[2].requires_grad)):
        result = _Eager.apply(operator, *inputs)
    else:
        result = operator.kernel(*inputs)
    return _in_layout(result, a, b)


_CONV = _Operator.register("conv", "Tensor input, Tensor weight, Tensor? bias",
                           _conv_kernel, _conv_shape, _conv_gradients)
_CONV_INPUT = _Operator.register("conv_input",
                                 "Tensor grad_output, Tensor weight, Tensor? bias, SymInt[] input_size",
                                 _conv_input_kernel, _conv_input_shape, _conv_input_gradients)
_CONV_WEIGHT = _Operator.register("conv_weight", "Tensor input, Tensor grad_output, SymInt[] weight_size",
                                  _conv_weight_kernel, _conv_weight_shape, _conv_weight_gradients)


# ---- the functions and layers -----------------------------------------------------------------

def _check_operands(where: str, input, weight, bias, out_channels):
    """Raise unless input, weight and bias share a device numbaconv runs and bias fits."""
    device = input.device
    if weight.device != device or (bias is not None and bias.device != device):
        name, tensor = ("weight", weight) if weight.device != device else ("bias", bias)
        raise RuntimeError(f"{where}: the {name} is on {tensor.device} and the input on {device}; "
                           "put them on one device")
    if not (input.is_cpu or input.is_cuda or input.is_meta):
        raise RuntimeError(f"{where}: got a tensor on {device}; numbaconv runs CPU and CUDA tensors "
                           "(and meta tensors, for their shapes): move the model and data, or use torch.nn")
    if bias is not None:
        if tuple(bias.shape) != (out_channels,):
            raise ValueError(f"{where}: bias must have shape ({out_channels},), got {tuple(bias.shape)}")
        if bias.dtype != weight.dtype:
            raise TypeError(f"{where}: bias dtype {bias.dtype} does not match the weight's {weight.dtype}")


def _flat(pads) -> tuple:
    """(low, high) pairs as the operators' flat padding."""
    return tuple(p for pair in pads for p in pair)


def _ints(value, rank: int) -> bool:
    """True for an int tuple of ``rank`` entries, the form torch.nn's layers keep."""
    return type(value) is tuple and len(value) == rank and all(type(v) is int for v in value)


def _conv_options(rank: int, x, weight, stride, padding, dilation, groups) -> tuple:
    """The operators' options (stride, flat padding, dilation, groups) from torch's argument forms
    and numbaconv's ((low, high) pairs; "same" at any stride). Ints and int tuples pass as they
    are (the operators' ConvSpec checks their ranges); other forms go through numbaconv's
    normalisation, whose errors say what is wrong."""
    if type(stride) is int:
        stride = (stride,) * rank
    elif not _ints(stride, rank):
        stride = normalize_ints("stride", stride, rank, 1)
    if type(dilation) is int:
        dilation = (dilation,) * rank
    elif not _ints(dilation, rank):
        dilation = normalize_ints("dilation", dilation, rank, 1)
    if type(groups) is not int:
        check_groups(groups)
        groups = int(groups)
    if type(padding) is int:
        return stride, (padding,) * (2 * rank), dilation, groups
    if _ints(padding, rank):
        return stride, _flat((p, p) for p in padding), dilation, groups
    pads = normalize_padding(padding, rank)
    if pads == "same":
        pads = [_same_padding(n, k, s, d)
                for n, k, s, d in zip(x.shape[2:], weight.shape[2:], stride, dilation)]
    return stride, _flat(pads), dilation, groups


def _convolve(where: str, rank: int, input, weight, bias, stride, padding, dilation, groups):
    """conv{rank}d of a batched or an unbatched (rank + 1 dims) input, as torch does."""
    _check_operands(where, input, weight, bias, weight.shape[0])
    batched = input.dim() == rank + 2
    x = input if batched else input.unsqueeze(0)
    y = _call(_CONV, x, weight, bias, *_conv_options(rank, x, weight, stride, padding, dilation, groups))
    return y if batched else y.squeeze(0)


def _convolve_transpose(where: str, rank: int, input, weight, bias, stride, padding, output_padding, groups,
                        dilation):
    """conv_transpose{rank}d of a batched or an unbatched input: conv_input of the convolution
    it inverts, whose output is the input, zero-extended at the high end where output_padding
    reaches a stride past it (output_padding >= stride, allowed when dilation > stride)."""
    batched = input.dim() == rank + 2
    x = input if batched else input.unsqueeze(0)
    out_size, stride, pads, dilation, output_padding = transpose_arguments(
        rank, tuple(x.shape), tuple(weight.shape), stride, padding, output_padding, groups, dilation)
    _check_operands(where, input, weight, bias, weight.shape[1] * groups)
    extension = [op // s for op, s in zip(output_padding, stride)]
    if any(extension):
        x = torch.nn.functional.pad(x, [p for e in reversed(extension) for p in (0, e)])
    y = _call(_CONV_INPUT, x, weight, bias, (x.shape[0], weight.shape[1] * groups, *out_size), stride,
              _flat(pads), dilation, groups)
    return y if batched else y.squeeze(0)


def _make_functions(rank: int) -> dict:
    def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        where = f"numbaconv.torch.conv{rank}d"
        check_layer_input(where, input, weight, rank, weight.shape[1] * groups, batched_only=False)
        return _convolve(where, rank, input, weight, bias, stride, padding, dilation, groups)

    def conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                       dilation=1):
        where = f"numbaconv.torch.conv_transpose{rank}d"
        check_layer_input(where, input, weight, rank, weight.shape[0], batched_only=False)
        return _convolve_transpose(where, rank, input, weight, bias, stride, padding, output_padding,
                                   groups, dilation)

    conv.__name__ = conv.__qualname__ = f"conv{rank}d"
    conv.__doc__ = (f"torch.nn.functional.conv{rank}d on numbaconv's kernels, with autograd; padding "
                    "also takes (low, high) pairs, and 'same' at any stride (ceil(in / stride) outputs).")
    conv_transpose.__name__ = conv_transpose.__qualname__ = f"conv_transpose{rank}d"
    conv_transpose.__doc__ = (f"torch.nn.functional.conv_transpose{rank}d on numbaconv's kernels, "
                              "with autograd; padding also takes (low, high) pairs.")
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
        return _convolve(where, rank, input, weight, bias, self.stride, padding, self.dilation, self.groups)


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
        return _convolve_transpose(where, rank, input, self.weight, self.bias, self.stride, self.padding,
                                   output_padding, self.groups, self.dilation)


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
