"""Scratch buffers reused across calls, one set per thread.

A fresh ``np.empty`` of tens of MiB costs a page fault per 4 KiB page on
first touch, which for im2col's column matrix is as slow as filling it. So
the kernels borrow flat buffers from here; each thread keeps its own (calls
from several Python threads never share one), grown on demand and kept
until :func:`release`.
"""
import threading

import numpy as np

_local = threading.local()


def borrow(name: str, size: int, dtype) -> np.ndarray:
    """A flat, uninitialised buffer of ``size`` elements of ``dtype``, reused per (thread, name, dtype)."""
    buffers = _local.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype)
    return buffer[:size]


def release() -> None:
    """Free this thread's buffers."""
    _local.__dict__.pop("buffers", None)


# Limits shared by the GEMM-based algorithms.
WORKSPACE_LIMIT_BYTES = 256 * 2**20   # all threads' scratch together
BLOCK_BYTES = 2 * 2**20               # a column block that fits a core's L2 cache
MIN_BLOCK_COLUMNS = 256               # narrower blocks make the BLAS products inefficient


def block_columns(bytes_per_column: int, threads: int, total: int) -> int:
    """How many columns of a column matrix one block holds: about BLOCK_BYTES, at least
    MIN_BLOCK_COLUMNS, at most what keeps all threads' blocks under WORKSPACE_LIMIT_BYTES
    (but one column always), and no more than there are."""
    widest = max(1, WORKSPACE_LIMIT_BYTES // (threads * bytes_per_column))
    return max(1, min(max(BLOCK_BYTES // bytes_per_column, MIN_BLOCK_COLUMNS), widest, total))
