"""Compilation: the one-line notice while numbaconv compiles, ``numbaconv compile`` filling the
cache ahead of time, and an import that loads only what a first call needs."""
import os
import subprocess
import sys
import time
import warnings
from types import SimpleNamespace

import pytest

import numbaconv as nc
from numbaconv import compile_cache
from numbaconv.tools import cli, precompile


def _event(module, name="kernel"):
    """A Numba compile event about a function ``name`` of ``module``."""
    function = SimpleNamespace(__module__=module, __name__=name)
    return SimpleNamespace(data={"dispatcher": SimpleNamespace(py_func=function)})


def _watch(monkeypatch, notice_after_s):
    monkeypatch.setattr(compile_cache, "NOTICE_AFTER_S", notice_after_s)
    monkeypatch.setattr(compile_cache, "cache_folder", lambda function: "/the/cache")
    return compile_cache._CompileWatch()


def test_a_long_compilation_is_announced_once(monkeypatch):
    watch, heard = _watch(monkeypatch, 0.05), []
    monkeypatch.setattr(compile_cache, "COMPILE_LISTENERS", [heard.append])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in ("slow", "slower"):
            watch.on_start(_event("numbaconv.cpu.planar", name))
            watch.on_start(_event("numbaconv.cpu.planar", "callee"))   # nested: not a new kernel
            watch.on_end(_event("numbaconv.cpu.planar", "callee"))
            time.sleep(0.3)
            watch.on_end(_event("numbaconv.cpu.planar", name))
    notices = [w for w in caught if issubclass(w.category, nc.CompilingNotice)]
    assert len(notices) == 1
    assert "now cpu.planar.slow" in str(notices[0].message) and "/the/cache" in str(notices[0].message)
    assert "numbaconv compile" in str(notices[0].message)
    assert heard == ["cpu.planar.slow", "cpu.planar.slower"]


def test_quick_and_foreign_compilations_stay_quiet(monkeypatch):
    watch, heard = _watch(monkeypatch, 0.5), []
    monkeypatch.setattr(compile_cache, "COMPILE_LISTENERS", [heard.append])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch.on_start(_event("numbaconv.cpu.direct"))
        watch.on_end(_event("numbaconv.cpu.direct"))          # done before the notice is due
        watch.on_start(_event("users_module"))                # someone else's function
        time.sleep(0.7)
        watch.on_end(_event("users_module"))
    assert not [w for w in caught if issubclass(w.category, nc.CompilingNotice)]
    assert heard == ["cpu.direct.kernel"] and watch.depth == 0


