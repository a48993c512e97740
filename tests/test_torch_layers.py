"""numbaconv.torch: autograd Functions and drop-in modules, checked against torch.nn."""
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: numbaconv.torch is skipped")
import numbaconv.torch as nct  # noqa: E402

F = torch.nn.functional
TOLERANCE = 1e-10   # float64, norm-relative (the bar)

# First and second derivatives on tiny float64 problems, one row per feature, then several
# together; bias on in some rows, off in others.
CONV_GRID = [  # (stride, padding, dilation, groups, bias)
    (1, 0, 1, 1, True), (2, 1, 1, 1, False), (1, 2, 2, 1, True), (1, 1, 1, 2, False),
    (1, "asymmetric", 2, 1, True),     # (low, high) pairs: (1, 0) in the first dim, (0, 2) in the others
    (2, "same", 1, 2, False),          # numbaconv's "same" at stride 2: the odd pad at the high end
    (2, 1, 2, 2, True)]
TRANSPOSE_GRID = [  # (stride, padding, output_padding, groups, dilation, bias)
    (1, 0, 0, 1, 1, True), (2, 1, 1, 1, 1, False), (1, 1, 0, 1, 2, True), (2, 0, 1, 2, 1, False),
    (1, 1, 2, 1, 3, True),             # output_padding >= stride: the input zero-extended
    (2, "asymmetric", 1, 2, 2, False)]
# Spatial size of the input by rank: small, so that gradgradcheck's numerical Jacobians stay cheap.
GRID_SIZE = {1: 5, 2: 4, 3: 3}
# Every row in 2-d; in 1-d and 3-d (the same code with other ranks, and 3-d's checks the slowest,
# 10-50 s each) the last row, which has every feature at once.
CONV_CASES = [(2, options) for options in CONV_GRID] + [(rank, CONV_GRID[-1]) for rank in (1, 3)]
TRANSPOSE_CASES = [(2, options) for options in TRANSPOSE_GRID] + [(rank, TRANSPOSE_GRID[-1]) for rank in (1, 3)]


def _close(actual, expected, what):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = (torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)).item()
    assert error <= TOLERANCE, f"{what}: relative error {error:.2e}"


def _leaf(generator, *shape):
    return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_()


def _padding(padding, rank):
    return tuple([(1, 0)] + [(0, 2)] * (rank - 1)) if padding == "asymmetric" else padding


def _check_derivatives(function, inputs):
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("rank, options", CONV_CASES, ids=str)
def test_conv_first_and_second_derivatives(rank, options):
    stride, padding, dilation, groups, bias = options
    generator = torch.Generator().manual_seed(rank)
    x = _leaf(generator, 1, 2 * groups, *(GRID_SIZE[rank],) * rank)
    w = _leaf(generator, 2 * groups, 2, *(2,) * rank)
    b = _leaf(generator, 2 * groups) if bias else None
    conv = getattr(nct, f"conv{rank}d")
    _check_derivatives(lambda x, w, b: conv(x, w, b, stride, _padding(padding, rank), dilation, groups),
                       (x, w, b))


@pytest.mark.parametrize("rank, options", TRANSPOSE_CASES, ids=str)
def test_conv_transpose_first_and_second_derivatives(rank, options):
    stride, padding, output_padding, groups, dilation, bias = options
    generator = torch.Generator().manual_seed(rank)
    x = _leaf(generator, 1, 2 * groups, *(GRID_SIZE[rank] - 1,) * rank)
    w = _leaf(generator, 2 * groups, 2, *(2,) * rank)
    b = _leaf(generator, 2 * groups) if bias else None
    conv_transpose = getattr(nct, f"conv_transpose{rank}d")
    _check_derivatives(lambda x, w, b: conv_transpose(x, w, b, stride, _padding(padding, rank), output_padding,
                                                      groups, dilation), (x, w, b))


