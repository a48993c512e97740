"""Direct convolution on the GPU: one thread per output element, kernel taps inside.

Arrays are 5-d and C-contiguous, ``x (N, C, D, H, W)``, ``w (K, C/g, KD, KH,
KW)``, ``y (N, K, OD, OH, OW)``; 1-d and 2-d problems have unit leading dims.
Every tap's input index is checked against the image bounds explicitly (the
zero padding is never read).

- forward: a thread per ``y`` element sums ``(C/g) * prod(kernel)`` products.
- input gradient, by gathering: a thread per ``x`` element sums, over the
  ``K/g`` filters of its group and the taps, the outputs whose window covered
  it (``o = (i + pad_lo - tap * dilation) / stride`` when that is a whole
  number inside the output). No atomics; each element is written once.
- weight gradient: a block per ``w`` element; its threads split the
  ``N * prod(out)`` products, then add their partial sums in shared memory
  (:func:`~numbaconv.cuda.common.block_sum`). No atomics.

FLOPs of each pass: ``2 N K (C/g) prod(out) prod(kernel)``. Memory traffic:
each product reads one input and one weight element; neighbouring threads
share weights and input rows through the cache, so the passes are bound by
load throughput (L1/L2), not DRAM, and they suit problems whose reduction
``(C/g) * prod(kernel)`` is too short for a tiled matrix product (depthwise).
"""
import functools

import numpy as np
from numba import cuda, from_dtype

from .common import LAUNCH, block_sum, grid_blocks, grid_stride, source_output, unravel


def supports(spec):
    """Direct kernels run every problem."""
    return None


@functools.cache
def _kernels(dtype, reduce_threads):
    """The three kernels for one float dtype (accumulating in that dtype)."""
    float_t = from_dtype(dtype)
    zero = dtype.type(0)

    @cuda.jit
    def forward_kernel(x, w, y, stride, dilation, pad_lo):
        """y[n, k, o] = sum over c in k's group and taps t of w[k, c, t] x[n, c, o*stride - pad + t*dilation]."""
        in_channels, in_d, in_h, in_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        out_channels, group_in, k_d, k_h, k_w = w.shape
        group_out = out_channels // (in_channels // group_in)
        first, step = grid_stride()
        for index in range(first, y.size, step):
            n, k, od, oh, ow = unravel(index, y.shape)
            first_channel = (k // group_out) * group_in
            total = zero
            for c in range(group_in):
                for td in range(k_d):
                    i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                    if 0 <= i_d < in_d:
                        for th in range(k_h):
                            i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                            if 0 <= i_h < in_h:
                                for tw in range(k_w):
                                    i_w = ow * stride[2] - pad_lo[2] + tw * dilation[2]
                                    if 0 <= i_w < in_w:
                                        total += w[k, c, td, th, tw] * x[n, first_channel + c, i_d, i_h, i_w]
            y[n, k, od, oh, ow] = total

    @cuda.jit
    def backward_input_kernel(grad_y, w, grad_x, stride, dilation, pad_lo):
        """grad_x[n, c, i] = sum over k in c's group and taps t with i = o*stride - pad + t*dilation
        of w[k, c, t] grad_y[n, k, o]: a gather, one write per element."""
        in_channels = grad_x.shape[1]
        out_channels, group_in, k_d, k_h, k_w = w.shape
        out_d, out_h, out_w = grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
        group_out = out_channels // (in_channels // group_in)
        first, step = grid_stride()
        for index in range(first, grad_x.size, step):
            n, channel, i_d, i_h, i_w = unravel(index, grad_x.shape)
            c, first_k = channel % group_in, (channel // group_in) * group_out
            total = zero
            for k in range(first_k, first_k + group_out):
                for td in range(k_d):
                    od = source_output(i_d, td, stride[0], dilation[0], pad_lo[0], out_d)
                    if od >= 0:
                        for th in range(k_h):
                            oh = source_output(i_h, th, stride[1], dilation[1], pad_lo[1], out_h)
                            if oh >= 0:
                                for tw in range(k_w):
                                    ow = source_output(i_w, tw, stride[2], dilation[2], pad_lo[2], out_w)
                                    if ow >= 0:
                                        total += w[k, c, td, th, tw] * grad_y[n, k, od, oh, ow]
            grad_x[n, channel, i_d, i_h, i_w] = total

    @cuda.jit
    def backward_weight_kernel(x, grad_y, grad_w, stride, dilation, pad_lo):
        """grad_w[k, c, t] = sum over n and outputs o of grad_y[n, k, o] x[n, c', o*stride - pad + t*dilation];
        one block per weight element (grid-stride over them), reduced in shared memory."""
        partial_sums = cuda.shared.array(reduce_threads, float_t)
        in_channels, in_d, in_h, in_w = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
        out_channels, group_in = grad_w.shape[0], grad_w.shape[1]
        group_out = out_channels // (in_channels // group_in)
        out_d, out_h, out_w = grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
        positions = grad_y.shape[0] * np.int64(out_d * out_h * out_w)
        for weight_index in range(cuda.blockIdx.x, grad_w.size, cuda.gridDim.x):   # uniform per block
            k, c, td, th, tw = unravel(weight_index, grad_w.shape)
            channel = (k // group_out) * group_in + c
            total = zero
            for position in range(cuda.threadIdx.x, positions, reduce_threads):
                n, od, oh, ow = position // (out_d * out_h * out_w), position // (out_h * out_w) % out_d, \
                    position // out_w % out_h, position % out_w
                i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                i_w = ow * stride[2] - pad_lo[2] + tw * dilation[2]
                if 0 <= i_d < in_d and 0 <= i_h < in_h and 0 <= i_w < in_w:
                    total += grad_y[n, k, od, oh, ow] * x[n, channel, i_d, i_h, i_w]
            total = block_sum(total, partial_sums)
            if cuda.threadIdx.x == 0:
                grad_w[k, c, td, th, tw] = total

    return forward_kernel, backward_input_kernel, backward_weight_kernel


def _get(array):
    return _kernels(np.dtype(array.dtype), LAUNCH.reduce_threads)


def forward(spec, x, w, out):
    _get(x)[0][grid_blocks(out.size), LAUNCH.threads](x, w, out, spec.stride, spec.dilation, spec.pad_lo)


def backward_input(spec, grad_y, w, grad_x):
    _get(w)[1][grid_blocks(grad_x.size), LAUNCH.threads](grad_y, w, grad_x, spec.stride, spec.dilation,
                                                         spec.pad_lo)


def backward_weight(spec, x, grad_y, grad_w):
    _get(x)[2][min(grad_w.size, LAUNCH.max_blocks), LAUNCH.reduce_threads](
        x, grad_y, grad_w, spec.stride, spec.dilation, spec.pad_lo)
