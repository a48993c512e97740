"""Channel-blocked direct convolution: SIMD lanes across channels, for depthwise and narrow groups.

Each work item is one sample and one block of ``LANES`` channels (output
channels for the forward and the weight gradient, input channels for the
input gradient). The item's ``S`` source planes (``S = C/g`` for a block of
output channels, ``K/g`` for a block of input channels) are copied one at a
time, transposed, into per-thread scratch in a channels-last layout ``(D,
H, W, LANES)``: lane ``l`` of source ``s`` holds the ``s``-th channel that
lane's channel reads (with a channel multiplier neighbouring lanes may hold
the same channel). Every tap is then one vector multiply-add of ``LANES``
weights with ``LANES`` inputs, at any stride, dilation, kernel size and
padding, and small planes pay no per-plane loop overhead: the way oneDNN and
XNNPACK run depthwise layers.

- forward: the input is copied into a zero-bordered grid, and each group
  of four outputs sums a kernel row's taps in registers (at dilation 1,
  rows 3, 5 or 7 wide at stride 1 or 2 also hold their weights in
  registers and load each input once for the outputs it reaches), then
  the outputs go back to their ``LANES`` planes;
- input gradient: at stride 1 the forward's correlation of ``grad_y`` with
  the kernel turned 180 degrees (lanes across input channels; the kernel
  turns the weights as it packs a block's, no copy of them); at other
  strides each output gradient's products are scattered into a
  zero-bordered grid, whose interior is then the gradient (no split into
  phases; at stride 2 along rows 3, 5 or 7 wide, four outputs at a time
  from registers, each grid vector loaded and stored once for them);
- weight gradient: the bordered input against the output gradient, a row's
  sums in the array dtype, the rows' sums in float64 per thread, the
  threads' sums added in thread order.

NaN and Inf land as in numbaconv.reference (the padding is real zeros that
every tap multiplies, the scatter adds every product), except in the
stride-1 input gradient, where the weights also meet the zeros bordering
``grad_y`` (``INEXACT_NONFINITE``).

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass (a last, partial
block of lanes computes on zeros). Memory traffic: each pass reads its two
operands once and writes its result once; an item's transposed copies (a
bordered plane of ``LANES`` channels each) are written and read back from
L2. Workspace per thread: one bordered plane, the item's channels-last
output planes and the block's weights; the weight gradient's float64 sums
per thread.

Speed: ``numbaconv bench --suite networks --network mobilenet_v2`` and the
extra depthwise and grouped layers of the networks suite; ``python bench/depthwise_kernels.py``
(docs/decisions.md, D2, BL1, BL2).
"""
import functools
import math

import numpy as np
from numba import njit

from . import workspace
from .common import input_correlation
from .simd import (HALVING_TAPS, LANES, REGISTER_OUTPUTS, SLIDING_BYTES, add_product_sums, add_product_sums_4,
                   WIDE_SLIDING_OUTPUTS, halving_spreads_3, halving_spreads_5, halving_spreads_7, halving_sums_3,
                   halving_sums_5, halving_sums_7, sliding_sums_3,
                   sliding_sums_3x8, sliding_sums_5, sliding_sums_5x8, sliding_sums_7, transpose_lanes)
from .threads import most_threads, on_threads, share, thread_count

CACHE_LINE = 64   # bytes
# FLOPs of one uncut kernel call: a quarter second at 5 GFLOP/s (numbaconv.slices).
SLICE_FLOPS = int(1.25e9)
# Where NaN and Inf land differently from the reference (numbaconv.functional): the stride-1
# input gradient multiplies the weights with the zeros bordering grad_y, where the reference adds
# only the products of real outputs (Inf * 0 = NaN).
INEXACT_NONFINITE = {"input": "weight"}


def supports(spec):
    threads = most_threads()
    scratch = max(_scratch_elements(spec, name) for name in ("forward", "input", "weight"))
    return workspace.over_limit(threads * scratch * 8 + _weight_sum_elements(spec, threads) * 8)


def _grid(spec):
    """``(D, H, W)`` of the zero-bordered input grid."""
    return tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))


