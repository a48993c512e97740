"""pytest-benchmark suites: layer x pass x implementation, one group per layer and pass.

Implementations: every numbaconv algorithm on every available device,
PyTorch on the CPU (and on CUDA where present) when installed, and the
float64 reference on the layers under ``numbaconv.tools.bench.REFERENCE_FLOP_LIMIT``. Each
case first checks its result against the float64 truth, then is timed.

The networks suite (numbaconv/tools/networks.py, as ``numbaconv bench --suite networks``):
network x layer x pass x implementation, numbaconv's ``auto`` and PyTorch, one group per
network, layer and pass; a network's first layer has no input-gradient case.

    python -m pytest bench --benchmark-enable                    # quick suite, timed
    NUMBACONV_BENCH_SUITE=full python -m pytest bench --benchmark-enable --benchmark-autosave
    NUMBACONV_BENCH_SUITE=networks python -m pytest bench --benchmark-enable --benchmark-autosave
    python -m pytest bench --benchmark-enable --benchmark-compare  # against the last saved run
    pytest-benchmark compare 0001 0002 --group-by=group            # two saved runs side by side

pyproject.toml passes ``--benchmark-disable`` by default, so the plain test
command (and CI) runs each case once as a smoke test: correct, and runnable. The smoke run
holds the suite's layer cases and a share of the network cases: each network at batch 1, its
``SMOKE_LAYERS`` cheapest layers there and its cheapest transposed layer (15 of the 91 layers,
86 cases, about 10 seconds on 2 cores); ``NUMBACONV_BENCH_SUITE=networks`` with ``--benchmark-disable`` checks every
network case once, at the networks' own batch.
"""
import functools
import os

import pytest

from numbaconv import timing
from numbaconv.accuracy import TOLERANCE, relative_error
from numbaconv.passes import PASSES
from numbaconv.tools import bench, networks, suite

TORCH = bench.import_torch()
IMPLEMENTATIONS = {implementation.label: implementation for implementation in bench.implementations(torch=TORCH)}
# the networks suite compares numbaconv's auto with PyTorch, as numbaconv bench --suite networks does
NETWORK_IMPLEMENTATIONS = {implementation.label: implementation for implementation in
                           bench.implementations(algos=["auto"], torch=TORCH, with_reference=False)}
# The smoke run's network cases: each network at batch 1, its this many cheapest layers there
# and its cheapest transposed layer.
SMOKE_LAYERS = 3


SUITE = os.environ.get("NUMBACONV_BENCH_SUITE", "quick")
if SUITE not in (*suite.SUITES, "networks"):
    raise ValueError(f"$NUMBACONV_BENCH_SUITE must be one of {(*suite.SUITES, 'networks')}, got {SUITE!r}")


def _network_layers(smoke: bool) -> list[tuple]:
    """(network, NetworkLayer) of the network cases: all of them for the networks suite, the smoke
    share for the plain run of another suite, none when another suite is timed."""
    if SUITE == "networks":
        return [(network.name, entry) for network in networks.SUITE.values() for entry in network.layers]
    if not smoke:
        return []
    chosen = []
    for network in (n.at_batch(1) for n in networks.SUITE.values()):
        by_flops = sorted(network.layers, key=lambda entry: entry.layer.spec.flops)
        picked = by_flops[:SMOKE_LAYERS] + [entry for entry in by_flops if entry.layer.transposed][:1]
        chosen += [(network.name, entry) for entry in network.layers if entry in picked]
    return chosen


NETWORK_LAYERS = {}       # (network, layer name) -> NetworkLayer of the cases collected


def pytest_generate_tests(metafunc):
    if "network_name" in metafunc.fixturenames:
        config = metafunc.config
        smoke = config.getoption("benchmark_disable") and not config.getoption("benchmark_enable")
        entries = _network_layers(smoke)
        NETWORK_LAYERS.update({(name, entry.layer.name): entry for name, entry in entries})
        cases = [(name, entry.layer.name, pass_name, label) for name, entry in entries
                 for pass_name in entry.passes for label in NETWORK_IMPLEMENTATIONS]
        metafunc.parametrize("network_name, layer_name, pass_name, label", cases,
                             ids=["-".join(case) for case in cases])
        return
    names = suite.SUITES.get(SUITE, ())
    cases = [(layer, pass_name, label) for layer in names for pass_name in PASSES for label in IMPLEMENTATIONS]
    metafunc.parametrize("layer_name, pass_name, label", cases,
                         ids=[f"{layer}-{pass_name}-{label}" for layer, pass_name, label in cases])


@functools.lru_cache(maxsize=1)
def problem_of(layer_name, network_name=""):
    layer = NETWORK_LAYERS[network_name, layer_name].layer if network_name else suite.LAYERS[layer_name]
    return suite.Problem.create(layer, "float32")


@functools.lru_cache(maxsize=3)
def truth_of(layer_name, pass_name, network_name=""):
    return bench.truth(problem_of(layer_name, network_name), pass_name, TORCH)


def test_speed(benchmark, layer_name, pass_name, label):
    _check_and_time(benchmark, IMPLEMENTATIONS[label], layer_name, pass_name)


def test_network_speed(benchmark, network_name, layer_name, pass_name, label):
    benchmark.extra_info.update(count=NETWORK_LAYERS[network_name, layer_name].count)
    _check_and_time(benchmark, NETWORK_IMPLEMENTATIONS[label], layer_name, pass_name, network_name)


def _check_and_time(benchmark, implementation, layer_name, pass_name, network_name=""):
    label, problem = implementation.label, problem_of(layer_name, network_name)
    where = f"{network_name} {layer_name}" if network_name else layer_name
    if not bench.runs(implementation, problem.layer):
        pytest.skip(f"{label} does not run {where}")
    call = implementation.prepare(problem, pass_name)
    error = relative_error(implementation.to_host(call()), truth_of(layer_name, pass_name, network_name))
    assert error <= TOLERANCE["float32"], f"{label} {where} {pass_name}: relative error {error:.2e}"

    benchmark.group = f"{where} {pass_name}"
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
