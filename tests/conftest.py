"""Shared test helpers: random data, poisoned outputs, norm-relative comparison.

Without a real GPU the CUDA kernels run in Numba's CUDA simulator: this file
turns it on before anything imports Numba (it only changes numba.cuda; the
CPU kernels run as usual). Set NUMBA_ENABLE_CUDASIM yourself to override.
"""
import ctypes
import os
import zlib

import numpy as np
import pytest


def real_gpu_present() -> bool:
    """A CUDA driver that sees a device, checked without importing Numba."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


REAL_GPU = real_gpu_present()
if not REAL_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

# Norm-relative tolerances by dtype: numbaconv.accuracy's, which numbaconv verify and bench hold
# results to as well (imported here, after the simulator is switched on above).
from numbaconv.accuracy import TOLERANCE as _TOLERANCE  # noqa: E402
TOLERANCE = {np.dtype(name).type: tolerance for name, tolerance in _TOLERANCE.items()}

# What "auto" picks for the weight gradient of overlapping windows with 33-128 filters a group and
# 192 outputs a sample or more, that the rules before rule 2c leave: channels_last on hosts with
# 512-bit vectors, where its weight tiles are wider, else im2col (numbaconv.dispatch, rule 2c).
from numbaconv.cpu.simd import VECTOR_BYTES  # noqa: E402
WIDE_WEIGHT = "channels_last" if VECTOR_BYTES == 64 else "im2col"


def random_array(rng, shape, dtype=np.float64):
    """Standard normal data, never zeros."""
    return rng.standard_normal(shape).astype(dtype)


def random_problem(rng, case, dtype):
    """``(spec, x, w, grad_y)`` for a case of numbaconv/tools/grid.py's form, with random operands."""
    from numbaconv.spec import ConvSpec
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)
    return (spec, random_array(rng, spec.x_shape, dtype), random_array(rng, spec.w_shape, dtype),
            random_array(rng, spec.y_shape, dtype))


def poisoned(shape, dtype):
    """An output buffer full of NaN: any element a kernel forgets to write fails the check."""
    return np.full(shape, np.nan, dtype)


def assert_close(actual, expected, dtype, what=""):
    """||actual - expected|| <= tol * ||expected|| (tolerance by dtype), with NaN failing."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values (unwritten output?)"
    scale = max(np.linalg.norm(expected), np.finfo(np.float64).tiny)
    error = np.linalg.norm(actual - expected) / scale
    assert error <= TOLERANCE[np.dtype(dtype).type], f"{what}: relative error {error:.3e}"


@pytest.fixture
def rng(request):
    """A generator seeded by the test's name: fresh data per test, reproducible per run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
