"""numbaconv.cpu.blas.gemm: strided and transposed views, accumulation, nothing written outside c."""
import numpy as np
import pytest

from numbaconv.cpu.blas import gemm

POISON = 7.25


def _views(rng, dtype):
    """(a, b) pairs of matching inner size: row-strided slices, transposed (column-major) views,
    single rows and columns, an empty inner dimension."""
    a_base, b_base = rng.standard_normal((30, 40)).astype(dtype), rng.standard_normal((40, 50)).astype(dtype)
    a_views = [a_base, a_base[:, 3:20], np.ascontiguousarray(a_base.T).T, a_base[:1], a_base[:, :1], a_base[:, :0]]
    for a in a_views:
        k = a.shape[1]
        for b in (b_base[:k], np.ascontiguousarray(b_base[:k].T).T, b_base[:k, 5:6], b_base[:k, 2:40]):
            yield a, b


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_matches_numpy_on_views(rng, dtype):
    for a, b in _views(rng, dtype):
        c = np.full((a.shape[0] + 2, b.shape[1] + 3), POISON, dtype)
        inside = c[1:-1, 2:-1]
        expected = a.astype(np.float64) @ b.astype(np.float64)
        tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
        assert gemm(a, b, inside, 0.0) == 0
        np.testing.assert_allclose(inside, expected, **tolerance)
        gemm(a, b, inside, 1.0)   # accumulates
        np.testing.assert_allclose(inside, 2 * expected, **tolerance)
        outside = np.ones(c.shape, bool)
        outside[1:-1, 2:-1] = False
        assert (c[outside] == POISON).all(), (a.shape, a.strides, b.shape, b.strides)


def test_gemm_refuses_what_blas_cannot_read(rng):
    a, b = rng.standard_normal((6, 8))[::2, ::2], rng.standard_normal((4, 5))
    with pytest.raises(ValueError, match="unit-stride"):
        gemm(a, b, np.empty((3, 5)), 0.0)
    with pytest.raises(ValueError, match="unit-stride"):
        gemm(b.T, b, np.empty((5, 5)).T, 0.0)
    with pytest.raises(ValueError, match="shapes"):
        gemm(b, b, np.empty((4, 5)), 0.0)
