"""im2col + GEMM: unfold input windows into a column matrix, then one BLAS product.

For a chunk of ``B`` samples the column matrix is ``cols[g, r, b * P + p]``
with ``r = (c, td, th, tw)`` running over the ``R = (C/g) * prod(kernel)``
channel-taps of group ``g`` and ``p`` over the ``P = prod(out)`` outputs
(seed 003; seed 000 version 1). Then, per group,

    forward:       y      = w (K/g, R) @ cols (R, B*P)
    weight grad:   grad_w = grad_y (K/g, B*P) @ cols.T          (summed over chunks)
    input grad:    dcols  = w.T (R, K/g) @ grad_y (K/g, B*P),  then col2im adds
                   every column entry back onto the input element it came from.

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, all in NumPy's BLAS
(``np.matmul``), so the pass runs near BLAS speed when ``R`` and ``K/g`` are
large. Extra traffic: the column matrix, ``prod(kernel)`` times the input
(written once, read once by the GEMM); the unfolding kernels are bound by
memory bandwidth. Workspace: the column matrix of at most
``WORKSPACE_LIMIT_BYTES`` (256 MiB); larger batches are processed in chunks,
and a single sample whose columns exceed the cap is still processed whole.
"""
import math

import numpy as np
from numba import njit, prange

from . import workspace
from .common import valid_outputs

WORKSPACE_LIMIT_BYTES = 256 * 2**20


def supports(spec):
    """im2col runs every problem."""
    return None


