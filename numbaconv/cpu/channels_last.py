"""Channels-last direct convolution: output channels in SIMD lanes, a tile of outputs in registers.

The register-blocked direct convolution of oneDNN's CPU kernels (Zhang,
Franchetti and Low, ICML 2018; Georganas et al., SC18), for dense and
grouped layers at any stride, dilation, padding and rank, with no column
matrix. A slab of samples at a time (``SLAB_BYTES`` of copies, at least one
sample), in stages:

1. the samples' input planes go, transposed, into zero-bordered channels-last
   grids ``(Dp, Hp, Wp, C)`` (16 x 16 vector transposes);
2. each work item, a block of ``W`` output channels of one group (``W`` =
   16 lanes, or 8 where a group has at most 8 outputs) and a tile of ``R``
   consecutive outputs (6 for float32 at 16 lanes: twelve AVX2 registers of
   sums; 8 at 8 lanes), sums over its taps and its group's input channels:
   each input element is broadcast to the lanes and multiplied by the vector
   of the block's weights for that tap and channel (``simd.broadcast_sums``,
   whose innermost loop runs through a table of the (row of taps, tap,
   channel) offsets: one loop for a group's 72 terms in a 3x3 kernel). The
   tile's outputs are found through a table of their windows' corners in the
   grid, so tiles run across output rows at any stride: no output row is
   padded to a multiple of ``R``;
3. each item's tiles make a panel of ``PANEL_OUTPUTS`` outputs, channels-last in
   the thread's scratch, which goes, transposed, into the item's output
   planes while it is in cache (so only two parallel regions a slab).

- forward: as above;
- input gradient: at stride 1 the forward's correlation of ``grad_y`` with
  the kernel turned 180 degrees (lanes across input channels,
  ``common.input_correlation``); at other strides each tile of output
  gradients, channels-last, adds its products tap by tap into a
  channels-last bordered grid of input channels (the blocks of ``W`` input
  channels are the work items, so no two threads add into one element),
  whose interior is then the gradient;
- weight gradient: a work item is a block of ``W`` output channels, a row
  of taps and a tile of ``R`` sources (a tap of the row and an input
  channel, through a table of their offsets in the grid, so a tile fills up
  however few channels a group has); it sums input elements times
  output-gradient vectors over the outputs in chunks of at most
  ``WEIGHT_CHUNK`` outputs in the array dtype, the chunks' sums in float64.
  With AVX-512 in float32 its tiles are wider (:func:`_weight_geometry`).

NaN and Inf land as in numbaconv.reference, except in the stride-1 input
gradient, where the weights also meet the zeros bordering ``grad_y``
(``INEXACT_NONFINITE``).

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, plus the empty lanes
of a group's last block of ``W`` channels and the empty outputs of a
sample's last tile. Memory traffic: each operand read once and the result
written once, the channels-last copies of a slab written and read once
more (from the last-level cache where a slab fits), the block's weights
``taps x C/g x W`` from L1/L2 for every tile. Workspace: a slab's bordered
grids (and the gradients' channels-last output gradients), a panel per
thread (forward), the packed weights; the weight gradient's float64 sums.

Speed: ``numbaconv bench --suite networks --algo channels_last,auto``
(docs/decisions.md, CL1-CL4): the forward at 150-170 GFLOP/s on 3x3 layers of
32-512 channels, the weight gradient at 30-100.
"""
import functools
import math

import numpy as np
from numba import njit

from . import workspace
from .common import ONE, ZERO, forward_on_correlation, input_correlation, transposed_rows
from .simd import (LANES, VECTOR_BYTES, WIDE_TILE_OUTPUTS, add_broadcast_sums_8, add_broadcast_sums_16,
                   broadcast_sums_8, broadcast_sums_16, broadcast_sums_16x12, broadcast_sums_32x6, tile_outputs,
                   transpose_lanes)
from .threads import most_threads, on_threads, share, thread_count

