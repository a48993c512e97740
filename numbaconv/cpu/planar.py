"""Planar direct convolution for stride 1: whole padded planes, taps as offset reads.

Built for problems whose matrix products would be small: depthwise layers,
few-channel layers (a first layer on a 1-channel image) and small problems
(batch 1, 16 channels), where the GEMM algorithms spend more on building
columns than on arithmetic. Each thread copies one sample's input planes of
a group into a zero-bordered grid ``(Dp, Hp, Wp)`` in its own scratch (the
borders are the padding, zeroed before the thread's first item), and
numbers the outputs by the flat grid index of their window's corner,
``q = (od * Hp + oh) * Wp + ow``. With stride 1, tap ``t`` of output ``q``
reads ``grid[q + shift_t]``, ``shift_t = (td*dd * Hp + th*dh) * Wp + tw*dw``,
so

    forward:      wide[q]    = sum over c, t of w[k, c, t] * grid_c[q + shift_t]
    weight grad:  grad_w[t] += sum over q of wide_gy[q] * grid_c[q + shift_t]

run along the whole plane with unit stride: the inner loops are hundreds to
thousands long and vectorise, where loops over one output row (28 wide) run
mostly in their scalar remainders. Nine taps go together in one pass over
``wide`` (a 3x3 kernel is one pass per input channel), and two output
channels share each pass, so each load of the grid feeds 18 multiply-adds.
The weight gradient's dot products take one output channel a pass: nine
vector sums fit the registers, eighteen (two channels a pass) spill them and
run at 60% of the speed (docs/decisions.md, P2 and P3, with the variants that
lost).
Entries ``q`` with ``ow >= OW`` (or ``oh >= OH``) are not outputs: the
forward pass skips them when it copies ``wide`` into ``y``, the weight
gradient gives them zero ``grad_y``. They cost ``Q / P - 1`` extra FLOPs
(7% at 28x28 with a 3x3 kernel). Slices of the grid taken at each shift let
Numba index without its negative-index checks, which would otherwise keep
the loops from vectorising (3x slower).

The input gradient is the forward pass of ``grad_y``, padded by
``dd*(kd - 1) - pad_lo`` (cropped where that is negative), with the kernel
rotated by 180 degrees (tap order reversed) and its channel axes swapped.

The weight gradient copies ``grad_y`` onto the output grid (zero at the
entries that are not outputs), or, where a group has more output channels
than ``(C/g) * KW``, reads ``grad_y`` in place against ``KW`` copies of each
padded input plane with row pitch ``OW`` (copy ``tw`` starting at column
``tw * dw``), so each tap is again a constant shift (:func:`weight_columns`).
It sums each thread's share into the thread's own float64 partial
``grad_w`` and adds the partials in thread order at the end
(``threads.add_partials``: no races, the same bits every call). On the grid, the
entries that are not outputs multiply some input elements by zero, so a NaN
or Inf in the input could reach taps that never read it; when the result is
not finite it is done again by columns, where NaN and Inf land as in PyTorch.

Work is shared out by (sample, group, block of output channels), each
thread a consecutive share (``cpu/threads.py``), one block per thread where
samples x groups are fewer than threads (each block copies its group's
planes again).

FLOPs: ``2 N K (C/g) Q prod(kernel)`` per pass, ``Q ~ P (1 + (KW-1)/W)``.
Memory traffic: x, w and y (or grad_y) once each from memory; the plane
copies and the offset reads stay in L1/L2 (a 30x30 float32 plane is 3.6
KB). Bound by the FMA units on 3x3 kernels with two output channels a pass;
depthwise layers, one output channel a pass, by L1 loads (ten per nine
multiply-adds) and the plane copies (``numbaconv bench --layer
conv3x3_64,depthwise3x3_256 --algo planar`` prints GFLOP/s and % of the
matmul peak; docs/decisions.md, P1). Workspace per thread: one sample's group of padded
planes plus two output planes, or for the weight gradient by columns one
grid plus ``KW`` column copies per input channel of the group; besides, the
weight gradient's float64 partial sums per thread or the input gradient's
rotated weights. ``supports`` declines problems whose scratch would pass
``workspace.WORKSPACE_LIMIT_BYTES`` (it does not shrink with the limit).
Only stride 1 (any padding, dilation, groups and rank).
"""
import functools
import math

