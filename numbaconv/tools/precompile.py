"""``numbaconv compile``: every CPU kernel into Numba's on-disk cache, ahead of time.

Numba compiles a kernel on its first call for that call's argument types
and caches the machine code per machine (``numbaconv info`` shows the
folder), so a process on a warm cache only loads it. Which kernels a call
needs depends on the algorithm, the pass, the dtype and the problem's shape
(1x1, strided, grouped, depthwise, 1-d and 3-d problems take different
paths); the problems of numbaconv.tools.grid reach every path. Each task
here is one (algorithm, pass, dtype) run over that grid; the tasks are
spread over worker processes (Numba compiles on one core, so two processes
on two cores take about half the time), and the parent shows progress.
The tasks of algorithms that run other algorithms' kernels (``depth_taps``:
2-d passes by the automatic choice) wait for the rest, so that they find
those kernels cached instead of compiling them a second time beside them.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
import warnings

import numpy as np

from .. import dispatch, functional
from ..compile_cache import CompilingNotice
from ..passes import PASSES, pass_calls
from ..spec import ConvSpec
from .grid import CASES

DTYPES = ("float32", "float64")


def _delegates(algo: str) -> bool:
    """Whether ``algo`` runs other algorithms' kernels (dispatch hands it their choice)."""
    return getattr(dispatch.registry("cpu")[algo], "choose_plane_algorithm", None) is not None


def waves(algos, passes, dtypes) -> list[list[tuple[str, str, str]]]:
    """The (algorithm, pass, dtype) tasks, dtype by dtype: those of the algorithms that run their own
    kernels, then those of the ones that run other algorithms' (an empty wave left out)."""
    work = [(algo, pass_name, dtype) for dtype in dtypes for algo in algos for pass_name in passes]
    return [wave for wave in ([t for t in work if not _delegates(t[0])], [t for t in work if _delegates(t[0])])
            if wave]


def run_task(algo: str, pass_name: str, dtype: str) -> float:
    """Run ``algo``'s ``pass_name`` in ``dtype`` on every grid problem it supports (compiling what
    the cache lacks); return the seconds taken."""
    started = time.perf_counter()
    warnings.simplefilter("ignore", CompilingNotice)   # the command shows progress instead
    rng = np.random.default_rng(0)
    module = dispatch.registry("cpu")[algo]
    for _, x_shape, w_shape, stride, padding, dilation, groups in CASES:
        spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)
        if module.supports(spec.as_3d()) is not None:
            continue
        x, w, grad_y = (rng.standard_normal(shape).astype(dtype) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
        arguments = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        pass_calls(functional, spec.rank, arguments, x, w, grad_y, algo=algo, device="cpu")[pass_name]()
    return time.perf_counter() - started


def compile_all(algos, passes=PASSES, dtypes=DTYPES, jobs=None, progress=None) -> float:
    """Compile every kernel of ``algos`` x ``passes`` x ``dtypes`` into the cache in ``jobs`` worker
    processes (default: one per core); ``progress(done, total, text)`` after each task. Returns
    the wall seconds. A task that fails raises its error here."""
    work = waves(algos, passes, dtypes)
    total = sum(len(wave) for wave in work)
    jobs = max(1, min(jobs or os.cpu_count() or 1, total))
    started, done = time.perf_counter(), 0
    # spawn: a fresh interpreter per worker (forking a process with Numba's threads running is unsafe)
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for wave in work:
            pending = {pool.submit(run_task, *task): task for task in wave}
            for future in concurrent.futures.as_completed(pending):
                seconds = future.result()
                done += 1
                if progress is not None:
                    progress(done, total, f"{' '.join(pending[future])} ({seconds:.1f} s)")
    return time.perf_counter() - started
