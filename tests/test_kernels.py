"""Every CPU algorithm x pass x dtype against the float64 reference, with poisoned outputs."""
import numpy as np
import pytest

from cases import CASE_IDS, CASES
from conftest import assert_close, poisoned, random_array
from numbaconv import dispatch, reference
from numbaconv.spec import ConvSpec

ALGORITHMS = sorted(dispatch.REGISTRY["cpu"])
DTYPES = [np.float32, np.float64]


def _problem(rng, case, dtype):
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    spec = ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups)
    return (spec, random_array(rng, spec.x_shape, dtype), random_array(rng, spec.w_shape, dtype),
            random_array(rng, spec.y_shape, dtype))


def check_passes(module, spec, x, w, grad_y, dtype):
    """Run the three passes of ``module`` into poisoned outputs and compare with the reference."""
    spec3d = spec.as_3d()
    x5, w5, gy5 = x.reshape(spec3d.x_shape), w.reshape(spec3d.w_shape), grad_y.reshape(spec3d.y_shape)

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


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_kernel_passes_match_reference(rng, case, algo, dtype):
    module = dispatch.REGISTRY["cpu"][algo]
    spec, x, w, grad_y = _problem(rng, case, dtype)
    assert module.supports(spec) is None
    check_passes(module, spec, x, w, grad_y, dtype)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_kernels_leave_inputs_alone(rng, algo):
    module = dispatch.REGISTRY["cpu"][algo]
    spec, x, w, grad_y = _problem(rng, CASES[1], np.float64)
    spec3d = spec.as_3d()
    x5, w5, gy5 = (a.reshape(s) for a, s in ((x, spec3d.x_shape), (w, spec3d.w_shape),
                                             (grad_y, spec3d.y_shape)))
    originals = [a.copy() for a in (x, w, grad_y)]
    module.forward(spec3d, x5, w5, np.empty(spec3d.y_shape))
    module.backward_input(spec3d, gy5, w5, np.empty(spec3d.x_shape))
    module.backward_weight(spec3d, x5, gy5, np.empty(spec3d.w_shape))
    for original, array in zip(originals, (x, w, grad_y)):
        np.testing.assert_array_equal(original, array)


@pytest.mark.parametrize("block_columns", [1, 5, 37])
def test_im2col_blocks_cut_anywhere(rng, monkeypatch, block_columns):
    """Column blocks that split output rows and samples at odd places still give exact results."""
    from numbaconv.cpu import im2col
    monkeypatch.setattr(im2col, "BLOCK_BYTES", 1)
    monkeypatch.setattr(im2col, "MIN_BLOCK_COLUMNS", block_columns)
    for case in (CASES[4], CASES[16]):
        spec, x, w, grad_y = _problem(rng, case, np.float64)
        plan = im2col._Plan(spec.as_3d(), np.float64, 2)
        assert plan.block == min(block_columns, plan.columns)
        check_passes(im2col, spec, x, w, grad_y, np.float64)


def test_im2col_workspace_cap_bounds_the_block(monkeypatch):
    from numbaconv.cpu import im2col
    monkeypatch.setattr(im2col, "WORKSPACE_LIMIT_BYTES", 1)
    spec = ConvSpec.create((4, 8, 9, 9), (8, 8, 3, 3)).as_3d()
    assert im2col._Plan(spec, np.float64, 2).block == 1
