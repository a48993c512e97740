"""The public functions: against the reference and PyTorch, on edge cases, and their contracts."""
import numpy as np
import pytest

from conftest import WIDE_WEIGHT, assert_close, random_array
import numbaconv as nc
from numbaconv.tools.grid import CASE_IDS, CASES

DTYPES = [np.float32, np.float64]


def _family(rank):
    return {name: getattr(nc, f"{name.format(rank)}") for name in
            ("conv{}d", "conv{}d_input", "conv{}d_weight", "conv{}d_backward", "conv_transpose{}d")}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_public_functions_match_reference(rng, case, dtype):
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    rank = len(x_shape) - 2
    ours, ref = (getattr(m, f"conv{rank}d") for m in (nc, nc.reference))
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    bias = random_array(rng, w_shape[0], dtype)
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    y = ours(x, w, bias, **options)
    assert y.dtype == dtype
    assert_close(y, ref(x, w, bias, **options), dtype, "forward")

    grad_y = random_array(rng, y.shape, dtype)
    expected = getattr(nc.reference, f"conv{rank}d_backward")(grad_y, x, w, **options)
    gradients = getattr(nc, f"conv{rank}d_backward")(grad_y, x, w, **options)
    for name, actual, wanted in zip(("input", "weight", "bias"), gradients, expected):
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype, f"{name} gradient")
    assert_close(getattr(nc, f"conv{rank}d_input")(x.shape, w, grad_y, **options), expected[0], dtype,
                 "conv_input")
    assert_close(getattr(nc, f"conv{rank}d_weight")(x, w.shape, grad_y, **options), expected[1], dtype,
                 "conv_weight")
    assert getattr(nc, f"conv{rank}d_backward")(grad_y, x, w, **options, bias=False)[2] is None


TRANSPOSE_CASES = [
    # (x_shape, w_shape, stride, padding, output_padding, groups, dilation)
    ((2, 4, 5, 6), (4, 3, 3, 3), 2, 1, 1, 1, 1),
    ((1, 6, 4, 3), (6, 2, 2, 3), (3, 1), ((1, 0), (0, 2)), (2, 0), 2, 1),
    ((2, 3, 7), (3, 2, 3), 1, 0, 0, 1, 2),
    ((2, 4, 3, 4, 2), (4, 1, 2, 3, 2), (2, 1, 2), 1, (1, 0, 0), 4, 1),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose_matches_reference(rng, case, dtype):
    x_shape, w_shape, stride, padding, output_padding, groups, dilation = case
    rank = len(x_shape) - 2
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    bias = random_array(rng, w_shape[1] * groups, dtype)
    args = (x, w, bias, stride, padding, output_padding, groups, dilation)
    y = getattr(nc, f"conv_transpose{rank}d")(*args)
    assert y.dtype == dtype
    assert_close(y, getattr(nc.reference, f"conv_transpose{rank}d")(*args), dtype, "conv_transpose")


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_empty_batch(rank):
    spatial = (5, 4, 3)[:rank]
    x = np.zeros((0, 4, *spatial))
    w = np.ones((6, 2, *(2,) * rank))
    family = _family(rank)
    y = family["conv{}d"](x, w, np.ones(6), groups=2, padding=1)
    assert y.shape == (0, 6, *(n + 1 for n in spatial))
    grad_x, grad_w, grad_b = family["conv{}d_backward"](y, x, w, groups=2, padding=1)
    assert grad_x.shape == x.shape
    np.testing.assert_array_equal(grad_w, np.zeros(w.shape))
    np.testing.assert_array_equal(grad_b, np.zeros(6))
    assert family["conv_transpose{}d"](np.zeros((0, 6, *spatial)), w.reshape(6, 2, *w.shape[2:]),
                                       groups=2).shape[0] == 0


def test_non_contiguous_inputs_and_inputs_unchanged(rng):
    base_x = random_array(rng, (3, 5, 10, 12))
    x = base_x[::2, 1:4, ::2, :].transpose(0, 1, 3, 2)       # strided and transposed
    w = np.asfortranarray(random_array(rng, (4, 3, 3, 2)))
    bias = random_array(rng, 8)[::2]
    snapshots = [a.copy() for a in (x, w, bias)]
    y = nc.conv2d(x, w, bias, padding=1)
    assert_close(y, nc.reference.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w),
                                        np.ascontiguousarray(bias), padding=1), np.float64, "forward")
    grad_y = random_array(rng, y.shape + (2,))[..., 0]          # non-contiguous gradient
    gradients = nc.conv2d_backward(grad_y, x, w, padding=1)
    expected = nc.reference.conv2d_backward(np.ascontiguousarray(grad_y), x, w, padding=1)
    for actual, wanted in zip(gradients, expected):
        assert_close(actual, wanted, np.float64, "gradient")
    assert_close(nc.conv_transpose2d(y, w, padding=1), nc.reference.conv_transpose2d(y, w, padding=1),
                 np.float64, "conv_transpose")
    for snapshot, array in zip(snapshots, (x, w, bias)):
        np.testing.assert_array_equal(snapshot, array)


