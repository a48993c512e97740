"""3-d convolution as a sum over its depth taps of 2-d convolutions, each run by the 2-d algorithms.

A kernel of depth ``KD`` is ``KD`` plane kernels ``w[:, :, td]``: output
slice ``od`` is the sum over ``td`` of the 2-d convolution of input slice
``od * stride_d + td * dilation_d`` (of the depth-padded input) with plane
kernel ``td``. Each depth tap is one 2-d problem over all ``N x OD`` output
slices at once (the slices are the batch), so a 3x3x3 layer's taps run on
Winograd F(4x4, 3x3), with 2.25 instead of 9 multiplications per output
and channel in the plane, where the 3-d algorithms have only direct
products. A 1xKxK kernel over several slices (R(2+1)D's spatial
convolutions) is one tap: its slices run as one 2-d batch. The 2-d
algorithm of each tap is the automatic choice for that
2-d problem (``numbaconv.dispatch``), run in slices (numbaconv.slices); one
that would place NaN or Inf otherwise than the reference through an
operand (padding-skipping passes) gives way to the choice among those that
place them as it does, and Winograd's results are checked by the engine
(``INEXACT_NONFINITE``), as for a 2-d call.

- forward: the input copied depth-major, ``(N, D + padding, C, H, W)`` with
  zero slices at both ends; per tap, the slices it reads (a view at depth
  stride 1 and N = 1, else a copy) through the 2-d forward, the taps'
  results added, then moved back to ``(N, K, OD, OH, OW)``;
- input gradient: the output gradient depth-major once; per tap, its 2-d
  input gradient, added into the depth-major, depth-padded input gradient
  at the slices the tap reads; the interior moved back;
- weight gradient: per tap, the 2-d weight gradient of the slices it reads
  against the output gradient, the plane kernel ``grad_w[:, :, td]``.

A problem whose copies would hold more than half the workspace limit runs
as slabs of consecutive output slices (:func:`_slabs`), each the same
passes on the input slices its outputs read, so the copies stay bounded
and the taps' 2-d passes keep the other half: the input gradients of
neighbouring slabs overlap and are added, their weight gradients summed in
float64.

FLOPs: the 3-d problem's ``2 N K (C/g) prod(out) prod(kernel)``, as each
tap's 2-d algorithm counts them (Winograd's: about a quarter of the
multiplications). Memory traffic: the operands moved depth-major and back
once (and per tap, at depth stride > 1 or N > 1, a copy of the slices it
reads), plus the taps' 2-d passes. Workspace: the depth-major copies (input
and output sized), one tap's result, and the 2-d algorithms' own.

Speed: ``numbaconv bench --suite networks --network r3d_18 --algo
depth_taps,im2col`` (docs/decisions.md, DT1).
"""
import dataclasses
import math

import numpy as np

from . import workspace
from .. import slices

# The engine scans the result for NaN and Inf, which a tap's 2-d pass on Winograd may have spread.
INEXACT_NONFINITE = {"forward": "result", "input": "result", "weight": "result"}
# (plane spec, pass name) -> the module that runs a tap's 2-d pass: set by numbaconv.dispatch,
# which holds the rules and registers this module (importing it here would close a circle).
choose_plane_algorithm = None


def supports(spec):
    if spec.kernel_size[0] == 1 and spec.in_size[0] == 1:
        return "needs a 3-d problem: a kernel deeper than one slice, or more than one input slice"
    return workspace.over_limit(2 * _held_bytes(spec, 8, 1))


def _held_bytes(spec, itemsize, count=None):
    """The scratch a pass over ``count`` output slices (default: all) holds while its taps' 2-d
    passes run (which get the rest of the limit): at most the input slices it reads moved
    depth-major, the output gradient moved, and a tap's result or the taps' sum, each at most
    the size of the larger of those input slices and outputs."""
    count = spec.out_size[0] if count is None else count
    reach = (spec.kernel_size[0] - 1) * spec.dilation[0] + 1
    inputs = spec.batch * spec.in_channels * math.prod(spec.in_size[1:]) * ((count - 1) * spec.stride[0] + reach)
    outputs = spec.batch * spec.out_channels * math.prod(spec.out_size[1:]) * count
    return 3 * max(inputs, outputs) * itemsize