@njit(parallel=True, cache=True)
def _im2col_kernel(x, cols, kernel_size, out_size, stride, dilation, pad_lo):
    """cols[g, (c, tap), b * P + p] = x_pad[b, g*Cg + c, window of output p at tap]."""
    batch, in_channels, in_d, in_h, in_w = x.shape
    groups = cols.shape[0]
    group_in = in_channels // groups
    k_d, k_h, k_w = kernel_size
    out_d, out_h, out_w = out_size
    taps = k_d * k_h * k_w
    positions = out_d * out_h * out_w
    for job in prange(in_channels * taps * batch):
        b = job % batch
        channel = job // batch // taps
        tap = job // batch % taps
        td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
        row = cols[channel // group_in, (channel % group_in) * taps + tap, b * positions:(b + 1) * positions]
        d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
        h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
        w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
        # every entry is written once: zeros where the window is in the padding, input elsewhere
        for od in range(out_d):
            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
            for oh in range(out_h):
                start = (od * out_h + oh) * out_w
                if od < d0 or od >= d1 or oh < h0 or oh >= h1:
                    row[start:start + out_w] = 0
                    continue
                i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                x_row = x[b, channel, i_d, i_h]
                row[start:start + w0] = 0
                for ow in range(w0, w1):
                    row[start + ow] = x_row[ow * stride[2] - pad_lo[2] + tw * dilation[2]]
                row[start + max(w0, w1):start + out_w] = 0


@njit(parallel=True, cache=True)
def _col2im_kernel(cols, grad_x, kernel_size, out_size, stride, dilation, pad_lo):
    """grad_x[b, c] = sum over taps of the column entries that were read from it (im2col's adjoint)."""
    batch, in_channels, in_d, in_h, in_w = grad_x.shape
    groups = cols.shape[0]
    group_in = in_channels // groups
    k_d, k_h, k_w = kernel_size
    out_d, out_h, out_w = out_size
    taps = k_d * k_h * k_w
    positions = out_d * out_h * out_w
    for plane in prange(batch * in_channels):
        b, channel = plane // in_channels, plane % in_channels
        grad_x[b, channel] = 0
        for tap in range(taps):
            td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
            row = cols[channel // group_in, (channel % group_in) * taps + tap, b * positions:(b + 1) * positions]
            d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
            h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
            w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
            for od in range(d0, d1):
                i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                for oh in range(h0, h1):
                    i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                    gx_row = grad_x[b, channel, i_d, i_h]
                    start = (od * out_h + oh) * out_w
                    for ow in range(w0, w1):
                        gx_row[ow * stride[2] - pad_lo[2] + tw * dilation[2]] += row[start + ow]


class _Columns:
    """Shapes of one problem's column matrix and a reusable buffer for it."""

    def __init__(self, spec, dtype):
        self.spec = spec
        self.groups = spec.groups
        self.rows = spec.group_in_channels * math.prod(spec.kernel_size)
        self.positions = math.prod(spec.out_size)
        bytes_per_sample = self.groups * self.rows * self.positions * np.dtype(dtype).itemsize
        self.chunk = max(1, min(spec.batch, WORKSPACE_LIMIT_BYTES // bytes_per_sample))
        self.dtype = dtype

    def chunks(self):
        """(start, stop) sample ranges of at most ``self.chunk`` samples."""
        for start in range(0, self.spec.batch, self.chunk):
            yield start, min(start + self.chunk, self.spec.batch)

    def matrix(self, samples):
        """The column matrix of ``samples`` samples: a contiguous (groups, rows, samples * positions)
        view of this thread's workspace."""
        size = self.groups * self.rows * samples * self.positions
        return workspace.borrow("columns", size, self.dtype).reshape(
            self.groups, self.rows, samples * self.positions)

    def product(self, samples, out_channels):
        """Scratch for a (groups, K/g, samples * positions) matrix product."""
        size = out_channels * samples * self.positions
        return workspace.borrow("product", size, self.dtype).reshape(
            self.groups, out_channels // self.groups, samples * self.positions)

    def unfold(self, x_chunk):
        cols = self.matrix(x_chunk.shape[0])
        s = self.spec
        _im2col_kernel(x_chunk, cols, s.kernel_size, s.out_size, s.stride, s.dilation, s.pad_lo)
        return cols

    def fold(self, cols, grad_x_chunk):
        s = self.spec
        _col2im_kernel(cols, grad_x_chunk, s.kernel_size, s.out_size, s.stride, s.dilation, s.pad_lo)

    def by_group(self, y_chunk):
        """(B, K, *out) -> (groups, K/g, B*P): the GEMM layout of an output-shaped array, copied
        into workspace."""
        samples, out_channels = y_chunk.shape[:2]
        regrouped = workspace.borrow("regrouped", y_chunk.size, self.dtype).reshape(
            self.groups, out_channels // self.groups, samples, self.positions)
        regrouped[...] = y_chunk.reshape(samples, self.groups, -1, self.positions).transpose(1, 2, 0, 3)
        return regrouped.reshape(self.groups, -1, samples * self.positions)

    def by_sample(self, product, y_chunk):
        """Write a (groups, K/g, B*P) product into the (B, K, *out) array ``y_chunk``."""
        samples = y_chunk.shape[0]
        grouped = product.reshape(self.groups, -1, samples, self.positions).transpose(2, 0, 1, 3)
        y_chunk.reshape(samples, self.groups, -1, self.positions)[...] = grouped


def forward(spec, x, w, out):
    columns = _Columns(spec, x.dtype)
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, columns.rows)
    for start, stop in columns.chunks():
        cols = columns.unfold(x[start:stop])
        product = np.matmul(w_matrix, cols, out=columns.product(stop - start, spec.out_channels))
        columns.by_sample(product, out[start:stop])


def backward_input(spec, grad_y, w, grad_x):
    columns = _Columns(spec, w.dtype)
    w_transposed = w.reshape(spec.groups, spec.group_out_channels, columns.rows).transpose(0, 2, 1)
    for start, stop in columns.chunks():
        cols = columns.matrix(stop - start)
        np.matmul(w_transposed, columns.by_group(grad_y[start:stop]), out=cols)
        columns.fold(cols, grad_x[start:stop])


def backward_weight(spec, x, grad_y, grad_w):
    columns = _Columns(spec, x.dtype)
    grad_w_matrix = grad_w.reshape(spec.groups, spec.group_out_channels, columns.rows)
    grad_w_matrix[...] = 0
    for start, stop in columns.chunks():
        cols = columns.unfold(x[start:stop])
        grad_w_matrix += np.matmul(columns.by_group(grad_y[start:stop]), cols.transpose(0, 2, 1))
