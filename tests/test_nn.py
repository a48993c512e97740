"""numbaconv.nn: NumPy layers against torch.nn (same weights) and the float64 reference."""
import math

import numpy as np
import pytest

import numbaconv as nc
import numbaconv.nn as ncn

from conftest import assert_close, random_array

LAYERS = [  # (name, args, kwargs, input shape)
    ("Conv1d", (4, 6, 3), dict(stride=2, padding=1, dilation=2, groups=2), (3, 4, 11)),
    ("Conv2d", (3, 5, (3, 2)), dict(padding="same"), (2, 3, 7, 6)),
    ("Conv2d", (4, 4, 3), dict(stride=2, groups=4, bias=False), (2, 4, 9, 8)),
    ("Conv3d", (2, 3, 2), dict(padding=((1, 0), (0, 1), (1, 1)), dilation=(2, 1, 1)), (2, 2, 5, 4, 3)),
    ("ConvTranspose2d", (4, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=2), (2, 4, 4, 5)),
    ("ConvTranspose2d", (3, 2, 3), dict(padding=1, output_padding=2, dilation=3), (2, 3, 4, 4)),
]


def _asymmetric(padding) -> bool:
    """(low, high) pairs, which torch.nn does not take: the test pads the input by hand."""
    return isinstance(padding, tuple) and isinstance(padding[0], tuple)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda c: f"{c[0]}-{c[2]}")
def test_layer_matches_torch_nn(rng, layer):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the torch.nn oracle is skipped")
    name, args, kwargs, in_shape = layer
    ours = getattr(ncn, name)(*args, **kwargs, dtype=np.float64, rng=rng)
    pads = kwargs.get("padding", 0)
    torch_kwargs = dict(kwargs, padding=0) if _asymmetric(pads) else kwargs
    reference = getattr(torch.nn, name)(*args, **torch_kwargs).double()
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(ours.weight))
        if ours.bias is not None:
            reference.bias.copy_(torch.from_numpy(ours.bias))
    x = random_array(rng, in_shape)
    xt = torch.tensor(x, requires_grad=True)
    padded = (torch.nn.functional.pad(xt, [q for pair in reversed(pads) for q in pair])
              if _asymmetric(pads) else xt)
    expected = reference(padded)
    y = ours.forward(x)
    assert_close(y, expected.detach().numpy(), np.float64, "forward")
    grad_y = random_array(rng, y.shape)
    expected.backward(torch.from_numpy(grad_y))
    assert_close(ours.backward(grad_y), xt.grad.numpy(), np.float64, "input gradient")
    expected_grads = [p.grad.numpy() for p in reference.parameters()]
    assert len(ours.gradients()) == len(expected_grads) == len(ours.parameters())
    for got, want, what in zip(ours.gradients(), expected_grads, ("weight", "bias")):
        assert_close(got, want, np.float64, f"{what} gradient")


def test_gradients_match_the_reference(rng):
    layer = ncn.Conv2d(3, 4, 3, stride=2, padding=1, dtype=np.float64, rng=rng)
    x = random_array(rng, (2, 3, 7, 7))
    y = layer.forward(x)
    assert_close(y, nc.reference.conv2d(x, layer.weight, layer.bias, 2, 1), np.float64, "forward")
    grad_y = random_array(rng, y.shape)
    grad_x = layer.backward(grad_y)
    expected = nc.reference.conv2d_backward(grad_y, x, layer.weight, 2, 1)
    for got, want, what in zip((grad_x, layer.grad_weight, layer.grad_bias), expected,
                               ("input", "weight", "bias")):
        assert_close(got, want, np.float64, what)


def test_input_grad_false_skips_the_input_gradient(rng):
    layer = ncn.ConvTranspose2d(2, 3, 2, stride=2, dtype=np.float64, rng=rng)
    x = random_array(rng, (1, 2, 3, 3))
    grad_y = random_array(rng, layer.forward(x).shape)
    assert layer.backward(grad_y, input_grad=False) is None
    weight_gradient = layer.grad_weight
    layer.backward(grad_y)
    assert_close(weight_gradient, layer.grad_weight, np.float64, "weight gradient")


