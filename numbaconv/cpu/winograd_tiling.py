"""The tiling and blocking of Winograd F(4x4, 3x3): the layouts the transforms run on.

The transforms (cpu/winograd_transforms.py) run vectorised across channels,
so the input (and ``grad_y``) is first copied channels-last and zero-padded
(:func:`to_channels_last`, a chunk of samples at a time, at most
``CHANNELS_LAST_BYTES``), with each row's columns dealt out by their place
in a tile so that one call transforms a whole row of tiles
(:func:`input_tiles`, :func:`gradient_tiles`, :func:`output_tiles`). The
filter transform runs vectorised across filters the same way, a block of
channels at a time (:func:`transformed_filters`). The transforms index
slices from 0, never a flat ``a[offset + j]``, whose negative-index
wraparound check would hide the pattern from LLVM's vectoriser.

:class:`Tiling` sizes one pass: its sample chunks and its blocks of whole
tile rows, about ``workspace.BLOCK_BYTES`` of ``V`` and ``M``, the same
number per thread, so that all the pass's scratch stays under the workspace
limit. The passes that use them are in cpu/winograd.py.
"""
import numpy as np
from numba import njit

from . import workspace
from .common import ONE, ZERO, transposed_rows
from .simd import LANES
from .threads import on_threads, scratch, share, thread_count
from .winograd_transforms import (PATCH, POINTS, TILE, filter_rows, four_rows, gradient_transform, patch_transform,
                                  row, six_rows, tile_transform)

CHANNELS_LAST_BYTES = 64 * 2**20   # cap on the channels-last copy of one chunk of samples
TRANSFORM_BLOCK_BYTES = 2**17      # the gathered taps of one block of channels in the filter transform
FILTER_CHUNK = 512                 # filters transformed together (their 18 intermediate rows stay in L1)


