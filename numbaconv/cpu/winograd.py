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

def supports(spec):
    if spec.kernel_size != (1, 3, 3):
        return f"needs a 3x3 2-d kernel, got {spec.kernel_size[1:] if spec.kernel_size[0] == 1 else spec.kernel_size}"
    if spec.in_size[0] != 1 or spec.pad_lo[0] or spec.pad_hi[0]:
        return "handles 2-d problems only"
    if any(s != 1 for s in spec.stride) or any(d != 1 for d in spec.dilation):
        return f"needs stride 1 and dilation 1, got stride {spec.stride[1:]} and dilation {spec.dilation[1:]}"
    return None


# The transforms below work on flat arrays with explicit offsets, six rows ``step`` apart, and
# run across a block's tiles (``count``, the innermost, unit-stride loop) so that they vectorise.
# They scale by 2, 4 and 8 through additions (exact, like the multiplications): Numba types
# ``4 * value`` as float64 for a float32 value, which made the float32 transforms convert every
# operand and run scalar.

def tile_count(spec):
    """How many 4x4 output tiles the forward pass of ``spec`` (3-d form) computes."""
    out_h, out_w = spec.out_size[1:]
    return spec.batch * -(-out_h // TILE) * -(-out_w // TILE)


@njit(inline="always", cache=True)
def _twice(value):
    return value + value

@njit(inline="always", cache=True)
def _patch_transform(src, s, s_step, dst, d, d_step, count):
    """``dst row i = sum_a B^T[i, a] * src row a``."""
    for j in range(count):
        d0, d1, d2 = src[s + j], src[s + s_step + j], src[s + 2 * s_step + j]
        d3, d4, d5 = src[s + 3 * s_step + j], src[s + 4 * s_step + j], src[s + 5 * s_step + j]
        d4_minus_d2 = d4 - d2
        dst[d + j] = _twice(_twice(d0 - d2)) + d4_minus_d2                  # 4 d0 - 5 d2 + d4
        dst[d + d_step + j] = d3 + d4 - _twice(_twice(d1 + d2))            # -4 d1 - 4 d2 + d3 + d4
        dst[d + 2 * d_step + j] = _twice(_twice(d1 - d2)) + d4 - d3        # 4 d1 - 4 d2 - d3 + d4
        dst[d + 3 * d_step + j] = d4_minus_d2 - _twice(d1 - d3)            # -2 d1 - d2 + 2 d3 + d4
        dst[d + 4 * d_step + j] = d4_minus_d2 + _twice(d1 - d3)            # 2 d1 - d2 - 2 d3 + d4
        dst[d + 5 * d_step + j] = _twice(_twice(d1 - d3)) + d5 - d3        # 4 d1 - 5 d3 + d5


@njit(inline="always", cache=True)
def _tile_transform(src, s, s_step, dst, d, d_step, count):
    """``dst row i = sum_a A^T[i, a] * src row a``."""
    for j in range(count):
        m0, m1, m2 = src[s + j], src[s + s_step + j], src[s + 2 * s_step + j]
        m3, m4, m5 = src[s + 3 * s_step + j], src[s + 4 * s_step + j], src[s + 5 * s_step + j]
        sum12, sum34, difference12, difference34 = m1 + m2, m3 + m4, m1 - m2, m3 - m4
        dst[d + j] = m0 + sum12 + sum34                                      # m0 + m1 + m2 + m3 + m4
        dst[d + d_step + j] = difference12 + _twice(difference34)           # m1 - m2 + 2 m3 - 2 m4
        dst[d + 2 * d_step + j] = sum12 + _twice(_twice(sum34))             # m1 + m2 + 4 m3 + 4 m4
        dst[d + 3 * d_step + j] = difference12 + _twice(_twice(_twice(difference34))) + m5   # ... + 8 m3 - 8 m4 + m5


def _tile_origins(first_tile, count, tiles_h, tiles_w):
    """Per tile of the block: (sample, first output row, first output column), int64 arrays."""
    tile = np.arange(first_tile, first_tile + count)
    local = tile % (tiles_h * tiles_w)
    return tile // (tiles_h * tiles_w), (local // tiles_w) * TILE, (local % tiles_w) * TILE


@njit(nogil=True, cache=True)
def _transform_patches(x, samples, rows, cols, patches, gathered, half):
    """``patches[p, c, j] = (B^T d B)[p]`` for ``d`` the 6x6 patch of ``x (N, C, H, W)`` at
    ``(samples[j], rows[j], cols[j])`` (reads outside x are zeros). The transforms run across
    the block's tiles, the innermost loop, so they vectorise; scratch ``gathered``/``half`` (6, 6, count)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    count = patches.shape[2]
    x_flat, patches_flat = x.reshape(-1), patches.reshape(-1)
    gathered_flat, half_flat = gathered.reshape(-1), half.reshape(-1)
    for c in range(channels):
        for j in range(count):
            row0, col0 = rows[j], cols[j]
            # flat offsets: one add per element instead of four strides and sign checks
            corner = ((samples[j] * channels + c) * height + row0) * width + col0
            if 0 <= row0 and row0 + PATCH <= height and 0 <= col0 and col0 + PATCH <= width:
                for a in range(PATCH):
                    at = corner + a * width
                    for b in range(PATCH):
                        gathered[a, b, j] = x_flat[at + b]
            else:
                for a in range(PATCH):
                    for b in range(PATCH):
                        inside = 0 <= row0 + a < height and 0 <= col0 + b < width
                        gathered[a, b, j] = x_flat[corner + a * width + b] if inside else 0
        # columns: half[i, b] = sum_a B^T[i, a] gathered[a, b]; rows: patches[6i + i2, c] from half[i]
        for b in range(PATCH):
            _patch_transform(gathered_flat, b * count, PATCH * count, half_flat, b * count, PATCH * count, count)
        for i in range(PATCH):
            _patch_transform(half_flat, i * PATCH * count, count, patches_flat, (i * PATCH * channels + c) * count,
                             channels * count, count)


@njit(nogil=True, cache=True)
def _transform_products(products, samples, rows, cols, y, half, tiles):
    """``y[samples[j], k, rows[j]:+4, cols[j]:+4] = A^T M A`` with ``M[p] = products[p, k, j]``;
    outputs past ``y``'s edges are dropped. Scratch ``half`` (6, 4, count), ``tiles`` (4, 4, count)."""
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    count = products.shape[2]
    y_flat = y.reshape(-1)
    products_flat, half_flat, tiles_flat = products.reshape(-1), half.reshape(-1), tiles.reshape(-1)
    for k in range(out_channels):
        # rows: half[a, i] = sum_b A^T[i, b] M[6a + b]; columns: tiles[i2, i] from half[:, i]
        for a in range(PATCH):
            _tile_transform(products_flat, (a * PATCH * out_channels + k) * count, out_channels * count,
                            half_flat, a * TILE * count, count, count)
        for i in range(TILE):
            _tile_transform(half_flat, i * count, TILE * count, tiles_flat, i * count, TILE * count, count)
        for j in range(count):
            row0, col0 = rows[j], cols[j]
            corner = ((samples[j] * out_channels + k) * out_h + row0) * out_w + col0
            for a in range(min(TILE, out_h - row0)):
                for b in range(min(TILE, out_w - col0)):
                    y_flat[corner + a * out_w + b] = tiles[a, b, j]


@njit(inline="always", cache=True)
def _filter_transform(g0, g1, g2, o0, o1, o2, o3, o4, o5):
    """``o = G g`` for three rows at once, in float64."""
    for c in range(g0.shape[0]):
        a, b, d = np.float64(g0[c]), np.float64(g1[c]), np.float64(g2[c])
        o0[c] = a / 4
        o1[c] = -(a + b + d) / 6
        o2[c] = -(a - b + d) / 6
        o3[c] = a / 24 + b / 12 + d / 6
        o4[c] = a / 24 - b / 12 + d / 6
        o5[c] = d


@njit(nogil=True, cache=True)
def _transform_filters(w, first, stop, filters):
    """``filters[p, k, c] = (G w[k, c] G^T)[p]`` for ``first <= k < stop``, in float64, across ``c``."""
    group_in = w.shape[1]
    taps = np.empty((3, 3, group_in))
    half = np.empty((PATCH, 3, group_in))
    rows = np.empty((PATCH, PATCH, group_in))
    for k in range(first, stop):
        for i in range(3):
            for j in range(3):
                for c in range(group_in):
                    taps[i, j, c] = w[k, c, i, j]
        for j in range(3):
            _filter_transform(taps[0, j], taps[1, j], taps[2, j],
                              half[0, j], half[1, j], half[2, j], half[3, j], half[4, j], half[5, j])
        for a in range(PATCH):
            _filter_transform(half[a, 0], half[a, 1], half[a, 2],
                              rows[a, 0], rows[a, 1], rows[a, 2], rows[a, 3], rows[a, 4], rows[a, 5])
            for b in range(PATCH):
                filters[a * PATCH + b, k] = rows[a, b]


def _transformed_filters(w, groups):
    """U (36, g, K/g, C/g) = G w G^T per filter, ``w (K, C/g, 3, 3)``, computed in float64 and rounded once."""
    out_channels, group_in = w.shape[:2]
    # a reused buffer: a fresh 38 MB array (512 channels) cost more in page faults than the transform
    filters = workspace.borrow("winograd_filters", POINTS * out_channels * group_in, w.dtype)
    filters = filters.reshape(POINTS, out_channels, group_in)
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

    def scratch(name, shape):
        return workspace.borrow(name, int(np.prod(shape)), x.dtype).reshape(shape)

    def work(share):
        for first, count in share:
            patches = scratch("winograd_patches", (POINTS, channels, count))
            products = scratch("winograd_products", (POINTS, out_channels, count))
            samples, rows, cols = _tile_origins(first, count, tiles_h, tiles_w)
            _transform_patches(x, samples, rows - pad_top, cols - pad_left, patches,
                               scratch("winograd_gathered", (PATCH, PATCH, count)),
                               scratch("winograd_half", (PATCH, PATCH, count)))
            grouped_patches = patches.reshape(POINTS, groups, group_in, count)
            grouped_products = products.reshape(POINTS, groups, group_out, count)
            for point in range(POINTS):
                for group in range(groups):
                    np.matmul(u[point, group], grouped_patches[point, group], out=grouped_products[point, group])
            _transform_products(products, samples, rows, cols, y, scratch("winograd_half", (PATCH, TILE, count)),
                                scratch("winograd_tiles", (TILE, TILE, count)))

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
