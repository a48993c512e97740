"""Winograd F(4x4, 3x3): 2-d, 3x3, stride-1, dilation-1 convolutions with 4x fewer multiplications.

Cut the output into 4x4 tiles. Tile ``t`` of sample ``n`` needs a 6x6 patch
``d`` of the input; with the transforms ``B^T``, ``G`` and ``A^T``
(cpu/winograd_transforms.py),

    U[c, k] = G  g[k, c] G^T     (6x6 per filter, once per call)
    V[t, c] = B^T d[t, c] B      (6x6 per input patch)
    M[t, k] = sum_c V[t, c] * U[c, k]   elementwise in the 6x6: 36 matrix products
    y[t, k] = A^T M[t, k] A      (4x4 per output tile)

so each output costs 36/16 = 2.25 multiplications per input channel instead
of 9, and they happen inside BLAS: for each of the 36 points ``p`` a product
``M[p] (T, K) = V[p] (T, C) @ U[p] (C, K)`` over a block of ``T`` tiles
(per group with ``groups > 1``), called from the Numba kernels (``blas.gemm``).
The tiles' layout, the filter transform and the sizes of chunks and blocks
are in cpu/winograd_tiling.py; this module holds the passes.

Input gradient: the same transform with the 180-degree-rotated kernel,
channels swapped within each group (gathered from ``w`` by the filter
transform, ``winograd_tiling.transform_filters``), on ``grad_y`` padded by
``2 - pad_lo`` (the input gradient is the full correlation of ``grad_y``
with the rotated kernel). Weight gradient: the adjoint. With ``Y[t, k] = A
dy[t, k] A^T`` (6x6 per 4x4 tile of ``grad_y``, zero past its edges),
``dU[p] (K, C) = sum over tiles of Y[p].T @ V[p]`` (BLAS reducing over each
block's tiles into a partial sum per thread, the partials added in thread
order) and ``grad_w[k, c] = G^T dU[k, c] G``; with
few tiles for many filters (partials larger than all the tiles' V and Y)
each thread sums all tiles for a block of output channels instead
(:func:`_weight_by_filter_blocks_pays`).

Threads: every stage runs on all the threads (``threads.on_threads``), each taking a
consecutive share, calling BLAS (held to one thread) from inside
(cpu/threads.py says why). ``python bench/train_step.py`` times these passes
right after PyTorch's operations (its conv2 runs here).

Blocks are whole tile rows, the same number per thread. Where there are few
tiles for many filters (at least FILTER_BLOCKS_TILE_RATIO output channels
per tile: wide layers at 7x7 and 14x14, small batches) ``U`` would be the
largest array (38 MB at 512 -> 512 channels, against 2.4 MB of ``V`` for
N=8), so the blocks go the other way: all tiles' ``V`` first, then each
thread takes blocks of output channels, transforms their filters and
multiplies all tiles with them while that part of ``U`` is in cache
(:func:`_winograd_filter_blocks`).

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
import numpy as np
from numba import njit

from . import workspace
from .blas import gemm
from .common import ZERO
from .threads import add_in_thread_order, most_threads, on_threads, scratch, share, single_threaded_blas
from .winograd_tiling import (FILTER_CHUNK, Tiling, block_patches, gradient_tiles, input_tiles, output_tiles,
                              transform_filters, transformed_filters, unaliased)
from .winograd_transforms import PATCH, POINTS, TAPS_TO_POINTS, TILE

# FLOPs of one uncut kernel call: a quarter second at 100 GFLOP/s (counted as direct
# convolution), this algorithm's slowest rate on dense layers; longer passes run in slices
# (numbaconv.slices, docs/decisions.md).
SLICE_FLOPS = int(2.5e10)
# Where NaN and Inf land differently from the reference (numbaconv.functional): the transforms
# add neighbouring values, so one non-finite value spreads over the outputs of its tiles
# (Inf - Inf = NaN) and NaN/Inf land where the reference has finite values.
INEXACT_NONFINITE = {"forward": "result", "input": "result", "weight": "result"}

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
    threads, filter_values = most_threads(), POINTS * spec.out_channels * spec.group_in_channels
    (in_h, in_w), (out_h, out_w) = spec.in_size[1:], spec.out_size[1:]
    passes = [Tiling(spec.in_channels, spec.out_channels, out_h, out_w, np.float64, filter_values, threads=threads),
              Tiling(spec.out_channels, spec.in_channels, in_h, in_w, np.float64, filter_values, threads=threads),
              Tiling(spec.in_channels, spec.out_channels, out_h, out_w, np.float64, filter_values, True, threads)]
    return workspace.over_limit(max(tiling.least_bytes() for tiling in passes))


def tile_count(spec):
    """How many 4x4 output tiles the forward pass of ``spec`` (3-d form) computes."""
    out_h, out_w = spec.out_size[1:]
    return spec.batch * -(-out_h // TILE) * -(-out_w // TILE)


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


@njit(cache=True)
def _tile_blocks(thread, threads, padded, u, y, tiles_h, block_rows, patches, products, half, rows, nonfinite):
    """``y (S, K, OH, OW) = conv(x)`` for a chunk of samples whose input ``padded`` came from
    to_channels_last, through transformed filters ``u`` (36, g, C/g, K/g): the threads take
    consecutive blocks of ``block_rows`` tile rows; per block, V (input_tiles), the 36 x g
    products M[p] = V[p] @ U[p] in BLAS and the output tiles (output_tiles), whose non-finite
    outputs each thread counts into ``nonfinite[thread]``. Scratch rows per thread:
    ``patches``, ``products``, ``half``, ``rows``."""
    out_channels, tiles_w = y.shape[1], padded.shape[3] - 1
    groups, group_in, group_out = u.shape[1], u.shape[2], u.shape[3]
    tile_rows = y.shape[0] * tiles_h
    nonfinite[thread] = 0
    first_block, stop_block = share(-(-tile_rows // block_rows), thread, threads)
    for block in range(first_block, stop_block):
        first, stop, v = block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half)
        m = scratch(products, thread, (POINTS, v.shape[1], out_channels))
        for p in range(POINTS):
            for g in range(groups):
                gemm(v[p, :, g * group_in:(g + 1) * group_in], u[p, g], m[p, :, g * group_out:(g + 1) * group_out], 0.0)
        nonfinite[thread] += output_tiles(m, first, stop, tiles_h, y,
                                          scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)),
                                          scratch(rows, thread, (TILE, TILE, tiles_w, out_channels)),
                                          ZERO)


def _winograd(x, u, y, tiling, pad_top, pad_left):
    """``y (N, K, OH, OW) = conv(x (N, C, H, W))`` through transformed filters ``u``, the input
    read from ``(-pad_top, -pad_left)`` on (any sign), by tile blocks (:func:`_tile_blocks`), a
    chunk of samples at a time. Returns whether every output is finite."""
    nonfinite = np.zeros(tiling.threads, np.int64)
    finite = True
    for first, stop in tiling.chunks(x.shape[0]):
        padded = tiling.padded_input(x[first:stop], pad_top, pad_left)
        block_rows = tiling.block_rows(stop - first)
        on_threads(_tile_blocks, tiling.threads, padded, u, y[first:stop], tiling.tiles_h, block_rows,
                   *tiling.block_scratch(block_rows), nonfinite)
        finite = finite and not nonfinite.any()
    return finite


@njit(cache=True)
def _all_input_tiles(thread, threads, padded, tiles_h, patches, half):
    """input_tiles of every tile row of ``padded`` into ``patches`` (36, all tiles, C), the threads
    taking consecutive tile rows. Scratch ``half`` rows per thread."""
    channels, tiles_w = padded.shape[4], padded.shape[3] - 1
    first, stop = share(padded.shape[0] * tiles_h, thread, threads)
    input_tiles(padded, first, stop, tiles_h, patches, scratch(half, thread, (PATCH, TILE, tiles_w + 1, channels)),
                first * tiles_w)


@njit(cache=True)
def _all_output_tiles(thread, threads, products, tiles_h, y, half, rows, nonfinite):
    """output_tiles of every tile row of ``products`` (36, all tiles, K) into ``y``, the threads
    taking consecutive tile rows, each counting its non-finite outputs into
    ``nonfinite[thread]``. Scratch rows per thread ``half`` and ``rows``."""
    out_channels, tiles_w = y.shape[1], -(-y.shape[3] // TILE)
    first, stop = share(y.shape[0] * tiles_h, thread, threads)
    nonfinite[thread] = output_tiles(products, first, stop, tiles_h, y,
                                     scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)),
                                     scratch(rows, thread, (TILE, TILE, tiles_w, out_channels)), first * tiles_w)


@njit(cache=True)
def _multiply_filter_blocks(thread, threads, w, rotated, patches, products, block_outs, taps, half, filters):
    """``products[p, :, outs] = patches[p] @ U[p][:, outs]`` for every block of ``block_outs``
    output channels, the threads taking consecutive blocks and transforming each block's filters
    (``w`` (K, C, 9), one group; :func:`transform_filters`) just before using them. Scratch rows
    per thread: ``taps``, ``half``, ``filters`` (36 rows of unaliased(C * block_outs))."""
    channels, out_channels = patches.shape[2], products.shape[2]
    first_block, stop_block = share(-(-out_channels // block_outs), thread, threads)
    for block in range(first_block, stop_block):
        first, stop = block * block_outs, min((block + 1) * block_outs, out_channels)
        size, step = channels * (stop - first), unaliased(channels * (stop - first))
        points = filters[thread]
        transform_filters(w, rotated, ZERO, ZERO, channels, first, stop, scratch(taps, thread, (9, step)),
                          scratch(half, thread, (18, FILTER_CHUNK)), points, ZERO, step)
        for p in range(POINTS):
            gemm(patches[p], points[p * step:p * step + size].reshape(channels, stop - first),
                 products[p, :, first:stop], 0.0)


def _winograd_filter_blocks(x, w, rotated, y, tiling, pad_top, pad_left):
    """:func:`_winograd` for few tiles and many filters (one group): all tiles' V first, then each
    thread takes blocks of output channels, transforming the block's filters (U stays in cache:
    36 K C values of a wide layer, 38 MB at 512 channels, would otherwise go through memory
    twice) and multiplying all the tiles with them; then the output tiles. Returns whether
    every output is finite. It pays from
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
    on_threads(_all_input_tiles, tiling.threads, padded, tiling.tiles_h, patches, half)
    block_outs = _filter_block_outs(channels, x.dtype.itemsize)
    step = unaliased(channels * block_outs)
    on_threads(_multiply_filter_blocks, tiling.threads, w, rotated, patches, products, block_outs,
               tiling.per_thread("winograd_taps", 9 * step),
               tiling.per_thread("winograd_filter_half", 18 * FILTER_CHUNK),
               tiling.per_thread("winograd_filter_block", POINTS * step))
    nonfinite = np.zeros(tiling.threads, np.int64)
    on_threads(_all_output_tiles, tiling.threads, products, tiling.tiles_h, y, half,
               tiling.per_thread("winograd_rows", tiling.rows_size()), nonfinite)
    return not nonfinite.any()


