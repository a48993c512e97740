"""Scratch buffers reused across calls, one set per thread, and the cap on their size.

A fresh ``np.empty`` of tens of MiB costs a page fault per 4 KiB page on
first touch, which for im2col's column matrix is as slow as filling it. So
the kernels borrow flat buffers from here; each thread keeps its own (calls
from several Python threads never share one), grown on demand and kept
until :func:`release`.

The cap: everything this module holds for one Python thread, the buffers of
the pass running now and those kept from earlier passes and calls, stays under
the workspace limit, 256 MiB unless ``$NUMBACONV_WORKSPACE_MIB`` (read at
import) or :func:`set_workspace_limit` says otherwise. Each algorithm sets
aside what does not shrink and sizes its blocks to the rest with
:func:`block_columns`; its ``supports`` declines (:func:`over_limit`) a
problem that would not fit even with one-column blocks. The engine calls
:func:`begin_pass` before each pass; a borrow that would take the thread's
buffers over the limit first frees the buffers the current pass has not
borrowed (largest first), so the passes of one call (``conv2d_backward``
runs two) never hold more than the limit together. Buffers stay held after
a call, for the next one; :func:`release` frees the calling thread's.

The peak: the largest total of scratch held at once since :func:`reset_peak`,
each buffer counted by the largest slice handed out of it since then
(:func:`peak_bytes`, what ``numbaconv bench`` reports per row; the split by
buffer at that moment is :func:`peak_by_buffer`). The record is
process-wide: calls running at the same time from several Python threads add
up in it.
"""
import contextlib
import os
import threading

import numpy as np

_local = threading.local()
_peak_lock = threading.Lock()
_live = {}          # (thread id, name, dtype) -> largest slice borrowed since reset_peak(), while held
_peak = {"bytes": 0, "split": {}}


def _thread_state():
    state = _local.__dict__
    if "buffers" not in state:
        state["buffers"], state["in_use"] = {}, set()
    return state["buffers"], state["in_use"]


def begin_pass() -> None:
    """Mark this thread's buffers idle: a borrow that needs room may free them."""
    _thread_state()[1].clear()


def borrow(name: str, size: int, dtype) -> np.ndarray:
    """A flat, uninitialised buffer of ``size`` elements of ``dtype``, reused per (thread, name,
    dtype); idle buffers are freed first where keeping them would pass the limit."""
    buffers, in_use = _thread_state()
    key = (name, np.dtype(dtype))
    in_use.add(key)
    nbytes = size * key[1].itemsize
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        _drop(buffers, [key])
        _make_room(buffers, in_use, nbytes)
        buffer = buffers[key] = np.empty(size, dtype)
    elif sum(b.nbytes for b in buffers.values()) > WORKSPACE_LIMIT_BYTES:
        _make_room(buffers, in_use, 0)
        if buffer.nbytes > nbytes and sum(b.nbytes for b in buffers.values()) > WORKSPACE_LIMIT_BYTES:
            buffer = buffers[key] = np.empty(size, dtype)   # an oversize buffer from a larger limit
    _record(key, nbytes)
    return buffer[:size]


def _make_room(buffers, in_use, nbytes) -> None:
    """Free idle buffers, largest first, until ``nbytes`` more fit under the limit."""
    idle = sorted((key for key in buffers if key not in in_use), key=lambda k: -buffers[k].nbytes)
    held = sum(b.nbytes for b in buffers.values())
    dropped = []
    for key in idle:
        if held + nbytes <= WORKSPACE_LIMIT_BYTES:
            break
        held -= buffers[key].nbytes
        dropped.append(key)
    _drop(buffers, dropped)


def _drop(buffers, keys) -> None:
    thread = threading.get_ident()
    with _peak_lock:
        for key in keys:
            if buffers.pop(key, None) is not None:
                _live.pop((thread, *key), None)


