"""numbaconv.torch: autograd Functions and drop-in modules, checked against torch.nn."""
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: numbaconv.torch is skipped")
import numbaconv.torch as nct  # noqa: E402

F = torch.nn.functional
TOLERANCE = 1e-10   # float64, norm-relative (the bar)

# (stride, padding, dilation, groups): one row per feature, then all together
CONV_OPTIONS = [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (1, 1, 1, 2), (2, 1, 2, 2)]
TRANSPOSE_OPTIONS = [  # (stride, padding, output_padding, groups, dilation)
    (1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (1, 1, 0, 1, 2), (2, 0, 1, 2, 1), (1, 1, 2, 1, 3)]


def _close(actual, expected, what):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    error = (torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)).item()
    assert error <= TOLERANCE, f"{what}: relative error {error:.2e}"


def _leaf(generator, *shape):
    return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_()


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("options", CONV_OPTIONS, ids=str)
def test_conv_gradcheck(rank, options):
    stride, padding, dilation, groups = options
    generator = torch.Generator().manual_seed(rank)
    x = _leaf(generator, 2, 2 * groups, *(5,) * rank)
    w = _leaf(generator, 2 * groups, 2, *(2,) * rank)
    bias = _leaf(generator, 2 * groups)
    conv = getattr(nct, f"conv{rank}d")
    assert torch.autograd.gradcheck(
        lambda x, w, b: conv(x, w, b, stride, padding, dilation, groups), (x, w, bias))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("options", TRANSPOSE_OPTIONS, ids=str)
def test_conv_transpose_gradcheck(rank, options):
    stride, padding, output_padding, groups, dilation = options
    generator = torch.Generator().manual_seed(rank)
    x = _leaf(generator, 2, 2 * groups, *(4,) * rank)
    w = _leaf(generator, 2 * groups, 2, *(2,) * rank)
    bias = _leaf(generator, 2 * groups)
    conv_transpose = getattr(nct, f"conv_transpose{rank}d")
    assert torch.autograd.gradcheck(
        lambda x, w, b: conv_transpose(x, w, b, stride, padding, output_padding, groups, dilation),
        (x, w, bias))


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


def test_cpu_tensors_reach_the_kernels_without_copies():
    x = torch.randn(2, 3, 4)
    (view,) = nct._to_engine("test", x)
    assert np.shares_memory(view, x.numpy())


BAD_LAYER_INPUTS = [
    ("channels", lambda: nct.Conv2d(3, 4, 3)(torch.randn(1, 4, 8, 8)), ValueError,
     "numbaconv.torch.Conv2d: expected 3 input channels, got 4"),
    ("dims", lambda: nct.Conv3d(3, 4, 3)(torch.randn(3, 8, 8)), ValueError,
     "numbaconv.torch.Conv3d: expected input with 4 or 5 dims"),
    ("dtype-mismatch", lambda: nct.Conv1d(3, 4, 3).double()(torch.randn(1, 3, 8)), TypeError,
     "numbaconv.torch.Conv1d: input dtype torch.float32 does not match"),
    ("dtype-unsupported", lambda: nct.Conv2d(3, 4, 3).half()(torch.randn(1, 3, 8, 8).half()), TypeError,
     "numbaconv.torch.Conv2d: input dtype torch.float16 is not supported"),
    ("device", lambda: nct.Conv2d(3, 4, 3)(torch.randn(1, 3, 8, 8, device="meta")), RuntimeError,
     "numbaconv.torch.Conv2d: got a tensor on meta"),
    ("transpose-channels", lambda: nct.ConvTranspose2d(3, 4, 3)(torch.randn(1, 4, 8, 8)), ValueError,
     "numbaconv.torch.ConvTranspose2d: expected 3 input channels, got 4"),
    ("functional-channels", lambda: nct.conv1d(torch.randn(1, 5, 8), torch.randn(4, 2, 3), groups=2),
     ValueError, "numbaconv.torch.conv1d: expected 4 input channels, got 5"),
    ("functional-device", lambda: nct.conv_transpose2d(torch.randn(1, 3, 4, 4, device="meta"),
                                                       torch.randn(3, 2, 3, 3, device="meta")),
     RuntimeError, "need the CUDA engine"),
]


@pytest.mark.parametrize("case", BAD_LAYER_INPUTS, ids=lambda c: c[0])
def test_bad_input_names_the_layer(case):
    _, call, exception, message = case
    with pytest.raises(exception, match=message.replace("(", r"\(")):
        call()


def test_transpose_padding_mode_other_than_zeros_is_refused():
    layer = nct.ConvTranspose1d(2, 2, 3)
    layer.padding_mode = "reflect"      # torch.nn's constructor already refuses it
    with pytest.raises(ValueError, match="numbaconv.torch.ConvTranspose1d: only padding_mode='zeros'"):
        layer(torch.randn(1, 2, 5))


def test_importing_numbaconv_does_not_import_torch():
    code = "import sys, numbaconv, numbaconv.nn; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