def _convolve(x, w, groups, rotated, y, pad_top, pad_left):
    """``y = conv(x)`` with the filters of ``w`` (``rotated``: the input gradient's), by filter
    blocks or by tile blocks; returns whether every output is finite."""
    channels, out_channels = x.shape[1], y.shape[1]
    tiling = Tiling(channels, out_channels, y.shape[2], y.shape[3], x.dtype, POINTS * w.shape[0] * w.shape[1])
    with single_threaded_blas():
        if _by_filter_blocks(tiling, groups, x.shape[0]):
            return _winograd_filter_blocks(x, w.reshape(w.shape[0], w.shape[1], 9), rotated, y, tiling, pad_top,
                                           pad_left)
        return _winograd(x, transformed_filters(w, groups, rotated), y, tiling, pad_top, pad_left)


def _planes(array):
    """(N, C, 1, H, W) -> the contiguous (N, C, H, W) view."""
    return array.reshape(array.shape[0], array.shape[1], array.shape[3], array.shape[4])


def forward(spec, x, w, out):
    return _convolve(_planes(x), w, spec.groups, False, _planes(out), spec.pad_lo[1], spec.pad_lo[2])


def backward_input(spec, grad_y, w, grad_x):
    return _convolve(_planes(grad_y), w, spec.groups, True, _planes(grad_x), 2 - spec.pad_lo[1], 2 - spec.pad_lo[2])


