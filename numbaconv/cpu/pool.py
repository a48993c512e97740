"""The thread pool the GEMM-based CPU algorithms share their blocks out to.

Each worker runs ``nogil`` Numba kernels and single-threaded BLAS calls, so
one pool of threads owns the cores: Numba's ``prange`` pool and BLAS's own
pool never take turns on them (on 2 cores their idle workers spin on the
cores the other needs, costing up to 2x).

The price is the hand-off: waking a sleeping worker and being woken by it
took 0.1-0.2 ms a call on the 2-core VM (ThreadPoolExecutor.map of two no-op
shares: 106-202 us; an Event ping-pong between two threads: 189-234 us),
against 3 us for a Numba ``prange`` whose workers still spin. So the planar
and direct algorithms, whose small problems take 0.1-1 ms, keep ``prange``.
Letting the caller run the first share itself (one hand-off fewer) changed
nothing measurable on the bench layers (interleaved A/B, best of 20).
"""
import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from threadpoolctl import ThreadpoolController


@functools.cache
def _workers():
    """The pool, one worker per Numba thread."""
    return ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="numbaconv")


class _SingleThreadedBlas:
    """Holds BLAS to one thread while any call runs, restoring it when the last one ends.

    threadpoolctl's limits are process-wide; two overlapping calls from the
    caller's own threads must not restore each other's settings.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._limit = None
        self._controller = None   # scanning the loaded libraries costs 0.3 ms: done once

    @contextlib.contextmanager
    def held(self):
        with self._lock:
            if self._active == 0:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                self._limit = self._controller.limit(limits=1, user_api="blas")
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._limit.restore_original_limits()


_single_threaded_blas = _SingleThreadedBlas()


def single_threaded_blas():
    """Context manager: BLAS held to one thread inside (for kernels that call it from threads of
    their own, such as ``prange`` bodies calling ``blas.gemm``)."""
    return _single_threaded_blas.held()


def thread_count() -> int:
    """Threads to share work among: Numba's current setting (``numba.set_num_threads``)."""
    return numba.get_num_threads()


def run_in_threads(work, shares):
    """``[work(share) for share in shares]`` on the pool, with BLAS held to one thread per call.

    Empty shares (sequences of no items) are skipped, and a lone share runs on the caller's
    thread: handing one small job to a worker and waiting for it cost more than the job on
    small problems."""
    shares = [share for share in shares if not (hasattr(share, "__len__") and len(share) == 0)]
    with _single_threaded_blas.held():
        if len(shares) == 1:
            return [work(shares[0])]
        return list(_workers().map(work, shares))


def split(items, parts):
    """``items`` cut into ``parts`` consecutive runs of near-equal length (a thread's share each)."""
    return [items[len(items) * t // parts:len(items) * (t + 1) // parts] for t in range(parts)]


def deal(items, parts):
    """``min(parts, len(items))`` shares that take turns drawing the next of ``items``: a thread
    that runs slower (its core shared with another process, or with PyTorch's OpenMP workers
    spinning after an operation) draws fewer. Winograd's forward of the training step's conv2
    (32 -> 64, 26x26, N=64) right after a ``torch.relu``: 14.1-15.5 and 11.6-12.7 ms dealt
    against 15.6-18.0 and 13.7-15.4 ms split (best-median, two runs each; 8-11 ms alone
    either way). :func:`sum_over_threads` keeps :func:`split`: its per-thread partial sums
    would group the items differently, and so round differently, from run to run."""
    remaining, drawing = iter(items), threading.Lock()

    def share():
        while True:
            with drawing:
                item = next(remaining, None)
            if item is None:
                return
            yield item

    return [share() for _ in range(min(parts, len(items)))]


def sum_over_threads(partial_sum, items, out):
    """``out[...] = sum of partial_sum(share)`` over the threads' shares of ``items``. Each
    partial (its thread's workspace, which the thread's next share reuses) is added into
    ``out`` as its share finishes, one at a time (NumPy lets go of the GIL while adding)."""
    out[...] = 0
    adding = threading.Lock()

    def add(share):
        partial = partial_sum(share)
        with adding:
            np.add(out, partial, out=out)

    run_in_threads(add, split(items, thread_count()))


def grouped_matmul(a, b, out):
    """``out[g] = a[g] @ b[g]`` for each group, one 2-d BLAS call each.

    (NumPy's stacked 3-d matmul scaled to only 1.4x on 2 threads here, the
    2-d calls to 1.8x.)
    """
    for group in range(a.shape[0]):
        np.matmul(a[group], b[group], out=out[group])
    return out
