"""Winograd for 1-d convolutions of any stride and dilation: each phase a minimal filter F(4, r).

Output ``t`` reads ``x[s t + d j - pad]`` through tap ``j`` (stride ``s``,
dilation ``d``). With ``g = gcd(s, d)``, ``l = lcm(s, d)``, ``a = d / g``
and ``b = s / g``, write ``t = a u + r`` and ``j = p + b q``: then ``s t +
d j = l (u + q) + s r + d p``, so each pair of an output phase ``r`` (every
``a``-th output) and a tap phase ``p`` (every ``b``-th tap) is a stride-1
correlation in ``u`` of those taps with every ``l``-th input (stride 2:
the even and the odd taps; dilation 3 at stride 1: every third output from
every third input). Each phase pair with ``r`` taps is computed by
Winograd's minimal filtering F(m, r), ``m + r - 1`` multiplications per
``m`` outputs (``m = TILE``); a phase of one tap is one product straight
from its inputs. A 3-tap stride-1 layer (any dilation) then takes 6
products per 4 outputs instead of 12, a 3-tap stride-2 layer 9. With ``A^T``
(m x a), ``G`` (a x r) and ``B^T`` (a x a) of each phase (:func:`toom_cook`),
over the points of all phases (the phases' transforms side by side):

    U[pt] = sum_j G[pt, j] w[:, :, j]                       (K/g x C/g, once per call)
    V[pt][tile, c] = sum_i B^T[pt, i] x[c, s (m tile + i) + offset(pt)]
    M[pt] = V[pt] @ U[pt].T                                 (per group, in BLAS)
    y[k, m tile + i] = sum_pt A^T[i, pt] M[pt][tile, k]

Input gradient: the phases of ``grad_x`` instead (every ``l``-th input), each
a stride-1 correlation of every ``a``-th ``grad_y`` with the taps that reach
it, reversed (channels swapped, :func:`input_plan`); a phase no tap reaches
gets zeros. Weight gradient: the adjoint, ``Y[pt][tile, k] = sum_i A^T[i, pt]
grad_y[k, m tile + i]``, ``dU[pt] = sum over tiles of Y[pt].T @ V[pt]``
(BLAS, into a partial sum per thread, added in thread order) and
``grad_w[:, :, j] = sum_pt G[pt, j] dU[pt]``.

Threads: items are equal blocks of all samples' tiles in a row (a block
that meets the end of a sample is done in parts, one per sample); each
thread takes consecutive items (``threads.on_threads``) and calls BLAS, held
to one thread, from inside. Per part the inputs are copied channels-last
(vector transposes), so each transform is a sum of whole rows of channels,
and the outputs go back to their planes the same way; the products run over
the whole block. A phase of one tap
needs no transform: its product reads the copied inputs at the stride and
adds into the block's outputs. A block's products have at least
MIN_PRODUCT_ROWS rows: every block's products pack all of ``U`` again.

FLOPs: ``2 (K/g) C sum over phases (m + r - 1) ceil(OL / m)`` per sample in
BLAS (:func:`product_share` of the direct count: 1/2 at 3 taps and stride 1,
3/4 at stride 2), about 2 per transformed element and tap, ``2 a R K C/g``
for the filters. Memory traffic: x and y once each in the copies, ``U``
(``a K C/g`` values) once per block, ``V`` and ``M`` per block in cache.

Accuracy: F(4, 3)'s points 0, 1, -1, 2, -2 scale by up to 8, so float32
results carry 2-3x the rounding of a direct sum: 7e-7 to 9.5e-7
norm-relative at 512 channels, 3 taps, stride 1, against im2col's 2.9e-7 to
3.2e-7 (all passes), well within the 1e-5 every algorithm is held to. A
tap phase of more than ``MAX_PHASE_TAPS`` taps is declined.
"""
import functools
import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
from numba import njit

from . import workspace
from .blas import gemm
from .common import ONE, ZERO, transposed_rows
from .simd import LANES
from .threads import (add_partials, block_of, most_threads, on_threads, scratch, share, single_threaded_blas,
                      thread_count)

