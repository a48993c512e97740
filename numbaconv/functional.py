"""The public convolution functions, running on the Numba kernels.

Each call: arguments -> ConvSpec (numbaconv.signatures) -> device
(numbaconv.devices) -> per pass an algorithm (numbaconv.dispatch; for
algo="tune" the plan numbaconv.tuning makes) -> allocate the result -> run.
Inputs are never written: the kernels get contiguous views or copies and
write only into arrays allocated here. Bias and its gradient are done here,
once, for every algorithm. One engine serves both devices through a small
adapter (:class:`_Host`, :class:`_Gpu`): where operands live, how results
are allocated, how a pass runs, how the bias is added. NumPy operands give
NumPy results; any GPU operand gives a Numba device array.

On the CPU:

- each pass first marks the thread's scratch idle (``workspace.begin_pass``),
  so the passes of one call stay under the workspace limit together;
- a long pass runs in slices (numbaconv.slices), so Ctrl-C stops it;
- NaN and Inf: with ``algo="auto"`` or ``"tune"`` every result has its NaN,
  +Inf and -Inf where the float64 reference has them. Algorithms that place
  them differently for a pass say so in ``INEXACT_NONFINITE``
  (``{pass: what to check}``): ``"result"`` (Winograd's transforms mix
  neighbouring values, so a non-finite value spreads over its tiles): a
  result holding one is computed again by the automatic choice among the
  algorithms that place them as the reference does
  (``dispatch.choose_as_reference``); an operand's name (``"weight"``,
  ``"grad_output"``: the algorithm skips the products of that operand with
  the zero padding, which the reference computes, so Inf * 0 = NaN
  appears there and not here): when that operand holds a non-finite value,
  that choice runs instead. An explicit ``algo=`` runs as asked.
"""
import numpy as np

from .signatures import make_api
from . import dispatch, slices, tuning
from .algorithm import PASS_FUNCTIONS
from .cpu import workspace
from .devices import empty, on_gpu, resolve_device, to_gpu, to_host_if

AUTOMATIC = ("auto", "tune")
# The operands of each pass, by the names INEXACT_NONFINITE uses, in the order the kernels take them.
OPERANDS = {"forward": ("input", "weight"), "input": ("grad_output", "weight"),
            "weight": ("input", "grad_output")}


class _Host:
    """The CPU: NumPy arrays, passes in slices, NaN/Inf placed as the reference places them."""

    name = "cpu"

    @staticmethod
    def operand(array, shape, dtype):
        return np.ascontiguousarray(array, dtype=dtype).reshape(shape)

    @staticmethod
    def empty(shape, dtype):
        return np.empty(shape, dtype)

    @staticmethod
    def zeros(shape, dtype):
        return np.zeros(shape, dtype)

    @staticmethod
    def run_pass(run, algo, pass_name, spec3d, a, b, out):
        def run_module(module):
            workspace.begin_pass()
            return slices.run(module, pass_name, spec3d, a, b, out)

        def call(module):
            check = dispatch.nonfinite_check(module, pass_name) if algo in AUTOMATIC else None
            if check in OPERANDS[pass_name] and not np.isfinite((a, b)[OPERANDS[pass_name].index(check)]).all():
                module, check = dispatch.choose_as_reference("cpu", spec3d, pass_name), None
            finite = run_module(module)   # where the module counted (numbaconv.algorithm)
            if check == "result" and not (np.isfinite(out).all() if finite is None else finite):
                run_module(dispatch.choose_as_reference("cpu", spec3d, pass_name))
        run(pass_name, call)

    @staticmethod
    def add_bias(y, bias):
        if bias is not None:
            y += np.asarray(bias, dtype=y.dtype).reshape(-1, *(1,) * (y.ndim - 2))
        return y

    @staticmethod
    def bias_gradient(grad_y5):
        return grad_y5.sum(axis=(0, 2, 3, 4), dtype=np.float64).astype(grad_y5.dtype)

    @staticmethod
    def to_caller(result, operands):
        return result


