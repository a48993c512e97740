"""FFT convolution for stride 1 and dilation 1: large kernels at a cost that hardly grows with their size.

Along each spatial dim the results are cut into blocks of ``B`` (overlap-save).
A block's segment of the source (``B + k - 1`` positions, zero outside the
source) goes into a buffer of the transform size ``L``, and each pass is one
circular product per block, taken in the frequency domain (real-to-complex
transforms, ``F = LD * LH * (LW / 2 + 1)`` frequencies):

    forward:       Y[f]  = X[f] conj(W[f])     y = the first B entries of irfft(Y)
    input grad:    GX[f] = GY[f] W[f]          the source is grad_y, the kernel turned
                                               (read out from entry k - 1 on)
    weight grad:   GW[f] = sum over blocks of conj(GY[f]) X[f], grad_w = the first k entries
                   of irfft(GW); grad_y's block alone (B entries, zeros after) is transformed.

With channels, each frequency's product is a complex matrix product per
group, ``(blocks, C/g) x (C/g, K/g)`` for the forward (the input gradient's
the other way, the weight gradient's reducing over the blocks), so the
channel sums run at matrix-product speed: the complex matrices go through
real products on their interleaved (re, im) storage, one operand expanded
into 2x2 real blocks per complex entry (``[[re, im], [-im, re]]``), the same
FLOPs as a complex product. Products with many channels a group run in
BLAS (``blas.gemm``, from the threads of ``threads.on_threads``, each a consecutive share of
the frequencies); small ones in a Numba loop over the same expanded blocks.

Where the problem pads, a single block (``B`` = all results) needs only
``L >= max(k, B, B + k - 1 - min(pad_lo, pad_hi))``: positions read past the
buffer's end wrap around onto the zeros of the other side's padding, which
is what the true segment holds there too (the cyclic buffer
:func:`_axis_choices` documents). Several blocks need ``L = B + k - 1``.
Transform sizes have prime factors 2, 3 and 5 (``scipy.fft.next_fast_len``);
the sizes per dim are chosen by a cost model (:func:`_plan`): the transforms
(source and result channels per block, and the ``K C/g`` filters) at
``FFT_NS`` per point and level, the products at ``PRODUCT_NS`` per complex
multiply-add, among the plans whose scratch fits the workspace limit.

Transforms: ``scipy.fft`` (pocketfft), float32 in complex64, float64 in
complex128, on ``threads.thread_count()`` workers, over the leading axes of
channels-last buffers ``(LD, LH, LW, blocks, channels)``, so each
frequency's matrix is contiguous. The filters' transform is pruned: only
their ``k`` nonzero rows are transformed along each axis before the next.
The weight gradient's inverse transform keeps only the first ``k`` rows
along each axis before the next one.

FLOPs: about ``2.5 L log2(L)`` per transformed row of ``L`` points, for
``(C + K) * blocks`` rows (the transforms of the source and the result) plus
``K C/g`` filters, and ``8 K (C/g) F`` per block for the products; memory
traffic: x, w and y once each, the buffers and spectra once per chunk (about
``CHUNK_BYTES`` of blocks, in cache where they fit), the filters' spectrum
(``F K C/g`` complex values) once per chunk. Workspace: the filters'
spectrum (or the weight gradient's sums) plus one chunk's buffers and
spectra; ``scipy.fft`` allocates its transforms' results itself, and they
are counted against the workspace limit with the rest.

Accuracy: the transforms' rounding grows with ``log L``; float32 results
stay within about 1e-6 norm-relative of the float64 truth on the test grid
and the large-kernel cases (tests/test_fft.py). NaN and Inf: a non-finite
value in a block's segment (or anywhere in ``w``) spreads over the whole
block (every frequency mixes every position), so with an explicit
``algo="fft"`` a NaN or Inf in an operand makes whole blocks NaN where the
reference has finite values; ``"auto"`` runs such a pass again with an
algorithm that places them as the reference does (``INEXACT_NONFINITE``).
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import workspace
from .blas import gemm
from .threads import most_threads, on_threads, scratch, share, single_threaded_blas, thread_count

# FLOPs of one uncut kernel call, counted as direct convolution: a quarter second at 1 TFLOP/s of
# that count, which the large kernels this algorithm runs exceed; longer passes run in slices
# (numbaconv.slices). Slices would transform the filters again each, so they are kept rare.
SLICE_FLOPS = int(2.5e11)
# Where NaN and Inf land differently from the reference (numbaconv.functional): a non-finite
# value spreads over every result of its block.
INEXACT_NONFINITE = {"forward": "result", "input": "result", "weight": "result"}

CHUNK_BYTES = 8 * 2**20      # the buffers and spectra of one chunk of blocks (L2/L3-sized)
TILE = 32                    # positions a tile of the kernels that move channels last <-> first
PRODUCT_ROWS = 64            # but at least this many blocks a chunk: the rows of each frequency's product
GEMM_MIN_ENTRIES = 256       # expanded per-frequency matrices of at least this many reals go to BLAS,
BLAS_MIN_REDUCTION = 8       # where they reduce over at least this many complex values
FFT_NS = 0.13                # the cost model: ns per transformed point and log2 level, 2 threads
PRODUCT_NS = 0.12            # ns per complex multiply-add of the products


def supports(spec):
    """None if the FFT runs ``spec`` (3-d form), else why not: stride and dilation other than 1, or
    scratch over the workspace limit even one block at a time (counted in float64)."""
    if any(s != 1 for s in spec.stride) or any(d != 1 for d in spec.dilation):
        return (f"needs stride 1 and dilation 1, got stride {spec.stride[3 - spec.rank:]} "
                f"and dilation {spec.dilation[3 - spec.rank:]}")
    for pass_name in ("forward", "input", "weight"):
        if _plan(spec, pass_name, 8) is None:
            return workspace.over_limit(_least_bytes(spec, pass_name, 8))
    return None


# ---------------------------------------------------------------------------------------------
# The plan: transform size and blocks per dim, chunks of blocks


@dataclass(frozen=True)
class _Axis:
    """One dim of a plan: transform size ``length``, ``block`` results per block in ``blocks``
    blocks; block ``b``'s segment starts at source position ``first + b * block``, and its first
    result sits at entry ``readout`` of the circular result."""

    length: int
    block: int
    blocks: int
    first: int
    readout: int


def _scipy_fft():
    """``scipy.fft``, imported by the first transform rather than by ``import numbaconv`` (it takes
    about 0.2 s)."""
    import scipy.fft
    return scipy.fft


def _fast_length(target):
    """The smallest ``2^a 3^b 5^c >= target`` (``scipy.fft.next_fast_len(target, real=True)``):
    a size pocketfft transforms fast. Plans pick their sizes with it on every first call."""
    best = 1 << max(0, (target - 1).bit_length())
    fives = 1
    while fives < best:
        odd = fives
        while odd < best:
            best = min(best, odd << max(0, (-(-target // odd) - 1).bit_length()))
            odd *= 3
        fives *= 5
    return best


def _axis_choices(source, results, taps, first, readout):
    """The transform sizes worth trying along one dim: one block of all ``results`` (the cyclic
    buffer: positions past ``L`` wrap onto the segment's start, which holds zeros where the
    segment's start and end lie in the padding, so ``L`` may be shorter than the segment by the
    smaller of its two zero runs), and several blocks of ``L - taps + 1`` results for ``L`` from
    about ``taps`` on, each size once."""
    segment = results + taps - 1
    zeros_before = min(max(-first, 0), segment)
    zeros_after = min(max(first + segment - source, 0), segment)
    single = _fast_length(max(taps, results, segment - min(zeros_before, zeros_after)))
    choices = {single: _Axis(single, results, 1, first, readout)}
    parts = 2
    while parts <= results:
        wanted = -(-results // parts)
        if 4 * wanted < taps:   # blocks shorter than a quarter of the kernel: transforms mostly overlap
            break
        length = _fast_length(wanted + taps - 1)
        if length < single and length not in choices:
            block = length - taps + 1
            choices[length] = _Axis(length, block, -(-results // block), first, readout)
        parts = max(parts + 1, parts * 5 // 4)
    return list(choices.values())


@dataclass(frozen=True)
class _Plan:
    """How one pass runs: its three dims, and the blocks (all samples' together, sample-major)
    that each chunk transforms at once."""

    axes: tuple
    batch: int
    chunk: int

    @property
    def lengths(self):
        return tuple(axis.length for axis in self.axes)

    @property
    def spectrum_shape(self):
        d, h, w = self.lengths
        return d, h, w // 2 + 1

    @property
    def block_count(self):
        return self.batch * math.prod(axis.blocks for axis in self.axes)

    @property
    def transform_axes(self):
        """The buffer axes transformed: the depth and height dims where longer than 1, and always
        the width dim (the real-to-complex halving's)."""
        return tuple(d for d in (0, 1) if self.axes[d].length > 1) + (2,)


def _pass_dims(spec, pass_name):
    """``(source, results, taps, first, readout)`` per dim: the forward and the weight gradient
    block the output over the input; the input gradient the input over grad_y, with the kernel
    turned (its segment starts ``k - 1 - pad_lo`` before the result, its results from entry
    ``k - 1`` of the circular convolution)."""
    dims = zip(spec.in_size, spec.out_size, spec.kernel_size, spec.pad_lo)
    if pass_name == "input":
        return [(out, size, k, pad - (k - 1), k - 1) for size, out, k, pad in dims]
    return [(size, out, k, -pad, 0) for size, out, k, pad in dims]


def _channels(spec, pass_name):
    """(source channels, result channels) of the blocks a chunk transforms."""
    if pass_name == "input":
        return spec.out_channels, spec.in_channels
    return spec.in_channels, spec.out_channels


def _bytes(spec, pass_name, axes, itemsize, blocks):
    """Scratch of a plan with ``blocks`` blocks a chunk, at its peak: the filters' spectrum while
    it is made (two stages of its pruned transform) or held beside a chunk's real buffer, result
    spectrum and one of scipy's results (the source's spectrum, then the results' buffer); for
    the weight gradient the sums (three times over while transformed back) beside a chunk's two
    buffers and two spectra. Plus the per-thread scratch of the products."""
    lengths = [axis.length for axis in axes]
    points = math.prod(lengths)
    frequencies = points // lengths[2] * (lengths[2] // 2 + 1)
    complex_size = 2 * itemsize
    filters = (spec.out_channels * spec.group_in_channels) * complex_size
    source, result = _channels(spec, pass_name)
    group_most = max(spec.group_in_channels, spec.group_out_channels)
    if pass_name == "weight":
        chunk = blocks * (points * itemsize + frequencies * complex_size) * (source + result)
        per_thread = 2 * blocks * (spec.group_in_channels + spec.group_out_channels) * itemsize
        return 3 * frequencies * filters + chunk + most_threads() * per_thread
    length_d, length_h, _ = lengths
    stage_w = spec.kernel_size[0] * spec.kernel_size[1] * (frequencies // (length_d * length_h))
    stage_h, stage_d = stage_w * length_h // spec.kernel_size[1], frequencies
    making = max(stage_w + stage_h, stage_h + stage_d) * filters
    chunk = blocks * (points * source * itemsize + frequencies * result * complex_size
                      + max(frequencies * source * complex_size, points * result * itemsize))
    per_thread = 4 * group_most * group_most * itemsize
    return max(making, frequencies * filters + chunk) + most_threads() * per_thread


def _cost(spec, pass_name, axes):
    """The cost model's ns for a pass with these dims (module docstring)."""
    lengths = [axis.length for axis in axes]
    points = math.prod(lengths)
    frequencies = points // lengths[2] * (lengths[2] // 2 + 1)
    blocks = spec.batch * math.prod(axis.blocks for axis in axes)
    source, result = _channels(spec, pass_name)
    filters = spec.out_channels * spec.group_in_channels
    levels = math.log2(max(points, 2))
    return (FFT_NS * levels * points * ((source + result) * blocks + filters)
            + PRODUCT_NS * frequencies * blocks * filters)


@functools.lru_cache(maxsize=1024)
def _plan_for(spec, pass_name, itemsize, limit, chunk_bytes):
    """The cheapest plan of one pass whose scratch fits ``limit`` one block a chunk, its chunks as
    many blocks as fit ``chunk_bytes`` (and the limit), or None where no plan fits."""
    dims_pass = "input" if pass_name == "input" else "forward"
    per_dim = [_axis_choices(*dims) for dims in _pass_dims(spec, dims_pass)]
    fitting = [axes for axes in _product(per_dim) if _bytes(spec, pass_name, axes, itemsize, 1) <= limit]
    if not fitting:
        return None
    axes = min(fitting, key=lambda axes: _cost(spec, pass_name, axes))
    total = spec.batch * math.prod(axis.blocks for axis in axes)
    per_block = _bytes(spec, pass_name, axes, itemsize, 2) - _bytes(spec, pass_name, axes, itemsize, 1)
    low, high = 1, min(total, max(chunk_bytes // max(per_block, 1), PRODUCT_ROWS))
    while low < high:   # the most blocks up to the wanted count that fit the limit
        middle = (low + high + 1) // 2
        low, high = (middle, high) if _bytes(spec, pass_name, axes, itemsize, middle) <= limit else (low, middle - 1)
    return _Plan(tuple(axes), spec.batch, low)


def _product(per_dim):
    return ((a, b, c) for a in per_dim[0] for b in per_dim[1] for c in per_dim[2])


def _plan(spec, pass_name, itemsize):
    """The plan of one pass under the current workspace limit, or None (:func:`_plan_for`)."""
    return _plan_for(spec, pass_name, itemsize, workspace.workspace_limit(), CHUNK_BYTES)


def modelled_ns(spec, pass_name):
    """The cost model's ns for one pass of ``spec`` with its plan in float32 (``math.inf`` where
    no plan fits): what ``algo="auto"`` weighs against the direct FLOPs (numbaconv.dispatch)."""
    plan = _plan(spec, pass_name, 4)
    return math.inf if plan is None else _cost(spec, pass_name, plan.axes)


def _least_bytes(spec, pass_name, itemsize):
    """The least scratch any plan of the pass needs (for the reason ``supports`` gives)."""
    dims_pass = "input" if pass_name == "input" else "forward"
    per_dim = [_axis_choices(*dims) for dims in _pass_dims(spec, dims_pass)]
    return min(_bytes(spec, pass_name, axes, itemsize, 1) for axes in _product(per_dim))


# ---------------------------------------------------------------------------------------------
# The passes


def forward(spec, x, w, out):
    plan = _plan(spec, "forward", x.dtype.itemsize)
    _through_blocks(spec, plan, x, _filter_spectrum(spec, w, plan), out, True)


def backward_input(spec, grad_y, w, grad_x):
    plan = _plan(spec, "input", grad_y.dtype.itemsize)
    _through_blocks(spec, plan, grad_y, _filter_spectrum(spec, w, plan), grad_x, False)


def backward_weight(spec, x, grad_y, grad_w):
    plan = _plan(spec, "weight", x.dtype.itemsize)
    threads, dtype = thread_count(), x.dtype
    frequencies, lengths = math.prod(plan.spectrum_shape), plan.lengths
    group_out, group_in = spec.group_out_channels, spec.group_in_channels
    sums = workspace.borrow("fft_spectrum", frequencies * spec.out_channels * group_in, _complex(dtype)).reshape(
        spec.out_channels, group_in, frequencies)
    grad_windows = tuple(axis.block for axis in plan.axes)
    use_blas = 4 * group_in * group_out >= GEMM_MIN_ENTRIES
    for first_block, count in _chunks(plan):
        rows = workspace.per_thread("fft_weight_planes", threads, 2 * count * (group_out + group_in) + 2 * group_out * group_in,
                                    dtype)
        inputs = _transform(x, "fft_source", plan, first_block, count, tuple(a.first for a in plan.axes), lengths,
                            threads)
        grads = _transform(grad_y, "fft_grad_source", plan, first_block, count, (0, 0, 0), grad_windows, threads)
        with single_threaded_blas():
            on_threads(_weight_products, threads, inputs.view(dtype), grads.view(dtype), sums.view(dtype),
                       spec.groups, first_block > 0, use_blas, rows)
        del inputs, grads
    taps = spec.kernel_size
    sums = sums.reshape(*sums.shape[:2], *plan.spectrum_shape)
    # the inverse transform, keeping the first k rows along each axis before the next
    if lengths[0] > 1:
        sums = _scipy_fft().ifft(sums, axis=2, workers=threads)[:, :, :taps[0]]
    if lengths[1] > 1:
        sums = _scipy_fft().ifft(sums, axis=3, workers=threads)[:, :, :, :taps[1]]
    grad_w[...] = _scipy_fft().irfft(sums, n=lengths[2], axis=4, workers=threads)[..., :taps[2]]


def _complex(dtype):
    return np.complex64 if dtype == np.float32 else np.complex128


def _geometry(plan):
    """(blocks per dim, results per block per dim) of a plan, as the kernels take them."""
    return tuple(axis.blocks for axis in plan.axes), tuple(axis.block for axis in plan.axes)


def _chunks(plan):
    """``(first block, block count)`` of each chunk, in order."""
    total = plan.block_count
    return [(first, min(plan.chunk, total - first)) for first in range(0, total, plan.chunk)]


def _transform(source, name, plan, first_block, count, firsts, windows, threads):
    """The spectra ``(F, count, channels)`` of ``count`` blocks from ``first_block`` on: each
    block's segment of ``source`` (N, channels, D, H, W) from ``firsts`` on, its positions past
    ``windows`` and outside the source zero, gathered channels-last into a buffer of the plan's
    transform size (borrowed as ``name``), then transformed by ``scipy.fft``."""
    channels = source.shape[1]
    blocks, block = _geometry(plan)
    buffer = workspace.borrow(name, math.prod(plan.lengths) * count * channels, source.dtype).reshape(
        *plan.lengths, count, channels)
    on_threads(_gather, threads, source, buffer, first_block, blocks, block, firsts, windows)
    spectra = _scipy_fft().rfftn(buffer, axes=plan.transform_axes, workers=threads, overwrite_x=True)
    return np.ascontiguousarray(spectra).reshape(-1, count, channels)


def _filter_spectrum(spec, w, plan):
    """The filters' spectrum ``(F, K, C/g)``, frequency-major (each frequency's matrix
    contiguous for the products), at the plan's transform size: ``w`` seen as ``(KD, KH, KW, K,
    C/g)`` transformed along its kernel axes, width first, with zeros past the ``k`` taps (only
    the rows that hold taps are transformed along the width and height axes)."""
    threads, (length_d, length_h, length_w) = thread_count(), plan.lengths
    spectrum = _scipy_fft().rfft(w.transpose(2, 3, 4, 0, 1), n=length_w, axis=2, workers=threads)
    if length_h > 1:
        spectrum = _scipy_fft().fft(spectrum, n=length_h, axis=1, workers=threads, overwrite_x=True)
    if length_d > 1:
        spectrum = _scipy_fft().fft(spectrum, n=length_d, axis=0, workers=threads, overwrite_x=True)
    return np.ascontiguousarray(spectrum).reshape(-1, *w.shape[:2])


def _through_blocks(spec, plan, source, spectrum, out, forward):
    """The forward (``forward``) or the input gradient: each chunk's blocks of ``source`` (x or
    grad_y) transformed, multiplied by the filters' spectrum, transformed back and their results
    written into ``out``."""
    threads, dtype = thread_count(), source.dtype
    reduced, produced = ((spec.group_in_channels, spec.group_out_channels) if forward
                         else (spec.group_out_channels, spec.group_in_channels))
    result_channels = out.shape[1]
    frequencies = math.prod(plan.spectrum_shape)
    blocks, block = _geometry(plan)
    expanded = workspace.per_thread("fft_expanded", threads, 4 * reduced * produced, dtype)
    use_blas = reduced >= BLAS_MIN_REDUCTION and 4 * reduced * produced >= GEMM_MIN_ENTRIES
    firsts, readouts = tuple(a.first for a in plan.axes), tuple(a.readout for a in plan.axes)
    sizes = [plan.lengths[d] for d in plan.transform_axes]
    for first_block, count in _chunks(plan):
        spectra = _transform(source, "fft_source", plan, first_block, count, firsts, plan.lengths, threads)
        products = workspace.borrow("fft_products", frequencies * count * result_channels, _complex(dtype))
        products = products.reshape(frequencies, count, result_channels)
        with single_threaded_blas():
            on_threads(_products, threads, spectra.view(dtype), spectrum.view(dtype), products.view(dtype),
                       spec.groups, forward, use_blas, expanded)
        del spectra   # scipy's result: freed before the inverse transform makes the next one
        results = _scipy_fft().irfftn(products.reshape(*plan.spectrum_shape, count, result_channels), s=sizes,
                                   axes=plan.transform_axes, workers=threads, overwrite_x=True)
        on_threads(_scatter, threads, np.ascontiguousarray(results), out, first_block, blocks, block, readouts)


# ---------------------------------------------------------------------------------------------
# Kernels


@njit(inline="always", cache=True)
def _block_origin(index, blocks):
    """(sample, block along d, h, w) of block ``index`` (sample-major, then d, h, w)."""
    per_sample = blocks[0] * blocks[1] * blocks[2]
    rest = index % per_sample
    return index // per_sample, rest // (blocks[1] * blocks[2]), rest // blocks[2] % blocks[1], rest % blocks[2]


@njit(cache=True)
def _gather(thread, threads, source, buffer, first_block, blocks, block, firsts, windows):
    """``buffer[pd, ph, pw, j, c] = source[n, c, firsts[0] + bd * block[0] + pd, ...]`` for block
    ``first_block + j`` = (n, bd, bh, bw), zero where a position lies at or past ``windows`` or
    outside the source. The threads take consecutive shares of the buffer's (pd, ph, j) rows.
    Memory: the blocks' segments of ``source`` read once, the buffer written once."""
    length_d, length_h, length_w, count, channels = buffer.shape
    size_d, size_h, size_w = source.shape[2], source.shape[3], source.shape[4]
    rows = length_d * length_h * count
    first, stop = share(rows, thread, threads)
    for row in range(first, stop):
        j, ph, pd = row % count, row // count % length_h, row // (count * length_h)
        n, bd, bh, bw = _block_origin(first_block + j, blocks)
        md, mh = firsts[0] + bd * block[0] + pd, firsts[1] + bh * block[1] + ph
        inside = pd < windows[0] and ph < windows[1] and 0 <= md < size_d and 0 <= mh < size_h
        start = firsts[2] + bw * block[2]
        for pw in range(length_w):
            mw = start + pw
            if inside and pw < windows[2] and 0 <= mw < size_w:
                for c in range(channels):
                    buffer[pd, ph, pw, j, c] = source[n, c, md, mh, mw]
            else:
                for c in range(channels):
                    buffer[pd, ph, pw, j, c] = 0


@njit(cache=True)
def _scatter(thread, threads, buffer, out, first_block, blocks, block, readouts):
    """``out[n, r, od, oh, ow]`` for the results of blocks ``first_block + j`` from the circular
    results ``buffer[(qd + readouts[0]) % LD, ..., j, r]`` (``q`` the position in the block),
    each result written once; the threads take consecutive shares of (block, qd, qh) rows, and
    each row goes ``TILE`` positions at a time for all channels, so the buffer's lines (channels
    last) are read from cache while ``out``'s rows are written along their length."""
    length_d, length_h, length_w, count, channels = buffer.shape
    size_d, size_h, size_w = out.shape[2], out.shape[3], out.shape[4]
    rows = count * block[0] * block[1]
    first, stop = share(rows, thread, threads)
    for row in range(first, stop):
        j, qd, qh = row // (block[0] * block[1]), row // block[1] % block[0], row % block[1]
        n, bd, bh, bw = _block_origin(first_block + j, blocks)
        od, oh, ow = bd * block[0] + qd, bh * block[1] + qh, bw * block[2]
        if od >= size_d or oh >= size_h:
            continue
        pd, ph = (qd + readouts[0]) % length_d, (qh + readouts[1]) % length_h
        width = min(block[2], size_w - ow)
        for tile in range(0, width, TILE):
            for r in range(channels):
                for qw in range(tile, min(width, tile + TILE)):
                    out[n, r, od, oh, ow + qw] = buffer[pd, ph, (qw + readouts[2]) % length_w, j, r]


@njit(inline="always", cache=True)
def _expand(filters, matrix, forward):
    """The 2x2 real blocks of one frequency's complex matrix, from that frequency's filters
    ``filters`` (K/g, 2 C/g) of one group (interleaved re, im): for the forward ``conj(W).T``
    (C/g, K/g), for the input gradient ``W`` (K/g, C/g); entry ``m`` becomes ``[[re m, im m],
    [-im m, re m]]``, so that a row of interleaved complex values times ``matrix`` is the row of
    interleaved complex products."""
    for k in range(filters.shape[0]):
        for c in range(filters.shape[1] // 2):
            real, imag = filters[k, 2 * c], filters[k, 2 * c + 1]
            if forward:
                row, column, imag = 2 * c, 2 * k, -imag
            else:
                row, column = 2 * k, 2 * c
            matrix[row, column], matrix[row, column + 1] = real, imag
            matrix[row + 1, column], matrix[row + 1, column + 1] = -imag, real


@njit(inline="always", cache=True)
def _small_product(a, b, c):
    """``c = a @ b`` by rows of multiply-adds along ``c``'s contiguous rows (products too small
    for a BLAS call to pay)."""
    for i in range(a.shape[0]):
        for j in range(c.shape[1]):
            c[i, j] = 0
        for r in range(a.shape[1]):
            scale = a[i, r]
            for j in range(c.shape[1]):
                c[i, j] += scale * b[r, j]


@njit(cache=True)
def _products(thread, threads, spectra, filters, products, groups, forward, use_blas, expanded):
    """Per frequency ``f`` and group: ``products[f] = spectra[f] @ conj(W[f]).T`` (forward:
    (blocks, C/g) x (C/g, K/g)) or ``spectra[f] @ W[f]`` (input gradient: (blocks, K/g) x (K/g,
    C/g)), on the complex arrays' interleaved float views ``spectra`` (F, blocks, 2 channels),
    ``filters`` (F, K, 2 C/g) and ``products`` (F, blocks, 2 channels), through each thread's
    expanded matrix (:func:`_expand`). FLOPs: ``8 blocks K (C/g)`` per frequency. Memory: the
    filters' spectrum read once, a frequency's matrices in a row."""
    frequencies = spectra.shape[0]
    group_out, group_in = filters.shape[1] // groups, filters.shape[2] // 2
    reduced, produced = (group_in, group_out) if forward else (group_out, group_in)
    first, stop = share(frequencies, thread, threads)
    matrix = scratch(expanded, thread, (2 * reduced, 2 * produced))
    for f in range(first, stop):
        for g in range(groups):
            _expand(filters[f, g * group_out:(g + 1) * group_out], matrix, forward)
            a = spectra[f, :, 2 * g * reduced:2 * (g + 1) * reduced]
            c = products[f, :, 2 * g * produced:2 * (g + 1) * produced]
            if use_blas:
                gemm(a, matrix, c, 0.0)
            else:
                _small_product(a, matrix, c)


@njit(cache=True)
def _weight_products(thread, threads, inputs, grads, sums, groups, accumulate, use_blas, rows):
    """Per frequency ``f`` and group: ``sums[:, :, f] (+)= conj(GY[f]).T @ X[f]``, (K/g, blocks) x
    (blocks, C/g), on interleaved float views: ``inputs`` (F, blocks, 2 C), ``grads`` (F,
    blocks, 2 K), ``sums`` (K, C/g, 2 F). With ``GY = gr + i gi`` and ``X``'s interleaved rows
    ``x``: ``conj(GY).T @ X = gr.T @ x + gi.T @ rot(x)``, ``rot(x)`` the rows of the rotated
    values ``(im, -re)``, so both products are real. Each thread's ``rows`` hold ``gr``, ``gi``,
    ``rot(x)`` and the frequency's product, which is then added into ``sums`` (a group's K/g C/g
    lines stay in cache over the thread's frequencies). Each frequency belongs to one thread and
    the chunks add in order: the same bits every call. FLOPs: ``8 blocks K (C/g)`` per
    frequency."""
    frequencies, count = inputs.shape[0], inputs.shape[1]
    group_out, group_in = sums.shape[0] // groups, sums.shape[1]
    planes_size, rotated_size = 2 * count * group_out, 2 * count * group_in
    first, stop = share(frequencies, thread, threads)
    row = rows[thread]
    planes = row[:planes_size].reshape(2, count, group_out)
    rotated = row[planes_size:planes_size + rotated_size].reshape(count, 2 * group_in)
    product = row[planes_size + rotated_size:planes_size + rotated_size + 2 * group_out * group_in].reshape(
        group_out, 2 * group_in)
    for g in range(groups):
        for f in range(first, stop):
            for b in range(count):
                for k in range(group_out):
                    planes[0, b, k] = grads[f, b, 2 * (g * group_out + k)]
                    planes[1, b, k] = grads[f, b, 2 * (g * group_out + k) + 1]
                for c in range(group_in):
                    rotated[b, 2 * c] = inputs[f, b, 2 * (g * group_in + c) + 1]
                    rotated[b, 2 * c + 1] = -inputs[f, b, 2 * (g * group_in + c)]
            x = inputs[f, :, 2 * g * group_in:2 * (g + 1) * group_in]
            if use_blas:
                gemm(planes[0].T, x, product, 0.0)
                gemm(planes[1].T, rotated, product, 1.0)
            else:
                for k in range(group_out):
                    for j in range(2 * group_in):
                        total = 0.0
                        for b in range(count):
                            total += planes[0, b, k] * x[b, j] + planes[1, b, k] * rotated[b, j]
                        product[k, j] = total
            for k in range(group_out):
                for c in range(group_in):
                    target = sums[g * group_out + k, c]
                    if accumulate:
                        target[2 * f] += product[k, 2 * c]
                        target[2 * f + 1] += product[k, 2 * c + 1]
                    else:
                        target[2 * f], target[2 * f + 1] = product[k, 2 * c], product[k, 2 * c + 1]