def test_gradient_penalty_matches_torch_nn():
    """A WGAN-GP style step: the norm of d(output)/d(input), differentiated again for the weights."""
    reference, ours = _sequential([("Conv2d", (2, 4, 3), dict(stride=2, padding=1)), ("Tanh", (), {}),
                                   ("ConvTranspose2d", (4, 3, 3), dict(stride=2, output_padding=1)),
                                   ("Flatten", (), {}), ("LazyLinear", (1,), {})])
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    reference(x), ours(x)     # materialise the lazy layer in both
    ours.load_state_dict(reference.state_dict())
    gradients = []
    for model in (reference, ours):
        xi = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(model(xi).sum(), xi, create_graph=True)
        penalty = ((grad_x.flatten(1).norm(dim=1) - 1) ** 2).mean()
        gradients.append(torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True,
                                             materialize_grads=True))   # the last bias adds a constant
    for name, ours_gradient, expected in zip(dict(reference.named_parameters()), gradients[1], gradients[0]):
        if name.endswith("bias") and not expected.any():
            assert not ours_gradient.any(), name
        else:
            _close(ours_gradient, expected, f"penalty gradient of {name}")


def _run_both(torch_module, our_module, x):
    """Outputs and gradients (input, then each parameter) of both modules on x."""
    results = []
    grad_y = None
    for module in (torch_module, our_module):
        xi = x.clone().requires_grad_()
        y = module(xi)
        if grad_y is None:
            grad_y = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
        module.zero_grad()
        y.backward(grad_y)
        results.append((y, xi.grad, [p.grad for p in module.parameters()]))
    return results


def _assert_same(torch_module, our_module, x):
    (y0, gx0, gp0), (y1, gx1, gp1) = _run_both(torch_module, our_module, x)
    _close(y1, y0, "output")
    _close(gx1, gx0, "input gradient")
    for name, g1, g0 in zip(dict(torch_module.named_parameters()), gp1, gp0):
        _close(g1, g0, f"gradient of {name}")


def _sequential(layers):
    """A float64 model for torch.nn or numbaconv.torch, built from the same seed."""
    def build(namespace):
        torch.manual_seed(0)
        return torch.nn.Sequential(*(getattr(namespace, name)(*args, **kwargs) if hasattr(namespace, name)
                                     else getattr(torch.nn, name)(*args, **kwargs)
                                     for name, args, kwargs in layers)).double()
    return build(torch.nn), build(nct)


def test_sequential_swap_matches_torch_nn():
    """The seed-004 network with ConvTranspose and grouped, strided, dilated convs mixed in.

    The conv before BatchNorm has no bias: BatchNorm cancels it, so its gradient is rounding noise.
    """
    reference, ours = _sequential([
        ("Conv2d", (3, 8, 3), {}), ("ReLU", (), {}),
        ("Conv2d", (8, 8, 3), dict(stride=2, padding=1, dilation=2, groups=4, bias=False)),
        ("BatchNorm2d", (8,), {}), ("ReLU", (), {}),
        ("ConvTranspose2d", (8, 4, 3), dict(stride=2, padding=1, output_padding=1, groups=2)),
        ("MaxPool2d", (2,), {}), ("Flatten", (), {}), ("LazyLinear", (5,), {})])
    assert [type(ours[i]).__module__ for i in (0, 2, 5)] == ["numbaconv.torch"] * 3
    x = torch.randn(4, 3, 16, 14, dtype=torch.float64)
    reference(x), ours(x)     # materialise the lazy layer in both
    ours.load_state_dict(reference.state_dict())
    assert list(ours.state_dict()) == list(reference.state_dict())
    _assert_same(reference, ours, x)


