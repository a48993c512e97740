"""The transforms of Winograd F(4x4, 3x3): the matrices, and their application to rows of vectors.

A 4x4 output tile of a 3x3 correlation needs a 6x6 input patch ``d``; with
the 6x6 ``B^T`` (:data:`INPUT_TRANSFORM`), the 6x3 ``G``
(:data:`FILTER_TRANSFORM`) and the 4x6 ``A^T`` (:data:`OUTPUT_TRANSFORM`),

    y = A^T [ (G g G^T) * (B^T d B) ] A      (* elementwise, over the 36 points)

is the tile's correlation with the filter ``g``. Each 2-d transform is two
1-d passes, rows then columns (or columns then rows); the functions here are
those 1-d passes over *rows of vectors*: ``src[a]`` and ``dst[i]`` are views
of ``count`` values each (channels or filters, the innermost, unit-stride
loop, so that they vectorise), and ``dst[i] = sum_a M[i, a] * src[a]`` for
``M`` one of ``B^T`` (:func:`patch_transform`), ``A^T``
(:func:`tile_transform`), ``A`` (:func:`gradient_transform`, the weight
gradient's transform of ``grad_y``) and ``G`` (:func:`filter_rows`).
tests/test_winograd_transforms.py checks them against the matrices.

They scale by 2, 4 and 8 through additions (exact, like the
multiplications): Numba types ``4 * value`` as float64 for a float32 value,
which would make the float32 transforms convert every operand. ``B^T`` and
``A^T`` have entries up to 5 and 8, and ``G`` divides by up to 24, so
float32 results carry about 10x the rounding of a direct sum (the accuracy
in cpu/winograd.py).

FLOPs: about 12 adds per transformed element (6 rows to 6 or 4); memory: the
rows are read once and written once, in cache.
"""
import numpy as np
from numba import njit

TILE = 4                       # output tile side (m)
PATCH = TILE + 2               # input patch side (alpha = m + r - 1)
POINTS = PATCH * PATCH         # elementwise products per tile and channel pair

# B^T (6x6): V = B^T d B for a 6x6 input patch d.
INPUT_TRANSFORM = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=float)
# A^T (4x6): y = A^T M A for the 6x6 products M of a tile; the weight gradient takes grad_y's
# 4x4 tiles to 6x6 through A (its transpose).
OUTPUT_TRANSFORM = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                             [0, 1, -1, 8, -8, 1]], dtype=float)
# G (6x3): U = G g G^T; the weight gradient goes back through G^T.
FILTER_TRANSFORM = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                             [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
# The same as one (36, 9) matrix on a filter's taps, row-major: U.flat = TAPS_TO_POINTS @ g.flat;
# its transpose takes the weight gradient's 36 sums back to the 9 taps.
TAPS_TO_POINTS = np.kron(FILTER_TRANSFORM, FILTER_TRANSFORM)


@njit(inline="always", cache=True)
def _twice(value):
    return value + value


@njit(inline="always", cache=True)
def row(array, first, count):
    """``count`` elements of flat ``array`` from ``first``, as a view."""
    return array[first:first + count]


@njit(inline="always", cache=True)
def four_rows(array, first, step, count):
    """Four slices of ``count`` elements of flat ``array``, from ``first``, ``step`` apart.

    The transforms index such views from 0: with a raw flat index ``first + j`` Numba's
    negative-index wraparound check hides the access pattern from LLVM, which then does not
    vectorise."""
    return (row(array, first, count), row(array, first + step, count),
            row(array, first + 2 * step, count), row(array, first + 3 * step, count))


@njit(inline="always", cache=True)
def six_rows(array, first, step, count):
    """Like four_rows, six slices."""
    return four_rows(array, first, step, count) + (row(array, first + 4 * step, count),
                                                    row(array, first + 5 * step, count))


@njit(inline="always", cache=True)
def patch_transform(src, dst):
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
def tile_transform(src, dst):
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
def gradient_transform(src, dst):
    """``dst[i] = sum_a A[i, a] * src[a]``: four rows to six (the adjoint of tile_transform)."""
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


@njit(inline="always", cache=True)
def filter_rows(src, dst):
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
