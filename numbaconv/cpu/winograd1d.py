"""Winograd for 1-d convolutions of any stride: each phase of the stride a minimal filter F(4, r).

A stride-``s`` convolution splits into ``s`` stride-1 ones (its phases): tap
``j`` (offset ``o = d j`` with dilation ``d``) reads ``x[s t + o - pad]``,
so the taps with ``o mod s = p`` read every ``s``-th input from ``p`` on,
shifted by ``o div s``. Each phase with ``r`` taps is a stride-1 correlation
that Winograd's minimal filtering F(m, r) computes with ``m + r - 1``
multiplications per ``m`` outputs (``m = TILE``); a phase of one tap is one
product straight from its inputs. A 3-tap stride-1 layer then takes 6
products per 4 outputs instead of 12, a 3-tap stride-2 layer 9. With ``A^T``
(m x a), ``G`` (a x r) and ``B^T`` (a x a) of each phase (:func:`toom_cook`),
over the points of all phases (the phases' transforms side by side):

    U[pt] = sum_j G[pt, j] w[:, :, j]                       (K/g x C/g, once per call)
    V[pt][tile, c] = sum_i B^T[pt, i] x[c, s (m tile + i) + offset(pt)]
    M[pt] = V[pt] @ U[pt].T                                 (per group, in BLAS)
    y[k, m tile + i] = sum_pt A^T[i, pt] M[pt][tile, k]

Input gradient: the phases of ``grad_x`` instead, each a stride-1 correlation
of ``grad_y`` with its phase's taps reversed (channels swapped): the points of
phase ``p`` write ``grad_x[s u + p - pad]``; a phase without taps gets
zeros. Weight gradient: the adjoint, ``Y[pt][tile, k] = sum_i A^T[i, pt]
grad_y[k, m tile + i]``, ``dU[pt] = sum over tiles of Y[pt].T @ V[pt]``
(BLAS, into a partial sum per thread, added in thread order) and
``grad_w[:, :, j] = sum_pt G[pt, j] dU[pt]``.

Threads: items are blocks of tiles of one sample; each thread takes
consecutive items (``threads.on_threads``) and calls BLAS, held to one
thread, from inside. Per item the block's inputs are copied channels-last
(vector transposes), so each transform is a sum of whole rows of channels,
and the outputs go back to their planes the same way. A phase of one tap
needs no transform: its product reads the copied inputs at the stride and
adds into the block's outputs. Blocks hold at least MIN_BLOCK_TILES tiles:
every block's products pack all of ``U`` again.

FLOPs: ``2 (K/g) C sum over phases (m + r - 1) ceil(OL / m)`` per sample in
BLAS (:func:`product_share` of the direct count: 1/2 at 3 taps and stride 1,
3/4 at stride 2), about 2 per transformed element and tap, ``2 a R K C/g``
for the filters. Memory traffic: x and y once each in the copies, ``U``
(``a K C/g`` values) once per block, ``V`` and ``M`` per block in cache.

Accuracy: F(4, 3)'s points 0, 1, -1, 2, -2 scale by up to 8, so float32
results carry 2-3x the rounding of a direct sum: 7e-7 to 9.5e-7
norm-relative at 512 channels, 3 taps, stride 1, against im2col's 2.9e-7 to
3.2e-7 (all passes), well within the 1e-5 every algorithm is held to. A
phase of more than ``MAX_PHASE_TAPS`` taps, or whose shifts are not
consecutive (a dilation that skips inputs of the phase), is declined.
"""
import functools
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numba import njit

from . import workspace
from .blas import gemm
from .common import ONE, ZERO, transposed_rows
from .simd import LANES
from .threads import add_partials, most_threads, on_threads, scratch, share, single_threaded_blas, thread_count

