"""Shifted-copy GEMM for stride-1 convolutions: im2col on the padded grid.

Pad a sample into ``padded (C, Dp, Hp, Wp)`` and number each output by the
flat index of its window's corner in it, ``q = (od * Hp + oh) * Wp + ow``.
With stride 1, tap ``t`` of output ``q`` reads ``padded[c].flat[q + shift_t]``,
``shift_t = (td*dd * Hp + th*dh) * Wp + tw*dw``: the same index plus a
constant. So row ``(c, t)`` of the column matrix over a range of ``q`` is one
contiguous copy of the padded input (thousands of elements, where im2col
copies one output row at a time), and col2im is one contiguous add. Per
block of ``q`` and group, exactly as in im2col,

    forward:       y_wide = w (K/g, R) @ cols (R, block)
    weight grad:   grad_w += grad_y_wide (K/g, block) @ cols.T
    input grad:    dcols  = w.T (R, K/g) @ grad_y_wide, folded into padded grad_x.

The ``q`` with ``ow >= OW`` or ``oh >= OH`` are not outputs (their windows
wrap past a row's end): the forward pass drops them, the backward passes
give them zero gradient. They cost ``Q / P - 1`` extra FLOPs, ``Q`` the span
of ``q``: about ``(k - 1) / W`` for 2-d, 3.5% at 56x56 but 24% at 7x7.

FLOPs: ``2 N K (C/g) Q prod(kernel)``, all in BLAS. Memory traffic: x, w and
y once each plus the weight matrix once per block; copies stay in cache.
Workspace per thread: one padded sample, one column block (about
``workspace.BLOCK_BYTES``) and one output block. Only stride 1 (any padding,
dilation and groups).
"""
import math

import numpy as np
from numba import njit

from . import workspace
from .pool import grouped_matmul, run_in_threads, split, sum_over_threads, thread_count


def supports(spec):
    if any(s != 1 for s in spec.stride):
        return f"needs stride 1 in every dim, got {spec.stride}"
    return None