def test_nan_and_inf_propagate():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 3, 3] = np.inf
    y = nc.conv2d(x, np.ones((1, 1, 2, 2)))
    assert np.isnan(y[0, 0, 0, 0]) and np.isinf(y[0, 0, 2, 2]) and y[0, 0, 1, 1] == 4


def test_devices_and_algorithms():
    # tests/conftest.py turns the CUDA simulator on when there is no real GPU
    assert nc.devices() == ("cpu", "cuda")
    assert set(nc.algorithms("cpu")) == {"blocked", "channels_last", "depth_taps", "depthwise", "direct", "fft", "im2col",
                                         "planar", "polyphase", "winograd", "winograd1d"}
    with pytest.raises(ValueError, match="unknown device"):
        nc.algorithms("tpu")


def test_every_algorithm_through_the_public_api(rng):
    from numbaconv import dispatch
    from numbaconv.spec import ConvSpec
    ran = set()
    for x_shape, w_shape, groups in (((2, 4, 6, 7), (6, 2, 3, 3), 2), ((2, 4, 6, 7), (8, 1, 3, 3), 4),
                                     ((1, 4, 3, 6, 7), (6, 2, 3, 3, 3), 2), ((2, 4, 11), (6, 2, 3), 2)):
        x, w = random_array(rng, x_shape), random_array(rng, w_shape)
        conv = getattr(nc, f"conv{len(x_shape) - 2}d")
        expected = getattr(nc.reference, f"conv{len(x_shape) - 2}d")(x, w, padding="same", groups=groups)
        spec = ConvSpec.create(x_shape, w_shape, padding="same", groups=groups).as_3d()
        for algo in ("auto", *dispatch.runnable("cpu", spec)):
            y = conv(x, w, padding="same", groups=groups, algo=algo, device="cpu")
            assert_close(y, expected, np.float64, algo)
            ran.add(algo)
    assert ran == {"auto", *nc.algorithms("cpu")}


