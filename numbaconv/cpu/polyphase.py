"""Polyphase direct convolution: vectors along output rows, read from phase planes of the input.

For layers of few input channels a group: stems with three input channels
(3x3/2, 7x7/2, 3x7x7), 1-d front ends on one channel (kernel 10, stride 5),
and layers of up to a few dozen channels that im2col would run with columns
(1-d layers of 32 channels, LeNet's second layer). im2col turns them into
products of a short reduction (a few dozen to a few hundred rows), which
BLAS runs at a fraction of its speed, after writing a column matrix many
times larger than the input. Here no column matrix exists:

1. the input is copied once into *phase planes*: along each dim of stride
   ``s`` the inputs ``s m + r`` of residue ``r`` (only the residues some tap
   reads) go to plane ``r`` at ``m``, zeros where ``s m + r`` lies in the
   padding. Tap ``t`` then reads the plane of its residues at output
   position ``o + q_t``, so the inputs of consecutive outputs along a row are
   consecutive elements at every stride and dilation;
2. forward: the output vectors (``L`` consecutive outputs of a row, a row's
   last one partial) of a sample's planes, row after row, go in tiles of
   ``V``, so no row pads to a multiple of ``V L``; a work item is a run of
   ``FORWARD_RUN`` tiles of a sample and group. For each block of ``I``
   output channels and each tile, ``simd.channel_row_sums`` holds the ``I x
   V`` vectors of sums in registers over all the taps (each step: ``V``
   vector loads from the planes, ``I`` weights broadcast, ``I V`` FMAs) and
   stores them straight into ``y`` (partial vectors masked);
3. weight gradient: a work item is a chunk of at most ``CHUNK_OUTPUTS``
   outputs (rows of a plane, or several small planes) of one group; for each
   block of ``I`` output channels and ``J`` taps, ``simd.outer_row_sums`` holds the ``I x J`` vectors of
   ``grad_y`` row times plane row products in registers over the chunk
   (``I + J`` loads, ``I J`` FMAs a step), then their lanes are added into
   the thread's float64 partial of ``grad_w``; partials are added in thread
   order. A chunk's ``grad_y`` rows and plane rows stay in L2 while every
   block of channels and taps passes over them.
4. input gradient: at stride 1 the forward above, run on the correlation of
   ``grad_y`` with the kernel turned 180 degrees
   (``common.forward_on_correlation``), which is a narrow layer's forward
   again where a group has few output channels (where its planes fit the
   workspace limit); at other strides im2col's (a stem's input gradient,
   where a network asks for one, sums over ``K x taps`` products per input,
   a long reduction that BLAS runs well).

``(I, V)`` and ``(I, J)`` are ``simd.ROW_TILE``, sized to the host's vector
registers. Padding is the planes' zeros, multiplied as the reference
multiplies them, and a row's last vector never reads or writes past the
row, so NaN and Inf land as in numbaconv.reference, except in the stride-1
input gradient, where the weights also meet the zeros bordering ``grad_y``
(``INEXACT_NONFINITE``).

FLOPs: ``2 N K (C/g) prod(out) prod(kernel)`` per pass, plus the clamped
channels and taps of a group's last blocks. Memory traffic: the input read
once and its phase planes (about the input's size) written once and read
from cache per block of channels; ``y`` written once; the weight gradient
reads ``grad_y`` once from memory and from L2 once per block of taps.
Workspace: the phase planes; the forward's packed weights; the weight
gradient's float64 partial of ``grad_w`` per thread.
Speed: ``python bench/stems.py`` (docs/decisions.md, PP1, PP2): on stems the weight gradient at
90-160 GFLOP/s on two AVX-512 cores (im2col's 40-120), the forward at 120-200 up to a
reduction of 147; on layers of many input channels it loses to the GEMM algorithms.
"""
import functools
import math

import numpy as np
from numba import njit

from . import im2col, workspace
from .common import forward_on_correlation, input_correlation
from .simd import ROW_TILE, channel_row_sums, outer_row_sums, vector_lanes
from .threads import add_partials, most_threads, on_threads, scratch, share, thread_count

