"""Depthwise 3x3 convolution at stride 1 with "same" padding, straight from the input planes.

For problems where every output channel reads one input channel (``C / g =
1``), a 3x3 kernel (1x3x3 in 3-d), stride 1 and padding equal to the
dilation on both sides of H and W (so ``OH = H``, ``OW = W``: MobileNet's and
EfficientNet's depthwise layers). Planar (cpu/planar.py) copies each plane
into a zero-bordered grid and the wide result back out; on these problems
those two copies take as long as the taps, and its loops run short. Here
output ``q = oh * W + ow`` of a plane reads tap ``(th, tw)`` at ``q + (th -
1) dh W + (tw - 1) dw`` of the unpadded input plane itself, in the flat
input array, and each output plane is one loop over its ``H W`` outputs,
written into ``y`` in place. Taps that fall outside the plane read the
neighbouring rows or planes instead; a mask per output (four bits: the tap
row above, the row below, the left column, the right column lie inside the
plane) drops what they read by selects, never by a multiply with 0, so a NaN
or Inf in the neighbours never leaks in. The first and last planes of the
array, whose neighbours' reads would fall outside it, are copied into a
per-thread plane with margins first.

The forward pass drops the products of the taps outside the plane (as
PyTorch's float32 depthwise kernels skip the padding: an infinite weight
does not turn the borders NaN); each vector of outputs costs nine loads of
the input, one of the masks, eight selects and one store. The input
gradient is the same correlation of ``grad_y`` with the kernel rotated by
180 degrees (the padding is symmetric); with a channel multiplier ``M = K /
C`` each input channel adds up its ``M`` output channels. The weight
gradient sums nine dot products a plane, ``grad_y`` against the input
offset by each tap, the inputs outside the plane taken as the zeros of the
padding (as the reference and planar do: a NaN in ``grad_y`` at a border
reaches the taps that read the padding there); each output channel is one
thread's, its sums float64 across planes.

FLOPs: ``2 * 9 * N K H W`` per pass (D times more in 3-d; the masked
products are computed and dropped). Memory traffic: each pass reads its two
operands and writes its result once (``x`` and ``y``; ``grad_y`` and
``grad_x``; ``x`` and ``grad_y``, with 9 K sums out); a plane's three tap
rows stay in L1 between reads.
Workspace: one plane with margins per thread and the input gradient's
rotated weights (``9 K``).
Speed: ``python bench/depthwise_kernels.py --kernels 3`` against planar, blocked
and PyTorch: on AVX-512 hosts the fastest in every pass from 14x14 planes up
(docs/decisions.md, D2); on small planes (7x7) the loop runs mostly in its
scalar remainder. docs/decisions.md (DW1) has the measurements and the
variants that lost (bands with the edges summed apart, selecting each tap's
input, a weight gradient one tap row a pass).
"""
import functools

import numpy as np
from numba import njit

from . import workspace
from .common import nine, nine_views, rotated_weights
from .threads import most_threads, on_threads, share, thread_count

# FLOPs of one uncut kernel call: a quarter second at 5 GFLOP/s, this algorithm's slowest rate on
# dense layers; longer passes run in slices (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(1.25e9)
# Where NaN and Inf land differently from the reference (numbaconv.functional): taps in the
# padding are dropped by selects, never multiplied: a non-finite weight does not meet the zeros
# there as it does in the reference (Inf * 0 = NaN).
INEXACT_NONFINITE = {"forward": "weight"}

TAPS = 9
TOP, BOTTOM, LEFT, RIGHT = 1, 2, 4, 8   # the mask bits: which of an output's taps lie in its plane
TOP_LEFT, TOP_RIGHT, BOTTOM_LEFT, BOTTOM_RIGHT = TOP | LEFT, TOP | RIGHT, BOTTOM | LEFT, BOTTOM | RIGHT


def supports(spec):
    if spec.group_in_channels != 1:
        return f"needs one input channel per group (depthwise), got {spec.group_in_channels}"
    if spec.kernel_size != (1, 3, 3):
        return f"needs a 3x3 (1x3x3) kernel, got {spec.kernel_size}"
    if spec.stride != (1, 1, 1):
        return f"needs stride 1, got {spec.stride}"
    same = (0,) + spec.dilation[1:]
    if spec.pad_lo != same or spec.pad_hi != same:
        return (f"needs padding equal to the dilation on both sides of H and W, none in D "
                f"(output size = input size), got {tuple(zip(spec.pad_lo, spec.pad_hi))}")
    return workspace.over_limit((most_threads() * _padded_plane_size(spec) + TAPS * spec.out_channels) * 8)


