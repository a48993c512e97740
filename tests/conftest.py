"""Shared test helpers: random data, poisoned outputs, norm-relative comparison."""
import zlib

import numpy as np
import pytest

# Norm-relative tolerances (DESIGN.md, Testing).
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def random_array(rng, shape, dtype=np.float64):
    """Standard normal data, never zeros."""
    return rng.standard_normal(shape).astype(dtype)


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
