"""Winograd F(4x4, 3x3): 2-d, 3x3, stride-1, dilation-1 convolutions with 4x fewer multiplications.

Cut the output into 4x4 tiles. Tile ``t`` of sample ``n`` needs a 6x6 patch
``d`` of the input; with the transforms of Lavin and Gray (2015),

    U[c, k] = G  g[k, c] G^T     (6x6 per filter, once per call)
    V[t, c] = B^T d[t, c] B      (6x6 per input patch)
    M[t, k] = sum_c V[t, c] * U[c, k]   elementwise in the 6x6: 36 matrix products
    y[t, k] = A^T M[t, k] A      (4x4 per output tile)

so each output costs 36/16 = 2.25 multiplications per input channel instead
of 9, and they happen inside BLAS: for each of the 36 points ``p`` a product
``M[p] (T, K) = V[p] (T, C) @ U[p] (C, K)`` over a block of ``T`` tiles
(per group with ``groups > 1``), called from the Numba kernels (``blas.gemm``).

Input gradient: the same transform with the 180-degree-rotated kernel,
channels swapped within each group, on ``grad_y`` padded by ``2 - pad_lo``
(the input gradient is the full correlation of ``grad_y`` with the rotated
kernel). Weight gradient: the adjoint. With ``Y[t, k] = A dy[t, k]
A^T`` (6x6 per 4x4 tile of ``grad_y``, zero past its edges), ``dU[p] (K, C) =
sum over tiles of Y[p].T @ V[p]`` (BLAS reducing over each block's tiles into a
partial sum per thread, the partials added in thread order) and ``grad_w[k, c] =
G^T dU[k, c] G``; with few tiles for many filters (partials larger than all
the tiles' V and Y) each thread sums all tiles for a block of output channels
instead (:func:`_weight_by_filter_blocks_pays`).

Threads: every stage is a ``prange`` over the threads, each taking a
consecutive share, calling BLAS (held to one thread) from inside; ``pool``
says why. ``python bench/train_step.py`` times these passes right after
PyTorch's operations (its conv2 runs here).

Layout: the transforms run vectorised across channels, so the input (and
``grad_y``) is first copied channels-last and zero-padded (a chunk of samples
at a time, at most ``CHANNELS_LAST_BYTES``), with each row's columns dealt out
by their place in a tile so that one call transforms a whole row of tiles.
Blocks are whole tile rows, about ``workspace.BLOCK_BYTES`` of ``V`` and ``M``,
the same number per thread. Where there are few tiles for many filters (at
least FILTER_BLOCKS_TILE_RATIO output channels per tile: wide layers at 7x7 and
14x14, small batches) ``U`` would be the largest array (38 MB at 512 -> 512
channels, against 2.4 MB of ``V`` for N=8), so the blocks go the other way:
all tiles' ``V`` first, then each thread takes blocks of output channels,
transforms their filters and multiplies all tiles with them while that part
of ``U`` is in cache (:func:`_winograd_filter_blocks`). The filter transform
runs vectorised across filters like the tile transforms. The transforms
index slices from 0, never a flat ``a[offset + j]``, whose negative-index
wraparound check would hide the pattern from LLVM's vectoriser.

FLOPs: ``2 * 36 * K * (C/g) * tiles`` in BLAS, ``tiles = N ceil(OH/4) ceil(OW/4)``
(about 0.44x the direct count when OH and OW are multiples of 4; edge tiles
compute outputs past the end and drop them), plus about 12 adds per element
of ``V`` and ``M`` for the transforms and about ``100 K C/g`` for the filters.
Memory traffic: x and y about twice (the channels-last copy), ``V`` and ``M``
per block in cache, ``U`` (``36 K C/g`` elements) written once and read once
per block; by filter blocks, ``V`` and ``M`` once each and ``U`` in cache. With
few tiles the products are skinny (32 rows at 512 channels, 7x7, N=8) and
bound the speed: ``NUMBA_NUM_THREADS=1 numbaconv bench --layer conv3x3_512
--algo winograd``.

Accuracy: the transforms scale by up to 8 (and the filter transform divides
by 24), so float32 results carry about 10x the rounding of a direct sum:
norm-relative errors up to 3.5e-6 for the forward and input gradient and
up to 3e-6 for the weight gradient on the bench layers, against 2e-7
to 4e-7 for the GEMM algorithms. That is within the 1e-5 every algorithm is
held to, so Winograd needs no looser bound (``numbaconv bench --layer
conv3x3_64,conv3x3_512 --algo winograd``, column ``rel err``;
docs/decisions.md, G1). The filter transform (sums of up to 3 terms a stage
in the working precision) adds a few ulp to U, nothing visible in these
numbers.
"""
import numba
import numpy as np
from numba import njit, prange

from . import workspace
from .blas import gemm
from .common import scratch, share
from .pool import single_threaded_blas, thread_count

# FLOPs of one uncut kernel call: a quarter second at 20 GFLOP/s (counted as direct convolution), this algorithm's slowest rate on
# dense layers; longer passes run in slices (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(5e9)
# Where NaN and Inf land differently from the reference (numbaconv.functional): the transforms add neighbouring values, so one non-finite value spreads over
# the outputs of its tiles (Inf - Inf = NaN) and NaN/Inf land where the reference has finite values.
INEXACT_NONFINITE = {"forward": "result", "input": "result", "weight": "result"}

TILE = 4                       # output tile side (m)
PATCH = TILE + 2               # input patch side (alpha = m + r - 1)
POINTS = PATCH * PATCH         # elementwise products per tile and channel pair
CHANNELS_LAST_BYTES = 64 * 2**20   # cap on the channels-last copy of one chunk of samples

# G (6x3) of F(4x4, 3x3): U = G g G^T; the weight gradient goes back through G^T.
FILTER_TRANSFORM = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
# The same as one (36, 9) matrix on a filter's taps, row-major: U.flat = TAPS_TO_POINTS @ g.flat;
# its transpose takes the weight gradient's 36 sums back to the 9 taps.
TAPS_TO_POINTS = np.kron(FILTER_TRANSFORM, FILTER_TRANSFORM)
TRANSFORM_BLOCK_BYTES = 2**17   # the gathered taps of one block of channels in the filter transform
FILTER_CHUNK = 512              # filters transformed together (their 18 intermediate rows stay in L1)
FILTER_BLOCKS_TILE_RATIO = 2    # by filter blocks from 2 output channels per tile (_by_filter_blocks)