TILE = 4                 # outputs per tile of each phase (m)
MAX_PHASE_TAPS = 3       # F(4, 3): 6 points; more taps need points whose rounding grows fast
FINITE_POINTS = (0, 1, -1, 2, -2)   # F(m, r) takes the first m + r - 2 of them and infinity
# BLAS packs a point's U (1 MiB at 512 channels) again for every product, so a product needs a few
# hundred rows (tiles) to pay for it; blocks of about BLOCK_BYTES of scratch a thread (more tiles where
# channels are few) keep the transforms' rows in cache (docs/decisions.md, W1D1).
MIN_BLOCK_TILES = 384
BLOCK_BYTES = 8 * 2**20
# FLOPs of one uncut kernel call, counted as direct convolution (numbaconv.slices).
SLICE_FLOPS = int(2.5e10)
# The transforms add neighbouring inputs, so one non-finite input spreads over its tile's outputs.
INEXACT_NONFINITE = {"forward": "result", "input": "result", "weight": "result"}


def _poly_times(a, b):
    """Coefficients (lowest first) of the product of the polynomials ``a`` and ``b``."""
    out = [Fraction(0)] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i + j] += ai * bj
    return out


@functools.lru_cache(maxsize=None)
def toom_cook(m, r):
    """``(A^T (m x a), G (a x r), B^T (a x a))`` of F(m, r), ``a = m + r - 1``, as float64:
    ``y = A^T [(G g) * (B^T d)]`` is the correlation ``y[i] = sum_j g[j] d[i + j]`` of ``a``
    inputs ``d`` with ``r`` taps ``g``. Points: ``FINITE_POINTS`` then infinity (modified
    Toom-Cook, the interpolation's scale folded into ``G``); F(m, 1) is the identity."""
    points = m + r - 1
    if r == 1:
        return np.eye(m), np.ones((m, 1)), np.eye(m)
    finite = [Fraction(p) for p in FINITE_POINTS[:points - 1]]
    at = [[Fraction(0)] * points for _ in range(m)]
    g = [[Fraction(0)] * r for _ in range(points)]
    interpolation = [[Fraction(0)] * points for _ in range(points)]   # column pt: its basis polynomial
    for pt, f in enumerate(finite):
        scale, basis = Fraction(1), [Fraction(1)]
        for other in finite:
            if other != f:
                scale *= f - other
                basis = _poly_times(basis, [-other, Fraction(1)])
        for i in range(m):
            at[i][pt] = f ** i
        for j in range(r):
            g[pt][j] = f ** j / scale
        for i, coefficient in enumerate(basis):
            interpolation[i][pt] = coefficient
    at[m - 1][points - 1], g[points - 1][r - 1] = Fraction(1), Fraction(1)   # the point at infinity
    basis = [Fraction(1)]
    for other in finite:
        basis = _poly_times(basis, [-other, Fraction(1)])
    for i, coefficient in enumerate(basis):
        interpolation[i][points - 1] = coefficient
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])   # noqa: E731
    return as_array(at), as_array(g), as_array(interpolation).T


class Plan(NamedTuple):
    """One pass's products: the points of its phases of 2 and more taps (how each is made from its
    input, where its products go) and its one-tap phases, products straight from the input."""
    in_step: int                 # input positions between a point's consecutive data
    in_offsets: np.ndarray       # (points,) int64: the input position of tile 0's first datum
    in_rows: np.ndarray          # (points, width) float64: B^T rows, data -> point
    out_step: int                # output positions between a phase's consecutive outputs
    out_offsets: np.ndarray      # (phases,) int64: a phase's first output position
    phase_points: np.ndarray     # (phases + 1,) int64: phase p owns points [phase_points[p], [p + 1])
    zero_phases: np.ndarray      # (phases,) int64: 1 where nothing reaches the phase's outputs
    out_rows: np.ndarray         # (TILE, points) float64: A^T, points -> a tile's outputs
    direct_offsets: np.ndarray   # (directs,) int64: the input position of a one-tap phase's output 0
    direct_phases: np.ndarray    # (directs,) int64: the output phase it adds to
    direct_betas: np.ndarray     # (directs,) float64: 0 where it is the first to write its phase
    taps_to_points: np.ndarray   # (points + directs, R) float64: G, the kernel's taps -> products
    tiles: int                   # tiles per sample (of the longest phase)

    @property
    def points(self):
        return self.in_rows.shape[0]

    @property
    def products(self):
        """Filter matrices: one per point and one per one-tap phase."""
        return self.taps_to_points.shape[0]

    @property
    def lowest(self):
        """The lowest input offset of any product."""
        return int(min(np.concatenate([self.in_offsets, self.direct_offsets])))


