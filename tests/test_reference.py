"""The float64 reference on worked examples with known answers and against finite differences."""
import numpy as np
import pytest

from numbaconv import reference
from numbaconv.spec import ConvSpec

SEED_INPUT = np.arange(9.0).reshape(1, 1, 3, 3)
SEED_KERNEL = np.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 1, 2, 2)


def test_seed_cross_correlation():
    np.testing.assert_array_equal(reference.conv2d(SEED_INPUT, SEED_KERNEL)[0, 0], [[19, 25], [37, 43]])


def test_seed_zero_padded():
    expected = [[0, 3, 8, 4], [9, 19, 25, 10], [21, 37, 43, 16], [6, 7, 8, 0]]
    np.testing.assert_array_equal(reference.conv2d(SEED_INPUT, SEED_KERNEL, padding=1)[0, 0], expected)


def test_seed_padded_stride_3_2():
    result = reference.conv2d(SEED_INPUT, SEED_KERNEL, padding=1, stride=(3, 2))
    np.testing.assert_array_equal(result[0, 0], [[0, 8], [6, 8]])


def test_seed_edge_detector():
    """Ones with a dark band in columns 2..5; kernel [1, -1] marks both edges."""
    image = np.ones((1, 1, 6, 8))
    image[..., 2:6] = 0
    edges = reference.conv2d(image, np.array([1.0, -1.0]).reshape(1, 1, 1, 2))
    expected_row = [0, 1, 0, 0, 0, -1, 0]
    np.testing.assert_array_equal(edges[0, 0], np.tile(expected_row, (6, 1)))


def test_output_size_formula():
    """floor((n - k + p + s) / s) per dim, with p the total padding."""
    spec = ConvSpec.create((1, 1, 3, 3), (1, 1, 2, 2), stride=(3, 2), padding=1)
    assert spec.out_size == ((3 - 2 + 2 + 3) // 3, (3 - 2 + 2 + 2) // 2)


@pytest.mark.parametrize("padding", [0, 1, "same", ((0, 2), (1, 0), (2, 1))])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_gradients_match_finite_differences(rank, padding):
    """<grad_x, dx> + <grad_w, dw> + <grad_b, db> = d/dt <grad_y, y(x + t dx, w + t dw, b + t db)>."""
    rng = np.random.default_rng(rank)
    if isinstance(padding, tuple):
        padding = padding[:rank]
    x = rng.standard_normal((2, 4, *(6, 5, 4)[:rank]))
    w = rng.standard_normal((6, 2, *(3, 2, 3)[:rank]))
    bias = rng.standard_normal(6)
    conv = getattr(reference, f"conv{rank}d")
    options = dict(stride=2 if padding == "same" else 1, padding=padding, dilation=1, groups=2)
    grad_y = rng.standard_normal(conv(x, w, bias, **options).shape)
    grad_x, grad_w, grad_b = getattr(reference, f"conv{rank}d_backward")(grad_y, x, w, **options)
    dx, dw, db = (rng.standard_normal(a.shape) for a in (x, w, bias))
    step = 1e-3

    def loss(t):
        return np.sum(grad_y * conv(x + t * dx, w + t * dw, bias + t * db, **options))

    numeric = (loss(step) - loss(-step)) / (2 * step)
    analytic = np.sum(grad_x * dx) + np.sum(grad_w * dw) + np.sum(grad_b * db)
    # loss is quadratic in t, so the central difference is exact up to rounding
    assert abs(numeric - analytic) <= 1e-8 * max(1.0, abs(analytic))


def test_transpose_is_the_input_gradient():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    y = reference.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    assert y.shape == (2, 3, 10, 12)
    np.testing.assert_allclose(y, reference.conv2d_input(y.shape, w, x, stride=2, padding=1), rtol=0, atol=0)


def test_an_empty_batch_gives_empty_results_and_zero_weight_gradients():
    x, w = np.ones((0, 3, 3, 16)), np.ones((3, 3, 3, 3))
    assert reference.conv2d(x, w, padding="same").shape == (0, 3, 3, 16)
    assert reference.conv2d_input(x.shape, w, np.ones((0, 3, 3, 16)), padding="same").shape == (0, 3, 3, 16)
    assert np.array_equal(reference.conv2d_weight(x, w.shape, np.ones((0, 3, 3, 16)), padding="same"), np.zeros(w.shape))
    assert reference.conv1d(np.ones((0, 2, 5)), np.ones((4, 2, 3))).shape == (0, 4, 3)