def per_thread(name: str, threads: int, size: int, dtype, align: int = 0) -> np.ndarray:
    """Scratch of ``size`` elements for each of ``threads`` threads, as the rows of one borrowed
    buffer (the parallel stages give each thread its row). With ``align`` (bytes, a multiple
    of the itemsize), every row starts at an address that is a multiple of it: vector loads of
    ``align`` bytes then never straddle two cache lines."""
    if not align:
        return borrow(name, threads * size, dtype).reshape(threads, size)
    step = align // np.dtype(dtype).itemsize
    row = -(-size // step) * step
    buffer = borrow(name, threads * row + step, dtype)
    skip = (-buffer.ctypes.data % align) // buffer.itemsize
    return buffer[skip:skip + threads * row].reshape(threads, row)[:, :size]


def release() -> None:
    """Free the calling thread's buffers."""
    buffers, _ = _thread_state()
    _drop(buffers, list(buffers))


def _record(key, nbytes: int) -> None:
    live_key = (threading.get_ident(), *key)
    with _peak_lock:
        if nbytes > _live.get(live_key, 0):
            _live[live_key] = nbytes
            total = sum(_live.values())
            if total > _peak["bytes"]:
                split = {}
                for (_, name, _), held in _live.items():
                    split[name] = split.get(name, 0) + held
                _peak.update(bytes=total, split=split)


def reset_peak() -> None:
    """Start a new peak record (before the call to be measured)."""
    with _peak_lock:
        _live.clear()
        _peak.update(bytes=0, split={})


def peak_bytes() -> int:
    """The most scratch held at once since :func:`reset_peak`, all threads and buffers together
    (each buffer counted by the largest slice handed out of it since then)."""
    with _peak_lock:
        return _peak["bytes"]


def peak_by_buffer() -> dict:
    """:func:`peak_bytes` split by buffer name at the moment of the peak (summed over threads and dtypes)."""
    with _peak_lock:
        return dict(_peak["split"])


def _limit_from_environment(default: int) -> int:
    text = os.environ.get("NUMBACONV_WORKSPACE_MIB")
    if not text:
        return default
    try:
        mib = float(text)
    except ValueError:
        raise ValueError(f"NUMBACONV_WORKSPACE_MIB must be a number of MiB, got {text!r}") from None
    if not mib > 0:
        raise ValueError(f"NUMBACONV_WORKSPACE_MIB must be positive, got {text!r}")
    return int(mib * 2**20)


# Limits shared by the GEMM-based algorithms (docs/decisions.md, W2-W5, says how to re-measure them).
DEFAULT_WORKSPACE_LIMIT_BYTES = 256 * 2**20
WORKSPACE_LIMIT_BYTES = _limit_from_environment(DEFAULT_WORKSPACE_LIMIT_BYTES)   # all of a call's scratch
BLOCK_BYTES = 2 * 2**20               # a column block that fits a core's L2 cache
MIN_BLOCK_COLUMNS = 256               # narrower blocks make the BLAS products inefficient


def workspace_limit() -> int:
    """The cap, in bytes, on all the scratch of one call, all threads together (less what an
    enclosing pass holds on this thread, :func:`held_by_caller`)."""
    return WORKSPACE_LIMIT_BYTES - getattr(_local, "reserved", 0)


@contextlib.contextmanager
def held_by_caller(nbytes: int):
    """Within: ``nbytes`` of this thread's scratch are held by an algorithm that runs others on
    parts of its problem (numbaconv.cpu.depth_taps), so the limit those see (their ``supports``,
    the automatic choice, block sizes) is that much lower."""
    previous = getattr(_local, "reserved", 0)
    _local.reserved = previous + nbytes
    try:
        yield
    finally:
        _local.reserved = previous


def set_workspace_limit(nbytes) -> int:
    """Set the cap on one call's scratch, all threads together (bytes, > 0; None restores the
    default of 256 MiB); returns the previous cap. Takes effect on the next call."""
    global WORKSPACE_LIMIT_BYTES
    if nbytes is None:
        nbytes = DEFAULT_WORKSPACE_LIMIT_BYTES
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 1:
        raise ValueError(f"the workspace limit must be a positive number of bytes, got {nbytes!r}")
    previous, WORKSPACE_LIMIT_BYTES = WORKSPACE_LIMIT_BYTES, int(nbytes)
    return previous


def over_limit(nbytes: int):
    """None if ``nbytes`` of scratch fit under the limit, else the reason (for ``supports``)."""
    limit = workspace_limit()
    if nbytes <= limit:
        return None
    return (f"it needs at least {nbytes / 2**20:.1f} MiB of scratch, over the workspace limit of "
            f"{limit / 2**20:.1f} MiB (numbaconv.set_workspace_limit)")


def block_columns(bytes_per_column: int, threads: int, total: int, reserved: int = 0, fewest: int | None = None) -> int:
    """How many columns of a column matrix one block holds: about BLOCK_BYTES, at least ``fewest``
    (default MIN_BLOCK_COLUMNS), at most what keeps all threads' blocks under
    WORKSPACE_LIMIT_BYTES less the ``reserved`` bytes of other scratch (but one column always),
    and no more than there are."""
    fewest = MIN_BLOCK_COLUMNS if fewest is None else fewest
    widest = max(1, (workspace_limit() - reserved) // (threads * bytes_per_column))
    return max(1, min(max(BLOCK_BYTES // bytes_per_column, fewest), widest, total))


def balanced_width(width: int, total: int, threads: int) -> int:
    """Blocks at most ``width`` wide, made equal and as many as a multiple of ``threads`` (so that
    no thread waits on another's extra block: 392 columns in blocks of 256 would keep one of two
    threads busy for twice as long; docs/decisions.md, W4)."""
    blocks = -(-total // width)
    blocks = threads * -(-blocks // threads)
    return max(1, -(-total // blocks))