def supports(spec):
    """None if Winograd runs ``spec``, else why not: the kernel, stride and dilation it needs, or
    scratch past the workspace limit even with the smallest chunks and blocks (counted in
    float64, with Numba's full thread count)."""
    if spec.kernel_size != (1, 3, 3):
        return f"needs a 3x3 2-d kernel, got {spec.kernel_size[1:] if spec.kernel_size[0] == 1 else spec.kernel_size}"
    if spec.in_size[0] != 1 or spec.pad_lo[0] or spec.pad_hi[0]:
        return "handles 2-d problems only"
    if any(s != 1 for s in spec.stride) or any(d != 1 for d in spec.dilation):
        return f"needs stride 1 and dilation 1, got stride {spec.stride[1:]} and dilation {spec.dilation[1:]}"
    threads, filter_values = numba.config.NUMBA_NUM_THREADS, POINTS * spec.out_channels * spec.group_in_channels
    (in_h, in_w), (out_h, out_w) = spec.in_size[1:], spec.out_size[1:]
    passes = [_Tiling(spec.in_channels, spec.out_channels, out_h, out_w, np.float64, filter_values, threads=threads),
              _Tiling(spec.out_channels, spec.in_channels, in_h, in_w, np.float64, filter_values, threads=threads),
              _Tiling(spec.in_channels, spec.out_channels, out_h, out_w, np.float64, filter_values, True, threads)]
    return workspace.over_limit(max(tiling.least_bytes() for tiling in passes))


