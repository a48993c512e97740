"""Matrix products callable from Numba kernels, the bodies of parallel stages included.

``gemm(a, b, c, beta)`` computes ``c = a @ b + beta * c`` on 2-d views in one
BLAS call. Unlike ``np.dot`` inside Numba it takes strided views as they are
(no copies, and it writes into a strided ``c``) and it accumulates (``beta =
1``).

Which BLAS: NumPy's where it is the OpenBLAS of NumPy's wheels (ILP64,
``scipy_sgemm_64_``, found among the loaded libraries by threadpoolctl), else
SciPy's; and SciPy's for products whose ``b`` is stored by columns (the
weight gradients' ``columns.T``). The kernels call SciPy's through Numba's
``numba_xxgemm`` helper (the one Numba's own ``np.dot`` uses) and NumPy's
through the symbols ``numbaconv_sgemm`` and ``numbaconv_dgemm`` (Fortran
``xgemm`` arguments, all by reference, 64-bit integers), registered with LLVM
at import as NumPy's functions or as small shims over SciPy's, so that
cached kernels link to whichever this process has. Each is the faster of
the two on its kind of product (``numbaconv bench --layer
conv1x1_256to64,stem7x7s2,audio1d``; docs/decisions.md, T3).

Why BLAS from Numba: so that the GEMM-based algorithms share their blocks
out among Numba's threads like every other kernel (``threads`` says why;
docs/decisions.md, T1 and T2).

Callers hold BLAS to one thread while they run (``threads.single_threaded_blas``):
a multi-threaded OpenBLAS called from inside an OpenMP region starts its own
threads beside OpenMP's (and warns that it may hang).

FLOPs ``2 m n k``; memory: what BLAS reads and writes of the three operands.
"""
import ctypes
import importlib

import numpy as np
from llvmlite import binding
from numba import _helperlib, cfunc, njit, types
from threadpoolctl import threadpool_info

# SciPy's BLAS, which numba_xxgemm calls, loaded now: threadpoolctl then finds it to hold to one thread
importlib.import_module("scipy.linalg.cython_blas")

_NO_TRANSPOSE, _TRANSPOSE = ord("n"), ord("t")
_SINGLE, _DOUBLE = ord("s"), ord("d")

# int numba_xxgemm(kind, transa, transb, m, n, k, *alpha, *a, lda, *b, ldb, *beta, *c, ldc): Fortran's
# gemm with the sizes by value, column-major; pointers pass as integers (the same registers on every
# platform Numba runs on)
_xxgemm = types.ExternalFunction("numba_xxgemm", types.int32(
    types.int8, types.int8, types.int8, types.intp, types.intp, types.intp,
    types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp, types.intp))

# void xgemm(*transa, *transb, *m, *n, *k, *alpha, *a, *lda, *b, *ldb, *beta, *c, *ldc), 64-bit integers
_FORTRAN_GEMM = types.void(*[types.intp] * 13)
_sgemm = types.ExternalFunction("numbaconv_sgemm", _FORTRAN_GEMM)
_dgemm = types.ExternalFunction("numbaconv_dgemm", _FORTRAN_GEMM)


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


@njit(inline="always", cache=True)
def gemm(a, b, c, beta):
    """``c = a @ b + beta * c`` for 2-d views ``a`` (m, k), ``b`` (k, n), ``c`` (m, n) of one
    float dtype, each with rows or columns of unit stride (``c``: rows). Inlined into its caller,
    it hands :func:`_gemm` only numbers, addresses and a small buffer, so the product is compiled
    once for every layout, dtype and read-only flag of the views (a function of the views
    themselves would be compiled for each combination, a second or so each)."""
    transpose_a, lead_a = _as_column_major(a)
    transpose_b, lead_b = _as_column_major(b)
    transpose_c, lead_c = _as_column_major(c)
    _gemm(a.shape[0], a.shape[1], b.shape[0], b.shape[1], c.shape[0], c.shape[1], transpose_a, lead_a,
          transpose_b, lead_b, transpose_c, lead_c, a.ctypes.data, b.ctypes.data, c.ctypes.data, c.itemsize,
          beta, np.empty(_ARGUMENT_SLOTS, np.int64))


_ARGUMENT_SLOTS = 9   # BLAS's arguments by reference: the two flags, six sizes, alpha and beta


@njit(nogil=True, cache=True)
def _gemm(m, k, b_rows, n, c_rows, c_columns, transpose_a, lead_a, transpose_b, lead_b, transpose_c, lead_c,
          a, b, c, itemsize, beta, arguments):
    """:func:`gemm` on the views' sizes, storage (:func:`_as_column_major`) and addresses.
    ``arguments`` (int64, ``_ARGUMENT_SLOTS``) holds what BLAS takes by reference; the caller
    owns it, so it outlives the call (an array made here could be freed after its last use in
    this function, before BLAS reads it)."""
    if b_rows != k or c_rows != m or c_columns != n:
        raise ValueError("gemm: operand shapes do not match")
    if lead_a < 0 or lead_b < 0 or transpose_c != _NO_TRANSPOSE:
        raise ValueError("gemm: every operand needs unit-stride rows or columns (c: rows)")
    if m == 0 or n == 0:
        return
    address = arguments.ctypes.data   # slot 0: flags; 1-6: sizes; 7-8: alpha and beta
    if itemsize == 4:
        singles = arguments[7:].view(np.float32)
        singles[0], singles[1] = 1, beta
    else:
        doubles = arguments[7:].view(np.float64)
        doubles[0], doubles[1] = 1, beta
    alpha, beta_at = address + 56, address + 56 + itemsize
    # column-major, c^T (n, m) = b^T (n, k) @ a^T (k, m): b's storage is the first operand
    if transpose_b == _TRANSPOSE:   # b stored by columns (the weight gradients' columns.T): SciPy's BLAS
        _xxgemm(_SINGLE if itemsize == 4 else _DOUBLE, transpose_b, transpose_a, n, m, k, alpha,
                b, lead_b, a, lead_a, beta_at, c, lead_c)
        return
    flags = arguments[:1].view(np.uint8)
    flags[0], flags[1] = transpose_b, transpose_a
    arguments[1], arguments[2], arguments[3], arguments[4], arguments[5], arguments[6] = (
        n, m, k, lead_b, lead_a, lead_c)
    size = address + 8   # the address of slot 1
    blas_arguments = (address, address + 1, size, size + 8, size + 16, alpha, b, size + 24, a, size + 32, beta_at, c,
                      size + 40)
    if itemsize == 4:
        _sgemm(*blas_arguments)
    else:
        _dgemm(*blas_arguments)


