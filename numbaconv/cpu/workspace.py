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