def _padded_plane_size(spec):
    """Elements of one thread's plane with margins: the plane and, either side, how far the taps
    reach (:func:`_plane_taps`' margin)."""
    height, width = spec.in_size[1:]
    return height * width + 2 * (spec.dilation[1] * width + spec.dilation[2])


@functools.lru_cache(maxsize=256)
def _plane_taps(height, width, row_step, column_step):
    """``(shifts, masks, margin)`` for planes of ``height x width`` and dilation ``(row_step,
    column_step)``: the taps' shifts from their output in the flat plane, each output's mask
    bits (TOP, BOTTOM, LEFT, RIGHT), and how far the taps reach before or after a plane.
    Remembered: a training loop asks every step."""
    out_h, out_w = np.divmod(np.arange(height * width), width)
    masks = ((out_h >= row_step) * TOP | (out_h + row_step < height) * BOTTOM
             | (out_w >= column_step) * LEFT | (out_w < width - column_step) * RIGHT).astype(np.uint8)
    shifts = np.array([(th - 1) * row_step * width + (tw - 1) * column_step
                       for th in range(3) for tw in range(3)], np.int64)
    return shifts, masks, row_step * width + column_step


@njit(inline="always")
def _inside(mask, views, q, zero):
    """Tap ``t``'s input of output ``q``, ``views[t][q]``, or ``zero`` where the tap lies outside the
    plane by ``mask``: the input the padding gives it (a select, so whatever the neighbouring
    rows or planes hold never reaches a product)."""
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = views
    # bit tests, not `and`: a branch in the loop would keep it from vectorising
    return (a0[q] if mask & TOP_LEFT == TOP_LEFT else zero, a1[q] if mask & TOP else zero,
            a2[q] if mask & TOP_RIGHT == TOP_RIGHT else zero, a3[q] if mask & LEFT else zero, a4[q],
            a5[q] if mask & RIGHT else zero, a6[q] if mask & BOTTOM_LEFT == BOTTOM_LEFT else zero,
            a7[q] if mask & BOTTOM else zero, a8[q] if mask & BOTTOM_RIGHT == BOTTOM_RIGHT else zero)


@njit(inline="always")
def _plane_source(flat, at, size, margin, own):
    """``(array, start)``: where the taps of the plane ``flat[at:at + size]`` read, ``array[start +
    margin + q + shift]``; the plane itself, or where its taps would reach outside ``flat``, a
    copy in the thread's plane with margins ``own``."""
    if margin <= at and at + size + margin <= flat.size:
        return flat, at - margin
    own[margin:margin + size] = flat[at:at + size]
    return own, 0


@njit(nogil=True, cache=True, fastmath={"contract"})
def _plane(target, flat, at, weights, shifts, masks, accumulate):
    """``target[q] (+)= sum over taps t inside the plane of weights[t] * flat[at + q + shifts[t]]``
    for the plane's outputs ``q``: the products of the taps outside it are dropped by ``masks``
    (selects on sums of products, a row or column at a time: 8 a vector of outputs, 1.5x faster
    than selecting each tap's input; docs/decisions.md, DW1). The views are sliced,
    so the loop indexes them with a counter Numba knows is not negative (no wraparound checks,
    it vectorises)."""
    span = target.size
    a0, a1, a2, a3, a4, a5, a6, a7, a8 = nine_views(flat[at:], shifts, 0, span)
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = nine(weights, 0)
    zero = target.dtype.type(0)
    for q in range(span):
        mask = masks[q]
        top, bottom = (mask & TOP) != 0, (mask & BOTTOM) != 0
        left = w3 * a3[q] + (w0 * a0[q] if top else zero) + (w6 * a6[q] if bottom else zero)
        middle = w4 * a4[q] + (w1 * a1[q] if top else zero) + (w7 * a7[q] if bottom else zero)
        right = w5 * a5[q] + (w2 * a2[q] if top else zero) + (w8 * a8[q] if bottom else zero)
        total = middle + (left if mask & LEFT else zero) + (right if mask & RIGHT else zero)
        target[q] = target[q] + total if accumulate else total


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _plane_dots(grad, flat, at, shifts, masks, sums):
    """``sums[t] += sum over the plane's outputs q of grad[q] * flat[at + q + shifts[t]]``, the
    inputs outside the plane taken as zero (:func:`_inside`); per-plane sums in the array dtype
    (they vectorise), added into float64 ``sums``."""
    span = grad.size
    views = nine_views(flat[at:], shifts, 0, span)
    zero = grad.dtype.type(0)
    d0 = d1 = d2 = d3 = d4 = d5 = d6 = d7 = d8 = zero
    for q in range(span):
        v0, v1, v2, v3, v4, v5, v6, v7, v8 = _inside(masks[q], views, q, zero)
        g = grad[q]
        d0 += g * v0
        d1 += g * v1
        d2 += g * v2
        d3 += g * v3
        d4 += g * v4
        d5 += g * v5
        d6 += g * v6
        d7 += g * v7
        d8 += g * v8
    for t, dot in enumerate((d0, d1, d2, d3, d4, d5, d6, d7, d8)):
        sums[t] += dot