TILE = 4                 # outputs per tile of each phase (m)
MAX_PHASE_TAPS = 3       # F(4, 3): 6 points; more taps need points whose rounding grows fast
FINITE_POINTS = (0, 1, -1, 2, -2)   # F(m, r) takes the first m + r - 2 of them and infinity
# BLAS packs a filter's U (1 MiB at 512 channels) again for every product, so a product needs a few
# hundred rows (a run's points x the block's tiles) to pay for it; blocks of about BLOCK_BYTES of
# scratch a thread (more tiles where channels are few) keep the transforms' rows in cache
# (docs/decisions.md, W1D1).
MIN_PRODUCT_ROWS = 384
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
    input, where its products go) and its one-tap phases, products straight from the input.
    Points that share a filter (the same taps in another output phase) lie next to each other,
    a run: their products are one product in BLAS."""
    in_step: int                 # input positions between a point's consecutive data
    in_offsets: np.ndarray       # (points,) int64: the input position of tile 0's first datum
    in_rows: np.ndarray          # (points, width) float64: B^T rows, data -> point
    out_step: int                # output positions between a phase's consecutive outputs
    out_offsets: np.ndarray      # (phases,) int64: a phase's first output position
    phase_starts: np.ndarray     # (phases + 1,) int64: phase p's points are phase_members[p_starts[p]:[p + 1]]
    phase_members: np.ndarray    # (points,) int64
    zero_phases: np.ndarray      # (phases,) int64: 1 where nothing reaches the phase's outputs
    out_rows: np.ndarray         # (TILE, points) float64: A^T, points -> a tile's outputs
    run_starts: np.ndarray       # (runs + 1,) int64: run i is points [run_starts[i], [i + 1]), filter i
    direct_offsets: np.ndarray   # (directs,) int64: the input position of a one-tap phase's output 0
    direct_phases: np.ndarray    # (directs,) int64: the output phase it adds to
    direct_betas: np.ndarray     # (directs,) float64: 0 where it is the first to write its phase
    taps_to_points: np.ndarray   # (runs + directs, R) float64: G, the kernel's taps -> filters
    tiles: int                   # tiles per sample (of the longest phase)
    widths: np.ndarray           # (points,) int64: the data a point reads (its B^T row to the last nonzero)
    lowest: int                  # the lowest input offset of any product
    reach: int                   # input positions a tile's products read from the lowest offset on

    @property
    def points(self):
        return self.in_rows.shape[0]

    @property
    def filters(self):
        """Transformed filters: one per run of points and one per one-tap phase."""
        return self.taps_to_points.shape[0]


def _lattice(spec):
    """``(a, b, l)`` of the 1-d ``spec`` (3-d form): with ``g = gcd(stride, dilation)``, the
    outputs split into ``a = dilation / g`` phases (every ``a``-th output), the taps into ``b =
    stride / g`` phases (every ``b``-th tap), and each pair reads every ``l = lcm(stride,
    dilation)``-th input."""
    stride, dilation = spec.stride[2], spec.dilation[2]
    common = math.gcd(stride, dilation)
    return dilation // common, stride // common, stride * dilation // common


def _tap_phases(spec):
    """``[(p, [taps p, p + b, p + 2b, ...]), ...]``: the taps by phase, each phase's in order."""
    taps, (_, b, _) = spec.kernel_size[2], _lattice(spec)
    return [(p, list(range(p, taps, b))) for p in range(min(b, taps))]


def _phase_problem(spec):
    """None if every phase of the 1-d ``spec``'s taps (3-d form) has at most MAX_PHASE_TAPS taps,
    else why not."""
    most = max(len(phase_taps) for _, phase_taps in _tap_phases(spec))
    if most > MAX_PHASE_TAPS:
        return (f"a phase of the stride has {most} taps, more than {MAX_PHASE_TAPS} (every "
                f"{_lattice(spec)[1]}-th of the kernel's {spec.kernel_size[2]})")
    return None


