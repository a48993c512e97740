"""The workspace cap (numbaconv.set_workspace_limit, $NUMBACONV_WORKSPACE_MIB) and the peak record."""
import threading

import numpy as np
import pytest

import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.spec import ConvSpec
from numbaconv.cpu import workspace

from conftest import assert_close, random_array

MIB = 2**20


@pytest.fixture
def limit():
    """Set a limit for one test; the previous one comes back afterwards."""
    previous = []

    def set_limit(nbytes):
        previous.append(nc.set_workspace_limit(nbytes))
    yield set_limit
    if previous:
        nc.set_workspace_limit(previous[0])


def _passes(x, w, grad_y, algo):
    return {"forward": lambda: nc.conv2d(x, w, padding=1, algo=algo),
            "input": lambda: nc.conv2d_input(x.shape, w, grad_y, padding=1, algo=algo),
            "weight": lambda: nc.conv2d_weight(x, w.shape, grad_y, padding=1, algo=algo)}


def _peak(call):
    workspace.reset_peak()
    result = call()
    return result, workspace.peak_bytes(), workspace.peak_by_buffer()


def test_set_workspace_limit_checks_and_returns_the_previous(limit):
    assert nc.workspace_limit() == workspace.WORKSPACE_LIMIT_BYTES
    limit(3 * MIB)
    assert nc.workspace_limit() == 3 * MIB
    assert nc.set_workspace_limit(None) == 3 * MIB
    assert nc.workspace_limit() == workspace.DEFAULT_WORKSPACE_LIMIT_BYTES == 256 * MIB
    for bad in (0, -1, 1.5, "1", True):
        with pytest.raises(ValueError, match="positive number of bytes"):
            nc.set_workspace_limit(bad)


def test_limit_from_the_environment(monkeypatch):
    monkeypatch.delenv("NUMBACONV_WORKSPACE_MIB", raising=False)
    assert workspace._limit_from_environment(7) == 7
    monkeypatch.setenv("NUMBACONV_WORKSPACE_MIB", "64")
    assert workspace._limit_from_environment(7) == 64 * MIB
    monkeypatch.setenv("NUMBACONV_WORKSPACE_MIB", "0.5")
    assert workspace._limit_from_environment(7) == MIB // 2
    for bad in ("lots", "0", "-3"):
        monkeypatch.setenv("NUMBACONV_WORKSPACE_MIB", bad)
        with pytest.raises(ValueError, match="NUMBACONV_WORKSPACE_MIB"):
            workspace._limit_from_environment(7)


def test_peak_sums_the_largest_borrow_per_thread_and_buffer():
    workspace.reset_peak()
    workspace.borrow("test_a", 100, np.float64)
    workspace.borrow("test_a", 10, np.float64)      # smaller: the peak keeps 800 bytes
    workspace.borrow("test_b", 50, np.float32)
    other = threading.Thread(target=lambda: workspace.borrow("test_a", 25, np.float64))
    other.start()
    other.join()
    assert workspace.peak_bytes() == 800 + 200 + 200
    assert workspace.peak_by_buffer() == {"test_a": 1000, "test_b": 200}
    workspace.reset_peak()
    assert workspace.peak_bytes() == 0


def test_a_small_limit_shrinks_the_blocks_and_keeps_results(rng, limit):
    """A problem whose column blocks take about 4 MiB by default, under a 1 MiB limit: im2col's
    blocks shrink and the result stays; every algorithm that still runs stays under it."""
    x, w, grad_y = random_array(rng, (4, 32, 40, 40)), random_array(rng, (32, 32, 3, 3)), random_array(rng, (4, 32, 40, 40))
    expected = {
        "forward": reference.conv2d(x, w, padding=1),
        "input": reference.conv2d_input(x.shape, w, grad_y, padding=1),
        "weight": reference.conv2d_weight(x, w.shape, grad_y, padding=1)}
    default_peak = {pass_name: _peak(call)[1] for pass_name, call in _passes(x, w, grad_y, "im2col").items()}
    assert all(peak > MIB for peak in default_peak.values())
    limit(MIB)
    for pass_name, call in _passes(x, w, grad_y, "im2col").items():
        result, peak, _ = _peak(call)
        assert_close(result, expected[pass_name], np.float64, f"im2col {pass_name}")
        assert 0 < peak <= MIB, (pass_name, peak)


# Problems for the limit: 3x3 (every algorithm but depthwise), grouped, pointwise (im2col's views),
# 5x5 strided, 3x3 depthwise with a channel multiplier, 3x3x3 (depth_taps, its taps' 2-d passes), 1-d of 3 taps
# at stride 2 (winograd1d's blocks of tiles).
LIMITED_PROBLEMS = [((4, 32, 40, 40), (32, 32, 3, 3), dict(padding=1)),
                    ((2, 16, 20, 20), (32, 4, 3, 3), dict(padding=1, groups=4)),
                    ((2, 64, 24, 24), (32, 64, 1, 1), {}),
                    ((2, 8, 30, 30), (16, 8, 5, 5), dict(stride=2, padding=2)),
                    ((2, 16, 20, 20), (32, 1, 3, 3), dict(padding=1, groups=16)),
                    ((1, 8, 4, 16, 16), (8, 8, 3, 3, 3), dict(padding=1)),
                    ((2, 48, 900), (40, 48, 3), dict(stride=2, padding=1))]


@pytest.mark.parametrize("limit_bytes", [64 * 1024, MIB, 4 * MIB])
def test_every_algorithm_stays_under_the_limit_or_declines(rng, limit, limit_bytes):
    """All the scratch a call borrows (every buffer, every thread) stays under the limit; an
    algorithm that cannot fit says so (ValueError naming the limit) and "auto" still runs."""
    limit(limit_bytes)
    ran = set()
    for x_shape, w_shape, options in LIMITED_PROBLEMS:
        spec = ConvSpec.create(x_shape, w_shape, **options)
        x, w, grad_y = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, spec.y_shape)
        name = f"conv{spec.rank}d"
        expected = {"forward": getattr(reference, name)(x, w, **options),
                    "input": getattr(reference, f"{name}_input")(x.shape, w, grad_y, **options),
                    "weight": getattr(reference, f"{name}_weight")(x, w.shape, grad_y, **options)}
        for algo in (*nc.algorithms("cpu"), "auto"):
            reason = None if algo == "auto" else dispatch.REGISTRY["cpu"][algo].supports(spec.as_3d())
            calls = {"forward": lambda: getattr(nc, name)(x, w, algo=algo, **options),
                     "input": lambda: getattr(nc, f"{name}_input")(x.shape, w, grad_y, algo=algo, **options),
                     "weight": lambda: getattr(nc, f"{name}_weight")(x, w.shape, grad_y, algo=algo, **options)}
            for pass_name, call in calls.items():
                if reason is not None:
                    if "workspace limit" in reason:
                        with pytest.raises(ValueError, match="workspace limit"):
                            call()
                    continue
                result, peak, by_buffer = _peak(call)
                assert_close(result, expected[pass_name], np.float64, f"{algo} {pass_name}")
                assert peak <= limit_bytes, (algo, pass_name, spec, by_buffer)
                if algo == "direct":
                    assert peak == 0          # it borrows nothing (README, "Workspace")
                ran.add(algo)
    if limit_bytes >= 4 * MIB:   # not a test of declining alone
        assert ran == {*nc.algorithms("cpu"), "auto"}
