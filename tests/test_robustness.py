"""Inputs real programs pass: NaN/Inf under "auto", absurd arguments, long calls and Ctrl-C, an
unwritable home, the workspace cap over a whole call, thread counts shared with PyTorch, the
device variable's case, half-written plan files, and the places where a small bug would hide
(the spec cache's key, float64 sums, the "auto" thresholds)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import numbaconv as nc
from numbaconv import dispatch, reference, slices
from numbaconv.cpu import workspace
from numbaconv.spec import ConvSpec

from conftest import WIDE_WEIGHT, assert_close, random_array

MIB = 2**20
CPU = dispatch.REGISTRY["cpu"]


def _pattern(array):
    """Where an array holds NaN, +Inf and -Inf."""
    array = np.asarray(array)
    return np.isnan(array), np.isposinf(array), np.isneginf(array)


def _assert_same_pattern(actual, expected, what):
    for kind, a, e in zip(("NaN", "+Inf", "-Inf"), _pattern(actual), _pattern(expected)):
        assert np.array_equal(a, e), f"{what}: {kind} at {a.sum()} places, the reference at {e.sum()}"


# --- NaN and Inf under algo="auto" ----------------------------------------------------------------

# (x shape, w shape, options): problems where "auto" picks each algorithm that places NaN/Inf
# differently for some pass (winograd, depthwise, planar, blocked, depth_taps, winograd1d), one where it picks
# im2col and one where it picks polyphase, which places them as the reference does.
NONFINITE_PROBLEMS = [
    ((2, 16, 32, 32), (16, 16, 3, 3), dict(padding=1)),                       # winograd
    ((1, 256, 14, 14), (256, 256, 3, 3), dict(padding=1)),                    # winograd by filter blocks
    ((2, 8, 12, 12), (8, 1, 3, 3), dict(padding=1, groups=8)),               # depthwise (8 of blocked's 16 lanes)
    ((2, 3, 11, 9), (4, 3, 5, 5), dict(padding=2)),                           # planar
    ((2, 16, 9, 9), (16, 1, 3, 3), dict(stride=2, padding=1, groups=16)),     # blocked (input: scatter)
    ((2, 48, 9, 9), (16, 48, 3, 3), dict(stride=2, padding=1)),               # im2col
    ((2, 16, 7, 9), (32, 1, 3, 3), dict(padding=1, groups=16)),               # blocked (input: correlation)
    ((1, 8, 8, 16, 16), (8, 8, 3, 3, 3), dict(padding=1)),                    # depth_taps (its taps on winograd)
    ((1, 128, 40), (128, 128, 3), dict(padding=1)),                           # winograd1d
    ((2, 3, 17, 15), (16, 3, 3, 3), dict(stride=2, padding=1)),               # polyphase (forward, weight)
]


@pytest.mark.parametrize("x_shape, w_shape, options", NONFINITE_PROBLEMS)
@pytest.mark.parametrize("operand", ["input", "weight", "grad_output"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_auto_places_nan_and_inf_as_the_reference(rng, x_shape, w_shape, options, operand, value):
    spec = ConvSpec.create(x_shape, w_shape, **options)
    x, w, grad_y = (random_array(rng, shape, np.float32) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
    target = {"input": x, "weight": w, "grad_output": grad_y}[operand]
    for _ in range(2):   # two non-finite values, one on the edge of the array (next to the padding)
        target[tuple(rng.integers(0, n) for n in target.shape)] = value
    target[(0,) * target.ndim] = value
    x64, w64, gy64 = (a.astype(np.float64) for a in (x, w, grad_y))
    name = f"conv{spec.rank}d"
    if operand != "grad_output":
        _assert_same_pattern(getattr(nc, name)(x, w, **options), getattr(reference, name)(x64, w64, **options),
                             "forward")
    if operand != "input":
        _assert_same_pattern(getattr(nc, f"{name}_input")(x.shape, w, grad_y, **options),
                             getattr(reference, f"{name}_input")(x.shape, w64, gy64, **options), "input gradient")
    if operand != "weight":
        _assert_same_pattern(getattr(nc, f"{name}_weight")(x, w.shape, grad_y, **options),
                             getattr(reference, f"{name}_weight")(x64, w.shape, gy64, **options), "weight gradient")


def test_auto_picks_the_algorithms_these_problems_are_meant_for():
    picked = [dispatch.choose("cpu", "auto", ConvSpec.create(x, w, **o).as_3d()).__name__.rsplit(".", 1)[1]
              for x, w, o in NONFINITE_PROBLEMS]
    assert picked == ["winograd", "winograd", "depthwise", "planar", "blocked", "im2col", "blocked", "depth_taps",
                      "winograd1d", "polyphase"]


@pytest.mark.parametrize("x_shape, w_shape", [((2, 16, 13, 10), (16, 16, 3, 3)), ((1, 256, 14, 14), (256, 256, 3, 3))],
                         ids=["tile-blocks", "filter-blocks"])
def test_winograd_says_whether_its_outputs_are_finite(rng, monkeypatch, x_shape, w_shape):
    """Winograd's forward and input gradient count their non-finite outputs while they are in cache
    and return whether there were none (numbaconv.algorithm), in one call and in slices."""
    winograd = CPU["winograd"]
    spec = ConvSpec.create(x_shape, w_shape, padding=1).as_3d()
    tiling = winograd.Tiling(x_shape[1], w_shape[0], *x_shape[2:], np.float32, 36 * w_shape[0] * w_shape[1])
    assert winograd._by_filter_blocks(tiling, 1, x_shape[0]) == (x_shape[1] == 256)
    for slice_flops in (winograd.SLICE_FLOPS, 1):
        monkeypatch.setattr(winograd, "SLICE_FLOPS", slice_flops)
        for value in (None, np.nan, -np.inf):
            x, w, grad_y = (random_array(rng, shape, np.float32) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
            if value is not None:
                x[-1, 3, 0, -1, -1] = grad_y[0, 5, 0, 2, 1] = value
            for pass_name, a, b, out in (("forward", x, w, np.empty(spec.y_shape, np.float32)),
                                         ("input", grad_y, w, np.empty(spec.x_shape, np.float32))):
                finite = slices.run(winograd, pass_name, spec, a, b, out)
                assert finite is (value is None) and finite == np.isfinite(out).all(), (pass_name, slice_flops, value)


def test_the_problem_of_the_report_under_auto(rng):
    """One +Inf in a 128-channel 28x28 input: 1152 Inf and no NaN, as the reference has."""
    x, w = random_array(rng, (2, 128, 28, 28), np.float32), random_array(rng, (128, 128, 3, 3), np.float32)
    x[1, 5, 10, 11] = np.inf
    y = nc.conv2d(x, w, padding=1)
    _assert_same_pattern(y, reference.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1), "forward")
    assert np.isinf(y).sum() == 128 * 9 and not np.isnan(y).any()


def test_explicit_winograd_spreads_over_its_tiles_as_documented(rng):
    """algo="winograd" marks every output the reference marks non-finite, and may mark more: the
    rest of the 4x4 output tiles whose 6x6 input patches hold the value (README)."""
    x, w = random_array(rng, (1, 8, 16, 16), np.float32), random_array(rng, (8, 8, 3, 3), np.float32)
    x[0, 3, 6, 9] = np.inf
    y = nc.conv2d(x, w, padding=1, algo="winograd")
    expected = reference.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1)
    marked, truth = ~np.isfinite(y), ~np.isfinite(expected)
    assert marked[truth].all() and marked.sum() > truth.sum()
    rows, columns = np.nonzero(marked.any(axis=(0, 1)))
    # outputs 5..10 by rows and 8..10 by columns read input (6, 9); their tiles: rows 4..11, columns 8..11
    assert rows.min() >= 4 and rows.max() <= 11 and columns.min() >= 8 and columns.max() <= 11


def test_inexact_algorithms_name_passes_and_known_checks():
    for name, module in CPU.items():
        for pass_name, check in getattr(module, "INEXACT_NONFINITE", {}).items():
            assert pass_name in ("forward", "input", "weight"), name
            assert check == "result" or check in ("input", "weight", "grad_output"), name
    assert all(dispatch.places_nonfinite_as_reference(CPU["im2col"], p) for p in ("forward", "input", "weight"))


# --- arguments that are not arrays or not sane ---------------------------------------------------

X, W = np.ones((1, 2, 5, 5), np.float32), np.ones((2, 2, 3, 3), np.float32)
GY = np.ones((1, 2, 3, 3), np.float32)


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: nc.conv2d(None, W), TypeError, "input must be an array, got None"),
    (lambda: nc.conv2d(X, None), TypeError, "weight must be an array, got None"),
    (lambda: nc.conv2d_input(None, W, GY), TypeError, "input_shape must be a tuple"),
    (lambda: nc.conv2d_weight(X, None, GY), TypeError, "weight_shape must be a tuple"),
    (lambda: nc.conv2d_input(X.shape, W, None), TypeError, "grad_output must be an array"),
    (lambda: nc.conv2d_backward(GY, X, None), TypeError, "weight must be an array"),
    (lambda: nc.conv2d(X, W, stride=2**70), ValueError, r"stride entries must be <= 2147483647"),
    (lambda: nc.conv2d(X, W, dilation=(1, 2**40)), ValueError, r"dilation entries must be <= 2147483647"),
    (lambda: nc.conv2d(X, W, padding=((0, 2**31), (0, 0))), ValueError, r"padding entries must be <= 2147483647"),
    (lambda: nc.conv2d(X, W, groups=2**64), ValueError, r"groups entries must be <= 2147483647"),
    (lambda: nc.conv_transpose2d(X, W, output_padding=2**40), ValueError, r"output_padding entries must be <="),
    (lambda: nc.conv2d(X, W, padding=10**6), ValueError, r"output .* would have shape \(1, 2, 2000003, 2000003\).*"
                                                          r"more than this machine's memory.*padding"),
    (lambda: nc.conv_transpose2d(X, W, stride=10**6), ValueError, r"input of this convolution would have shape "
                                                                    r"\(1, 2, 4000003, 4000003\)"),
    (lambda: nc.conv2d(X, W, stride=0), ValueError, r"stride entries must be >= 1, got 0"),
    (lambda: nc.conv_transpose2d(X, W, stride=(1, 0)), ValueError, r"stride entries must be >= 1"),
    (lambda: nc.conv2d(X, W, dilation=0), ValueError, r"dilation entries must be >= 1"),
])
def test_absurd_arguments_are_named_before_anything_is_allocated(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


# --- long calls run in slices, so Ctrl-C is heard --------------------------------------------------

SLICED_PROBLEMS = [((3, 4, 9, 8), (6, 4, 3, 3), dict(padding=1)),
                   ((2, 6, 7, 9), (6, 2, 3, 3), dict(stride=(1, 2), padding=(1, 0), groups=3)),
                   ((2, 6, 9, 8), (6, 1, 3, 3), dict(padding=1, groups=6)),
                   ((3, 5, 12), (4, 5, 3), dict(padding=2, dilation=2)),
                   ((2, 4, 3, 6, 6), (4, 4, 3, 3, 3), dict(padding=1))]     # depth_taps: its taps' passes sliced


@pytest.fixture
def tiny_slices(monkeypatch):
    """Budgets so small that every pass runs in slices; ``flops`` or ``nbytes`` picks which budget.
    (depth_taps has no budget of its own: the 2-d passes of its taps run in slices.)"""
    def shrink(flops=None, nbytes=None):
        for module in CPU.values():
            if hasattr(module, "SLICE_FLOPS"):
                monkeypatch.setattr(module, "SLICE_FLOPS", flops or 10**12)
        monkeypatch.setattr(slices, "SLICE_BYTES", nbytes or 2**40)
    return shrink


@pytest.mark.parametrize("budget", [dict(flops=1), dict(flops=20000), dict(nbytes=1), dict(nbytes=3000)],
                         ids=["channel-blocks", "sample-blocks", "channel-blocks-by-bytes", "samples-by-bytes"])
@pytest.mark.parametrize("x_shape, w_shape, options", SLICED_PROBLEMS)
def test_sliced_passes_equal_the_reference(rng, tiny_slices, budget, x_shape, w_shape, options):
    tiny_slices(**budget)
    rank = len(x_shape) - 2
    spec = ConvSpec.create(x_shape, w_shape, **options)
    x, w, grad_y = (random_array(rng, s) for s in (spec.x_shape, spec.w_shape, spec.y_shape))
    for algo in dispatch.runnable("cpu", spec.as_3d()):
        conv, conv_input, conv_weight = (getattr(nc, f"conv{rank}d{suffix}") for suffix in ("", "_input", "_weight"))
        assert_close(conv(x, w, algo=algo, **options), reference.forward(spec, x, w), np.float64, f"{algo} forward")
        assert_close(conv_input(x.shape, w, grad_y, algo=algo, **options),
                     reference.backward_input(spec, grad_y, w), np.float64, f"{algo} input")
        assert_close(conv_weight(x, w.shape, grad_y, algo=algo, **options),
                     reference.backward_weight(spec, x, grad_y), np.float64, f"{algo} weight")


def test_a_pass_over_budget_is_several_kernel_calls_and_stops_between_them(rng, tiny_slices, monkeypatch):
    tiny_slices(flops=1)
    calls = []

    def interrupted(spec, x, w, out):
        calls.append(spec)
        if len(calls) == 2:
            raise KeyboardInterrupt
        out[...] = 0

    monkeypatch.setattr(CPU["direct"], "forward", interrupted)
    x, w = random_array(rng, (3, 4, 9, 8)), random_array(rng, (6, 4, 3, 3))
    with pytest.raises(KeyboardInterrupt):
        nc.conv2d(x, w, algo="direct")
    assert len(calls) == 2 and calls[0].batch == 1 and calls[0].out_channels < 6


INTERRUPTED = textwrap.dedent("""
    import signal, sys, time, numpy as np, numbaconv as nc
    # Ctrl-C raises KeyboardInterrupt whatever SIGINT disposition this process inherited (an earlier
    # test's library may leave the test process ignoring it, and ignored signals pass to children)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    algo = sys.argv[1]
    x = np.random.default_rng(0).standard_normal((64, 64, 56, 56)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((64, 64, 3, 3)).astype(np.float32)
    nc.conv2d(x[:1, :, :8, :8], w, padding=1, algo=algo)   # compiled before the clock starts
    print("start", flush=True)
    try:
        nc.conv2d(x, w, padding=1, algo=algo)
        print("finished", flush=True)
    except KeyboardInterrupt:
        print("interrupted", time.perf_counter(), flush=True)
""")


def test_ctrl_c_stops_a_long_direct_call_within_a_second_or_two():
    """The direct algorithm's forward of this layer takes about ten seconds on two cores; SIGINT
    half a second in ends it at the next slice (a quarter second of work, by design)."""
    process = subprocess.Popen([sys.executable, "-c", INTERRUPTED, "direct"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "start"
        time.sleep(0.5)
        sent = time.perf_counter()
        process.send_signal(signal.SIGINT)
        line = process.stdout.readline().split()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert line and line[0] == "interrupted", line
    assert float(line[1]) - sent < 2.0


# --- a home where nothing can be written -----------------------------------------------------------

def test_imports_and_runs_where_numba_cannot_write_its_cache(tmp_path):
    """numbaconv's own folders and the home's cache folder are unwritable (a file stands where each
    __pycache__ or ~/.cache would go, which stops root too): one warning, the kernels cached in the
    temporary directory, the result right."""
    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(nc.__file__), site / "numbaconv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for folder in [site / "numbaconv", *(p for p in (site / "numbaconv").rglob("*") if p.is_dir())]:
        (folder / "__pycache__").write_text("")
    home, temporary = tmp_path / "home", tmp_path / "tmp"
    home.mkdir(), temporary.mkdir()
    (home / ".cache").write_text("")
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("NUMBA_CACHE_DIR", "XDG_CACHE_HOME"))}
    environment.update(HOME=str(home), TMPDIR=str(temporary), PYTHONPATH=str(site))
    code = ("import numpy as np, numbaconv as nc; assert nc.__file__.startswith(%r);"
            "print(nc.conv1d(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), algo='direct').ravel())"
            % str(site))
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[1.", "3.", "5.", "7.]"]
    assert result.stderr.count("RuntimeWarning") == 1 and "NUMBA_CACHE_DIR" in result.stderr
    cached = list(temporary.glob(f"numbaconv-numba-cache-{os.getuid()}/*/*.nbi"))
    assert cached, list(temporary.rglob("*"))


# --- the workspace cap bounds a whole call ---------------------------------------------------------

def test_the_workspace_cap_bounds_a_whole_backward_call(rng):
    x, w = random_array(rng, (4, 32, 40, 40), np.float32), random_array(rng, (32, 32, 3, 3), np.float32)
    grad_y = random_array(rng, (4, 32, 40, 40), np.float32)
    previous = nc.set_workspace_limit(MIB)
    try:
        workspace.release()
        workspace.reset_peak()
        grad_x, grad_w, _ = nc.conv2d_backward(grad_y, x, w, padding=1, algo="im2col")
        assert 0 < workspace.peak_bytes() <= MIB, workspace.peak_by_buffer()
        held = workspace._thread_state()[0]
        assert 0 < sum(b.nbytes for b in held.values()) <= MIB     # kept for the next call
        nc.release_workspace()
        assert not workspace._thread_state()[0]
    finally:
        nc.set_workspace_limit(previous)
    x, w, grad_y = (a.astype(np.float64) for a in (x, w, grad_y))
    assert_close(grad_x, reference.conv2d_input(x.shape, w, grad_y, padding=1), np.float32)
    assert_close(grad_w, reference.conv2d_weight(x, w.shape, grad_y, padding=1), np.float32)


def test_buffers_kept_under_a_larger_cap_are_freed_when_it_shrinks(rng):
    x, w = random_array(rng, (4, 32, 40, 40), np.float32), random_array(rng, (32, 32, 3, 3), np.float32)
    workspace.release()
    nc.conv2d(x, w, padding=1, algo="im2col")
    assert sum(b.nbytes for b in workspace._thread_state()[0].values()) > MIB
    previous = nc.set_workspace_limit(MIB)
    try:
        nc.conv2d(x, w, padding=1, algo="im2col")
        assert sum(b.nbytes for b in workspace._thread_state()[0].values()) <= MIB
    finally:
        nc.set_workspace_limit(previous)


# --- threads shared with PyTorch -------------------------------------------------------------------

def test_thread_counts_shared_with_pytorch(rng, monkeypatch):
    torch = pytest.importorskip("torch")
    import numba
    import numbaconv.torch as nct
    seen = []
    original = slices.run
    monkeypatch.setattr(slices, "run", lambda *args: (seen.append(numba.get_num_threads()), original(*args)))
    x = torch.from_numpy(random_array(rng, (2, 3, 8, 8), np.float32)).requires_grad_()
    layer = nct.Conv2d(3, 4, 3, padding=1)
    before = torch.get_num_threads()
    try:
        for threads in (1, max(1, before)):
            torch.set_num_threads(threads)
            seen.clear()
            layer(x).sum().backward()
            nc.conv2d(x.detach().numpy(), layer.weight.detach().numpy())
            assert torch.get_num_threads() == threads           # numbaconv never changes torch's
            assert seen[:-1] == [min(threads, numba.get_num_threads())] * (len(seen) - 1)
            assert seen[-1] == numba.get_num_threads()          # the functional API: Numba's own count
    finally:
        torch.set_num_threads(before)


# --- the device variable, plan files ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["CPU", "Cpu", " cpu "])
def test_the_device_variable_takes_any_case(monkeypatch, name):
    monkeypatch.setenv("NUMBACONV_DEVICE", name)
    assert nc.conv2d(X, W).shape == (1, 2, 3, 3)
    assert nc.conv2d(X, W, device="CPU").shape == (1, 2, 3, 3)


def test_a_plan_file_missing_a_field_is_rewritten(tmp_path, monkeypatch):
    from numbaconv import tuning
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(tmp_path))
    tuning.forget()
    problem = {"x_shape": (1, 2, 6, 6), "w_shape": (2, 2, 3, 3), "padding": 1}
    nc.tune([problem], passes=("forward",))
    path = tuning.plan_cache().path
    content = json.load(open(path))
    for plan in content["plans"].values():
        del plan["ms"]
    json.dump(content, open(path, "w"))
    tuning.forget()
    with pytest.warns(RuntimeWarning, match="ignoring the tuning plan file"):
        winners = nc.tune([problem], passes=("forward",))
    assert winners[0]["ms"] and winners[0]["algo"] in nc.algorithms("cpu")
    assert all("ms" in plan for plan in json.load(open(path))["plans"].values())
    tuning.forget()


# --- where small bugs would hide -------------------------------------------------------------------

def test_the_spec_cache_keeps_ranks_apart(rng):
    x, w = random_array(rng, (1, 2, 6, 6)), random_array(rng, (3, 2, 3, 3))
    assert nc.conv2d(x, w).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError, match="3 dims for a 1-d convolution"):
        nc.conv1d(x, w)
    with pytest.raises(ValueError, match="5 dims for a 3-d convolution"):
        nc.conv3d(x, w)


# The algorithms that promise float64 sums in their weight gradient, with problems they run.
FLOAT64_SUMS = [("direct", (8, 4, 64, 64), (4, 4, 3, 3), 1), ("planar", (8, 4, 64, 64), (4, 4, 3, 3), 1),
                ("depthwise", (8, 4, 64, 64), (4, 1, 3, 3), 4), ("blocked", (8, 4, 64, 64), (4, 1, 3, 3), 4)]


@pytest.mark.parametrize("algo, x_shape, w_shape, groups", FLOAT64_SUMS, ids=[a for a, *_ in FLOAT64_SUMS])
def test_float64_sums_where_promised(rng, algo, x_shape, w_shape, groups):
    """32,768 terms a tap: float32 sums err by about 3e-6 here, float64 sums by about 3e-8."""
    x = random_array(rng, x_shape, np.float32)
    grad_y = random_array(rng, x_shape[:1] + w_shape[:1] + x_shape[2:], np.float32)
    result = nc.conv2d_weight(x, w_shape, grad_y, padding=1, groups=groups, algo=algo)
    truth = reference.conv2d_weight(x.astype(np.float64), w_shape, grad_y.astype(np.float64), padding=1,
                                    groups=groups)
    assert np.linalg.norm(result - truth) / np.linalg.norm(truth) < 1e-6


def _auto(x_shape, w_shape, pass_name="forward", **options):
    spec = ConvSpec.create(x_shape, w_shape, **options).as_3d()
    return dispatch.choose("cpu", "auto", spec, pass_name).__name__.rsplit(".", 1)[1]


@pytest.mark.parametrize("vector_bytes", [32, 64])
def test_auto_takes_depthwise_on_wide_vectors(monkeypatch, vector_bytes):
    """depthwise's problems (3x3, stride 1, "same" padding) from 196 outputs a plane go to depthwise on
    hosts with 512-bit vectors, in every pass; on others, and below 196, the other depthwise rules."""
    monkeypatch.setattr(dispatch, "VECTOR_BYTES", vector_bytes)
    caches = (dispatch._choose, dispatch._choose_as_reference)   # remembered picks of the host's width
    for cache in caches:
        cache.cache_clear()
    try:
        assert dispatch.DEPTHWISE_WIDE_MIN_PLANE_OUTPUTS == 196
        for pass_name in ("forward", "input", "weight"):
            wide = "depthwise" if vector_bytes == 64 else "blocked"
            assert _auto((2, 16, 14, 14), (16, 1, 3, 3), pass_name, padding=1, groups=16) == wide         # 196
            assert _auto((2, 16, 28, 28), (32, 1, 3, 3), pass_name, padding=2, dilation=2, groups=16) == (
                "depthwise" if vector_bytes == 64 else "planar")                                          # 784
            assert _auto((2, 16, 13, 15), (16, 1, 3, 3), pass_name, padding=1, groups=16) == "blocked"    # 195
            assert _auto((2, 16, 16, 16), (16, 1, 3, 3), pass_name, padding=0, groups=16) == "blocked"    # not "same"
    finally:
        for cache in caches:
            cache.cache_clear()


@pytest.mark.parametrize("vector_bytes", [32, 64])
def test_auto_takes_channels_last_for_wider_weight_gradients_on_wide_vectors(monkeypatch, vector_bytes):
    """Rule 2c's wide bound: with 512-bit vectors the weight gradient of overlapping windows with 33 to
    128 filters a group and 192 outputs a sample goes to channels_last, at any stride and rank; the
    input gradient keeps the narrow bound; without them im2col keeps these."""
    monkeypatch.setattr(dispatch, "VECTOR_BYTES", vector_bytes)
    caches = (dispatch._choose, dispatch._choose_as_reference)
    for cache in caches:
        cache.cache_clear()
    try:
        assert (dispatch.CHANNELS_LAST_WIDE_WEIGHT_FILTERS, dispatch.CHANNELS_LAST_MIN_OUTPUTS) == (128, 192)
        wide = "channels_last" if vector_bytes == 64 else "im2col"
        strided = dict(stride=2, padding=1)
        assert _auto((4, 128, 28, 28), (128, 128, 3, 3), "weight", **strided) == wide      # 14 x 14 = 196
        assert _auto((4, 128, 28, 28), (33, 128, 3, 3), "weight", **strided) == wide
        assert _auto((4, 128, 28, 28), (129, 128, 3, 3), "weight", **strided) == "im2col"
        assert _auto((4, 128, 26, 28), (128, 128, 3, 3), "weight", **strided) == "im2col"  # 13 x 14 = 182
        assert _auto((4, 128, 28, 28), (128, 128, 2, 2), "weight", stride=2) == "im2col"   # no overlap
        assert _auto((4, 128, 28, 28), (64, 128, 3, 3), "input", **strided) == "im2col"
        assert _auto((1, 64, 8, 28, 28), (128, 64, 3, 3, 3), "weight", **strided) == wide   # 3-d
        assert _auto((4, 64, 1000), (64, 64, 9), "weight", stride=2, padding=4) == wide     # 1-d
    finally:
        for cache in caches:
            cache.cache_clear()


def test_auto_thresholds_hold_at_their_boundaries():
    """Each rule of numbaconv.dispatch at its threshold and one step below it."""
    # planar's plane rule from P = 4096 on: 8x16 = 128 outputs a plane take planar, 127 do not
    assert dispatch.PLANAR_MIN_PLANE_OUTPUTS == 128 and dispatch.PLANAR_SMALL_PLANE_PRODUCT == 4096
    assert _auto((8, 32, 10, 18), (32, 32, 3, 3), groups=1) == "planar"            # P = 9216, 8x16
    assert _auto((8, 32, 10, 17), (32, 32, 3, 3)) == "polyphase"                   # 8x15 = 120 (rule 2a)
    assert _auto((8, 64, 10, 17), (8, 8, 3, 3), groups=8) == "planar"              # P = 72 < 4096
    assert _auto((2, 32, 6, 6), (14, 32, 3, 3)) == "planar"                        # P = 4032, 16 outputs
    assert _auto((2, 32, 6, 6), (15, 32, 3, 3)) == "polyphase"                     # P = 4320 (rule 2a)
    # planar below P = 32768 (3x3 stride 2 is not planar's: stride-1 problems)
    assert dispatch.PLANAR_PRODUCT_LIMIT == 32768
    assert _auto((1, 64, 20, 20), (56, 64, 3, 3), stride=1, padding=0, dilation=2) == "planar"    # P = 32256
    assert _auto((1, 64, 20, 20), (57, 64, 3, 3), dilation=2) == "channels_last"   # P = 32832 >= 32768 (2b)
    # depthwise problems (those depthwise does not run, or below its 196 outputs a plane; the rule
    # for it: test_auto_takes_depthwise_on_wide_vectors): blocked (from 3/4 full lanes) for the
    # forward and input gradient of 5- and 7-wide kernels at stride 1 and of kernels from 19x19 on;
    # else planar at stride 1 from 784 outputs a plane; else blocked, else depthwise
    assert dispatch.PLANAR_NARROW_GROUP_MIN_OUTPUTS == 784 and dispatch.BLOCKED_MIN_LANE_FILL == 0.75
    assert dispatch.BLOCKED_SLIDING_WIDTHS == (5, 7) and dispatch.BLOCKED_MIN_KERNEL_SIDE == 19
    for pass_name in ("forward", "input", "weight"):
        assert _auto((2, 16, 30, 30), (16, 1, 3, 3), pass_name, groups=16) == "planar"               # 784
        assert _auto((2, 16, 30, 29), (16, 1, 3, 3), pass_name, groups=16) == "blocked"              # 756
        assert _auto((2, 16, 8, 15), (16, 1, 3, 3), pass_name, padding=1, groups=16) == "blocked"    # 8x15 = 120
    assert _auto((2, 8, 28, 27), (8, 1, 3, 3), padding=1, groups=8) == "depthwise"               # 8 of 16 lanes
    assert _auto((2, 16, 64, 64), (16, 1, 3, 3), stride=2, padding=1, groups=16) == "blocked"    # not planar's
    for pass_name in ("forward", "input"):
        for width in (5, 7):
            assert _auto((2, 16, 64, 64), (16, 1, width, width), pass_name, padding=width // 2, groups=16) == "blocked"
        assert _auto((2, 16, 64, 64), (16, 1, 9, 9), pass_name, padding=4, groups=16) == "planar"
        assert _auto((2, 16, 64, 64), (16, 1, 7, 7), pass_name, padding=6, dilation=2, groups=16) == "planar"
        assert _auto((2, 32, 40, 40), (32, 1, 19, 19), pass_name, padding=9, groups=32) == "blocked"
        assert _auto((2, 32, 40, 40), (32, 1, 19, 18), pass_name, padding=9, groups=32) == "planar"  # 18 wide
        assert _auto((2, 23, 40, 40), (23, 1, 19, 19), pass_name, padding=9, groups=23) == "planar"  # 23 of 32 lanes
    assert _auto((2, 16, 64, 64), (16, 1, 7, 7), "weight", padding=3, groups=16) == "planar"
    assert _auto((2, 32, 40, 40), (32, 1, 19, 19), "weight", padding=9, groups=32) == "planar"
    assert _auto((1, 32, 20, 20, 20), (32, 1, 19, 19, 19), padding=9, groups=32) != "blocked"     # 3-d kernel
    assert _auto((2, 16, 20, 20), (16, 1, 7, 7), padding=3, groups=16) == "blocked"
    assert _auto((2, 24, 20, 20), (24, 1, 7, 7), padding=3, groups=24) == "blocked"              # 24 of 32 lanes
    assert _auto((2, 23, 20, 20), (23, 1, 7, 7), padding=3, groups=23) != "blocked"              # 23 of 32
    assert _auto((2, 1, 20, 20), (32, 1, 3, 3), padding=1) != "blocked"                          # groups = 1
    # grouped layers of at most 64 channels a group: the forward and weight gradient of at most 8
    # input and at least 8 output channels a group by polyphase; else planar at stride 1 from 784
    # outputs a plane, else channels_last from 8 channels a group, but im2col for the weight
    # gradient from 32 input channels a group and the input gradient below 192 outputs a sample;
    # 1x1 kernels and wider groups by the other rules
    assert dispatch.GROUPED_MAX_CHANNELS == 64 and dispatch.CHANNELS_LAST_MIN_GROUP_CHANNELS == 8
    assert dispatch.POLYPHASE_GROUPED_MAX_CHANNELS == 8 and dispatch.GROUPED_GEMM_MIN_CHANNELS == 32
    for pass_name in ("forward", "weight"):
        assert _auto((2, 64, 28, 28), (64, 8, 3, 3), pass_name, padding=1, groups=8) == "polyphase"
        assert _auto((2, 64, 28, 28), (64, 8, 3, 3), pass_name, stride=2, padding=1, groups=8) == "polyphase"
        assert _auto((2, 72, 28, 28), (72, 9, 3, 3), pass_name, padding=1, groups=8) == "planar"       # 9 a group
        assert _auto((2, 72, 27, 28), (72, 9, 3, 3), pass_name, padding=1, groups=8) == "channels_last"  # 756
        assert _auto((2, 64, 28, 28), (56, 8, 3, 3), pass_name, padding=1, groups=8) == "planar"       # 7 outputs
    # the stride-1 input gradient by polyphase where its correlation's forward would be (8 filters a
    # group: its input channels), else by the same rules
    assert _auto((2, 64, 27, 28), (64, 8, 3, 3), "input", padding=1, groups=8) == "polyphase"
    assert _auto((2, 64, 28, 28), (64, 8, 3, 3), "input", stride=2, padding=1, groups=8) == "channels_last"
    assert _auto((2, 72, 28, 28), (72, 9, 3, 3), "input", padding=1, groups=8) == "planar"             # 784
    assert _auto((2, 72, 27, 28), (72, 9, 3, 3), "input", padding=1, groups=8) == "channels_last"      # 756
    assert _auto((2, 72, 12, 16), (72, 9, 3, 3), "input", padding=1, groups=8) == "channels_last"      # 192
    assert _auto((2, 72, 11, 17), (72, 9, 3, 3), "input", padding=1, groups=8) == "im2col"             # 187
    assert _auto((2, 128, 14, 14), (128, 32, 3, 3), "weight", padding=1, groups=4) == "im2col"         # 32 a group
    assert _auto((2, 124, 14, 14), (124, 31, 3, 3), "weight", padding=1, groups=4) == "channels_last"  # 31
    assert _auto((2, 64, 14, 14), (64, 64, 3, 3), "input", padding=1, groups=1) != "channels_last"     # dense
    assert _auto((2, 56, 14, 14), (56, 7, 3, 3), padding=1, groups=8) != "channels_last"               # 7 a group
    assert _auto((2, 130, 14, 14), (130, 65, 3, 3), "input", padding=1, groups=2) != "channels_last"   # 65 a group
    assert _auto((2, 64, 14, 14), (64, 16, 1, 1), groups=4) == "im2col"                                # 1x1
    # rule 2b: the forward of layers of overlapping windows with at least 192 outputs a sample and
    # 256 products an input element by channels_last, at any stride; the gradients by the other rules
    assert dispatch.CHANNELS_LAST_MIN_OUTPUTS == 192 and dispatch.CHANNELS_LAST_MIN_PRODUCTS == 256
    strided = dict(stride=2, padding=1)
    assert _auto((1, 64, 32, 32), (114, 64, 3, 3), **strided) == "channels_last"         # 256.5 products, 256 outputs
    assert _auto((1, 64, 32, 32), (113, 64, 3, 3), **strided) == "im2col"                # 254.25
    assert _auto((1, 64, 26, 28), (128, 64, 3, 3), **strided) == "im2col"                # 13 x 14 = 182 outputs
    # disjoint windows of more than one tap: from 192 outputs a sample, up to 2**19 input elements a sample
    assert dispatch.CHANNELS_LAST_DISJOINT_MAX_SAMPLE == 2**19
    assert _auto((1, 64, 32, 32), (256, 64, 2, 2), stride=2) == "channels_last"          # 256 outputs
    assert _auto((1, 64, 26, 28), (256, 64, 2, 2), stride=2) == "im2col"                 # 13 x 14 = 182
    assert _auto((1, 64, 8, 32, 32), (64, 64, 2, 2, 2), stride=2) == "channels_last"     # 2**19 elements
    assert _auto((1, 64, 8, 32, 34), (64, 64, 2, 2, 2), stride=2) == "im2col"            # more
    assert _auto((1, 64, 32, 32), (256, 64, 1, 1), stride=2) == "im2col"                 # one tap
    assert _auto((1, 64, 32, 32), (256, 64, 2, 2), "input", stride=2) == "im2col"
    assert _auto((1, 64, 32, 32), (128, 64, 3, 3), "input", **strided) != "channels_last"
    assert _auto((1, 64, 32, 32), (128, 64, 3, 3), "weight", **strided) == WIDE_WEIGHT         # rule 2c
    assert _auto((1, 48, 16, 16), (64, 48, 5, 5), padding=2) == "channels_last"          # 5x5 at stride 1
    assert _auto((1, 48, 16, 12), (64, 48, 5, 5), padding=2) == "channels_last"          # 16 x 12 = 192
    assert _auto((1, 48, 16, 12), (64, 48, 5, 5), padding=(2, 1)) == "im2col"            # 16 x 10 outputs
    assert _auto((1, 256, 16, 16), (10, 256, 5, 5), padding=2) != "channels_last"        # 250 products
    assert _auto((1, 64, 16, 16), (64, 64, 5, 5), "input", padding=2) != "channels_last"
    # rule 2: kernels of fewer than 9 taps over 8 channels a group or more skip planar
    for pass_name in ("forward", "input", "weight"):
        assert _auto((1, 32, 4000), (32, 32, 3), pass_name, padding=1) != "planar"            # P = 3072
        assert _auto((1, 8, 4000), (16, 8, 3), pass_name, padding=1) != "planar"
        assert _auto((1, 7, 4000), (16, 7, 3), pass_name, padding=1) == "planar"              # 7 channels
        assert _auto((1, 32, 4000), (1, 32, 7), pass_name, padding=3) == "planar"             # one filter
        assert _auto((2, 32, 32, 32), (32, 32, 1, 3), pass_name, padding=(0, 1)) != "planar"  # 1x3
        assert _auto((1, 16, 4000), (16, 16, 9), pass_name, padding=4) == "planar"            # 9 taps
    # rule 1c: every pass of stride-1 layers planar's product would take with more taps than it fuses
    # (2-d kernels), 8 channels a group on both sides and 192 outputs a sample, by channels_last
    for pass_name in ("forward", "input", "weight"):
        assert _auto((2, 16, 16, 16), (16, 16, 5, 5), pass_name, padding=2) == "channels_last"   # P = 6400
        assert _auto((2, 16, 16, 16), (16, 16, 3, 3), pass_name, padding=1) != "channels_last"   # 9 taps
        assert _auto((2, 7, 16, 16), (16, 7, 5, 5), pass_name, padding=2) != "channels_last"     # 7 channels
        assert _auto((2, 16, 16, 16), (16, 16, 5, 5), pass_name, padding=(2, 0)) == "channels_last"  # 16 x 12
        assert _auto((2, 16, 16, 16), (16, 16, 5, 5), pass_name, padding=(1, 0)) == "planar"     # 14 x 12
        assert _auto((2, 16, 256), (16, 16, 25), pass_name, padding=12) != "channels_last"       # 1-d
    # rule 2c: the gradients of overlapping windows with 8 to 32 filters a group by channels_last, the
    # input gradient from 32 input channels a group and 512 outputs in the batch
    assert (dispatch.CHANNELS_LAST_NARROW_FILTERS, dispatch.CHANNELS_LAST_INPUT_MIN_CHANNELS,
            dispatch.CHANNELS_LAST_INPUT_MIN_OUTPUTS, dispatch.CHANNELS_LAST_MIN_GROUP_CHANNELS) == (32, 32, 512, 8)
    narrow = dict(stride=2, padding=1)
    for pass_name in ("input", "weight"):
        assert _auto((4, 128, 28, 28), (32, 128, 3, 3), pass_name, **narrow) == "channels_last"   # 784 outputs
        assert _auto((4, 128, 28, 28), (33, 128, 3, 3), pass_name, **narrow) == (
            WIDE_WEIGHT if pass_name == "weight" else "im2col")
        assert _auto((4, 128, 28, 28), (8, 128, 3, 3), pass_name, **narrow) == "channels_last"
        assert _auto((4, 128, 28, 28), (7, 128, 3, 3), pass_name, **narrow) == "im2col"          # 7 lanes
        assert _auto((4, 128, 28, 28), (32, 128, 2, 2), pass_name, stride=2) == "im2col"         # no overlap
    assert _auto((4, 128, 14, 14), (32, 128, 3, 3), "weight", **narrow) == "channels_last"       # 196 outputs
    assert _auto((2, 128, 32, 32), (32, 128, 3, 3), "input", **narrow) == "channels_last"        # 512
    assert _auto((2, 128, 32, 30), (32, 128, 3, 3), "input", **narrow) == "im2col"               # 480
    assert _auto((4, 31, 28, 28), (32, 31, 3, 3), "input", **narrow) != "channels_last"          # 31 channels
    # dense strided layers go by the other rules in every pass (im2col's input gradient shares out
    # input channels at a batch of one, I6)
    for pass_name in ("forward", "input", "weight"):
        assert _auto((1, 8, 8, 16, 16), (16, 8, 3, 3, 3), pass_name, stride=2, padding=1) != "channels_last"
    # the forward of strided stems: at most 4 input channels a group, a reduction of 256 and more
    # (shorter ones and the weight gradient: polyphase, tests/test_polyphase.py)
    assert dispatch.STEM_MAX_CHANNELS == 4 and dispatch.CHANNELS_LAST_STEM_MIN_REDUCTION == 256
    stem = dict(stride=(1, 2, 2), padding=(1, 3, 3))
    assert _auto((1, 3, 4, 32, 32), (16, 3, 3, 7, 7), **stem) == "channels_last"                 # 3 x 147
    assert _auto((1, 4, 4, 32, 32), (16, 4, 2, 6, 6), **stem) == "channels_last"                 # 4 x 72
    assert _auto((1, 4, 4, 32, 32), (16, 4, 1, 7, 7), **stem) == "polyphase"                     # 4 x 49
    assert _auto((1, 3, 4, 32, 32), (16, 3, 1, 3, 7), **stem) == "polyphase"                     # 3 x 21
    assert _auto((1, 3, 4, 32, 32), (16, 3, 1, 7, 7), **stem) == "polyphase"                     # 3 x 49
    assert _auto((1, 5, 4, 32, 32), (16, 5, 3, 7, 7), **stem) != "channels_last"                 # 5 channels
    assert _auto((1, 3, 4, 32, 32), (16, 3, 3, 7, 7), "weight", **stem) == "polyphase"
    assert _auto((1, 3, 8, 32, 32), (16, 3, 3, 7, 7), padding=(1, 3, 3)) != "channels_last"       # stride 1
    # patch embeddings (stems whose windows do not overlap) by im2col in every pass, from 4x4/4 to
    # 16x16/16; one more tap than the stride's volume is a stem again
    for pass_name in ("forward", "input", "weight"):
        assert _auto((2, 3, 64, 64), (96, 3, 4, 4), pass_name, stride=4) == "im2col"
        assert _auto((2, 3, 64, 64), (96, 3, 16, 16), pass_name, stride=16) == "im2col"
        assert _auto((2, 4, 64), (96, 4, 2), pass_name, stride=2) == "im2col"                  # 1-d, 4 channels
    assert _auto((2, 3, 64, 64), (96, 3, 16, 16), stride=(16, 15)) == "channels_last"          # overlapping
    assert _auto((2, 3, 64, 64), (96, 3, 4, 4), "weight", stride=(4, 3)) == "polyphase"
    assert _auto((2, 5, 64, 64), (96, 5, 4, 4), "weight", stride=4) == "polyphase"              # 5 channels: 2a
    # depth_taps where one depth tap's 2-d problem is Winograd's: 8 slices x 16 tiles = 128 tiles
    assert _auto((1, 8, 8, 16, 16), (8, 8, 3, 3, 3), padding=1) == "depth_taps"
    assert _auto((1, 8, 7, 16, 16), (8, 8, 3, 3, 3), padding=1) != "depth_taps"          # 112 tiles
    # a 1x3x3 kernel over several slices (R(2+1)D's spatial convolutions): one depth tap, every pass
    for pass_name in ("forward", "input", "weight"):
        assert _auto((1, 8, 8, 16, 16), (8, 8, 1, 3, 3), pass_name, padding=(0, 1, 1)) == "depth_taps"
        assert _auto((1, 8, 7, 16, 16), (8, 8, 1, 3, 3), pass_name, padding=(0, 1, 1)) != "depth_taps"
    assert dispatch.REGISTRY["cpu"]["depth_taps"].supports(ConvSpec.create((1, 8, 16, 16), (8, 8, 3, 3)).as_3d())
    assert _auto((1, 7, 8, 16, 16), (8, 7, 3, 3, 3), padding=1) != "depth_taps"          # 7 channels
    assert _auto((1, 8, 8, 32, 32), (8, 8, 3, 3, 3), stride=2, padding=1) != "depth_taps"   # not Winograd's
    # direct below P = 32 for a strided problem, polyphase (at most 32 channels) or im2col at it
    assert dispatch.DIRECT_PRODUCT_LIMIT == 32
    assert _auto((1, 31, 9, 9), (31, 1, 1, 1), stride=2, groups=31) == "blocked"  # depthwise: rule 0
    assert _auto((1, 2, 9, 9), (16, 2, 1, 1), stride=2) == "polyphase"            # P = 32 (rule 2a)
    assert _auto((1, 33, 9, 9), (16, 33, 1, 1), stride=2) == "im2col"             # P = 528, 33 channels
    assert _auto((1, 2, 9, 9), (15, 2, 1, 1), stride=2) == "direct"               # P = 30
    assert _auto((1, 1, 9, 9), (31, 1, 1, 1), stride=2) == "direct"               # P = 31, groups = 1
    # winograd from 8 channels a group and 128 tiles (4x4): 32x64 outputs = 8x16 tiles
    assert dispatch.WINOGRAD_MIN_CHANNELS == 8 and dispatch.WINOGRAD_MIN_TILES == 128
    assert _auto((1, 8, 32, 64), (8, 8, 3, 3), padding=1) == "winograd"
    assert _auto((1, 7, 32, 64), (8, 7, 3, 3), padding=1) != "winograd"
    assert _auto((1, 8, 32, 60), (8, 8, 3, 3), padding=1) != "winograd"           # 8x15 tiles
    # from 96 tiles where groups have at least 32 input and output channels, every pass
    assert dispatch.WINOGRAD_MID_MIN_TILES == 96 and dispatch.WINOGRAD_MID_MIN_CHANNELS == 32
    for pass_name in ("forward", "input", "weight"):
        assert _auto((1, 32, 32, 48), (32, 32, 3, 3), pass_name, padding=1) == "winograd"     # 8x12 tiles
        assert _auto((1, 32, 32, 44), (32, 32, 3, 3), pass_name, padding=1) != "winograd"     # 8x11
        assert _auto((1, 32, 32, 48), (31, 32, 3, 3), pass_name, padding=1) != "winograd"     # 31 filters
        assert _auto((1, 31, 32, 48), (32, 31, 3, 3), pass_name, padding=1) != "winograd"     # 31 channels
    # by filter blocks: 16 tiles with 256 channels reduced, per pass
    assert dispatch.WINOGRAD_WIDE_MIN_TILES == 16 and dispatch.WINOGRAD_WIDE_MIN_CHANNELS == 256
    assert _auto((1, 256, 16, 16), (8, 256, 3, 3), padding=1) == "winograd"       # forward reduces 256
    assert _auto((1, 255, 16, 16), (8, 255, 3, 3), padding=1) != "winograd"
    assert _auto((1, 256, 16, 12), (8, 256, 3, 3), padding=1) != "winograd"       # 4x3 = 12 tiles
    assert _auto((1, 256, 16, 16), (8, 256, 3, 3), "input", padding=1) != "winograd"    # reduces 8


def test_a_one_tap_kernel_that_reads_only_padding(rng):
    """A 1x1x1 kernel at stride 3 with one row of padding on each side of a one-row input: the
    output has the input's size but its one row reads the padding (found by Hypothesis: im2col
    once took it for a pointwise problem and multiplied the input)."""
    options = dict(stride=(1, 3, 1), padding=(0, 1, 0))
    x, w = random_array(rng, (2, 3, 2, 1, 4), np.float32), random_array(rng, (5, 3, 1, 1, 1), np.float32)
    expected = reference.conv3d(x.astype(np.float64), w.astype(np.float64), **options)
    grad_y = random_array(rng, expected.shape, np.float32)
    expected_input = reference.conv3d_input(x.shape, w.astype(np.float64), grad_y.astype(np.float64), **options)
    expected_weight = reference.conv3d_weight(x.astype(np.float64), w.shape, grad_y.astype(np.float64), **options)
    spec = ConvSpec.create(x.shape, w.shape, **options).as_3d()
    for algo in dispatch.runnable("cpu", spec):
        np.testing.assert_array_equal(nc.conv3d(x, w, algo=algo, **options), expected, err_msg=algo)
        np.testing.assert_array_equal(nc.conv3d_input(x.shape, w, grad_y, algo=algo, **options), expected_input,
                                      err_msg=algo)
        np.testing.assert_array_equal(nc.conv3d_weight(x, w.shape, grad_y, algo=algo, **options), expected_weight,
                                      err_msg=algo)