def _plan(taps, in_step, out_step, out_offsets, contributions, tiles):
    """A Plan from ``contributions`` (output phase, input offset, taps in correlation order): one
    of a single tap is direct, the others take F(TILE, r)'s points; the points of contributions
    with the same taps go point by point, phase after phase (runs sharing a filter)."""
    classes = {}
    for contribution in sorted(contributions, key=lambda c: c[0]):
        if len(contribution[2]) > 1:
            classes.setdefault(tuple(contribution[2]), []).append(contribution)
    directs = [c for c in contributions if len(c[2]) == 1]
    points = sum((len(class_taps) + TILE - 1) * len(members) for class_taps, members in classes.items())
    runs = sum(len(class_taps) + TILE - 1 for class_taps in classes)
    width = max((len(class_taps) + TILE - 1 for class_taps in classes), default=1)
    in_offsets, in_rows = np.zeros(points, np.int64), np.zeros((points, width))
    out_rows, taps_to_points = np.zeros((TILE, points)), np.zeros((runs + len(directs), taps))
    run_starts, point_phases, point, run = [0], [], 0, 0
    for class_taps, members in classes.items():
        at, g, bt = toom_cook(TILE, len(class_taps))
        for i in range(at.shape[1]):
            taps_to_points[run, list(class_taps)] = g[i]
            for phase, in_offset, _ in members:
                in_offsets[point], in_rows[point, :bt.shape[1]], out_rows[:, point] = in_offset, bt[i], at[:, i]
                point_phases.append(phase)
                point += 1
            run += 1
            run_starts.append(point)
    phase_members = np.argsort(np.array(point_phases, np.int64), kind="stable")
    phase_starts = np.searchsorted(np.array(point_phases, np.int64)[phase_members], np.arange(len(out_offsets) + 1))
    betas, written = [], set(point_phases)
    for row, (phase, _, part_taps) in enumerate(directs):
        taps_to_points[runs + row, part_taps[0]] = 1
        betas.append(float(phase in written))
        written.add(phase)
    zero_phases = np.array([phase not in written for phase in range(len(out_offsets))], np.int64)
    widths = np.array([np.flatnonzero(row).max() + 1 for row in in_rows], np.int64)
    direct_offsets = np.array([offset for _, offset, _ in directs], np.int64)
    lowest = int(min(np.concatenate([in_offsets, direct_offsets])))
    highest = max([offset + in_step * (width - 1) for offset, width in zip(in_offsets, widths)]
                  + [offset + in_step * (TILE - 1) for offset in direct_offsets])
    return Plan(in_step, in_offsets, in_rows, out_step, np.array(out_offsets, np.int64), phase_starts.astype(np.int64),
                phase_members.astype(np.int64), zero_phases, out_rows, np.array(run_starts, np.int64), direct_offsets,
                np.array([phase for phase, _, _ in directs], np.int64), np.array(betas), taps_to_points, tiles, widths,
                lowest, int(highest - lowest + 1))


