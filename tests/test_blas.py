"""numbaconv.cpu.blas.gemm: strided and transposed views, accumulation, nothing written outside c;
the shim over SciPy's BLAS that stands in where NumPy's is not OpenBLAS."""
import ctypes
import subprocess
import sys

import numpy as np
import pytest

from numbaconv.cpu import blas
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
        gemm(a, b, inside, 0.0)
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


@pytest.mark.parametrize("dtype, kind", [(np.float32, "s"), (np.float64, "d")])
def test_scipy_shim_computes_fortran_gemm(rng, dtype, kind):
    """The fallback shim, called as a C function with Fortran gemm's arguments: column-major
    c (3, 2) = a^T (3, 4) @ b (4, 2) + 0.5 c, with padded leading dimensions."""
    shim = blas._xxgemm_shim(ord(kind))
    a = np.asfortranarray(rng.standard_normal((5, 3)).astype(dtype))     # lda 5, rows 0:4 used
    b = np.asfortranarray(rng.standard_normal((6, 2)).astype(dtype))     # ldb 6
    c = np.asfortranarray(rng.standard_normal((4, 2)).astype(dtype))     # ldc 4, rows 0:3 written
    expected = a[:4].T.astype(np.float64) @ b[:4] + 0.5 * c[:3]
    untouched = c[3].copy()
    sizes = np.array([3, 2, 4, 5, 6, 4], np.int64)
    scalars = np.array([1.0, 0.5], dtype)
    flags = np.frombuffer(b"tn", np.uint8).copy()
    pointer = [array.ctypes.data for array in (flags, flags[1:], sizes, sizes[1:], sizes[2:], scalars, a,
                                               sizes[3:], b, sizes[4:], scalars[1:], c, sizes[5:])]
    ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 13)(shim.address)(*pointer)
    np.testing.assert_allclose(c[:3], expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert (c[3] == untouched).all()


def test_gemm_through_the_shims_where_numpy_has_no_openblas():
    """In a process where NumPy's OpenBLAS is not found, gemm runs through the shims over SciPy's
    BLAS, both dtypes, both of gemm's routes (b stored by rows, by columns)."""
    script = """
import numpy as np, threadpoolctl
threadpoolctl.threadpool_info = lambda: []
from numbaconv.cpu import blas
assert len(blas._SHIMS) == 2
rng = np.random.default_rng(1)
for dtype in (np.float32, np.float64):
    a, b = rng.standard_normal((7, 9)).astype(dtype), rng.standard_normal((9, 5)).astype(dtype)
    for b_view in (b, np.asfortranarray(b)):
        c = np.full((7, 5), np.nan, dtype)
        blas.gemm(a, b_view, c, 0.0)
        np.testing.assert_allclose(c, a.astype(np.float64) @ b, rtol=1e-5)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
