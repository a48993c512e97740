"""pytest-benchmark suites: layer x pass x implementation, one group per layer and pass.

Implementations: every numbaconv algorithm on every available device,
PyTorch on the CPU (and on CUDA where present) when installed, and the
float64 reference on the layers under ``numbaconv.tools.bench.REFERENCE_FLOP_LIMIT``. Each
case first checks its result against the float64 truth, then is timed.

    python -m pytest bench --benchmark-enable                    # quick suite, timed
    NUMBACONV_BENCH_SUITE=full python -m pytest bench --benchmark-enable --benchmark-autosave
    python -m pytest bench --benchmark-enable --benchmark-compare  # against the last saved run
    pytest-benchmark compare 0001 0002 --group-by=group            # two saved runs side by side

pyproject.toml passes ``--benchmark-disable`` by default, so the plain test
command (and CI) runs each case once as a smoke test: correct, and runnable.
"""
import functools
import os

import pytest

from numbaconv import timing
from numbaconv.accuracy import TOLERANCE, relative_error
from numbaconv.passes import PASSES
from numbaconv.tools import bench, suite

TORCH = bench.import_torch()
IMPLEMENTATIONS = {implementation.label: implementation for implementation in bench.implementations(torch=TORCH)}


SUITE = os.environ.get("NUMBACONV_BENCH_SUITE", "quick")
if SUITE not in suite.SUITES:
    raise ValueError(f"$NUMBACONV_BENCH_SUITE must be one of {tuple(suite.SUITES)}, got {SUITE!r}")


def pytest_generate_tests(metafunc):
    cases = [(layer, pass_name, label) for layer in suite.SUITES[SUITE]
             for pass_name in PASSES for label in IMPLEMENTATIONS]
    metafunc.parametrize("layer_name, pass_name, label", cases,
                         ids=[f"{layer}-{pass_name}-{label}" for layer, pass_name, label in cases])


@functools.lru_cache(maxsize=1)
def problem_of(layer_name):
    return suite.Problem.create(suite.LAYERS[layer_name], "float32")


@functools.lru_cache(maxsize=3)
def truth_of(layer_name, pass_name):
    return bench.truth(problem_of(layer_name), pass_name, TORCH)


def test_speed(benchmark, layer_name, pass_name, label):
    implementation, problem = IMPLEMENTATIONS[label], problem_of(layer_name)
    if not bench.runs(implementation, problem):
        pytest.skip(f"{label} does not run {layer_name}")
    call = implementation.prepare(problem, pass_name)
    error = relative_error(implementation.to_host(call()), truth_of(layer_name, pass_name))
    assert error <= TOLERANCE["float32"], f"{label} {layer_name} {pass_name}: relative error {error:.2e}"

    benchmark.group = f"{layer_name} {pass_name}"
    benchmark.extra_info.update(flops=problem.layer.spec.flops, relative_error=error)

    def timed():
        call()
        implementation.synchronize()
    if not benchmark.disabled:
        bench.keep_freed_memory()   # as numbaconv bench does: no page faults for memory freed earlier
        # Calls before pytest-benchmark calibrates: right after a Numba parallel kernel PyTorch's
        # first calls run far slower for a while, and the calibration would be taken on them.
        timing.best_times([timed], rounds=5, max_rounds=25, budget_s=0.2, settle_s=bench.SETTLE_S)
    benchmark(timed)