def _scratch_elements(spec, pass_name):
    """One thread's scratch for a pass, in elements (:func:`_carve`): the bordered grid (of one
    source plane), the channels-last output planes (the output gradient's, for the input
    gradient's scatter), the block's weights (or the weight gradient's row sums)."""
    taps, outputs, grid = math.prod(spec.kernel_size), math.prod(spec.out_size), math.prod(_grid(spec))
    correlation = input_correlation(spec) if pass_name == "input" else None
    if correlation is not None:
        return _scratch_elements(correlation, "forward")
    if pass_name == "input":
        sources = spec.group_out_channels
        return (grid + sources * outputs + sources * taps) * LANES
    sources = spec.group_in_channels
    if pass_name == "forward":   # rows of outputs padded to groups of four, the grid's margin
        outputs = math.prod(spec.out_size[:2]) * _row_pitch(spec.out_size[2])
        grid += REGISTER_OUTPUTS * spec.stride[2]
    return (grid + outputs + sources * taps) * LANES


def _row_pitch(out_w):
    """The forward's outputs a row in its channels-last scratch: ``out_w`` rounded up to a
    multiple of REGISTER_OUTPUTS, so every output row runs in whole groups of four."""
    return -(-out_w // REGISTER_OUTPUTS) * REGISTER_OUTPUTS


def _weight_sum_elements(spec, threads):
    return threads * _blocks(spec.out_channels) * spec.group_in_channels * math.prod(spec.kernel_size) * LANES


def _blocks(channels):
    return -(-channels // LANES)


def lane_fill(channels):
    """The share of the lanes that hold channels when ``channels`` are split into blocks of LANES."""
    return channels / (_blocks(channels) * LANES)


@njit(inline="always", cache=True)
def _carve(own, first, second, third):
    """``own`` (one thread's scratch) cut into three consecutive flat pieces of these sizes."""
    return own[:first], own[first:first + second], own[first + second:first + second + third]


@njit(inline="always", cache=True)
def _lane_planes(offsets, n, lane0, lane_channels, per_group, sources, s, channels, plane):
    """``offsets[l]``: where, in the flat array of ``channels`` channels of ``plane`` elements, the
    plane of sample ``n`` that lane ``l`` reads as its ``s``-th source starts: channel ``(t //
    per_group) * sources + s`` of lane channel ``t = lane0 + l``. Lanes past ``lane_channels``
    repeat the last real lane (their results are dropped)."""
    for l in range(LANES):
        t = min(lane0 + l, lane_channels - 1)
        offsets[l] = (n * channels + (t // per_group) * sources + s) * plane


@njit(inline="always", cache=True)
def _planes_to_lanes(src, lane_offsets, size, dst, table, dst_at):
    """``dst[table[p] + dst_at + l] = src[lane_offsets[l] + p]`` for ``p < size``, ``l < LANES``:
    LANES planes to channels-last positions, by LANES x LANES transposes and a scalar remainder."""
    full = size - size % LANES
    for p in range(0, full, LANES):
        transpose_lanes(dst, table[p:p + LANES], dst_at, src, lane_offsets, p)
    for p in range(full, size):
        for l in range(LANES):
            dst[table[p] + dst_at + l] = src[lane_offsets[l] + p]


@njit(inline="always", cache=True)
def _lanes_to_planes(src, table, src_at, size, dst, lane_offsets, count):
    """``dst[lane_offsets[l] + p] = src[table[p] + src_at + l]`` for ``p < size`` and the first
    ``count`` lanes: the inverse of :func:`_planes_to_lanes`."""
    full = size - size % LANES if count == LANES else 0
    for p in range(0, full, LANES):
        transpose_lanes(dst, lane_offsets, p, src, table[p:p + LANES], src_at)
    for l in range(count):
        for p in range(full, size):
            dst[lane_offsets[l] + p] = src[table[p] + src_at + l]


@njit(inline="always", cache=True)
def _slide(out, out_at, weights, weights_at, grid, grid_at, grid_row, k_h, k_w, eight, halving):
    """One group of outputs of a row with dilation 1 by the ``simd`` sliding intrinsic of its kernel
    width, a register's piece of the lanes a call: at stride 1 eight outputs (``eight``; 3- or
    5-wide kernels) or four (3-, 5- or 7-wide), at stride 2 (``halving``; 3-, 5- or 7-wide) four:
    ``out[out_at + r LANES:+LANES] += sum over taps (th, tw) of weights[weights_at + (th KW + tw)
    LANES:+LANES] * grid[grid_at + th grid_row + (r s + tw) LANES:+LANES]``."""
    for lane in range(0, LANES, SLIDING_BYTES // out.itemsize):
        at, weights_from, grid_from = out_at + lane, weights_at + lane, grid_at + lane
        if halving and k_w == 3:
            halving_sums_3(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif halving and k_w == 5:
            halving_sums_5(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif halving:
            halving_sums_7(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif eight and k_w == 3:
            sliding_sums_3x8(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif eight:
            sliding_sums_5x8(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif k_w == 3:
            sliding_sums_3(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        elif k_w == 5:
            sliding_sums_5(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)
        else:
            sliding_sums_7(out, at, weights, weights_from, grid, grid_from, grid_row, k_h)


@njit(inline="always", cache=True)
def _spread(grid, grid_at, weights, weights_at, sources, sources_at, grid_row, k_h, k_w):
    """Four outputs' products of a stride-2 row with dilation 1 into the grid, by the
    ``simd.halving_spreads_*`` of its kernel width (3, 5 or 7), a register's piece of the lanes a
    call: ``grid[grid_at + th grid_row + (2 r + tw) LANES:+LANES] += weights[weights_at + (th KW +
    tw) LANES:+LANES] * sources[sources_at + r LANES:+LANES]`` for ``r < 4`` and every tap."""
    for lane in range(0, LANES, SLIDING_BYTES // grid.itemsize):
        at, weights_from, sources_from = grid_at + lane, weights_at + lane, sources_at + lane
        if k_w == 3:
            halving_spreads_3(grid, at, weights, weights_from, sources, sources_from, grid_row, k_h)
        elif k_w == 5:
            halving_spreads_5(grid, at, weights, weights_from, sources, sources_from, grid_row, k_h)
        else:
            halving_spreads_7(grid, at, weights, weights_from, sources, sources_from, grid_row, k_h)


@njit(inline="always", cache=True)
def _correlate_row(out, out_at, weights, weights_at, grid, grid_at, grid_row, out_w, stride, dilation, k_h, k_w):
    """``out[out_at + ow LANES:+LANES] += sum over taps (th, tw) of weights[weights_at + (th KW + tw)
    LANES:+LANES] * grid[grid_at + th grid_row + (ow stride + tw dilation) LANES:+LANES]`` for ``ow
    < out_w``: a kernel plane ``(KH, KW) = (k_h, k_w)`` on one output row, REGISTER_OUTPUTS outputs a
    call. At dilation 1 with kernels 3, 5 or 7 wide, ``simd``'s sliding intrinsics keep a kernel
    row's weights in registers and load each input vector once for the outputs it reaches
    (:func:`_slide`: at stride 1 eight outputs a call for 3- and 5-wide rows, then four; at stride
    2 four); otherwise, and for the outputs left over,
    ``add_product_sums_4`` loads each weight vector once for four outputs."""
    unit_steps = stride == 1 and dilation == 1
    halving = stride == 2 and dilation == 1 and k_w in HALVING_TAPS
    eights = out_w - out_w % WIDE_SLIDING_OUTPUTS if unit_steps and (k_w == 3 or k_w == 5) else 0
    for ow in range(0, eights, WIDE_SLIDING_OUTPUTS):
        _slide(out, out_at + ow * LANES, weights, weights_at, grid, grid_at + ow * LANES, grid_row, k_h, k_w, True,
               False)
    full = eights + (out_w - eights) // REGISTER_OUTPUTS * REGISTER_OUTPUTS
    sliding = unit_steps and (k_w == 3 or k_w == 5 or k_w == 7)
    for ow in range(eights, full, REGISTER_OUTPUTS):
        if sliding or halving:
            _slide(out, out_at + ow * LANES, weights, weights_at, grid, grid_at + ow * stride * LANES, grid_row, k_h,
                   k_w, False, halving)
        else:
            add_product_sums_4(out, out_at + ow * LANES, LANES, weights, weights_at, LANES, k_w * LANES,
                               grid, grid_at + ow * stride * LANES, dilation * LANES, grid_row, stride * LANES,
                               k_w, k_h)
    for ow in range(full, out_w):
        add_product_sums(out, out_at + ow * LANES, 0, weights, weights_at, LANES, k_w * LANES,
                         grid, grid_at + ow * stride * LANES, dilation * LANES, grid_row, 0, k_w, k_h)


@njit(inline="always", cache=True)
def _pack_weights(w, lane0, lane_channels, per_group, across_inputs, reversed_taps, block):
    """``block[(s taps + tap) LANES + l]``: lane ``l``'s weight for its ``s``-th source channel,
    zero from ``lane_channels`` on. ``w`` (K, C/g, taps). Lanes across output channels:
    ``w[t, s, tap]``; ``across_inputs``, lanes across input channels: ``w[g Kg + s, t - g Cg,
    tap]`` for lane channel ``t`` of group ``g`` (``per_group = Cg``); ``reversed_taps``: tap
    ``taps - 1 - tap`` instead (the kernel turned 180 degrees)."""
    sources, taps = block.size // (w.shape[2] * LANES), w.shape[2]
    for s in range(sources):
        for l in range(LANES):   # each lane's taps are contiguous in ``w``
            t = lane0 + l
            if t >= lane_channels:
                for tap in range(taps):
                    block[(s * taps + tap) * LANES + l] = 0
                continue
            row, column = ((t // per_group) * sources + s, t % per_group) if across_inputs else (t, s)
            for tap in range(taps):
                block[(s * taps + tap) * LANES + l] = w[row, column, taps - 1 - tap if reversed_taps else tap]


@njit(inline="always", cache=True)
def _gather_grid(x_flat, n, lane0, lane_channels, per_group, sources, s, in_channels, grid_table, offsets, grid):
    """An item's ``s``-th source plane, channels-last, into the interior of the bordered grid."""
    in_plane = grid_table.size
    _lane_planes(offsets, n, lane0, lane_channels, per_group, sources, s, in_channels, in_plane)
    _planes_to_lanes(x_flat, offsets, in_plane, grid, grid_table, 0)


@njit(cache=True, fastmath={"contract"})
def _forward_kernel(thread, threads, x, w, rotated, kernel, stride, dilation, grid_shape, grid_table, out_table, pitch,
                    rows, y):
    """``y[n, o] = sum over j < C/g and taps of w[o, j, tap] * x_pad[n, (o // Kg) Cg + j]`` at the
    tap, for ``x`` (N, C, D, H, W), ``w`` (K, C/g, taps), ``y`` (N, K, OD, OH, OW); ``rotated``:
    ``w`` is the weights of the layer whose input gradient this correlation is, (C, K/g, taps)
    read as ``common.rotated_weights`` lays them out (group axes swapped, taps reversed). Items
    (sample, block of LANES output channels) shared among the threads; ``rows`` their scratch.
    Each output row runs in whole groups of four, ``pitch`` outputs (:func:`_row_pitch`;
    ``out_table`` places the outputs in the padded rows): the outputs past a row's end read on
    into the next grid row, or past the grid's last into its zeroed margin, and are never written
    out."""
    batch, out_channels, out_d, out_h, out_w = y.shape
    in_channels, taps = x.shape[1], w.shape[2]
    groups = out_channels // w.shape[1] if rotated else in_channels // w.shape[1]
    sources, per_group = in_channels // groups, out_channels // groups
    blocks = (out_channels + LANES - 1) // LANES
    outputs = out_d * out_h * out_w
    grid_plane = grid_shape[0] * grid_shape[1] * grid_shape[2] * LANES
    grid_row = dilation[1] * grid_shape[2] * LANES   # from one kernel row's taps to the next's
    x_flat, y_flat = x.reshape(-1), y.reshape(-1)
    grid, lanes, block = _carve(rows[thread], grid_plane + REGISTER_OUTPUTS * stride[2] * LANES,
                                out_d * out_h * pitch * LANES, sources * taps * LANES)
    grid[:] = 0
    offsets = np.empty(LANES, np.int64)
    first, stop = share(batch * blocks, thread, threads)
    for item in range(first, stop):   # block by block, so a thread packs a block's weights once
        n, lane0 = item % batch, item // batch * LANES
        if item == first or n == 0:
            _pack_weights(w, lane0, out_channels, per_group, rotated, rotated, block)
        lanes[:] = 0
        for j in range(sources):   # one source plane in the grid at a time
            _gather_grid(x_flat, n, lane0, out_channels, per_group, sources, j, in_channels, grid_table, offsets,
                         grid)
            for od in range(out_d):
                for oh in range(out_h):
                    out_row = (od * out_h + oh) * pitch * LANES
                    for td in range(kernel[0]):
                        grid_at = ((od * stride[0] + td * dilation[0]) * grid_shape[1]
                                   + oh * stride[1]) * grid_shape[2] * LANES
                        weights = (j * kernel[0] + td) * kernel[1] * kernel[2] * LANES
                        _correlate_row(lanes, out_row, block, weights, grid, grid_at, grid_row, pitch, stride[2],
                                       dilation[2], kernel[1], kernel[2])
        _lane_planes(offsets, n, lane0, out_channels, 1, 1, 0, out_channels, outputs)
        _lanes_to_planes(lanes, out_table, 0, outputs, y_flat, offsets, min(LANES, out_channels - lane0))


@njit(cache=True, fastmath={"contract"})
def _input_kernel(thread, threads, grad_y, w, kernel, stride, dilation, grid_shape, grid_table, out_table, rows,
                  grad_x):
    """``grad_x[n, c]``: the interior of the grid that receives ``w[o, c - g Cg, tap] * grad_y[n,
    o]`` at every output and tap, for the outputs ``o`` of ``c``'s group ``g``; ``grad_y`` (N, K,
    OD, OH, OW), ``w`` (K, C/g, taps), ``grad_x`` (N, C, D, H, W): items (sample, block of LANES
    input channels) shared among the threads; ``rows`` their scratch."""
    batch, in_channels = grad_x.shape[0], grad_x.shape[1]
    out_channels, out_d, out_h, out_w = grad_y.shape[1], grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
    per_group, taps = w.shape[1], w.shape[2]
    sources = out_channels // (in_channels // per_group)
    blocks = (in_channels + LANES - 1) // LANES
    outputs, inputs = out_d * out_h * out_w, grid_table.size
    grid_size = grid_shape[0] * grid_shape[1] * grid_shape[2] * LANES
    grad_y_flat, grad_x_flat = grad_y.reshape(-1), grad_x.reshape(-1)
    grid, copies, block = _carve(rows[thread], grid_size, sources * outputs * LANES, sources * taps * LANES)
    offsets = np.empty(LANES, np.int64)
    # at stride 2 and dilation 1 along rows 3, 5 or 7 wide, groups of four outputs spread their
    # products from registers (_spread); the rest, one output and tap at a time
    halving = stride[2] == 2 and dilation[2] == 1 and kernel[2] in HALVING_TAPS
    spread = out_w - out_w % REGISTER_OUTPUTS if halving else 0
    first, stop = share(batch * blocks, thread, threads)
    for item in range(first, stop):
        n, lane0 = item // blocks, item % blocks * LANES
        for m in range(sources):
            _lane_planes(offsets, n, lane0, in_channels, per_group, sources, m, out_channels, outputs)
            _planes_to_lanes(grad_y_flat, offsets, outputs, copies, out_table, m * outputs * LANES)
        _pack_weights(w, lane0, in_channels, per_group, True, False, block)
        grid[:] = 0
        for m in range(sources):
            for od in range(out_d):
                for oh in range(out_h):
                    out_row = ((m * out_d + od) * out_h + oh) * out_w * LANES
                    for td in range(kernel[0]):
                        first_row = ((od * stride[0] + td * dilation[0]) * grid_shape[1]
                                     + oh * stride[1]) * grid_shape[2] * LANES
                        plane_weights = (m * kernel[0] + td) * kernel[1] * kernel[2] * LANES
                        for ow in range(0, spread, REGISTER_OUTPUTS):
                            _spread(grid, first_row + 2 * ow * LANES, block, plane_weights, copies,
                                    out_row + ow * LANES, dilation[1] * grid_shape[2] * LANES, kernel[1], kernel[2])
                        for th in range(kernel[1]):
                            grid_row = first_row + th * dilation[1] * grid_shape[2] * LANES
                            for tw in range(kernel[2]):
                                weights = plane_weights + (th * kernel[2] + tw) * LANES
                                shift = grid_row + tw * dilation[2] * LANES
                                for ow in range(spread, out_w):
                                    add_product_sums(grid, shift + ow * stride[2] * LANES, 0, block, weights, 0, 0,
                                                     copies, out_row + ow * LANES, 0, 0, 0, 1, 1)
        _lane_planes(offsets, n, lane0, in_channels, 1, 1, 0, in_channels, inputs)
        _lanes_to_planes(grid, grid_table, 0, inputs, grad_x_flat, offsets, min(LANES, in_channels - lane0))


@njit(cache=True, fastmath={"contract"})
def _weight_kernel(thread, threads, x, grad_y, kernel, stride, dilation, grid_shape, grid_table, out_table, rows, sums):
    """``sums[thread, b, (j taps + tap) LANES + l]``: thread ``thread``'s share of ``grad_w[b LANES
    + l, j, tap] = sum over n and outputs of grad_y[n, o] * x_pad[n, (o // Kg) Cg + j]`` at the
    tap, in float64; ``x`` (N, C, D, H, W), ``grad_y`` (N, K, OD, OH, OW), items (sample, block
    of LANES output channels) shared among the threads; ``rows`` their scratch."""
    batch, out_channels, out_d, out_h, out_w = grad_y.shape
    in_channels = x.shape[1]
    taps = kernel[0] * kernel[1] * kernel[2]
    sources = sums.shape[2] // (taps * LANES)
    per_group = out_channels // (in_channels // sources)
    blocks = (out_channels + LANES - 1) // LANES
    outputs = out_d * out_h * out_w
    grid_plane = grid_shape[0] * grid_shape[1] * grid_shape[2] * LANES
    x_flat, grad_y_flat = x.reshape(-1), grad_y.reshape(-1)
    grid, lanes, row_sums = _carve(rows[thread], grid_plane, outputs * LANES, taps * LANES)
    grid[:] = 0
    thread_sums = sums[thread]
    thread_sums[...] = 0
    offsets = np.empty(LANES, np.int64)
    first, stop = share(batch * blocks, thread, threads)
    for item in range(first, stop):
        n, block = item // blocks, item % blocks
        lane0 = block * LANES
        _lane_planes(offsets, n, lane0, out_channels, 1, 1, 0, out_channels, outputs)
        _planes_to_lanes(grad_y_flat, offsets, outputs, lanes, out_table, 0)
        for j in range(sources):   # one source plane in the grid at a time
            _gather_grid(x_flat, n, lane0, out_channels, per_group, sources, j, in_channels, grid_table, offsets,
                         grid)
            source_sums = thread_sums[block, j * taps * LANES:(j + 1) * taps * LANES]
            for od in range(out_d):
                for oh in range(out_h):
                    out_row = (od * out_h + oh) * out_w * LANES
                    row_sums[:] = 0
                    for td in range(kernel[0]):
                        for th in range(kernel[1]):
                            grid_row = ((od * stride[0] + td * dilation[0]) * grid_shape[1]
                                        + oh * stride[1] + th * dilation[1]) * grid_shape[2] * LANES
                            for tw in range(kernel[2]):
                                tap = (td * kernel[1] + th) * kernel[2] + tw
                                add_product_sums(row_sums, tap * LANES, 0, lanes, out_row, LANES, 0,
                                                 grid, grid_row + tw * dilation[2] * LANES, stride[2] * LANES, 0, 0,
                                                 out_w, 1)
                    for i in range(row_sums.size):
                        source_sums[i] += row_sums[i]


def _arguments(spec):
    """The kernels' geometry: kernel size, stride, dilation, bordered grid (tuples: values the
    compiled loops keep in registers, where an array's elements would be reloaded after every
    store), and the tables of :func:`_tables`."""
    return (spec.kernel_size, spec.stride, spec.dilation, _grid(spec),
            *_tables(spec.in_size, spec.pad_lo, _grid(spec), spec.out_size))


@functools.lru_cache(maxsize=256)
def _tables(in_size, pad_lo, grid, out_size):
    """``(grid_table, out_table)``: where each input position (flat, row-major) sits in the
    channels-last bordered grid, and each output position in channels-last output planes, in
    elements. Remembered: a training loop asks every step."""
    positions = np.indices(in_size).reshape(3, -1) + np.array(pad_lo)[:, None]
    grid_table = np.ravel_multi_index(tuple(positions), grid).astype(np.int64) * LANES
    return grid_table, np.arange(math.prod(out_size), dtype=np.int64) * LANES


def _scratch(spec, pass_name, dtype):
    """The threads' scratch rows, each starting on a cache line: the grids' and the lanes' vectors
    (LANES elements of float32, 64 bytes) then never straddle two lines."""
    return workspace.per_thread("blocked", thread_count(), _scratch_elements(spec, pass_name), dtype,
                                align=CACHE_LINE)


def _taps_last(w):
    return w.reshape(w.shape[0], w.shape[1], -1)


def forward(spec, x, w, out):
    _correlate(spec, x, w, out, False)


def _correlate(spec, x, w, out, rotated):
    """The forward pass of ``spec``; ``rotated``: ``w`` is the weights of the layer whose input
    gradient ``spec`` (an ``input_correlation``) is, turned by the kernel as it packs them."""
    geometry = _arguments(spec)[:-1]   # its outputs go to rows padded to groups of four
    on_threads(_forward_kernel, thread_count(), x, _taps_last(w), rotated, *geometry, _padded_rows(spec.out_size),
               _row_pitch(spec.out_size[2]), _scratch(spec, "forward", x.dtype), out)


@functools.lru_cache(maxsize=256)
def _padded_rows(out_size):
    """Where each output position (flat, row-major) sits in the forward's channels-last outputs,
    whose rows are :func:`_row_pitch` outputs long, in elements."""
    out_d, out_h, out_w = out_size
    rows = np.arange(out_d * out_h, dtype=np.int64)[:, None] * _row_pitch(out_w)
    return ((rows + np.arange(out_w, dtype=np.int64)[None, :]) * LANES).reshape(-1)


def backward_input(spec, grad_y, w, grad_x):
    correlation = input_correlation(spec)
    if correlation is not None:
        _correlate(correlation, grad_y, w, grad_x, True)
        return
    on_threads(_input_kernel, thread_count(), grad_y, _taps_last(w), *_arguments(spec),
               _scratch(spec, "input", grad_y.dtype), grad_x)


def backward_weight(spec, x, grad_y, grad_w):
    threads, taps = thread_count(), math.prod(spec.kernel_size)
    blocks, sources = _blocks(spec.out_channels), spec.group_in_channels
    sums = workspace.per_thread("blocked_sums", threads, blocks * sources * taps * LANES, np.float64)
    sums = sums.reshape(threads, blocks, sources * taps * LANES)
    on_threads(_weight_kernel, threads, x, grad_y, *_arguments(spec), _scratch(spec, "weight", x.dtype), sums)
    total = sums.sum(axis=0).reshape(blocks, sources, taps, LANES)   # the threads' sums in thread order
    grad_w.reshape(spec.out_channels, sources, taps)[...] = (
        total.transpose(0, 3, 1, 2).reshape(blocks * LANES, sources, taps)[:spec.out_channels])
