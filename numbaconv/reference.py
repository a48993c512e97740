"""Float64 NumPy reference: the oracle every kernel is checked against.

Written to be read, not to be fast. A convolution is a sum over kernel taps:
for each tap ``t`` the input window that tap sees is one strided slice of the
zero-padded input, and

    y[n, k, o]          = sum_t sum_c  w[k, c, t] * x_pad[n, c, o * stride + t * dilation]
    grad_x_pad[n, c, i] = sum_t sum_k  w[k, c, t] * grad_y[n, k, o]   where i = o * stride + t * dilation
    grad_w[k, c, t]     = sum_n sum_o  grad_y[n, k, o] * x_pad[n, c, o * stride + t * dilation]
    grad_b[k]           = sum_n sum_o  grad_y[n, k, o]

with the channel sums restricted to one group. The public functions
(``conv2d``, ``conv2d_input``, ...) have the signatures of ``numbaconv``'s and
return float64 arrays; ``algo`` and ``device`` accept only their defaults.
This module imports no Numba.
"""
from __future__ import annotations

import math

import numpy as np

from .signatures import make_api
from .spec import ConvSpec


def _tap_window(spec: ConvSpec, tap: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of the padded input that kernel tap ``tap`` multiplies, one per spatial dim."""
    return tuple(slice(t * d, t * d + s * (o - 1) + 1, s)
                 for t, d, s, o in zip(tap, spec.dilation, spec.stride, spec.out_size))


def _padded(spec: ConvSpec, x: np.ndarray) -> np.ndarray:
    return np.pad(x, [(0, 0), (0, 0)] + list(zip(spec.pad_lo, spec.pad_hi)))


def _grouped(array: np.ndarray, groups: int) -> np.ndarray:
    """(N, groups * C, ...) -> (N, groups, C, ...), a view."""
    return array.reshape(array.shape[0], groups, array.shape[1] // groups, *array.shape[2:])


def _flat(array: np.ndarray) -> np.ndarray:
    """(N, groups, C, *spatial) -> (N, groups, C, prod(spatial))."""
    return array.reshape(*array.shape[:3], math.prod(array.shape[3:]))   # not -1: N may be 0


def forward(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """y = conv(x, w), float64."""
    x_windows = _grouped(_padded(spec, x.astype(np.float64)), spec.groups)
    w_groups = _grouped(w.astype(np.float64).reshape(1, *w.shape), spec.groups)[0]
    y = np.zeros((spec.batch, spec.groups, spec.group_out_channels, int(np.prod(spec.out_size))))
    for tap in np.ndindex(*spec.kernel_size):
        window = _flat(x_windows[(Ellipsis, *_tap_window(spec, tap))])
        y += np.einsum("ngcp,gkc->ngkp", window, w_groups[(Ellipsis, *tap)])
    return y.reshape(spec.y_shape)


def backward_input(spec: ConvSpec, grad_y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """grad_x = d(sum(grad_y * y)) / dx, float64."""
    padded_size = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
    grad_x_pad = np.zeros((spec.batch, spec.groups, spec.group_in_channels, *padded_size))
    grad_y_groups = _flat(_grouped(grad_y.astype(np.float64), spec.groups))
    w_groups = _grouped(w.astype(np.float64).reshape(1, *w.shape), spec.groups)[0]
    for tap in np.ndindex(*spec.kernel_size):
        contribution = np.einsum("ngkp,gkc->ngcp", grad_y_groups, w_groups[(Ellipsis, *tap)])
        grad_x_pad[(Ellipsis, *_tap_window(spec, tap))] += contribution.reshape(
            *contribution.shape[:3], *spec.out_size)
    crop = tuple(slice(lo, lo + n) for lo, n in zip(spec.pad_lo, spec.in_size))
    return grad_x_pad[(Ellipsis, *crop)].reshape(spec.x_shape)


def backward_weight(spec: ConvSpec, x: np.ndarray, grad_y: np.ndarray) -> np.ndarray:
    """grad_w = d(sum(grad_y * y)) / dw, float64."""
    x_windows = _grouped(_padded(spec, x.astype(np.float64)), spec.groups)
    grad_y_groups = _flat(_grouped(grad_y.astype(np.float64), spec.groups))
    grad_w = np.zeros((spec.groups, spec.group_out_channels, spec.group_in_channels,
                       *spec.kernel_size))
    for tap in np.ndindex(*spec.kernel_size):
        window = _flat(x_windows[(Ellipsis, *_tap_window(spec, tap))])
        grad_w[(Ellipsis, *tap)] = np.einsum("ngcp,ngkp->gkc", window, grad_y_groups)
    return grad_w.reshape(spec.w_shape)


def backward_bias(grad_y: np.ndarray) -> np.ndarray:
    """grad_b[k] = sum of grad_y over batch and positions, float64."""
    return grad_y.astype(np.float64).sum(axis=(0, *range(2, grad_y.ndim)))


class _ReferenceEngine:
    """Runs the public API on the float64 functions above."""

    @staticmethod
    def check_options(algo, device):
        if algo not in ("auto", "reference") or device not in ("auto", "cpu"):
            raise ValueError(f"the reference runs on NumPy only; got algo={algo!r}, device={device!r}")

    def forward(self, spec, x, w, bias, algo, device):
        self.check_options(algo, device)
        return self.add_bias(forward(spec, np.asarray(x), np.asarray(w)), bias)

    def transpose(self, spec, x, w, bias, algo, device):
        self.check_options(algo, device)
        return self.add_bias(backward_input(spec, np.asarray(x), np.asarray(w)), bias)

    @staticmethod
    def add_bias(y, bias):
        if bias is None:
            return y
        return y + np.asarray(bias, dtype=np.float64).reshape(-1, *(1,) * (y.ndim - 2))

    def backward(self, spec, grad_y, x, w, need, algo, device):
        """(grad_x, grad_w, grad_b); the entries not in ``need`` are None."""
        self.check_options(algo, device)
        grad_y = np.asarray(grad_y)
        return (backward_input(spec, grad_y, np.asarray(w)) if "input" in need else None,
                backward_weight(spec, np.asarray(x), grad_y) if "weight" in need else None,
                backward_bias(grad_y) if "bias" in need else None)


_api = make_api(_ReferenceEngine(), module=__name__)
globals().update(_api)
__all__ = ["forward", "backward_input", "backward_weight", "backward_bias", *_api]