@functools.lru_cache(maxsize=256)
def forward_plan(spec):
    """The forward's products: output ``t = a u + r`` (phase ``r``) sums, over the tap phases
    ``p``, the correlation in ``u`` of taps ``p + b q`` with ``x[l (u + q) + s r + d p - pad]``
    (``_lattice``): F(TILE, r) on every ``l``-th input."""
    stride, dilation, pad = spec.stride[2], spec.dilation[2], spec.pad_lo[2]
    a, _, lcm = _lattice(spec)
    contributions = [(r, stride * r + dilation * p - pad, phase_taps)
                     for r in range(a) for p, phase_taps in _tap_phases(spec)]
    tiles = max(-(-max(0, -(-(spec.out_size[2] - r) // a)) // TILE) for r in range(a))
    return _plan(spec.kernel_size[2], lcm, a, list(range(a)), contributions, tiles)


@functools.lru_cache(maxsize=256)
def input_plan(spec):
    """The input gradient's products: ``grad_x[v]`` with ``v + pad = l u + rho`` (phase ``rho``
    of ``l``) takes the taps ``j0 + b q`` whose offset ``d j0`` meets ``rho`` modulo the stride:
    ``sum over q of w[j0 + b q] grad_y[a (u - q) + (rho - d j0) / s]``, a correlation of
    every ``a``-th ``grad_y`` with those taps reversed; a phase no tap meets gets zeros. Each
    phase writes ``grad_x`` every ``l``-th position from its first at or after 0 on."""
    stride, dilation, pad, length = spec.stride[2], spec.dilation[2], spec.pad_lo[2], spec.in_size[2]
    a, _, lcm = _lattice(spec)
    by_residue = {dilation * p % stride: phase_taps for p, phase_taps in _tap_phases(spec)}
    contributions, out_offsets, tiles = [], [], 0
    for rho in range(lcm):
        first_u = -(-(pad - rho) // lcm)          # the first u with l u + rho - pad >= 0
        out_offsets.append(lcm * first_u + rho - pad)
        count = max(0, -(-(length - out_offsets[-1]) // lcm))
        tiles = max(tiles, -(-count // TILE))
        phase_taps = by_residue.get(rho % stride)
        if phase_taps:
            shift = (rho - dilation * phase_taps[0]) // stride
            in_offset = a * (first_u - len(phase_taps) + 1) + shift
            contributions.append((rho, in_offset, phase_taps[::-1]))
    return _plan(spec.kernel_size[2], a, lcm, out_offsets, contributions, tiles)


def product_share(spec):
    """The forward's products per output and channel pair over the direct count's (its taps); each
    output phase has its own products."""
    plan = forward_plan(spec)
    phases = len(plan.out_offsets)
    return (plan.points + TILE * len(plan.direct_offsets)) / (TILE * spec.kernel_size[2] * phases)


def tile_count(spec):
    """Tiles of TILE outputs the forward of ``spec`` computes, all samples and output phases."""
    plan = forward_plan(spec)
    return spec.batch * plan.tiles * len(plan.out_offsets)


def supports(spec):
    """None if winograd1d runs ``spec``, else why not: 1-d problems whose tap phases each have at
    most MAX_PHASE_TAPS taps, and scratch within the workspace limit with the narrowest blocks
    (counted in float64, with Numba's full thread count)."""
    if spec.in_size[:2] != (1, 1) or spec.kernel_size[:2] != (1, 1) or any(spec.pad_lo[:2]) or any(spec.pad_hi[:2]):
        return "handles 1-d problems only"
    reason = _phase_problem(spec)
    if reason is not None:
        return reason
    itemsize, threads = 8, most_threads()
    plans = (forward_plan(spec), input_plan(spec))
    least = max(_scratch_elements(plan, spec, 1, threads) for plan in plans)
    partials = threads * plans[0].filters * spec.out_channels * spec.group_in_channels
    return workspace.over_limit((least + partials) * itemsize)


def _block_bytes(plan, ins, outs, block, itemsize):
    """One thread's scratch for a block of ``block`` tiles: the gathered inputs, the points' V and
    M, and the block's outputs (or the weight gradient's gathered ``grad_y``), channels-last."""
    gathered = plan.in_step * TILE * block + plan.reach
    return (gathered * ins + plan.points * block * (ins + outs) + plan.out_step * TILE * block * outs) * itemsize


def _scratch_elements(plan, spec, block, threads):
    """All threads' scratch for blocks of ``block`` tiles, plus the transformed filters."""
    per_thread = _block_bytes(plan, spec.in_channels, spec.out_channels, block, 1)
    return threads * per_thread + plan.filters * spec.out_channels * spec.group_in_channels


def _block_tiles(plan, channels, out_channels, threads, itemsize, batch):
    """Tiles per block (of all samples' tiles in a row): a thread's scratch of about BLOCK_BYTES,
    but products of at least MIN_PRODUCT_ROWS rows; equal blocks, as many as a multiple of the
    threads (``workspace.balanced_width``)."""
    per_tile = _block_bytes(plan, channels, out_channels, 1, itemsize)
    run = max(np.diff(plan.run_starts), default=1)
    width = max(-(-MIN_PRODUCT_ROWS // run), BLOCK_BYTES // per_tile)
    width = max(1, min(width, (workspace.workspace_limit() // 2) // (threads * per_tile)))
    return workspace.balanced_width(width, batch * plan.tiles, threads)


def _segments(plan, block, batch):
    """The most samples' runs of tiles a block of ``block`` tiles meets."""
    return min(batch, -(-block // plan.tiles) + 1)


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
def to_points(gathered, count, step, offsets, rows, widths, out, first_row):
    """``out[pt, first_row + t] = sum_i rows[pt, i] * gathered[step * (TILE * t + i) +
    offsets[pt]]`` (rows of channels) for ``t < count``."""
    for pt in range(offsets.shape[0]):
        for t in range(count):
            sums = out[pt, first_row + t]
            first = True
            for i in range(widths[pt]):
                coefficient = rows[pt, i]
                if coefficient != 0:
                    _add_scaled(sums, coefficient, gathered[step * (TILE * t + i) + offsets[pt]], first)
                    first = False
            if first:
                sums[:] = 0


@njit(cache=True)
def from_points(products, first_row, count, step, offsets, phase_starts, phase_members, zero_phases, rows, out):
    """``out[step * (TILE * t + i) + offsets[p]] = sum over phase p's points pt of rows[i, pt] *
    products[pt, first_row + t]`` (rows of channels) for ``t < count``, phase ``p``'s points
    ``phase_members[phase_starts[p]:phase_starts[p + 1]]``; zeros where ``zero_phases[p]``,
    and a phase without points (its one-tap products write it) left as it is."""
    for phase in range(offsets.shape[0]):
        if phase_starts[phase] == phase_starts[phase + 1] and not zero_phases[phase]:
            continue
        for t in range(count):
            for i in range(TILE):
                sums = out[step * (TILE * t + i) + offsets[phase]]
                first = True
                for member in range(phase_starts[phase], phase_starts[phase + 1]):
                    pt = phase_members[member]
                    coefficient = rows[i, pt]
                    if coefficient != 0:
                        _add_scaled(sums, coefficient, products[pt, first_row + t], first)
                        first = False
                if first:
                    sums[:] = 0


@njit(cache=True)
def _group_product(inputs, u, row, groups, group, forward, out, beta):
    """``out (rows, K/g) = inputs (rows, C/g) @ filters + beta out`` of ``group``: transformed
    filters ``u[row]`` (K C/g; per group (K/g, C/g)), transposed in the ``forward``. Not inlined:
    its two products would be compiled into every caller."""
    rows, columns = inputs.shape[1], out.shape[1]
    filters = u[row, group * rows * columns:(group + 1) * rows * columns]
    if forward:
        gemm(inputs, filters.reshape(columns, rows).T, out, beta)
    else:
        gemm(inputs, filters.reshape(rows, columns), out, beta)


@njit(inline="always", cache=True)
def _segment(first_tile, block_start, block_stop, tiles):
    """The sample, first tile and tile count of the part of tiles ``[first_tile, block_stop)`` (of
    all samples' tiles in a row) that lies in one sample, and its row in the block."""
    n, tile = first_tile // tiles, first_tile % tiles
    return n, tile, min(tiles - tile, block_stop - first_tile), first_tile - block_start


@njit(cache=True)
def _tile_blocks(thread, threads, source, u, groups, forward, out, block, tiles, lowest, reach, in_step, in_offsets,
                 in_rows, widths, run_starts, direct_offsets, direct_phases, direct_betas, out_step, out_offsets,
                 phase_starts, phase_members, zero_phases, out_rows, in_steps, in_lanes, out_steps, out_lanes, gathers,
                 points, products, outputs):
    """``out[n] = conv(source[n])`` (the forward, or the input gradient with its plan) through
    transformed filters ``u`` (filters, K C/g; per group (K/g, C/g), used transposed in the
    ``forward``): the threads take consecutive blocks of ``block`` tiles of all samples' tiles in
    a row. Per block: each sample's part of it copied channels-last (:func:`gather`) and its
    points' V (:func:`to_points`); the products M in BLAS, a run of points with one filter
    one product over the whole block; then per sample the outputs channels-last
    (:func:`from_points`), the one-tap phases' products added straight from the copied
    inputs, and the outputs back to ``out``'s rows. Scratch rows per thread: ``gathers``,
    ``points``, ``products``, ``outputs``."""
    batch, channels, out_channels, length = source.shape[0], source.shape[1], out.shape[1], out.shape[2]
    point_count, runs = in_offsets.shape[0], run_starts.shape[0] - 1
    group_in, group_out = channels // groups, out_channels // groups
    total = batch * tiles
    first, stop = share(-(-total // block), thread, threads)
    for b in range(first, stop):
        block_start, count = block_of(b, block, total)
        block_stop = block_start + count
        v = scratch(points, thread, (point_count, count, channels))
        copies = gathers[thread]
        at, copied = block_start, 0
        while at < block_stop:
            n, tile, part, row = _segment(at, block_start, block_stop, tiles)
            rows = in_step * TILE * part + reach
            gathered = copies[copied:copied + rows * channels].reshape(rows, channels)
            gather(source[n], in_step * TILE * tile + lowest, rows, in_steps, in_lanes, gathered)
            to_points(gathered, part, in_step, in_offsets - lowest, in_rows, widths, v, row)
            at, copied = at + part, copied + rows * channels
        m = scratch(products, thread, (point_count, count, out_channels))
        for run in range(runs):
            inputs = v[run_starts[run]:run_starts[run + 1]].reshape(-1, channels)
            sums = m[run_starts[run]:run_starts[run + 1]].reshape(-1, out_channels)
            for g in range(groups):
                _group_product(inputs[:, g * group_in:(g + 1) * group_in], u, run, groups, g, forward,
                               sums[:, g * group_out:(g + 1) * group_out], 0.0)
        at, copied = block_start, 0
        while at < block_stop:
            n, tile, part, row = _segment(at, block_start, block_stop, tiles)
            rows, positions = in_step * TILE * part + reach, TILE * part
            gathered = copies[copied:copied + rows * channels].reshape(rows, channels)
            written = scratch(outputs, thread, (out_step * positions, out_channels))
            from_points(m, row, part, out_step, out_offsets, phase_starts, phase_members, zero_phases, out_rows,
                        written)
            for d in range(direct_offsets.shape[0]):
                first_row, to = direct_offsets[d] - lowest, out_offsets[direct_phases[d]]
                inputs = gathered[first_row:first_row + in_step * positions:in_step]
                sums = written[to:to + out_step * positions:out_step]
                for g in range(groups):
                    _group_product(inputs[:, g * group_in:(g + 1) * group_in], u, runs + d, groups, g, forward,
                                   sums[:, g * group_out:(g + 1) * group_out], direct_betas[d])
            start = out_step * TILE * tile
            transposed_rows(out[n].reshape(-1), out_steps, start, length, written.reshape(-1), out_lanes, ZERO, ONE,
                            ZERO, min(written.shape[0], length - start), out_channels)
            at, copied = at + part, copied + rows * channels


@njit(cache=True)
def _add_product(a, b, out):
    """``out += a @ b``, not inlined (one compiled product for the weight gradient's two uses)."""
    gemm(a, b, out, 1.0)


@njit(cache=True)
def _weight_blocks(thread, threads, x, grad_y, block, tiles, lowest, reach, in_step, in_offsets, in_rows, widths,
                   run_starts, direct_offsets, grad_step, grad_offsets, direct_grad_offsets, grad_rows, grad_widths,
                   in_steps, in_lanes, grad_steps, grad_lanes, gathers, grad_gathers, points, grads, partials):
    """``partials[thread, f, g] += sum over the thread's tiles and filter f's run of points of
    Y[pt].T @ V[pt]`` (group ``g``'s channels), and for one-tap phases ``grad_y``'s rows times
    their inputs: blocks as in :func:`_tile_blocks`, V from ``x`` by the forward's points and Y
    from ``grad_y`` through A (``grad_rows``: ``grad_y`` every ``grad_step``-th position from
    ``grad_offsets[pt]``, the output phase of the point). Scratch rows per thread:
    ``gathers``, ``grad_gathers``, ``points``, ``grads``."""
    batch, channels, out_channels = x.shape[0], x.shape[1], grad_y.shape[1]
    point_count, runs = in_offsets.shape[0], run_starts.shape[0] - 1
    groups, group_out, group_in = partials.shape[2:]
    total = batch * tiles
    first, stop = share(-(-total // block), thread, threads)
    for b in range(first, stop):
        block_start, count = block_of(b, block, total)
        block_stop = block_start + count
        v = scratch(points, thread, (point_count, count, channels))
        y = scratch(grads, thread, (point_count, count, out_channels))
        at = block_start
        while at < block_stop:
            n, tile, part, row = _segment(at, block_start, block_stop, tiles)
            rows, positions = in_step * TILE * part + reach, TILE * part
            gathered = scratch(gathers, thread, (rows, channels))
            gather(x[n], in_step * TILE * tile + lowest, rows, in_steps, in_lanes, gathered)
            to_points(gathered, part, in_step, in_offsets - lowest, in_rows, widths, v, row)
            grads_gathered = scratch(grad_gathers, thread, (grad_step * positions, out_channels))
            gather(grad_y[n], grad_step * TILE * tile, grad_step * positions, grad_steps, grad_lanes, grads_gathered)
            to_points(grads_gathered, part, grad_step, grad_offsets, grad_rows, grad_widths, y, row)
            for d in range(direct_offsets.shape[0]):
                first_row, to = direct_offsets[d] - lowest, direct_grad_offsets[d]
                inputs = gathered[first_row:first_row + in_step * positions:in_step]
                grads_of_phase = grads_gathered[to:to + grad_step * positions:grad_step]
                for g in range(groups):
                    _add_product(grads_of_phase[:, g * group_out:(g + 1) * group_out].T,
                                 inputs[:, g * group_in:(g + 1) * group_in], partials[thread, runs + d, g])
            at += part
        for run in range(runs):
            inputs = v[run_starts[run]:run_starts[run + 1]].reshape(-1, channels)
            grads_of_run = y[run_starts[run]:run_starts[run + 1]].reshape(-1, out_channels)
            for g in range(groups):
                _add_product(grads_of_run[:, g * group_out:(g + 1) * group_out].T,
                             inputs[:, g * group_in:(g + 1) * group_in], partials[thread, run, g])


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
    u = workspace.borrow("winograd1d_filters", plan.filters * taps.shape[0], w.dtype).reshape(plan.filters, -1)
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
    block = _block_tiles(plan, channels, out_channels, threads, dtype.itemsize, source.shape[0])
    widths, reach = plan.widths, plan.reach
    gathered_rows = plan.in_step * TILE * block + reach * _segments(plan, block, source.shape[0])
    out_rows = plan.out_step * TILE * block
    gathers = workspace.per_thread("winograd1d_gathered", threads, gathered_rows * channels, dtype)
    points = workspace.per_thread("winograd1d_points", threads, plan.points * block * channels, dtype)
    products = workspace.per_thread("winograd1d_products", threads, plan.points * block * out_channels, dtype)
    outputs = workspace.per_thread("winograd1d_outputs", threads, out_rows * out_channels, dtype)
    with single_threaded_blas():
        u = _transformed_filters(plan, w, threads)
        on_threads(_tile_blocks, threads, source, u, groups, forward, out, block, plan.tiles, plan.lowest, reach,
                   plan.in_step, plan.in_offsets, plan.in_rows.astype(dtype), widths, plan.run_starts,
                   plan.direct_offsets, plan.direct_phases, plan.direct_betas, plan.out_step, plan.out_offsets,
                   plan.phase_starts, plan.phase_members, plan.zero_phases, plan.out_rows.astype(dtype),
                   _steps(gathered_rows, channels), _steps(LANES, length), _steps(out_rows, out_channels),
                   _steps(LANES, out_length), gathers, points, products, outputs)


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
    block = _block_tiles(plan, channels, out_channels, threads, dtype.itemsize, x.shape[0])
    widths, reach = plan.widths, plan.reach
    gathered_rows, grad_rows = plan.in_step * TILE * block + reach, plan.out_step * TILE * block
    gathers = workspace.per_thread("winograd1d_gathered", threads, gathered_rows * channels, dtype)
    grad_gathers = workspace.per_thread("winograd1d_outputs", threads, grad_rows * out_channels, dtype)
    points = workspace.per_thread("winograd1d_points", threads, plan.points * block * channels, dtype)
    grads = workspace.per_thread("winograd1d_products", threads, plan.points * block * out_channels, dtype)
    shape = (threads, plan.filters, groups, group_out, group_in)
    partials = workspace.borrow("winograd1d_partials", int(np.prod(shape)), dtype).reshape(shape)
    partials[...] = 0
    with single_threaded_blas():
        point_offsets = np.empty(plan.points, np.int64)
        point_offsets[plan.phase_members] = np.repeat(plan.out_offsets, np.diff(plan.phase_starts))
        on_threads(_weight_blocks, threads, x, grad_y, block, plan.tiles, plan.lowest, reach, plan.in_step,
                   plan.in_offsets, plan.in_rows.astype(dtype), widths, plan.run_starts, plan.direct_offsets,
                   plan.out_step, point_offsets, plan.out_offsets[plan.direct_phases],
                   np.ascontiguousarray(plan.out_rows.T).astype(dtype), np.full(plan.points, TILE, np.int64),
                   _steps(gathered_rows, channels), _steps(LANES, length), _steps(grad_rows, out_channels),
                   _steps(LANES, out_length), gathers, grad_gathers, points, grads, partials)
        sums = partials[0].reshape(plan.filters, -1)
        if threads > 1:
            add_partials(partials.reshape(threads, plan.filters, -1), sums)
        np.matmul(sums.T, plan.taps_to_points.astype(dtype), out=grad_w.reshape(-1, spec.kernel_size[2]))
