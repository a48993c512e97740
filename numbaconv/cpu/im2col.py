"""im2col + GEMM: unfold input windows into a column matrix, then BLAS products.

The column matrix of a problem is ``cols[g, r, b * P + p]``: ``r = (c, td, th, tw)``
runs over the ``R = (C/g) * prod(kernel)`` channel-taps of group ``g``, and the
column ``b * P + p`` over samples and their ``P = prod(out)`` outputs. Per
group,

    forward:       y      = w (K/g, R) @ cols (R, N*P)
    weight grad:   grad_w = grad_y (K/g, N*P) @ cols.T
    input grad:    dcols  = w.T (R, K/g) @ grad_y (K/g, N*P), then col2im adds
                   every column entry back onto the input element it came from.

The matrix is never built whole: it is made and consumed in blocks of
consecutive columns small enough to stay in a core's cache (``workspace.BLOCK_BYTES``),
so unfolding costs cache writes rather than memory traffic, but never
fewer than ``BLOCK_MIN_COLUMNS`` columns: every single-threaded BLAS call
packs the whole weight matrix again, which narrower blocks of a wide layer
pay for more often than cache misses (docs/decisions.md, I8); the blocks are
made equal and as many as a multiple of the threads. The threads take consecutive blocks in one
parallel region (``threads.on_threads``); each unfolds its block and multiplies it with
single-threaded BLAS calls from inside (``blas.gemm``, straight into the
output's views, sample by sample); ``threads`` says why BLAS runs inside the
threads' shares, on one thread each. The weight gradient sums into
a partial per thread, added in thread order. The input gradient folds back into whole samples, so its
blocks are shared out by runs of whole samples (several where a sample has
fewer outputs than a block has columns); where those runs are fewer than the
threads (a batch of one), by chunks of each sample's input channels instead,
whose rows of the column matrix fold onto those channels alone.

Where a weight gradient (or a forward with a reduction of
``CHANNEL_SPLIT_FORWARD_MIN_REDUCTION`` or more) has at least
``CHANNEL_SPLIT_MIN_RATIO`` times as many output channels a group as columns
(``N * P``: the deep stages of a network at a small batch, 3-d layers at a
batch of one), its weight matrix outweighs the column matrix, and blocks of
columns would stream the weights from memory once per block. The threads
take chunks of the column matrix's rows instead (:func:`_channel_chunks`,
channel-taps, a chunk cutting channels anywhere, so three colours share
out as evenly as 512 channels): an item unfolds its rows of all the columns
into cache and multiplies them at once, so the weights stream once in all;
the forward sums into a partial per thread, added in thread order, and the
weight gradient writes the item's own columns of ``grad_w`` (``python
bench/channel_chunks.py``; docs/decisions.md, I7, PE1).

The forward of a stride-1 problem with narrow output rows (``_wide_blocking``)
runs over *wide* columns instead: one per position of the padded input plane
from a sample's first output to its last, the windows that run off a row's end
included. Each row of such a block is one contiguous copy per sample (no short
runs, no gathers); the product is ``span / prod(out)`` times larger (at most
``WIDE_MOST_WASTE``) and the outputs are picked out of it. That is faster
than gathering the true columns (``numbaconv bench --layer
lenet_conv2,conv3x3_512,conv3x3_256 --algo im2col --pass forward`` with
``WIDE_MOST_WASTE = 0`` against 1.5; docs/decisions.md, I2). The gradients keep
the true columns: a weight gradient over wide columns would multiply the
dropped windows' inputs by zeros (``0 * inf`` is NaN where the reference has
inf), and the input gradient would fold them back row run by row run.

A pointwise problem (1x1 kernel, stride 1, no padding) needs no columns: a
sample's input is its column matrix, on planes of any size. The threads take
items of one sample and a block of the product's rows (as many blocks a
sample as there are threads per sample), each a product of views straight
into the result; the weight gradient's items are a sample and a block of its
columns, summed into a partial per thread (blocks of grad_w's rows instead
made narrow products, 0.5-0.8 of PyTorch on 56x56 planes). Where the weight
matrix outweighs a sample's columns (more result rows than outputs a
sample: 7x7 planes of wide layers), each thread takes a block of rows for
every sample instead, streaming only its share of the weights. Blocks
of columns spanning samples would copy the input first: on 14x14 and 7x7
planes (fewer outputs than a block) that ran 1x1 layers at 0.4-0.8 of
the same products by BLAS (docs/decisions.md, I3).

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, all in BLAS (times
``span / prod(out)`` over wide columns). Memory traffic: x, w and y once each,
plus the weight matrix once per block (over chunks of rows: once, plus grad_y
or the partial outputs once per chunk). Workspace: per thread, one column block
with its offset tables (over wide columns, the block's product, plus one
zero-padded copy of the input where the problem pads) and, for the weight
gradient, a partial ``grad_w`` (over chunks of rows: a chunk's rows of
all the columns, and the forward's partial outputs); all of it together at most
``workspace.WORKSPACE_LIMIT_BYTES`` (256 MiB): the blocks get what the
partials leave, and ``supports`` declines a problem whose one-column blocks
would not fit.
"""
import math

import numpy as np
from numba import njit

from . import workspace
from ..algorithm import read_only
from .blas import gemm
from .common import ONE, ZERO, grid_walk, valid_outputs
from .threads import (add_partials, block_of, most_threads, on_threads, scratch, share, single_threaded_blas,
                      thread_count)

# FLOPs of one uncut kernel call: a quarter second at 40 GFLOP/s, this algorithm's slowest rate on
# dense layers; longer passes run in slices (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(1e10)

RUN_MIN_WIDTH = 16   # output rows at least this wide are copied run by run, narrower ones gathered
_RUN_BYTES = 5 * 8   # one entry of the table of row runs: five int64
WIDE_MOST_WASTE = 1.5   # the forward runs over wide columns where they are at most this many a output
BLOCK_MIN_COLUMNS = 1024   # columns a block of true columns holds at least (docs/decisions.md, I8)
CHANNEL_SPLIT_MIN_RATIO = 0.25   # output channels a group per column from which chunks of channels run
CHANNEL_SPLIT_FORWARD_MIN_REDUCTION = 2048   # and the forward's (C/g) * prod(kernel) from which they do