# Entries of the table of (row of taps, tap, channel) offsets one innermost loop runs over.
TAP_TABLE_ENTRIES = 1024
# FLOPs of one uncut kernel call: a quarter second at 20 GFLOP/s (numbaconv.slices).
SLICE_FLOPS = int(5e9)
# Bytes of one call's channels-last copies of a slab of samples, staged together: a call runs two or
# three parallel regions per slab, not per sample, while a slab's copies stay in the last-level cache.
SLAB_BYTES = 8 * 2**20
# Outputs of one forward work item: its tiles' sums, channels-last in a thread's panel, go to the
# output planes transposed while in cache (16 x 16 vector transposes: a multiple of 16 outputs, and
# of every tile size: 6 and 8 outputs for float32, 3 and 6 for float64).
PANEL_OUTPUTS = 96
# Outputs the weight gradient sums in the array dtype before adding into float64 (float32 sums of
# 128 products keep a relative error under 1e-6), and the chunk of outputs whose input and output
# gradient rows stay in the L1 cache while a thread runs its items on them.
WEIGHT_CHUNK = 128
# The stride-1 input gradient multiplies the weights with the zeros bordering grad_y, where the
# reference adds only the products of real outputs (Inf * 0 = NaN).
INEXACT_NONFINITE = {"input": "weight"}


WIDE_TILE_16 = WIDE_TILE_OUTPUTS[16]   # a global Numba reads as a constant


def lane_width(channels):
    """Lanes of a block of output channels: 8 for groups of at most 8 channels, else 16."""
    return 8 if channels <= 8 else 16


def _padded(spec):
    return tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))


@functools.lru_cache(maxsize=32)   # a large 3-d problem's tables take megabytes
def _tables(spec, channels, tile):
    """``(in_table, corners, stop)``: where each input position (row-major) sits in the bordered
    grid of ``channels`` channels, in elements; the grid index of each output's window corner in
    elements, then ``tile`` more for a last, partial tile, pointing past the grid (``stop``, the
    grid's size with that margin, at which the scatter of a partial tile lands harmlessly).
    Remembered: a training loop asks every step."""
    grid = _padded(spec)
    positions = np.indices(spec.in_size).reshape(3, -1) + np.array(spec.pad_lo)[:, None]
    in_table = np.ravel_multi_index(tuple(positions), grid).astype(np.int64) * channels
    corners = np.indices(spec.out_size).reshape(3, -1) * np.array(spec.stride)[:, None]
    grid_positions = math.prod(grid)
    reach = np.ravel_multi_index(tuple(d * (k - 1) for d, k in zip(spec.dilation, spec.kernel_size)), grid)
    tail = grid_positions + np.arange(tile)
    corners = np.concatenate([np.ravel_multi_index(tuple(corners), grid), tail]).astype(np.int64) * channels
    return in_table, corners, (grid_positions + tile + reach + 1) * channels


@functools.lru_cache(maxsize=64)
def _steps(count, step):
    return np.arange(count, dtype=np.int64) * step


@functools.lru_cache(maxsize=256)
def _tap_loops(spec, a_channels, b_row):
    """``(loops, table)``: the loops of a tap sum over the grid, as ``broadcast_sums`` takes them,
    for a grid of ``a_channels`` channels and packed weights whose channel rows are ``b_row``
    elements apart: depth taps, then one loop over the (row of taps, tap along the row, input
    channel) triples of a depth tap through a table of their offsets in the grid where there
    are at most ``TAP_TABLE_ENTRIES``, else a loop over the rows of taps and one over the (tap,
    channel) pairs of a row. One long innermost loop: a group of 8 channels has 72 terms to
    sum in a 3x3 kernel, which as three nested loops would spend most of its time starting
    them."""
    (kd, kh, kw), (dd, dh, dw), (_, hp, wp) = spec.kernel_size, spec.dilation, _padded(spec)
    sources = a_channels // spec.groups
    row = [tw * dw * a_channels + c for tw in range(kw) for c in range(sources)]
    depth = (kd, dd * hp * wp * a_channels, kh * kw * sources * b_row)
    if kh * len(row) <= TAP_TABLE_ENTRIES:
        table = [th * dh * wp * a_channels + offset for th in range(kh) for offset in row]
        return depth + (1, 0, 0, 1, 0, 0, len(table), b_row), np.array(table, np.int64)
    rows = (kh, dh * wp * a_channels, kw * sources * b_row)
    return depth + rows + (1, 0, 0, len(row), b_row), np.array(row, np.int64)


