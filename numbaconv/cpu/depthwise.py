"""Depthwise 3x3 convolution at stride 1 with "same" padding, straight from the input planes.

For problems where every output channel reads one input channel (``C / g =
1``), a 3x3 kernel (1x3x3 in 3-d), stride 1 and padding equal to the
dilation on both sides of H and W (so ``OH = H``, ``OW = W``: MobileNet's and
EfficientNet's depthwise layers). Planar (cpu/planar.py) copies each plane
into a zero-bordered grid and the wide result back out; on these problems
those two copies took as long as the taps, and its loops ran short. Here
output ``q = oh * W + ow`` of a plane reads tap ``(th, tw)`` at ``q + (th -
1) dh W + (tw - 1) dw`` of the unpadded input plane itself, in the flat
input array, and each output plane is one loop over its ``H W`` outputs,
written into ``y`` in place. Taps that fall outside the plane read the
neighbouring rows or planes instead; a mask per output (four bits: the tap
row above, the row below, the left column, the right column lie inside the
plane) drops their products by a select, not by a multiply with 0, so a NaN
or Inf in the neighbours never leaks in (and, as in padding that is skipped,
an infinite weight does not turn the border NaN). The first and last planes
of the array, whose neighbours' reads would fall outside it, are copied into
a per-thread plane with margins first.

Each vector of outputs costs nine loads of the input, one of the masks, eight
selects and one store. The input gradient is the same correlation of
``grad_y`` with the kernel rotated by 180 degrees (the padding is
symmetric); with a channel multiplier ``M = K / C`` each input channel adds
up its ``M`` output channels. The weight gradient is planar's (its dot
products already run whole planes).

FLOPs: ``2 * 9 * N K H W`` per pass (D times more in 3-d; the masked
products are computed and dropped). Memory traffic: the input (``grad_y``
for the input gradient) and the output once each; a plane's three tap rows
stay in L1 between reads. Workspace: one plane with margins per thread and
the input gradient's rotated weights (``9 K``), within what planar's weight
gradient needs (``supports`` asks planar).
Measured (float32, 2 cores, best of 200, interleaved, ms, forward, this /
the version with rows cut into bands and edge outputs summed one by one /
planar): 256ch 28x28 N=8 0.33 / 0.58 / 0.55; 64ch 56x56 N=8 0.37 / 0.47;
512ch 14x14 N=8 0.26 / 0.77; 1024ch 7x7 N=8 0.28 / 1.32 (PyTorch 0.21:
at 49 outputs a plane the loop runs mostly in its scalar remainder).
"""
import functools

import numba
import numpy as np
from numba import njit, prange

from . import planar, workspace
from .common import nine, nine_views

TAPS = 9
TOP, BOTTOM, LEFT, RIGHT = 1, 2, 4, 8   # the mask bits: which of an output's taps lie in its plane


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
    return planar.supports(spec)   # its weight gradient


@functools.lru_cache(maxsize=256)
def _plan(height, width, row_step, column_step):
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


@njit(nogil=True, cache=True, fastmath={"contract"})
def _plane(target, flat, at, weights, shifts, masks, accumulate):
    """``target[q] (+)= sum over taps t inside the plane of weights[t] * flat[at + q + shifts[t]]``
    for the plane's outputs ``q``, the taps outside it dropped by ``masks``. The views are sliced,
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


@njit(parallel=True, cache=True)
def _depthwise_kernel(source, weights, shifts, masks, margin, padded, out):
    """``out[n, o, d] = sum over j of the "same" 3x3 correlation of source[n, s(o, j), d] with
    weights[o, j]``, ``s(o, j) = (o // (O / groups)) * J + j``: ``source`` (N, S, D, H, W)
    contiguous, ``weights`` (O, J, 9), ``out`` (N, O, D, H, W), groups ``S / J``; ``padded`` one
    plane with ``margin`` elements either side per thread."""
    batch, source_channels, depth = source.shape[0], source.shape[1], source.shape[2]
    size = source.shape[3] * source.shape[4]
    out_channels, per_out = weights.shape[0], weights.shape[1]
    group_out = out_channels // (source_channels // per_out)
    flat = source.reshape(-1)
    for item in prange(batch * out_channels * depth):
        n, o, d = item // (out_channels * depth), item // depth % out_channels, item % depth
        target = out[n, o, d].reshape(-1)
        for j in range(per_out):
            at = ((n * source_channels + (o // group_out) * per_out + j) * depth + d) * size
            if margin <= at and at + size + margin <= flat.size:
                _plane(target, flat, at - margin, weights[o, j], shifts, masks, j > 0)
            else:   # the taps would reach outside the array
                own = padded[numba.get_thread_id()]
                own[margin:margin + size] = flat[at:at + size]
                _plane(target, own, 0, weights[o, j], shifts, masks, j > 0)


def _correlate(spec, source, weights, out):
    height, width = spec.in_size[1:]
    shifts, masks, margin = _plan(height, width, spec.dilation[1], spec.dilation[2])
    threads = numba.config.NUMBA_NUM_THREADS
    padded = workspace.borrow("depthwise_padded", threads * (height * width + 2 * margin), source.dtype)
    padded[:] = 0
    _depthwise_kernel(source, weights, shifts + margin, masks, margin, padded.reshape(threads, -1), out)


def forward(spec, x, w, out):
    _correlate(spec, x, w.reshape(spec.out_channels, 1, TAPS), out)


def backward_input(spec, grad_y, w, grad_x):
    # weights[c, j, t] = w[c*M + j, 0, 8 - t]: the kernel rotated, the channel's M outputs summed
    shape = (spec.in_channels, spec.group_out_channels, TAPS)
    rotated = workspace.borrow("depthwise_weights", w.size, w.dtype).reshape(shape)
    rotated[...] = w.reshape(shape)[..., ::-1]
    _correlate(spec, grad_y, rotated, grad_x)


backward_weight = planar.backward_weight