def supports(spec):
    """im2col runs every problem whose scratch fits the workspace limit with one-column blocks
    (counted in float64, with Numba's full thread count)."""
    threads = most_threads()
    return workspace.over_limit(_held_bytes(spec, "weight", 8, threads) + threads * _column_bytes(spec, 8))


def _column_bytes(spec, itemsize):
    """Scratch per column of a block: the column itself (``C * taps`` values), grad_y's columns
    gathered beside it where a gradient's block spans samples (``K``), the table of source
    offsets where rows are gathered (``taps`` int64) and the column's share of the table of row
    runs (:func:`_most_runs`; its fixed part is in :func:`_held_bytes`)."""
    taps = math.prod(spec.kernel_size)
    offsets = 8 * taps if _gathers(spec) else 0
    run_share = -(-_RUN_BYTES * taps // spec.out_size[2])
    return (spec.in_channels * taps + spec.out_channels) * itemsize + offsets + run_share


def _gathers(spec):
    """Whether the problem's output rows are narrow enough to unfold by gathers (``_walk``)."""
    return spec.out_size[2] < RUN_MIN_WIDTH


def _most_runs(spec, count):
    """Row runs a block of ``count`` columns can span: a part row at each end, whole rows between."""
    return count // spec.out_size[2] + 2


def _held_bytes(spec, pass_name, itemsize, threads):
    """Scratch besides the blocks, per thread: the run table's fixed part (two runs a tap) and, for
    the weight gradient, a partial sum."""
    taps = math.prod(spec.kernel_size)
    runs = 2 * _RUN_BYTES * taps
    if pass_name != "weight":
        return threads * runs
    return threads * (runs + spec.out_channels * spec.group_in_channels * taps * itemsize)


@njit(nogil=True, cache=True)
def _row_runs(runs, first_column, count, in_shape, kernel_size, out_size, stride, dilation, pad_lo):
    """Cut the columns ``[first_column, first_column + count)`` into runs along output rows and
    return how many there are. ``runs[tap, r]`` holds, for run ``r`` and ``tap``: the run's first
    column in the block ``j``, its length, the part ``[lead, valid_stop)`` of the run whose
    input lies inside the image (zeros elsewhere), and the flat offset in the image of the
    channel-0 element the first valid column reads (its neighbours follow ``stride[2]`` apart)."""
    in_channels, in_d, in_h, in_w = in_shape
    k_d, k_h, k_w = kernel_size
    out_d, out_h, out_w = out_size
    taps = k_d * k_h * k_w
    positions = out_d * out_h * out_w
    run = j = 0
    while j < count:
        b, p = (first_column + j) // positions, (first_column + j) % positions
        ow, oh, od = p % out_w, p // out_w % out_h, p // (out_w * out_h)
        length = min(out_w - ow, count - j)
        for tap in range(taps):
            td, th, tw = tap // (k_h * k_w), tap // k_w % k_h, tap % k_w
            first = stop = ow
            d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
            h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
            if d0 <= od < d1 and h0 <= oh < h1:
                w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
                first = min(max(w0, ow), ow + length)
                stop = max(min(w1, ow + length), first)
            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
            i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
            row_start = ((b * in_channels * in_d + i_d) * in_h + i_h) * in_w - pad_lo[2] + tw * dilation[2]
            runs[tap, run, 0] = j
            runs[tap, run, 1] = length
            runs[tap, run, 2] = first - ow
            runs[tap, run, 3] = stop - ow
            runs[tap, run, 4] = row_start + first * stride[2] if stop > first else 0
        run += 1
        j += length
    return run


@njit(inline="always", cache=True)
def _run(runs, r):
    """Run ``r`` of one tap's rows of the table of :func:`_row_runs`: its first column ``j`` in
    the block, its length, its part ``[lead, valid_stop)`` whose windows lie inside the image,
    and the flat image offset of the channel-0 element its first such column reads."""
    return runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3], runs[r, 4]


@njit(inline="always", cache=True)
def _walk(image, cols, runs, source, first_column, gather, kernel_size, out_size, stride, dilation, pad_lo,
          first_row, stop_row, move_gathered, move_runs):
    """The index walk of :func:`_unfold` and :func:`_fold` between the channel-taps ``[first_row,
    stop_row)`` of ``image`` (N, C, D, H, W) (row ``c * taps + tap``) and the column block ``cols``
    (G, R, count) or, for part of the rows, (1, those rows, count), whose ``cols[g, r, j]`` belongs
    to global column ``first_column + j``. The data moves a row of the block (one channel and tap)
    at a time, in ``move_gathered`` or ``move_runs``: the only code that writes into either array.

    ``runs`` is scratch for the table of :func:`_row_runs`, shared by all
    channels. Without ``gather``, a row moves run by run
    (``move_runs(image_flat, row, runs[tap, :run_count], channel_start,
    step)``, where a stride known to be 1 or 2 lets the loops vectorise);
    with it (``_Blocking`` asks for it where output rows are narrower than
    ``RUN_MIN_WIDTH``), in one long loop rather than many short ones
    (``move_gathered(image_flat, row, source[tap], channel_start)``), with a
    table of source offsets per tap and column in ``source`` (``taps *
    count`` int64). Run by run is about 2x faster from 28 outputs a row up,
    gathers 5-15% faster at 14 and below; a view made per run is slower than
    either (``numbaconv bench --layer
    stem7x7s2,conv3x3_64,lenet_conv2,conv3x3_512 --algo im2col --pass
    weight`` with ``RUN_MIN_WIDTH`` at 1 and at 10**9; docs/decisions.md,
    I1). The moves take a row per call (a call per run unfolds up to 2x
    slower). The loops index with unsigned integers, which skips Numba's
    negative-index wraparound check (I5).
    """
    in_channels, depth, height, width = image.shape[1], image.shape[2], image.shape[3], image.shape[4]
    taps, count, step = runs.shape[0], cols.shape[2], stride[2]
    run_count = _row_runs(runs, first_column, count, (in_channels, depth, height, width), kernel_size, out_size,
                          stride, dilation, pad_lo)
    image_flat, cols_flat = image.reshape(-1), cols.reshape(-1)
    if gather:
        # source[tap, j]: the flat offset of the channel-0 element column j reads, -1 in the padding
        for tap in range(taps):
            for r in range(run_count):
                j, length, lead, valid_stop, start = _run(runs[tap], r)
                for o in range(length):
                    source[tap, j + o] = start + (o - lead) * step if lead <= o < valid_stop else -1
    for image_row in range(first_row, stop_row):
        channel, tap = image_row // taps, image_row % taps
        channel_start = channel * depth * height * width
        row_number = image_row - first_row
        row = cols_flat[row_number * count:(row_number + 1) * count]
        if gather:
            move_gathered(image_flat, row, source[tap], channel_start)
        else:
            move_runs(image_flat, row, runs[tap, :run_count], channel_start, step)


