"""im2col + tiled matrix product on the GPU, batch chunked.

For a chunk of ``nb`` samples the column matrix is ``cols[n * G + g, r, p]``:
``r = (c, td, th, tw)`` runs over the ``R = (C/g) * prod(kernel)`` channel-taps
of group ``g`` and ``p`` over the ``P = prod(out)`` outputs of sample ``n``.
With ``w`` viewed as ``(G, K/g, R)`` and ``y`` as ``(nb * G, K/g, P)``
(:func:`numbaconv.cuda.gemm.matmul`, batches of ``nb * G``):

    forward:       y[n, g]  = w[g] @ cols[n, g]
    weight grad:   grad_w[g] += sum over n of grad_y[n, g] @ cols[n, g].T
    input grad:    dcols[n, g] = w[g].T @ grad_y[n, g], then col2im: every
                   input element gathers the column entries it was copied to.

The chunk size keeps ``cols`` (and ``dcols``) under the workspace limit that
``numbaconv.set_workspace_limit`` sets (numbaconv/cpu/workspace.py), one sample
at least.
FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, all in the matrix
product. Extra memory traffic: the column matrix, ``prod(kernel)`` times the
input, is written once and read by the product once; for large channel
counts the product dominates and the pass is compute-bound.
"""
import functools
import math

import numpy as np
from numba import cuda

from ..cpu import workspace
from .common import LAUNCH, grid_blocks, grid_stride, source_output, unravel
from .gemm import matmul


def supports(spec):
    """im2col runs every problem."""
    return None


@functools.cache
def _kernels(dtype):
    zero = dtype.type(0)

    @cuda.jit
    def unfold_kernel(x, cols, kernel_size, out_size, stride, dilation, pad_lo):
        """cols[n*G + g, (c, t), p] = x[n, g*C/g + c, p*stride - pad + t*dilation], zero in the padding.
        Writes the column matrix once (coalesced along p), reads x through the cache."""
        in_channels, in_d, in_h, in_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        rows, positions = cols.shape[1], cols.shape[2]
        groups = cols.shape[0] // x.shape[0]
        k_d, k_h, k_w = kernel_size
        out_h, out_w = out_size[1], out_size[2]
        taps = k_d * k_h * k_w
        group_in = in_channels // groups
        first, step = grid_stride()
        for index in range(first, cols.size, step):
            p, r, zg = index % positions, index // positions % rows, index // (positions * rows)
            n, g, c, tap = zg // groups, zg % groups, r // taps, r % taps
            td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
            od, oh, ow = p // (out_h * out_w), p // out_w % out_h, p % out_w
            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
            i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
            i_w = ow * stride[2] - pad_lo[2] + tw * dilation[2]
            value = zero
            if 0 <= i_d < in_d and 0 <= i_h < in_h and 0 <= i_w < in_w:
                value = x[n, g * group_in + c, i_d, i_h, i_w]
            cols[zg, r, p] = value

    @cuda.jit
    def fold_kernel(cols, grad_x, kernel_size, out_size, stride, dilation, pad_lo):
        """col2im by gathering: grad_x[n, ch, i] = sum over taps t whose window puts t on i of
        cols[n*G + g, (c, t), o]. One write per input element, no atomics."""
        in_channels = grad_x.shape[1]
        groups = cols.shape[0] // grad_x.shape[0]
        group_in = in_channels // groups
        k_d, k_h, k_w = kernel_size
        out_d, out_h, out_w = out_size
        taps = k_d * k_h * k_w
        first, step = grid_stride()
        for index in range(first, grad_x.size, step):
            n, channel, i_d, i_h, i_w = unravel(index, grad_x.shape)
            zg, row0 = n * groups + channel // group_in, (channel % group_in) * taps
            total = zero
            for td in range(k_d):
                od = source_output(i_d, td, stride[0], dilation[0], pad_lo[0], out_d)
                if od >= 0:
                    for th in range(k_h):
                        oh = source_output(i_h, th, stride[1], dilation[1], pad_lo[1], out_h)
                        if oh >= 0:
                            for tw in range(k_w):
                                ow = source_output(i_w, tw, stride[2], dilation[2], pad_lo[2], out_w)
                                if ow >= 0:
                                    total += cols[zg, row0 + (td * k_h + th) * k_w + tw,
                                                  (od * out_h + oh) * out_w + ow]
            grad_x[n, channel, i_d, i_h, i_w] = total

    return unfold_kernel, fold_kernel


class _Columns:
    """One problem's column matrix: its shapes, its batch chunks and the device buffer they share."""

    def __init__(self, spec, dtype):
        self.spec = spec
        self.groups = spec.groups
        self.rows = spec.group_in_channels * math.prod(spec.kernel_size)
        self.positions = math.prod(spec.out_size)
        self.dtype = np.dtype(dtype)
        sample_bytes = self.groups * self.rows * self.positions * self.dtype.itemsize
        self.chunk = max(1, min(spec.batch, workspace.workspace_limit() // sample_bytes))
        self.columns = cuda.device_array((self.chunk * self.groups, self.rows, self.positions), self.dtype)
        self.unfold_kernel, self.fold_kernel = _kernels(self.dtype)

    def chunks(self):
        """(first_sample, samples, columns view) covering the batch."""
        for first in range(0, self.spec.batch, self.chunk):
            samples = min(self.chunk, self.spec.batch - first)
            yield first, samples, self.columns[:samples * self.groups]

    def by_group(self, array):
        """A (samples, K, *out) device array as (samples * G, K/g, P)."""
        return array.reshape(array.shape[0] * self.groups, -1, self.positions)

    def weights(self, w):
        return w.reshape(self.groups, -1, self.rows)

    def unfold(self, x, cols):
        s = self.spec
        self.unfold_kernel[grid_blocks(cols.size), LAUNCH.threads](
            x, cols, s.kernel_size, s.out_size, s.stride, s.dilation, s.pad_lo)

    def fold(self, cols, grad_x):
        s = self.spec
        self.fold_kernel[grid_blocks(grad_x.size), LAUNCH.threads](
            cols, grad_x, s.kernel_size, s.out_size, s.stride, s.dilation, s.pad_lo)


def forward(spec, x, w, out):
    columns = _Columns(spec, x.dtype)
    for first, samples, cols in columns.chunks():
        columns.unfold(x[first:first + samples], cols)
        matmul(columns.weights(w), cols, columns.by_group(out[first:first + samples]))


def backward_weight(spec, x, grad_y, grad_w):
    columns = _Columns(spec, x.dtype)
    for first, samples, cols in columns.chunks():
        columns.unfold(x[first:first + samples], cols)
        matmul(columns.by_group(grad_y[first:first + samples]), cols, columns.weights(grad_w),
               transpose_b=True, accumulate=first > 0)


def backward_input(spec, grad_y, w, grad_x):
    columns = _Columns(spec, w.dtype)
    for first, samples, cols in columns.chunks():
        matmul(columns.weights(w), columns.by_group(grad_y[first:first + samples]), cols, transpose_a=True)
        columns.fold(cols, grad_x[first:first + samples])