@njit(cache=True)
def _depthwise_kernel(thread, threads, source, weights, shifts, masks, margin, padded, out):
    """``out[n, o, d] = sum over j of the "same" 3x3 correlation of source[n, s(o, j), d] with
    weights[o, j]``, ``s(o, j) = (o // (O / groups)) * J + j``: ``source`` (N, S, D, H, W)
    contiguous, ``weights`` (O, J, 9), ``out`` (N, O, D, H, W), groups ``S / J``; the threads
    take consecutive shares of the output planes. Scratch rows per thread: ``padded``, one plane
    with ``margin`` elements either side."""
    batch, source_channels, depth = source.shape[0], source.shape[1], source.shape[2]
    size = source.shape[3] * source.shape[4]
    out_channels, per_out = weights.shape[0], weights.shape[1]
    group_out = out_channels // (source_channels // per_out)
    flat = source.reshape(-1)
    first, stop = share(batch * out_channels * depth, thread, threads)
    for item in range(first, stop):
        n, o, d = item // (out_channels * depth), item // depth % out_channels, item % depth
        target = out[n, o, d].reshape(-1)
        for j in range(per_out):
            at = ((n * source_channels + (o // group_out) * per_out + j) * depth + d) * size
            array, start = _plane_source(flat, at, size, margin, padded[thread])
            _plane(target, array, start, weights[o, j], shifts, masks, j > 0)


@njit(cache=True)
def _weight_kernel(thread, threads, x, grad_y, shifts, masks, margin, padded, grad_w):
    """``grad_w[k, t] = sum over n, d and outputs q of grad_y[n, k, d, q] * x[n, k // M, d]`` at
    ``q`` offset by tap t (zero outside the plane): ``x`` (N, C, D, H, W) contiguous, ``grad_y``
    (N, K, D, H, W), ``grad_w`` (K, 9), ``M = K / C``. The threads take consecutive shares of
    the output channels, each channel's sums float64. Scratch rows per thread: ``padded``."""
    batch, in_channels, depth = x.shape[0], x.shape[1], x.shape[2]
    size = x.shape[3] * x.shape[4]
    out_channels = grad_y.shape[1]
    multiplier = out_channels // in_channels
    flat = x.reshape(-1)
    first, stop = share(out_channels, thread, threads)
    for k in range(first, stop):
        sums = np.zeros(TAPS)
        for n in range(batch):
            for d in range(depth):
                at = ((n * in_channels + k // multiplier) * depth + d) * size
                array, start = _plane_source(flat, at, size, margin, padded[thread])
                _plane_dots(grad_y[n, k, d].reshape(-1), array, start, shifts, masks, sums)
        for t in range(TAPS):
            grad_w[k, t] = sums[t]


def _plane_arguments(spec, dtype):
    """``(shifts, masks, margin, padded)`` for a pass of ``spec``: :func:`_plane_taps`', the shifts
    counted from ``margin`` before a plane's start, and the threads' planes with margins."""
    height, width = spec.in_size[1:]
    shifts, masks, margin = _plane_taps(height, width, spec.dilation[1], spec.dilation[2])
    padded = workspace.per_thread("depthwise_padded", thread_count(), _padded_plane_size(spec), dtype)
    padded[...] = 0   # the margins' reads are dropped by the masks; zeros keep them ordinary numbers
    return shifts + margin, masks, margin, padded


def _correlate(spec, source, weights, out):
    on_threads(_depthwise_kernel, thread_count(), source, weights, *_plane_arguments(spec, source.dtype), out)


def forward(spec, x, w, out):
    _correlate(spec, x, w.reshape(spec.out_channels, 1, TAPS), out)


def backward_input(spec, grad_y, w, grad_x):
    # rotated[c, j, t] = w[c*M + j, 0, 8 - t]: the kernel rotated, the channel's M outputs summed
    _correlate(spec, grad_y, rotated_weights(w, spec.groups), grad_x)


def backward_weight(spec, x, grad_y, grad_w):
    on_threads(_weight_kernel, thread_count(), x, grad_y, *_plane_arguments(spec, x.dtype),
               grad_w.reshape(spec.out_channels, TAPS))