def _phases(taps, stride, dilation):
    """``{phase: [(shift, tap), ...]}`` sorted by shift: the taps whose offset ``dilation * tap``
    leaves remainder ``phase`` modulo ``stride``, with their offset's quotient."""
    phases = {}
    for tap in range(taps):
        phases.setdefault(dilation * tap % stride, []).append((dilation * tap // stride, tap))
    return phases


def _phase_problem(spec):
    """None if every phase of the 1-d ``spec`` (3-d form) has consecutive shifts and at most
    MAX_PHASE_TAPS taps, else why not."""
    for phase, taps in _phases(spec.kernel_size[2], spec.stride[2], spec.dilation[2]).items():
        shifts = [shift for shift, _ in taps]
        if len(taps) > MAX_PHASE_TAPS:
            return f"the stride's phase {phase} has {len(taps)} taps, more than {MAX_PHASE_TAPS}"
        if shifts != list(range(shifts[0], shifts[0] + len(shifts))):
            return f"the dilation leaves gaps between the taps of the stride's phase {phase}"
    return None


def _plan(taps, in_step, out_step, out_offsets, contributions, tiles):
    """A Plan from ``contributions`` (output phase, input offset, taps in correlation order): one
    of a single tap is direct, the others take F(TILE, r)'s points (a phase's points
    consecutive)."""
    parts = sorted((c for c in contributions if len(c[2]) > 1), key=lambda c: c[0])
    directs = [c for c in contributions if len(c[2]) == 1]
    transforms = [toom_cook(TILE, len(part_taps)) for _, _, part_taps in parts]
    points = sum(at.shape[1] for at, _, _ in transforms)
    width = max((bt.shape[1] for _, _, bt in transforms), default=1)
    in_offsets, in_rows = np.zeros(points, np.int64), np.zeros((points, width))
    out_rows, taps_to_points = np.zeros((TILE, points)), np.zeros((points + len(directs), taps))
    phase_points, first = np.zeros(len(out_offsets) + 1, np.int64), 0
    for (phase, in_offset, part_taps), (at, g, bt) in zip(parts, transforms):
        stop = first + at.shape[1]
        in_offsets[first:stop], in_rows[first:stop, :bt.shape[1]] = in_offset, bt
        out_rows[:, first:stop] = at
        taps_to_points[first:stop, part_taps] = g
        phase_points[phase + 1:] = stop
        first = stop
    betas, written = [], {phase for phase, _, _ in parts}
    for row, (phase, _, part_taps) in enumerate(directs):
        taps_to_points[points + row, part_taps[0]] = 1
        betas.append(float(phase in written))
        written.add(phase)
    zero_phases = np.array([phase not in written for phase in range(len(out_offsets))], np.int64)
    return Plan(in_step, in_offsets, in_rows, out_step, np.array(out_offsets, np.int64), phase_points, zero_phases,
                out_rows, np.array([offset for _, offset, _ in directs], np.int64),
                np.array([phase for phase, _, _ in directs], np.int64), np.array(betas), taps_to_points, tiles)


@functools.lru_cache(maxsize=256)
def forward_plan(spec):
    """The forward's products: every phase's F(TILE, r) (or its one tap) on ``x``'s every
    ``stride``-th input, all summed into the one output phase."""
    stride, pad, taps = spec.stride[2], spec.pad_lo[2], spec.kernel_size[2]
    contributions = [(0, stride * phase_taps[0][0] + phase - pad, [tap for _, tap in phase_taps])
                     for phase, phase_taps in sorted(_phases(taps, stride, spec.dilation[2]).items())]
    return _plan(taps, stride, 1, [0], contributions, -(-spec.out_size[2] // TILE))


@functools.lru_cache(maxsize=256)
def input_plan(spec):
    """The input gradient's products: ``grad_x[s u + p - pad] = sum over phase p's taps (shifts
    q0, q0 + 1, ...) of w[tap] grad_y[u - shift]``, each phase a correlation of ``grad_y`` with
    its taps reversed, writing ``grad_x`` every ``stride``-th position from its first at or after
    0 on."""
    stride, pad, taps, length = spec.stride[2], spec.pad_lo[2], spec.kernel_size[2], spec.in_size[2]
    phases = _phases(taps, stride, spec.dilation[2])
    contributions, out_offsets, tiles = [], [], 0
    for phase in range(stride):
        first_u = -(-(pad - phase) // stride)          # the first u with s u + p - pad >= 0
        out_offsets.append(stride * first_u + phase - pad)
        count = max(0, -(-(length - out_offsets[-1]) // stride))
        tiles = max(tiles, -(-count // TILE))
        phase_taps = phases.get(phase, [])
        if phase_taps:
            in_offset = first_u - phase_taps[0][0] - len(phase_taps) + 1
            contributions.append((phase, in_offset, [tap for _, tap in reversed(phase_taps)]))
    return _plan(taps, 1, stride, out_offsets, contributions, tiles)


def product_share(spec):
    """The forward's products per output and channel pair over the direct count's (its taps)."""
    plan = forward_plan(spec)
    return (plan.points + TILE * len(plan.direct_offsets)) / (TILE * spec.kernel_size[2])


def supports(spec):
    """None if winograd1d runs ``spec``, else why not: 1-d problems whose stride's phases each
    have at most MAX_PHASE_TAPS taps at consecutive shifts, and scratch within the workspace
    limit with the narrowest blocks (counted in float64, with Numba's full thread count)."""
    if spec.in_size[:2] != (1, 1) or spec.kernel_size[:2] != (1, 1) or any(spec.pad_lo[:2]) or any(spec.pad_hi[:2]):
        return "handles 1-d problems only"
    reason = _phase_problem(spec)
    if reason is not None:
        return reason
    itemsize, threads = 8, most_threads()
    plans = (forward_plan(spec), input_plan(spec))
    least = max(_scratch_elements(plan, spec, 1, threads) for plan in plans)
    partials = threads * plans[0].products * spec.out_channels * spec.group_in_channels
    return workspace.over_limit((least + partials) * itemsize)


def _reach(plan, widths):
    """Input positions a tile's products read from the lowest offset on: the span of their data
    (a one-tap phase reads TILE data a tile)."""
    highest = [int(offset) + plan.in_step * (width - 1) for offset, width in zip(plan.in_offsets, widths)]
    highest += [int(offset) + plan.in_step * (TILE - 1) for offset in plan.direct_offsets]
    return max(highest) - plan.lowest + 1


def _widths(rows):
    """The number of data each point reads: its B^T row up to its last nonzero."""
    return np.array([np.flatnonzero(row).max() + 1 if row.any() else 1 for row in rows], np.int64)


def _block_bytes(plan, ins, outs, block, itemsize):
    """One thread's scratch for a block of ``block`` tiles: the gathered inputs, the points' V and
    M, and the block's outputs (or the weight gradient's gathered ``grad_y``), channels-last."""
    gathered = plan.in_step * TILE * block + _reach(plan, _widths(plan.in_rows))
    return (gathered * ins + plan.points * block * (ins + outs) + plan.out_step * TILE * block * outs) * itemsize


def _scratch_elements(plan, spec, block, threads):
    """All threads' scratch for blocks of ``block`` tiles, plus the transformed filters."""
    per_thread = _block_bytes(plan, spec.in_channels, spec.out_channels, block, 1)
    return threads * per_thread + plan.products * spec.out_channels * spec.group_in_channels


def _block_tiles(plan, channels, out_channels, threads, itemsize, tiles, batch):
    """Tiles per block: a thread's scratch of about BLOCK_BYTES (at least MIN_BLOCK_TILES tiles),
    and at least as many blocks in all as threads."""
    per_tile = _block_bytes(plan, channels, out_channels, 1, itemsize)
    width = max(MIN_BLOCK_TILES, BLOCK_BYTES // per_tile)
    width = max(1, min(width, (workspace.workspace_limit() // 2) // (threads * per_tile)))
    blocks = max(-(-tiles // width), -(-threads // batch))
    return max(1, -(-tiles // blocks))


@njit(cache=True)
def gather(source, origin, rows, steps, lanes, out):
    """``out[q, c] = source[c, origin + q]`` for ``q < rows`` (zero outside ``source`` (C, L)):
    a channels-last copy of positions, by vector transposes (``common.transposed_rows``;
    ``steps[q] = q C``, ``lanes[l] = l L``)."""
    channels, length = source.shape
    first, stop = min(max(-origin, 0), rows), min(max(length - origin, 0), rows)
    out[:first] = 0
    out[stop:rows] = 0
    transposed_rows(out.reshape(-1), steps, ZERO, ONE, source.reshape(-1), lanes, origin, length, first, stop,
                    channels)


@njit(inline="always", cache=True)
def _add_scaled(sums, coefficient, data, first):
    """``sums = coefficient * data`` where ``first``, else ``sums += coefficient * data``."""
    if first:
        for c in range(sums.shape[0]):
            sums[c] = coefficient * data[c]
    else:
        for c in range(sums.shape[0]):
            sums[c] += coefficient * data[c]


@njit(cache=True)
def to_points(gathered, count, step, offsets, rows, widths, out):
    """``out[pt, t] = sum_i rows[pt, i] * gathered[step * (TILE * t + i) + offsets[pt]]`` (rows of
    channels) for ``t < count``."""
    for pt in range(offsets.shape[0]):
        for t in range(count):
            sums = out[pt, t]
            first = True
            for i in range(widths[pt]):
                coefficient = rows[pt, i]
                if coefficient != 0:
                    _add_scaled(sums, coefficient, gathered[step * (TILE * t + i) + offsets[pt]], first)
                    first = False
            if first:
                sums[:] = 0


@njit(cache=True)
def from_points(products, count, step, offsets, phase_points, zero_phases, rows, out):
    """``out[step * (TILE * t + i) + offsets[p]] = sum over phase p's points pt of rows[i, pt] *
    products[pt, t]`` (rows of channels) for ``t < count``; zeros where ``zero_phases[p]``, and
    a phase without points (its one-tap products write it) left as it is."""
    for phase in range(offsets.shape[0]):
        if phase_points[phase] == phase_points[phase + 1] and not zero_phases[phase]:
            continue
        for t in range(count):
            for i in range(TILE):
                sums = out[step * (TILE * t + i) + offsets[phase]]
                first = True
                for pt in range(phase_points[phase], phase_points[phase + 1]):
                    coefficient = rows[i, pt]
                    if coefficient != 0:
                        _add_scaled(sums, coefficient, products[pt, t], first)
                        first = False
                if first:
                    sums[:] = 0


@njit(inline="always", cache=True)
def _group_product(inputs, u, row, groups, group, forward, out, beta):
    """``out (rows, K/g) = inputs (rows, C/g) @ filters`` of ``group``: transformed filters
    ``u[row]`` (K C/g; per group (K/g, C/g)), transposed in the ``forward``."""
    rows, columns = inputs.shape[1], out.shape[1]
    filters = u[row, group * rows * columns:(group + 1) * rows * columns]
    if forward:
        gemm(inputs, filters.reshape(columns, rows).T, out, beta)
    else:
        gemm(inputs, filters.reshape(rows, columns), out, beta)


@njit(cache=True)
def _tile_blocks(thread, threads, source, u, groups, forward, out, block, tiles, lowest, reach, in_step, in_offsets,
                 in_rows, widths, direct_offsets, direct_phases, direct_betas, out_step, out_offsets, phase_points,
                 zero_phases, out_rows, in_steps, in_lanes, out_steps, out_lanes, gathers, points, products, outputs):
    """``out[n] = conv(source[n])`` (the forward, or the input gradient with its plan) through
    transformed filters ``u`` (products, K C/g; per group (K/g, C/g), used transposed in the
    ``forward``): the threads take consecutive items, a block of ``block`` tiles of one sample
    each; per item the block's inputs channels-last (:func:`gather`), the points' V
    (:func:`to_points`), their products M in BLAS, the outputs channels-last
    (:func:`from_points`), the one-tap phases' products added straight from the inputs, and
    the outputs back to ``out``'s rows. Scratch rows per thread: ``gathers``, ``points``,
    ``products``, ``outputs``."""
    batch, channels, out_channels, length = source.shape[0], source.shape[1], out.shape[1], out.shape[2]
    point_count = in_offsets.shape[0]
    group_in, group_out = channels // groups, out_channels // groups
    blocks = -(-tiles // block)
    first, stop = share(batch * blocks, thread, threads)
    for item in range(first, stop):
        n, first_tile = item // blocks, item % blocks * block
        count = min(block, tiles - first_tile)
        rows, positions = in_step * TILE * count + reach, TILE * count
        gathered = scratch(gathers, thread, (rows, channels))
        gather(source[n], in_step * TILE * first_tile + lowest, rows, in_steps, in_lanes, gathered)
        v = scratch(points, thread, (point_count, count, channels))
        to_points(gathered, count, in_step, in_offsets - lowest, in_rows, widths, v)
        m = scratch(products, thread, (point_count, count, out_channels))
        for pt in range(point_count):
            for g in range(groups):
                _group_product(v[pt, :, g * group_in:(g + 1) * group_in], u, pt, groups, g, forward,
                               m[pt, :, g * group_out:(g + 1) * group_out], 0.0)
        written = scratch(outputs, thread, (out_step * positions, out_channels))
        from_points(m, count, out_step, out_offsets, phase_points, zero_phases, out_rows, written)
        for d in range(direct_offsets.shape[0]):
            at, to = direct_offsets[d] - lowest, out_offsets[direct_phases[d]]
            inputs = gathered[at:at + in_step * positions:in_step]
            sums = written[to:to + out_step * positions:out_step]
            for g in range(groups):
                _group_product(inputs[:, g * group_in:(g + 1) * group_in], u, point_count + d, groups, g, forward,
                               sums[:, g * group_out:(g + 1) * group_out], direct_betas[d])
        start = out_step * TILE * first_tile
        transposed_rows(out[n].reshape(-1), out_steps, start, length, written.reshape(-1), out_lanes, ZERO, ONE, ZERO,
                        min(written.shape[0], length - start), out_channels)


@njit(cache=True)
def _weight_blocks(thread, threads, x, grad_y, block, tiles, lowest, reach, in_step, in_offsets, in_rows, widths,
                   direct_offsets, grad_rows, grad_widths, in_steps, in_lanes, grad_steps, grad_lanes, gathers,
                   grad_gathers, points, grads, partials):
    """``partials[thread, pt, g] += sum over the thread's tiles of Y[pt].T @ V[pt]`` (group ``g``'s
    channels), and for one-tap phases ``grad_y``'s rows times their inputs: items as in
    :func:`_tile_blocks`, V from ``x`` by the forward's points and Y from ``grad_y`` through A
    (``grad_rows``). Scratch rows per thread: ``gathers``, ``grad_gathers``, ``points``,
    ``grads``."""
    batch, channels, out_channels = x.shape[0], x.shape[1], grad_y.shape[1]
    point_count = in_offsets.shape[0]
    groups, group_out, group_in = partials.shape[2:]
    no_offsets = np.zeros(point_count, np.int64)
    blocks = -(-tiles // block)
    first, stop = share(batch * blocks, thread, threads)
    for item in range(first, stop):
        n, first_tile = item // blocks, item % blocks * block
        count = min(block, tiles - first_tile)
        rows, positions = in_step * TILE * count + reach, TILE * count
        gathered = scratch(gathers, thread, (rows, channels))
        gather(x[n], in_step * TILE * first_tile + lowest, rows, in_steps, in_lanes, gathered)
        v = scratch(points, thread, (point_count, count, channels))
        to_points(gathered, count, in_step, in_offsets - lowest, in_rows, widths, v)
        grad_rows_gathered = scratch(grad_gathers, thread, (positions, out_channels))
        gather(grad_y[n], TILE * first_tile, positions, grad_steps, grad_lanes, grad_rows_gathered)
        y = scratch(grads, thread, (point_count, count, out_channels))
        to_points(grad_rows_gathered, count, ONE, no_offsets, grad_rows, grad_widths, y)
        for pt in range(point_count):
            for g in range(groups):
                gemm(y[pt, :, g * group_out:(g + 1) * group_out].T, v[pt, :, g * group_in:(g + 1) * group_in],
                     partials[thread, pt, g], 1.0)
        for d in range(direct_offsets.shape[0]):
            at = direct_offsets[d] - lowest
            inputs = gathered[at:at + in_step * positions:in_step]
            for g in range(groups):
                gemm(grad_rows_gathered[:, g * group_out:(g + 1) * group_out].T, inputs[:, g * group_in:(g + 1) * group_in],
                     partials[thread, point_count + d, g], 1.0)


def _rows(array):
    """(N, C, 1, 1, L) -> the contiguous (N, C, L) view."""
    return array.reshape(array.shape[0], array.shape[1], array.shape[4])


@njit(cache=True)
def _filter_points(thread, threads, taps, taps_to_points, u):
    """``u[pt, i] = sum_j taps_to_points[pt, j] * taps[i, j]`` for the thread's share of the
    filters ``i`` (a product in BLAS)."""
    first, stop = share(taps.shape[0], thread, threads)
    gemm(taps_to_points, taps[first:stop].T, u[:, first:stop], 0.0)


def _transformed_filters(plan, w, threads):
    """``U[pt] = sum_j G[pt, j] w[..., j]`` for ``w`` (K, C/g, R), as (products, K C/g), by the
    threads (BLAS held to one thread)."""
    taps = w.reshape(-1, w.shape[-1])
    u = workspace.borrow("winograd1d_filters", plan.products * taps.shape[0], w.dtype).reshape(plan.products, -1)
    on_threads(_filter_points, threads, taps, plan.taps_to_points.astype(w.dtype), u)
    return u


def _steps(count, step):
    return np.arange(count, dtype=np.int64) * step


def _convolve(plan, source, w, groups, forward, out):
    """``out = conv(source)`` by ``plan``'s products with the filters ``w`` (K, C/g, R): the
    forward, or the input gradient. BLAS is held to one thread from the filter transform on
    (its threads would otherwise go on spinning while the kernel's run)."""
    threads, dtype = thread_count(), source.dtype
    channels, length, out_channels, out_length = source.shape[1], source.shape[2], out.shape[1], out.shape[2]
    block = _block_tiles(plan, channels, out_channels, threads, dtype.itemsize, plan.tiles, source.shape[0])
    widths = _widths(plan.in_rows)
    reach = _reach(plan, widths)
    gathered_rows, out_rows = plan.in_step * TILE * block + reach, plan.out_step * TILE * block
    gathers = workspace.per_thread("winograd1d_gathered", threads, gathered_rows * channels, dtype)
    points = workspace.per_thread("winograd1d_points", threads, plan.points * block * channels, dtype)
    products = workspace.per_thread("winograd1d_products", threads, plan.points * block * out_channels, dtype)
    outputs = workspace.per_thread("winograd1d_outputs", threads, out_rows * out_channels, dtype)
    with single_threaded_blas():
        u = _transformed_filters(plan, w, threads)
        on_threads(_tile_blocks, threads, source, u, groups, forward, out, block, plan.tiles, plan.lowest, reach,
                   plan.in_step, plan.in_offsets, plan.in_rows.astype(dtype), widths, plan.direct_offsets,
                   plan.direct_phases, plan.direct_betas, plan.out_step, plan.out_offsets, plan.phase_points,
                   plan.zero_phases, plan.out_rows.astype(dtype), _steps(gathered_rows, channels),
                   _steps(LANES, length), _steps(out_rows, out_channels), _steps(LANES, out_length), gathers, points,
                   products, outputs)


def _taps(w):
    """(K, C/g, 1, 1, R) -> the contiguous (K, C/g, R) view."""
    return w.reshape(w.shape[0], w.shape[1], w.shape[4])


def forward(spec, x, w, out):
    _convolve(forward_plan(spec), _rows(x), _taps(w), spec.groups, True, _rows(out))


def backward_input(spec, grad_y, w, grad_x):
    _convolve(input_plan(spec), _rows(grad_y), _taps(w), spec.groups, False, _rows(grad_x))


def backward_weight(spec, x, grad_y, grad_w):
    """``grad_w[:, :, j] = sum over products of G[pt, j] dU[pt]``, ``dU[pt]`` the sum over all
    tiles of ``Y[pt].T @ V[pt]`` (a one-tap phase: ``grad_y``'s rows times its inputs): per
    thread a partial sum, added in thread order (``threads.add_partials``: the same rounding
    every run)."""
    plan = forward_plan(spec)
    x, grad_y = _rows(x), _rows(grad_y)
    threads, dtype = thread_count(), x.dtype
    channels, length, out_channels, out_length = x.shape[1], x.shape[2], grad_y.shape[1], grad_y.shape[2]
    groups, group_out, group_in = spec.groups, spec.group_out_channels, spec.group_in_channels
    block = _block_tiles(plan, channels, out_channels, threads, dtype.itemsize, plan.tiles, x.shape[0])
    widths = _widths(plan.in_rows)
    reach = _reach(plan, widths)
    gathered_rows = plan.in_step * TILE * block + reach
    gathers = workspace.per_thread("winograd1d_gathered", threads, gathered_rows * channels, dtype)
    grad_gathers = workspace.per_thread("winograd1d_outputs", threads, TILE * block * out_channels, dtype)
    points = workspace.per_thread("winograd1d_points", threads, plan.points * block * channels, dtype)
    grads = workspace.per_thread("winograd1d_products", threads, plan.points * block * out_channels, dtype)
    shape = (threads, plan.products, groups, group_out, group_in)
    partials = workspace.borrow("winograd1d_partials", int(np.prod(shape)), dtype).reshape(shape)
    partials[...] = 0
    with single_threaded_blas():
        on_threads(_weight_blocks, threads, x, grad_y, block, plan.tiles, plan.lowest, reach, plan.in_step,
                   plan.in_offsets, plan.in_rows.astype(dtype), widths, plan.direct_offsets,
                   np.ascontiguousarray(plan.out_rows.T).astype(dtype), np.full(plan.points, TILE, np.int64),
                   _steps(gathered_rows, channels), _steps(LANES, length), _steps(TILE * block, out_channels),
                   _steps(LANES, out_length), gathers, grad_gathers, points, grads, partials)
        sums = partials[0].reshape(plan.products, -1)
        if threads > 1:
            add_partials(partials.reshape(threads, plan.products, -1), sums)
        np.matmul(sums.T, plan.taps_to_points.astype(dtype), out=grad_w.reshape(-1, spec.kernel_size[2]))
