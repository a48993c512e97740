"""Direct convolution: loops over outputs with the kernel taps inside.

Arrays are 5-d, ``x (N, C, D, H, W)``, ``w (K, C/g, KD, KH, KW)``,
``y (N, K, OD, OH, OW)``; 1-d and 2-d problems have unit leading dims. Each
thread owns whole output planes, so no two threads write the same element.
Taps that fall into the zero padding are skipped by range arithmetic
(:func:`valid_outputs`), not by branches in the inner loop.

Cost of each pass: ``2 N K (C/g) prod(out) prod(kernel)`` FLOPs with no
workspace. Traffic: every tap re-reads an input row and re-writes an output
row, so the passes move about ``prod(kernel) * (C/g)`` times more bytes than
the arrays hold and are bound by cache bandwidth; they win where the channel
reduction ``(C/g) * prod(kernel)`` is too short for a matrix product to pay
(depthwise and other narrow groups).
"""
import numpy as np
from numba import njit

from .common import valid_outputs
from .threads import on_threads, share, thread_count

# FLOPs of one uncut kernel call: a quarter second at 2 GFLOP/s, this algorithm's slowest rate on
# dense layers; longer passes run in slices (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(5e8)
# Where NaN and Inf land differently from the reference (numbaconv.functional): padding is
# skipped, never multiplied: a non-finite weight (forward) or output gradient (weight gradient)
# does not meet the zeros there as it does in the reference (Inf * 0 = NaN).
INEXACT_NONFINITE = {"forward": "weight", "weight": "grad_output"}


def supports(spec):
    """Direct loops run every problem."""
    return None


@njit(cache=True)
def _forward_kernel(thread, threads, x, w, y, stride, dilation, pad_lo):
    """y[n, k] = sum over c in k's group and taps of w[k, c, tap] * x[n, c] offset by the tap."""
    batch, in_channels, in_d, in_h, in_w = x.shape
    out_channels, group_in, k_d, k_h, k_w = w.shape
    out_d, out_h, out_w = y.shape[2], y.shape[3], y.shape[4]
    group_out = out_channels // (in_channels // group_in)
    first, stop = share(batch * out_channels, thread, threads)
    for plane in range(first, stop):
        n, k = plane // out_channels, plane % out_channels
        first_channel = (k // group_out) * group_in
        y[n, k] = 0
        for c in range(group_in):
            for td in range(k_d):
                d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
                for th in range(k_h):
                    h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
                    for tw in range(k_w):
                        w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
                        weight = w[k, c, td, th, tw]
                        for od in range(d0, d1):
                            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                            for oh in range(h0, h1):
                                i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                                x_row = x[n, first_channel + c, i_d, i_h]
                                y_row = y[n, k, od, oh]
                                for ow in range(w0, w1):
                                    y_row[ow] += weight * x_row[ow * stride[2] - pad_lo[2] + tw * dilation[2]]


@njit(cache=True)
def _backward_input_kernel(thread, threads, grad_y, w, grad_x, stride, dilation, pad_lo):
    """grad_x[n, c] = sum over k in c's group and taps of w[k, c, tap] * grad_y[n, k] placed back."""
    batch, in_channels, in_d, in_h, in_w = grad_x.shape
    out_channels, group_in, k_d, k_h, k_w = w.shape
    out_d, out_h, out_w = grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
    group_out = out_channels // (in_channels // group_in)
    first, stop = share(batch * in_channels, thread, threads)
    for plane in range(first, stop):
        n, channel = plane // in_channels, plane % in_channels
        c, first_k = channel % group_in, (channel // group_in) * group_out
        grad_x[n, channel] = 0
        for k in range(first_k, first_k + group_out):
            for td in range(k_d):
                d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
                for th in range(k_h):
                    h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
                    for tw in range(k_w):
                        w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
                        weight = w[k, c, td, th, tw]
                        for od in range(d0, d1):
                            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                            for oh in range(h0, h1):
                                i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                                gx_row = grad_x[n, channel, i_d, i_h]
                                gy_row = grad_y[n, k, od, oh]
                                for ow in range(w0, w1):
                                    gx_row[ow * stride[2] - pad_lo[2] + tw * dilation[2]] += weight * gy_row[ow]


@njit(cache=True)
def _backward_weight_kernel(thread, threads, x, grad_y, grad_w, stride, dilation, pad_lo):
    """grad_w[k, c, tap] = sum over n and outputs of grad_y[n, k] * x[n, c] offset by the tap; float64 sums."""
    batch, in_channels, in_d, in_h, in_w = x.shape
    out_channels, group_in, k_d, k_h, k_w = grad_w.shape
    out_d, out_h, out_w = grad_y.shape[2], grad_y.shape[3], grad_y.shape[4]
    group_out = out_channels // (in_channels // group_in)
    first, stop = share(out_channels * group_in, thread, threads)
    for filter_index in range(first, stop):
        k, c = filter_index // group_in, filter_index % group_in
        channel = (k // group_out) * group_in + c
        for td in range(k_d):
            d0, d1 = valid_outputs(td, in_d, out_d, stride[0], dilation[0], pad_lo[0])
            for th in range(k_h):
                h0, h1 = valid_outputs(th, in_h, out_h, stride[1], dilation[1], pad_lo[1])
                for tw in range(k_w):
                    w0, w1 = valid_outputs(tw, in_w, out_w, stride[2], dilation[2], pad_lo[2])
                    total = 0.0
                    for n in range(batch):
                        for od in range(d0, d1):
                            i_d = od * stride[0] - pad_lo[0] + td * dilation[0]
                            for oh in range(h0, h1):
                                i_h = oh * stride[1] - pad_lo[1] + th * dilation[1]
                                x_row = x[n, channel, i_d, i_h]
                                gy_row = grad_y[n, k, od, oh]
                                for ow in range(w0, w1):
                                    total += gy_row[ow] * np.float64(
                                        x_row[ow * stride[2] - pad_lo[2] + tw * dilation[2]])
                    grad_w[k, c, td, th, tw] = total


def forward(spec, x, w, out):
    on_threads(_forward_kernel, thread_count(), x, w, out, spec.stride, spec.dilation, spec.pad_lo)


def backward_input(spec, grad_y, w, grad_x):
    on_threads(_backward_input_kernel, thread_count(), grad_y, w, grad_x, spec.stride, spec.dilation, spec.pad_lo)


def backward_weight(spec, x, grad_y, grad_w):
    on_threads(_backward_weight_kernel, thread_count(), x, grad_y, grad_w, spec.stride, spec.dilation, spec.pad_lo)