@njit(inline="always", cache=True)
def _transpose_item(item, positions, channels, planes):
    """``(n, p0, c0, whole)`` of transpose item ``item`` (sample, 16 channels, 16 positions; the
    positions fastest, so a thread's items stream through 16 planes at a time, which the
    hardware prefetcher follows where one stream per channel defeats it): its first position and
    channel, and whether it is a whole 16 x 16 block, whose channels' plane offsets it then
    writes into ``planes``."""
    position_blocks, channel_blocks = (positions + LANES - 1) // LANES, (channels + LANES - 1) // LANES
    n, block = item // (position_blocks * channel_blocks), item % (position_blocks * channel_blocks)
    p0, c0 = block % position_blocks * LANES, block // position_blocks * LANES
    whole = c0 + LANES <= channels and p0 + LANES <= positions
    if whole:
        for lane in range(LANES):
            planes[lane] = (c0 + lane) * positions
    return n, p0, c0, whole


@njit(cache=True)
def _to_channels_last(thread, threads, src, positions, channels, table, dst, dst_stride, gaps):
    """``dst[n dst_stride + table[p] + c] = src[n, c positions + p]``: each sample's planes to
    channels-last rows, by 16 x 16 vector transposes and a scalar remainder; items (sample, 16
    channels, 16 positions), so a thread writes whole rows. And ``dst[n dst_stride + start:stop]
    = 0`` for each ``(start, stop)`` of ``gaps``: the elements no position writes (a grid's
    border and margin). Memory: ``src`` read once, ``dst`` written once."""
    position_blocks, channel_blocks = (positions + LANES - 1) // LANES, (channels + LANES - 1) // LANES
    planes = np.empty(LANES, np.int64)
    first, stop = share(src.shape[0] * gaps.shape[0], thread, threads)
    for item in range(first, stop):
        at, gap = item // gaps.shape[0] * dst_stride, gaps[item % gaps.shape[0]]
        dst[at + gap[0]:at + gap[1]] = 0
    first, stop = share(src.shape[0] * position_blocks * channel_blocks, thread, threads)
    for item in range(first, stop):
        n, p0, c0, whole = _transpose_item(item, positions, channels, planes)
        sample, at = src[n], n * dst_stride
        if whole:
            transpose_lanes(dst, table[p0:p0 + LANES], at + c0, sample, planes, p0)
        else:
            for c in range(c0, min(c0 + LANES, channels)):
                for p in range(p0, min(p0 + LANES, positions)):
                    dst[at + table[p] + c] = sample[c * positions + p]


@njit(cache=True)
def _to_planes(thread, threads, src, src_stride, table, per_group, padded_group, dst, positions, channels):
    """``dst[n, c positions + p] = src[n src_stride + table[p] + (c // per_group) padded_group + c %
    per_group]``: channels-last rows (each group's channels padded to ``padded_group``) back to
    each sample's planes; items as in :func:`_to_channels_last`. Memory: the rows' real channels
    read once, ``dst`` written once."""
    position_blocks, channel_blocks = (positions + LANES - 1) // LANES, (channels + LANES - 1) // LANES
    contiguous = per_group == padded_group
    planes = np.empty(LANES, np.int64)
    first, stop = share(dst.shape[0] * position_blocks * channel_blocks, thread, threads)
    for item in range(first, stop):
        n, p0, c0, whole = _transpose_item(item, positions, channels, planes)
        sample, at = dst[n], n * src_stride
        if contiguous and whole:
            transpose_lanes(sample, planes, p0, src, table[p0:p0 + LANES], at + c0)
        else:
            for c in range(c0, min(c0 + LANES, channels)):
                channel_at = at + c // per_group * padded_group + c % per_group
                for p in range(p0, min(p0 + LANES, positions)):
                    sample[c * positions + p] = src[table[p] + channel_at]


