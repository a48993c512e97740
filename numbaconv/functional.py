"""The public convolution functions, running on the Numba kernels.

Each call: arguments -> ConvSpec (numbaconv.api) -> device -> algorithm
(numbaconv.dispatch) -> allocate the result -> run. Inputs are never written:
the kernels get contiguous views or copies and write only into arrays
allocated here. Bias and its gradient are done here, once, for every algorithm.
"""
import numpy as np

from .api import make_api
from .devices import resolve_device
from . import dispatch


def _contiguous(array, dtype):
    return np.ascontiguousarray(array, dtype=dtype)


def _as_5d(array, spec3d, role):
    """View a contiguous array in the kernels' 5-d layout."""
    shape = {"x": spec3d.x_shape, "w": spec3d.w_shape, "y": spec3d.y_shape}[role]
    return array.reshape(shape)


class _CpuEngine:
    """Runs ConvSpecs on the CPU algorithms of numbaconv.dispatch."""

    @staticmethod
    def forward(spec, x, w, algo, device):
        resolve_device(device, x, w)
        spec3d = spec.as_3d()
        algorithm = dispatch.choose("cpu", algo, spec3d)
        y = np.empty(spec.y_shape, x.dtype)
        if y.size:
            algorithm.forward(spec3d, _as_5d(_contiguous(x, x.dtype), spec3d, "x"),
                              _as_5d(_contiguous(w, x.dtype), spec3d, "w"), _as_5d(y, spec3d, "y"))
        return y

    @staticmethod
    def backward(spec, grad_y, x, w, need, algo, device):
        resolve_device(device, grad_y, x, w)
        spec3d = spec.as_3d()
        algorithm = dispatch.choose("cpu", algo, spec3d)
        dtype = grad_y.dtype
        grad_y5 = _as_5d(_contiguous(grad_y, dtype), spec3d, "y")
        grad_x = grad_w = grad_b = None
        if "input" in need:
            grad_x = np.empty(spec.x_shape, dtype)
            if grad_x.size:
                algorithm.backward_input(spec3d, grad_y5, _as_5d(_contiguous(w, dtype), spec3d, "w"),
                                         _as_5d(grad_x, spec3d, "x"))
        if "weight" in need:
            grad_w = np.empty(spec.w_shape, dtype)
            if spec.batch == 0:
                grad_w[...] = 0
            else:
                algorithm.backward_weight(spec3d, _as_5d(_contiguous(x, dtype), spec3d, "x"), grad_y5,
                                          _as_5d(grad_w, spec3d, "w"))
        if "bias" in need:
            grad_b = grad_y5.sum(axis=(0, 2, 3, 4), dtype=np.float64).astype(dtype)
        return grad_x, grad_w, grad_b

    @staticmethod
    def add_bias(y, bias):
        y += np.asarray(bias, dtype=y.dtype).reshape(-1, *(1,) * (y.ndim - 2))
        return y


_api = make_api(_CpuEngine(), module=__name__)
globals().update(_api)
__all__ = list(_api)
