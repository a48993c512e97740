"""The public convolution functions, built once for any engine.

``numbaconv.functional`` (the Numba kernels) and ``numbaconv.reference`` (the
float64 oracle) expose the same fifteen functions with the same signatures:
``conv{1,2,3}d``, ``conv{1,2,3}d_input``, ``conv{1,2,3}d_weight``,
``conv{1,2,3}d_backward`` and ``conv_transpose{1,2,3}d``. This module turns the
user's arguments into a validated :class:`~numbaconv.spec.ConvSpec` and hands
it to an engine, an object with three methods:

- ``forward(spec, x, w, bias, algo, device) -> y``, adding ``bias[k]`` (when
  not None) to channel ``k`` of ``y``;
- ``backward(spec, grad_y, x, w, need, algo, device) -> (grad_x, grad_w, grad_b)``,
  where ``need`` is a set drawn from ``{"input", "weight", "bias"}`` and the
  gradients not asked for are None;
- ``transpose(spec, x, w, bias, algo, device) -> y``, the input gradient of
  ``spec`` for ``grad_y = x``, plus ``bias`` like ``forward``.

Bias travels with the call so an engine adds it where the result lives (on
the GPU for the CUDA engine).

No kernel code and no Numba here.
"""
from __future__ import annotations

import numpy as np

from .devices import gpu_view, on_gpu
from .spec import ConvSpec, check_dtype, check_groups, normalize_ints, normalize_padding, transpose_output_size

_ARGUMENTS_DOC = """
    stride: int or one int per spatial dim, >= 1.
    padding: int, one int per dim, one (low, high) pair per dim, "valid" or
        "same" (output size ceil(in / stride), the odd pad at the high end).
    dilation: int or one int per dim, >= 1: spacing between kernel taps.
    groups: split channels into this many independent convolutions; must
        divide both channel counts.
    algo: "auto", "tune" (time the algorithms on the first call of each problem
        and pass, then use the fastest; see numbaconv.tune) or a name from
        numbaconv.algorithms(device).
    device: "auto" (where the data is, else $NUMBACONV_DEVICE, else "cpu"),
        "cpu" or "cuda".

Layouts: input (N, C, *spatial), weight (K, C // groups, *kernel),
output (N, K, *out_spatial). Operands share one dtype, float32 or float64.
"""


def as_array(name: str, value, optional: bool = False):
    """NumPy arrays pass as they are, GPU arrays as Numba device arrays (no copy, see
    numbaconv.devices); anything else goes through np.asarray. None is a TypeError unless
    ``optional`` (then it passes as None)."""
    if value is None:
        if optional:
            return None
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ndarray):
        return value
    if on_gpu(value):
        return gpu_view(value)
    try:
        return np.asarray(value)
    except Exception as error:  # an object NumPy cannot read is a type error for us
        raise TypeError(f"{name} must be an array, got {type(value).__name__}: {error}") from None


