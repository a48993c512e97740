"""Winograd F(4x4, 3x3): 2-d, 3x3, stride-1, dilation-1 convolutions with 4x fewer multiplications.

Cut the output into 4x4 tiles. Tile ``t`` of sample ``n`` needs a 6x6 patch
``d`` of the input; with the transforms of Lavin and Gray (2015),

    U[k, c] = G  g[k, c] G^T     (6x6 per filter, once per call, in float64)
    V[c, t] = B^T d[c, t] B      (6x6 per input patch)
    M[k, t] = sum_c U[k, c] * V[c, t]   elementwise in the 6x6: 36 matrix products
    y[k, t] = A^T M[k, t] A      (4x4 per output tile)

so each output costs 36/16 = 2.25 multiplications per input channel instead
of 9, and they happen inside BLAS: for each of the 36 points ``p`` a product
``M[p] (K, T) = U[p] (K, C) @ V[p] (C, T)`` over a block of ``T`` tiles
(per group with ``groups > 1``).

FLOPs: ``2 * 36 * K * (C/g) * tiles`` in BLAS, ``tiles = N ceil(OH/4) ceil(OW/4)``
(about 0.44x the direct count when OH and OW are multiples of 4; edge tiles
compute outputs past the end and drop them), plus about 150 adds per tile and
channel for each transform. Memory traffic: x and y once, ``V`` and ``M`` per
block stay in cache (about ``workspace.BLOCK_BYTES``), and all of ``U``
(``36 K C/g`` elements) is read once per block: for wide layers with few
tiles (512 channels at 7x7) this traffic bounds the speed.

Input gradient: the same transform with the 180-degree-rotated kernel,
channels swapped within each group, on ``grad_y`` padded by ``2 - pad_lo``
(seed 000: the input gradient is the full correlation of ``grad_y`` with
the rotated kernel). The weight gradient runs ``shifted``'s GEMM: its
Winograd form (the transform of ``grad_y`` tiles with ``A``) did not win on
these shapes in the literature's measurements and is not built here.

Accuracy: the transforms scale by up to 8 (and the filter transform divides
by 24), so float32 results carry about 10x the rounding of a direct sum:
norm-relative errors of 1e-6 to 3e-6 on the bench layers (up to 512
channels), against 2e-7 to 4e-7 for the GEMM algorithms. That is within the
1e-5 every algorithm is held to, so Winograd needs no looser bound (issue 5
allowed 1e-4). Filters are transformed in float64 and rounded once.
"""
import numpy as np
from numba import njit

from . import shifted, workspace
from .pool import run_in_threads, split, thread_count

TILE = 4                       # output tile side (m)
PATCH = TILE + 2               # input patch side (alpha = m + r - 1)
POINTS = PATCH * PATCH         # elementwise products per tile and channel pair

# G (6x3): the filter transform, applied in float64.
FILTER_TRANSFORM = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]])


def supports(spec):
    if spec.kernel_size != (1, 3, 3):
        return f"needs a 3x3 2-d kernel, got {spec.kernel_size[1:] if spec.kernel_size[0] == 1 else spec.kernel_size}"
    if spec.in_size[0] != 1 or spec.pad_lo[0] or spec.pad_hi[0]:
        return "handles 2-d problems only"
    if any(s != 1 for s in spec.stride) or any(d != 1 for d in spec.dilation):
        return f"needs stride 1 and dilation 1, got stride {spec.stride[1:]} and dilation {spec.dilation[1:]}"
    return None


@njit(inline="always", cache=True)
def _patch_transform(d0, d1, d2, d3, d4, d5):
    """B^T applied to one column of a patch."""
    return (4 * d0 - 5 * d2 + d4,
            -4 * d1 - 4 * d2 + d3 + d4,
            4 * d1 - 4 * d2 - d3 + d4,
            -2 * d1 - d2 + 2 * d3 + d4,
            2 * d1 - d2 - 2 * d3 + d4,
            4 * d1 - 5 * d3 + d5)