def test_compile_fills_an_empty_cache(capsys, monkeypatch, tmp_path):
    """``numbaconv compile`` for one kernel in a worker process, into an empty NUMBA_CACHE_DIR."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))   # the spawned workers read it
    assert cli.main(["compile", "--algo", "direct", "--pass", "forward", "--dtype", "float32", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] direct forward float32" in out and "done in" in out
    cached = [name for _, _, names in os.walk(tmp_path) for name in names if name.endswith(".nbc")]
    assert any(name.startswith("direct._forward_kernel") for name in cached), cached


def test_bench_calls_compile_in_workers_by_algorithm(monkeypatch, tmp_path):
    """``numbaconv bench``'s compile ahead: every call in one share, the calls of one algorithm
    (auto resolved to its pick) in the same share, at most as many shares as workers; a worker
    process fills an empty cache with the kernels of its calls."""
    from numbaconv.tools import bench, suite
    small, lenet = suite.LAYERS["batch1_16ch"], suite.LAYERS["lenet_conv1"]
    calls = [(small, "forward", "direct", "float32"), (lenet, "forward", "im2col", "float32"),
             (small, "weight", "direct", "float32"), (lenet, "weight", "auto", "float32"),
             (small, "input", "planar", "float32")]
    resolved = {id(call): call[2] if call[2] != "auto" else bench.auto_choice("cpu", call[0], call[1])
                for call in calls}
    for jobs in (1, 2, 8):
        shares = precompile.worker_shares(calls, jobs)
        assert len(shares) == min(jobs, len(set(resolved.values())))
        assert sorted(map(id, (call for share in shares for call in share))) == sorted(map(id, calls))
        homes = {}
        for number, share in enumerate(shares):
            for call in share:
                assert homes.setdefault(resolved[id(call)], number) == number
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))   # the spawned worker reads it
    precompile.compile_calls(calls[:1], 1)
    cached = [name for _, _, names in os.walk(tmp_path) for name in names if name.endswith(".nbc")]
    assert any(name.startswith("direct._forward_kernel") for name in cached), cached


def test_bench_goes_on_where_no_worker_process_starts(monkeypatch):
    """Where the workers cannot start, ``numbaconv bench``'s compile ahead says so and leaves each
    layer to compile as it comes."""
    from numbaconv.tools import bench, suite

    def fail(calls, jobs=None):
        raise OSError("no semaphores")
    said = []
    monkeypatch.setattr(precompile, "compile_calls", fail)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 2)
    bar = type("Bar", (), {"show": lambda self, *a: None, "say": lambda self, text: said.append(text)})()
    candidates = bench.implementations(["cpu"], ["auto"], None, with_reference=False)
    cli._compile_ahead([(suite.LAYERS["batch1_16ch"], "forward", "", 1)], candidates, "float32", bar)
    assert len(said) == 1 and "no semaphores" in said[0] and "compiles as it comes" in said[0]


def test_delegating_algorithms_compile_last_and_the_slowest_first():
    """Tasks are an algorithm's passes in one dtype; the algorithms that run others' kernels wait
    for the rest, and the slowest to compile go first."""
    waves = precompile.waves(["depth_taps", "direct", "winograd"], ["forward", "input"], ["float32", "float64"])
    passes = ("forward", "input")
    assert waves == [[("winograd", passes, "float32"), ("winograd", passes, "float64"),
                      ("direct", passes, "float32"), ("direct", passes, "float64")],
                     [("depth_taps", passes, "float32"), ("depth_taps", passes, "float64")]]
    assert precompile.waves(["direct"], ["weight"], ["float64"]) == [[("direct", ("weight",), "float64")]]


@pytest.mark.parametrize("argv, message", [
    (["compile", "--algo", "fastest"], "unknown algorithm 'fastest'"),
    (["compile", "--dtype", "float16"], "unknown dtype 'float16'"),
    (["compile", "--jobs", "0"], "--jobs must be at least 1"),
    (["compile", "--device", "cuda"], "only the CPU kernels are cached on disk"),
])
def test_compile_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_import_leaves_out_cuda_torch_plotting_and_scipy_fft():
    done = subprocess.run([sys.executable, "-c", "import sys, numbaconv; print(sorted(m for m in sys.modules if "
                           "m.split('.')[0] in ('torch', 'matplotlib') or m.startswith(('numba.cuda', "
                           "'numbaconv.cuda', 'numbaconv.tools', 'scipy.fft'))))"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


_FIRST_CALL = """
import numpy as np
from numba.core import base
refreshes = []
refresh = base.BaseContext.refresh
base.BaseContext.refresh = lambda self: refreshes.append(1) or refresh(self)
import numbaconv
rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 3, 10, 10)), rng.standard_normal((4, 3, 3, 3))
y = numbaconv.conv2d(x, w, padding=1)
error = np.abs(y - numbaconv.reference.conv2d(x, w, padding=1)).max()
print(len(refreshes), error < 1e-12)
"""


def test_a_warm_first_call_loads_kernels_without_refreshing_numba():
    """Every numbaconv kernel loads from the cache without Numba's registry refresh (most of a warm
    first call's time): a fresh process whose kernels are cached (by the first run) refreshes
    nothing and gets the reference's result."""
    from numba.core.caching import FunctionCache
    from numbaconv import compile_cache
    from numbaconv.cpu import planar, threads
    for kernel in (planar._correlate_kernel, threads._launch):
        assert type(kernel._cache) is compile_cache._LoadWithoutRefresh
        assert isinstance(kernel._cache, FunctionCache)
    runs = [subprocess.run([sys.executable, "-c", _FIRST_CALL], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[0].stderr + runs[1].stderr
    refreshed, correct = runs[1].stdout.split()
    assert refreshed == "0" and correct == "True", runs[1].stdout