def _as_shape(name: str, value) -> tuple:
    """A shape argument as a tuple (its entries are checked by ConvSpec)."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {type(value).__name__}: {value!r}")
    return tuple(value)


def _check_vector(name: str, value, length: int):
    if value is not None and tuple(value.shape) != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(value.shape)}")


def _check_grad_output(spec: ConvSpec, grad_y):
    if tuple(grad_y.shape) != spec.y_shape:
        raise ValueError(
            f"grad_output has shape {tuple(grad_y.shape)} but the convolution of input "
            f"{spec.x_shape} with weight {spec.w_shape} gives {spec.y_shape}")


def _finish(function, name: str, module: str, summary: str):
    function.__name__ = function.__qualname__ = name
    function.__module__ = module
    function.__doc__ = summary + "\n" + _ARGUMENTS_DOC
    return function


def _make_rank(engine, rank: int, module: str) -> dict:
    """The five functions of one rank (1, 2 or 3 spatial dims)."""
    d = f"{rank}d"

    def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
             algo="auto", device="auto"):
        x, w, bias = as_array("input", x), as_array("weight", w), as_array("bias", bias, optional=True)
        check_dtype(input=x, weight=w, bias=bias)
        spec = ConvSpec.create(tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups,
                               rank=rank)
        _check_vector("bias", bias, spec.out_channels)
        spec.check_fits(x.dtype, ("y",))
        return engine.forward(spec, x, w, bias, algo, device)

    def conv_input(input_shape, w, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                   algo="auto", device="auto"):
        w, grad_y = as_array("weight", w), as_array("grad_output", grad_output)
        check_dtype(weight=w, grad_output=grad_y)
        spec = ConvSpec.create(_as_shape("input_shape", input_shape), tuple(w.shape), stride, padding, dilation,
                               groups, rank=rank)
        _check_grad_output(spec, grad_y)
        spec.check_fits(w.dtype, ("x",))
        return engine.backward(spec, grad_y, None, w, {"input"}, algo, device)[0]

    def conv_weight(x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1, *,
                    algo="auto", device="auto"):
        x, grad_y = as_array("input", x), as_array("grad_output", grad_output)
        check_dtype(input=x, grad_output=grad_y)
        spec = ConvSpec.create(tuple(x.shape), _as_shape("weight_shape", weight_shape), stride, padding, dilation,
                               groups, rank=rank)
        _check_grad_output(spec, grad_y)
        spec.check_fits(x.dtype, ("w",))
        return engine.backward(spec, grad_y, x, None, {"weight"}, algo, device)[1]

    def conv_backward(grad_output, x, w, stride=1, padding=0, dilation=1, groups=1, *,
                      bias=True, algo="auto", device="auto"):
        grad_y = as_array("grad_output", grad_output)
        x, w = as_array("input", x), as_array("weight", w)
        check_dtype(grad_output=grad_y, input=x, weight=w)
        spec = ConvSpec.create(tuple(x.shape), tuple(w.shape), stride, padding, dilation, groups,
                               rank=rank)
        _check_grad_output(spec, grad_y)
        need = {"input", "weight", "bias"} if bias else {"input", "weight"}
        return engine.backward(spec, grad_y, x, w, need, algo, device)

    def conv_transpose(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                       dilation=1, *, algo="auto", device="auto"):
        x, w, bias = as_array("input", x), as_array("weight", w), as_array("bias", bias, optional=True)
        check_dtype(input=x, weight=w, bias=bias)
        spec = _transpose_spec(rank, tuple(x.shape), tuple(w.shape), stride, padding,
                               output_padding, groups, dilation)
        _check_vector("bias", bias, spec.in_channels)
        spec.check_fits(x.dtype, ("x",))
        return engine.transpose(spec, zero_extend(x, spec.y_shape), w, bias, algo, device)

    return {f.__name__: f for f in (
        _finish(conv, f"conv{d}", module,
                f"{rank}-d convolution (cross-correlation, as in PyTorch): y = conv(x, w) + bias."),
        _finish(conv_input, f"conv{d}_input", module,
                f"Gradient of conv{d} with respect to its input (like torch.nn.grad.conv{d}_input):\n"
                "grad_output has the output's shape; returns an array of input_shape."),
        _finish(conv_weight, f"conv{d}_weight", module,
                f"Gradient of conv{d} with respect to its weight (like torch.nn.grad.conv{d}_weight):\n"
                "returns an array of weight_shape."),
        _finish(conv_backward, f"conv{d}_backward", module,
                f"All gradients of conv{d}: (grad_input, grad_weight, grad_bias);\n"
                "grad_bias is None when bias=False."),
        _finish(conv_transpose, f"conv_transpose{d}", module,
                f"{rank}-d transposed convolution, as torch.nn.functional.conv_transpose{d}:\n"
                f"the input gradient of conv{d}. Weight (C_in, C_out // groups, *kernel);\n"
                "output_padding (< stride or < dilation) extends the output at the high end;\n"
                "padding takes ints or (low, high) pairs, not strings."))
    }


def transpose_arguments(rank, x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """A transposed convolution's arguments checked and resolved, one entry per spatial dim:
    ``(output size, stride, (low, high) pads, dilation, output_padding)``.

    The sizes in the shapes only enter arithmetic and comparisons, so they may be
    symbolic (numbaconv.torch under torch.compile's dynamic shapes).
    """
    if len(x_shape) != rank + 2 or len(w_shape) != rank + 2:
        raise ValueError(f"conv_transpose{rank}d needs input and weight with {rank + 2} dims, "
                         f"got input {x_shape} and weight {w_shape}")
    if w_shape[0] != x_shape[1]:
        raise ValueError(f"conv_transpose{rank}d weight {w_shape} must have the input's "
                         f"{x_shape[1]} channels in dim 0 (input {x_shape})")
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose{rank}d takes numeric padding, got {padding!r}")
    stride = normalize_ints("stride", stride, rank, 1)
    dilation = normalize_ints("dilation", dilation, rank, 1)
    output_padding = normalize_ints("output_padding", output_padding, rank, 0)
    pads = normalize_padding(padding, rank)
    for op, s, dil in zip(output_padding, stride, dilation):
        if op >= max(s, dil):
            raise ValueError(f"output_padding {output_padding} must be smaller than stride {stride} "
                             f"or dilation {dilation} in every dim")
    check_groups(groups)   # before a caller scales the channel count by it
    out_size = transpose_output_size(x_shape[2:], w_shape[2:], stride, [lo for lo, _ in pads],
                                     [hi for _, hi in pads], dilation, output_padding)
    if any(n < 1 for n in out_size):
        raise ValueError(f"conv_transpose{rank}d of input {x_shape} with weight {w_shape} and "
                         f"padding {padding} gives an empty output size {out_size}")
    return out_size, stride, pads, dilation, output_padding


def _transpose_spec(rank, x_shape, w_shape, stride, padding, output_padding, groups, dilation):
    """The forward ConvSpec whose input gradient is this transposed convolution."""
    out_size, stride, pads, dilation, _ = transpose_arguments(rank, x_shape, w_shape, stride, padding,
                                                              output_padding, groups, dilation)
    return ConvSpec.create((x_shape[0], w_shape[1] * groups, *out_size), w_shape, stride, pads,
                           dilation, groups, rank=rank)


def zero_extend(x, shape):
    """``x`` with zeros appended at the high end of each dim up to ``shape``.

    A transposed convolution's forward spec has exactly the input's size
    unless output_padding >= stride (allowed when dilation > stride); then the
    forward convolution has extra outputs at the high end, which receive no
    input and so enter the input gradient as zeros.
    """
    if tuple(x.shape) == shape:
        return x
    host = x.copy_to_host() if on_gpu(x) else np.asarray(x)   # a rare case: GPU data goes through the host
    return np.pad(host, [(0, want - have) for have, want in zip(x.shape, shape)])


def make_api(engine, module: str) -> dict:
    """All fifteen public functions, by name, running on ``engine``."""
    functions = {}
    for rank in (1, 2, 3):
        functions.update(_make_rank(engine, rank, module))
    return functions