def test_same_seed_gives_same_parameters():
    reference, ours = _sequential([("Conv2d", (3, 6, 3), {}), ("ConvTranspose3d", (6, 2, 2), {})])
    for (name, p0), (_, p1) in zip(reference.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(p0, p1), name


@pytest.mark.parametrize("name, args, kwargs, in_shape", [
    ("Conv1d", (4, 6, 3), dict(stride=2, padding=2, dilation=2, groups=2), (3, 4, 17)),
    ("Conv1d", (4, 6, 4), dict(padding="same"), (3, 4, 9)),
    ("Conv2d", (3, 4, (3, 2)), dict(padding="same", padding_mode="reflect"), (2, 3, 7, 8)),
    ("Conv2d", (3, 4, 3), dict(padding=(2, 1), padding_mode="circular", bias=False), (2, 3, 6, 5)),
    ("Conv2d", (3, 4, 3), dict(padding=1), (3, 6, 5)),                       # unbatched
    ("Conv3d", (2, 4, 3), dict(stride=(1, 2, 1), padding=1, padding_mode="replicate"), (2, 2, 5, 6, 4)),
    ("Conv3d", (4, 4, 2), dict(groups=4, dilation=2, padding="valid"), (1, 4, 5, 5, 5)),
    ("ConvTranspose1d", (4, 6, 3), dict(stride=3, padding=1, output_padding=2, groups=2), (2, 4, 6)),
    ("ConvTranspose1d", (3, 2, 3), dict(padding=1, output_padding=2, dilation=3), (2, 3, 5)),
    ("ConvTranspose2d", (4, 2, (2, 3)), dict(stride=(2, 1), padding=(0, 1), bias=False), (2, 4, 3, 5)),
    ("ConvTranspose2d", (4, 2, 3), dict(stride=2), (4, 3, 5)),              # unbatched
    ("ConvTranspose3d", (2, 4, 3), dict(stride=2, padding=1, dilation=(1, 2, 1)), (2, 2, 3, 4, 3)),
])
def test_module_matches_torch_nn(name, args, kwargs, in_shape):
    torch.manual_seed(3)
    reference = getattr(torch.nn, name)(*args, **kwargs).double()
    ours = getattr(nct, name)(*args, **kwargs).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(in_shape, dtype=torch.float64)
    _assert_same(reference, ours, x)


def test_conv_transpose_output_size_matches_torch_nn():
    torch.manual_seed(4)
    reference = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    ours = nct.ConvTranspose2d(3, 2, 3, stride=2, padding=1).double()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = reference(x, output_size=(8, 10))
    _close(ours(x, output_size=(8, 10)), expected, "output_size")
    assert expected.shape[2:] == (8, 10)


def test_float32_model_trains_like_torch_nn():
    torch.manual_seed(5)
    reference = torch.nn.Conv2d(3, 8, 3, padding=1)
    ours = nct.Conv2d(3, 8, 3, padding=1)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 10, 10)
    (y0, gx0, gp0), (y1, gx1, gp1) = _run_both(reference, ours, x)
    assert y1.dtype == torch.float32
    for a, b in [(y1, y0), (gx1, gx0), *zip(gp1, gp0)]:
        assert (torch.linalg.norm(a - b) / torch.linalg.norm(b)).item() < 1e-5


@pytest.mark.parametrize("requires", [(True, False, False), (False, True, False), (False, False, True),
                                      (True, True, True)], ids=str)