@pytest.mark.parametrize("name, args, fan_in", [
    ("Conv1d", (4, 8, 5), 4 * 5), ("Conv2d", (6, 8, 3, 1, 0, 1, 2), 3 * 9),
    ("Conv3d", (2, 4, (1, 2, 3)), 2 * 6), ("ConvTranspose2d", (4, 6, 3, 1, 0, 0, 2), 3 * 9)])
def test_initialisation_is_torch_default(name, args, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias, fan_in = weight.shape[1] * prod(kernel)."""
    layers = [getattr(ncn, name)(*args, rng=np.random.default_rng(seed)) for seed in range(200)]
    bound = 1 / math.sqrt(fan_in)
    for values in (np.stack([layer.weight for layer in layers]), np.stack([layer.bias for layer in layers])):
        assert values.dtype == np.float32
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.95 * bound       # the full range is used
        assert abs(values.std() - bound / math.sqrt(3)) < 0.05 * bound   # uniform's spread
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    assert torch.nn.init._calculate_fan_in_and_fan_out(
        getattr(torch.nn, name)(*args).weight)[0] == fan_in


def test_same_generator_seed_gives_same_parameters():
    first, second, other = (ncn.Conv2d(3, 4, 3, rng=np.random.default_rng(seed)) for seed in (7, 7, 8))
    assert np.array_equal(first.weight, second.weight) and np.array_equal(first.bias, second.bias)
    assert not np.array_equal(first.weight, other.weight)


def test_sgd_steps_reduce_the_loss(rng):
    """parameters()/gradients() drive a plain SGD loop towards a target layer's outputs."""
    target = ncn.Conv1d(2, 3, 3, padding=1, dtype=np.float64, rng=rng)
    layer = ncn.Conv1d(2, 3, 3, padding=1, dtype=np.float64, rng=rng)
    x = random_array(rng, (8, 2, 20))
    y = target.forward(x)
    losses = []
    for _ in range(30):
        error = layer.forward(x) - y
        losses.append(float((error ** 2).mean()))
        layer.backward(2 * error / error.size, input_grad=False)
        for parameter, gradient in zip(layer.parameters(), layer.gradients()):
            parameter -= 0.5 * gradient
    assert losses[-1] < 0.05 * losses[0]


def _after_forward(layer):
    layer.forward(np.ones((1, 2, 5), np.float32))
    return layer


@pytest.mark.parametrize("call, exception, message", [
    (lambda: ncn.Conv2d(3, 4, 3).forward(np.ones((1, 4, 8, 8), np.float32)), ValueError,
     "numbaconv.nn.Conv2d: expected 3 input channels, got 4"),
    (lambda: ncn.Conv1d(3, 4, 3).forward(np.ones((3, 8), np.float32)), ValueError,
     "numbaconv.nn.Conv1d: expected input with 3 dims"),
    (lambda: ncn.Conv3d(1, 1, 1).forward(np.ones((1, 1, 2, 2, 2))), TypeError,
     "numbaconv.nn.Conv3d: input dtype float64 does not match the weight's float32"),
    (lambda: ncn.Conv2d(1, 1, 1, dtype=np.int32), TypeError, "numbaconv.nn.Conv2d: dtype must be"),
    (lambda: ncn.ConvTranspose2d(4, 6, 3, groups=4), ValueError, "numbaconv.nn.ConvTranspose2d: groups=4"),
    (lambda: ncn.Conv2d(1, 1, 1).backward(np.ones((1, 1, 2, 2), np.float32)), RuntimeError,
     "numbaconv.nn.Conv2d: backward called before forward"),
    (lambda: ncn.Conv2d(1, 1, 1).gradients(), RuntimeError, "no gradients yet"),
    (lambda: _after_forward(ncn.Conv1d(2, 3, 3)).backward(np.ones((1, 3, 4), np.float32)), ValueError,
     r"numbaconv.nn.Conv1d: grad_output has shape \(1, 3, 4\), the last forward's output has \(1, 3, 3\)"),
    (lambda: _after_forward(ncn.Conv1d(2, 3, 3)).backward(np.ones((1, 3, 3))), TypeError,
     "numbaconv.nn.Conv1d: grad_output dtype float64 does not match the weight's float32"),
], ids=["channels", "dims", "dtype", "init-dtype", "groups", "backward-first", "gradients-first",
        "grad-shape", "grad-dtype"])
def test_bad_input_names_the_layer(call, exception, message):
    with pytest.raises(exception, match=message):
        call()