@njit(inline="always", cache=True)
def _gather_row(image_flat, row, offsets, channel_start):
    """``row[j] = image_flat[channel_start + offsets[j]]``, zero where ``offsets[j]`` is -1."""
    for j in range(row.size):
        row[j] = image_flat[np.uint64(channel_start + offsets[j])] if offsets[j] >= 0 else 0


@njit(inline="always", cache=True)
def _copy_runs(image_flat, row, runs, channel_start, step):
    """``row`` from the image run by run, zeros where the windows lie in the padding."""
    for r in range(runs.shape[0]):
        j, length, lead, valid_stop, start = _run(runs, r)
        into_row, into_image = np.uint64(j + lead), np.uint64(channel_start + start)
        for o in range(j, j + lead):
            row[o] = 0
        if step == 1:
            for o in range(valid_stop - lead):
                row[into_row + np.uint64(o)] = image_flat[into_image + np.uint64(o)]
        elif step == 2:
            for o in range(valid_stop - lead):
                row[into_row + np.uint64(o)] = image_flat[into_image + np.uint64(2 * o)]
        else:
            for o in range(valid_stop - lead):
                row[into_row + np.uint64(o)] = image_flat[into_image + np.uint64(o * step)]
        for o in range(j + valid_stop, j + length):
            row[o] = 0


@njit(inline="always", cache=True)
def _add_gathered(image_flat, row, offsets, channel_start):
    """``image_flat[channel_start + offsets[j]] += row[j]`` where ``offsets[j]`` is not -1."""
    for j in range(row.size):
        if offsets[j] >= 0:
            image_flat[np.uint64(channel_start + offsets[j])] += row[j]


@njit(inline="always", cache=True)
def _add_runs(image_flat, row, runs, channel_start, step):
    """``row`` added onto the image run by run, where the windows lie inside it."""
    for r in range(runs.shape[0]):
        j, _, lead, valid_stop, start = _run(runs, r)
        into_row, into_image = np.uint64(j + lead), np.uint64(channel_start + start)
        for o in range(valid_stop - lead):
            image_flat[into_image + np.uint64(o * step)] += row[into_row + np.uint64(o)]


@njit(nogil=True, cache=True)
def _unfold(image, cols, runs, source, first_column, gather, kernel_size, out_size, stride, dilation, pad_lo,
            first_row, stop_row):
    """Fill the column block ``cols`` from the channel-taps ``[first_row, stop_row)`` of
    ``image`` (im2col; zeros where the window lies in the padding), walking them with
    :func:`_walk`; ``image`` is only read."""
    _walk(image, cols, runs, source, first_column, gather, kernel_size, out_size, stride, dilation, pad_lo,
          first_row, stop_row, _gather_row, _copy_runs)


@njit(nogil=True, cache=True)
def _fold(image, cols, runs, source, first_column, gather, kernel_size, out_size, stride, dilation, pad_lo):
    """Add the column block ``cols`` onto the ``image`` elements its entries came from (col2im),
    walking them with :func:`_walk`; ``cols`` is only read. One thread owns the block, so folding
    needs no atomics."""
    _walk(image, cols, runs, source, first_column, gather, kernel_size, out_size, stride, dilation, pad_lo,
          0, image.shape[1] * runs.shape[0], _add_gathered, _add_runs)


@njit(nogil=True, cache=True)
def _unfold_wide(source, cols, first_column, span, shifts):
    """Fill ``cols`` (G, R, count) with wide columns ``[first_column, first_column + count)`` of a
    stride-1 problem: column ``b * span + q`` of channel-tap ``(c, t)`` is element
    ``q + shifts[t]`` of the flattened (padded) plane ``source[b, c]``, so every row of the
    block is a few contiguous copies."""
    batch_channels = source.shape[0] * source.shape[1]
    in_channels, plane = source.shape[1], source.size // batch_channels
    count, taps = cols.shape[2], shifts.size
    source_flat, cols_flat = source.reshape(-1), cols.reshape(-1)
    j = 0
    while j < count:
        b, q = (first_column + j) // span, (first_column + j) % span
        run = min(span - q, count - j)
        for channel in range(in_channels):
            for tap in range(taps):
                start = np.uint64((b * in_channels + channel) * plane + q + shifts[tap])
                into = np.uint64((channel * taps + tap) * count + j)
                for o in range(run):
                    cols_flat[into + np.uint64(o)] = source_flat[start + np.uint64(o)]
        j += run