def test_auto_rule(monkeypatch):
    from numbaconv import dispatch
    from numbaconv.spec import ConvSpec
    picks = [
        ("blocked", ConvSpec.create((1, 16, 9, 9), (16, 1, 3, 3), groups=16)),   # depthwise
        ("planar", ConvSpec.create((2, 4, 9), (4, 1, 1), groups=4)),          # depthwise 1x1, 4 of 16 lanes
        ("blocked", ConvSpec.create((1, 16, 9, 9), (16, 1, 3, 3), stride=2, groups=16)),
        ("planar", ConvSpec.create((1, 16, 32, 32), (16, 16, 3, 3), padding=1)),
        ("channels_last", ConvSpec.create((8, 20, 28, 28), (20, 20, 5, 5))),  # P = 10000, 25 taps (rule 1c)
        ("winograd", ConvSpec.create((64, 32, 26, 26), (64, 32, 3, 3))),     # P = 18432, 3136 tiles
        ("planar", ConvSpec.create((1, 8, 7, 7), (8, 8, 7, 7), padding=3)),
        ("winograd", ConvSpec.create((1, 8, 56, 56), (8, 8, 3, 3), padding=1)),   # 196 tiles
        ("im2col", ConvSpec.create((8, 128, 56, 56), (64, 128, 1, 1))),       # one tap: pointwise views
        ("winograd", ConvSpec.create((8, 128, 28, 28), (128, 128, 3, 3), padding=1)),
        ("winograd", ConvSpec.create((8, 64, 56, 56), (32, 64, 3, 3), padding=1)),   # P = 18432, many tiles
        ("im2col", ConvSpec.create((1, 64, 7, 7), (64, 64, 7, 7), padding=3)),   # large kernel, small image
    ]
    for algo, spec in picks:
        for pass_name in ("forward", "input", "weight"):
            assert dispatch.choose("cpu", "auto", spec.as_3d(), pass_name) is dispatch.REGISTRY["cpu"][algo], algo
    # too few tiles for winograd (P = 36864 and 147456, 32 tiles): the forward by channels_last (rule
    # 2b: overlapping windows, 196 outputs a sample), the input gradient by im2col, the weight
    # gradient by rule 2c's wide bound
    for spec in (ConvSpec.create((2, 64, 14, 14), (64, 64, 3, 3), padding=1),
                 ConvSpec.create((2, 128, 14, 14), (128, 128, 3, 3), padding=1)):
        picked = [dispatch.choose("cpu", "auto", spec.as_3d(), p).__name__.rsplit(".", 1)[1] for p in ("forward", "input", "weight")]
        assert picked == ["channels_last", "im2col", WIDE_WEIGHT]
    # stems of at most 4 channels: polyphase's forward (a reduction below 64) and weight gradient;
    # their input gradient by the rules after it (planar: P = 500 on 8x8 planes; too few channels
    # for winograd)
    for spec in (ConvSpec.create((64, 1, 12, 12), (20, 1, 5, 5)), ConvSpec.create((8, 3, 56, 56), (64, 3, 3, 3), padding=1)):
        picked = [dispatch.choose("cpu", "auto", spec.as_3d(), p).__name__.rsplit(".", 1)[1] for p in ("forward", "input", "weight")]
        assert picked == ["polyphase", "planar", "polyphase"]
    # at most 32 input channels a group where im2col would build columns: polyphase's forward and
    # weight gradient, and its input gradient at stride 1 (the correlation's forward: 20 filters);
    # im2col's at stride 2 (P = 10000 on 10x10 planes; a strided layer)
    for spec, input_algo in ((ConvSpec.create((64, 20, 14, 14), (20, 20, 5, 5)), "polyphase"),
                             (ConvSpec.create((1, 8, 56, 56), (8, 8, 3, 3), stride=2, padding=1), "im2col")):
        picked = [dispatch.choose("cpu", "auto", spec.as_3d(), p).__name__.rsplit(".", 1)[1] for p in ("forward", "input", "weight")]
        assert picked == ["polyphase", input_algo, "polyphase"]
    # depthwise (with a channel multiplier, dilated, strided; problems depthwise does not run, or
    # below its 196 outputs a plane on 512-bit hosts): blocked for the forward and input gradient of
    # 5- and 7-wide kernels at stride 1; planar from 784 outputs a plane at stride 1; else blocked
    # where its lanes are full enough, else depthwise; one-channel stems by the stem rules
    for depthwise, picks in ((ConvSpec.create((8, 16, 30, 30), (32, 1, 3, 3), groups=16),
                              ("planar",) * 3),
                             (ConvSpec.create((8, 16, 28, 28), (32, 1, 5, 5), padding=2, groups=16),
                              ("blocked", "blocked", "planar")),
                             (ConvSpec.create((8, 16, 13, 14), (32, 1, 3, 3), padding=1, groups=16),
                              ("blocked",) * 3),
                             (ConvSpec.create((8, 8, 14, 14), (8, 1, 3, 3), padding=1, groups=8),
                              ("depthwise",) * 3),   # 8 of blocked's 16 lanes
                             (ConvSpec.create((2, 16, 9, 9), (16, 1, 3, 3), padding=2, dilation=2, groups=16),
                              ("blocked",) * 3),
                             (ConvSpec.create((2, 16, 28, 28), (16, 1, 5, 5), stride=2, padding=2, groups=16),
                              ("blocked",) * 3),
                             (ConvSpec.create((64, 1, 28, 28), (32, 1, 3, 3)), ("polyphase", "planar", "polyphase"))):
        for pass_name, algo in zip(("forward", "input", "weight"), picks):
            assert dispatch.choose("cpu", "auto", depthwise.as_3d(), pass_name) is dispatch.REGISTRY["cpu"][algo], \
                (depthwise, pass_name)
    # 32 tiles: Winograd by filter blocks for the passes that reduce over 256 channels (the weight
    # gradient: over both)
    for channels, out_channels, expected in ((512, 512, ("winograd", "winograd", "winograd")),
                                             (256, 128, ("winograd", "im2col", "im2col"))):
        wide = ConvSpec.create((8, channels, 7, 7), (out_channels, channels, 3, 3), padding=1).as_3d()
        picked = [dispatch.choose("cpu", "auto", wide, pass_name) for pass_name in ("forward", "input", "weight")]
        assert picked == [dispatch.REGISTRY["cpu"][algo] for algo in expected]
    functional_runs = []
    for algo in ("winograd", "im2col", "channels_last"):
        module = dispatch.REGISTRY["cpu"][algo]
        for pass_name in ("forward", "backward_input", "backward_weight"):
            original = getattr(module, pass_name)
            monkeypatch.setattr(module, pass_name, lambda *args, original=original, label=f"{algo}.{pass_name}":
                                (functional_runs.append(label), original(*args))[1])
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 256, 16, 16)), rng.standard_normal((128, 256, 3, 3))   # 32 tiles
    y = nc.conv2d(x, w, padding=1)
    nc.conv2d_backward(rng.standard_normal(y.shape), x, w, padding=1)
    assert functional_runs == ["winograd.forward", "im2col.backward_input", f"{WIDE_WEIGHT}.backward_weight"]


