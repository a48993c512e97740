"""PyTorch (CPU) as a second, independent oracle: random problems over every argument."""
import itertools

import numpy as np
import pytest

import numbaconv as nc

torch = pytest.importorskip("torch", reason="PyTorch is not installed: the second oracle is skipped")
F = torch.nn.functional

# Norm-relative tolerances against PyTorch (the bar).
TORCH_TOLERANCE = {np.float32: 1e-5, np.float64: 1e-10}


def _close(actual, expected, dtype, what):
    expected = expected.detach().numpy().astype(np.float64)
    scale = max(np.linalg.norm(expected), np.finfo(np.float64).tiny)   # all-zero gradients happen
    error = np.linalg.norm(np.asarray(actual, np.float64) - expected) / scale
    assert error <= TORCH_TOLERANCE[dtype], f"{what}: relative error {error:.2e}"


def _random_problem(rng, rank):
    """A random (x_shape, w_shape, stride, padding, dilation, groups) that PyTorch also accepts."""
    groups = int(rng.choice([1, 2, 3]))
    in_channels, out_channels = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    kernel = tuple(int(k) for k in rng.integers(1, 4, rank))
    dilation = tuple(int(d) for d in rng.integers(1, 3, rank))
    stride = tuple(int(s) for s in rng.integers(1, 4, rank))
    padding = tuple(int(p) for p in rng.integers(0, 3, rank))
    size = tuple(int(d * (k - 1) + 1 + rng.integers(0, 6)) for k, d in zip(kernel, dilation))
    batch = int(rng.integers(1, 4))
    return ((batch, in_channels, *size), (out_channels, in_channels // groups, *kernel),
            stride, padding, dilation, groups)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
@pytest.mark.parametrize("rank, draw", list(itertools.product([1, 2, 3], range(6))))
def test_forward_and_gradients_match_torch(rank, draw, dtype):
    rng = np.random.default_rng(100 * rank + draw)
    x_shape, w_shape, stride, padding, dilation, groups = _random_problem(rng, rank)
    x, w = rng.standard_normal(x_shape).astype(dtype), rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, bias))
    yt = getattr(F, f"conv{rank}d")(xt, wt, bt, stride, padding, dilation, groups)
    grad_y = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.from_numpy(grad_y))
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)

    _close(getattr(nc, f"conv{rank}d")(x, w, bias, **options), yt, dtype, "forward")
    grad_x, grad_w, grad_b = getattr(nc, f"conv{rank}d_backward")(grad_y, x, w, **options)
    _close(grad_x, xt.grad, dtype, "input gradient")
    _close(grad_w, wt.grad, dtype, "weight gradient")
    _close(grad_b, bt.grad, dtype, "bias gradient")

    output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
    # transposed padding small enough for a non-empty output
    padding = tuple(int(rng.integers(0, 1 + ((n - 1) * s + d * (k - 1)) // 2)) for n, s, d, k in
                    zip(x_shape[2:], stride, dilation, w_shape[2:]))
    x_t = rng.standard_normal((x_shape[0], w_shape[0], *x_shape[2:])).astype(dtype)
    bias_t = rng.standard_normal(w_shape[1] * groups).astype(dtype)
    transposed = getattr(F, f"conv_transpose{rank}d")(
        torch.from_numpy(x_t), torch.from_numpy(w), torch.from_numpy(bias_t),
        stride, padding, output_padding, groups, dilation)
    ours = getattr(nc, f"conv_transpose{rank}d")(x_t, w, bias_t, stride,
                                                padding, output_padding, groups, dilation)
    _close(ours, transposed, dtype, "conv_transpose")


def test_same_padding_matches_torch_at_stride_1():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 4, 3))
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=(1, 2))
    _close(nc.conv2d(x, w, padding="same", dilation=(1, 2)), expected, np.float64, "same")


def test_grad_functions_match_torch_nn_grad():
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 4, 7, 6)), rng.standard_normal((6, 2, 3, 2))
    options = dict(stride=2, padding=1, dilation=1, groups=2)
    grad_y = rng.standard_normal(nc.conv2d(x, w, **options).shape)
    xt, wt, gyt = (torch.from_numpy(a) for a in (x, w, grad_y))
    _close(nc.conv2d_input(x.shape, w, grad_y, **options),
           torch.nn.grad.conv2d_input(xt.shape, wt, gyt, **options), np.float64, "conv2d_input")
    _close(nc.conv2d_weight(x, w.shape, grad_y, **options),
           torch.nn.grad.conv2d_weight(xt, wt.shape, gyt, **options), np.float64, "conv2d_weight")


def test_transpose_output_padding_beyond_stride_matches_torch():
    """output_padding >= stride is legal when dilation > stride; the extra outputs get bias only."""
    rng = np.random.default_rng(8)
    x, w, bias = rng.standard_normal((2, 3, 5)), rng.standard_normal((3, 2, 3)), rng.standard_normal(2)
    expected = F.conv_transpose1d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias),
                                  stride=1, padding=1, output_padding=2, dilation=3)
    _close(nc.conv_transpose1d(x, w, bias, stride=1, padding=1, output_padding=2, dilation=3),
           expected, np.float64, "conv_transpose1d")