@njit(cache=True)
def _pack_weights(thread, threads, w, groups, width, across_inputs, columns, packed):
    """``packed[(((g B + b) taps + tap) S + s) W + l]``: lane ``l`` of block ``b`` of group ``g``,
    the weight of its ``s``-th source channel, zero past the group's channels. ``w`` (K, C/g,
    taps). Lanes across output channels (``S = C/g``): ``w[g Kg + b W + l, s, tap]``, each block's
    ``W`` rows of ``w`` transposed by 16 x 16 vector transposes into the columns ``columns[s taps
    + tap] = (tap S + s) W``; ``across_inputs`` (``S = K/g``): ``w[g Kg + s, b W + l, tap]``.
    Items: blocks. Memory: ``w`` read once, ``packed`` written once."""
    group_out, group_in, taps = w.shape[0] // groups, w.shape[1], w.shape[2]
    lanes, sources = (group_in, group_out) if across_inputs else (group_out, group_in)
    blocks = (lanes + width - 1) // width
    block_size, row = taps * sources * width, group_in * taps
    flat = w.reshape(-1)
    planes = np.arange(LANES) * row
    first, stop = share(groups * blocks, thread, threads)
    for item in range(first, stop):
        g, b = item // blocks, item % blocks
        filled = min(width, lanes - b * width)
        if filled < width:
            packed[item * block_size:(item + 1) * block_size] = 0
        if across_inputs:
            for s in range(sources):
                for tap in range(taps):
                    at = item * block_size + (tap * sources + s) * width
                    for lane in range(filled):
                        packed[at + lane] = w[g * group_out + s, b * width + lane, tap]
        else:
            transposed_rows(packed, columns, item * block_size, 1, flat, planes, (g * group_out + b * width) * row,
                            row, 0, row, filled)


@functools.lru_cache(maxsize=64)
def _weight_columns(sources, taps, width):
    """The offset in a packed block (:func:`_pack_weights`) of the lanes of source ``s`` and tap
    ``tap``, ``(tap S + s) W``, at ``s taps + tap``: the order of a row of ``w``."""
    s, tap = np.divmod(np.arange(sources * taps, dtype=np.int64), taps)
    return (tap * sources + s) * width


