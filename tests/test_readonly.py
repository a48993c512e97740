"""Read-only inputs (``np.load(..., mmap_mode="r")``, ``np.frombuffer``): every CPU algorithm x
pass x dtype through the public functions, and the CUDA engine with read-only host arrays.

Numba types a read-only array apart from a writeable one and refuses to compile a kernel that
could write into it, so these catch any code path that writes into an array it only reads.
The problems reach the paths that differ by layout: stride 1 with padding (im2col's forward over
wide columns), stride 2 and 3 (im2col's gathered, run-by-run stride-2 and general-stride rows),
wide output rows (run by run at stride 1), depthwise, 1-d, 3-d, 1x1 (im2col's views of the
input), many filters for few outputs (im2col's chunks of input channels) and planar's weight
gradient by columns.
"""
import numpy as np
import pytest

from conftest import assert_close, random_problem
from test_cuda import ALGORITHMS as CUDA_ALGORITHMS, small_launch  # noqa: F401 (small_launch: a fixture)
import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.cpu import im2col, planar
from numbaconv.spec import ConvSpec

DTYPES = [np.float32, np.float64]
PASSES = ["forward", "input", "weight"]
# (name, x_shape, w_shape, stride, padding, dilation, groups), as in numbaconv/tools/grid.py
PROBLEMS = [
    ("2d-stride1-padded", (2, 3, 7, 9), (4, 3, 3, 3), 1, 1, 1, 1),
    ("2d-stride2", (2, 2, 9, 10), (3, 2, 3, 4), 2, 1, 1, 1),
    ("2d-depthwise", (2, 4, 9, 8), (4, 1, 3, 3), 1, 1, 1, 4),
    ("2d-wide-rows", (1, 2, 5, 20), (3, 2, 3, 3), 1, 1, 1, 1),
    ("2d-wide-rows-stride2", (1, 2, 5, 36), (3, 2, 3, 3), 2, 1, 1, 1),
    ("1d-wide-rows-stride3", (1, 2, 64), (3, 2, 5), 3, 2, 1, 1),
    ("3d-groups", (1, 2, 3, 4, 5), (4, 1, 2, 3, 3), 1, 1, 1, 2),
    ("3d-strided", (1, 2, 4, 5, 6), (3, 2, 2, 3, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 1),
    ("2d-1x1", (2, 6, 17, 16), (4, 3, 1, 1), 1, 0, 1, 2),
    ("2d-one-channel", (1, 1, 6, 7), (8, 1, 3, 3), 1, 1, 1, 1),
    ("2d-many-filters", (1, 8, 16, 17), (6, 8, 16, 16), 1, 0, 1, 1),
]


def spec3d(problem):
    """The 3-d ConvSpec of a problem of ``PROBLEMS``."""
    _, x_shape, w_shape, stride, padding, dilation, groups = problem
    return ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups).as_3d()


SUPPORTED = [(problem, algo) for problem in PROBLEMS for algo in sorted(dispatch.REGISTRY["cpu"])
             if dispatch.REGISTRY["cpu"][algo].supports(spec3d(problem)) is None]


def read_only(*arrays):
    """Read-only copies of ``arrays``, as ``np.frombuffer`` on immutable bytes gives them."""
    copies = tuple(np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape) for a in arrays)
    assert not any(c.flags.writeable for c in copies)
    return copies


def public(rank, name):
    return getattr(nc, f"conv{rank}d{name}")


def test_problems_reach_the_layout_dependent_paths():
    """The problems above take im2col's and planar's layout-dependent paths."""
    specs = {problem[0]: spec3d(problem) for problem in PROBLEMS}
    assert im2col._wide_blocking(specs["2d-stride1-padded"], np.float64, 2) is not None
    assert im2col._wide_blocking(specs["2d-stride2"], np.float64, 2) is None and im2col._gathers(specs["2d-stride2"])
    for name in ("2d-wide-rows", "2d-wide-rows-stride2", "1d-wide-rows-stride3"):
        assert not im2col._gathers(specs[name])
    assert im2col.pointwise(specs["2d-1x1"])
    for pass_name in ("forward", "weight"):
        assert im2col._channel_split(specs["2d-many-filters"], pass_name, np.float64, 2) is not None
        assert im2col._channel_split(specs["2d-stride1-padded"], pass_name, np.float64, 2) is None
    assert planar.weight_columns(specs["2d-one-channel"]) and not planar.weight_columns(specs["2d-depthwise"])
    assert {a for _, a in SUPPORTED} == set(dispatch.REGISTRY["cpu"])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("pass_name", PASSES)
@pytest.mark.parametrize("problem, algo", SUPPORTED, ids=[f"{p[0]}-{a}" for p, a in SUPPORTED])
def test_read_only_inputs(rng, problem, algo, pass_name, dtype):
    spec, x, w, grad_y = random_problem(rng, problem, dtype)
    _, _, _, stride, padding, dilation, groups = problem
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, algo=algo, device="cpu")
    rank = x.ndim - 2
    bias = rng.standard_normal(spec.out_channels).astype(dtype)
    x_ro, w_ro, grad_y_ro, bias_ro = read_only(x, w, grad_y, bias)
    if pass_name == "forward":
        result = public(rank, "")(x_ro, w_ro, bias_ro, **geometry)
        expected = reference.forward(spec, x, w) + bias.reshape(-1, *(1,) * rank)
    elif pass_name == "input":
        result = public(rank, "_input")(x.shape, w_ro, grad_y_ro, **geometry)
        expected = reference.backward_input(spec, grad_y, w)
    else:
        result = public(rank, "_weight")(x_ro, w.shape, grad_y_ro, **geometry)
        expected = reference.backward_weight(spec, x, grad_y)
    assert_close(result, expected, dtype, pass_name)
    for original, array in ((x, x_ro), (w, w_ro), (grad_y, grad_y_ro), (bias, bias_ro)):
        np.testing.assert_array_equal(array, original)


@pytest.mark.parametrize("algo", CUDA_ALGORITHMS)
def test_read_only_host_inputs_on_gpu(rng, small_launch, algo):
    problem = ("2d-strided-groups", (2, 2, 5, 4), (4, 1, 3, 2), (2, 1), 1, 1, 2)
    spec, x, w, grad_y = random_problem(rng, problem, np.float64)
    bias = rng.standard_normal(spec.out_channels)
    x_ro, w_ro, grad_y_ro, bias_ro = read_only(x, w, grad_y, bias)
    geometry = dict(stride=(2, 1), padding=1, groups=2, algo=algo, device="cuda")
    y = nc.conv2d(x_ro, w_ro, bias_ro, **geometry)
    assert_close(y, reference.forward(spec, x, w) + bias[:, None, None], np.float64, "forward")
    grads = nc.conv2d_backward(grad_y_ro, x_ro, w_ro, **geometry)
    expected = (reference.backward_input(spec, grad_y, w), reference.backward_weight(spec, x, grad_y),
                reference.backward_bias(grad_y))
    for got, want, name in zip(grads, expected, ("input", "weight", "bias")):
        assert_close(got, want, np.float64, f"{name} gradient")
    for original, array in ((x, x_ro), (w, w_ro), (grad_y, grad_y_ro), (bias, bias_ro)):
        np.testing.assert_array_equal(array, original)