def test_only_requested_gradients_are_computed(monkeypatch, requires):
    """ctx.needs_input_grad: a gradient nobody asked for calls no kernel."""
    import numbaconv.functional as functional
    calls = []
    for name in ("conv2d_input", "conv2d_weight", "conv2d_backward"):
        original = getattr(functional, name)
        monkeypatch.setattr(functional, name,
                            lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    generator = torch.Generator().manual_seed(6)
    x, w, b = (torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_(flag)
               for shape, flag in zip([(2, 3, 6, 6), (4, 3, 3, 3), (4,)], requires))
    nct.conv2d(x, w, b, padding=1).sum().backward()
    expected = {(True, False, False): ["conv2d_input"], (False, True, False): ["conv2d_weight"],
                (False, False, True): [], (True, True, True): ["conv2d_backward"]}[requires]
    assert calls == expected
    for tensor, flag in zip((x, w, b), requires):
        assert (tensor.grad is not None) == flag


def test_cpu_tensors_reach_the_kernels_without_copies(monkeypatch):
    import numbaconv.functional as functional
    seen = {}

    def conv2d(x, w, *args):
        seen["x"], seen["w"], seen["y"] = x, w, original(x, w, *args)
        return seen["y"]

    original = functional.conv2d
    monkeypatch.setattr(functional, "conv2d", conv2d)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    y = nct.conv2d(x, w)
    assert np.shares_memory(seen["x"], x.numpy()) and np.shares_memory(seen["w"], w.numpy())
    assert np.shares_memory(seen["y"], y.numpy())


def _memory_format(tensor):
    return next(name for name, layout in (("contiguous", torch.contiguous_format),
                                          ("channels_last", torch.channels_last),
                                          ("channels_last_3d", torch.channels_last_3d))
                if tensor.is_contiguous(memory_format=layout))


@pytest.mark.parametrize("name, dtype, operand", [
    ("Conv2d", torch.float32, "input"), ("Conv2d", torch.float64, "input"), ("Conv2d", torch.float32, "weight"),
    ("Conv3d", torch.float32, "input"), ("ConvTranspose2d", torch.float32, "input")])
def test_channels_last_gives_what_torch_nn_gives(name, dtype, operand):
    """channels_last (channels_last_3d) input or weight: the output and the gradients in the layout
    torch.nn gives, with the same values. (torch.nn's float64 Conv3d on the CPU returns a
    contiguous output for a channels_last_3d input; numbaconv keeps channels_last_3d there too.)"""
    rank = 3 if name.endswith("3d") else 2
    layout = torch.channels_last_3d if rank == 3 else torch.channels_last
    torch.manual_seed(7)
    reference = getattr(torch.nn, name)(4, 6, 3, padding=1).to(dtype)
    ours = getattr(nct, name)(4, 6, 3, padding=1).to(dtype)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, *(5,) * rank, dtype=dtype)
    if operand == "input":
        x = x.contiguous(memory_format=layout)
    else:
        for module in (reference, ours):
            module.weight.data = module.weight.data.contiguous(memory_format=layout)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    results = []
    for module in (reference, ours):
        xi = x.clone().requires_grad_()
        hidden = xi * 1.5                # a non-leaf input: its gradient keeps the layout it is given
        y = module(hidden)
        grad_hidden, grad_w = torch.autograd.grad(y, (hidden, module.weight), torch.ones_like(y))
        results.append({"output": y, "input gradient": grad_hidden, "weight gradient": grad_w})
    expected, actual = results
    for what in expected:
        assert _memory_format(actual[what]) == _memory_format(expected[what]), what
        error = torch.linalg.norm(actual[what] - expected[what]) / torch.linalg.norm(expected[what])
        assert error <= tolerance, f"{what}: relative error {error:.2e}"
    assert _memory_format(expected["output"]) != "contiguous"


def test_meta_tensors_get_torch_nn_shapes():
    """Shapes only, on the meta device: a model built there (for later to_empty()) runs."""
    for ours, reference, shape in [(nct.Conv2d(3, 4, 3, stride=2, padding="valid"), torch.nn.Conv2d(3, 4, 3, stride=2),
                                    (2, 3, 9, 8)),
                                   (nct.ConvTranspose3d(3, 2, 2, stride=2, output_padding=1),
                                    torch.nn.ConvTranspose3d(3, 2, 2, stride=2, output_padding=1), (1, 3, 3, 4, 2)),
                                   (nct.Conv1d(3, 4, 3, padding="same"), torch.nn.Conv1d(3, 4, 3, padding="same"), (3, 7))]:
        x = torch.empty(shape, device="meta")
        y = ours.to("meta")(x)
        assert y.device.type == "meta" and y.shape == reference.to("meta")(x).shape


