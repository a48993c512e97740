"""Matrix products callable from Numba kernels, ``prange`` bodies included.

``gemm(a, b, c, beta)`` computes ``c = a @ b + beta * c`` on 2-d views in one
BLAS call (``sgemm``/``dgemm`` of SciPy's BLAS, the one Numba's own ``np.dot``
uses, through Numba's ``numba_xxgemm`` helper). Unlike ``np.dot`` inside
Numba it takes strided views as they are (no copies, and it writes into a
strided ``c``) and it accumulates (``beta = 1``).

Why BLAS from Numba: the GEMM-based algorithms then share their blocks out
with ``prange``, on the OpenMP threads Numba shares with PyTorch (one
``libgomp`` serves both in a process that loads both), instead of on a
Python thread pool. PyTorch's OpenMP workers spin for milliseconds after each
of its operations; threads of another pool then take turns with them on the
cores. Measured (2 cores, 1440 products (234 x 32) @ (32 x 64), float32, ms
best / median): Python pool with ``np.matmul`` 19.9 / 25.3 alone and 23.2 /
30.3 right after a ``torch.nn.functional.conv2d``; ``prange`` with BLAS
16.9 / 19.3 and 15.8 / 19.1.

Callers hold BLAS to one thread while they run (``pool.single_threaded_blas``):
a multi-threaded OpenBLAS called from inside an OpenMP region starts its own
threads beside OpenMP's (and warns that it may hang).

FLOPs ``2 m n k``; memory: what BLAS reads and writes of the three operands.
"""
import numpy as np
import importlib
from numba import njit, types

# the BLAS numba_xxgemm calls; loaded now, so that threadpoolctl finds it to hold to one thread
importlib.import_module("scipy.linalg.cython_blas")

_NO_TRANSPOSE, _TRANSPOSE = ord("n"), ord("t")
_SINGLE, _DOUBLE = ord("s"), ord("d")

# int numba_xxgemm(kind, transa, transb, m, n, k, *alpha, *a, lda, *b, ldb, *beta, *c, ldc), column-major
# like Fortran's gemm; pointers pass as integers (the same registers on every platform Numba runs on)
_xxgemm = types.ExternalFunction("numba_xxgemm", types.int32(
    types.int8, types.int8, types.int8, types.intp, types.intp, types.intp,
    types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp))


@njit(inline="always", cache=True)
def _as_column_major(matrix):
    """(transpose flag, leading dimension) of a row-major ``matrix`` view seen column-major, as
    gemm reads it: rows of unit stride read as the columns of its transpose (no flag), columns of
    unit stride as the matrix itself (flag). -1 where neither is unit-stride."""
    rows, columns = matrix.shape
    item = matrix.itemsize
    if columns <= 1 or matrix.strides[1] == item:
        return _NO_TRANSPOSE, max(columns, matrix.strides[0] // item, 1)
    if rows <= 1 or matrix.strides[0] == item:
        return _TRANSPOSE, max(rows, matrix.strides[1] // item, 1)
    return _NO_TRANSPOSE, -1


@njit(nogil=True, cache=True)
def gemm(a, b, c, beta):
    """``c = a @ b + beta * c`` for 2-d views ``a`` (m, k), ``b`` (k, n), ``c`` (m, n) of one
    float dtype, each with rows or columns of unit stride (``c``: rows). Returns BLAS's status,
    0 on success."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("gemm: operand shapes do not match")
    transpose_a, lead_a = _as_column_major(a)
    transpose_b, lead_b = _as_column_major(b)
    transpose_c, lead_c = _as_column_major(c)
    if lead_a < 0 or lead_b < 0 or transpose_c != _NO_TRANSPOSE:
        raise ValueError("gemm: every operand needs unit-stride rows or columns (c: rows)")
    if m == 0 or n == 0:
        return 0
    scalars = np.empty(2, c.dtype)
    scalars[0], scalars[1] = 1, beta
    # column-major, c^T (n, m) = b^T (n, k) @ a^T (k, m): b's storage is the first operand
    return _xxgemm(_SINGLE if c.itemsize == 4 else _DOUBLE, transpose_b, transpose_a, n, m, k, scalars.ctypes.data,
                   b.ctypes.data, lead_b, a.ctypes.data, lead_a, scalars[1:].ctypes.data, c.ctypes.data, lead_c)


def _resolve():
    """Call gemm once per dtype on this (the importing, GIL-holding) thread: numba_xxgemm looks
    SciPy's functions up on its first call of each, taking the GIL, which a ``prange`` worker
    cannot get while the thread that started the parallel region holds it."""
    for dtype in (np.float32, np.float64):
        one = np.ones((1, 1), dtype)
        if gemm(one, one, np.empty((1, 1), dtype), 0.0) != 0:
            raise ImportError("numbaconv could not call SciPy's BLAS (scipy.linalg.cython_blas)")


_resolve()