def _slab_slices(spec, itemsize):
    """Output slices a slab: all of them where the pass holds at most half the workspace limit,
    else as many as keep it there (at least one)."""
    budget, count = workspace.workspace_limit() // 2, spec.out_size[0]
    if _held_bytes(spec, itemsize, count) <= budget:
        return count
    low, high = 1, count   # the most that fit: _held_bytes grows with count
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _held_bytes(spec, itemsize, middle) <= budget else (low, middle - 1)
    return low


def _slabs(spec, itemsize):
    """``(sub_spec, input depths, output depths)`` of each slab of :func:`_slab_slices` output
    slices: the sub-problem maps the input slices its outputs read (a slice range, padding
    where they lie outside) to those outputs. A slab wholly in the padding has ``sub_spec``
    None."""
    count = _slab_slices(spec, itemsize)
    stride, pad_lo, depth = spec.stride[0], spec.pad_lo[0], spec.in_size[0]
    reach = (spec.kernel_size[0] - 1) * spec.dilation[0] + 1
    for first in range(0, spec.out_size[0], count):
        stop = min(spec.out_size[0], first + count)
        low, high = first * stride - pad_lo, (stop - 1) * stride + reach - pad_lo   # input depths, padding < 0
        inside = slice(max(low, 0), min(high, depth))
        sub = None
        if inside.start < inside.stop:
            sub = dataclasses.replace(spec, in_size=(inside.stop - inside.start,) + spec.in_size[1:],
                                      pad_lo=(inside.start - low,) + spec.pad_lo[1:],
                                      pad_hi=(high - inside.stop,) + spec.pad_hi[1:])
        yield sub, inside, slice(first, stop)


def plane_spec(spec):
    """The 2-d problem of one depth tap: every output slice a sample, a plane kernel."""
    return dataclasses.replace(
        spec, batch=spec.batch * spec.out_size[0], in_size=(1,) + spec.in_size[1:],
        kernel_size=(1,) + spec.kernel_size[1:], stride=(1,) + spec.stride[1:],
        dilation=(1,) + spec.dilation[1:], pad_lo=(0,) + spec.pad_lo[1:], pad_hi=(0,) + spec.pad_hi[1:])


def _run(spec, plane, pass_name, a, b, out):
    """One tap's 2-d pass, under the limit less what this pass holds."""
    with workspace.held_by_caller(_held_bytes(spec, out.itemsize)):
        slices.run(choose_plane_algorithm(plane, pass_name), pass_name, plane, a, b, out)


def _depth_major(name, array, pad_lo, pad_hi):
    """``array`` (N, C, D, H, W) as borrowed ``(N, pad_lo + D + pad_hi, C, H, W)``, zero slices
    at both ends."""
    batch, channels, depth, height, width = array.shape
    moved = workspace.borrow(name, batch * (pad_lo + depth + pad_hi) * channels * height * width, array.dtype)
    moved = moved.reshape(batch, pad_lo + depth + pad_hi, channels, height, width)
    moved[:, :pad_lo] = 0
    moved[:, pad_lo + depth:] = 0
    moved[:, pad_lo:pad_lo + depth] = array.transpose(0, 2, 1, 3, 4)
    return moved


def _tap_slices(spec, padded, td):
    """The input slices depth tap ``td`` reads, as a 2-d batch ``(N OD, C, 1, H, W)``."""
    first, step, count = td * spec.dilation[0], spec.stride[0], spec.out_size[0]
    taken = np.ascontiguousarray(padded[:, first:first + step * (count - 1) + 1:step])
    return taken.reshape(-1, taken.shape[2], 1, *taken.shape[3:])


def _plane_kernel(w, td):
    return np.ascontiguousarray(w[:, :, td:td + 1])


def forward(spec, x, w, out):
    for sub, inputs, outputs in _slabs(spec, x.itemsize):
        if sub is None:
            out[:, :, outputs] = 0
        else:
            _forward(sub, x[:, :, inputs], w, out[:, :, outputs])


