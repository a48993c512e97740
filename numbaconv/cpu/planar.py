"""Planar direct convolution for stride 1: whole padded planes, taps as shifted reads.

Built for problems whose per-group reduction ``(C/g) * prod(kernel)`` is too
short for a matrix product to pay: depthwise layers, few-channel layers
(a first layer on a 1-channel image) and small problems (batch 1, 16
channels). Each thread copies one sample's input planes of a group into a
zero-bordered grid ``(Dp, Hp, Wp)`` in its own scratch (the borders are the
padding, zeroed on the thread's first use in a call), and numbers the outputs by the flat grid
index of their window's corner, ``q = (od * Hp + oh) * Wp + ow``. With stride
1, tap ``t`` of output ``q`` reads ``grid[q + shift_t]``,
``shift_t = (td*dd * Hp + th*dh) * Wp + tw*dw`` (as in shifted.py), so

    forward:      wide[q]    = sum over c, t of w[k, c, t] * grid_c[q + shift_t]
    weight grad:  grad_w[t] += sum over q of wide_gy[q] * grid_c[q + shift_t]

run along the whole plane with unit stride: the inner loops are thousands
long and vectorise, where loops over one output row (28 wide) ran mostly in
their scalar remainders. Nine taps go together in one pass over ``wide``
(nine loads and one store per nine multiply-adds); a 3x3 kernel is one such
pass per input channel. Entries ``q`` with ``ow >= OW`` (or ``oh >= OH``) are
not outputs: the forward pass skips them when it copies ``wide`` into ``y``,
the weight gradient gives them zero ``grad_y``. They cost ``Q / P - 1`` extra
FLOPs (7% at 28x28 with a 3x3 kernel). Slices of the grid taken at each
shift let Numba index without its negative-index checks, which otherwise
kept the loops from vectorising (3x slower).

The input gradient is the forward pass of ``grad_y``, padded by
``dd*(kd - 1) - pad_lo`` (cropped where that is negative), with the kernel
rotated by 180 degrees (tap order reversed) and its channel axes swapped.

Work is shared out by (sample, group, block of output channels); the weight
gradient sums each thread's share into its own float64 partial ``grad_w``
and adds the partials at the end (no races).

FLOPs: ``2 N K (C/g) Q prod(kernel)`` per pass, ``Q ~ P (1 + (KW-1)/W)``.
Memory traffic: x, w and y (or grad_y) once each from memory; the plane
copies and the nine reads per output stay in L1/L2 (a 30x30 float32 plane is
3.6 KB). Bound by L1 loads (about ten per nine multiply-adds). Workspace per
thread: one sample's group of padded planes plus one wide plane. Only
stride 1 (any padding, dilation, groups and rank).
"""
import functools
import math

import numba
import numpy as np
from numba import njit, prange

from . import workspace

FUSED_TAPS = 9   # taps summed in one pass over a plane


def supports(spec):
    if any(s != 1 for s in spec.stride):
        return f"needs stride 1 in every dim, got {spec.stride}"
    needed = numba.config.NUMBA_NUM_THREADS * scratch_bytes(spec, np.float64)
    if needed > workspace.WORKSPACE_LIMIT_BYTES:
        return f"its padded planes would take {needed / 2**20:.0f} MiB of scratch"
    return None


def scratch_bytes(spec, dtype):
    """Bytes of scratch one thread uses in the costliest pass (bounded by the input gradient's grid)."""
    planes = max(spec.group_in_channels, spec.group_out_channels)
    grid = [n + d * (k - 1) + lo + hi for n, d, k, lo, hi in
            zip(spec.in_size, spec.dilation, spec.kernel_size, spec.pad_lo, spec.pad_hi)]
    return (planes + 1) * math.prod(grid) * np.dtype(dtype).itemsize


