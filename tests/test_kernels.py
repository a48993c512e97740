"""Every CPU algorithm x pass x dtype against the float64 reference, with poisoned outputs."""
import math

import numpy as np
import pytest

from conftest import assert_close, poisoned, random_array, random_problem
import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.algorithm import read_only
from numbaconv.spec import ConvSpec
from numbaconv.tools.grid import CASES

ALGORITHMS = sorted(dispatch.REGISTRY["cpu"])
DTYPES = [np.float32, np.float64]


def check_passes(module, spec, x, w, grad_y, dtype):
    """Run the three passes of ``module`` into poisoned outputs and compare with the reference."""
    spec3d = spec.as_3d()
    x5, w5, gy5 = (read_only(a.reshape(s)) for a, s in ((x, spec3d.x_shape), (w, spec3d.w_shape),
                                                       (grad_y, spec3d.y_shape)))

    y = poisoned(spec3d.y_shape, dtype)
    module.forward(spec3d, x5, w5, y)
    assert_close(y.reshape(spec.y_shape), reference.forward(spec, x, w), dtype, "forward")

    grad_x = poisoned(spec3d.x_shape, dtype)
    module.backward_input(spec3d, gy5, w5, grad_x)
    assert_close(grad_x.reshape(spec.x_shape), reference.backward_input(spec, grad_y, w), dtype,
                 "input gradient")

    grad_w = poisoned(spec3d.w_shape, dtype)
    module.backward_weight(spec3d, x5, gy5, grad_w)
    assert_close(grad_w.reshape(spec.w_shape), reference.backward_weight(spec, x, grad_y), dtype,
                 "weight gradient")


def _declined(algo, case):
    """The reason ``algo`` gives for not running ``case``, or None if it runs it."""
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)
    return dispatch.REGISTRY["cpu"][algo].supports(spec.as_3d())


SUPPORTED = [(case, algo) for case in CASES for algo in ALGORITHMS if _declined(algo, case) is None]
DECLINED = [(case, algo) for case in CASES for algo in ALGORITHMS if _declined(algo, case) is not None]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case, algo", SUPPORTED, ids=[f"{c[0]}-{a}" for c, a in SUPPORTED])
def test_kernel_passes_match_reference(rng, case, algo, dtype):
    spec, x, w, grad_y = random_problem(rng, case, dtype)
    check_passes(dispatch.REGISTRY["cpu"][algo], spec, x, w, grad_y, dtype)


def test_every_algorithm_is_checked_on_many_cases():
    for algo in ALGORITHMS:
        assert sum(a == algo for _, a in SUPPORTED) >= 6, algo


@pytest.mark.parametrize("case, algo", DECLINED, ids=[f"{c[0]}-{a}" for c, a in DECLINED])
def test_declined_problems_give_a_reason(case, algo):
    reason = _declined(algo, case)
    assert isinstance(reason, str) and reason
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    x, w = np.ones(x_shape), np.ones(w_shape)
    rank = len(x_shape) - 2
    with pytest.raises(ValueError, match=algo):
        getattr(nc, f"conv{rank}d")(x, w, None, stride, padding, dilation, groups, algo=algo)


@pytest.mark.parametrize("run_min_width, wide_most_waste", [(1, 1.5), (10**6, 0), (10**6, math.inf)],
                         ids=["rows-in-runs", "rows-gathered", "forward-over-wide-columns"])
@pytest.mark.parametrize("block_columns", [1, 5, 37])
@pytest.mark.parametrize("algo, case_names", [("im2col", ["2d-stride-gt-kernel", "3d-mixed", "2d-1x1-groups",
                                                          "2d-dilation", "1d-groups-same", "2d-basic",
                                                          "2d-asymmetric-pad", "2d-same-stride2", "1d-long",
                                                          "3d-few-channels-dilated", "2d-3x3-pad-beyond-kernel"])])
