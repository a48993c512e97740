"""The F(4x4, 3x3) transforms of numbaconv/cpu/winograd_transforms.py, alone: each 1-d pass against
its matrix, and the matrices against a direct 3x3 correlation of a 6x6 patch."""
import numpy as np
import pytest
from numba import njit

from numbaconv.cpu.winograd_transforms import (FILTER_TRANSFORM, INPUT_TRANSFORM, OUTPUT_TRANSFORM, TAPS_TO_POINTS,
                                               filter_rows, gradient_transform, patch_transform, tile_transform)


@njit
def _apply(rows_in, rows_out, which):
    """One transform from the rows of ``rows_in`` (a, count) to those of ``rows_out`` (i, count)."""
    if which == 0:
        patch_transform((rows_in[0], rows_in[1], rows_in[2], rows_in[3], rows_in[4], rows_in[5]),
                        (rows_out[0], rows_out[1], rows_out[2], rows_out[3], rows_out[4], rows_out[5]))
    elif which == 1:
        tile_transform((rows_in[0], rows_in[1], rows_in[2], rows_in[3], rows_in[4], rows_in[5]),
                       (rows_out[0], rows_out[1], rows_out[2], rows_out[3]))
    elif which == 2:
        gradient_transform((rows_in[0], rows_in[1], rows_in[2], rows_in[3]),
                           (rows_out[0], rows_out[1], rows_out[2], rows_out[3], rows_out[4], rows_out[5]))
    else:
        filter_rows((rows_in[0], rows_in[1], rows_in[2]),
                    (rows_out[0], rows_out[1], rows_out[2], rows_out[3], rows_out[4], rows_out[5]))


TRANSFORMS = {"patch B^T": (0, INPUT_TRANSFORM), "tile A^T": (1, OUTPUT_TRANSFORM),
              "gradient A": (2, OUTPUT_TRANSFORM.T), "filter G": (3, FILTER_TRANSFORM)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_each_transform_is_its_matrix(rng, name, dtype):
    """``dst[i] = sum_a M[i, a] src[a]`` across 37 values a row (a vector loop and a remainder)."""
    which, matrix = TRANSFORMS[name]
    rows_in = rng.standard_normal((matrix.shape[1], 37)).astype(dtype)
    rows_out = np.full((matrix.shape[0], 37), np.nan, dtype)
    _apply(rows_in, rows_out, which)
    expected = matrix @ rows_in.astype(np.float64)
    np.testing.assert_allclose(rows_out, expected, rtol=0, atol=64 * np.finfo(dtype).eps * np.abs(rows_in).max())
    if dtype == np.float64 and which != 3:   # integer matrices, integer inputs: exact
        integers = rng.integers(-50, 50, rows_in.shape).astype(dtype)
        _apply(integers, rows_out, which)
        np.testing.assert_array_equal(rows_out, matrix @ integers)


def test_the_matrices_compute_a_tile_of_the_correlation(rng):
    """``A^T [(G g G^T) * (B^T d B)] A`` is the 4x4 "valid" correlation of a 6x6 patch with a 3x3
    filter, and TAPS_TO_POINTS is ``G g G^T`` on the flat taps."""
    patch, kernel = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    u = FILTER_TRANSFORM @ kernel @ FILTER_TRANSFORM.T
    v = INPUT_TRANSFORM @ patch @ INPUT_TRANSFORM.T
    tile = OUTPUT_TRANSFORM @ (u * v) @ OUTPUT_TRANSFORM.T
    direct = np.array([[np.sum(patch[i:i + 3, j:j + 3] * kernel) for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(tile, direct, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(TAPS_TO_POINTS @ kernel.reshape(-1), u.reshape(-1), rtol=1e-15, atol=1e-15)