@njit(cache=True)
def _weight_blocks(thread, threads, padded, padded_grad, tiles_h, block_rows, patches, grads, half, partials):
    """``partials[thread, p, g] += sum over the thread's tiles of Y[p].T @ V[p]`` (group ``g``'s
    channels) for a chunk of samples: ``padded`` the input and ``padded_grad`` grad_y from
    to_channels_last, the threads taking consecutive blocks of ``block_rows`` tile rows. Scratch
    rows per thread: ``patches``, ``grads`` (grad_y's tiles), ``half``."""
    out_channels, tiles_w = padded_grad.shape[4], padded.shape[3] - 1
    groups, group_out, group_in = partials.shape[2], partials.shape[3], partials.shape[4]
    tile_rows = padded.shape[0] * tiles_h
    first_block, stop_block = share(-(-tile_rows // block_rows), thread, threads)
    for block in range(first_block, stop_block):
        first, stop, v = block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half)
        y = scratch(grads, thread, (POINTS, v.shape[1], out_channels))
        gradient_tiles(padded_grad, first, stop, tiles_h, y,
                       scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)), ZERO)
        for p in range(POINTS):
            for g in range(groups):
                gemm(y[p, :, g * group_out:(g + 1) * group_out].T, v[p, :, g * group_in:(g + 1) * group_in],
                     partials[thread, p, g], 1.0)