class _Gpu:
    """The GPU: operands copied in (or used in place), device arrays out."""

    name = "cuda"

    @staticmethod
    def operand(array, shape, dtype):
        return to_gpu(array, shape)

    @staticmethod
    def empty(shape, dtype):
        return empty(shape, dtype)

    @staticmethod
    def zeros(shape, dtype):
        return to_gpu(np.zeros(shape, dtype), shape)

    @staticmethod
    def run_pass(run, algo, pass_name, spec3d, a, b, out):
        run(pass_name, lambda module: getattr(module, PASS_FUNCTIONS[pass_name])(spec3d, a, b, out))

    @staticmethod
    def add_bias(y, bias):
        from .cuda.common import add_bias
        if bias is not None:
            add_bias(y, to_gpu(bias, bias.shape))
        return y

    @staticmethod
    def bias_gradient(grad_y5):
        from .cuda.common import bias_gradient
        return bias_gradient(grad_y5)

    @staticmethod
    def to_caller(result, operands):
        host = not any(on_gpu(a) for a in operands)
        if isinstance(result, tuple):
            return tuple(to_host_if(r, host) for r in result)
        return to_host_if(result, host)


class _Engine:
    """Picks the device of each call and runs its passes there."""

    @staticmethod
    def _side(device, operands):
        return _Host if resolve_device(device, *operands) == "cpu" else _Gpu

    def forward(self, spec, x, w, bias, algo, device):
        side = self._side(device, (x, w, bias))
        spec3d = spec.as_3d()
        run = tuning.runner(side.name, algo, spec3d, x.dtype)
        y = side.empty(spec3d.y_shape, x.dtype)
        if y.size:
            x5, w5 = side.operand(x, spec3d.x_shape, x.dtype), side.operand(w, spec3d.w_shape, x.dtype)
            side.run_pass(run, algo, "forward", spec3d, x5, w5, y)
        return side.to_caller(side.add_bias(y.reshape(spec.y_shape), bias), (x, w, bias))

    def backward(self, spec, grad_y, x, w, need, algo, device):
        side = self._side(device, (grad_y, x, w))
        return side.to_caller(self._backward(side, spec, grad_y, x, w, need, algo), (grad_y, x, w))

    def transpose(self, spec, x, w, bias, algo, device):
        """The transposed convolution: the input gradient of ``spec`` at ``grad_y = x``, plus bias."""
        side = self._side(device, (x, w, bias))
        grad_x = self._backward(side, spec, x, None, w, {"input"}, algo)[0]
        return side.to_caller(side.add_bias(grad_x, bias), (x, w, bias))

    @staticmethod
    def _backward(side, spec, grad_y, x, w, need, algo):
        spec3d = spec.as_3d()
        dtype = grad_y.dtype
        run = tuning.runner(side.name, algo, spec3d, dtype)
        grad_y5 = side.operand(grad_y, spec3d.y_shape, dtype)
        grad_x = grad_w = grad_b = None
        if "input" in need:
            grad_x = side.empty(spec3d.x_shape, dtype)
            if grad_x.size:
                side.run_pass(run, algo, "input", spec3d, grad_y5, side.operand(w, spec3d.w_shape, dtype), grad_x)
            grad_x = grad_x.reshape(spec.x_shape)
        if "weight" in need:
            if spec.batch == 0:
                grad_w = side.zeros(spec3d.w_shape, dtype)
            else:
                grad_w = side.empty(spec3d.w_shape, dtype)
                side.run_pass(run, algo, "weight", spec3d, side.operand(x, spec3d.x_shape, dtype), grad_y5, grad_w)
            grad_w = grad_w.reshape(spec.w_shape)
        if "bias" in need:
            grad_b = side.bias_gradient(grad_y5)
        return grad_x, grad_w, grad_b


_api = make_api(_Engine(), module=__name__)
globals().update(_api)
__all__ = list(_api)