def test_bad_device_names_are_refused(monkeypatch):
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    assert nc.conv2d(x, w, device="cpu").shape == (1, 1, 2, 2)
    monkeypatch.setenv("NUMBACONV_DEVICE", "gpu0")
    with pytest.raises(ValueError, match="NUMBACONV_DEVICE"):
        nc.conv2d(x, w)


def test_unreadable_gpu_arrays_are_refused_clearly():
    class FakeGpuArray:
        shape, dtype = (1, 1, 3, 3), np.dtype(np.float32)
        __cuda_array_interface__ = {}

    with pytest.raises(TypeError, match="FakeGpuArray"):
        nc.conv2d(FakeGpuArray(), np.ones((1, 1, 2, 2), np.float32))


def test_docstrings_and_names():
    for rank in (1, 2, 3):
        for name, function in _family(rank).items():
            assert function.__name__ == name.format(rank)
            assert "stride" in function.__doc__ and "padding" in function.__doc__



def test_concurrent_calls_agree_and_restore_blas_threads(rng):
    """Calls from several of the caller's threads give the same results and leave BLAS as it was."""
    from concurrent.futures import ThreadPoolExecutor
    from threadpoolctl import threadpool_info
    before = [(info["filepath"], info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
    x, w = random_array(rng, (4, 8, 12, 12)), random_array(rng, (8, 8, 3, 3))
    expected = nc.reference.conv2d(x, w, padding=1)
    with ThreadPoolExecutor(4) as callers:
        results = list(callers.map(lambda algo: nc.conv2d(x, w, padding=1, algo=algo),
                                   ["planar", "im2col", "winograd"] * 4))
    for y in results:
        assert_close(y, expected, np.float64, "concurrent call")
    after = [(info["filepath"], info["num_threads"]) for info in threadpool_info() if info["user_api"] == "blas"]
    assert after == before


def test_blas_held_to_one_thread_inside_calls_and_restored_after():
    """Inside single_threaded_blas every BLAS library runs one thread, nested holds keep it so, and
    the last one out restores each library's own count."""
    from threadpoolctl import threadpool_info, threadpool_limits
    from numbaconv.cpu.threads import single_threaded_blas

    def counts():
        return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        before = counts()
        assert before and all(count == 2 for count in before)
        with single_threaded_blas():
            assert all(count == 1 for count in counts())
            with single_threaded_blas():
                assert all(count == 1 for count in counts())
            assert all(count == 1 for count in counts())
        assert counts() == before


def test_remembered_specs_do_not_hide_bad_arguments(rng):
    """The spec cache takes only plain ints and tuples: a float stride after an equal int one still fails."""
    x, w = random_array(rng, (1, 2, 6, 6)), random_array(rng, (3, 2, 3, 3))
    expected = nc.reference.conv2d(x, w, stride=2, padding=1)
    assert_close(nc.conv2d(x, w, stride=2, padding=1), expected, np.float64)
    with pytest.raises(TypeError, match="stride"):
        nc.conv2d(x, w, stride=2.0, padding=1)
    with pytest.raises(TypeError, match="stride"):
        nc.conv2d(x, w, stride=True, padding=1)
    with pytest.raises(TypeError, match="stride"):
        nc.conv2d(x, w, stride=(2, 2.0), padding=1)
    # lists and NumPy integers are validated on every call
    assert_close(nc.conv2d(x, w, stride=np.int64(2), padding=(np.int32(1), 1)), expected, np.float64)
    assert_close(nc.conv2d(x, w, stride=[2, 2], padding=[[1, 1], [1, 1]]), expected, np.float64)
    with pytest.raises(TypeError, match="stride"):
        nc.conv2d(x, w, stride=[2, 2.0], padding=1)