import numpy as np
from numba import njit

from . import workspace
from .common import ZERO, grid_walk, nine, nine_views, rotated_weights
from .threads import add_partials, most_threads, on_threads, share, thread_count

# FLOPs of one uncut kernel call: a quarter second at 8 GFLOP/s, this algorithm's slowest rate on
# dense layers; longer passes run in slices (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(2e9)
# Where NaN and Inf land differently from the reference (numbaconv.functional): the input
# gradient's planes carry no padding products: a non-finite weight does not meet the zeros there
# as it does in the reference (Inf * 0 = NaN).
INEXACT_NONFINITE = {"input": "weight"}

FUSED_TAPS = 9   # taps summed in one pass over a plane


def supports(spec):
    if any(s != 1 for s in spec.stride):
        return f"needs stride 1 in every dim, got {spec.stride}"
    threads = most_threads()
    return workspace.over_limit(threads * scratch_bytes(spec, np.float64) + _held_bytes(spec, threads))


def scratch_bytes(spec, dtype):
    """Bytes of scratch one thread uses in the costliest pass (at most the input gradient's grid,
    or the weight gradient's kernel-width column copies, per channel of a group)."""
    planes = max(spec.group_in_channels, spec.group_out_channels)
    grid = [n + d * (k - 1) + lo + hi for n, d, k, lo, hi in
            zip(spec.in_size, spec.dilation, spec.kernel_size, spec.pad_lo, spec.pad_hi)]
    return (planes * spec.kernel_size[-1] + 2) * math.prod(grid) * np.dtype(dtype).itemsize


def _held_bytes(spec, threads):
    """Scratch besides the planes, the larger of: the weight gradient's float64 partial sums per
    thread, the input gradient's rotated weights (counted in float64)."""
    taps = math.prod(spec.kernel_size)
    partial_sums = threads * spec.out_channels * spec.group_in_channels * weight_taps(taps)
    rotated_weights = spec.in_channels * spec.group_out_channels * taps
    return max(partial_sums, rotated_weights) * 8


def weight_columns(spec):
    """Whether the weight gradient reads grad_y in place against column copies of the input
    (one per kernel column) rather than copying grad_y onto the grid: when a group has more
    output channels than it would make column copies, ``K/g > (C/g) * KW`` (by columns 1.5x
    faster on 1 -> 32 3x3 28x28 N=64, 1.6x slower on depthwise 256ch 28x28 N=8:
    docs/decisions.md, P4)."""
    return spec.group_out_channels > spec.group_in_channels * spec.kernel_size[2]