def span_ratio(spec):
    """``Q / P``: the FLOPs this algorithm spends per FLOP of the convolution (stride 1)."""
    padded_d, padded_h, padded_w = (n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
    out_d, out_h, out_w = spec.out_size
    return (((out_d - 1) * padded_h + out_h - 1) * padded_w + out_w) / math.prod(spec.out_size)


@njit(nogil=True, cache=True)
def _pad_or_crop(image, first_sample, padded, pad_lo, crop):
    """Copy samples ``first_sample, ...`` of ``image`` into the middles of ``padded``
    (C, S, Dp, Hp, Wp) with zero borders, or with ``crop`` the middles back into ``image``."""
    depth, height, width = image.shape[2], image.shape[3], image.shape[4]
    if not crop:
        padded[:] = 0
    for s in range(padded.shape[1]):
        middle = padded[:, s, pad_lo[0]:pad_lo[0] + depth, pad_lo[1]:pad_lo[1] + height,
                        pad_lo[2]:pad_lo[2] + width]
        if crop:
            image[first_sample + s] = middle
        else:
            middle[:] = image[first_sample + s]


@njit(nogil=True, cache=True)
def _shift_copy(padded, cols, first_q, shifts, fold):
    """``cols[g, (c, t), j] = padded[g*Cg + c].flat[first_q + j + shifts[t]]`` (im2col), or with
    ``fold`` add the block back onto those elements (col2im)."""
    in_channels = padded.shape[0]
    group_in = in_channels // cols.shape[0]
    count = cols.shape[2]
    taps = shifts.shape[0]
    for channel in range(in_channels):
        source = padded[channel]
        for tap in range(taps):
            row = cols[channel // group_in, (channel % group_in) * taps + tap]
            start = first_q + shifts[tap]
            if fold:
                for j in range(count):
                    source[start + j] += row[j]
            else:
                for j in range(count):
                    row[j] = source[start + j]


@njit(nogil=True, cache=True)
def _wide_copy(wide, dense, first_sample, first_q, padded_size, to_dense):
    """Move a block of ``q`` between ``wide (K, count)`` and ``dense (N, K, OD, OH, OW)``.

    ``q`` runs over the padded grids of samples ``first_sample, ...`` laid end
    to end. With ``to_dense`` keep the outputs and drop the rest, else fill
    the block from ``dense`` with zeros at the ``q`` that are not outputs.
    """
    out_d, out_h, out_w = dense.shape[2], dense.shape[3], dense.shape[4]
    padded_d, padded_h, padded_w = padded_size
    grid = padded_d * padded_h * padded_w
    channels, count = wide.shape
    wide_flat, dense_flat = wide.reshape(-1), dense.reshape(-1)
    j = 0
    while j < count:   # one row of a padded grid at a time
        q = first_q + j
        sample, local = first_sample + q // grid, q % grid
        od, oh, ow = local // (padded_h * padded_w), local // padded_w % padded_h, local % padded_w
        run = min(padded_w - ow, count - j)
        kept = max(0, min(run, out_w - ow)) if od < out_d and oh < out_h else 0
        # flat offsets: 1-d slices are much cheaper to make than 5-d ones
        dense_at = (((sample * channels) * out_d + od) * out_h + oh) * out_w + ow
        for k in range(channels):
            wide_at = k * count + j
            if to_dense:
                for i in range(kept):
                    dense_flat[dense_at + i] = wide_flat[wide_at + i]
            else:
                for i in range(kept):
                    wide_flat[wide_at + i] = dense_flat[dense_at + i]
                for i in range(kept, run):
                    wide_flat[wide_at + i] = 0
            dense_at += out_d * out_h * out_w
        j += run


class _Plan:
    """The padded grid of one problem and how its ``q`` range is cut into blocks.

    A sample's outputs span ``span`` entries of its padded grid (``grid``
    entries long). Where one block holds several grids, the grids of
    ``group`` consecutive samples are laid end to end and multiplied
    together (small images: wider, faster matrix products); otherwise each
    sample's span is cut into several blocks.
    """

    def __init__(self, spec, dtype, threads):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.padded_size = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
        padded_d, padded_h, padded_w = self.padded_size
        (k_d, k_h, k_w), (dil_d, dil_h, dil_w) = spec.kernel_size, spec.dilation
        self.grid = padded_d * padded_h * padded_w
        self.span = round(span_ratio(spec) * math.prod(spec.out_size))
        self.shifts = np.array([(td * dil_d * padded_h + th * dil_h) * padded_w + tw * dil_w
                                for td in range(k_d) for th in range(k_h) for tw in range(k_w)],
                               np.int64)
        self.rows = spec.group_in_channels * len(self.shifts)
        self.block = workspace.block_columns(spec.groups * self.rows * self.dtype.itemsize, threads,
                                             spec.batch * self.grid)
        # samples per group: as many grids as a block holds, then evened out so that the
        # groups come in a multiple of the thread count
        widest = max(1, min(self.block // self.grid, spec.batch))
        units = threads * -(-spec.batch // (widest * threads))
        self.group = -(-spec.batch // units)

    def work(self):
        """(first_sample, samples, first_q, count) of every block, in order."""
        items = []
        for first in range(0, self.spec.batch, self.group):
            samples = min(self.group, self.spec.batch - first)
            end = (samples - 1) * self.grid + self.span
            items += [(first, samples, q, min(self.block, end - q)) for q in range(0, end, self.block)]
        return items

    def scratch(self, name, rows, count):
        return workspace.borrow(name, rows * count, self.dtype).reshape(self.spec.groups, -1, count)

    def padded_buffer(self, samples):
        """This thread's scratch for ``samples`` padded samples, (C, S, Dp, Hp, Wp)."""
        return workspace.borrow("padded", samples * self.spec.in_channels * self.grid,
                                self.dtype).reshape(self.spec.in_channels, samples, *self.padded_size)

    def padded(self, image, first_sample, samples):
        """This thread's padded copy of ``samples`` samples of ``image`` from ``first_sample``."""
        padded = self.padded_buffer(samples)
        _pad_or_crop(image, first_sample, padded, self.spec.pad_lo, False)
        return padded

    @staticmethod
    def channel_rows(padded):
        """(C, S, Dp, Hp, Wp) -> per channel, the samples' grids end to end: a (C, S * grid) view."""
        return padded.reshape(padded.shape[0], -1)

    def unfold(self, padded, first_q, count):
        cols = self.scratch("columns", self.spec.groups * self.rows, count)
        _shift_copy(self.channel_rows(padded), cols, first_q, self.shifts, False)
        return cols

    def wide(self, count):
        return self.scratch("wide", self.spec.out_channels, count)

    def to_wide(self, dense, first_sample, first_q, count):
        wide = self.wide(count)
        _wide_copy(wide.reshape(-1, count), dense, first_sample, first_q, self.padded_size, False)
        return wide

    def to_dense(self, wide, dense, first_sample, first_q):
        _wide_copy(wide.reshape(-1, wide.shape[2]), dense, first_sample, first_q, self.padded_size, True)


def forward(spec, x, w, out):
    threads = thread_count()
    plan = _Plan(spec, x.dtype, threads)
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, plan.rows)

    def work(share):
        padded_samples = None
        for first_sample, samples, first_q, count in share:
            if (first_sample, samples) != padded_samples:
                padded, padded_samples = plan.padded(x, first_sample, samples), (first_sample, samples)
            wide = grouped_matmul(w_matrix, plan.unfold(padded, first_q, count), plan.wide(count))
            plan.to_dense(wide, out, first_sample, first_q)

    # consecutive work items per thread, so that a thread pads few samples
    run_in_threads(work, split(plan.work(), threads))


def backward_weight(spec, x, grad_y, grad_w):
    plan = _Plan(spec, x.dtype, thread_count())

    def work(share):
        partial = np.zeros((spec.groups, spec.group_out_channels, plan.rows), x.dtype)
        product = np.empty_like(partial)
        padded_samples = None
        for first_sample, samples, first_q, count in share:
            if (first_sample, samples) != padded_samples:
                padded, padded_samples = plan.padded(x, first_sample, samples), (first_sample, samples)
            cols = plan.unfold(padded, first_q, count)
            grouped_matmul(plan.to_wide(grad_y, first_sample, first_q, count), cols.transpose(0, 2, 1),
                           product)
            partial += product
        return partial

    sum_over_threads(work, plan.work(), grad_w.reshape(spec.groups, spec.group_out_channels, plan.rows))


def backward_input(spec, grad_y, w, grad_x):
    plan = _Plan(spec, w.dtype, thread_count())
    w_transposed = w.reshape(spec.groups, spec.group_out_channels, plan.rows).transpose(0, 2, 1)
    items = plan.work()

    def work(first_sample):
        samples = min(plan.group, spec.batch - first_sample)
        padded = plan.padded_buffer(samples)
        padded[...] = 0
        for _, _, first_q, count in (item for item in items if item[0] == first_sample):
            cols = plan.scratch("columns", spec.groups * plan.rows, count)
            grouped_matmul(w_transposed, plan.to_wide(grad_y, first_sample, first_q, count), cols)
            _shift_copy(plan.channel_rows(padded), cols, first_q, plan.shifts, True)
        _pad_or_crop(grad_x, first_sample, padded, spec.pad_lo, True)

    run_in_threads(work, range(0, spec.batch, plan.group))