def backward_input(spec, grad_y, w, grad_x):
    slabs = list(_slabs(spec, grad_y.itemsize))
    # one slab over every input slice writes all of grad_x; else the slabs add into zeros (they
    # overlap, and input slices no output reads, past the last window, get none)
    whole = len(slabs) == 1 and slabs[0][1] == slice(0, spec.in_size[0])
    if not whole:
        grad_x[...] = 0
    for sub, inputs, outputs in slabs:
        if sub is not None:
            _backward_input(sub, grad_y[:, :, outputs], w, grad_x[:, :, inputs], not whole)


def backward_weight(spec, x, grad_y, grad_w):
    slabs = list(_slabs(spec, x.itemsize))
    if len(slabs) == 1:
        _backward_weight(spec, x, grad_y, grad_w)
        return
    total, part = np.zeros(grad_w.shape, np.float64), np.empty_like(grad_w)
    for sub, inputs, outputs in slabs:
        if sub is not None:
            _backward_weight(sub, x[:, :, inputs], grad_y[:, :, outputs], part)
            total += part
    grad_w[...] = total


def _forward(spec, x, w, out):
    plane = plane_spec(spec)
    padded = _depth_major("depth_taps_input", x, spec.pad_lo[0], spec.pad_hi[0])
    size = (plane.batch, spec.out_channels, 1, *spec.out_size[1:])
    total = workspace.borrow("depth_taps_total", math.prod(size), x.dtype).reshape(size)
    part = workspace.borrow("depth_taps_part", math.prod(size), x.dtype).reshape(size)
    for td in range(spec.kernel_size[0]):
        _run(spec, plane, "forward", _tap_slices(spec, padded, td), _plane_kernel(w, td), part if td else total)
        if td:
            total += part
    by_sample = total.reshape(spec.batch, spec.out_size[0], spec.out_channels, *spec.out_size[1:])
    out[...] = by_sample.transpose(0, 2, 1, 3, 4)


def _backward_input(spec, grad_y, w, grad_x, accumulate):
    plane = plane_spec(spec)
    moved = _depth_major("depth_taps_output", grad_y, 0, 0)
    moved = moved.reshape(plane.batch, spec.out_channels, 1, *spec.out_size[1:])
    depth = spec.in_size[0] + spec.pad_lo[0] + spec.pad_hi[0]
    size = (spec.batch, depth, spec.in_channels, *spec.in_size[1:])
    total = workspace.borrow("depth_taps_total", math.prod(size), grad_y.dtype).reshape(size)
    total[...] = 0
    part_size = (plane.batch, spec.in_channels, 1, *spec.in_size[1:])
    part = workspace.borrow("depth_taps_part", math.prod(part_size), grad_y.dtype).reshape(part_size)
    first_slices = spec.out_size[0]
    for td in range(spec.kernel_size[0]):
        _run(spec, plane, "input", moved, _plane_kernel(w, td), part)
        first, step = td * spec.dilation[0], spec.stride[0]
        total[:, first:first + step * (first_slices - 1) + 1:step] += part.reshape(
            spec.batch, first_slices, spec.in_channels, *spec.in_size[1:])
    interior = total[:, spec.pad_lo[0]:spec.pad_lo[0] + spec.in_size[0]].transpose(0, 2, 1, 3, 4)
    if accumulate:
        grad_x += interior
    else:
        grad_x[...] = interior


def _backward_weight(spec, x, grad_y, grad_w):
    plane = plane_spec(spec)
    padded = _depth_major("depth_taps_input", x, spec.pad_lo[0], spec.pad_hi[0])
    moved = _depth_major("depth_taps_output", grad_y, 0, 0)
    moved = moved.reshape(plane.batch, spec.out_channels, 1, *spec.out_size[1:])
    size = (spec.out_channels, spec.group_in_channels, 1, *spec.kernel_size[1:])
    part = workspace.borrow("depth_taps_part", math.prod(size), x.dtype).reshape(size)
    for td in range(spec.kernel_size[0]):
        _run(spec, plane, "weight", _tap_slices(spec, padded, td), moved, part)
        grad_w[:, :, td:td + 1] = part

