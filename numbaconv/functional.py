"""The public convolution functions, running on the Numba kernels.

Each call: arguments -> ConvSpec (numbaconv.api) -> device
(numbaconv.devices) -> algorithm (numbaconv.dispatch; for algo="tune" the
plan numbaconv.tuning makes per pass) -> allocate the result -> run. Inputs are never written: the kernels get contiguous views or copies
and write only into arrays allocated here. Bias and its gradient are done
here, once, for every algorithm. NumPy operands give NumPy results; any GPU
operand gives a Numba device array.
"""
import numpy as np

from .api import make_api
from . import tuning
from .devices import empty, on_gpu, resolve_device, to_gpu, to_host_if


def _contiguous(array, dtype):
    return np.ascontiguousarray(array, dtype=dtype)


def _as_5d(array, spec3d, role):
    """View a contiguous array in the kernels' 5-d layout."""
    shape = {"x": spec3d.x_shape, "w": spec3d.w_shape, "y": spec3d.y_shape}[role]
    return array.reshape(shape)


class _Transpose:
    @classmethod
    def transpose(cls, spec, x, w, bias, algo):
        """The transposed convolution: the input gradient of ``spec`` at ``grad_y = x``, plus bias."""
        return cls.add_bias(cls.backward(spec, x, None, w, {"input"}, algo)[0], bias)


class _CpuEngine(_Transpose):
    """Runs ConvSpecs on the CPU algorithms of numbaconv.dispatch (NumPy in, NumPy out)."""

    @staticmethod
    def forward(spec, x, w, bias, algo):
        spec3d = spec.as_3d()
        run = tuning.runner("cpu", algo, spec3d, x.dtype)
        y = np.empty(spec.y_shape, x.dtype)
        if y.size:
            x5, w5, y5 = (_as_5d(_contiguous(x, x.dtype), spec3d, "x"),
                          _as_5d(_contiguous(w, x.dtype), spec3d, "w"), _as_5d(y, spec3d, "y"))
            run("forward", lambda algorithm: algorithm.forward(spec3d, x5, w5, y5))
        return _CpuEngine.add_bias(y, bias)

    @staticmethod
    def backward(spec, grad_y, x, w, need, algo):
        spec3d = spec.as_3d()
        dtype = grad_y.dtype
        run = tuning.runner("cpu", algo, spec3d, dtype)
        grad_y5 = _as_5d(_contiguous(grad_y, dtype), spec3d, "y")
        grad_x = grad_w = grad_b = None
        if "input" in need:
            grad_x = np.empty(spec.x_shape, dtype)
            if grad_x.size:
                w5, grad_x5 = _as_5d(_contiguous(w, dtype), spec3d, "w"), _as_5d(grad_x, spec3d, "x")
                run("input", lambda algorithm: algorithm.backward_input(spec3d, grad_y5, w5, grad_x5))
        if "weight" in need:
            grad_w = np.empty(spec.w_shape, dtype)
            if spec.batch == 0:
                grad_w[...] = 0
            else:
                x5, grad_w5 = _as_5d(_contiguous(x, dtype), spec3d, "x"), _as_5d(grad_w, spec3d, "w")
                run("weight", lambda algorithm: algorithm.backward_weight(spec3d, x5, grad_y5, grad_w5))
        if "bias" in need:
            grad_b = grad_y5.sum(axis=(0, 2, 3, 4), dtype=np.float64).astype(dtype)
        return grad_x, grad_w, grad_b

    @staticmethod
    def add_bias(y, bias):
        if bias is not None:
            y += np.asarray(bias, dtype=y.dtype).reshape(-1, *(1,) * (y.ndim - 2))
        return y


class _CudaEngine(_Transpose):
    """Runs ConvSpecs on the CUDA algorithms; operands of any kind in, device arrays out."""

    @staticmethod
    def forward(spec, x, w, bias, algo):
        spec3d = spec.as_3d()
        run = tuning.runner("cuda", algo, spec3d, x.dtype)
        y = empty(spec3d.y_shape, x.dtype)
        if y.size:
            x5, w5 = to_gpu(x, spec3d.x_shape), to_gpu(w, spec3d.w_shape)
            run("forward", lambda algorithm: algorithm.forward(spec3d, x5, w5, y))
        return _CudaEngine.add_bias(y.reshape(spec.y_shape), bias)

    @staticmethod
    def backward(spec, grad_y, x, w, need, algo):
        from .cuda.common import bias_gradient
        spec3d = spec.as_3d()
        dtype = grad_y.dtype
        run = tuning.runner("cuda", algo, spec3d, dtype)
        grad_y5 = to_gpu(grad_y, spec3d.y_shape)
        grad_x = grad_w = grad_b = None
        if "input" in need:
            grad_x = empty(spec3d.x_shape, dtype)
            if grad_x.size:
                w5 = to_gpu(w, spec3d.w_shape)
                run("input", lambda algorithm: algorithm.backward_input(spec3d, grad_y5, w5, grad_x))
            grad_x = grad_x.reshape(spec.x_shape)
        if "weight" in need:
            if spec.batch == 0:
                grad_w = to_gpu(np.zeros(spec.w_shape, dtype), spec.w_shape)
            else:
                grad_w, x5 = empty(spec3d.w_shape, dtype), to_gpu(x, spec3d.x_shape)
                run("weight", lambda algorithm: algorithm.backward_weight(spec3d, x5, grad_y5, grad_w))
                grad_w = grad_w.reshape(spec.w_shape)
        if "bias" in need:
            grad_b = bias_gradient(grad_y5)
        return grad_x, grad_w, grad_b

    @staticmethod
    def add_bias(y, bias):
        from .cuda.common import add_bias
        if bias is not None:
            add_bias(y, to_gpu(bias, bias.shape))
        return y


class _Engine:
    """Picks the device for each call and keeps the kind of array that came in."""

    @staticmethod
    def _run(device, operands, method, *args):
        device = resolve_device(device, *operands)
        if device == "cpu":
            return getattr(_CpuEngine, method)(*args)
        result = getattr(_CudaEngine, method)(*args)
        host = not any(on_gpu(a) for a in operands)
        if isinstance(result, tuple):
            return tuple(to_host_if(r, host) for r in result)
        return to_host_if(result, host)

    def forward(self, spec, x, w, bias, algo, device):
        return self._run(device, (x, w, bias), "forward", spec, x, w, bias, algo)

    def backward(self, spec, grad_y, x, w, need, algo, device):
        return self._run(device, (grad_y, x, w), "backward", spec, grad_y, x, w, need, algo)

    def transpose(self, spec, x, w, bias, algo, device):
        return self._run(device, (x, w, bias), "transpose", spec, x, w, bias, algo)


_api = make_api(_Engine(), module=__name__)
globals().update(_api)
__all__ = list(_api)