def tile_count(spec):
    """How many 4x4 output tiles the forward pass of ``spec`` (3-d form) computes."""
    out_h, out_w = spec.out_size[1:]
    return spec.batch * -(-out_h // TILE) * -(-out_w // TILE)


# The transforms below work on flat arrays with explicit offsets, rows ``step`` apart, and run
# across ``count`` channels (the innermost, unit-stride loop) so that they vectorise. They scale
# by 2, 4 and 8 through additions (exact, like the multiplications): Numba types ``4 * value``
# as float64 for a float32 value, which would make the float32 transforms convert every operand.

@njit(inline="always", cache=True)
def _twice(value):
    return value + value


@njit(inline="always", cache=True)
def _row(array, first, count):
    return array[first:first + count]


@njit(inline="always", cache=True)
def _four_rows(array, first, step, count):
    """Four slices of ``count`` elements of flat ``array``, from ``first``, ``step`` apart.

    The transforms index such views from 0: with a raw flat index ``first + j`` Numba's
    negative-index wraparound check hides the access pattern from LLVM, which then does not
    vectorise."""
    return (_row(array, first, count), _row(array, first + step, count),
            _row(array, first + 2 * step, count), _row(array, first + 3 * step, count))


@njit(inline="always", cache=True)
def _six_rows(array, first, step, count):
    """Like _four_rows, six slices."""
    return _four_rows(array, first, step, count) + (_row(array, first + 4 * step, count),
                                                    _row(array, first + 5 * step, count))


@njit(inline="always", cache=True)
def _patch_transform(src, dst):
    """``dst[i] = sum_a B^T[i, a] * src[a]``: six rows to six, rows given as tuples of views."""
    d0, d1, d2, d3, d4, d5 = src
    o0, o1, o2, o3, o4, o5 = dst
    for j in range(d0.shape[0]):
        d4_minus_d2 = d4[j] - d2[j]
        o0[j] = _twice(_twice(d0[j] - d2[j])) + d4_minus_d2                     # 4 d0 - 5 d2 + d4
        o1[j] = d3[j] + d4[j] - _twice(_twice(d1[j] + d2[j]))                   # -4 d1 - 4 d2 + d3 + d4
        o2[j] = _twice(_twice(d1[j] - d2[j])) + d4[j] - d3[j]                   # 4 d1 - 4 d2 - d3 + d4
        o3[j] = d4_minus_d2 - _twice(d1[j] - d3[j])                             # -2 d1 - d2 + 2 d3 + d4
        o4[j] = d4_minus_d2 + _twice(d1[j] - d3[j])                             # 2 d1 - d2 - 2 d3 + d4
        o5[j] = _twice(_twice(d1[j] - d3[j])) + d5[j] - d3[j]                   # 4 d1 - 5 d3 + d5


@njit(inline="always", cache=True)
def _tile_transform(src, dst):
    """``dst[i] = sum_a A^T[i, a] * src[a]``: six rows to four."""
    m0, m1, m2, m3, m4, m5 = src
    o0, o1, o2, o3 = dst
    for j in range(m0.shape[0]):
        sum12, sum34, difference12, difference34 = m1[j] + m2[j], m3[j] + m4[j], m1[j] - m2[j], m3[j] - m4[j]
        o0[j] = m0[j] + sum12 + sum34                                           # m0 + m1 + m2 + m3 + m4
        o1[j] = difference12 + _twice(difference34)                             # m1 - m2 + 2 m3 - 2 m4
        o2[j] = sum12 + _twice(_twice(sum34))                                   # m1 + m2 + 4 m3 + 4 m4
        o3[j] = difference12 + _twice(_twice(_twice(difference34))) + m5[j]     # ... + 8 m3 - 8 m4 + m5


@njit(inline="always", cache=True)
def _gradient_transform(src, dst):
    """``dst[i] = sum_a A[i, a] * src[a]``: four rows to six (the adjoint of _tile_transform)."""
    m0, m1, m2, m3 = src
    o0, o1, o2, o3, o4, o5 = dst
    for j in range(m0.shape[0]):
        even, odd = m0[j] + m2[j], m1[j] + m3[j]
        even4, odd4 = m0[j] + _twice(_twice(m2[j])), _twice(m1[j] + _twice(_twice(m3[j])))
        o0[j] = m0[j]
        o1[j] = even + odd                                                      # m0 + m1 + m2 + m3
        o2[j] = even - odd                                                      # m0 - m1 + m2 - m3
        o3[j] = even4 + odd4                                                    # m0 + 2 m1 + 4 m2 + 8 m3
        o4[j] = even4 - odd4                                                    # m0 - 2 m1 + 4 m2 - 8 m3
        o5[j] = m3[j]


@njit(nogil=True, cache=True)
def _to_channels_last(image, first, stop, pad_top, pad_left, out):
    """``out[n, r, q % 4, q // 4, c] = image[n, c, r - pad_top, q - pad_left]`` (zero outside
    ``image``) for samples ``first <= n < stop``; pads of any sign. Columns are dealt out by
    their place in a tile (``q % 4``) so that a tile row's columns ``4 tw + b`` are contiguous."""
    channels, height, width = image.shape[1], image.shape[2], image.shape[3]
    padded_h, slots = out.shape[1], out.shape[3]
    padded_w = TILE * slots
    q0, q1 = min(max(pad_left, 0), padded_w), min(max(pad_left + width, 0), padded_w)
    for n in range(first, stop):
        for r in range(padded_h):
            h = r - pad_top
            if h < 0 or h >= height:
                out[n, r] = 0
                continue
            for q in range(padded_w):
                pixel = out[n, r, q % TILE, q // TILE]
                if q < q0 or q >= q1:
                    pixel[:] = 0
                else:   # writes in order, reads across channels: 2x faster than reading in order;
                        # an unsigned column index skips the wraparound check, halving the copy
                        # (docs/decisions.md, G6)
                    for c in range(channels):
                        pixel[c] = image[n, c, h, np.uint64(q - pad_left)]


@njit(nogil=True, cache=True)
def _input_tiles(padded, first_row, stop_row, tiles_h, patches, half, first_tile):
    """``patches[p, j, c] = (B^T d B)[p]`` for ``d`` the 6x6 patch of ``padded`` (N, 4 tiles_h + 2,
    4, tiles_w + 1, C; from _to_channels_last) under tile ``j`` of the tile rows
    ``first_row <= n * tiles_h + th < stop_row``. Scratch ``half`` (6, 4, tiles_w + 1, C)."""
    slots, channels = padded.shape[3], padded.shape[4]
    count, tiles_w = patches.shape[1], padded.shape[3] - 1
    row_size, phase_size, tile_row_size = TILE * slots * channels, slots * channels, tiles_w * channels
    padded_flat, patches_flat, half_flat = padded.reshape(-1), patches.reshape(-1), half.reshape(-1)
    j = first_tile
    for tile_row in range(first_row, stop_row):
        n, th = tile_row // tiles_h, tile_row % tiles_h
        # columns, the whole tile row at once: half[i, q] = sum_a B^T[i, a] padded[n, 4 th + a, q]
        start = (n * padded.shape[1] + th * TILE) * row_size
        _patch_transform(_six_rows(padded_flat, start, row_size, row_size), _six_rows(half_flat, 0, row_size, row_size))
        # rows: patches[6 i + i2, j + tw] = sum_b B^T[i2, b] half[i, 4 tw + b], across the tiles;
        # column 4 tw + b lies at [b % 4, tw + b // 4]
        for i in range(PATCH):
            start = i * row_size
            columns = _four_rows(half_flat, start, phase_size, tile_row_size) + (
                _row(half_flat, start + channels, tile_row_size), _row(half_flat, start + phase_size + channels, tile_row_size))
            _patch_transform(columns, _six_rows(patches_flat, (i * PATCH * count + j) * channels, count * channels,
                                                tile_row_size))
        j += tiles_w


@njit(nogil=True, cache=True)
def _gradient_tiles(padded, first_row, stop_row, tiles_h, tiles, half, first_tile):
    """``tiles[p, j, k] = (A g A^T)[p]`` for ``g`` the 4x4 tile ``j`` of ``padded`` (N, 4 tiles_h,
    4, tiles_w, K; a grad_y from _to_channels_last, zero past its edges), tile rows as in
    _input_tiles, from tile ``first_tile``. Scratch ``half`` (6, 4, tiles_w, K)."""
    slots, channels = padded.shape[3], padded.shape[4]
    count = tiles.shape[1]
    row_size, tile_row_size = TILE * slots * channels, slots * channels
    padded_flat, tiles_flat, half_flat = padded.reshape(-1), tiles.reshape(-1), half.reshape(-1)
    j = first_tile
    for tile_row in range(first_row, stop_row):
        n, th = tile_row // tiles_h, tile_row % tiles_h
        # rows of the tiles: half[i, q] = sum_a A[i, a] g[4 th + a, q]; then their columns
        start = (n * padded.shape[1] + th * TILE) * row_size
        _gradient_transform(_four_rows(padded_flat, start, row_size, row_size), _six_rows(half_flat, 0, row_size, row_size))
        for i in range(PATCH):
            _gradient_transform(_four_rows(half_flat, i * row_size, tile_row_size, tile_row_size),
                                _six_rows(tiles_flat, (i * PATCH * count + j) * channels, count * channels, tile_row_size))
        j += slots


@njit(nogil=True, cache=True)
def _output_tiles(products, first_row, stop_row, tiles_h, y, half, rows, first_tile):
    """``y[n, k, 4 th + i, 4 tw + i2] = (A^T M A)[i, i2]`` with ``M[p] = products[p, j, k]`` for
    the tiles of _input_tiles; outputs past ``y``'s edges are dropped. Scratch ``half``
    (6, 4, tiles_w, K) and ``rows`` (4, 4, tiles_w, K): one tile row, channels-last."""
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    count, tiles_w = products.shape[1], rows.shape[2]
    row_size, tile_row_size = TILE * tiles_w * out_channels, tiles_w * out_channels
    products_flat, rows_flat, half_flat = products.reshape(-1), rows.reshape(-1), half.reshape(-1)
    j = first_tile
    for tile_row in range(first_row, stop_row):
        n, th = tile_row // tiles_h, tile_row % tiles_h
        # rows of M, across the tiles: half[a, i2, tw] = sum_b A^T[i2, b] M[6 a + b, j + tw]
        for a in range(PATCH):
            _tile_transform(_six_rows(products_flat, (a * PATCH * count + j) * out_channels, count * out_channels,
                                      tile_row_size), _four_rows(half_flat, a * row_size, tile_row_size, tile_row_size))
        # columns, the whole tile row at once: rows[i] = sum_a A^T[i, a] half[a]
        _tile_transform(_six_rows(half_flat, 0, row_size, row_size), _four_rows(rows_flat, 0, row_size, row_size))
        for i in range(min(TILE, out_h - th * TILE)):
            y_rows = y[n, :, th * TILE + i]
            for col in range(out_w):   # reads in order, writes across the channels' planes: 1.5x
                column = rows[i, col % TILE, col // TILE]   # faster than writing y's rows in order
                for k in range(out_channels):
                    y_rows[k, col] = column[k]
        j += tiles_w


@njit(inline="always", cache=True)
def _filter_rows(src, dst):
    """``dst[i] = sum_a G[i, a] * src[a]``: three rows to six (G = FILTER_TRANSFORM)."""
    g0, g1, g2 = src
    o0, o1, o2, o3, o4, o5 = dst
    quarter, sixth = g0.dtype.type(1 / 4), g0.dtype.type(1 / 6)
    twelfth, twenty_fourth = g0.dtype.type(1 / 12), g0.dtype.type(1 / 24)
    for j in range(g0.shape[0]):
        outer = g0[j] + g2[j]
        near = twenty_fourth * g0[j] + sixth * g2[j]
        o0[j] = quarter * g0[j]                             # g0 / 4
        o1[j] = -sixth * (outer + g1[j])                    # -(g0 + g1 + g2) / 6
        o2[j] = sixth * (g1[j] - outer)                     # -(g0 - g1 + g2) / 6
        o3[j] = near + twelfth * g1[j]                      # g0 / 24 + g1 / 12 + g2 / 6
        o4[j] = near - twelfth * g1[j]                      # g0 / 24 - g1 / 12 + g2 / 6
        o5[j] = g2[j]


@njit(nogil=True, cache=True)
def _transform_filters(w, rotated, group_start, in_first, in_stop, out_first, out_stop, taps, half, points, first,
                       step):
    """U = G f G^T for the filters from input channels ``in_first <= i < in_stop`` to output
    channels ``out_first <= o < out_stop`` of the group whose filters start at ``w[group_start]``
    (``w`` (K, C/g, 9)): ``points[first + p * step + (i - in_first) * outs + o - out_first]`` =
    U[p] of filter (i, o), outs = out_stop - out_first. Not ``rotated``: the forward filters,
    ``w[group_start + o, i]``; ``rotated``: the input gradient's, channels swapped and turned 180
    degrees, ``w[group_start + i, o, ::-1]``. Scratch ``taps`` (9, ins * outs), ``half`` (18, n)
    for n filters at a time. The taps are gathered tap-major, then transformed across the
    filters, columns then rows, like the tiles."""
    ins, outs = in_stop - in_first, out_stop - out_first   # taps rows may be longer than ins * outs
    for i in range(ins):   # writes in order (reading w across o instead: 5x slower, docs/decisions.md G5)
        for o in range(outs):
            if rotated:
                for t in range(9):
                    taps[t, i * outs + o] = w[group_start + in_first + i, out_first + o, 8 - t]
            else:
                for t in range(9):
                    taps[t, i * outs + o] = w[group_start + out_first + o, in_first + i, t]
    filters, chunk = ins * outs, half.shape[1]
    taps_flat, half_flat = taps.reshape(-1), half.reshape(-1)
    for start in range(0, filters, chunk):
        count = min(chunk, filters - start)
        # columns: half[3 i + b] = sum_a G[i, a] taps[3 a + b]
        for b in range(3):
            at = b * taps.shape[1] + start
            _filter_rows((_row(taps_flat, at, count), _row(taps_flat, at + 3 * taps.shape[1], count),
                          _row(taps_flat, at + 6 * taps.shape[1], count)), _six_rows(half_flat, b * chunk, 3 * chunk, count))
        # rows: U[6 i + i2] = sum_b G[i2, b] half[3 i + b]
        for i in range(PATCH):
            at = 3 * i * chunk
            _filter_rows((_row(half_flat, at, count), _row(half_flat, at + chunk, count), _row(half_flat, at + 2 * chunk, count)),
                         _six_rows(points, first + PATCH * i * step + start, step, count))


@njit(cache=True)
def _unaliased(length):
    """A row length at least ``length`` (elements) whose rows start in different L1 cache sets:
    rows a multiple of 4 KiB apart share the sets (8 ways), which makes gathering nine tap rows
    of 512 x 24 filters 4x slower (docs/decisions.md, G5)."""
    return -(-length // 1024) * 1024 + 16


@njit(parallel=True, cache=True)
def _filters_by_threads(w, rotated, groups, ins, outs, block, taps, half, points):
    """:func:`_transform_filters` of every filter, the threads taking consecutive shares of the
    ``ins`` input channels, ``block`` at a time; ``points`` (36, g, ins, outs) flat. Scratch per
    thread: ``taps`` rows, ``half`` rows (18 * FILTER_CHUNK)."""
    threads, group_start_step = taps.shape[0], w.shape[0] // groups
    for thread in prange(threads):
        first_in, stop_in = share(ins, thread, threads)
        for g in range(groups):
            for first in range(first_in, stop_in, block):
                stop = min(first + block, stop_in)
                filters = _unaliased((stop - first) * outs)
                _transform_filters(w, rotated, g * group_start_step, first, stop, 0, outs,
                                   taps[thread, :9 * filters].reshape(9, filters), half[thread].reshape(18, FILTER_CHUNK),
                                   points, (g * ins + first) * outs, groups * ins * outs)


def _transformed_filters(w, groups, rotated=False):
    """U (36, g, ins, outs) = G f G^T for each filter ``f`` of ``w (K, C/g, 3, 3)`` (not ``rotated``:
    ins = C/g, outs = K/g; ``rotated``, the input gradient's: ins = K/g, outs = C/g), laid out
    for the products ``V[p] (T, ins) @ U[p] (ins, outs)``, a block of input channels at a time
    (:func:`_transform_filters`).

    FLOPs about ``100 K C/g`` (two 3-to-6 transforms of 9 and 18 values per filter); memory:
    ``w`` read once, U (``36 K C/g`` elements) written once. Accuracy: U within a few ulp of G f
    G^T (sums of up to 3 terms a stage, in the working precision). Two stages rather than one BLAS
    product of TAPS_TO_POINTS with the taps (648 flops a filter): about 2x faster at 512 -> 512
    channels; the whole U at once (38 MB there) is bound by memory (docs/decisions.md, G5)."""
    out_channels, group_in = w.shape[:2]
    group_out = out_channels // groups
    ins, outs = (group_out, group_in) if rotated else (group_in, group_out)
    threads = thread_count()
    # a reused buffer: a fresh 38 MB array (512 channels) cost more in page faults than the transform
    filters = workspace.borrow("winograd_filters", POINTS * out_channels * group_in, w.dtype)
    block = max(1, min(ins, TRANSFORM_BLOCK_BYTES // (9 * outs * w.dtype.itemsize)))
    taps = workspace.per_thread("winograd_taps", threads, 9 * _unaliased(block * outs), w.dtype)
    half = workspace.per_thread("winograd_filter_half", threads, 18 * FILTER_CHUNK, w.dtype)
    _filters_by_threads(w.reshape(out_channels, group_in, 9), rotated, groups, ins, outs, block, taps, half, filters)
    return filters.reshape(POINTS, groups, ins, outs)


class _Tiling:
    """The tiles of one pass (2-d arrays ``(N, C, H, W)`` in, ``(N, K, OH, OW)`` out, ``filter_values``
    = 36 K C/g transformed filters), the sample chunks copied channels-last and the blocks of
    tile rows the threads share, sized so that all the pass's scratch stays under the workspace
    limit, with the scratch arrays each needs.

    Scratch, all borrowed: the filters (36 K C/g values) and per thread a transform block of
    taps (forward and input gradient), or the weight gradient's 36-point partial sum per thread;
    per thread the tile-row scratch of the transforms; the
    channels-last copy of a chunk (at most CHANNELS_LAST_BYTES, at most half of what the
    limit leaves); the rest for the blocks' patches and products."""

    def __init__(self, channels, out_channels, out_h, out_w, dtype, filter_values, weight_pass=False, threads=None):
        self.tiles_h, self.tiles_w = -(-out_h // TILE), -(-out_w // TILE)
        self.dtype = np.dtype(dtype)
        self.threads = thread_count() if threads is None else threads
        self.channels, self.out_channels = channels, out_channels
        itemsize = self.dtype.itemsize
        # per sample: the input (4 tiles_h + 2 rows of 4 (tiles_w + 1) columns), maybe grad_y
        copied = (TILE * self.tiles_h + 2) * TILE * (self.tiles_w + 1) * channels
        if weight_pass:
            copied += TILE * self.tiles_h * TILE * self.tiles_w * out_channels
        self.sample_bytes = copied * itemsize
        self.tile_bytes = POINTS * (channels + out_channels) * itemsize   # its patch and product
        if weight_pass:
            held = self.threads * filter_values * itemsize
        else:
            held = filter_values * itemsize + self.threads * max(TRANSFORM_BLOCK_BYTES, 9 * max(channels, out_channels) * itemsize)
        self.held_bytes = held + self.threads * (self.half_size() + self.rows_size()) * itemsize
        room = workspace.workspace_limit() - self.held_bytes
        self.samples_per_chunk = max(1, min(CHANNELS_LAST_BYTES, room // 2) // self.sample_bytes)

    def half_size(self):
        """Elements of a thread's scratch for the middle stage of the tile transforms, (6, 4,
        tiles_w + 1, C) for the input's or (6, 4, tiles_w, K) for the output's."""
        return PATCH * TILE * (self.tiles_w + 1) * max(self.channels, self.out_channels)

    def rows_size(self):
        """Elements of a thread's tile row of outputs, (4, 4, tiles_w, K)."""
        return TILE * TILE * self.tiles_w * self.out_channels

    def least_bytes(self):
        """Scratch with the smallest chunk and blocks: one sample, one tile row per thread."""
        return self.held_bytes + self.sample_bytes + self.threads * self.tiles_w * self.tile_bytes

    def chunks(self, batch):
        return [(first, min(first + self.samples_per_chunk, batch)) for first in range(0, batch, self.samples_per_chunk)]

    def block_rows(self, samples):
        """Tile rows per block in a chunk of ``samples``: about BLOCK_BYTES of V and M each, and
        the same number of near-equal blocks for every thread."""
        tile_rows = samples * self.tiles_h
        reserved = self.held_bytes + self.samples_per_chunk * self.sample_bytes
        per_block = max(1, workspace.block_columns(self.tile_bytes, self.threads, tile_rows * self.tiles_w, reserved)
                        // self.tiles_w)
        per_thread = -(-tile_rows // (self.threads * per_block))
        return -(-tile_rows // (self.threads * per_thread))

    def per_thread(self, name, size):
        return workspace.per_thread(name, self.threads, size, self.dtype)

    def block_scratch(self, block_rows, weight_pass=False):
        """The threads' scratch for blocks of ``block_rows`` tile rows: patches, products (or grad_y's
        tiles), the transforms' middle stage and, but for the weight gradient, a tile row of outputs."""
        tiles = block_rows * self.tiles_w
        arrays = (self.per_thread("winograd_patches", POINTS * tiles * self.channels),
                   self.per_thread("winograd_products", POINTS * tiles * self.out_channels),
                   self.per_thread("winograd_half", self.half_size()))
        return arrays if weight_pass else arrays + (self.per_thread("winograd_rows", self.rows_size()),)

    def channels_last(self, name, image, rows, slots, pad_top, pad_left):
        """``image (S, C, H, W)`` copied by the threads to a zero-padded ``(S, rows, 4, slots, C)``
        (see _to_channels_last)."""
        out = workspace.borrow(name, image.shape[0] * rows * TILE * slots * image.shape[1], self.dtype).reshape(
            image.shape[0], rows, TILE, slots, image.shape[1])
        _channels_last_by_threads(image, pad_top, pad_left, out, self.threads)
        return out

    def padded_input(self, image, pad_top, pad_left):
        return self.channels_last("winograd_input", image, TILE * self.tiles_h + 2, self.tiles_w + 1, pad_top, pad_left)


@njit(parallel=True, cache=True)
def _channels_last_by_threads(image, pad_top, pad_left, out, threads):
    """:func:`_to_channels_last` of all of ``image``, the threads taking consecutive samples."""
    for thread in prange(threads):
        first, stop = share(image.shape[0], thread, threads)
        _to_channels_last(image, first, stop, pad_top, pad_left, out)


@njit(nogil=True, cache=True)
def _block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half):
    """(first, stop, V): the tile rows of block ``block`` (``block_rows`` each, of ``tile_rows``)
    and their patches (_input_tiles) in ``thread``'s rows of ``patches``, scratch ``half``."""
    tiles_w, channels = padded.shape[3] - 1, padded.shape[4]
    first, stop = block * block_rows, min((block + 1) * block_rows, tile_rows)
    v = scratch(patches, thread, (POINTS, (stop - first) * tiles_w, channels))
    _input_tiles(padded, first, stop, tiles_h, v, scratch(half, thread, (PATCH, TILE, tiles_w + 1, channels)), 0)
    return first, stop, v


@njit(parallel=True, cache=True)
def _tile_blocks(padded, u, y, tiles_h, block_rows, patches, products, half, rows):
    """``y (S, K, OH, OW) = conv(x)`` for a chunk of samples whose input ``padded`` came from
    _to_channels_last, through transformed filters ``u`` (36, g, C/g, K/g): the threads take
    consecutive blocks of ``block_rows`` tile rows; per block, V (_input_tiles), the 36 x g
    products M[p] = V[p] @ U[p] in BLAS and the output tiles (_output_tiles). Scratch rows per
    thread: ``patches``, ``products``, ``half``, ``rows``."""
    threads, out_channels, tiles_w = patches.shape[0], y.shape[1], padded.shape[3] - 1
    groups, group_in, group_out = u.shape[1], u.shape[2], u.shape[3]
    tile_rows = y.shape[0] * tiles_h
    for thread in prange(threads):
        first_block, stop_block = share(-(-tile_rows // block_rows), thread, threads)
        for block in range(first_block, stop_block):
            first, stop, v = _block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half)
            m = scratch(products, thread, (POINTS, v.shape[1], out_channels))
            for p in range(POINTS):
                for g in range(groups):
                    gemm(v[p, :, g * group_in:(g + 1) * group_in], u[p, g], m[p, :, g * group_out:(g + 1) * group_out], 0.0)
            _output_tiles(m, first, stop, tiles_h, y, scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)),
                          scratch(rows, thread, (TILE, TILE, tiles_w, out_channels)), 0)


def _winograd(x, u, y, tiling, pad_top, pad_left):
    """``y (N, K, OH, OW) = conv(x (N, C, H, W))`` through transformed filters ``u``, the input
    read from ``(-pad_top, -pad_left)`` on (any sign), by tile blocks (:func:`_tile_blocks`), a
    chunk of samples at a time."""
    for first, stop in tiling.chunks(x.shape[0]):
        padded = tiling.padded_input(x[first:stop], pad_top, pad_left)
        block_rows = tiling.block_rows(stop - first)
        _tile_blocks(padded, u, y[first:stop], tiling.tiles_h, block_rows, *tiling.block_scratch(block_rows))


def _planes(array):
    """(N, C, 1, H, W) -> the contiguous (N, C, H, W) view."""
    return array.reshape(array.shape[0], array.shape[1], array.shape[3], array.shape[4])


def _filter_block_outs(ins, itemsize):
    """Output channels per filter block: U of about ``workspace.BLOCK_BYTES``, rounded up to a
    multiple of 8: 32 at 512 input channels, 64 at 256 (float32), the widths that beat the
    others tried (16 to 128) there (``numbaconv bench --layer conv3x3_256,conv3x3_512 --algo
    winograd --pass forward`` with other widths; docs/decisions.md, G3)."""
    return -(-workspace.BLOCK_BYTES // (POINTS * ins * itemsize) // 8) * 8


def _by_filter_blocks(tiling, groups, batch):
    """Whether the pass runs filter block by filter block (:func:`_winograd_filter_blocks`): one
    group, at least FILTER_BLOCKS_TILE_RATIO output channels per tile (U, 36 K C values, is
    then several times the tiles' V, 36 T C), and all the tiles' V and M within the workspace
    limit (counting a whole U, as the tile blocks would hold: an over-estimate)."""
    tiles = batch * tiling.tiles_h * tiling.tiles_w
    return (groups == 1 and tiles * FILTER_BLOCKS_TILE_RATIO <= tiling.out_channels
            and workspace.over_limit(_filter_blocks_bytes(tiling, batch)) is None)


def _weight_by_filter_blocks_pays(tiling, groups, batch):
    """Whether the weight gradient runs by filter blocks (:func:`_weight_by_filter_blocks`): one
    group, the threads' partial sums (36 K C values each) more than all the tiles' V and Y (36 T
    (C + K)), and all of those within the workspace limit: filter blocks win at ratios of 2 and
    more and lose at 1 and below (``numbaconv bench --layer conv3x3_512,conv3x3_256,conv3x3_128
    --algo winograd --pass weight``; docs/decisions.md, G4)."""
    tiles = batch * tiling.tiles_h * tiling.tiles_w
    return (groups == 1 and tiling.threads * tiling.out_channels * tiling.channels > tiles * (tiling.channels + tiling.out_channels)
            and workspace.over_limit(_filter_blocks_bytes(tiling, batch)) is None)


def _filter_blocks_bytes(tiling, batch):
    tiles = batch * tiling.tiles_h * tiling.tiles_w
    outs = _filter_block_outs(tiling.channels, tiling.dtype.itemsize)
    per_thread = (9 + POINTS) * tiling.channels * outs + 18 * FILTER_CHUNK
    return (batch * tiling.sample_bytes + tiling.held_bytes
            + (tiles * tiling.tile_bytes + tiling.threads * per_thread * tiling.dtype.itemsize))


@njit(parallel=True, cache=True)
def _all_input_tiles(padded, tiles_h, patches, half):
    """_input_tiles of every tile row of ``padded`` into ``patches`` (36, all tiles, C), the threads
    taking consecutive tile rows. Scratch ``half`` rows per thread."""
    threads, channels, tiles_w = half.shape[0], padded.shape[4], padded.shape[3] - 1
    for thread in prange(threads):
        first, stop = share(padded.shape[0] * tiles_h, thread, threads)
        _input_tiles(padded, first, stop, tiles_h, patches, scratch(half, thread, (PATCH, TILE, tiles_w + 1, channels)),
                     first * tiles_w)


@njit(parallel=True, cache=True)
def _all_output_tiles(products, tiles_h, y, half, rows):
    """_output_tiles of every tile row of ``products`` (36, all tiles, K) into ``y``, the threads
    taking consecutive tile rows. Scratch rows per thread ``half`` and ``rows``."""
    threads, out_channels, tiles_w = half.shape[0], y.shape[1], -(-y.shape[3] // TILE)
    for thread in prange(threads):
        first, stop = share(y.shape[0] * tiles_h, thread, threads)
        _output_tiles(products, first, stop, tiles_h, y, scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)),
                      scratch(rows, thread, (TILE, TILE, tiles_w, out_channels)), first * tiles_w)


@njit(parallel=True, cache=True)
def _multiply_filter_blocks(w, rotated, patches, products, block_outs, taps, half, filters):
    """``products[p, :, outs] = patches[p] @ U[p][:, outs]`` for every block of ``block_outs``
    output channels, the threads taking consecutive blocks and transforming each block's filters
    (``w`` (K, C, 9), one group; :func:`_transform_filters`) just before using them. Scratch rows
    per thread: ``taps``, ``half``, ``filters`` (36 rows of _unaliased(C * block_outs))."""
    threads, channels, out_channels = taps.shape[0], patches.shape[2], products.shape[2]
    for thread in prange(threads):
        first_block, stop_block = share(-(-out_channels // block_outs), thread, threads)
        for block in range(first_block, stop_block):
            first, stop = block * block_outs, min((block + 1) * block_outs, out_channels)
            size, step = channels * (stop - first), _unaliased(channels * (stop - first))
            points = filters[thread]
            _transform_filters(w, rotated, 0, 0, channels, first, stop, scratch(taps, thread, (9, step)),
                               scratch(half, thread, (18, FILTER_CHUNK)), points, 0, step)
            for p in range(POINTS):
                gemm(patches[p], points[p * step:p * step + size].reshape(channels, stop - first),
                     products[p, :, first:stop], 0.0)


def _winograd_filter_blocks(x, w, rotated, y, tiling, pad_top, pad_left):
    """:func:`_winograd` for few tiles and many filters (one group): all tiles' V first, then each
    thread takes blocks of output channels, transforming the block's filters (U stays in cache:
    36 K C values of a wide layer, 38 MB at 512 channels, would otherwise go through memory
    twice) and multiplying all the tiles with them; then the output tiles. It pays from
    FILTER_BLOCKS_TILE_RATIO output channels per tile on (``numbaconv bench --layer
    conv3x3_256,conv3x3_512 --algo winograd --pass forward,input`` with the ratio changed;
    docs/decisions.md, G2)."""
    batch, channels, out_channels = x.shape[0], x.shape[1], y.shape[1]
    padded = tiling.padded_input(x, pad_top, pad_left)
    tiles = batch * tiling.tiles_h * tiling.tiles_w
    patches = workspace.borrow("winograd_all_patches", POINTS * tiles * channels, x.dtype).reshape(POINTS, tiles, channels)
    products = workspace.borrow("winograd_all_products", POINTS * tiles * out_channels, x.dtype).reshape(
        POINTS, tiles, out_channels)
    half = tiling.per_thread("winograd_half", tiling.half_size())
    _all_input_tiles(padded, tiling.tiles_h, patches, half)
    block_outs = _filter_block_outs(channels, x.dtype.itemsize)
    step = _unaliased(channels * block_outs)
    _multiply_filter_blocks(w, rotated, patches, products, block_outs, tiling.per_thread("winograd_taps", 9 * step),
                            tiling.per_thread("winograd_filter_half", 18 * FILTER_CHUNK),
                            tiling.per_thread("winograd_filter_block", POINTS * step))
    _all_output_tiles(products, tiling.tiles_h, y, half, tiling.per_thread("winograd_rows", tiling.rows_size()))


def _convolve(x, w, groups, rotated, y, pad_top, pad_left):
    """``y = conv(x)`` with the filters of ``w`` (``rotated``: the input gradient's), by filter
    blocks or by tile blocks."""
    channels, out_channels = x.shape[1], y.shape[1]
    tiling = _Tiling(channels, out_channels, y.shape[2], y.shape[3], x.dtype, POINTS * w.shape[0] * w.shape[1])
    with single_threaded_blas():
        if _by_filter_blocks(tiling, groups, x.shape[0]):
            _winograd_filter_blocks(x, w.reshape(w.shape[0], w.shape[1], 9), rotated, y, tiling, pad_top, pad_left)
        else:
            _winograd(x, _transformed_filters(w, groups, rotated), y, tiling, pad_top, pad_left)


def forward(spec, x, w, out):
    _convolve(_planes(x), w, spec.groups, False, _planes(out), spec.pad_lo[1], spec.pad_lo[2])


def backward_input(spec, grad_y, w, grad_x):
    _convolve(_planes(grad_y), w, spec.groups, True, _planes(grad_x), 2 - spec.pad_lo[1], 2 - spec.pad_lo[2])


@njit(parallel=True, cache=True)
def _weight_blocks(padded, padded_grad, tiles_h, block_rows, patches, grads, half, partials):
    """``partials[thread, p, g] += sum over the thread's tiles of Y[p].T @ V[p]`` (group ``g``'s
    channels) for a chunk of samples: ``padded`` the input and ``padded_grad`` grad_y from
    _to_channels_last, the threads taking consecutive blocks of ``block_rows`` tile rows. Scratch
    rows per thread: ``patches``, ``grads`` (grad_y's tiles), ``half``."""
    threads, out_channels, tiles_w = patches.shape[0], padded_grad.shape[4], padded.shape[3] - 1
    groups, group_out, group_in = partials.shape[2], partials.shape[3], partials.shape[4]
    tile_rows = padded.shape[0] * tiles_h
    for thread in prange(threads):
        first_block, stop_block = share(-(-tile_rows // block_rows), thread, threads)
        for block in range(first_block, stop_block):
            first, stop, v = _block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half)
            y = scratch(grads, thread, (POINTS, v.shape[1], out_channels))
            _gradient_tiles(padded_grad, first, stop, tiles_h, y,
                            scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)), 0)
            for p in range(POINTS):
                for g in range(groups):
                    gemm(y[p, :, g * group_out:(g + 1) * group_out].T, v[p, :, g * group_in:(g + 1) * group_in],
                         partials[thread, p, g], 1.0)


@njit(parallel=True, cache=True)
def _partials_to_taps(partials, taps_by_points, grad_w, threads):
    """``grad_w[r, t] = sum over threads' partials and points p of partials[., p, r] *
    taps_by_points[p, t]`` (r runs over the K C/g filters): the threads take consecutive filters,
    adding the partials in their order."""
    filters = grad_w.shape[0]
    for thread in prange(threads):
        first, stop = share(filters, thread, threads)
        for partial in range(partials.shape[0]):
            gemm(partials[partial, :, first:stop].T, taps_by_points, grad_w[first:stop], 0.0 if partial == 0 else 1.0)


@njit(parallel=True, cache=True)
def _all_gradient_tiles(padded_grad, tiles_h, grads, half):
    """_gradient_tiles of every tile row of ``padded_grad`` into ``grads`` (36, all tiles, K), the
    threads taking consecutive tile rows. Scratch ``half`` rows per thread."""
    threads, out_channels, tiles_w = half.shape[0], padded_grad.shape[4], padded_grad.shape[3]
    for thread in prange(threads):
        first, stop = share(padded_grad.shape[0] * tiles_h, thread, threads)
        _gradient_tiles(padded_grad, first, stop, tiles_h, grads,
                        scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)), first * tiles_w)


@njit(parallel=True, cache=True)
def _weight_filter_blocks(patches, grads, block_outs, taps_by_points, sums, grad_w):
    """``grad_w[k, c] = G^T (sum over all tiles of Y[p, k] V[p, c]) G`` (one group; ``patches`` V
    and ``grads`` Y of all tiles, ``grad_w`` (K, C, 9)), the threads taking consecutive blocks of
    ``block_outs`` output channels: each block's 36 sums (rows of ``sums`` per thread) go back to
    the taps while they are in cache."""
    threads, channels, out_channels = sums.shape[0], patches.shape[2], grads.shape[2]
    for thread in prange(threads):
        first_block, stop_block = share(-(-out_channels // block_outs), thread, threads)
        for block in range(first_block, stop_block):
            first, stop = block * block_outs, min((block + 1) * block_outs, out_channels)
            block_sums = scratch(sums, thread, (POINTS, (stop - first) * channels))
            for p in range(POINTS):
                gemm(grads[p, :, first:stop].T, patches[p], block_sums[p].reshape(stop - first, channels), 0.0)
            gemm(block_sums.T, taps_by_points, grad_w[first:stop].reshape((stop - first) * channels, 9), 0.0)


def _weight_by_filter_blocks(x, grad_y, grad_w, tiling, pad_top, pad_left):
    """The weight gradient of few tiles and many filters (one group): all tiles' V and Y, then
    :func:`_weight_filter_blocks` (no per-thread partial sums of 36 K C values: 38 MB each at 512
    channels)."""
    batch, channels, out_channels = x.shape[0], x.shape[1], grad_y.shape[1]
    tiles = batch * tiling.tiles_h * tiling.tiles_w
    padded = tiling.padded_input(x, pad_top, pad_left)
    padded_grad = tiling.channels_last("winograd_grad", grad_y, TILE * tiling.tiles_h, tiling.tiles_w, 0, 0)
    patches = workspace.borrow("winograd_all_patches", POINTS * tiles * channels, x.dtype).reshape(POINTS, tiles, channels)
    grads = workspace.borrow("winograd_all_products", POINTS * tiles * out_channels, x.dtype).reshape(
        POINTS, tiles, out_channels)
    half = tiling.per_thread("winograd_half", tiling.half_size())
    _all_input_tiles(padded, tiling.tiles_h, patches, half)
    _all_gradient_tiles(padded_grad, tiling.tiles_h, grads, half)
    block_outs = _filter_block_outs(channels, x.dtype.itemsize)
    _weight_filter_blocks(patches, grads, block_outs, TAPS_TO_POINTS.astype(x.dtype),
                          tiling.per_thread("winograd_filter_block", POINTS * channels * block_outs),
                          grad_w.reshape(out_channels, channels, 9))


def backward_weight(spec, x, grad_y, grad_w):
    """``grad_w[k, c] = G^T (sum over tiles of Y[t, k] * V[t, c]) G``. By tile blocks: the 36
    products reduce over each block's tiles in BLAS, into a partial sum per thread; the partials
    are added in thread order (the same rounding every run) as they go back to the taps. By
    filter blocks (few tiles, many filters, :func:`_by_filter_blocks`): each thread sums all
    tiles for a block of output channels (:func:`_weight_filter_blocks`)."""
    x, grad_y = _planes(x), _planes(grad_y)
    groups, group_out, group_in = spec.groups, spec.group_out_channels, spec.group_in_channels
    channels, out_channels = spec.in_channels, spec.out_channels
    tiling = _Tiling(channels, out_channels, grad_y.shape[2], grad_y.shape[3], x.dtype,
                     POINTS * out_channels * group_in, weight_pass=True)
    with single_threaded_blas():
        if _weight_by_filter_blocks_pays(tiling, groups, x.shape[0]):
            _weight_by_filter_blocks(x, grad_y, grad_w, tiling, spec.pad_lo[1], spec.pad_lo[2])
            return
        shape = (tiling.threads, POINTS, groups, group_out, group_in)
        partials = workspace.borrow("winograd_weight_partials", int(np.prod(shape)), x.dtype).reshape(shape)
        partials[...] = 0
        for first, stop in tiling.chunks(x.shape[0]):
            padded = tiling.padded_input(x[first:stop], spec.pad_lo[1], spec.pad_lo[2])
            padded_grad = tiling.channels_last("winograd_grad", grad_y[first:stop], TILE * tiling.tiles_h, tiling.tiles_w, 0, 0)
            block_rows = tiling.block_rows(stop - first)
            _weight_blocks(padded, padded_grad, tiling.tiles_h, block_rows,
                           *tiling.block_scratch(block_rows, weight_pass=True), partials)
        _partials_to_taps(partials.reshape(tiling.threads, POINTS, -1), TAPS_TO_POINTS.astype(x.dtype),
                          grad_w.reshape(-1, 9), tiling.threads)