@njit(cache=True)
def _partials_to_taps(thread, threads, partials, taps_by_points, grad_w):
    """``grad_w[r, t] = sum over points p of dU[p, r] * taps_by_points[p, t]`` (``G^T dU G``) for
    each of the K C/g filters ``r``, ``dU = partials[0] + partials[1] + ...`` added in thread
    order into ``partials[0]``: the threads take consecutive filters, adding their partials just
    before the product (in cache)."""
    filters = grad_w.shape[0]
    first, stop = share(filters, thread, threads)
    sums = partials[0, :, first:stop]
    if threads > 1:   # one thread's partial is the sum
        add_in_thread_order(partials[:, :, first:stop], sums, 0, sums.size)
    gemm(sums.T, taps_by_points, grad_w[first:stop], 0.0)


@njit(cache=True)
def _all_gradient_tiles(thread, threads, padded_grad, tiles_h, grads, half):
    """gradient_tiles of every tile row of ``padded_grad`` into ``grads`` (36, all tiles, K), the
    threads taking consecutive tile rows. Scratch ``half`` rows per thread."""
    out_channels, tiles_w = padded_grad.shape[4], padded_grad.shape[3]
    first, stop = share(padded_grad.shape[0] * tiles_h, thread, threads)
    gradient_tiles(padded_grad, first, stop, tiles_h, grads,
                   scratch(half, thread, (PATCH, TILE, tiles_w, out_channels)), first * tiles_w)


@njit(cache=True)
def _weight_filter_blocks(thread, threads, patches, grads, block_outs, taps_by_points, sums, grad_w):
    """``grad_w[k, c] = G^T (sum over all tiles of Y[p, k] V[p, c]) G`` (one group; ``patches`` V
    and ``grads`` Y of all tiles, ``grad_w`` (K, C, 9)), the threads taking consecutive blocks of
    ``block_outs`` output channels: each block's 36 sums (rows of ``sums`` per thread) go back to
    the taps while they are in cache."""
    channels, out_channels = patches.shape[2], grads.shape[2]
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
    on_threads(_all_input_tiles, tiling.threads, padded, tiling.tiles_h, patches, half)
    on_threads(_all_gradient_tiles, tiling.threads, padded_grad, tiling.tiles_h, grads, half)
    block_outs = _filter_block_outs(channels, x.dtype.itemsize)
    on_threads(_weight_filter_blocks, tiling.threads, patches, grads, block_outs, TAPS_TO_POINTS.astype(x.dtype),
               tiling.per_thread("winograd_filter_block", POINTS * channels * block_outs),
               grad_w.reshape(out_channels, channels, 9))


def backward_weight(spec, x, grad_y, grad_w):
    """``grad_w[k, c] = G^T (sum over tiles of Y[t, k] * V[t, c]) G``. By tile blocks: the 36
    products reduce over each block's tiles in BLAS, into a partial sum per thread; the partials
    are added in thread order (``threads.add_in_thread_order``: the same rounding every run),
    then go back to the taps. By filter blocks (few tiles, many filters,
    :func:`_weight_by_filter_blocks_pays`): each thread sums all tiles for a block of output
    channels (:func:`_weight_filter_blocks`)."""
    x, grad_y = _planes(x), _planes(grad_y)
    groups, group_out, group_in = spec.groups, spec.group_out_channels, spec.group_in_channels
    channels, out_channels = spec.in_channels, spec.out_channels
    tiling = Tiling(channels, out_channels, grad_y.shape[2], grad_y.shape[3], x.dtype,
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
            on_threads(_weight_blocks, tiling.threads, padded, padded_grad, tiling.tiles_h, block_rows,
                       *tiling.block_scratch(block_rows, weight_pass=True), partials)
        on_threads(_partials_to_taps, tiling.threads, partials.reshape(tiling.threads, POINTS, -1),
                   TAPS_TO_POINTS.astype(x.dtype), grad_w.reshape(-1, 9))