def test_column_blocks_cut_anywhere(rng, monkeypatch, algo, case_names, block_columns, run_min_width,
                                    wide_most_waste):
    """Column blocks that split output rows and samples at odd places still give exact results,
    whether im2col unfolds the rows run by run or gathers them, and where the forward of a
    stride-1 problem runs over wide columns."""
    from numbaconv.cpu import im2col, workspace
    monkeypatch.setattr(workspace, "BLOCK_BYTES", 1)
    monkeypatch.setattr(workspace, "MIN_BLOCK_COLUMNS", block_columns)
    monkeypatch.setattr(im2col, "BLOCK_MIN_COLUMNS", block_columns)
    monkeypatch.setattr(im2col, "RUN_MIN_WIDTH", run_min_width)
    monkeypatch.setattr(im2col, "WIDE_MOST_WASTE", wide_most_waste)
    module = dispatch.REGISTRY["cpu"][algo]
    for case in (c for c in CASES if c[0] in case_names):
        spec, x, w, grad_y = random_problem(rng, case, np.float64)
        spec3d = spec.as_3d()
        plan = module._Blocking(spec3d, np.float64, 2)
        assert plan.block <= block_columns and plan.gathers_rows == (run_min_width > 1)
        wide = module._wide_blocking(spec3d, np.float64, 2)
        stride_one = all(s == 1 for s in spec.stride)
        assert (wide is not None) == (wide_most_waste == math.inf and stride_one)
        assert wide is None or wide.block <= block_columns
        check_passes(module, spec, x, w, grad_y, np.float64)


CHANNEL_CHUNK_CASES = ["2d-kernel-equals-input", "2d-kernel-larger-than-input", "2d-batch1-valid",
                       "2d-3x3-wide-few-tiles", "1d-strided-dilated", "2d-groups-16-lanes-strided",
                       "2d-depthwise-tiny-plane", "3d-many-filters-few-outputs"]


