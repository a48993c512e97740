"""Compile time of the CPU engine, measured in fresh processes (``numbaconv compile-time``).

Numba compiles every kernel on its first call and, with ``cache=True``,
writes the machine code to its on-disk cache, so a later process only loads
it. Two numbers matter:

- cold: the whole CPU engine compiled from nothing. One child process with
  ``NUMBA_CACHE_DIR`` set to an empty temporary folder imports numbaconv and
  runs each (algorithm, pass, dtype) once; each call's time is mostly the
  compilation of what it needs and earlier calls did not compile.
- warm: for each (algorithm, pass, dtype), a fresh child process on that now
  filled cache: the time to import numbaconv and the time of the first call.

The cold child also names the kernels each call compiled and the seconds of
each (callees included; Numba's compile events), so the report shows where
the time goes.

The problem is a tiny 2-d 3x3 depthwise convolution (``PROBLEMS[0]``), or a
3x3x3 one for the algorithms that run only 3-d problems (``depth_taps``): the kernels are compiled per argument types, never per
shape, so its first call costs what any problem's would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from numba.core import event

from .. import dispatch, functional, timing
from ..compile_cache import kernel_name
from ..passes import pass_calls
from ..spec import ConvSpec

PROBLEMS = ({"x_shape": (2, 4, 8, 8), "w_shape": (4, 1, 3, 3), "padding": 1, "groups": 4},
            {"x_shape": (2, 4, 4, 8, 8), "w_shape": (4, 1, 3, 3, 3), "padding": 1, "groups": 4},
            {"x_shape": (2, 4, 16), "w_shape": (4, 4, 3), "padding": 1, "groups": 1})   # 1-d only: winograd1d
_CHILD = """
import json, sys, time
started = time.perf_counter()
import numbaconv.tools.compiletime
numbaconv.tools.compiletime.child(started, json.loads(sys.argv[1]))
"""


def probe(algo: str) -> dict:
    """The first of ``PROBLEMS`` that CPU algorithm ``algo`` runs."""
    module = dispatch.registry("cpu")[algo]
    for problem in PROBLEMS:
        spec = ConvSpec.create(problem["x_shape"], problem["w_shape"], padding=problem["padding"],
                               groups=problem["groups"])
        if module.supports(spec.as_3d()) is None:
            return problem
    raise ValueError(f"no compile-time problem fits the CPU algorithm {algo!r}")


class _KernelClock(event.Listener):
    """Seconds of each outermost numbaconv compilation, in order: ``[name, seconds]``."""

    def __init__(self):
        self.kernels, self._starts = [], []

    def on_start(self, compile_event):
        if kernel_name(compile_event) is not None:
            self._starts.append(time.perf_counter())

    def on_end(self, compile_event):
        name = kernel_name(compile_event)
        if name is not None:
            seconds = time.perf_counter() - self._starts.pop()
            if not self._starts:
                self.kernels.append([name, seconds])


def child(started: float, items) -> None:
    """In the child process: time the import (since ``started``) and the first call of each
    ``(algorithm, pass, dtype)``, and the kernels each compiled; print them as JSON."""
    import_s = time.perf_counter() - started
    seconds, kernels = [], []
    for algo, pass_name, dtype in items:
        problem = probe(algo)
        options = {"padding": problem["padding"], "groups": problem["groups"]}
        operands = (np.ones(shape, dtype) for shape in (problem["x_shape"], problem["w_shape"], problem["x_shape"]))
        call = pass_calls(functional, len(problem["x_shape"]) - 2, options, *operands, algo=algo, device="cpu")[pass_name]
        clock = _KernelClock()
        with event.install_listener("numba:compile", clock):
            seconds.append(timing.timed_call(call)[1])
        kernels.append(clock.kernels)
        print(f"done {algo} {pass_name} {dtype}", flush=True)
    print(json.dumps({"import_s": import_s, "call_s": seconds, "kernels": kernels}))


def _run_child(items, numba_cache: str, progress=None) -> dict:
    """Run :func:`child` on ``items`` in a fresh process on the cache ``numba_cache``; its result.
    ``progress(text)`` hears each item as the child finishes it."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # above numbaconv/
    environment = dict(os.environ, NUMBA_CACHE_DIR=numba_cache,
                       PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(items)], env=environment, stdout=subprocess.PIPE,
            stderr=errors, text=True) as process:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if progress is not None and line.startswith("done "):
                progress(line[5:].strip())
        process.wait()
        if process.returncode:
            errors.seek(0)
            raise RuntimeError(f"the compile-time child process failed:\n{errors.read()}")
    return json.loads(lines[-1])


def compile_times(algos, passes, dtypes, progress=None) -> dict:
    """Cold and warm first-call seconds of every (algorithm, pass, dtype).

    Returns ``{"cold_import_s", "cold_total_s", "rows": [{"algo", "pass", "dtype", "cold_s",
    "kernels", "warm_import_s", "warm_call_s"}]}``; ``cold_total_s`` is the import plus every cold
    call, ``kernels`` the ``[name, seconds]`` of each kernel the cold call compiled.
    ``progress(done, total, text)`` after each cold call and each warm process.
    """
    items = [(algo, pass_name, dtype) for algo in algos for pass_name in passes for dtype in dtypes]
    total, done = 2 * len(items), 0

    def step(text):
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, text)
    with tempfile.TemporaryDirectory(prefix="numbaconv-numba-cache-") as numba_cache:
        cold = _run_child(items, numba_cache, lambda text: step(f"cold: {text}"))
        warm = []
        for item in items:
            warm.append(_run_child([item], numba_cache))
            step(f"warm: {' '.join(item)}")
    rows = [{"algo": algo, "pass": pass_name, "dtype": dtype, "cold_s": cold_s, "kernels": kernels,
             "warm_import_s": fresh["import_s"], "warm_call_s": fresh["call_s"][0]}
            for (algo, pass_name, dtype), cold_s, kernels, fresh in zip(items, cold["call_s"], cold["kernels"], warm)]
    return {"cold_import_s": cold["import_s"], "cold_total_s": cold["import_s"] + sum(cold["call_s"]),
            "rows": rows}


def format_report(result: dict) -> str:
    lines = [f"{'algorithm':<11}{'pass':<9}{'dtype':<9}{'cold s':>8}{'warm: import s':>16}"
             f"{'first call s':>14}{'sum s':>7}"]
    lines.append("-" * len(lines[0]))
    for row in result["rows"]:
        lines.append(f"{row['algo']:<11}{row['pass']:<9}{row['dtype']:<9}{row['cold_s']:>8.2f}"
                     f"{row['warm_import_s']:>16.2f}{row['warm_call_s']:>14.3f}"
                     f"{row['warm_import_s'] + row['warm_call_s']:>7.2f}")
        if row["kernels"]:
            lines.append("    compiled: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in row["kernels"]))
    worst = max(result["rows"], key=lambda row: row["warm_import_s"] + row["warm_call_s"])
    lines += ["",
              f"cold compile of these {len(result['rows'])} (algorithm, pass, dtype) in one process with an "
              f"empty NUMBA_CACHE_DIR: {result['cold_total_s']:.1f} s (import {result['cold_import_s']:.2f} s)",
              f"warm: a fresh process on that cache, import + first call: at most "
              f"{worst['warm_import_s'] + worst['warm_call_s']:.2f} s ({worst['algo']} {worst['pass']} {worst['dtype']}); "
              f"first call alone at most {max(row['warm_call_s'] for row in result['rows']):.3f} s"]
    return "\n".join(lines)
