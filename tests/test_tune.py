"""algo="tune" and numbaconv.tune: correct results, per-pass plans, the plan file on disk.

No test depends on which algorithm wins: any supported one is accepted.
Every test gets its own plan folder ($NUMBACONV_CACHE_DIR) and an empty
memory of plans.
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import numbaconv as nc
from numbaconv import dispatch, reference, tuning
from numbaconv.spec import ConvSpec

from conftest import assert_close, random_array

# (x_shape, w_shape, options): 2-d 3x3 (all four CPU algorithms), strided 1-d, grouped 3-d
PROBLEMS = [
    ((2, 4, 9, 7), (6, 4, 3, 3), {"padding": 1}),
    ((2, 3, 13), (4, 3, 3), {"stride": 2, "padding": ((1, 2),)}),
    ((1, 4, 4, 5, 4), (4, 2, 2, 3, 2), {"groups": 2, "dilation": (1, 1, 2)}),
]


@pytest.fixture(autouse=True)
def plan_folder(tmp_path, monkeypatch):
    folder = tmp_path / "plans"
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(folder))
    tuning.forget()
    yield folder
    tuning.forget()


@pytest.fixture
def timings(monkeypatch):
    """Replace the timer: every candidate runs once (results stay real) and gets a made-up time;
    returns the list of calls, one per candidate timed."""
    calls = []

    def fake_best_times(candidates, clocks=None, **options):
        seconds = []
        for call in candidates:
            call()
            calls.append(call)
            seconds.append(float(len(calls) % 3))    # a changing, arbitrary winner
        return seconds
    monkeypatch.setattr(tuning.timing, "best_times", fake_best_times)
    return calls


def _poisoning_empty(monkeypatch):
    """np.empty now returns NaN-filled float arrays: an output element nobody writes fails."""
    original = np.empty

    def empty(shape, dtype=float, *args, **kwargs):
        array = original(shape, dtype, *args, **kwargs)
        if array.dtype.kind == "f":
            array.fill(np.nan)
        return array
    monkeypatch.setattr(np, "empty", empty)


def _supported(spec, pass_name, dtype):
    plan = tuning.lookup("cpu", pass_name, spec.as_3d(), dtype)
    assert plan is not None, f"no {pass_name} plan"
    assert dispatch.registry("cpu")[plan["algo"]].supports(spec.as_3d()) is None
    return plan


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("problem", PROBLEMS, ids=["2d", "1d", "3d"])
def test_tune_matches_reference_every_pass(rng, monkeypatch, problem, dtype):
    x_shape, w_shape, options = problem
    spec = ConvSpec.create(x_shape, w_shape, **options)
    x, w, grad_y = (random_array(rng, shape, dtype) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
    bias = random_array(rng, (spec.out_channels,), dtype)
    rank = spec.rank
    calls = {
        "forward": lambda: getattr(nc, f"conv{rank}d")(x, w, bias, **options, algo="tune"),
        "input": lambda: getattr(nc, f"conv{rank}d_input")(x.shape, w, grad_y, **options, algo="tune"),
        "weight": lambda: getattr(nc, f"conv{rank}d_weight")(x, w.shape, grad_y, **options, algo="tune"),
    }
    expected = {"forward": getattr(reference, f"conv{rank}d")(x, w, bias, **options),
                "input": getattr(reference, f"conv{rank}d_input")(x.shape, w, grad_y, **options),
                "weight": getattr(reference, f"conv{rank}d_weight")(x, w.shape, grad_y, **options)}
    for pass_name, call in calls.items():
        assert_close(call(), expected[pass_name], dtype, f"{pass_name}, tuning call")
        _supported(spec, pass_name, dtype)
    timed = tuning.STATS["timed"]
    _poisoning_empty(monkeypatch)     # the plans exist now: only the winners run, into NaN
    for pass_name, call in calls.items():
        assert_close(call(), expected[pass_name], dtype, f"{pass_name}, planned call")
    gx, gw, gb = getattr(nc, f"conv{rank}d_backward")(grad_y, x, w, **options, algo="tune")
    assert_close(gx, expected["input"], dtype, "backward input")
    assert_close(gw, expected["weight"], dtype, "backward weight")
    assert tuning.STATS["timed"] == timed


def test_inputs_are_not_written(rng):
    x, w, grad_y = random_array(rng, (2, 3, 8, 8)), random_array(rng, (4, 3, 3, 3)), random_array(rng, (2, 4, 8, 8))
    copies = [a.copy() for a in (x, w, grad_y)]
    nc.conv2d(x, w, padding=1, algo="tune")
    nc.conv2d_backward(grad_y, x, w, padding=1, algo="tune")
    for array, copy in zip((x, w, grad_y), copies):
        np.testing.assert_array_equal(array, copy)


def test_transpose_and_empty_batch(rng):
    x, w = random_array(rng, (2, 4, 5, 6)), random_array(rng, (4, 3, 3, 3))
    assert_close(nc.conv_transpose2d(x, w, stride=2, padding=1, algo="tune"),
                 reference.conv_transpose2d(x, w, stride=2, padding=1), np.float64, "transpose")
    empty = nc.conv2d(np.ones((0, 3, 5, 5)), w, algo="tune")
    assert empty.shape == (0, 4, 3, 3)


def test_each_pass_is_tuned_once(timings):
    spec = ConvSpec.create((2, 4, 9, 7), (6, 4, 3, 3), padding=1)
    candidates = [name for name, module in dispatch.registry("cpu").items() if module.supports(spec.as_3d()) is None]
    results = nc.tune([{"x_shape": spec.x_shape, "w_shape": spec.w_shape, "padding": 1}])
    assert [r["pass"] for r in results] == ["forward", "input", "weight"]
    assert len(timings) == 3 * len(candidates)
    for result in results:
        assert result["algo"] in candidates and set(result["ms"]) == set(candidates)
        assert result["x_shape"] == spec.x_shape and result["dtype"] == "float32" and result["padding"] == 1
    nc.tune([(spec.x_shape, spec.w_shape, {"padding": 1})])     # the same problem as a tuple
    assert len(timings) == 3 * len(candidates)
    nc.tune([(spec.x_shape, spec.w_shape, {"padding": 1, "dtype": "float64"})], passes=["forward"])
    assert len(timings) == 4 * len(candidates)                   # another dtype is another plan


@pytest.mark.parametrize("problem, message", [
    ({"x_shape": (1, 2, 5, 5)}, "needs x_shape and w_shape"),
    ({"x_shape": (1, 2, 5, 5), "w_shape": (2, 2, 3, 3), "padd": 1}, "unknown tuning problem keys"),
    ("conv", "is a dict or an"),
    (((1, 2, 5, 5), (2, 3, 3, 3)), "input_channels / groups"),
])
def test_tune_rejects_bad_problems(problem, message):
    with pytest.raises(ValueError, match=message):
        nc.tune([problem])


def test_bad_algo_names_tune():
    with pytest.raises(ValueError, match="'tune'"):
        nc.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), algo="fastest")
    with pytest.raises(ValueError, match="unknown pass"):
        nc.tune([((1, 1, 4, 4), (1, 1, 2, 2))], passes=["backward"])


def test_plans_survive_a_cleared_memory(timings, plan_folder):
    problem = [((2, 3, 10, 10), (4, 3, 3, 3), {"padding": "same"})]
    first = nc.tune(problem)
    timed = len(timings)
    files = os.listdir(plan_folder)
    assert len(files) == 1 and files[0].startswith("plans-") and files[0].endswith(".json")
    content = json.loads((plan_folder / files[0]).read_text())
    assert content["identity"] == tuning.identity() and len(content["plans"]) == 3
    tuning.forget()
    assert [r["algo"] for r in nc.tune(problem)] == [r["algo"] for r in first]
    assert len(timings) == timed


def test_a_new_process_reads_the_plans(plan_folder, rng):
    x, w = random_array(rng, (2, 3, 10, 10), np.float32), random_array(rng, (4, 3, 3, 3), np.float32)
    nc.conv2d(x, w, padding=1, algo="tune")
    script = ("import numpy as np, numbaconv as nc; from numbaconv import tuning; "
              "nc.conv2d(np.ones((2, 3, 10, 10), np.float32), np.ones((4, 3, 3, 3), np.float32), padding=1, "
              "algo='tune'); print(tuning.STATS['timed'], tuning.STATS['loaded'])")
    root = os.path.dirname(os.path.dirname(nc.__file__))
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["0", "1"]


def test_plans_of_another_version_are_ignored(timings, plan_folder):
    spec = ConvSpec.create((1, 2, 6, 6), (3, 2, 3, 3))
    cache = tuning.plan_cache()
    key = tuning.plan_key("cpu", "forward", "float32", tuning._threads("cpu"), spec.as_3d())
    plan_folder.mkdir()
    stale = {"identity": {**cache.identity, "numba": "0.1.0"}, "plans": {key: {"algo": "im2col", "ms": {}}}}
    with open(cache.path, "w") as file:
        json.dump(stale, file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # another version's file is ignored silently
        nc.tune([(spec.x_shape, spec.w_shape)], passes=["forward"])
    assert timings
    assert json.loads(open(cache.path).read())["identity"] == cache.identity


def test_a_plan_for_an_algorithm_that_cannot_run_is_remade(timings):
    spec = ConvSpec.create((1, 2, 9, 9), (3, 2, 3, 3), stride=2)    # winograd needs stride 1
    key = tuning.plan_key("cpu", "forward", "float64", tuning._threads("cpu"), spec.as_3d())
    tuning.plan_cache().get(key)
    tuning.plan_cache().plans[key] = {"algo": "winograd", "ms": {}}
    [result] = nc.tune([(spec.x_shape, spec.w_shape, {"stride": 2, "dtype": "float64"})], passes=["forward"])
    assert result["algo"] != "winograd" and timings


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\x00\xff", "plans not a mapping"])
def test_a_corrupt_plan_file_warns_and_is_replaced(rng, timings, plan_folder, content):
    plan_folder.mkdir()
    path = tuning.plan_cache().path
    if content == "plans not a mapping":
        content = json.dumps({"identity": tuning.identity(), "plans": [1]})
    with open(path, "w", encoding="latin-1") as file:
        file.write(content)
    x, w = random_array(rng, (2, 3, 7, 7)), random_array(rng, (4, 3, 3, 3))
    with pytest.warns(RuntimeWarning, match="ignoring the tuning plan file"):
        y = nc.conv2d(x, w, algo="tune")
    assert_close(y, reference.conv2d(x, w), np.float64, "after a corrupt plan file")
    assert len(json.loads(open(path).read())["plans"]) == 1


def test_an_unwritable_folder_warns_once_and_tunes_in_memory(rng, timings, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(blocker / "plans"))
    x, w = random_array(rng, (2, 3, 7, 7)), random_array(rng, (4, 3, 3, 3))
    with pytest.warns(RuntimeWarning, match="cannot write the tuning plan file") as record:
        y = nc.conv2d(x, w, algo="tune")
        nc.conv2d_input(x.shape, w, y, algo="tune")
    assert len(record) == 1
    timed = len(timings)
    assert_close(nc.conv2d(x, w, algo="tune"), reference.conv2d(x, w), np.float64, "in memory")
    assert len(timings) == timed


def test_default_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBACONV_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tuning.cache_dir() == str(tmp_path / "numbaconv")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tuning.cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "numbaconv")