@pytest.mark.parametrize("block_bytes", [1, None], ids=["a-row-a-chunk", "default-chunks"])
def test_im2col_channel_chunks(rng, monkeypatch, block_bytes):
    """Forwards and weight gradients with more filters than outputs go by chunks of the column
    matrix's rows (one channel-tap a chunk, cutting channels anywhere, and as many as fit a block)
    and give exact results: batches of one and
    more, groups, stride, dilation, padding, rows gathered and run by run, 1-d to 3-d."""
    from numbaconv.cpu import im2col, workspace
    if block_bytes is not None:
        monkeypatch.setattr(workspace, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(im2col, "CHANNEL_SPLIT_FORWARD_MIN_REDUCTION", 0)   # the grid's reductions are short
    cases = [c for c in CASES if c[0] in CHANNEL_CHUNK_CASES]
    assert len(cases) == len(CHANNEL_CHUNK_CASES)
    for case in cases:
        spec, x, w, grad_y = random_problem(rng, case, np.float64)
        for pass_name in ("forward", "weight"):
            plan = im2col._channel_split(spec.as_3d(), pass_name, np.float64, 2)
            assert plan is not None and (block_bytes is None or plan.chunk == 1), case[0]
        check_passes(dispatch.REGISTRY["cpu"]["im2col"], spec, x, w, grad_y, np.float64)
    assert {im2col._gathers(ConvSpec.create(*c[1:]).as_3d()) for c in cases} == {True, False}
    assert {c[1][0] for c in cases} == {1, 2} and {c[6] > 1 for c in cases} == {True, False}


def test_im2col_workspace_cap_bounds_the_block(monkeypatch):
    from numbaconv.cpu import im2col, workspace
    monkeypatch.setattr(workspace, "WORKSPACE_LIMIT_BYTES", 1)
    spec = ConvSpec.create((4, 8, 9, 9), (8, 8, 3, 3)).as_3d()
    assert im2col._Blocking(spec, np.float64, 2).block == 1


@pytest.mark.parametrize("block_columns", [1, 5])
def test_winograd_tile_blocks_cut_anywhere(rng, monkeypatch, block_columns):
    """The smallest blocks (one or a few rows of tiles, splitting samples) still give exact results."""
    from numbaconv.cpu import workspace
    monkeypatch.setattr(workspace, "BLOCK_BYTES", 1)
    monkeypatch.setattr(workspace, "MIN_BLOCK_COLUMNS", block_columns)
    for case in (c for c in CASES if c[0] in ("2d-3x3-same-edge-tiles", "2d-3x3-asymmetric-groups")):
        spec, x, w, grad_y = random_problem(rng, case, np.float64)
        check_passes(dispatch.REGISTRY["cpu"]["winograd"], spec, x, w, grad_y, np.float64)


def test_winograd_filter_blocks_cover_every_channel(rng, monkeypatch):
    """Few tiles for many filters: every pass goes filter block by filter block (blocks of 8
    output channels here, the last one short) and still gives exact results."""
    from numbaconv.cpu import winograd, workspace
    monkeypatch.setattr(workspace, "BLOCK_BYTES", 1)
    blocked = []
    for name, result in (("_winograd_filter_blocks", 3), ("_weight_by_filter_blocks", 2)):   # y's or grad_w's place
        by_blocks = getattr(winograd, name)
        monkeypatch.setattr(winograd, name, lambda *args, by_blocks=by_blocks, name=name, result=result: (
            blocked.append((name, args[result].shape)), by_blocks(*args)))
    case = next(c for c in CASES if c[0] == "2d-3x3-wide-few-tiles")
    spec, x, w, grad_y = random_problem(rng, case, np.float64)
    check_passes(dispatch.REGISTRY["cpu"]["winograd"], spec, x, w, grad_y, np.float64)
    assert blocked == [("_winograd_filter_blocks", spec.y_shape), ("_winograd_filter_blocks", spec.x_shape),
                       ("_weight_by_filter_blocks", spec.as_3d().w_shape)]
    assert winograd._filter_block_outs(spec.in_channels, 8) == 8


def test_winograd_weight_gradient_adds_up_every_thread(rng):
    """Many tiles, so every thread sums its blocks into a partial of its own: every partial
    reaches the result, added in thread order, so repeated runs give the same bits."""
    from numbaconv.cpu import winograd
    spec = ConvSpec.create((4, 16, 24, 24), (16, 16, 3, 3), padding=1)
    tiling = winograd.Tiling(16, 16, 24, 24, np.float64, 36 * 16 * 16, weight_pass=True)
    assert not winograd._weight_by_filter_blocks_pays(tiling, 1, spec.batch)
    x = rng.standard_normal(spec.x_shape)
    grad_y = rng.standard_normal(spec.y_shape)
    expected = reference.backward_weight(spec, x, grad_y)
    results = []
    for _ in range(3):
        grad_w = poisoned(spec.w_shape, np.float64)
        dispatch.REGISTRY["cpu"]["winograd"].backward_weight(
            spec.as_3d(), read_only(x[:, :, None]), read_only(grad_y[:, :, None]), grad_w.reshape(spec.as_3d().w_shape))
        assert_close(grad_w, expected, np.float64, "weight gradient")
        results.append(grad_w)
    assert all(np.array_equal(result, results[0]) for result in results)


def test_planar_on_one_thread(rng):
    """One thread takes a sample's output channels in one block: the two-channels-at-a-time
    paths and the odd channel left over, which more threads reach only on some cases."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for case in (c for c, a in SUPPORTED if a == "planar"):
            spec, x, w, grad_y = random_problem(rng, case, np.float64)
            check_passes(dispatch.REGISTRY["cpu"]["planar"], spec, x, w, grad_y, np.float64)
    finally:
        numba.set_num_threads(previous)


@pytest.mark.parametrize("case_name", ["2d-groups-16-lanes", "2d-groups-16-lanes-strided", "3d-strided",
                                       "2d-3x3-many-tiles"])
def test_channels_last_slabs_of_one_sample(rng, monkeypatch, case_name):
    """With room for one sample a slab, every sample is staged by its own kernel calls (and the
    weight gradient's sums run on across them); the default stages whole small batches at once."""
    from numbaconv.cpu import channels_last
    monkeypatch.setattr(channels_last, "SLAB_BYTES", 1)
    case = next(c for c in CASES if c[0] == case_name)
    spec, x, w, grad_y = random_problem(rng, case, np.float32)
    check_passes(channels_last, spec, x, w, grad_y, np.float32)


@pytest.mark.parametrize("x_shape, w_shape, arguments", [
    ((2, 10, 9, 11), (64, 5, 3, 3), dict(padding=1, groups=2)),             # 32 lanes, 2 blocks, 15 sources
    ((1, 12, 7, 8), (96, 4, 3, 2), dict(stride=2, padding=(1, 0), groups=3)),   # 32 lanes, one block, 8 sources
    ((2, 7, 13), (48, 7, 3), dict(padding=2, dilation=2)),                  # 16 lanes, 3 blocks, 21 sources
    ((1, 6, 3, 6, 7), (16, 6, 2, 3, 3), dict(stride=(1, 2, 1))),            # 16 lanes, 18 sources, 3-d
])
def test_channels_last_weight_geometries(rng, x_shape, w_shape, arguments):
    """The weight gradient's wide tiles (32 lanes of output channels, or 16 lanes over twelve
    sources: AVX-512 in float32) over partial tiles of sources, several blocks a group, 1-d to 3-d,
    and whatever geometry the host gives; float64 keeps the narrow tiles."""
    from numbaconv.cpu import channels_last
    for dtype in DTYPES:
        spec = ConvSpec.create(x_shape, w_shape, **arguments)
        x, w, grad_y = (random_array(rng, shape, dtype) for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
        check_passes(channels_last, spec, x, w, grad_y, dtype)


def assert_same_non_finite(result, expected):
    """NaN and Inf where ``expected`` has them, the rest close to it."""
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(result), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(result[finite], expected[finite], np.float64, "finite entries")


@pytest.mark.parametrize("w_shape, groups", [((4, 1, 3, 3), 4), ((6, 1, 3, 2), 1)], ids=["grid", "columns"])
def test_planar_weight_gradient_puts_nan_and_inf_where_the_reference_does(rng, w_shape, groups):
    """An Inf in the input reaches only the taps that read it (not those that meet it at the
    grid entries that are not outputs), and a NaN in grad_y only its channel's taps."""
    x = random_array(rng, (2, 4 if groups == 4 else 1, 7, 8))
    spec = ConvSpec.create(x.shape, w_shape, 1, ((1, 0), (0, 1)), 1, groups)
    grad_y = random_array(rng, spec.y_shape)
    x[0, 0, 3, 7] = np.inf
    grad_y[1, 1, 0, 0] = np.nan
    spec3d = spec.as_3d()
    grad_w = poisoned(spec3d.w_shape, np.float64)
    dispatch.REGISTRY["cpu"]["planar"].backward_weight(spec3d, read_only(x.reshape(spec3d.x_shape)),
                                                     read_only(grad_y.reshape(spec3d.y_shape)), grad_w)
    expected = reference.backward_weight(spec, x, grad_y)
    assert_same_non_finite(grad_w.reshape(spec.w_shape), expected)


@pytest.mark.parametrize("pass_name", ["forward", "input"])
def test_depthwise_keeps_nan_and_inf_in_their_rows(rng, pass_name):
    """Taps outside a plane read the neighbouring rows (left and right columns) or planes (rows
    above and below): a NaN or Inf read there must not reach the outputs (dropped by a select)."""
    spec = ConvSpec.create((2, 3, 6, 7), (6, 1, 3, 3), 1, 1, 1, 3)
    source = random_array(rng, spec.x_shape if pass_name == "forward" else spec.y_shape)
    w = random_array(rng, spec.w_shape)
    source[0, 0, 2, 0] = np.inf      # first column: the row above's last output reads it wrapped
    source[1, 1, 4, 6] = np.nan      # last column: the row below's first output reads it wrapped
    source[1, 2, 0, 6] = -np.inf     # first row: the previous plane's last row reads it from below
    spec3d = spec.as_3d()
    module = dispatch.REGISTRY["cpu"]["depthwise"]
    if pass_name == "forward":
        result = poisoned(spec3d.y_shape, np.float64)
        module.forward(spec3d, read_only(source.reshape(spec3d.x_shape)), read_only(w.reshape(spec3d.w_shape)), result)
        expected = reference.forward(spec, source, w)
    else:
        result = poisoned(spec3d.x_shape, np.float64)
        module.backward_input(spec3d, read_only(source.reshape(spec3d.y_shape)), read_only(w.reshape(spec3d.w_shape)),
                              result)
        expected = reference.backward_input(spec, source, w)
    assert_same_non_finite(result.reshape(expected.shape), expected)


def test_depthwise_weight_gradient_puts_nan_and_inf_where_the_reference_does(rng):
    """The inputs outside a plane count as the padding's zeros: a NaN in grad_y at a border reaches
    the taps that read the padding there (NaN * 0), as in the reference; an Inf in the input only
    the taps that read it; the neighbouring rows and planes never."""
    spec = ConvSpec.create((2, 3, 6, 7), (6, 1, 3, 3), 1, 1, 1, 3)
    x, grad_y = random_array(rng, spec.x_shape), random_array(rng, spec.y_shape)
    x[0, 0, 2, 0] = np.inf
    x[1, 2, 0, 6] = -np.inf
    grad_y[1, 1, 0, 0] = np.nan
    spec3d = spec.as_3d()
    grad_w = poisoned(spec3d.w_shape, np.float64)
    dispatch.REGISTRY["cpu"]["depthwise"].backward_weight(spec3d, read_only(x.reshape(spec3d.x_shape)),
                                                         read_only(grad_y.reshape(spec3d.y_shape)), grad_w)
    expected = reference.backward_weight(spec, x, grad_y)
    assert_same_non_finite(grad_w.reshape(spec.w_shape), expected)


@pytest.mark.parametrize("slab", [1, 2, None])
@pytest.mark.parametrize("case", [
    ("3d-strided-padded", (2, 3, 7, 5, 6), (4, 3, 3, 2, 3), (2, 1, 1), ((2, 1), (0, 1), (1, 1)), (1, 1, 1), 1),
    ("3d-last-slice-unread", (2, 2, 7, 4, 5), (3, 2, 2, 3, 3), (2, 1, 1), (0, 1, 1), 1, 1),
    ("3d-dilated-grouped", (1, 4, 9, 4, 5), (4, 2, 3, 3, 2), 1, 1, (2, 1, 1), 2),
    ("3d-slab-in-padding", (1, 2, 2, 4, 4), (3, 2, 2, 3, 3), 1, ((3, 3), (1, 1), (1, 1)), 1, 1),
], ids=lambda case: case[0] if isinstance(case, tuple) else case)
def test_depth_taps_in_slabs_of_output_slices(rng, monkeypatch, case, slab):
    """Slabs of one or two output slices (as where the copies would pass half the workspace
    limit) and one slab of all (None): the input gradients of overlapping slabs add up, the
    weight gradients sum, a slab that reads only padding gives zeros, input slices that no
    window reads get zero gradient."""
    from numbaconv.cpu import depth_taps
    if slab is not None:
        monkeypatch.setattr(depth_taps, "_slab_slices", lambda spec, itemsize: slab)
    spec, x, w, grad_y = random_problem(rng, case, np.float64)
    assert (len(list(depth_taps._slabs(spec.as_3d(), 8))) > 1) == (slab is not None)
    check_passes(dispatch.REGISTRY["cpu"]["depth_taps"], spec, x, w, grad_y, np.float64)


def test_depth_taps_slabs_keep_the_copies_under_half_the_limit(monkeypatch):
    from numbaconv.cpu import depth_taps, workspace
    spec = ConvSpec.create((1, 8, 64, 64, 64), (8, 8, 3, 3, 3), padding=1).as_3d()
    monkeypatch.setattr(workspace, "WORKSPACE_LIMIT_BYTES", 16 * 2**20)
    count = depth_taps._slab_slices(spec, 4)
    assert 1 < count < spec.out_size[0]
    assert 2 * depth_taps._held_bytes(spec, 4, count) <= 16 * 2**20 < 2 * depth_taps._held_bytes(spec, 4, count + 1)
    assert depth_taps.supports(spec) is None