BAD_LAYER_INPUTS = [
    ("channels", lambda: nct.Conv2d(3, 4, 3)(torch.randn(1, 4, 8, 8)), ValueError,
     "numbaconv.torch.Conv2d: expected 3 input channels, got 4"),
    ("dims", lambda: nct.Conv3d(3, 4, 3)(torch.randn(3, 8, 8)), ValueError,
     "numbaconv.torch.Conv3d: expected input with 4 or 5 dims"),
    ("dtype-mismatch", lambda: nct.Conv1d(3, 4, 3).double()(torch.randn(1, 3, 8)), TypeError,
     "numbaconv.torch.Conv1d: input dtype torch.float32 does not match"),
    ("dtype-unsupported", lambda: nct.Conv2d(3, 4, 3).half()(torch.randn(1, 3, 8, 8).half()), TypeError,
     "numbaconv.torch.Conv2d: input dtype torch.float16 is not supported"),
    ("devices", lambda: nct.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8, device="meta")), RuntimeError,
     "numbaconv.torch.Conv2d: the weight is on cpu and the input on meta"),
    ("transpose-channels", lambda: nct.ConvTranspose2d(3, 4, 3)(torch.randn(1, 4, 8, 8)), ValueError,
     "numbaconv.torch.ConvTranspose2d: expected 3 input channels, got 4"),
    ("functional-channels", lambda: nct.conv1d(torch.randn(1, 5, 8), torch.randn(4, 2, 3), groups=2),
     ValueError, "numbaconv.torch.conv1d: expected 4 input channels, got 5"),
    ("functional-devices", lambda: nct.conv_transpose2d(torch.randn(1, 3, 4, 4),
                                                        torch.randn(3, 2, 3, 3, device="meta")),
     RuntimeError, "numbaconv.torch.conv_transpose2d: the weight is on meta and the input on cpu"),
    ("bias-shape", lambda: nct.conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 3, 3), torch.randn(3)),
     ValueError, "numbaconv.torch.conv2d: bias must have shape (2,), got (3,)"),
    ("bias-dtype", lambda: nct.conv_transpose1d(torch.randn(1, 3, 4), torch.randn(3, 2, 3), torch.randn(2).double()),
     TypeError, "numbaconv.torch.conv_transpose1d: bias dtype torch.float64 does not match"),
    ("stride", lambda: nct.conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 3, 3), stride=0),
     ValueError, "stride entries must be >= 1"),
    ("stride-type", lambda: nct.conv2d(torch.randn(1, 3, 4, 4), torch.randn(2, 3, 3, 3), stride=1.5),
     TypeError, "stride must be an int or a tuple of 2 ints"),
    ("transpose-padding", lambda: nct.conv_transpose2d(torch.randn(1, 3, 4, 4), torch.randn(3, 2, 3, 3),
                                                       padding="same"),
     ValueError, "conv_transpose2d takes numeric padding"),
]


@pytest.mark.parametrize("case", BAD_LAYER_INPUTS, ids=lambda c: c[0])
def test_bad_input_names_the_layer(case):
    _, call, exception, message = case
    with pytest.raises(exception, match=re.escape(message)):
        call()


def test_transpose_padding_mode_other_than_zeros_is_refused():
    layer = nct.ConvTranspose1d(2, 2, 3)
    layer.padding_mode = "reflect"      # torch.nn's constructor already refuses it
    with pytest.raises(ValueError, match="numbaconv.torch.ConvTranspose1d: only padding_mode='zeros'"):
        layer(torch.randn(1, 2, 5))


def test_first_call_leaves_torch_thread_count_alone():
    """In a fresh process the first call starts Numba's OpenMP workers, which resets the thread
    count OpenMP gives torch: the layer puts torch's back and runs on it."""
    code = ("import torch, numbaconv.torch as nct; torch.set_num_threads(1); "
            "nct.Conv2d(2, 2, 3)(torch.randn(1, 2, 5, 5)); "
            "assert torch.get_num_threads() == 1, torch.get_num_threads()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_numbaconv_does_not_import_torch():
    code = "import sys, numbaconv, numbaconv.nn; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