@njit(nogil=True, cache=True)
def to_channels_last(image, first, stop, pad_top, pad_left, out):
    """``out[n, r, q % 4, q // 4, c] = image[n, c, r - pad_top, q - pad_left]`` (zero outside
    ``image``) for samples ``first <= n < stop``; pads of any sign. Columns are dealt out by
    their place in a tile (``q % 4``) so that a tile row's columns ``4 tw + b`` are contiguous.
    Blocks of 16 columns x 16 channels go by vector transposes (each reads a cache line of 16
    planes), the rest element by element (``common.transposed_rows``). Memory: ``image`` read
    once, ``out`` written once."""
    channels, height, width = image.shape[1], image.shape[2], image.shape[3]
    padded_h, slots = out.shape[1], out.shape[3]
    padded_w = TILE * slots
    q0, q1 = min(max(pad_left, 0), padded_w), min(max(pad_left + width, 0), padded_w)
    columns = tile_columns(padded_w, slots, channels)
    planes = np.arange(LANES) * (height * width)
    image_flat, out_flat = image.reshape(-1), out.reshape(-1)
    for n in range(first, stop):
        for r in range(padded_h):
            h = r - pad_top
            if h < 0 or h >= height:
                out[n, r] = 0
                continue
            for q in range(padded_w):
                if q < q0 or q >= q1:
                    out[n, r, q % TILE, q // TILE] = 0
            row_at = (n * padded_h + r) * padded_w * channels
            source_at = (n * channels * height + h) * width - pad_left   # of column 0, channel 0
            transposed_rows(out_flat, columns, row_at, ONE, image_flat, planes, source_at, height * width, q0, q1,
                             channels)


@njit(cache=True)
def tile_columns(count, slots, channels):
    """Where column ``q < count`` of a row dealt out by place in a tile (``q % 4``, then ``q // 4``
    of ``slots``) starts, in elements of ``channels`` each."""
    q = np.arange(count)
    return (q % TILE * slots + q // TILE) * channels


@njit(cache=True)
def _channels_last_by_threads(thread, threads, image, pad_top, pad_left, out):
    """:func:`to_channels_last` of all of ``image``, the threads taking consecutive samples."""
    first, stop = share(image.shape[0], thread, threads)
    to_channels_last(image, first, stop, pad_top, pad_left, out)


@njit(nogil=True, cache=True)
def input_tiles(padded, first_row, stop_row, tiles_h, patches, half, first_tile):
    """``patches[p, j, c] = (B^T d B)[p]`` for ``d`` the 6x6 patch of ``padded`` (N, 4 tiles_h + 2,
    4, tiles_w + 1, C; from :func:`to_channels_last`) under tile ``j`` of the tile rows
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
        patch_transform(six_rows(padded_flat, start, row_size, row_size), six_rows(half_flat, 0, row_size, row_size))
        # rows: patches[6 i + i2, j + tw] = sum_b B^T[i2, b] half[i, 4 tw + b], across the tiles;
        # column 4 tw + b lies at [b % 4, tw + b // 4]
        for i in range(PATCH):
            start = i * row_size
            columns = four_rows(half_flat, start, phase_size, tile_row_size) + (
                row(half_flat, start + channels, tile_row_size), row(half_flat, start + phase_size + channels, tile_row_size))
            patch_transform(columns, six_rows(patches_flat, (i * PATCH * count + j) * channels, count * channels,
                                              tile_row_size))
        j += tiles_w


@njit(nogil=True, cache=True)
def gradient_tiles(padded, first_row, stop_row, tiles_h, tiles, half, first_tile):
    """``tiles[p, j, k] = (A g A^T)[p]`` for ``g`` the 4x4 tile ``j`` of ``padded`` (N, 4 tiles_h,
    4, tiles_w, K; a grad_y from to_channels_last, zero past its edges), tile rows as in
    input_tiles, from tile ``first_tile``. Scratch ``half`` (6, 4, tiles_w, K)."""
    slots, channels = padded.shape[3], padded.shape[4]
    count = tiles.shape[1]
    row_size, tile_row_size = TILE * slots * channels, slots * channels
    padded_flat, tiles_flat, half_flat = padded.reshape(-1), tiles.reshape(-1), half.reshape(-1)
    j = first_tile
    for tile_row in range(first_row, stop_row):
        n, th = tile_row // tiles_h, tile_row % tiles_h
        # rows of the tiles: half[i, q] = sum_a A[i, a] g[4 th + a, q]; then their columns
        start = (n * padded.shape[1] + th * TILE) * row_size
        gradient_transform(four_rows(padded_flat, start, row_size, row_size), six_rows(half_flat, 0, row_size, row_size))
        for i in range(PATCH):
            gradient_transform(four_rows(half_flat, i * row_size, tile_row_size, tile_row_size),
                               six_rows(tiles_flat, (i * PATCH * count + j) * channels, count * channels, tile_row_size))
        j += slots


@njit(inline="always", cache=True)
def count_nonfinite(values, first, stop):
    """How many of ``values[first:stop]`` are NaN or infinite (``v - v`` is NaN for them, 0 for
    every finite ``v``: a test the loop vectorises without fast-math)."""
    count = 0
    for i in range(first, stop):
        difference = values[i] - values[i]
        count += difference != difference
    return count


@njit(nogil=True, cache=True)
def output_tiles(products, first_row, stop_row, tiles_h, y, half, rows, first_tile):
    """``y[n, k, 4 th + i, 4 tw + i2] = (A^T M A)[i, i2]`` with ``M[p] = products[p, j, k]`` for
    the tiles of input_tiles; outputs past ``y``'s edges are dropped. Scratch ``half``
    (6, 4, tiles_w, K) and ``rows`` (4, 4, tiles_w, K): one tile row, channels-last. Returns how
    many of the tile rows' outputs (those dropped past the right edge included) are NaN or
    infinite, counted while they are in cache: a caller need not read ``y`` again to learn
    whether Winograd's transforms spread a non-finite value (numbaconv.functional)."""
    out_channels, out_h, out_w = y.shape[1], y.shape[2], y.shape[3]
    count, tiles_w = products.shape[1], rows.shape[2]
    row_size, tile_row_size = TILE * tiles_w * out_channels, tiles_w * out_channels
    products_flat, rows_flat, half_flat, y_flat = products.reshape(-1), rows.reshape(-1), half.reshape(-1), y.reshape(-1)
    columns, planes = tile_columns(TILE * tiles_w, tiles_w, out_channels), np.arange(LANES) * (out_h * out_w)
    j, nonfinite = first_tile, 0
    for tile_row in range(first_row, stop_row):
        n, th = tile_row // tiles_h, tile_row % tiles_h
        # rows of M, across the tiles: half[a, i2, tw] = sum_b A^T[i2, b] M[6 a + b, j + tw]
        for a in range(PATCH):
            tile_transform(six_rows(products_flat, (a * PATCH * count + j) * out_channels, count * out_channels,
                                    tile_row_size), four_rows(half_flat, a * row_size, tile_row_size, tile_row_size))
        # columns, the whole tile row at once: rows[i] = sum_a A^T[i, a] half[a]
        tile_transform(six_rows(half_flat, 0, row_size, row_size), four_rows(rows_flat, 0, row_size, row_size))
        kept_rows = min(TILE, out_h - th * TILE)
        nonfinite += count_nonfinite(rows_flat, 0, kept_rows * row_size)
        for i in range(kept_rows):
            y_at = ((n * out_channels) * out_h + th * TILE + i) * out_w
            transposed_rows(y_flat, columns, y_at, out_h * out_w, rows_flat, planes, i * row_size, ONE, ZERO, out_w,
                             out_channels)
        j += tiles_w
    return nonfinite


@njit(nogil=True, cache=True)
def block_patches(padded, tiles_h, block, block_rows, tile_rows, thread, patches, half):
    """(first, stop, V): the tile rows of block ``block`` (``block_rows`` each, of ``tile_rows``)
    and their patches (input_tiles) in ``thread``'s rows of ``patches``, scratch ``half``."""
    tiles_w, channels = padded.shape[3] - 1, padded.shape[4]
    first, stop = block * block_rows, min((block + 1) * block_rows, tile_rows)
    v = scratch(patches, thread, (POINTS, (stop - first) * tiles_w, channels))
    input_tiles(padded, first, stop, tiles_h, v, scratch(half, thread, (PATCH, TILE, tiles_w + 1, channels)), ZERO)
    return first, stop, v


@njit(cache=True)
def unaliased(length):
    """A row length at least ``length`` (elements) whose rows start in different L1 cache sets:
    rows a multiple of 4 KiB apart share the sets (8 ways), which makes gathering nine tap rows
    of 512 x 24 filters 4x slower (docs/decisions.md, G5)."""
    return -(-length // 1024) * 1024 + 16


@njit(nogil=True, cache=True)
def transform_filters(w, rotated, group_start, in_first, in_stop, out_first, out_stop, taps, half, points, first,
                      step):
    """U = G f G^T for the filters from input channels ``in_first <= i < in_stop`` to output
    channels ``out_first <= o < out_stop`` of the group whose filters start at ``w[group_start]``
    (``w`` (K, C/g, 9)): ``points[first + p * step + (i - in_first) * outs + o - out_first]`` =
    U[p] of filter (i, o), outs = out_stop - out_first. Not ``rotated``: the forward filters,
    ``w[group_start + o, i]``; ``rotated``: the input gradient's, channels swapped and turned 180
    degrees, ``w[group_start + i, o, ::-1]`` (``common.rotated_weights``'s mapping, gathered
    here from ``w`` itself: a rotated copy first costs the filter-block input gradient a quarter
    more at 256 channels, 7x7, N=4). Scratch ``taps`` (9, ins * outs), ``half`` (18, n) for n
    filters at a time. The taps are gathered tap-major, then transformed across the filters,
    columns then rows, like the tiles."""
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
            filter_rows((row(taps_flat, at, count), row(taps_flat, at + 3 * taps.shape[1], count),
                         row(taps_flat, at + 6 * taps.shape[1], count)), six_rows(half_flat, b * chunk, 3 * chunk, count))
        # rows: U[6 i + i2] = sum_b G[i2, b] half[3 i + b]
        for i in range(PATCH):
            at = 3 * i * chunk
            filter_rows((row(half_flat, at, count), row(half_flat, at + chunk, count), row(half_flat, at + 2 * chunk, count)),
                        six_rows(points, first + PATCH * i * step + start, step, count))


@njit(cache=True)
def _filters_by_threads(thread, threads, w, rotated, groups, ins, outs, block, taps, half, points):
    """:func:`transform_filters` of every filter, the threads taking consecutive shares of the
    ``ins`` input channels, ``block`` at a time; ``points`` (36, g, ins, outs) flat. Scratch per
    thread: ``taps`` rows, ``half`` rows (18 * FILTER_CHUNK)."""
    group_start_step = w.shape[0] // groups
    first_in, stop_in = share(ins, thread, threads)
    for g in range(groups):
        for first in range(first_in, stop_in, block):
            stop = min(first + block, stop_in)
            filters = unaliased((stop - first) * outs)
            transform_filters(w, rotated, g * group_start_step, first, stop, ZERO, outs,
                              taps[thread, :9 * filters].reshape(9, filters), half[thread].reshape(18, FILTER_CHUNK),
                              points, (g * ins + first) * outs, groups * ins * outs)


def transformed_filters(w, groups, rotated=False):
    """U (36, g, ins, outs) = G f G^T for each filter ``f`` of ``w (K, C/g, 3, 3)`` (not ``rotated``:
    ins = C/g, outs = K/g; ``rotated``, the input gradient's: ins = K/g, outs = C/g), laid out
    for the products ``V[p] (T, ins) @ U[p] (ins, outs)``, a block of input channels at a time
    (:func:`transform_filters`).

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
    taps = workspace.per_thread("winograd_taps", threads, 9 * unaliased(block * outs), w.dtype)
    half = workspace.per_thread("winograd_filter_half", threads, 18 * FILTER_CHUNK, w.dtype)
    on_threads(_filters_by_threads, threads, w.reshape(out_channels, group_in, 9), rotated, groups, ins, outs, block,
               taps, half, filters)
    return filters.reshape(POINTS, groups, ins, outs)


class Tiling:
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
        (:func:`to_channels_last`)."""
        out = workspace.borrow(name, image.shape[0] * rows * TILE * slots * image.shape[1], self.dtype).reshape(
            image.shape[0], rows, TILE, slots, image.shape[1])
        on_threads(_channels_last_by_threads, self.threads, image, pad_top, pad_left, out)
        return out

    def padded_input(self, image, pad_top, pad_left):
        return self.channels_last("winograd_input", image, TILE * self.tiles_h + 2, self.tiles_w + 1, pad_top, pad_left)