# FLOPs of one uncut kernel call: a quarter second at 20 GFLOP/s (numbaconv.slices).
SLICE_FLOPS = int(5e9)
# The stride-1 input gradient multiplies the weights with the zeros bordering grad_y, where the
# reference adds only the products of real outputs (Inf * 0 = NaN).
INEXACT_NONFINITE = {"input": "weight"}
# Outputs of one weight-gradient chunk: each lane of a float32 sum adds at most CHUNK_OUTPUTS /
# vector_lanes products before the sums go to float64, and a chunk's rows of grad_y and the planes
# stay in L2 while every block of channels and taps runs over them.
CHUNK_OUTPUTS = 2048
# Tiles of output vectors a forward item runs every block of channels over: their inputs stay in L1.
FORWARD_RUN = 8
# Elements from which the threads copy the input into phase planes and pack the weights; below it
# NumPy's copies are as fast or faster, and a small problem's first call in a process loads two
# kernels less (docs/decisions.md, T6).
THREADED_COPY_MIN = 1 << 11


def supports(spec):
    """polyphase runs every problem whose phase planes and partials fit the workspace limit."""
    return workspace.over_limit(_scratch_bytes(spec, 8, most_threads()))


@functools.lru_cache(maxsize=64)
def _layout(spec):
    """``(plane, taps, sources)`` of ``spec``'s phase planes: ``plane`` the extents ``(Ld, Lh,
    Lw)`` of one phase plane, ``taps`` the int64 offset of each tap ``(c, td, th, tw)`` of a group
    (weight order) from its group's first plane at output ``(0, 0, 0)``, ``sources`` per dim the
    int64 table ``[residue, m]`` of the input index phase plane ``m`` holds (-1: padding).
    Remembered: a training loop asks every step."""
    extents, residues, shifts, sources = [], [], [], []
    for size, out, kernel, stride, dilation, pad_lo in zip(spec.in_size, spec.out_size, spec.kernel_size,
                                                          spec.stride, spec.dilation, spec.pad_lo):
        reach = [t * dilation - pad_lo for t in range(kernel)]
        lowest = min(r // stride for r in reach)
        extent = out + max(r // stride for r in reach) - lowest
        used = sorted({r % stride for r in reach})
        index = {r: i for i, r in enumerate(used)}
        residues.append([index[r % stride] for r in reach])
        shifts.append([r // stride - lowest for r in reach])
        inputs = stride * (np.arange(extent) + lowest)[None, :] + np.array(used)[:, None]
        sources.append(np.where((inputs >= 0) & (inputs < size), inputs, -1).astype(np.int64))
        extents.append(extent)
    plane = math.prod(extents)
    counts = [len(s) for s in sources]
    phases = math.prod(counts)
    taps = np.empty((spec.group_in_channels, *spec.kernel_size), np.int64)
    for c, td, th, tw in np.ndindex(taps.shape):
        phase = (residues[0][td] * counts[1] + residues[1][th]) * counts[2] + residues[2][tw]
        position = (shifts[0][td] * extents[1] + shifts[1][th]) * extents[2] + shifts[2][tw]
        taps[c, td, th, tw] = (c * phases + phase) * plane + position
    return tuple(extents), taps.reshape(-1), tuple(sources)


def _phase_elements(spec):
    plane, _, sources = _layout(spec)
    return spec.batch * spec.in_channels * math.prod(len(s) for s in sources) * math.prod(plane)


def _scratch_bytes(spec, itemsize, threads):
    """The phase planes, the packed weights (the forward) or float64 partials (the weight gradient)."""
    taps = spec.group_in_channels * math.prod(spec.kernel_size)
    packed = spec.groups * -(-spec.group_out_channels // ROW_TILE[0]) * ROW_TILE[0] * taps * itemsize
    partials = threads * spec.out_channels * taps * 8
    return _phase_elements(spec) * itemsize + max(packed, partials)


@njit(cache=True)
def _to_phases(thread, threads, x, source_d, source_h, source_w, phases):
    """``phases`` (N*C, Pd, Ph, Pw, Ld, Lh, Lw): plane ``(rd, rh, rw)`` of input plane ``(n, c)`` at
    ``(md, mh, mw)`` is ``x`` at ``(source_d[rd, md], source_h[rh, mh], source_w[rw, mw])``, zero
    where one is -1. The threads take consecutive shares of the input planes."""
    flat = x.reshape(-1, x.shape[2], x.shape[3], x.shape[4])
    first, stop = share(flat.shape[0], thread, threads)
    for plane in range(first, stop):
        for rd in range(source_d.shape[0]):
            for rh in range(source_h.shape[0]):
                for rw in range(source_w.shape[0]):
                    for md in range(source_d.shape[1]):
                        for mh in range(source_h.shape[1]):
                            out = phases[plane, rd, rh, rw, md, mh]
                            d, h = source_d[rd, md], source_h[rh, mh]
                            if d < 0 or h < 0:
                                out[:] = 0
                                continue
                            row = flat[plane, d, h]
                            for mw in range(source_w.shape[1]):
                                w = source_w[rw, mw]
                                out[mw] = row[w] if w >= 0 else 0


def _phase_planes(spec, x):
    """``(phases, group_planes)``: ``x``'s phase planes, flat in scratch, and the elements of one
    sample's group of them; by NumPy below ``THREADED_COPY_MIN`` inputs, else by the threads."""
    plane, _, sources = _layout(spec)
    shape = (spec.batch * spec.in_channels, *(len(s) for s in sources), *plane)
    phases = workspace.borrow("polyphase_planes", math.prod(shape), x.dtype).reshape(shape)
    if x.size < THREADED_COPY_MIN:   # NumPy's gather, with a zero past each axis for the padding (-1)
        bordered = np.zeros((shape[0], *(n + 1 for n in x.shape[2:])), x.dtype)
        bordered[:, :-1, :-1, :-1] = x.reshape(shape[0], *x.shape[2:])
        depth, height, width = sources
        phases[...] = bordered[:, depth[:, None, None, :, None, None], height[None, :, None, None, :, None],
                               width[None, None, :, None, None, :]]
    else:
        on_threads(_to_phases, thread_count(), x, *sources, phases)
    return phases.reshape(-1), phases.size // (spec.batch * spec.groups)


@functools.lru_cache(maxsize=64)
def _output_vectors(spec, lanes):
    """int64 ``(vectors, 3)``, flat: each vector of ``lanes`` outputs of a sample's output plane,
    row by row: its first output's offset in the plane, its first input's offset in a phase
    plane, how many of its lanes are outputs; filled up to a multiple of ``ROW_TILE[1]`` vectors
    with empty ones."""
    (out_d, out_h, out_w), (_, plane_h, plane_w) = spec.out_size, _layout(spec)[0]
    rows = [(od * out_h * out_w + oh * out_w + ow, (od * plane_h + oh) * plane_w + ow, min(lanes, out_w - ow))
            for od in range(out_d) for oh in range(out_h) for ow in range(0, out_w, lanes)]
    rows += [(0, 0, 0)] * (-len(rows) % ROW_TILE[1])
    return np.array(rows, np.int64).reshape(-1)


@njit(cache=True)
def _forward_vectors(thread, threads, phases, group_planes, packed, taps, vectors, y, offset_rows):
    """``y`` (N, K, OD, OH, OW): the threads take consecutive shares of the items ``(n, g, run of
    FORWARD_RUN tiles of output vectors)``, each running every block of its group's output
    channels over its tiles; ``packed`` (groups, blocks, taps, I) holds each block's weights tap
    by tap (a group's last block repeats its last channel), ``group_planes`` the elements of a
    group's phase planes, ``vectors`` :func:`_output_vectors`."""
    batch, out_channels = y.shape[0], y.shape[1]
    plane = y.shape[2] * y.shape[3] * y.shape[4]
    groups, blocks, tap_count, rows = packed.shape
    group_out, tiles = out_channels // groups, vectors.shape[0] // (3 * ROW_TILE[1])
    runs = -(-tiles // FORWARD_RUN)
    flat, weights, offsets = y.reshape(-1), packed.reshape(-1), offset_rows[thread]
    first, stop = share(batch * groups * runs, thread, threads)
    for item in range(first, stop):
        run, g, n = item % runs, item // runs % groups, item // (runs * groups)
        source = (n * groups + g) * group_planes
        for block in range(blocks):
            for i in range(rows):
                offsets[i] = (n * out_channels + g * group_out + min(block * rows + i, group_out - 1)) * plane
            for tile in range(run * FORWARD_RUN, min(tiles, (run + 1) * FORWARD_RUN)):
                channel_row_sums(flat, offsets, vectors, tile * ROW_TILE[1], phases, source, taps, weights,
                                 (g * blocks + block) * tap_count * rows, tap_count)


@njit(cache=True)
def _pack_weights(thread, threads, w, packed):
    """``packed[g, b, t, i] = w[g, min(b I + i, K/g - 1), t]`` for ``w`` (groups, K/g, taps) and
    ``packed`` (groups, blocks, taps, I); items: (group, block)."""
    group_out, taps = w.shape[1], w.shape[2]
    blocks, rows = packed.shape[1], packed.shape[3]
    first, stop = share(w.shape[0] * blocks, thread, threads)
    for item in range(first, stop):
        g, block = item // blocks, item % blocks
        for i in range(rows):
            channel = w[g, min(block * rows + i, group_out - 1)]
            for t in range(taps):
                packed[g, block, t, i] = channel[t]


def _packed_weights(spec, w):
    """``(groups, blocks, taps, I)`` in scratch: each block of ``I`` output channels of a group, tap
    by tap, the group's last block filled up with its last channel; by NumPy below
    ``THREADED_COPY_MIN`` weights, else by the threads."""
    rows, taps = ROW_TILE[0], spec.group_in_channels * math.prod(spec.kernel_size)
    blocks = -(-spec.group_out_channels // rows)
    packed = workspace.borrow("polyphase_weights", spec.groups * blocks * taps * rows, w.dtype)
    packed = packed.reshape(spec.groups, blocks, taps, rows)
    grouped = w.reshape(spec.groups, spec.group_out_channels, taps)
    if w.size < THREADED_COPY_MIN:
        channels = np.minimum(np.arange(blocks * rows), spec.group_out_channels - 1)
        packed[...] = grouped[:, channels].reshape(spec.groups, blocks, rows, taps).transpose(0, 1, 3, 2)
    else:
        on_threads(_pack_weights, thread_count(), grouped, packed)
    return packed


def forward(spec, x, w, out):
    taps = _layout(spec)[1]
    phases, group_planes = _phase_planes(spec, x)
    threads = thread_count()
    offsets = workspace.per_thread("polyphase_offsets", threads, ROW_TILE[0], np.int64)
    on_threads(_forward_vectors, threads, phases, group_planes, _packed_weights(spec, w), taps,
               _output_vectors(spec, vector_lanes(x.itemsize)), out, offsets)


@functools.lru_cache(maxsize=64)
def _chunks(spec, threads):
    """int64 ``(chunks, 6)``: ``(n, od, first row, rows, first column, planes)`` of each chunk of at
    most ``CHUNK_OUTPUTS`` outputs: pieces of one row where a row is longer, else whole rows of
    one plane, else several whole planes (consecutive depth slices of a sample in 3-d, else
    consecutive samples, :func:`_plane_steps`), as many as leave two work items (a chunk of one
    group) a thread."""
    batch, (out_d, out_h, out_w) = spec.batch, spec.out_size
    if out_h * out_w <= CHUNK_OUTPUTS // 2:
        together = max(1, min(CHUNK_OUTPUTS // (out_h * out_w), batch * out_d * spec.groups // (2 * threads)))
        if out_d > 1:
            rows = [(n, od, 0, out_h, 0, min(together, out_d - od)) for n in range(batch)
                    for od in range(0, out_d, together)]
        else:
            rows = [(n, 0, 0, out_h, 0, min(together, batch - n)) for n in range(0, batch, together)]
        return np.array(rows, np.int64).reshape(-1, 6)
    columns = min(out_w, CHUNK_OUTPUTS)
    together = max(1, CHUNK_OUTPUTS // out_w)
    return np.array([(n, od, oh, min(together, out_h - oh), ow, 1) for n in range(batch) for od in range(out_d)
                     for oh in range(0, out_h, together) for ow in range(0, out_w, columns)], np.int64).reshape(-1, 6)


def _plane_steps(spec, group_planes):
    """``(grad_y step, phase planes step)`` from one whole plane of a chunk to the next
    (:func:`_chunks`): the next depth slice in 3-d, else the next sample."""
    (out_d, out_h, out_w), (_, plane_h, plane_w) = spec.out_size, _layout(spec)[0]
    if out_d > 1:
        return out_h * out_w, plane_h * plane_w
    return spec.out_channels * out_h * out_w, spec.groups * group_planes


@njit(cache=True, fastmath={"reassoc"})
def _weight_chunks(thread, threads, phases, group_planes, plane_rows, plane_steps, grad_y, taps, chunks, columns,
                   partials, sums, lanes, offset_rows):
    """``partials[thread]`` (K, taps) float64: the sums over ``thread``'s consecutive share of
    the work items (each chunk of ``chunks`` for each group, chunk-major) of ``grad_y`` rows times
    phase-plane rows, for every output channel and tap of the item's group; ``columns`` the most
    outputs of a chunk's row, ``plane_steps`` those of :func:`_plane_steps`. A tile's lanes are
    summed reassociated (a vector reduction, not a chain of dependent adds), the same way every
    call."""
    batch, out_channels, out_d, out_h, out_w = grad_y.shape
    tap_count, groups = taps.shape[0], phases.size // group_planes // batch
    group_out = out_channels // groups
    left, right = ROW_TILE
    flat, partial, vectors = grad_y.reshape(-1), partials[thread], scratch(sums, thread, (left, right, lanes))
    a_offsets, b_offsets = offset_rows[thread, :left], offset_rows[thread, left:]
    first, stop = share(chunks.shape[0] * groups, thread, threads)
    for item in range(first, stop):
        chunk, g = item // groups, item % groups
        n, od, oh, rows, ow, planes = chunks[chunk]
        loops = (planes, plane_steps[0], plane_steps[1], rows, out_w, plane_rows[1])
        length = min(columns, out_w - ow)
        source = (n * groups + g) * group_planes + od * plane_rows[0] + oh * plane_rows[1] + ow
        for k_block in range(0, group_out, left):
            for i in range(left):
                k = g * group_out + min(k_block + i, group_out - 1)
                a_offsets[i] = (((n * out_channels + k) * out_d + od) * out_h + oh) * out_w + ow
            for t_block in range(0, tap_count, right):
                for j in range(right):
                    b_offsets[j] = source + taps[min(t_block + j, tap_count - 1)]
                outer_row_sums(vectors.reshape(-1), flat, a_offsets, phases, b_offsets, loops, length)
                for i in range(min(left, group_out - k_block)):
                    for j in range(min(right, tap_count - t_block)):
                        total = 0.0
                        for lane in range(lanes):
                            total += vectors[i, j, lane]
                        partial[g * group_out + k_block + i, t_block + j] += total


def backward_weight(spec, x, grad_y, grad_w):
    plane, taps, _ = _layout(spec)
    threads = thread_count()
    phases, group_planes = _phase_planes(spec, x)
    left, right = ROW_TILE
    partials = workspace.per_thread("polyphase_partials", threads, spec.out_channels * taps.size, np.float64)
    partials[...] = 0
    sums = workspace.per_thread("polyphase_sums", threads, left * right * vector_lanes(x.itemsize), x.dtype)
    offsets = workspace.per_thread("polyphase_offsets", threads, left + right, np.int64)
    on_threads(_weight_chunks, threads, phases, group_planes, np.array([plane[1] * plane[2], plane[2]], np.int64),
               np.array(_plane_steps(spec, group_planes), np.int64), grad_y, taps, _chunks(spec, threads),
               min(spec.out_size[2], CHUNK_OUTPUTS), partials.reshape(threads, spec.out_channels, taps.size),
               sums, vector_lanes(x.itemsize), offsets)
    add_partials(partials.reshape(threads, spec.out_channels, taps.size), grad_w.reshape(spec.out_channels, -1))


def backward_input(spec, grad_y, w, grad_x):
    correlation = input_correlation(spec)
    if correlation is None or supports(correlation) is not None:
        im2col.backward_input(spec, grad_y, w, grad_x)
        return
    forward_on_correlation(forward, correlation, grad_y, w, spec.groups, grad_x)
