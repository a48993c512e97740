"""The threads the CPU algorithms share their work out to, and BLAS held to one thread meanwhile.

Every CPU kernel spreads its work with Numba's ``prange``: one parallel region
per stage, each thread taking a consecutive share (``common.share``). The
GEMM-based algorithms call BLAS from inside those regions (``blas.gemm``), so
BLAS must not start threads of its own: :func:`single_threaded_blas` holds it
to one while a call runs.

Why ``prange`` and not a Python thread pool: Numba's OpenMP workers, which
PyTorch's operations share in a process that loads both, spin for
milliseconds after each parallel region, and a second pool's threads would
take turns with them on the cores; waking a sleeping pool worker also costs
a tenth of a millisecond, a ``prange`` region microseconds. ``python
bench/train_step.py`` times the kernels right after PyTorch's operations
(docs/decisions.md, T1).
"""
import contextlib
import threading

import numba
from threadpoolctl import ThreadpoolController


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
    """Context manager: BLAS held to one thread inside (kernels call it from ``prange`` bodies)."""
    return _single_threaded_blas.held()


def thread_count() -> int:
    """Threads to share work among: Numba's current setting (``numba.set_num_threads``)."""
    return numba.get_num_threads()
