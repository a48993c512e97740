"""Index helpers shared by the CPU kernels, and the input gradient's rotated weights.

Along one spatial dim, output position ``o`` and kernel tap ``t`` read input
position ``i = o * stride - pad_lo + t * dilation``; taps that land in the
zero padding contribute nothing, so every kernel loops only over the outputs
whose input position is inside ``[0, in_len)``.

At stride 1 on a zero-padded grid, the planar algorithm and im2col's wide
columns number outputs by the flat grid index of their window's corner
(:func:`grid_walk`).

The input gradient of a stride-1 correlation is the correlation of
``grad_y`` with the kernel turned 180 degrees and each group's channel axes
swapped (:func:`rotated_weights`).

Rows move between planes and channels-last layouts by 16 x 16 vector
transposes (:func:`transposed_rows`: Winograd's copies, channels_last's
output panels).
"""
import dataclasses
import functools
import itertools

import numpy as np
from numba import njit

from . import workspace
from .simd import LANES, transpose_lanes
from ..algorithm import read_only


@njit(inline="always", cache=True)
def valid_outputs(tap, in_len, out_len, stride, dilation, pad_lo):
    """The range ``[first, stop)`` of outputs whose input ``o*stride - pad_lo + tap*dilation``
    lies in ``[0, in_len)``; empty when ``stop <= first``. ``0 <= first <= out_len``."""
    offset = tap * dilation - pad_lo
    # smallest o with o*stride + offset >= 0, and one past the largest with < in_len
    first = min(max(0, (-offset + stride - 1) // stride), out_len)
    stop = min(out_len, (in_len - 1 - offset) // stride + 1)
    return first, stop


def grid_walk(grid, out_size, kernel_size, dilation):
    """``(span, shifts)`` of a stride-1 correlation over a zero-padded grid ``(D, H, W)``, its
    outputs numbered by the flat index ``q = (od * H + oh) * W + ow`` of their window's corner:
    ``span = ((OD - 1) * H + OH - 1) * W + OW`` positions from the first output to the last
    (those with ``ow >= OW`` or ``oh >= OH`` are not outputs), and the shift of each tap
    (row-major) from ``q``, ``(td * dd * H + th * dh) * W + tw * dw``."""
    (out_d, out_h, out_w), (_, height, width) = out_size, grid
    span = ((out_d - 1) * height + out_h - 1) * width + out_w
    shifts = [(td * dilation[0] * height + th * dilation[1]) * width + tw * dilation[2]
              for td, th, tw in itertools.product(*map(range, kernel_size))]
    return span, shifts


def rotated_weights(w, groups):
    """The input gradient's weights, ``out[g*Cg + c, j, t] = w[g*Kg + j, c, T-1-t]`` for ``w`` (K,
    C/g, kernel...) with ``T`` taps: each group's channel axes swapped and its taps in reverse
    order (the kernel turned 180 degrees), as (C, K/g, T) in borrowed scratch (``w.size``
    elements), read-only as every input a kernel takes (numbaconv.algorithm, rule 2), for
    planar, depthwise and channels_last. Winograd gathers the same mapping straight from ``w``
    inside its filter transform (``winograd_tiling.transform_filters``), blocked as it packs a
    block's weights. Memory: ``w`` read once, the copy written once."""
    out_channels, group_in = w.shape[0], w.shape[1]
    group_out, taps = out_channels // groups, w.size // (out_channels * group_in)
    rotated = workspace.borrow("rotated_weights", w.size, w.dtype).reshape(groups, group_in, group_out, taps)
    rotated[...] = w.reshape(groups, group_out, group_in, taps)[..., ::-1].transpose(0, 2, 1, 3)
    return read_only(rotated.reshape(groups * group_in, group_out, taps))


def forward_on_correlation(forward, correlation, grad_y, w, groups, grad_x):
    """The stride-1 input gradient as ``forward(correlation, grad_y, turned weights, grad_x)``, for
    ``correlation`` from :func:`input_correlation` and the weights from :func:`rotated_weights`,
    whose copy the forward's scratch is sized beside (``workspace.held_by_caller``)."""
    rotated = rotated_weights(w, groups)
    with workspace.held_by_caller(rotated.nbytes):
        forward(correlation, grad_y, rotated, grad_x)


@functools.lru_cache(maxsize=256)
def input_correlation(spec):
    """At stride 1, the input gradient as a forward correlation (the spec it runs): of ``grad_y``
    padded by ``dilation (kernel - 1) - padding`` with the kernel turned 180 degrees and each
    group's channel axes swapped (:func:`rotated_weights`), for the algorithms whose forward
    pass runs any padding (blocked, channels_last). None at other strides, or where a padding
    exceeds the kernel's reach. Remembered: a training loop asks every step, and building the
    spec costs a tenth of a small layer's kernel time."""
    reach = [d * (k - 1) for d, k in zip(spec.dilation, spec.kernel_size)]
    pad_lo = tuple(r - p for r, p in zip(reach, spec.pad_lo))
    pad_hi = tuple(r - p for r, p in zip(reach, spec.pad_hi))
    if any(s != 1 for s in spec.stride) or min(pad_lo + pad_hi) < 0:
        return None
    return dataclasses.replace(spec, in_channels=spec.out_channels, out_channels=spec.in_channels,
                               in_size=spec.out_size, pad_lo=pad_lo, pad_hi=pad_hi)


@njit(inline="always", cache=True)
def nine(values, t):
    """``values[t:t + 9]`` as a tuple of scalars (kept in registers)."""
    return (values[t], values[t + 1], values[t + 2], values[t + 3], values[t + 4], values[t + 5],
            values[t + 6], values[t + 7], values[t + 8])


@njit(inline="always", cache=True)
def nine_views(flat, shifts, t, span):
    """The ``span``-long views of ``flat`` at ``shifts[t:t + 9]``: sliced, so the loops index
    them with counters Numba knows are not negative (no wraparound checks, they vectorise)."""
    s0, s1, s2, s3, s4, s5, s6, s7, s8 = nine(shifts, t)
    return (flat[s0:s0 + span], flat[s1:s1 + span], flat[s2:s2 + span], flat[s3:s3 + span],
            flat[s4:s4 + span], flat[s5:s5 + span], flat[s6:s6 + span], flat[s7:s7 + span],
            flat[s8:s8 + span])


# int64 zero and one for the compiled helpers' arguments: a literal 0 or 1 would compile the helper
# once more, for the literal's type
ZERO, ONE = np.int64(0), np.int64(1)


@njit(nogil=True, cache=True)
def transposed_rows(dst, columns, dst_at, dst_step, src, planes, src_at, src_step, q0, q1, channels):
    """``dst[dst_at + columns[q] + c dst_step] = src[src_at + q + c src_step]`` for ``q0 <= q < q1``
    and ``c < channels``, with ``dst_step`` or ``src_step`` 1 (a channels-last row on that side,
    its column ``q`` at ``columns[q]``) and the other side's channel rows ``planes`` apart:
    whole blocks of 16 columns x 16 channels by vector transposes, the rest one by one. An
    unsigned index for the element-wise copies skips Numba's wraparound check. On planes of
    128x128 and up the transposes make Winograd's copies 2-2.5x faster (docs/decisions.md, G6);
    channels_last's forward moves its panels of outputs to the planes with it (CL3)."""
    whole = channels // LANES * LANES
    done = q0
    while whole > 0 and done + LANES <= q1:
        for c0 in range(0, whole, LANES):
            if dst_step == 1:
                transpose_lanes(dst, columns[done:done + LANES], dst_at + c0, src, planes, src_at + done + c0 * src_step)
            else:
                transpose_lanes(dst, planes, dst_at + done + c0 * dst_step, src, columns[done:done + LANES], src_at + c0)
        done += LANES
    for q in range(q0, q1):
        for c in range(whole if q < done else 0, channels):
            if dst_step == 1:
                dst[np.uint64(dst_at + columns[q] + c)] = src[np.uint64(src_at + q + c * src_step)]
            else:
                dst[np.uint64(dst_at + q + c * dst_step)] = src[np.uint64(src_at + columns[q] + c)]
