"""The FFT algorithm beyond the grid (tests/test_kernels.py runs it there): large kernels, several
blocks and chunks, the cyclic single block, both product paths, its refusals, NaN and Inf, and
where ``auto`` takes it."""
import numpy as np
import pytest

from conftest import assert_close, poisoned, random_array, random_problem
import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.algorithm import read_only
from numbaconv.cpu import fft, workspace
from numbaconv.spec import ConvSpec
from test_kernels import check_passes

MODULE = dispatch.REGISTRY["cpu"]["fft"]

# (name, x_shape, w_shape, stride, padding, dilation, groups), small enough for CI
LARGE_KERNELS = [
    ("1d-long-filter-blocks", (2, 2, 700), (3, 2, 65), 1, 32, 1, 1),
    ("1d-grouped-asymmetric", (2, 6, 90), (6, 2, 40), 1, ((25, 3),), 1, 3),
    ("2d-15x15", (2, 4, 40, 36), (5, 4, 15, 15), 1, 7, 1, 1),
    ("2d-depthwise-31x31", (1, 3, 20, 24), (3, 1, 31, 31), 1, 15, 1, 3),
    ("2d-pad-beyond-kernel", (1, 2, 9, 7), (3, 2, 11, 5), 1, ((12, 1), (0, 6)), 1, 1),
    ("3d-7x7x7", (1, 3, 12, 10, 11), (2, 3, 7, 7, 7), 1, 3, 1, 1),
]
IDS = [case[0] for case in LARGE_KERNELS]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", LARGE_KERNELS, ids=IDS)
def test_large_kernels_match_reference(rng, case, dtype):
    spec, x, w, grad_y = random_problem(rng, case, dtype)
    assert MODULE.supports(spec.as_3d()) is None
    check_passes(MODULE, spec, x, w, grad_y, dtype)


def test_plans_use_several_blocks_and_the_cyclic_single_block():
    """The cases above reach both kinds of plan: several blocks along a dim (overlap-save), and a
    single block shorter than its segment (the wrap onto the padding's zeros)."""
    several = cyclic = False
    for _, x_shape, w_shape, stride, padding, dilation, groups in LARGE_KERNELS:
        spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups).as_3d()
        for pass_name in ("forward", "input"):
            for axis, k, results in zip(fft._plan(spec, pass_name, 8).axes, spec.kernel_size,
                                        spec.in_size if pass_name == "input" else spec.out_size):
                assert axis.length >= k and axis.length >= min(axis.block, results)
                several |= axis.blocks > 1
                cyclic |= axis.blocks == 1 and axis.length < results + k - 1
    assert several and cyclic


@pytest.mark.parametrize("use_blas", [True, False], ids=["blas", "loops"])
def test_one_block_a_chunk_and_both_product_paths(rng, monkeypatch, use_blas):
    """Chunks of one block (the weight gradient adds the chunks' sums in order) and the products
    through BLAS or through the Numba loops give the same results as the reference."""
    monkeypatch.setattr(fft, "CHUNK_BYTES", 1)
    monkeypatch.setattr(fft, "PRODUCT_ROWS", 1)
    monkeypatch.setattr(fft, "GEMM_MIN_ENTRIES", 0 if use_blas else 10**9)
    monkeypatch.setattr(fft, "BLAS_MIN_REDUCTION", 0 if use_blas else 10**9)
    for case in (LARGE_KERNELS[0], LARGE_KERNELS[1], LARGE_KERNELS[2]):
        spec, x, w, grad_y = random_problem(rng, case, np.float64)
        assert fft._plan_for(spec.as_3d(), "weight", 8, workspace.workspace_limit(), 1).chunk == 1
        fft._plan_for.cache_clear()
        check_passes(MODULE, spec, x, w, grad_y, np.float64)
    fft._plan_for.cache_clear()


def test_same_bits_every_call(rng):
    spec, x, w, grad_y = random_problem(rng, LARGE_KERNELS[2], np.float32)
    results = [nc.conv2d_backward(grad_y, x, w, padding=7, algo="fft") for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*results))


def test_transform_sizes_are_scipys_fast_lengths():
    import scipy.fft
    targets = list(range(1, 3000)) + [4097, 10007, 65537, 999983, 2 ** 20 + 1]
    assert [fft._fast_length(n) for n in targets] == [scipy.fft.next_fast_len(n, real=True) for n in targets]


@pytest.mark.parametrize("stride, dilation", [(2, 1), (1, 2)])
def test_declines_stride_and_dilation(stride, dilation):
    spec = ConvSpec.create((1, 2, 20, 20), (2, 2, 9, 9), stride, 4, dilation).as_3d()
    assert "stride 1 and dilation 1" in MODULE.supports(spec)
    with pytest.raises(ValueError, match="stride 1 and dilation 1"):
        nc.conv2d(np.ones((1, 2, 20, 20)), np.ones((2, 2, 9, 9)), stride=stride, padding=4, dilation=dilation,
                  algo="fft")


def test_declines_what_does_not_fit_the_workspace_limit(monkeypatch):
    spec = ConvSpec.create((1, 64, 64, 64), (64, 64, 15, 15), padding=7).as_3d()
    assert MODULE.supports(spec) is None
    monkeypatch.setattr(workspace, "WORKSPACE_LIMIT_BYTES", 2**20)
    assert "workspace limit" in MODULE.supports(spec)


