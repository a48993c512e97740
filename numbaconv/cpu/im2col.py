"""im2col + GEMM: unfold input windows into a column matrix, then BLAS products.

The column matrix of a problem is ``cols[g, r, b * P + p]``: ``r = (c, td, th, tw)``
runs over the ``R = (C/g) * prod(kernel)`` channel-taps of group ``g``, and the
column ``b * P + p`` over samples and their ``P = prod(out)`` outputs (seed
003; seed 000 version 1). Per group,

    forward:       y      = w (K/g, R) @ cols (R, N*P)
    weight grad:   grad_w = grad_y (K/g, N*P) @ cols.T
    input grad:    dcols  = w.T (R, K/g) @ grad_y (K/g, N*P), then col2im adds
                   every column entry back onto the input element it came from.

The matrix is never built whole: it is made and consumed in blocks of
consecutive columns small enough to stay in a core's cache (``workspace.BLOCK_BYTES``),
so unfolding costs cache writes rather than memory traffic. The blocks are
shared out to a pool of threads; each thread unfolds its block with a
``nogil`` Numba kernel and multiplies it with a single-threaded BLAS call.
(A Numba ``prange`` unfold followed by a multi-threaded BLAS product was up
to 2x slower on 2 cores: each pool's idle workers spin on the cores the
other pool needs.) The input gradient folds back into whole samples, so its
blocks are shared out by sample: a batch of one runs on one thread.

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, all in BLAS. Memory
traffic: x, w and y once each, plus the weight matrix once per block.
Workspace: per thread, one column block and (weight gradient) one partial
``grad_w``; the blocks together at most ``workspace.WORKSPACE_LIMIT_BYTES``
(256 MiB) unless a single column is larger.
"""
import math

import numpy as np
from numba import njit

from . import workspace
from .pool import grouped_matmul, run_in_threads, split, sum_over_threads, thread_count
from .common import valid_outputs


def supports(spec):
    """im2col runs every problem."""
    return None