def _numpy_openblas():
    """The ILP64 OpenBLAS of NumPy's wheels (the loaded BLAS that exports ``scipy_sgemm_64_``) as a
    ctypes library, or None where NumPy was built against another BLAS."""
    for library in threadpool_info():
        if library["user_api"] != "blas":
            continue
        try:
            opened = ctypes.CDLL(library["filepath"])
        except OSError:   # a library threadpoolctl saw but ctypes cannot open by its path
            continue
        if hasattr(opened, "scipy_sgemm_64_"):
            return opened
    return None


def _xxgemm_shim(kind):
    """A C function with Fortran xgemm's arguments (64-bit sizes) that calls SciPy's ``kind`` gemm
    through numba_xxgemm."""
    flag, size, pointer = types.CPointer(types.uint8), types.CPointer(types.int64), types.intp

    @cfunc(types.void(flag, flag, size, size, size, pointer, pointer, size, pointer, size, pointer, pointer, size))
    def shim(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        _xxgemm(kind, transa[0], transb[0], m[0], n[0], k[0], alpha, a, lda[0], b, ldb[0], beta, c, ldc[0])

    return shim


def _product_through(routine, fortran: bool, dtype) -> list:
    """``a @ b`` of a 2x3 and a 3x2 matrix through the gemm at address ``routine``: Fortran's
    arguments (``numbaconv_sgemm``, ``numbaconv_dgemm``) or numba_xxgemm's, called from Python with
    ctypes, as the kernels call it (c^T = b^T a^T column-major)."""
    a, b = np.arange(1, 7, dtype=dtype).reshape(2, 3), np.ones((3, 2), dtype)
    c, scalars = np.zeros((2, 2), dtype), np.array([1, 0], dtype)
    pointer = ctypes.c_void_p
    if fortran:
        flag, sizes = ctypes.c_char(b"n"), np.array([2, 2, 3, 2, 3, 2], np.int64)   # m n k ldb lda ldc
        size = [pointer(sizes.ctypes.data + 8 * i) for i in range(6)]
        ctypes.CFUNCTYPE(None, *[pointer] * 13)(routine)(
            ctypes.addressof(flag), ctypes.addressof(flag), size[0], size[1], size[2], scalars.ctypes.data,
            b.ctypes.data, size[3], a.ctypes.data, size[4], scalars[1:].ctypes.data, c.ctypes.data, size[5])
    else:
        kind = _SINGLE if dtype == np.float32 else _DOUBLE
        signature = ctypes.CFUNCTYPE(ctypes.c_int, *[ctypes.c_char] * 3, *[ctypes.c_ssize_t] * 3, pointer, pointer,
                                     ctypes.c_ssize_t, pointer, ctypes.c_ssize_t, pointer, pointer, ctypes.c_ssize_t)
        signature(routine)(bytes([kind]), b"n", b"n", 2, 2, 3, scalars.ctypes.data, b.ctypes.data, 2, a.ctypes.data,
                           3, scalars[1:].ctypes.data, c.ctypes.data, 2)
    return c.tolist()


def _register():
    """Point numbaconv_sgemm and numbaconv_dgemm at NumPy's OpenBLAS, or at shims over SciPy's; then
    multiply through each routine the kernels call, per dtype, on this (the importing,
    GIL-holding) thread: numba_xxgemm looks SciPy's functions up on its first call of each,
    taking the GIL, which a ``prange`` worker cannot get while the thread that started the
    parallel region holds it. (Through ctypes: nothing is compiled at import.)"""
    numpy_blas = _numpy_openblas()
    routines = {}
    for routine, kind in (("sgemm", _SINGLE), ("dgemm", _DOUBLE)):
        if numpy_blas is None:
            _SHIMS.append(_xxgemm_shim(kind))
            address = _SHIMS[-1].address
        else:
            address = ctypes.cast(getattr(numpy_blas, f"scipy_{routine}_64_"), ctypes.c_void_p).value
        binding.add_symbol(f"numbaconv_{routine}", address)
        routines[np.float32 if kind == _SINGLE else np.float64] = address
    xxgemm = _helperlib.c_helpers["xxgemm"]
    for dtype, address in routines.items():
        for routine, fortran in ((address, True), (xxgemm, False)):   # NumPy's BLAS (or the shim), SciPy's
            if _product_through(routine, fortran, dtype) != [[6, 6], [15, 15]]:
                raise ImportError(f"numbaconv could not call BLAS ({np.dtype(dtype).name} gemm)")


_SHIMS = []   # the compiled shims, kept alive while their addresses are registered
_register()