@njit(nogil=True, cache=True)
def _compact_wide(wide, out, first_column, span, padded_size):
    """Copy the outputs among wide columns ``[first_column, first_column + count)`` of ``wide``
    (G, K/g, count) into ``out`` (N, K, D, H, W): wide column ``q`` of a sample is output
    ``(d, h, w)`` where ``q = (d * H_pad + h) * W_pad + w`` with ``h < H`` and ``w < W``; the
    other columns (the windows that run off a row's end) are dropped."""
    out_channels, out_h, out_w = out.shape[1], out.shape[3], out.shape[4]
    pad_h, pad_w = padded_size[1], padded_size[2]
    count = wide.shape[2]
    wide_flat = wide.reshape(out_channels, count)
    j = 0
    while j < count:
        b, q = (first_column + j) // span, (first_column + j) % span
        run = min(span - q, count - j)
        for row in range(q // pad_w, (q + run - 1) // pad_w + 1):
            d, h = row // pad_h, row % pad_h
            if h >= out_h:
                continue
            low, high = max(0, q - row * pad_w), min(out_w, q + run - row * pad_w)
            for k in range(out_channels):
                for w in range(low, high):
                    out[b, k, d, h, w] = wide_flat[k, j + row * pad_w + w - q]
        j += run


class _ColumnBlocks:
    """What every blocking of a column matrix shares: its ``groups`` of ``rows`` channel-taps each,
    cut into blocks of ``block`` columns."""

    def __init__(self, spec, dtype, threads):
        self.spec = spec
        self.dtype = np.dtype(dtype)
        self.threads = threads
        self.groups = spec.groups
        self.rows = spec.group_in_channels * math.prod(spec.kernel_size)

    def per_thread(self, name, size, dtype=None):
        """Scratch of ``size`` elements for each thread, as rows of one borrowed buffer."""
        return workspace.per_thread(name, self.threads, size, self.dtype if dtype is None else dtype)


class _Blocking(_ColumnBlocks):
    """How one problem's column matrix is cut into blocks of ``block`` columns, and the threads'
    scratch for unfolding them."""

    def __init__(self, spec, dtype, threads, pass_name="forward"):
        super().__init__(spec, dtype, threads)
        self.positions = math.prod(spec.out_size)
        self.columns = spec.batch * self.positions
        self.gathers_rows = _gathers(spec)
        widest = workspace.block_columns(_column_bytes(spec, self.dtype.itemsize), threads, self.columns,
                                         _held_bytes(spec, pass_name, self.dtype.itemsize, threads),
                                         BLOCK_MIN_COLUMNS)
        self.block = workspace.balanced_width(widest, self.columns, threads)

    def scratch(self):
        """(columns, runs, sources, geometry): the threads' column blocks,
        tables of row runs and of source offsets (where rows are gathered), and the problem's
        geometry for :func:`_unfold` and :func:`_fold`: (kernel_size, out_size, stride, dilation,
        pad_lo, whether rows are gathered)."""
        s = self.spec
        column_values, run_values, source_values = self.scratch_sizes()
        columns = self.per_thread("columns", column_values)
        runs = self.per_thread("runs", run_values, np.int64)
        sources = self.per_thread("offsets", source_values, np.int64)
        geometry = (s.kernel_size, s.out_size, s.stride, s.dilation, s.pad_lo, bool(self.gathers_rows))
        return columns, runs, sources, geometry

    def scratch_sizes(self):
        """Elements per thread of :meth:`scratch`'s column block (in the dtype), its table of row
        runs and its table of source offsets (int64)."""
        taps = math.prod(self.spec.kernel_size)
        return (self.column_rows() * self.block, taps * _most_runs(self.spec, self.block) * _RUN_BYTES // 8,
                taps * self.block if self.gathers_rows else 0)

    def column_rows(self):
        """Rows of a thread's column block: all the groups' channel-taps."""
        return self.groups * self.rows

    def gathered(self):
        """The threads' scratch for grad_y's columns of a block that spans samples."""
        return self.per_thread("gathered", self.spec.out_channels * self.block)


class _ChannelChunks(_Blocking):
    """The forward or weight gradient over chunks of the column matrix's rows (:func:`_channel_chunks`):
    a thread's block holds all ``N * P`` columns of ``chunk`` channel-taps. Chunks of rows rather
    than of whole channels keep the threads' shares equal where a group has fewer input channels
    than there are items (patch embeddings of 3 colours)."""

    def __init__(self, spec, dtype, threads, pass_name):
        super().__init__(spec, dtype, threads, pass_name)
        self.pass_name = pass_name
        self.block = self.columns
        rows = spec.group_in_channels * math.prod(spec.kernel_size)
        widest = max(1, workspace.BLOCK_BYTES // (self.columns * self.dtype.itemsize))
        items = threads * -(-(spec.groups * -(-rows // widest)) // threads)   # a multiple of the threads
        self.chunk = -(-rows // min(rows, -(-items // spec.groups)))

    def column_rows(self):
        """Rows of a thread's column block: one chunk's channel-taps."""
        return self.chunk

    def result_size(self):
        """Elements of the forward's partial sums (every thread's, and their total where the batch
        needs it reordered) or of the weight gradient's grad_y gathered into (G, K/g, N*P)."""
        sums = self.spec.out_channels * self.columns
        if self.pass_name == "forward":
            return (self.threads + (self.spec.batch > 1)) * sums
        return sums if self.spec.batch > 1 else 0

    def scratch_bytes(self):
        """All the scratch of the pass: the threads' column blocks and tables, and the partial sums
        or gathered grad_y (:meth:`result_size`)."""
        column_values, run_values, source_values = self.scratch_sizes()
        per_thread = column_values * self.dtype.itemsize + (run_values + source_values) * 8
        return self.threads * per_thread + self.result_size() * self.dtype.itemsize


def _channel_split(spec, pass_name, dtype, threads):
    """The plan of :func:`_channel_chunks` for a forward or weight gradient, or None where it does not
    apply: a problem that is not pointwise, with at least ``CHANNEL_SPLIT_MIN_RATIO`` times as many
    output channels a group as columns (``N * P``), whose scratch fits under the workspace limit.
    There the weights outweigh the columns: blocks of columns would stream them once per block,
    while chunks of rows stream them once in all. The forward also needs a reduction
    ``(C/g) * prod(kernel)`` of ``CHANNEL_SPLIT_FORWARD_MIN_REDUCTION`` or more: its partial sums
    cost a pass over the outputs per thread, which shorter reductions (1x1 and 1-d kernels) do
    not earn back."""
    if pass_name == "input" or pointwise(spec):
        return None
    if spec.group_out_channels < CHANNEL_SPLIT_MIN_RATIO * spec.batch * math.prod(spec.out_size):
        return None
    reduction = spec.group_in_channels * math.prod(spec.kernel_size)
    if pass_name == "forward" and reduction < CHANNEL_SPLIT_FORWARD_MIN_REDUCTION:
        return None
    plan = _ChannelChunks(spec, dtype, threads, pass_name)
    return None if workspace.over_limit(plan.scratch_bytes()) else plan


class _WideBlocking(_ColumnBlocks):
    """The forward of a stride-1 problem over wide columns (``_unfold_wide``): a sample's
    wide columns are the positions ``q = (d * H_pad + h) * W_pad + w`` of its padded input plane
    from the first output to the last, ``span`` of them, of which ``prod(out)`` are outputs."""

    def __init__(self, spec, dtype, threads):
        super().__init__(spec, dtype, threads)
        self.padded_size = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
        self.span, shifts = grid_walk(self.padded_size, spec.out_size, spec.kernel_size, spec.dilation)
        self.columns = spec.batch * self.span
        self.shifts = np.array(shifts, dtype=np.int64)
        self.padded = any(spec.pad_lo) or any(spec.pad_hi)
        self.padded_bytes = (spec.batch * spec.in_channels * math.prod(self.padded_size) * self.dtype.itemsize
                             if self.padded else 0)
        self.column_bytes = (spec.in_channels * math.prod(spec.kernel_size) + spec.out_channels) * self.dtype.itemsize
        widest = workspace.block_columns(self.column_bytes, threads, self.columns, self.padded_bytes)
        self.block = workspace.balanced_width(widest, self.columns, threads)

    def source(self, x):
        """``x`` with its zero padding, in scratch (``x`` itself without padding), read-only as
        every input a kernel takes."""
        if not self.padded:
            return x
        s = self.spec
        padded = workspace.borrow("padded_input", self.padded_bytes // self.dtype.itemsize, self.dtype).reshape(
            x.shape[:2] + self.padded_size)
        padded[...] = 0
        padded[(slice(None), slice(None)) + tuple(slice(lo, lo + n) for lo, n in zip(s.pad_lo, s.in_size))] = x
        return read_only(padded)


def _wide_blocking(spec, dtype, threads):
    """The forward's wide-column blocking, or None where it does not pay: it runs problems of stride 1
    whose output rows are narrower than ``RUN_MIN_WIDTH`` (unfolded by gathers otherwise) with at
    most ``WIDE_MOST_WASTE`` times as many wide columns as outputs, and whose padded copy and
    one-column blocks fit under the workspace limit."""
    if any(s != 1 for s in spec.stride) or not _gathers(spec):
        return None
    blocking = _WideBlocking(spec, dtype, threads)
    if (blocking.span > WIDE_MOST_WASTE * math.prod(spec.out_size)
            or workspace.over_limit(blocking.padded_bytes + threads * blocking.column_bytes)):
        return None
    return blocking


@njit(cache=True)
def _forward_wide_blocks(thread, threads, source, w_matrix, out, block, span, shifts, padded_size, columns, products):
    """The forward over wide columns (:func:`_unfold_wide`), the threads taking consecutive blocks
    of ``block`` columns: unfold, the groups' products, the outputs picked out
    (:func:`_compact_wide`). Scratch rows per thread: ``columns``, ``products``."""
    (groups, group_out, rows) = w_matrix.shape
    total = source.shape[0] * span
    first_block, stop_block = share(-(-total // block), thread, threads)
    for number in range(first_block, stop_block):
        first = number * block
        count = min(block, total - first)
        cols = scratch(columns, thread, (groups, rows, count))
        _unfold_wide(source, cols, first, span, shifts)
        product = scratch(products, thread, (groups, group_out, count))
        for g in range(groups):
            gemm(w_matrix[g], cols[g], product[g], 0.0)
        _compact_wide(product, out, first, span, (padded_size[0], padded_size[1], padded_size[2]))


@njit(nogil=True, cache=True)
def _columns_of(x, first, count, groups, rows, thread, columns, runs, sources, geometry, first_row, stop_row):
    """The block's column matrix (G, R, count) (or, for the channel-taps ``[first_row, stop_row)``
    of one group, those rows of it as (1, rows, count)), unfolded (:func:`_unfold`)
    into ``thread``'s rows of the scratch ``columns``, ``runs`` and ``sources``."""
    kernel_size, out_size, stride, dilation, pad_lo, gather = geometry
    taps = kernel_size[0] * kernel_size[1] * kernel_size[2]
    cols = scratch(columns, thread, (groups, rows, count))
    _unfold(x, cols, runs[thread].reshape(taps, -1, 5), scratch(sources, thread, (taps, count if gather else 0)),
            first, gather, kernel_size, out_size, stride, dilation, pad_lo, first_row, stop_row)
    return cols[:, :, :count]


@njit(cache=True)
def _forward_blocks(thread, threads, x, w_matrix, out, block, columns, runs, sources, geometry):
    """``out = w @ cols`` per group, the threads taking consecutive blocks of ``block`` columns,
    each product written straight into ``out`` sample by sample. Scratch rows per thread:
    ``columns``, ``runs`` and ``sources`` (:func:`_unfold`)."""
    (groups, group_out, rows) = w_matrix.shape
    batch, positions = x.shape[0], out[0, 0].size
    first_block, stop_block = share(-(-(batch * positions) // block), thread, threads)
    for number in range(first_block, stop_block):
        first, count = block_of(number, block, batch * positions)
        cols = _columns_of(x, first, count, groups, rows, thread, columns, runs, sources, geometry, ZERO,
                           groups * rows)
        j = 0
        while j < count:   # the block's columns sample by sample
            sample, position = (first + j) // positions, (first + j) % positions
            run = min(positions - position, count - j)
            y = out[sample].reshape(groups, group_out, positions)
            for g in range(groups):
                gemm(w_matrix[g], cols[g, :, j:j + run], y[g, :, position:position + run], 0.0)
            j += run


@njit(nogil=True, cache=True)
def _gathered(grad_y, first, count, groups, group_out, thread, gathered):
    """grad_y's columns ``[first, first + count)`` as (G, K/g, count): a view where they lie in one
    sample, else copied into ``thread``'s rows of ``gathered`` (one product over a block of
    several small samples: at 512 channels, 7x7, four products of 49 columns take 2x as long as
    one of 196; docs/decisions.md, I4)."""
    positions = grad_y[0, 0].size
    sample, position = first // positions, first % positions
    if position + count <= positions:
        return grad_y[sample].reshape(groups, group_out, positions)[:, :, position:position + count]
    block = scratch(gathered, thread, (groups, group_out, count))
    j = 0
    while j < count:
        sample, position = (first + j) // positions, (first + j) % positions
        run = min(positions - position, count - j)
        source = grad_y[sample].reshape(groups * group_out, positions)
        for row in range(groups * group_out):   # loops: a 3-d slice assignment compiles for seconds more
            target = block[row // group_out, row % group_out]
            for i in range(run):
                target[j + i] = source[row, position + i]
        j += run
    return block[:, :, :count]


@njit(cache=True)
def _weight_blocks(thread, threads, x, grad_y, block, partials, gathered, columns, runs, sources, geometry):
    """``partials[thread, g] += grad_y (K/g, cols) @ cols.T`` over the thread's consecutive blocks
    of ``block`` columns (``partials`` zeroed by the caller). Scratch rows per thread:
    ``gathered`` (:func:`_gathered`), ``columns``, ``runs``, ``sources``."""
    groups, group_out, rows = partials.shape[1:]
    batch, positions = x.shape[0], grad_y[0, 0].size
    first_block, stop_block = share(-(-(batch * positions) // block), thread, threads)
    for number in range(first_block, stop_block):
        first, count = block_of(number, block, batch * positions)
        cols = _columns_of(x, first, count, groups, rows, thread, columns, runs, sources, geometry, ZERO,
                           groups * rows)
        dy = _gathered(grad_y, first, count, groups, group_out, thread, gathered)
        for g in range(groups):
            gemm(dy[g], cols[g].T, partials[thread, g], 1.0)


@njit(cache=True)
def _channel_chunks(thread, threads, x, matrix, result, weight_pass, chunk, columns, runs, sources, geometry):
    """The forward or the weight gradient over chunks of the column matrix's rows (:func:`_channel_split`):
    items (group, ``chunk`` of its channel-taps), each unfolding those rows of the whole column
    matrix (every sample's ``P`` outputs) and multiplying them at once, so the weights stream
    from memory once in all. Forward, ``matrix`` w (G, K/g, R): ``result[thread, g] += w[g][:,
    rows] @ cols``, partial sums (threads, G, K/g, N*P) zeroed here and added by the caller in
    thread order. Weight gradient, ``matrix`` grad_y (G, K/g, N*P): ``result[0, g][:, rows] =
    grad_y[g] @ cols.T`` into grad_w (1, G, K/g, R), each item writing its own columns. FLOPs: the
    pass's; memory: x and the weights (or grad_w) once, grad_y (or the partials) once per item.
    Scratch rows per thread: ``columns``, ``runs`` and ``sources``."""
    groups, rows = matrix.shape[0], result.shape[3] if weight_pass else matrix.shape[2]
    out_size = geometry[1]
    total = x.shape[0] * out_size[0] * out_size[1] * out_size[2]
    chunks = -(-rows // chunk)
    if not weight_pass:
        result[thread] = 0
    first_item, stop_item = share(groups * chunks, thread, threads)
    for item in range(first_item, stop_item):
        g, r0 = item // chunks, item % chunks * chunk
        r1 = min(r0 + chunk, rows)
        cols = _columns_of(x, ZERO, total, ONE, r1 - r0, thread, columns, runs, sources, geometry,
                           g * rows + r0, g * rows + r1)[0]
        if weight_pass:
            gemm(matrix[g], cols.T, result[0, g, :, r0:r1], 0.0)
        else:
            gemm(matrix[g, :, r0:r1], cols, result[thread, g], 1.0)


@njit(cache=True)
def _input_blocks(thread, threads, grad_y, w_matrix, grad_x, block, samples_per_share, gathered, columns, runs,
                  sources, geometry):
    """The input gradient: ``dcols = w.T @ grad_y`` per block, folded back onto ``grad_x``
    (:func:`_fold`); the threads take consecutive shares of ``samples_per_share``
    whole samples (a sample's columns fold onto it alone, so no two threads add to one element).
    Scratch rows per thread: ``gathered`` (:func:`_gathered`), ``columns``, ``runs``, ``sources``."""
    (groups, group_out, rows) = w_matrix.shape
    batch, positions = grad_x.shape[0], grad_y[0, 0].size
    first_share, stop_share = share(-(-batch // samples_per_share), thread, threads)
    for number in range(first_share, stop_share):
        first_sample = number * samples_per_share
        stop_sample = min(first_sample + samples_per_share, batch)
        grad_x[first_sample:stop_sample] = 0
        for first in range(first_sample * positions, stop_sample * positions, block):
            count = min(block, stop_sample * positions - first)
            cols = scratch(columns, thread, (groups, rows, count))
            dy = _gathered(grad_y, first, count, groups, group_out, thread, gathered)
            for g in range(groups):
                gemm(w_matrix[g].T, dy[g], cols[g], 0.0)
            _fold_block(grad_x, cols, first, thread, runs, sources, geometry)


@njit(cache=True)
def _input_channel_blocks(thread, threads, grad_y, w_matrix, grad_x, block, chunk, gathered, columns, runs, sources,
                          geometry):
    """:func:`_input_blocks` for fewer samples than threads: items (sample, group, ``chunk`` of the
    group's input channels), each making the rows of ``dcols`` of its channels, ``w[:, its
    rows].T @ grad_y``, block by block of its sample's columns and folding them onto its
    channels of ``grad_x`` (no two items add to one element). FLOPs ``2 (K/g) chunk taps P`` an
    item, ``P`` its sample's outputs; the item's weight columns are read once per block. Scratch as
    there."""
    (groups, group_out, rows) = w_matrix.shape
    batch, in_channels, positions = grad_x.shape[0], grad_x.shape[1], grad_y[0, 0].size
    group_in = in_channels // groups
    taps, plane = rows // group_in, grad_x[0, 0].size
    chunks = -(-group_in // chunk)
    grad_x_flat = grad_x.reshape(-1)
    first_item, stop_item = share(batch * groups * chunks, thread, threads)
    for item in range(first_item, stop_item):
        n, g, c0 = item // (groups * chunks), item // chunks % groups, item % chunks * chunk
        c1 = min(c0 + chunk, group_in)
        start = (n * in_channels + g * group_in + c0) * plane
        part = grad_x_flat[start:start + (c1 - c0) * plane].reshape(
            1, c1 - c0, grad_x.shape[2], grad_x.shape[3], grad_x.shape[4])
        part[...] = 0
        for first in range(n * positions, (n + 1) * positions, block):
            count = min(block, (n + 1) * positions - first)
            cols = scratch(columns, thread, (1, (c1 - c0) * taps, count))
            dy = _gathered(grad_y, first, count, groups, group_out, thread, gathered)
            gemm(w_matrix[g][:, c0 * taps:c1 * taps].T, dy[g], cols[0], 0.0)
            _fold_block(part, cols, first - n * positions, thread, runs, sources, geometry)


@njit(nogil=True, cache=True)
def _fold_block(grad_x, cols, first, thread, runs, sources, geometry):
    """Add the column block ``cols`` (its first column ``first``) onto ``grad_x`` (col2im,
    :func:`_fold`) with ``thread``'s rows of the scratch ``runs`` and ``sources``."""
    kernel_size, out_size, stride, dilation, pad_lo, gather = geometry
    taps, count = kernel_size[0] * kernel_size[1] * kernel_size[2], cols.shape[2]
    _fold(grad_x, cols, runs[thread].reshape(taps, -1, 5), scratch(sources, thread, (taps, count if gather else 0)),
          first, gather, kernel_size, out_size, stride, dilation, pad_lo)


def pointwise(spec):
    """1x1 kernel, stride 1, no padding: a sample's input is its own column matrix. (Equal input
    and output sizes do not say so: a 1x1 kernel at stride 3 with one row of padding on each
    side of one input row has one output row too, which reads the padding.)"""
    return (all(k == 1 for k in spec.kernel_size) and all(s == 1 for s in spec.stride)
            and not any(spec.pad_lo) and not any(spec.pad_hi))


@njit(inline="always", cache=True)
def _pointwise_items(batch, by_rows, threads):
    """``(samples an item takes, blocks of rows a sample)``: ``by_rows`` (:func:`_weights_outweigh`)
    every item takes all the samples and a block of rows, so each thread streams only its share
    of the weights; else items of one sample, split into blocks of rows only where the samples
    are fewer than the threads."""
    if by_rows:
        return batch, threads
    return 1, max(1, threads // batch)


@njit(cache=True)
def _pointwise_kernel(thread, threads, a, w_matrix, out, transposed, by_rows):
    """A pointwise forward (``out[n, g] = w[g] @ a[n, g]``) or, ``transposed``, input gradient
    (``out[n, g] = w[g].T @ a[n, g]``) for ``a`` (N, G, S, P), ``w_matrix`` (G, K/g, C/g), ``out``
    (N, G, R, P): items of samples and a block of the R result rows (:func:`_pointwise_items`)."""
    batch, groups, rows = out.shape[0], out.shape[1], out.shape[2]
    together, parts = _pointwise_items(batch, by_rows, threads)
    first, stop = share(batch // together * parts, thread, threads)
    for item in range(first, stop):
        n0, part = item // parts * together, item % parts
        r0, r1 = share(rows, part, parts)
        for n in range(n0, n0 + together):
            for g in range(groups):
                if transposed:
                    gemm(w_matrix[g, :, r0:r1].T, a[n, g], out[n, g, r0:r1], 0.0)
                else:
                    gemm(w_matrix[g, r0:r1], a[n, g], out[n, g, r0:r1], 0.0)


@njit(cache=True)
def _pointwise_weight_kernel(thread, threads, x, grad_y, grad_w, partials, by_rows):
    """``grad_w[g] = sum over n of grad_y[n, g] @ x[n, g].T`` for ``x`` (N, G, C/g, P), ``grad_y``
    (N, G, K/g, P), ``grad_w`` (G, K/g, C/g). ``by_rows`` (:func:`_weights_outweigh`): the
    threads take blocks of grad_w's rows, adding the samples' products into them in sample
    order. Else items of a sample and a block of its columns, summed into ``partials[thread]``
    (the caller adds the partials in thread order)."""
    groups = partials.shape[1]
    batch, rows, positions = x.shape[0], grad_w.shape[1], x.shape[3]
    if by_rows:
        r0, r1 = share(rows, thread, threads)
        for g in range(groups):
            for n in range(batch):
                gemm(grad_y[n, g, r0:r1], x[n, g].T, grad_w[g, r0:r1], 1.0 if n else 0.0)
        return
    parts = max(1, threads // batch)
    partials[thread] = 0
    first, stop = share(batch * parts, thread, threads)
    for item in range(first, stop):
        n, part = item // parts, item % parts
        c0, c1 = share(positions, part, parts)
        for g in range(groups):
            gemm(grad_y[n, g, :, c0:c1], x[n, g, :, c0:c1].T, partials[thread, g], 1.0)


def _weights_outweigh(spec, pass_name):
    """Whether a pointwise pass's weight matrix outweighs a sample's columns: more result rows (the
    input gradient's C/g, else K/g) than outputs a plane (small planes of wide layers). Its
    threads then split the result's rows for all the samples (:func:`_pointwise_items`)."""
    rows = spec.group_in_channels if pass_name == "input" else spec.group_out_channels
    return rows > math.prod(spec.out_size)


def _pointwise_run(spec, pass_name, a, b, out):
    """A pointwise pass (FLOPs ``2 N K (C/g) P``; memory: the operands once; scratch: the weight
    gradient's partial sums per thread)."""
    groups, positions, threads = spec.groups, math.prod(spec.out_size), thread_count()
    by_group = lambda array: array.reshape(array.shape[0], groups, -1, positions)  # noqa: E731
    by_rows = _weights_outweigh(spec, pass_name)
    with single_threaded_blas():
        if pass_name == "weight":
            grad_w = out.reshape(groups, spec.group_out_channels, spec.group_in_channels)
            shape = (threads, groups, spec.group_out_channels, spec.group_in_channels)
            partials = workspace.borrow("im2col_partials", 0 if by_rows else math.prod(shape), a.dtype)
            partials = partials.reshape((threads, groups, 0, 0) if by_rows else shape)
            on_threads(_pointwise_weight_kernel, threads, by_group(a), by_group(b), grad_w, partials, by_rows)
            if not by_rows:
                add_partials(partials.reshape(threads, 1, -1), out.reshape(1, -1))
            return
        w_matrix = b.reshape(groups, spec.group_out_channels, spec.group_in_channels)
        on_threads(_pointwise_kernel, threads, by_group(a), w_matrix, by_group(out), pass_name == "input", by_rows)


def forward(spec, x, w, out):
    if pointwise(spec):
        _pointwise_run(spec, "forward", x, w, out)
        return
    threads = thread_count()
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, -1)
    chunks = _channel_split(spec, "forward", x.dtype, threads)
    if chunks is not None:
        _forward_by_channel_chunks(chunks, x, w_matrix, out)
        return
    wide = _wide_blocking(spec, x.dtype, threads)
    with single_threaded_blas():
        if wide is not None:
            on_threads(_forward_wide_blocks, threads, wide.source(x), w_matrix, out, wide.block, wide.span,
                       wide.shifts, np.array(wide.padded_size, np.int64),
                       wide.per_thread("columns", wide.groups * wide.rows * wide.block),
                       wide.per_thread("wide_products", spec.out_channels * wide.block))
            return
        blocking = _Blocking(spec, x.dtype, threads)
        on_threads(_forward_blocks, blocking.threads, x, w_matrix, out, blocking.block, *blocking.scratch())


def _forward_by_channel_chunks(chunks, x, w_matrix, out):
    """:func:`_channel_chunks`' forward: its partial sums (K, N*P) added in thread order, then
    reordered into ``out`` (N, K, P) where the batch holds several samples."""
    s, threads = chunks.spec, chunks.threads
    sums = chunks.per_thread("im2col_partials", s.out_channels * chunks.columns)
    partials = sums.reshape(threads, s.groups, s.group_out_channels, chunks.columns)
    with single_threaded_blas():
        on_threads(_channel_chunks, chunks.threads, x, w_matrix, partials, False, chunks.chunk, *chunks.scratch())
    if s.batch == 1:
        add_partials(partials.reshape(threads, 1, -1), out.reshape(1, -1))
        return
    total = workspace.borrow("im2col_partial_sum", s.out_channels * chunks.columns, x.dtype).reshape(1, -1)
    add_partials(partials.reshape(threads, 1, -1), total)
    out.reshape(s.batch, s.out_channels, chunks.positions)[...] = total.reshape(
        s.out_channels, s.batch, chunks.positions).transpose(1, 0, 2)


def _weight_by_channel_chunks(chunks, x, grad_y, grad_w):
    """:func:`_channel_chunks`' weight gradient, grad_y's samples side by side as (G, K/g, N*P)."""
    s = chunks.spec
    if s.batch == 1:
        dy = grad_y.reshape(s.groups, s.group_out_channels, chunks.columns)
    else:
        dy = workspace.borrow("im2col_gathered", s.out_channels * chunks.columns, x.dtype)
        dy.reshape(s.out_channels, s.batch, chunks.positions)[...] = grad_y.reshape(
            s.batch, s.out_channels, chunks.positions).transpose(1, 0, 2)
        dy = read_only(dy.reshape(s.groups, s.group_out_channels, chunks.columns))
    with single_threaded_blas():
        on_threads(_channel_chunks, chunks.threads, x, dy, grad_w.reshape(1, s.groups, s.group_out_channels, -1),
                   True, chunks.chunk, *chunks.scratch())


def backward_weight(spec, x, grad_y, grad_w):
    """A partial ``grad_w`` per thread over its blocks, the partials added in thread order (the
    same rounding every run); or, where the weights outweigh the columns, chunks of channels
    writing their own parts of ``grad_w`` (:func:`_channel_split`)."""
    if pointwise(spec):
        _pointwise_run(spec, "weight", x, grad_y, grad_w)
        return
    chunks = _channel_split(spec, "weight", x.dtype, thread_count())
    if chunks is not None:
        _weight_by_channel_chunks(chunks, x, grad_y, grad_w)
        return
    blocking = _Blocking(spec, x.dtype, thread_count(), "weight")
    shape = (blocking.threads, spec.groups, spec.group_out_channels, blocking.rows)
    partials = workspace.borrow("im2col_partials", math.prod(shape), x.dtype).reshape(shape)
    partials[...] = 0
    with single_threaded_blas():
        on_threads(_weight_blocks, blocking.threads, x, grad_y, blocking.block, partials, blocking.gathered(),
                   *blocking.scratch())
    add_partials(partials.reshape(blocking.threads, 1, -1), grad_w.reshape(1, -1))


def backward_input(spec, grad_y, w, grad_x):
    if pointwise(spec):
        _pointwise_run(spec, "input", grad_y, w, grad_x)
        return
    blocking = _Blocking(spec, w.dtype, thread_count(), "input")
    w_matrix = w.reshape(spec.groups, spec.group_out_channels, blocking.rows)
    # a thread folds whole samples: several per block where a sample has fewer outputs than a
    # block has columns (one product over several small samples: docs/decisions.md, I4)
    samples_per_share = max(1, min(blocking.block // blocking.positions, -(-spec.batch // blocking.threads)))
    with single_threaded_blas():
        if -(-spec.batch // samples_per_share) < blocking.threads:
            # fewer samples than threads: they share out each sample's input channels (docs/decisions.md, I6)
            chunks = -(-blocking.threads // (spec.batch * spec.groups))
            on_threads(_input_channel_blocks, blocking.threads, grad_y, w_matrix, grad_x, blocking.block,
                       -(-spec.group_in_channels // chunks), blocking.gathered(), *blocking.scratch())
        else:
            on_threads(_input_blocks, blocking.threads, grad_y, w_matrix, grad_x, blocking.block, samples_per_share,
                       blocking.gathered(), *blocking.scratch())