def _packed_weights(w, spec, groups, width, across_inputs, dtype):
    """The weights, packed by :func:`_pack_weights` into the workspace."""
    group_out, group_in = spec.group_out_channels, spec.group_in_channels
    lanes, sources = (group_in, group_out) if across_inputs else (group_out, group_in)
    taps = math.prod(spec.kernel_size)
    padded = groups * -(-lanes // width) * width
    packed = workspace.borrow("channels_last_weights", padded * taps * sources, dtype)
    on_threads(_pack_weights, thread_count(), w.reshape(spec.out_channels, group_in, taps), groups, width,
               across_inputs, _weight_columns(sources, taps, width), packed)
    return packed


@njit(inline="always", cache=True)
def _tile_sums(width, out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table):
    if width == 16:
        broadcast_sums_16(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)
    else:
        broadcast_sums_8(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)


@njit(inline="always", cache=True)
def _weight_tile_sums(width, tile, out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table):
    """:func:`_tile_sums` for the weight gradient's geometry (:func:`_weight_geometry`)."""
    if width == 32:
        broadcast_sums_32x6(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)
    elif width == 16 and tile == WIDE_TILE_16:
        broadcast_sums_16x12(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)
    else:
        _tile_sums(width, out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)


@njit(inline="always", cache=True)
def _add_tile_sums(width, out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table):
    if width == 16:
        add_broadcast_sums_16(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)
    else:
        add_broadcast_sums_8(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table)


@njit(cache=True, fastmath={"contract"})
def _forward_tiles(thread, threads, grid, grid_stride, group_in, packed, block_weights, groups, blocks, width, tile,
                   corners, outputs, loops, tap_table, panels, panel_steps, y, group_out, samples):
    """``y[n, g K/g + b W + l, q] = sum over taps and j < C/g of grid[n grid_stride + corner_q +
    tap + g C/g + j] * packed[...]`` (``y`` flat, ``(samples, K, outputs)``) for every block
    ``b`` of ``W`` output channels of every group ``g``: items (sample, block, panel of
    ``PANEL_OUTPUTS`` outputs), whose tiles of ``tile`` outputs sum into the thread's row of
    ``panels`` (channels-last, ``W`` lanes an output; ``panel_steps[q] = q W`` for every output
    ``q`` and a tile past the last), which then
    goes, transposed, into the block's planes of ``y`` (``common.transposed_rows``) while it is
    in cache. FLOPs ``2 PANEL_OUTPUTS W taps C/g`` an item."""
    tiles_a_panel = PANEL_OUTPUTS // tile
    panel_count = (outputs + PANEL_OUTPUTS - 1) // PANEL_OUTPUTS
    items = groups * blocks * panel_count
    panel = panels[thread]
    planes = np.arange(LANES) * outputs
    first, stop = share(samples * items, thread, threads)
    for item in range(first, stop):
        n, block, p = item // items, item % items // panel_count, item % panel_count
        g, b = block // blocks, block % blocks
        first_output = p * PANEL_OUTPUTS
        for t in range(tiles_a_panel):
            if first_output + t * tile < outputs:
                _tile_sums(width, panel, -first_output * width, panel_steps, grid,
                           n * grid_stride + g * group_in, corners, first_output + t * tile, packed,
                           block * block_weights, loops, tap_table)
        y_at = (n * groups * group_out + g * group_out + b * width) * outputs + first_output
        transposed_rows(y, panel_steps, y_at, outputs, panel, planes, ZERO, ONE, ZERO,
                        min(PANEL_OUTPUTS, outputs - first_output), min(width, group_out - b * width))


@njit(cache=True, fastmath={"contract"})
def _scatter_tiles(thread, threads, lanes_in, lanes_stride, group_out, packed, groups, blocks, width, tile,
                   positions, lane_steps, taps, tap_shifts, corners, grid, grid_stride, grid_positions, samples):
    """``grid[n grid_stride + corner_q + shift_tap + (g B + b) W:+W] += sum over j < K/g of
    lanes_in[n lanes_stride + q K + g K/g + j] * packed[...]``: the input gradient's products of
    every output gradient ``q`` and tap, added into the channels-last grid of input channels
    (zeroed first); items: (sample, group, block of ``W`` input channels), each over all tiles
    and taps, so no two threads add into one element. FLOPs ``2 positions taps K/g W`` an
    item."""
    tiles = (positions + tile - 1) // tile
    loops, channels = (1, 0, 0, 1, 0, 0, 1, 0, 0, group_out, width), np.arange(group_out)   # channels in a row
    padded = groups * blocks * width
    first, stop = share(samples * groups * blocks, thread, threads)
    for item in range(first, stop):
        n, block = item // (groups * blocks), item % (groups * blocks)
        lanes_at, grid_at = n * lanes_stride + block // blocks * group_out, n * grid_stride + block * width
        for p in range(grid_positions):
            grid[grid_at + p * padded:grid_at + p * padded + width] = 0
        for t in range(tiles):
            for tap in range(taps):
                _add_tile_sums(width, grid, grid_at + tap_shifts[tap], corners, lanes_in, lanes_at, lane_steps,
                               t * tile, packed, (block * taps + tap) * group_out * width, loops, channels)


@njit(cache=True, fastmath={"contract"})
def _weight_tiles(thread, threads, grid, grid_stride, lanes_in, lanes_stride, groups, blocks, width, tile,
                  source_tiles, tap_items, tap_shifts, group_in, group_out, out_channels, out_size, strides,
                  chunk_rows, source_table, source_rows, samples, sums):
    """``sums[item]`` (float64) ``+= sum over samples n and outputs q of grid[n grid_stride +
    corner_q + shift + g C/g + source_table[j]] * lanes_in[n lanes_stride + q K + g K/g + b
    W:+W]`` for the ``tile`` sources ``j`` (a tap along the row and an input channel) of a tile:
    the samples' share of the weight gradient. Items (group, block, row of taps, tile of
    sources), each summing ``chunk_rows`` output rows at a time in the
    array dtype; a chunk's rows stay in cache while the thread runs all its items on them. FLOPs
    ``2 tile W prod(out)`` an item and sample."""
    out_d, out_h, out_w = out_size
    plane_step, row_step, column_step = strides
    items = groups * blocks * tap_items * source_tiles
    columns = np.arange(out_w) * column_step   # the innermost loop runs along an output row
    partial = np.empty(tile * width, lanes_in.dtype)
    first, stop = share(items, thread, threads)
    for n in range(samples):
        for od in range(out_d):
            for oh in range(0, out_h, chunk_rows):
                rows = min(chunk_rows, out_h - oh)
                loops = (1, 0, 0, 1, 0, 0, rows, row_step, out_w * out_channels, out_w, out_channels)
                chunk_a = n * grid_stride + od * plane_step + oh * row_step
                chunk_b = n * lanes_stride + (od * out_h + oh) * out_w * out_channels
                for item in range(first, stop):
                    block = item // (tap_items * source_tiles)
                    tap, source_tile = item // source_tiles % tap_items, item % source_tiles
                    g = block // blocks
                    a_at = chunk_a + tap_shifts[tap] + g * group_in
                    b_at = chunk_b + g * group_out + block % blocks * width
                    first_source = source_tile * tile   # picks both tables' rows: partial's from 0
                    _weight_tile_sums(width, tile, partial, -first_source * width, source_rows, grid, a_at,
                                      source_table, first_source, lanes_in, b_at, loops, columns)
                    total = sums[item]
                    for i in range(partial.size):
                        total[i] += partial[i]


def _geometry(spec, lanes, itemsize):
    """``(width, blocks, tile)``: lanes a block, blocks a group, outputs a tile, for ``lanes``
    channels a group in lanes."""
    width = lane_width(lanes)
    return width, -(-lanes // width), tile_outputs(width, itemsize)


def _weight_geometry(spec, itemsize):
    """The weight gradient's ``(width, blocks, tile)``, a tile's outputs being its sources: on hosts
    with 32 vector registers (AVX-512) in float32, 32 lanes where a group's output channels are a
    multiple of 32, else 16 where a multiple of 16, with ``simd.WIDE_TILE_OUTPUTS`` sources a tile
    (each broadcast input element feeds more vector FMAs, or each vector of output gradients
    does: the sums' loads, not their FMAs, bound this pass; docs/decisions.md, CL8); else
    :func:`_geometry`'s."""
    group_out = spec.group_out_channels
    if VECTOR_BYTES == 64 and itemsize == 4:
        for width, tile in WIDE_TILE_OUTPUTS.items():
            if group_out % width == 0:
                return width, group_out // width, tile
    return _geometry(spec, group_out, itemsize)


def _tap_shifts(spec, channels, taps_along_rows=True):
    """Each tap's offset (row-major) in the bordered grid of ``channels`` channels, in elements;
    without ``taps_along_rows``, one per row of taps (its first tap)."""
    (kd, kh, kw), (dd, dh, dw), (_, hp, wp) = spec.kernel_size, spec.dilation, _padded(spec)
    columns = range(kw) if taps_along_rows else range(1)
    return np.array([((td * dd * hp + th * dh) * wp + tw * dw) * channels
                     for td in range(kd) for th in range(kh) for tw in columns], dtype=np.int64)


@functools.lru_cache(maxsize=256)
def _source_table(spec, count):
    """The weight gradient's sources along a row of taps, ``j = tw C/g + c`` for ``j < KW C/g``:
    the offset ``tw dw C + c`` of tap ``tw``'s input channel ``c`` in the channels-last grid, so a
    tile of sources spans the taps of a row whatever the group size (zero past the last)."""
    table = np.zeros(count, np.int64)
    kw, group_in = spec.kernel_size[2], spec.group_in_channels
    j = np.arange(kw * group_in)
    table[:j.size] = j // group_in * spec.dilation[2] * spec.in_channels + j % group_in
    return table


def _grid_size(spec, channels, tile):
    """Elements of one sample's bordered channels-last grid of ``channels`` channels: the margin
    of :func:`_tables` and a tile's worth past it (the weight gradient's last tile of channels
    reads past a position)."""
    return _tables(spec, channels, tile)[2] + tile + LANES


@functools.lru_cache(maxsize=32)
def _grid_gaps(spec, channels, tile):
    """The ``(start, stop)`` element ranges of a sample's bordered grid (:func:`_grid_size`) that
    no input position fills: the border and the margin past the last position, which
    :func:`_to_channels_last` zeroes."""
    in_table = _tables(spec, channels, tile)[0]
    starts, stops = in_table, in_table + channels
    joined = starts[1:] == stops[:-1]
    gaps = np.stack([np.concatenate([[0], stops[:-1][~joined], stops[-1:]]),
                     np.concatenate([starts[:1], starts[1:][~joined], [_grid_size(spec, channels, tile)]])], axis=1)
    return np.ascontiguousarray(gaps[gaps[:, 0] < gaps[:, 1]], dtype=np.int64)


def _tail(start, stop):
    """The one gap ``(start, stop)`` of channels-last rows that fill a sample's scratch up to ``start``."""
    return np.array([[start, stop]], np.int64)


def _slab(batch, sample_bytes, reserved, items=None):
    """Samples a kernel call stages at once: as many as fit ``SLAB_BYTES`` and the workspace limit
    less the ``reserved`` bytes of other scratch, at least one (``supports`` checked that one
    fits); where a sample's ``items`` work items are fewer than the threads, enough samples to
    give each thread one, within the limit."""
    room = max(workspace.workspace_limit() - reserved, 0) // max(sample_bytes, 1)
    fitting = min(SLAB_BYTES // max(sample_bytes, 1), room)
    if items is not None:
        fitting = min(max(fitting, -(-thread_count() // items)), room)
    return max(1, min(batch, fitting))


def _scratch_bytes(spec, itemsize):
    """The most scratch any pass borrows for one sample, in bytes (each call stages at least
    one sample; :func:`_slab`)."""
    outputs, taps = math.prod(spec.out_size), math.prod(spec.kernel_size)
    out_width, out_blocks, out_tile = _geometry(spec, spec.group_out_channels, itemsize)
    in_width, in_blocks, in_tile = _geometry(spec, spec.group_in_channels, itemsize)
    out_padded, in_padded = spec.groups * out_blocks * out_width, spec.groups * in_blocks * in_width
    weights = max(out_padded * spec.group_in_channels, in_padded * spec.group_out_channels) * taps
    weights += spec.out_channels * spec.group_in_channels * taps   # the input gradient's rotated copy
    grid_tile = max(out_tile, _weight_geometry(spec, itemsize)[2])   # the weight gradient's sources a tile
    forward = _grid_size(spec, spec.in_channels, grid_tile) + most_threads() * PANEL_OUTPUTS * out_width
    scatter = _grid_size(spec, in_padded, in_tile) + (outputs + in_tile) * spec.out_channels
    sums = out_padded * taps * (spec.group_in_channels + grid_tile) * 8
    return (weights + max(forward, scatter)) * itemsize + sums


def supports(spec):
    return workspace.over_limit(_scratch_bytes(spec, 8))


def forward(spec, x, w, out):
    batch, in_channels, groups = x.shape[0], spec.in_channels, spec.groups
    group_in, group_out = spec.group_in_channels, spec.group_out_channels
    width, blocks, tile = _geometry(spec, group_out, x.itemsize)
    taps, outputs, positions = math.prod(spec.kernel_size), math.prod(spec.out_size), math.prod(spec.in_size)
    threads = thread_count()
    in_table, corners, _ = _tables(spec, in_channels, tile)
    packed = _packed_weights(w, spec, groups, width, False, x.dtype)
    grid_size = _grid_size(spec, in_channels, tile)
    panels = workspace.per_thread("channels_last_panels", threads, PANEL_OUTPUTS * width, x.dtype)
    slab = _slab(batch, grid_size * x.itemsize, packed.nbytes + panels.nbytes)
    grid = workspace.borrow("channels_last_grid", slab * grid_size, x.dtype)
    loops, tap_table = _tap_loops(spec, in_channels, width)
    gaps = _grid_gaps(spec, in_channels, tile)
    for n in range(0, batch, slab):
        samples = min(slab, batch - n)
        on_threads(_to_channels_last, threads, x[n:n + samples].reshape(samples, -1), positions, in_channels,
                   in_table, grid, grid_size, gaps)
        on_threads(_forward_tiles, threads, grid, grid_size, group_in, packed, taps * group_in * width, groups,
                   blocks, width, tile, corners, outputs, loops, tap_table, panels, _steps(outputs + tile, width),
                   out[n:n + samples].reshape(-1), group_out, samples)


def backward_input(spec, grad_y, w, grad_x):
    correlation = input_correlation(spec)
    if correlation is not None:
        forward_on_correlation(forward, correlation, grad_y, w, spec.groups, grad_x)
        return
    batch, in_channels, out_channels, groups = grad_x.shape[0], spec.in_channels, spec.out_channels, spec.groups
    group_in, group_out = spec.group_in_channels, spec.group_out_channels
    width, blocks, tile = _geometry(spec, group_in, grad_y.dtype.itemsize)
    taps, outputs, positions = math.prod(spec.kernel_size), math.prod(spec.out_size), math.prod(spec.in_size)
    threads, padded = thread_count(), groups * blocks * width
    in_table, corners, stop = _tables(spec, padded, tile)
    packed = _packed_weights(w, spec, groups, width, True, grad_y.dtype)
    grid_size, lanes_size = _grid_size(spec, padded, tile), (outputs + tile) * out_channels
    slab = _slab(batch, (grid_size + lanes_size) * grad_y.itemsize, packed.nbytes, groups * blocks)
    grid = workspace.borrow("channels_last_grid", slab * grid_size, grad_y.dtype)
    lanes_in = workspace.borrow("channels_last_lanes", slab * lanes_size, grad_y.dtype)
    lane_gaps = _tail(outputs * out_channels, lanes_size)   # a last, partial tile adds zeros
    lane_steps, shifts = _steps(outputs + tile, out_channels), _tap_shifts(spec, padded)
    grid_positions = stop // padded   # the grid with its margin, which _scatter_tiles zeroes
    for n in range(0, batch, slab):
        samples = min(slab, batch - n)
        on_threads(_to_channels_last, threads, grad_y[n:n + samples].reshape(samples, -1), outputs, out_channels,
                   lane_steps, lanes_in, lanes_size, lane_gaps)
        on_threads(_scatter_tiles, threads, lanes_in, lanes_size, group_out, packed, groups, blocks, width, tile,
                   outputs, lane_steps, taps, shifts, corners, grid, grid_size, grid_positions, samples)
        on_threads(_to_planes, threads, grid, grid_size, in_table, group_in, blocks * width,
                   grad_x[n:n + samples].reshape(samples, -1), positions, in_channels)


def backward_weight(spec, x, grad_y, grad_w):
    batch, in_channels, out_channels, groups = x.shape[0], spec.in_channels, spec.out_channels, spec.groups
    group_in, group_out = spec.group_in_channels, spec.group_out_channels
    width, blocks, tile = _weight_geometry(spec, x.itemsize)
    (kd, kh, kw), (sd, sh, sw), (_, hp, wp) = spec.kernel_size, spec.stride, _padded(spec)
    outputs, positions = math.prod(spec.out_size), math.prod(spec.in_size)
    threads = thread_count()
    sources, shifts = kw * group_in, _tap_shifts(spec, in_channels, taps_along_rows=False)
    source_tiles = -(-sources // tile)
    in_table, _, _ = _tables(spec, in_channels, tile)
    items = groups * blocks * shifts.size * source_tiles
    sums = workspace.borrow("channels_last_sums", items * tile * width, np.float64).reshape(items, tile * width)
    sums[...] = 0
    grid_size, lanes_size = _grid_size(spec, in_channels, tile), outputs * out_channels + LANES
    slab = _slab(batch, (grid_size + lanes_size) * x.itemsize, sums.nbytes)
    grid = workspace.borrow("channels_last_grid", slab * grid_size, x.dtype)
    lanes_in = workspace.borrow("channels_last_lanes", slab * lanes_size, x.dtype)
    lane_gaps = _tail(outputs * out_channels, lanes_size)   # read past by the last block's lanes
    strides = (sd * hp * wp * in_channels, sh * wp * in_channels, sw * in_channels)
    chunk_rows = max(1, WEIGHT_CHUNK // spec.out_size[2])
    gaps = _grid_gaps(spec, in_channels, tile)
    for n in range(0, batch, slab):
        samples = min(slab, batch - n)
        on_threads(_to_channels_last, threads, x[n:n + samples].reshape(samples, -1), positions, in_channels,
                   in_table, grid, grid_size, gaps)
        on_threads(_to_channels_last, threads, grad_y[n:n + samples].reshape(samples, -1), outputs, out_channels,
                   _steps(outputs, out_channels), lanes_in, lanes_size, lane_gaps)
        on_threads(_weight_tiles, threads, grid, grid_size, lanes_in, lanes_size, groups, blocks, width, tile,
                   source_tiles, shifts.size, shifts, group_in, group_out, out_channels, spec.out_size, strides,
                   chunk_rows, _source_table(spec, source_tiles * tile), _steps(source_tiles * tile, width), samples,
                   sums)
    sums = sums.reshape(groups, blocks, kd, kh, -1, width)[:, :, :, :, :sources]
    sums = sums.reshape(groups, blocks, kd, kh, kw, group_in, width)
    per_lane = sums.transpose(0, 1, 6, 5, 2, 3, 4).reshape(groups, blocks * width, group_in, kd, kh, kw)
    grad_w[...] = per_lane[:, :group_out].reshape(grad_w.shape)