@functools.lru_cache(maxsize=256)
def _grid_layout(spec, pass_name, threads):
    """``(offset, grid, size, shifts, blocks)`` of one pass ("forward", "input", "weight" or
    "weight-columns", the weight gradient by columns whatever :func:`weight_columns` says) of
    ``spec``: where the source planes sit in the zero grid, the grid's size, the span of ``q``
    (or, for a weight gradient by columns, the size of one channel's column copies), the taps'
    shifts in the grid (or the column copies; for the weight passes :func:`weight_taps` of
    them, the dummies at shift 0), and the output-channel blocks per (sample,
    group). Remembered: a training loop asks every step."""
    (k_d, k_h, k_w), (dil_d, dil_h, _) = spec.kernel_size, spec.dilation
    if pass_name == "input":
        extent = [d * (k - 1) for d, k in zip(spec.dilation, spec.kernel_size)]
        offset = tuple(e - lo for e, lo in zip(extent, spec.pad_lo))
        grid = tuple(n + e for n, e in zip(spec.in_size, extent))
        out, group_out = spec.in_size, spec.group_in_channels
    else:
        offset = spec.pad_lo
        grid = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
        out, group_out = spec.out_size, spec.group_out_channels
    if pass_name == "weight-columns" or (pass_name == "weight" and weight_columns(spec)):
        # column copy tw holds grid[r, tw*dw : tw*dw + OW] for every grid row r (pitch OW)
        rows = grid[0] * grid[1]
        size = k_w * rows * out[2]
        shifts = [tw * rows * out[2] + (td * dil_d * grid[1] + th * dil_h) * out[2]
                  for td in range(k_d) for th in range(k_h) for tw in range(k_w)]
    else:
        size, shifts = grid_walk(grid, out, spec.kernel_size, spec.dilation)
    if pass_name.startswith("weight"):
        # the last taps' dot products as one more fused pass, at shift 0, their sums dropped
        shifts += [0] * (weight_taps(len(shifts)) - len(shifts))
    # one block per thread where samples x groups are fewer than threads: each block copies
    # its group's planes again
    blocks = min(group_out, -(-threads // (spec.batch * spec.groups)))
    return offset, grid, size, np.array(shifts, np.int64), blocks


def weight_taps(taps):
    """Taps the weight gradient sums over: ``taps`` rounded up to a multiple of nine where at
    least five would be left over, which then share one fused pass (plus dummy taps) instead
    of a pass each: 15% faster with seven left (LeNet's 20 -> 20 5x5), no gain with four (16ch
    7x7). ``numbaconv bench --layer lenet_conv2 --algo planar --pass weight``; docs/decisions.md,
    P3."""
    left = taps % FUSED_TAPS
    return taps + FUSED_TAPS - left if left >= 5 else taps


@njit(nogil=True, cache=True)
def _pad(plane, flat, offset, grid):
    """Copy ``plane`` (D, H, W) into ``flat``, a grid (Dp, Hp, Wp) flattened (or its first
    ``flat.size`` entries), with ``plane[d, h, w]`` at grid position ``(d, h, w) + offset`` and
    what falls outside the grid dropped. The rest of ``flat`` is left as it is; ``plane`` is
    only read, so it may be read-only. (Unsigned indices: no wraparound checks, 25% faster.)"""
    depth, height, width = plane.shape
    source = plane.reshape(-1)
    first, stop = max(0, -offset[2]), min(width, grid[2] - offset[2])   # plane columns inside
    count = np.uint64(max(0, stop - first))
    for d in range(max(0, -offset[0]), min(depth, grid[0] - offset[0])):
        for h in range(max(0, -offset[1]), min(height, grid[1] - offset[1])):
            at_plane = np.uint64((d * height + h) * width + first)
            at_grid = np.uint64(((d + offset[0]) * grid[1] + h + offset[1]) * grid[2] + offset[2] + first)
            for i in range(count):
                flat[at_grid + i] = source[at_plane + i]


@njit(nogil=True, cache=True)
def _crop(flat, plane, grid):
    """Copy the corner of shape ``plane.shape`` of ``flat``, a grid (Dp, Hp, Wp) flattened (its
    first entries, up to the corner's last element), into ``plane`` (D, H, W): :func:`_pad` at
    offset 0 the other way. ``flat`` is only read. (Unsigned indices, as in :func:`_pad`.)"""
    depth, height, width = plane.shape
    target = plane.reshape(-1)
    for d in range(depth):
        for h in range(height):
            at_plane, at_grid = np.uint64((d * height + h) * width), np.uint64((d * grid[1] + h) * grid[2])
            for i in range(np.uint64(width)):
                target[at_plane + i] = flat[at_grid + i]


@njit(nogil=True, cache=True, fastmath={"contract"})
def _add_taps(wide, flat, weights, shifts, accumulate):
    """``wide[q] (+)= sum over taps t of weights[t] * flat[q + shifts[t]]``, nine taps per pass;
    without ``accumulate`` the first pass overwrites ``wide`` (no clearing, one load less)."""
    span, taps = wide.size, shifts.size
    t = 0
    while t + FUSED_TAPS <= taps:
        a0, a1, a2, a3, a4, a5, a6, a7, a8 = nine_views(flat, shifts, t, span)
        w0, w1, w2, w3, w4, w5, w6, w7, w8 = nine(weights, t)
        for q in range(span):
            total = (w0 * a0[q] + w1 * a1[q] + w2 * a2[q] + w3 * a3[q] + w4 * a4[q]
                     + w5 * a5[q] + w6 * a6[q] + w7 * a7[q] + w8 * a8[q])
            wide[q] = wide[q] + total if accumulate else total
        t += FUSED_TAPS
        accumulate = True
    if not accumulate:
        wide[:] = 0
    for tap in range(t, taps):
        weight, source = weights[tap], flat[shifts[tap]:shifts[tap] + span]
        for q in range(span):
            wide[q] += weight * source[q]


@njit(nogil=True, cache=True, fastmath={"contract"})
def _add_taps_pair(wide_a, wide_b, flat, weights_a, weights_b, shifts, accumulate):
    """:func:`_add_taps` for two outputs at once: each load of ``flat`` feeds both."""
    span, taps = wide_a.size, shifts.size
    t = 0
    while t + FUSED_TAPS <= taps:
        a0, a1, a2, a3, a4, a5, a6, a7, a8 = nine_views(flat, shifts, t, span)
        u0, u1, u2, u3, u4, u5, u6, u7, u8 = nine(weights_a, t)
        v0, v1, v2, v3, v4, v5, v6, v7, v8 = nine(weights_b, t)
        for q in range(span):
            x0, x1, x2, x3, x4, x5, x6, x7, x8 = a0[q], a1[q], a2[q], a3[q], a4[q], a5[q], a6[q], a7[q], a8[q]
            total_a = u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3 + u4 * x4 + u5 * x5 + u6 * x6 + u7 * x7 + u8 * x8
            total_b = v0 * x0 + v1 * x1 + v2 * x2 + v3 * x3 + v4 * x4 + v5 * x5 + v6 * x6 + v7 * x7 + v8 * x8
            wide_a[q] = wide_a[q] + total_a if accumulate else total_a
            wide_b[q] = wide_b[q] + total_b if accumulate else total_b
        t += FUSED_TAPS
        accumulate = True
    if not accumulate:
        wide_a[:] = 0
        wide_b[:] = 0
    for tap in range(t, taps):
        weight_a, weight_b, source = weights_a[tap], weights_b[tap], flat[shifts[tap]:shifts[tap] + span]
        for q in range(span):
            wide_a[q] += weight_a * source[q]
            wide_b[q] += weight_b * source[q]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _tap_dots(wide, flat, shifts, sums):
    """``sums[t] += sum over q of wide[q] * flat[q + shifts[t]]``, nine taps per pass (float64 sums
    of per-plane dot products in the array dtype, which vectorise)."""
    span, taps = wide.size, shifts.size
    zero = wide.dtype.type(0)
    t = 0
    while t + FUSED_TAPS <= taps:
        a0, a1, a2, a3, a4, a5, a6, a7, a8 = nine_views(flat, shifts, t, span)
        d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = d8 = zero
        for q in range(span):
            g = wide[q]
            d0 += g * a0[q]
            d1 += g * a1[q]
            d2 += g * a2[q]
            d3 += g * a3[q]
            d4 += g * a4[q]
            d5 += g * a5[q]
            d6 += g * a6[q]
            d7 += g * a7[q]
            d8 += g * a8[q]
        for i, dot in enumerate((d0, d1, d2, d3, d4, d5, d6, d7, d8)):
            sums[t + i] += dot
        t += FUSED_TAPS
    for tap in range(t, taps):
        source = flat[shifts[tap]:shifts[tap] + span]
        dot = zero
        for q in range(span):
            dot += wide[q] * source[q]
        sums[tap] += dot


@njit(inline="always", cache=True)
def _share_and_row(scratch, thread, items):
    """``(first, stop, own)``: ``thread``'s share of ``items`` and its row of ``scratch``, zeroed
    where the share is not empty (the grids' borders and the gaps between output rows then stay
    zero for the whole call)."""
    first, stop = share(items, thread, scratch.shape[0])
    own = scratch[thread]
    if first < stop:
        own[:] = 0
    return first, stop, own


@njit(cache=True)
def _correlate_kernel(thread, threads, source, weights, shifts, offset, grid, blocks, scratch, out):
    """``out[n, o] = sum over s in o's group and taps t of weights[o, s, t] * source[n, s]`` offset
    by tap t, on the grid: ``source`` (N, S, ...), ``weights`` (O, S/g, T), ``out`` (N, O, ...).
    The threads take consecutive shares of the (sample, group, block) items; ``scratch`` has a
    row per thread (:func:`_share_and_row`)."""
    batch, source_channels = source.shape[0], source.shape[1]
    out_channels, group_source = weights.shape[0], weights.shape[1]
    groups = source_channels // group_source
    group_out = out_channels // groups
    block = -(-group_out // blocks)
    grid_size = grid[0] * grid[1] * grid[2]
    span = (scratch.shape[1] - group_source * grid_size) // 2
    first, stop, own = _share_and_row(scratch, thread, batch * groups * blocks)
    for item in range(first, stop):
        n, g, b = item // (groups * blocks), item // blocks % groups, item % blocks
        wide = own[group_source * grid_size:]
        for s in range(group_source):
            _pad(source[n, g * group_source + s], own[s * grid_size:(s + 1) * grid_size], offset, grid)
        o, last = g * group_out + b * block, g * group_out + min(group_out, (b + 1) * block)
        while o < last:   # two outputs at a time, then one
            pair = o + 1 < last
            for s in range(group_source):
                if pair:
                    _add_taps_pair(wide[:span], wide[span:], own[s * grid_size:(s + 1) * grid_size],
                                   weights[o, s], weights[o + 1, s], shifts, s > 0)
                else:
                    _add_taps(wide[:span], own[s * grid_size:(s + 1) * grid_size], weights[o, s], shifts,
                              s > 0)
            _crop(wide[:span], out[n, o], grid)
            if pair:
                _crop(wide[span:], out[n, o + 1], grid)
            o += 2 if pair else 1


@njit(cache=True)
def _weight_kernel(thread, threads, x, grad_y, shifts, offset, grid, columns, dilation_w, blocks, scratch, partial):
    """``partial[thread, k, c, t] += sum over outputs of grad_y[n, k] * x[n, c]`` offset by tap t,
    over the thread's consecutive share of the (sample, group, block) items; ``partial``
    (threads, K, C/g, T) float64; ``scratch`` a row per thread (:func:`_share_and_row`).

    Without ``columns``, each input plane is padded into its own grid and grad_y is copied onto
    the output grid (``q``, zero at the entries that are not outputs). With ``columns`` (the
    kernel width, > 0), grad_y is read in place: each input plane is padded into one shared
    grid, then copied ``columns`` times with row pitch OW, copy ``tw`` starting at grid column
    ``tw * dw``, so that tap (td, th, tw) of output ``(od, oh, ow)`` sits at a constant shift
    from ``oh * OW + ow`` within each output depth slice."""
    batch, in_channels = x.shape[0], x.shape[1]
    out_channels, group_in = partial.shape[1], partial.shape[2]
    out_d, out_h, out_w = grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
    groups = in_channels // group_in
    group_out = out_channels // groups
    block = -(-group_out // blocks)
    grid_size, rows = grid[0] * grid[1] * grid[2], grid[0] * grid[1]
    origin = (ZERO, ZERO, ZERO)   # not literal zeros: _pad compiles for one offset type
    if columns:
        plane_size, slices, slice_size, slice_step = columns * rows * out_w, out_d, out_h * out_w, grid[1] * out_w
        planes_at = grid_size
    else:
        plane_size, slices, slice_step = grid_size, 1, 0
        slice_size = scratch.shape[1] - group_in * grid_size
        planes_at = 0
    first, stop, own = _share_and_row(scratch, thread, batch * groups * blocks)
    for item in range(first, stop):
        n, g, b = item // (groups * blocks), item // blocks % groups, item % blocks
        for c in range(group_in):
            plane = own[planes_at + c * plane_size:planes_at + (c + 1) * plane_size]
            if not columns:
                _pad(x[n, g * group_in + c], plane, offset, grid)
                continue
            padded = own[:grid_size]
            _pad(x[n, g * group_in + c], padded, offset, grid)
            for tw in range(columns):
                for row in range(rows):
                    source = padded[row * grid[2] + tw * dilation_w:row * grid[2] + tw * dilation_w + out_w]
                    target = plane[(tw * rows + row) * out_w:(tw * rows + row + 1) * out_w]
                    for i in range(out_w):
                        target[i] = source[i]
        for k in range(g * group_out + b * block, g * group_out + min(group_out, (b + 1) * block)):
            if columns:
                grad = grad_y[n, k].reshape(-1)
            else:
                # grad_y on the output grid: the entries that are not outputs stay zero
                grad = own[group_in * grid_size:][:slice_size]
                _pad(grad_y[n, k], grad, origin, grid)
            for c in range(group_in):
                plane = own[planes_at + c * plane_size:planes_at + (c + 1) * plane_size]
                for depth_slice in range(slices):
                    at = depth_slice * slice_size
                    _tap_dots(grad[at:at + slice_size], plane[depth_slice * slice_step:], shifts,
                              partial[thread, k, c])


def forward(spec, x, w, out):
    threads = thread_count()
    offset, grid, span, shifts, blocks = _grid_layout(spec, "forward", threads)
    scratch = workspace.per_thread("planar", threads, spec.group_in_channels * math.prod(grid) + 2 * span, x.dtype)
    on_threads(_correlate_kernel, threads, x, w.reshape(w.shape[0], w.shape[1], -1), shifts, offset, grid, blocks,
               scratch, out)


def backward_input(spec, grad_y, w, grad_x):
    threads = thread_count()
    offset, grid, span, shifts, blocks = _grid_layout(spec, "input", threads)
    scratch = workspace.per_thread("planar", threads, spec.group_out_channels * math.prod(grid) + 2 * span, grad_y.dtype)
    # weights[g*Cg + c, j, t] = w[g*Kg + j, c, T-1-t]: rotated kernel, channel axes swapped
    on_threads(_correlate_kernel, threads, grad_y, rotated_weights(w, spec.groups), shifts, offset, grid, blocks,
               scratch, grad_x)


def backward_weight(spec, x, grad_y, grad_w):
    columns = weight_columns(spec)
    _weight_gradient(spec, x, grad_y, grad_w, columns)
    if not columns and not np.isfinite(grad_w).all():
        # the wide grad_y's entries that are not outputs multiply input elements by 0, so a NaN
        # or Inf there reaches taps that never see it in the convolution; by columns every
        # product is one of the convolution's, and NaN and Inf land where they do in PyTorch
        _weight_gradient(spec, x, grad_y, grad_w, True)


def _weight_gradient(spec, x, grad_y, grad_w, by_columns):
    threads = thread_count()
    pass_name = "weight-columns" if by_columns else "weight"
    offset, grid, size, shifts, blocks = _grid_layout(spec, pass_name, threads)
    columns = spec.kernel_size[2] if by_columns else 0
    planes = spec.group_in_channels * (size if columns else math.prod(grid))
    scratch = workspace.per_thread("planar", threads, planes + (math.prod(grid) if columns else size), x.dtype)
    shape = (threads, spec.out_channels, spec.group_in_channels, len(shifts))
    partial = workspace.borrow("planar_partial", math.prod(shape), np.float64).reshape(shape)
    partial[...] = 0
    on_threads(_weight_kernel, threads, x, grad_y, shifts, offset, grid, columns, spec.dilation[2], blocks, scratch,
               partial)
    taps = math.prod(spec.kernel_size)
    add_partials(partial.reshape(threads, -1, len(shifts)), grad_w.reshape(-1, taps))   # the dummy taps left out