@functools.lru_cache(maxsize=256)
def _plan(spec, backward_input, threads):
    """``(offset, grid, span, shifts, blocks)`` of the forward pass of ``spec`` or (with
    ``backward_input``) of its input gradient: where the source planes sit in the zero grid,
    the grid's size, the span of ``q``, the taps' shifts in the grid and the output-channel
    blocks per (sample, group). Remembered: a training loop asks every step."""
    if backward_input:
        extent = [d * (k - 1) for d, k in zip(spec.dilation, spec.kernel_size)]
        offset = tuple(e - lo for e, lo in zip(extent, spec.pad_lo))
        grid = tuple(n + e for n, e in zip(spec.in_size, extent))
        out, group_out = spec.in_size, spec.group_in_channels
    else:
        offset = spec.pad_lo
        grid = tuple(n + lo + hi for n, lo, hi in zip(spec.in_size, spec.pad_lo, spec.pad_hi))
        out, group_out = spec.out_size, spec.group_out_channels
    span = ((out[0] - 1) * grid[1] + out[1] - 1) * grid[2] + out[2]
    (k_d, k_h, k_w), (dil_d, dil_h, dil_w) = spec.kernel_size, spec.dilation
    shifts = np.array([(td * dil_d * grid[1] + th * dil_h) * grid[2] + tw * dil_w
                       for td in range(k_d) for th in range(k_h) for tw in range(k_w)], np.int64)
    # enough (sample, group, block) items for every thread several times over: each block
    # copies its group's planes again
    blocks = min(group_out, -(-4 * threads // (spec.batch * spec.groups)))
    return offset, grid, span, shifts, blocks


def _fresh():
    """One flag per thread: its scratch row is not yet zeroed in this call."""
    return np.ones(numba.config.NUMBA_NUM_THREADS, np.bool_)


def _scratch(planes, grid, span, dtype):
    """Per thread (rows by ``numba.get_thread_id``): room for ``planes`` grids and a wide plane."""
    size = planes * math.prod(grid) + span
    threads = numba.config.NUMBA_NUM_THREADS
    return workspace.borrow("planar", threads * size, dtype).reshape(threads, size)


@njit(nogil=True, cache=True)
def _move(plane, flat, offset, grid, into_flat):
    """Copy ``plane`` (D, H, W) into ``flat``, a grid (Dp, Hp, Wp) flattened (or its first
    ``flat.size`` entries), with ``plane[d, h, w]`` at grid position ``(d, h, w) + offset`` and
    what falls outside the grid dropped; or (not ``into_flat``) copy the plane back out.
    The rest of ``flat`` is left as it is."""
    depth, height, width = plane.shape
    first, stop = max(0, -offset[2]), min(width, grid[2] - offset[2])   # plane columns inside
    for d in range(max(0, -offset[0]), min(depth, grid[0] - offset[0])):
        for h in range(max(0, -offset[1]), min(height, grid[1] - offset[1])):
            start = ((d + offset[0]) * grid[1] + h + offset[1]) * grid[2] + offset[2]
            row, grid_row = plane[d, h, first:stop], flat[start + first:start + stop]
            if into_flat:
                for i in range(stop - first):
                    grid_row[i] = row[i]
            else:
                for i in range(stop - first):
                    row[i] = grid_row[i]


@njit(nogil=True, cache=True)
def _own_scratch(scratch, fresh):
    """This thread's scratch row, zeroed on its first use in a call (``fresh[thread]``): the
    grids' borders (padding) and the gaps between output rows stay zero for the whole call."""
    thread = numba.get_thread_id()
    own = scratch[thread]
    if fresh[thread]:
        for i in range(own.size):
            own[i] = 0
        fresh[thread] = False
    return thread, own


@njit(nogil=True, cache=True, fastmath={"contract"})
def _add_taps(wide, flat, weights, shifts):
    """``wide[q] += sum over taps t of weights[t] * flat[q + shifts[t]]``, nine taps per pass."""
    span = wide.size
    taps = shifts.size
    t = 0
    while t + FUSED_TAPS <= taps:
        w0, w1, w2, w3, w4 = weights[t], weights[t + 1], weights[t + 2], weights[t + 3], weights[t + 4]
        w5, w6, w7, w8 = weights[t + 5], weights[t + 6], weights[t + 7], weights[t + 8]
        s = shifts[t:t + FUSED_TAPS]
        a0, a1, a2 = flat[s[0]:s[0] + span], flat[s[1]:s[1] + span], flat[s[2]:s[2] + span]
        a3, a4, a5 = flat[s[3]:s[3] + span], flat[s[4]:s[4] + span], flat[s[5]:s[5] + span]
        a6, a7, a8 = flat[s[6]:s[6] + span], flat[s[7]:s[7] + span], flat[s[8]:s[8] + span]
        for q in range(span):
            wide[q] += (w0 * a0[q] + w1 * a1[q] + w2 * a2[q] + w3 * a3[q] + w4 * a4[q]
                        + w5 * a5[q] + w6 * a6[q] + w7 * a7[q] + w8 * a8[q])
        t += FUSED_TAPS
    for tap in range(t, taps):
        weight, source = weights[tap], flat[shifts[tap]:shifts[tap] + span]
        for q in range(span):
            wide[q] += weight * source[q]


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _tap_dots(wide, flat, shifts, sums):
    """``sums[t] += sum over q of wide[q] * flat[q + shifts[t]]``, nine taps per pass (float64 sums
    of per-plane dot products in the array dtype, which vectorise)."""
    span = wide.size
    taps = shifts.size
    zero = wide.dtype.type(0)
    t = 0
    while t + FUSED_TAPS <= taps:
        s = shifts[t:t + FUSED_TAPS]
        a0, a1, a2 = flat[s[0]:s[0] + span], flat[s[1]:s[1] + span], flat[s[2]:s[2] + span]
        a3, a4, a5 = flat[s[3]:s[3] + span], flat[s[4]:s[4] + span], flat[s[5]:s[5] + span]
        a6, a7, a8 = flat[s[6]:s[6] + span], flat[s[7]:s[7] + span], flat[s[8]:s[8] + span]
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


@njit(parallel=True, cache=True)
def _correlate_kernel(source, weights, shifts, offset, grid, blocks, scratch, fresh, out):
    """``out[n, o] = sum over s in o's group and taps t of weights[o, s, t] * source[n, s]`` shifted
    by tap t, on the grid: ``source`` (N, S, ...), ``weights`` (O, S/g, T), ``out`` (N, O, ...)."""
    batch, source_channels = source.shape[0], source.shape[1]
    out_channels, group_source = weights.shape[0], weights.shape[1]
    groups = source_channels // group_source
    group_out = out_channels // groups
    block = -(-group_out // blocks)
    grid_size = grid[0] * grid[1] * grid[2]
    span = scratch.shape[1] - group_source * grid_size
    for item in prange(batch * groups * blocks):
        n, g, b = item // (groups * blocks), item // blocks % groups, item % blocks
        _, own = _own_scratch(scratch, fresh)
        wide = own[group_source * grid_size:]
        for s in range(group_source):
            _move(source[n, g * group_source + s], own[s * grid_size:(s + 1) * grid_size], offset, grid, True)
        for o in range(g * group_out + b * block, g * group_out + min(group_out, (b + 1) * block)):
            wide[:] = 0
            for s in range(group_source):
                _add_taps(wide, own[s * grid_size:(s + 1) * grid_size], weights[o, s], shifts)
            _move(out[n, o], wide, (0, 0, 0), grid, False)


@njit(parallel=True, cache=True)
def _weight_kernel(x, grad_y, shifts, offset, grid, blocks, scratch, fresh, partial):
    """``partial[thread, k, c, t] += sum over q of grad_y[n, k] * x[n, c]`` shifted by tap t, over
    the thread's (sample, group, block) items; ``partial`` (threads, K, C/g, T) float64."""
    batch, in_channels = x.shape[0], x.shape[1]
    out_channels, group_in = partial.shape[1], partial.shape[2]
    groups = in_channels // group_in
    group_out = out_channels // groups
    block = -(-group_out // blocks)
    grid_size = grid[0] * grid[1] * grid[2]
    span = scratch.shape[1] - group_in * grid_size
    for item in prange(batch * groups * blocks):
        n, g, b = item // (groups * blocks), item // blocks % groups, item % blocks
        thread, own = _own_scratch(scratch, fresh)
        wide = own[group_in * grid_size:]
        for c in range(group_in):
            _move(x[n, g * group_in + c], own[c * grid_size:(c + 1) * grid_size], offset, grid, True)
        for k in range(g * group_out + b * block, g * group_out + min(group_out, (b + 1) * block)):
            # grad_y on the output grid: the entries that are not outputs stay zero
            _move(grad_y[n, k], wide, (0, 0, 0), grid, True)
            for c in range(group_in):
                _tap_dots(wide, own[c * grid_size:(c + 1) * grid_size], shifts, partial[thread, k, c])


def forward(spec, x, w, out):
    offset, grid, span, shifts, blocks = _plan(spec, False, numba.get_num_threads())
    scratch = _scratch(spec.group_in_channels, grid, span, x.dtype)
    _correlate_kernel(x, w.reshape(w.shape[0], w.shape[1], -1), shifts, offset, grid, blocks, scratch, _fresh(), out)


def backward_input(spec, grad_y, w, grad_x):
    offset, grid, span, shifts, blocks = _plan(spec, True, numba.get_num_threads())
    scratch = _scratch(spec.group_out_channels, grid, span, grad_y.dtype)
    group_out, group_in = spec.group_out_channels, spec.group_in_channels
    # weights[g*Cg + c, j, t] = w[g*Kg + j, c, T-1-t]: rotated kernel, channel axes swapped
    rotated = w.reshape(spec.groups, group_out, group_in, -1)[..., ::-1]
    weights = np.ascontiguousarray(rotated.transpose(0, 2, 1, 3)).reshape(spec.in_channels, group_out, -1)
    _correlate_kernel(grad_y, weights, shifts, offset, grid, blocks, scratch, _fresh(), grad_x)


def backward_weight(spec, x, grad_y, grad_w):
    offset, grid, span, shifts, blocks = _plan(spec, False, numba.get_num_threads())
    scratch = _scratch(spec.group_in_channels, grid, span, x.dtype)
    partial = np.zeros((scratch.shape[0], spec.out_channels, spec.group_in_channels, len(shifts)))
    _weight_kernel(x, grad_y, shifts, offset, grid, blocks, scratch, _fresh(), partial)
    grad_w[...] = partial.sum(axis=0).reshape(grad_w.shape)