@njit(inline="always", cache=True)
def _tile_transform(m0, m1, m2, m3, m4, m5):
    """A^T applied to one column of a 6x6 product."""
    return (m0 + m1 + m2 + m3 + m4,
            m1 - m2 + 2 * m3 - 2 * m4,
            m1 + m2 + 4 * m3 + 4 * m4,
            m1 - m2 + 8 * m3 - 8 * m4 + m5)


@njit(inline="always", cache=True)
def _tile_origin(tile, tiles_h, tiles_w):
    """(sample, first output row, first output column) of a tile number."""
    per_sample = tiles_h * tiles_w
    local = tile % per_sample
    return tile // per_sample, (local // tiles_w) * TILE, (local % tiles_w) * TILE


@njit(nogil=True, cache=True)
def _transform_patches(x, first_tile, tiles_h, tiles_w, pad_top, pad_left, patches):
    """``patches[p, c, j] = (B^T d B)[p]`` for the 6x6 input patch of channel ``c`` under tile
    ``first_tile + j``; ``x (N, C, H, W)``, reads outside it are zeros."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    count = patches.shape[2]
    d = np.empty((PATCH, PATCH), x.dtype)
    column = np.empty((PATCH, PATCH), x.dtype)
    for c in range(channels):
        for j in range(count):
            n, row0, col0 = _tile_origin(first_tile + j, tiles_h, tiles_w)
            row0 -= pad_top
            col0 -= pad_left
            for a in range(PATCH):
                row = row0 + a
                for b in range(PATCH):
                    col = col0 + b
                    inside = 0 <= row < height and 0 <= col < width
                    d[a, b] = x[n, c, row, col] if inside else 0
            for b in range(PATCH):
                (column[0, b], column[1, b], column[2, b], column[3, b], column[4, b],
                 column[5, b]) = _patch_transform(d[0, b], d[1, b], d[2, b], d[3, b], d[4, b], d[5, b])
            for a in range(PATCH):
                v0, v1, v2, v3, v4, v5 = _patch_transform(column[a, 0], column[a, 1], column[a, 2],
                                                          column[a, 3], column[a, 4], column[a, 5])
                patches[a * PATCH, c, j] = v0
                patches[a * PATCH + 1, c, j] = v1
                patches[a * PATCH + 2, c, j] = v2
                patches[a * PATCH + 3, c, j] = v3
                patches[a * PATCH + 4, c, j] = v4
                patches[a * PATCH + 5, c, j] = v5


@njit(nogil=True, cache=True)
def _transform_products(products, first_tile, tiles_h, tiles_w, y):
    """``y[n, k, tile] = A^T M A`` with ``M[p] = products[p, k, j]`` for tile ``first_tile + j``;
    outputs past ``y``'s edges are dropped."""
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    count = products.shape[2]
    half = np.empty((PATCH, TILE), y.dtype)
    for k in range(out_channels):
        for j in range(count):
            n, row0, col0 = _tile_origin(first_tile + j, tiles_h, tiles_w)
            for a in range(PATCH):
                base = a * PATCH
                half[a, 0], half[a, 1], half[a, 2], half[a, 3] = _tile_transform(
                    products[base, k, j], products[base + 1, k, j], products[base + 2, k, j],
                    products[base + 3, k, j], products[base + 4, k, j], products[base + 5, k, j])
            for b in range(TILE):
                col = col0 + b
                if col >= out_w:
                    break
                o0, o1, o2, o3 = _tile_transform(half[0, b], half[1, b], half[2, b], half[3, b],
                                                 half[4, b], half[5, b])
                rows = min(TILE, out_h - row0)
                if rows > 0:
                    y[n, k, row0, col] = o0
                if rows > 1:
                    y[n, k, row0 + 1, col] = o1
                if rows > 2:
                    y[n, k, row0 + 2, col] = o2
                if rows > 3:
                    y[n, k, row0 + 3, col] = o3