def test_small_workspace_limit_gives_more_blocks_and_chunks(rng, monkeypatch):
    """Under a tight limit the plan takes shorter transforms and smaller chunks, and stays exact."""
    case = LARGE_KERNELS[0]
    spec, x, w, grad_y = random_problem(rng, case, np.float64)
    roomy = fft._plan(spec.as_3d(), "forward", 8)
    monkeypatch.setattr(workspace, "WORKSPACE_LIMIT_BYTES", 64 * 2**10)
    tight = fft._plan(spec.as_3d(), "forward", 8)
    assert tight is not None and tight.chunk < roomy.chunk
    check_passes(MODULE, spec, x, w, grad_y, np.float64)


def test_explicit_fft_spreads_a_nan_over_its_block(rng):
    """As documented: with algo="fft" a NaN in the input makes the whole blocks whose segments
    hold it NaN, where the reference has NaN only in the outputs that read it."""
    x, w = random_array(rng, (1, 2, 200)), random_array(rng, (3, 2, 31))
    x[0, 1, 5] = np.nan
    result = nc.conv1d(x, w, padding=15, algo="fft")
    expected = reference.conv1d(x, w, padding=15)
    assert np.isnan(result[np.isnan(expected)]).all()
    assert np.isnan(result).sum() > np.isnan(expected).sum()


@pytest.mark.parametrize("pass_name", ["forward", "input", "weight"])
def test_auto_keeps_nan_and_inf_where_the_reference_has_them(rng, pass_name):
    x, w = random_array(rng, (2, 32, 32, 30)), random_array(rng, (32, 32, 15, 15))
    spec = ConvSpec.create(x.shape, w.shape, padding=7)
    assert dispatch.choose("cpu", "auto", spec.as_3d(), pass_name) is MODULE
    grad_y = random_array(rng, spec.y_shape)
    x[1, 3, 20, 7], grad_y[0, 2, 4, 25] = np.inf, np.nan
    if pass_name == "forward":
        result, expected = nc.conv2d(x, w, padding=7), reference.conv2d(x, w, padding=7)
    elif pass_name == "input":
        result = nc.conv2d_input(x.shape, w, grad_y, padding=7)
        expected = reference.conv2d_input(x.shape, w, grad_y, padding=7)
    else:
        result = nc.conv2d_weight(x, w.shape, grad_y, padding=7)
        expected = reference.conv2d_weight(x, w.shape, grad_y, padding=7)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(result), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(result[finite], expected[finite], np.float64, pass_name)


def _auto(x_shape, w_shape, pass_name="forward", **options):
    spec = ConvSpec.create(x_shape, w_shape, **options).as_3d()
    return dispatch.choose("cpu", "auto", spec, pass_name).__name__.rsplit(".", 1)[-1]


def test_auto_takes_fft_for_large_kernels_only():
    for pass_name in ("forward", "input", "weight"):
        assert _auto((2, 64, 64, 64), (64, 64, 11, 11), pass_name, padding=5) == "fft"
        assert _auto((4, 64, 4000), (64, 64, 33), pass_name, padding=16) == "fft"
        assert _auto((1, 16, 32, 32, 32), (16, 16, 7, 7, 7), pass_name, padding=3) == "fft"
        assert _auto((4, 768, 500), (768, 48, 128), pass_name, padding=64, groups=16) == "fft"
    assert _auto((2, 64, 64, 64), (64, 64, 3, 3), padding=1) == "winograd"
    assert _auto((2, 64, 64, 64), (64, 64, 5, 5), padding=2) != "fft"
    # F2: the forward of 7x7 (model rate 321-325) and 5x5x5 (354) kernels stays direct, their gradients and
    # 9x9 (457) take the FFT
    for x_shape, w_shape, padding in [((2, 64, 64, 64), (64, 64, 7, 7), 3), ((4, 32, 56, 56), (32, 32, 7, 7), 3),
                                      ((1, 32, 24, 24, 24), (32, 32, 5, 5, 5), 2)]:
        assert _auto(x_shape, w_shape, padding=padding) != "fft"
    assert _auto((2, 64, 64, 64), (64, 64, 7, 7), "weight", padding=3) == "fft"
    assert _auto((2, 64, 56, 56), (64, 64, 9, 9), padding=4) == "fft"
    assert _auto((4, 64, 4000), (64, 64, 17), padding=8) == "fft"   # 1-d: rate 307 against 300
    assert _auto((1, 16, 32, 32, 32), (16, 16, 5, 5, 5), padding=2) != "fft"
    assert _auto((2, 128, 56, 56), (128, 1, 31, 31), padding=15, groups=128) == "blocked"  # depthwise: rule 0
    assert _auto((2, 128, 56, 56), (128, 1, 31, 31), "weight", padding=15, groups=128) == "planar"
    assert _auto((2, 64, 64, 64), (64, 64, 11, 11), stride=2, padding=5) != "fft"


def test_float32_error_on_a_large_transform(rng):
    """The largest transforms of the tests (a 3-d plan and a 1-d one of thousands of points)
    stay well inside float32's 1e-5 bound."""
    for case in (("3d", (1, 4, 24, 24, 24), (4, 4, 9, 9, 9), 1, 4, 1, 1),
                 ("1d", (1, 2, 6000), (4, 2, 255), 1, 127, 1, 1)):
        spec, x, w, grad_y = random_problem(rng, case, np.float32)
        spec3d = spec.as_3d()
        y = poisoned(spec3d.y_shape, np.float32)
        MODULE.forward(spec3d, read_only(x.reshape(spec3d.x_shape)), read_only(w.reshape(spec3d.w_shape)), y)
        assert_close(y.reshape(spec.y_shape), reference.forward(spec, x.astype(np.float64), w.astype(np.float64)),
                     np.float32, case[0])
