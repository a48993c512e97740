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
from .pool import grouped_matmul, run_in_threads, thread_count


def supports(spec):
    if any(s != 1 for s in spec.stride):
        return f"needs stride 1 in every dim, got {spec.stride}"
    return None


@njit(nogil=True, cache=True)
def _pad_or_crop(image, sample, padded, pad_lo, crop):
    """Copy ``image[sample]`` into the middle of ``padded`` (zero border), or with ``crop``
    the middle of ``padded`` back into ``image[sample]``."""
    depth, height, width = image.shape[2], image.shape[3], image.shape[4]
    middle = padded[:, pad_lo[0]:pad_lo[0] + depth, pad_lo[1]:pad_lo[1] + height,
                    pad_lo[2]:pad_lo[2] + width]
    if crop:
        image[sample] = middle
    else:
        padded[:] = 0
        middle[:] = image[sample]


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
                source[start:start + count] += row
            else:
                row[:] = source[start:start + count]


@njit(nogil=True, cache=True)
def _wide_copy(wide, dense, sample, first_q, padded_hw, to_dense):
    """Move a block of ``q`` between ``wide (K, count)`` and ``dense[sample] (K, OD, OH, OW)``:
    with ``to_dense`` keep the outputs and drop the rest, else fill the block from ``dense``
    with zeros at the ``q`` that are not outputs."""
    out_h, out_w = dense.shape[3], dense.shape[4]
    padded_h, padded_w = padded_hw
    count = wide.shape[1]
    j = 0
    while j < count:   # one row of the padded grid at a time
        q = first_q + j
        od, oh, ow = q // (padded_h * padded_w), q // padded_w % padded_h, q % padded_w
        run = min(padded_w - ow, count - j)
        kept = max(0, min(run, out_w - ow)) if oh < out_h else 0
        for k in range(wide.shape[0]):
            if to_dense:
                if kept > 0:
                    dense[sample, k, od, oh, ow:ow + kept] = wide[k, j:j + kept]
            else:
                if kept > 0:
                    wide[k, j:j + kept] = dense[sample, k, od, oh, ow:ow + kept]
                wide[k, j + kept:j + run] = 0
        j += run


class _Plan:
    """The padded grid of one problem and how its ``q`` range is cut into blocks."""

    def __init__(self, spec, dtype, threads):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.padded_size = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
        padded_d, padded_h, padded_w = self.padded_size
        (k_d, k_h, k_w), (dil_d, dil_h, dil_w) = spec.kernel_size, spec.dilation
        out_d, out_h, out_w = spec.out_size
        self.span = ((out_d - 1) * padded_h + out_h - 1) * padded_w + out_w
        self.shifts = np.array([(td * dil_d * padded_h + th * dil_h) * padded_w + tw * dil_w
                                for td in range(k_d) for th in range(k_h) for tw in range(k_w)],
                               np.int64)
        self.rows = spec.group_in_channels * len(self.shifts)
        self.block = workspace.block_columns(spec.groups * self.rows * self.dtype.itemsize, threads,
                                             self.span)

    def blocks(self):
        """(first_q, count) of the blocks covering one sample's span."""
        return [(q, min(self.block, self.span - q)) for q in range(0, self.span, self.block)]

    def scratch(self, name, rows, count):
        return workspace.borrow(name, rows * count, self.dtype).reshape(self.spec.groups, -1, count)

    def padded_buffer(self):
        """This thread's scratch for one padded sample, (C, Dp, Hp, Wp)."""
        return workspace.borrow("padded", self.spec.in_channels * math.prod(self.padded_size),
                                self.dtype).reshape(self.spec.in_channels, *self.padded_size)

    def padded(self, image, sample):
        """This thread's padded copy of ``image[sample]``."""
        padded = self.padded_buffer()
        _pad_or_crop(image, sample, padded, self.spec.pad_lo, False)
        return padded

    def unfold(self, padded, first_q, count):
        cols = self.scratch("columns", self.spec.groups * self.rows, count)
        _shift_copy(padded.reshape(padded.shape[0], -1), cols, first_q, self.shifts, False)
        return cols

    def wide(self, count):
        return self.scratch("wide", self.spec.out_channels, count)

    def to_wide(self, dense, sample, first_q, count):
        wide = self.wide(count)
        _wide_copy(wide.reshape(-1, count), dense, sample, first_q, self.padded_size[1:], False)
        return wide

    def to_dense(self, wide, dense, sample, first_q):
        _wide_copy(wide.reshape(-1, wide.shape[2]), dense, sample, first_q, self.padded_size[1:], True)


def _shares(threads, batch, blocks):
    """Each thread's (sample, first_q, count) work: consecutive, so a thread pads few samples."""
    work = [(sample, q, count) for sample in range(batch) for q, count in blocks]
    return [work[len(work) * t // threads:len(work) * (t + 1) // threads] for t in range(threads)]


def forward(spec, x, w, out):
    threads = thread_count()
    plan = _Plan(spec, x.dtype, threads)
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, plan.rows)

    def work(share):
        padded_sample = None
        for sample, first_q, count in share:
            if sample != padded_sample:
                padded, padded_sample = plan.padded(x, sample), sample
            wide = grouped_matmul(w_matrix, plan.unfold(padded, first_q, count), plan.wide(count))
            plan.to_dense(wide, out, sample, first_q)

    run_in_threads(work, _shares(threads, spec.batch, plan.blocks()))


def backward_weight(spec, x, grad_y, grad_w):
    threads = thread_count()
    plan = _Plan(spec, x.dtype, threads)

    def work(share):
        partial = np.zeros((spec.groups, spec.group_out_channels, plan.rows), x.dtype)
        product = np.empty_like(partial)
        padded_sample = None
        for sample, first_q, count in share:
            if sample != padded_sample:
                padded, padded_sample = plan.padded(x, sample), sample
            cols = plan.unfold(padded, first_q, count)
            grouped_matmul(plan.to_wide(grad_y, sample, first_q, count), cols.transpose(0, 2, 1), product)
            partial += product
        return partial

    grad_w.reshape(spec.groups, spec.group_out_channels, plan.rows)[...] = sum(
        run_in_threads(work, _shares(threads, spec.batch, plan.blocks())))


def backward_input(spec, grad_y, w, grad_x):
    plan = _Plan(spec, w.dtype, thread_count())
    w_transposed = w.reshape(spec.groups, spec.group_out_channels, plan.rows).transpose(0, 2, 1)

    def work(sample):
        padded = plan.padded_buffer()
        padded[...] = 0
        for first_q, count in plan.blocks():
            cols = plan.scratch("columns", spec.groups * plan.rows, count)
            grouped_matmul(w_transposed, plan.to_wide(grad_y, sample, first_q, count), cols)
            _shift_copy(padded.reshape(spec.in_channels, -1), cols, first_q, plan.shifts, True)
        _pad_or_crop(grad_x, sample, padded, spec.pad_lo, True)

    run_in_threads(work, range(spec.batch))