@njit(nogil=True, cache=True)
def _transform_filters(w, first, stop, filters):
    """``filters[p, k, c] = (G w[k, c] G^T)[p]`` for ``first <= k < stop``, summed in float64."""
    for k in range(first, stop):
        for c in range(w.shape[1]):
            half = np.zeros((PATCH, 3))
            for a in range(PATCH):
                for j in range(3):
                    for i in range(3):
                        half[a, j] += FILTER_TRANSFORM[a, i] * np.float64(w[k, c, i, j])
            for a in range(PATCH):
                for b in range(PATCH):
                    filters[a * PATCH + b, k, c] = (FILTER_TRANSFORM[b, 0] * half[a, 0] + FILTER_TRANSFORM[b, 1] * half[a, 1]
                                                    + FILTER_TRANSFORM[b, 2] * half[a, 2])


def _transformed_filters(w, groups):
    """U (36, g, K/g, C/g) = G w G^T per filter, ``w (K, C/g, 3, 3)``, computed in float64 and rounded once."""
    out_channels, group_in = w.shape[:2]
    filters = np.empty((POINTS, out_channels, group_in), w.dtype)
    w = np.ascontiguousarray(w.reshape(out_channels, group_in, 3, 3))
    run_in_threads(lambda share: _transform_filters(w, share.start, share.stop, filters),
                   split(range(out_channels), thread_count()))
    return filters.reshape(POINTS, groups, out_channels // groups, group_in)


def _winograd(x, u, y, pad_top, pad_left):
    """``y (N, K, OH, OW) = conv(x (N, C, H, W))`` through transformed filters ``u``, the input
    read from ``(-pad_top, -pad_left)`` on (any sign), tile blocks shared out to the threads."""
    batch, channels = x.shape[:2]
    out_channels, out_h, out_w = y.shape[1:]
    groups, group_out, group_in = u.shape[1:]
    tiles_h, tiles_w = -(-out_h // TILE), -(-out_w // TILE)
    tiles = batch * tiles_h * tiles_w
    threads = thread_count()
    bytes_per_tile = POINTS * (channels + out_channels) * x.dtype.itemsize
    block = workspace.block_columns(bytes_per_tile, threads, tiles)
    block = min(block, -(-tiles // threads))     # at least one block per thread
    blocks = [(first, min(block, tiles - first)) for first in range(0, tiles, block)]

    def work(share):
        for first, count in share:
            patches = workspace.borrow("winograd_patches", POINTS * channels * count, x.dtype)
            patches = patches.reshape(POINTS, channels, count)
            products = workspace.borrow("winograd_products", POINTS * out_channels * count, x.dtype)
            products = products.reshape(POINTS, out_channels, count)
            _transform_patches(x, first, tiles_h, tiles_w, pad_top, pad_left, patches)
            grouped_patches = patches.reshape(POINTS, groups, group_in, count)
            grouped_products = products.reshape(POINTS, groups, group_out, count)
            for point in range(POINTS):
                for group in range(groups):
                    np.matmul(u[point, group], grouped_patches[point, group], out=grouped_products[point, group])
            _transform_products(products, first, tiles_h, tiles_w, y)

    run_in_threads(work, split(blocks, threads))


def _planes(array):
    """(N, C, 1, H, W) -> the contiguous (N, C, H, W) view."""
    return array.reshape(array.shape[0], array.shape[1], array.shape[3], array.shape[4])


def forward(spec, x, w, out):
    _winograd(_planes(x), _transformed_filters(w, spec.groups), _planes(out), spec.pad_lo[1], spec.pad_lo[2])


def backward_input(spec, grad_y, w, grad_x):
    groups, group_out, group_in = spec.groups, spec.group_out_channels, spec.group_in_channels
    # w (K, C/g) -> per group (C/g, K/g), rotated 180 degrees: the input gradient's filters (C, K/g)
    flipped = w[:, :, 0, ::-1, ::-1].reshape(groups, group_out, group_in, 3, 3).transpose(0, 2, 1, 3, 4)
    flipped = flipped.reshape(spec.in_channels, group_out, 1, 3, 3)
    _winograd(_planes(grad_y), _transformed_filters(flipped, groups), _planes(grad_x),
              2 - spec.pad_lo[1], 2 - spec.pad_lo[2])


def backward_weight(spec, x, grad_y, grad_w):
    shifted.backward_weight(spec, x, grad_y, grad_w)
