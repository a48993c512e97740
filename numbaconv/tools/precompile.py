"""``numbaconv compile``: every CPU kernel into Numba's on-disk cache, ahead of time.

Numba compiles a kernel on its first call for that call's argument types
and caches the machine code per machine (``numbaconv info`` shows the
folder), so a process on a warm cache only loads it. Which kernels a call
needs depends on the algorithm, the pass, the dtype and the problem's shape
(1x1, strided, grouped, depthwise, 1-d and 3-d problems take different
paths); the problems of numbaconv.tools.grid reach every path. Each task
here is one algorithm's passes in one dtype run over that grid, the forward
first: a pass that runs another's kernels (Winograd's and channels_last's
input gradient are their forward on the output gradient) then loads them
from its worker's memory instead of compiling them beside it in another
worker. The tasks are spread over worker processes (Numba compiles on one
core, so two processes on two cores take about half the time), the ones of
``SLOWEST`` first so that no long task starts last, and the parent shows
progress. :func:`compile_calls` does the same for a list of calls
(``numbaconv bench`` on a cold cache, for the layers it has yet to time).
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
from .bench import auto_choice, numbaconv_call
from .grid import CASES
from .suite import Problem

DTYPES = ("float32", "float64")
# The algorithms whose kernels take longest to compile (numbaconv compile's log, seconds a dtype:
# winograd 15-25, im2col 13-15, winograd1d 9-10, blocked 8-9), submitted before the rest.
SLOWEST = ("winograd", "im2col", "winograd1d", "blocked")


def _delegates(algo: str) -> bool:
    """Whether ``algo`` runs other algorithms' kernels (dispatch hands it their choice)."""
    return getattr(dispatch.registry("cpu")[algo], "choose_plane_algorithm", None) is not None


def waves(algos, passes, dtypes) -> list[list[tuple[str, tuple[str, ...], str]]]:
    """The (algorithm, passes, dtype) tasks, those of ``SLOWEST`` first: the algorithms that run
    their own kernels, then those that run other algorithms' (an empty wave left out)."""
    ordered = [a for a in SLOWEST if a in algos] + [a for a in algos if a not in SLOWEST]
    work = [(algo, tuple(passes), dtype) for algo in ordered for dtype in dtypes]
    return [wave for wave in ([t for t in work if not _delegates(t[0])], [t for t in work if _delegates(t[0])])
            if wave]


def run_task(algo: str, passes: tuple[str, ...], dtype: str) -> float:
    """Run ``algo``'s ``passes``, in that order, in ``dtype`` on every grid problem it supports
    (compiling what the cache lacks); return the seconds taken."""
    started = time.perf_counter()
    warnings.simplefilter("ignore", CompilingNotice)   # the command shows progress instead
    rng = np.random.default_rng(0)
    module = dispatch.registry("cpu")[algo]
    for pass_name in passes:
        for _, x_shape, w_shape, stride, padding, dilation, groups in CASES:
            spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)
            if module.supports(spec.as_3d()) is not None:
                continue
            x, w, grad_y = (rng.standard_normal(shape).astype(dtype)
                            for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
            arguments = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
            pass_calls(functional, spec.rank, arguments, x, w, grad_y, algo=algo, device="cpu")[pass_name]()
    return time.perf_counter() - started


def run_calls(calls) -> float:
    """Run each ``(layer, pass name, algorithm, dtype)`` of ``calls`` once on the CPU (a
    numbaconv.tools.suite layer, random operands), compiling what the cache lacks; return the
    seconds taken."""
    started = time.perf_counter()
    warnings.simplefilter("ignore", CompilingNotice)
    for layer, pass_name, algo, dtype in calls:
        numbaconv_call("cpu", algo, Problem.create(layer, dtype), pass_name)()
    return time.perf_counter() - started


def compile_calls(calls, jobs=None) -> float:
    """:func:`run_calls` of ``calls`` in ``jobs`` worker processes (default: one per core), the
    calls that run one algorithm (``auto`` resolved) in one worker, since they share its
    kernels; the algorithms go to the least loaded worker, those of most calls first. Returns
    the wall seconds. ``numbaconv bench`` runs the calls of its remaining layers so on a cold
    cache, before it times anything."""
    started = time.perf_counter()
    shares = worker_shares(calls, jobs or os.cpu_count() or 1)
    with concurrent.futures.ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(run_calls, share) for share in shares]:
            future.result()
    return time.perf_counter() - started


def worker_shares(calls, jobs: int) -> list[list]:
    """``calls`` cut into at most ``jobs`` shares (none empty): the calls that run one algorithm
    (``auto`` resolved to its pick) in one share, each algorithm's calls, most first, to the
    share with the fewest calls so far."""
    by_algorithm = {}
    for call in calls:
        layer, pass_name, algo, _ = call
        by_algorithm.setdefault(auto_choice("cpu", layer, pass_name) if algo == "auto" else algo, []).append(call)
    shares = [[] for _ in range(max(1, min(jobs, len(by_algorithm))))]
    for group in sorted(by_algorithm.values(), key=len, reverse=True):
        min(shares, key=len).extend(group)
    return [share for share in shares if share]


def compile_all(algos, passes=PASSES, dtypes=DTYPES, jobs=None, progress=None) -> float:
    """Compile every kernel of ``algos`` x ``passes`` x ``dtypes`` into the cache in ``jobs`` worker
    processes (default: one per core); ``progress(done, total, text)`` after each (algorithm,
    dtype) task. Returns the wall seconds. A task that fails raises its error here."""
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
                    algo, task_passes, dtype = pending[future]
                    progress(done, total, f"{algo} {','.join(task_passes)} {dtype} ({seconds:.1f} s)")
    return time.perf_counter() - started