@njit(nogil=True, cache=True)
def _unfold_or_fold(image, cols, first_column, fold, kernel_size, out_size, stride, dilation, pad_lo):
    """Move data between ``image`` (N, C, D, H, W) and the column block ``cols`` (G, R, count).

    ``cols[g, r, j]`` belongs to global column ``first_column + j``. With
    ``fold`` false, fill the block from the image (im2col; zeros where the
    window lies in the padding); with ``fold`` true, add the block onto the
    image elements those entries came from (col2im). One thread owns the
    block, so folding needs no atomics.
    """
    in_channels, in_d, in_h, in_w = image.shape[1], image.shape[2], image.shape[3], image.shape[4]
    groups, count = cols.shape[0], cols.shape[2]
    group_in = in_channels // groups
    k_d, k_h, k_w = kernel_size
    out_d, out_h, out_w = out_size
    taps = k_d * k_h * k_w
    positions = out_d * out_h * out_w
    # per tap: the output ranges (d0, d1, h0, h1, w0, w1) whose window lies inside the image
    inside = np.empty((taps, 6), np.int64)
    for tap in range(taps):
        td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
        inside[tap, 0:2] = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
        inside[tap, 2:4] = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
        inside[tap, 4:6] = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
    j = 0
    while j < count:   # one run of an output row (fixed b, od, oh) at a time
        b, p = (first_column + j) // positions, (first_column + j) % positions
        ow, oh, od = p % out_w, p // out_w % out_h, p // (out_w * out_h)
        run = min(out_w - ow, count - j)
        base = j - ow   # cols[..., base + o] holds output column o of this run
        for tap in range(taps):
            td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
            row_inside = inside[tap, 0] <= od < inside[tap, 1] and inside[tap, 2] <= oh < inside[tap, 3]
            # outputs [first, stop) of the run read inside the image, the rest padding
            first = min(max(inside[tap, 4], ow), ow + run)
            stop = max(min(inside[tap, 5], ow + run), first)
            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
            i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
            offset = tw * dilation[2] - pad_lo[2]
            for channel in range(in_channels):
                row = cols[channel // group_in, (channel % group_in) * taps + tap]
                if not row_inside:
                    if not fold:
                        row[j:j + run] = 0
                    continue
                # a strided view of the image elements this run reads: contiguous copies below
                image_run = image[b, channel, i_d, i_h,
                                  first * stride[2] + offset:(stop - 1) * stride[2] + offset + 1:stride[2]]
                if fold:
                    image_run += row[base + first:base + stop]
                else:
                    row[j:base + first] = 0
                    row[base + first:base + stop] = image_run
                    row[base + stop:j + run] = 0
        j += run


class _Plan:
    """How one problem's column matrix is cut into blocks, and where each block's data lives."""

    def __init__(self, spec, dtype, threads):
        self.spec = spec
        self.groups = spec.groups
        self.rows = spec.group_in_channels * math.prod(spec.kernel_size)
        self.positions = math.prod(spec.out_size)
        self.columns = spec.batch * self.positions
        self.dtype = np.dtype(dtype)
        self.block = workspace.block_columns(self.groups * self.rows * self.dtype.itemsize, threads,
                                             self.columns)

    def blocks(self, first=0, stop=None):
        """(first_column, count) of the blocks covering columns [first, stop)."""
        stop = self.columns if stop is None else stop
        return [(start, min(self.block, stop - start)) for start in range(first, stop, self.block)]

    def column_block(self, count):
        """This thread's scratch for ``count`` columns, (groups, rows, count)."""
        size = self.groups * self.rows * count
        return workspace.borrow("columns", size, self.dtype).reshape(self.groups, self.rows, count)

    def unfold(self, x, first_column, count):
        cols = self.column_block(count)
        s = self.spec
        _unfold_or_fold(x, cols, first_column, False, s.kernel_size, s.out_size, s.stride,
                        s.dilation, s.pad_lo)
        return cols

    def fold(self, cols, grad_x, first_column):
        s = self.spec
        _unfold_or_fold(grad_x, cols, first_column, True, s.kernel_size, s.out_size, s.stride,
                        s.dilation, s.pad_lo)

    def segments(self, first_column, count):
        """The block's columns cut at sample boundaries: (sample, first_position, stop_position, j)."""
        j = 0
        while j < count:
            b, p = divmod(first_column + j, self.positions)
            run = min(self.positions - p, count - j)
            yield b, p, p + run, j
            j += run

    def by_group(self, y, b):
        """Sample ``b`` of an output-shaped (N, K, *out) array as a (groups, K/g, P) view."""
        return y[b].reshape(self.groups, -1, self.positions)

    def gather(self, y, first_column, count):
        """Columns [first_column, first_column + count) of an output-shaped array, copied into
        this thread's (groups, K/g, count) scratch."""
        block = workspace.borrow("gathered", y.shape[1] * count, self.dtype).reshape(
            self.groups, -1, count)
        for b, p0, p1, j in self.segments(first_column, count):
            block[:, :, j:j + p1 - p0] = self.by_group(y, b)[:, :, p0:p1]
        return block


def forward(spec, x, w, out):
    threads = thread_count()
    plan = _Plan(spec, x.dtype, threads)
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, plan.rows)

    def work(share):
        for first_column, count in share:
            cols = plan.unfold(x, first_column, count)
            for b, p0, p1, j in plan.segments(first_column, count):
                grouped_matmul(w_matrix, cols[:, :, j:j + p1 - p0], plan.by_group(out, b)[:, :, p0:p1])

    run_in_threads(work, split(plan.blocks(), threads))


def backward_weight(spec, x, grad_y, grad_w):
    plan = _Plan(spec, x.dtype, thread_count())

    def work(share):
        partial = np.zeros((spec.groups, spec.group_out_channels, plan.rows), x.dtype)
        product = np.empty_like(partial)
        for first_column, count in share:
            cols = plan.unfold(x, first_column, count)
            grouped_matmul(plan.gather(grad_y, first_column, count), cols.transpose(0, 2, 1), product)
            partial += product
        return partial

    sum_over_threads(work, plan.blocks(), grad_w.reshape(spec.groups, spec.group_out_channels, plan.rows))


def backward_input(spec, grad_y, w, grad_x):
    plan = _Plan(spec, w.dtype, thread_count())
    w_transposed = w.reshape(spec.groups, spec.group_out_channels, plan.rows).transpose(0, 2, 1)

    def work(sample):
        grad_x[sample] = 0
        first = sample * plan.positions
        for first_column, count in plan.blocks(first, first + plan.positions):
            cols = plan.column_block(count)
            p0 = first_column - first
            grouped_matmul(w_transposed, plan.by_group(grad_y, sample)[:, :, p0:p0 + count], cols)
            plan.fold(cols, grad_x, first_column)

    run_in_threads(work, range(spec.batch))
