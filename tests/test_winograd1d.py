"""winograd1d's parts alone: the minimal filters it builds, the stride phases it plans, and the
layers ``auto`` gives it (its passes against the reference: tests/test_kernels.py's grid)."""
import numpy as np
import pytest

from conftest import WIDE_WEIGHT

from numbaconv import dispatch
from numbaconv.cpu import winograd1d
from numbaconv.spec import ConvSpec


@pytest.mark.parametrize("taps", [1, 2, 3])
def test_minimal_filter_is_the_correlation(rng, taps):
    """``A^T [(G g) * (B^T d)]`` is ``y[i] = sum_j g[j] d[i + j]`` for F(4, r), to float64 rounding,
    and the transforms are exact small fractions (their largest entries as built)."""
    at, g, bt = winograd1d.toom_cook(winograd1d.TILE, taps)
    points = winograd1d.TILE + taps - 1
    assert at.shape == (winograd1d.TILE, points) and g.shape == (points, taps) and bt.shape == (points, points)
    for _ in range(5):
        kernel, data = rng.standard_normal(taps), rng.standard_normal(points)
        expected = [kernel @ data[i:i + taps] for i in range(winograd1d.TILE)]
        np.testing.assert_allclose(at @ ((g @ kernel) * (bt @ data)), expected, rtol=0, atol=1e-13)
    assert np.abs(bt).max() <= 5 and np.abs(at).max() <= 8


def _spec(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    return ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups).as_3d()


def test_phases_and_their_products():
    """A stride-2 3-tap kernel: phase 0 (taps 0 and 2) F(4, 2)'s 5 points, phase 1 (tap 1) one
    product straight from the inputs: 9 products per 4 outputs; stride 1: F(4, 3), 6; a 2-tap
    kernel at stride 3: two one-tap phases and one without taps (zeros in the input gradient)."""
    plan = winograd1d.forward_plan(_spec((1, 4, 30), (4, 4, 3), 2))
    assert plan.points == 5 and list(plan.direct_offsets) == [1] and plan.filters == 6
    assert winograd1d.product_share(_spec((1, 4, 30), (4, 4, 3), 2)) == 0.75
    assert winograd1d.product_share(_spec((1, 4, 30), (4, 4, 3), 1)) == 0.5
    plan = winograd1d.input_plan(_spec((1, 4, 30), (4, 4, 2), 3, 1))
    assert plan.points == 0 and list(plan.direct_phases) == [0, 1] and list(plan.zero_phases) == [0, 0, 1]
    assert list(plan.direct_betas) == [0, 0]         # each the first to write its phase
    assert sorted(plan.out_offsets) == [0, 1, 2]     # every input position written once


def test_dilation_splits_the_outputs():
    """Dilation 3 at stride 1: the outputs in 3 phases (every third), each F(4, 3) on every third
    input, the phases' points of one filter side by side; dilation 3 at stride 2: 3 output phases, 2 tap phases, every sixth input."""
    plan = winograd1d.forward_plan(_spec((1, 4, 40), (4, 4, 3), 1, 3, dilation=3))
    assert (plan.in_step, plan.out_step, list(plan.out_offsets), plan.points) == (3, 3, [0, 1, 2], 18)
    assert plan.filters == 6 and list(np.diff(plan.run_starts)) == [3] * 6   # a filter's 3 phases: one product
    assert winograd1d.product_share(_spec((1, 4, 40), (4, 4, 3), 1, 3, dilation=3)) == 0.5
    plan = winograd1d.forward_plan(_spec((1, 4, 40), (4, 4, 3), 2, 3, dilation=3))
    assert (plan.in_step, plan.out_step, plan.points, len(plan.direct_offsets)) == (6, 3, 15, 3)


def test_declines_what_it_cannot_run():
    assert "has 5 taps, more than 3" in winograd1d.supports(_spec((2, 4, 40), (4, 4, 5)))
    assert winograd1d.supports(_spec((2, 4, 40), (4, 4, 5), 2)) is None   # 3 and 2 taps a phase
    assert "1-d problems only" in winograd1d.supports(_spec((2, 4, 9, 9), (4, 4, 3, 3)))


@pytest.mark.parametrize("x_shape, w_shape, options, chosen", [
    ((4, 128, 500), (128, 128, 3), dict(padding=1), "winograd1d"),
    ((4, 512, 500), (512, 512, 3), dict(padding=1), "winograd1d"),
    ((4, 256, 500), (256, 256, 3), dict(padding=2, dilation=2), "winograd1d"),
    ((4, 64, 500), (64, 64, 3), dict(padding=1), ("im2col", "im2col", WIDE_WEIGHT)),  # too few channels
    ((4, 256, 500), (256, 64, 3), dict(padding=1, groups=4), ("channels_last", "channels_last", "im2col")),  # 0b
    # three quarters of the products on 400 tiles; the forward by rule 2b (strided, many outputs)
    ((4, 512, 799), (512, 512, 3), dict(stride=2), ("channels_last", "im2col", "im2col")),
    ((4, 512, 1599), (512, 512, 3), dict(stride=2), "winograd1d"),  # and 800 tiles
    ((4, 256, 6399), (256, 256, 3), dict(stride=2), ("channels_last", "im2col", "im2col")),   # 256 channels
])
def test_auto_takes_it_for_wide_three_tap_layers(x_shape, w_shape, options, chosen):
    """``chosen``: the algorithm of every pass, or of each (forward, input, weight)."""
    spec = _spec(x_shape, w_shape, **options)
    for pass_name, expected in zip(("forward", "input", "weight"), (chosen,) * 3 if isinstance(chosen, str) else chosen):
        assert dispatch.choose("cpu", "auto", spec, pass_name).__name__.rsplit(".", 1)[1] == expected
