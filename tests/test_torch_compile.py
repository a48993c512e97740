"""numbaconv.torch under torch.compile and torch.export: the custom operators, no graph breaks."""
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed: numbaconv.torch is skipped")
import numbaconv.torch as nct  # noqa: E402


def _cnn():
    """A small float32 CNN of numbaconv.torch layers: plain, strided grouped and transposed."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        nct.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        nct.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        nct.ConvTranspose2d(8, 4, 2, stride=2), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 5))


def _relative_error(actual, expected):
    return (torch.linalg.norm(actual - expected) / torch.linalg.norm(expected)).item()


def _outputs_and_gradients(model, x):
    """The model's output and the gradients of its parameters and input, for a fixed output gradient."""
    model.zero_grad()
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(torch.linspace(-1, 1, y.numel()).reshape(y.shape))
    return [y, x.grad, *(p.grad for p in model.parameters())]


def _assert_matches_eager(compiled, model, inputs, tolerance):
    for x in inputs:
        expected = _outputs_and_gradients(model, x)
        for index, (actual, wanted) in enumerate(zip(_outputs_and_gradients(compiled, x), expected)):
            assert actual.shape == wanted.shape
            assert _relative_error(actual, wanted) <= tolerance, f"output/gradient {index}"


@pytest.fixture(scope="module")
def inductor():
    """Skip where torch.compile's inductor backend cannot build its C++ kernels (a machine
    without a C++ compiler)."""
    try:
        torch.compile(lambda x: x.sin() + 1, backend="inductor", fullgraph=True)(torch.ones(3))
    except torch._dynamo.exc.BackendCompilerFailed as error:
        pytest.skip(f"inductor cannot compile on this machine: {error}")


def test_compiled_cnn_matches_eager(inductor):
    """fullgraph=True: the convolutions, forward and backward, run as custom operator nodes."""
    model = _cnn()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    _assert_matches_eager(compiled, model, [torch.randn(4, 3, 8, 8)], tolerance=1e-6)


def test_dynamic_shapes_and_channels_last_compile():
    """Symbolic sizes reach the shape functions ("same" padding, a transposed convolution whose
    input is zero-extended); a channels_last input is one more graph. aot_eager: no C++ needed."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        nct.Conv2d(3, 4, 3, padding="same", padding_mode="reflect"), torch.nn.Tanh(),
        nct.ConvTranspose2d(4, 2, 2, stride=1, padding=1, output_padding=2, dilation=3)).double()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    inputs = [torch.randn(2, 3, 6, 7, dtype=torch.float64), torch.randn(3, 3, 5, 9, dtype=torch.float64),
              torch.randn(2, 3, 6, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)]
    _assert_matches_eager(compiled, model, inputs, tolerance=1e-12)
    assert compiled(inputs[2]).is_contiguous(memory_format=torch.channels_last)


def test_export_captures_the_operators():
    model = _cnn().eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x,))
    targets = [str(node.target) for node in program.graph.nodes if node.op == "call_function"]
    assert [t for t in targets if t.startswith("numbaconv.")] == [
        "numbaconv.conv.default", "numbaconv.conv.default", "numbaconv.conv_input.default"]
    assert torch.equal(program.module()(x), model(x))


@pytest.mark.parametrize("name, args", [
    ("conv", lambda t: (t(2, 4, 5, 6), t(6, 2, 2, 3), t(6), [2, 1], [1, 0, 0, 2], [1, 2], 2)),
    ("conv_input", lambda t: (t(2, 6, 3, 5), t(6, 2, 2, 3), t(4), [2, 4, 5, 6], [2, 1], [0, 1, 1, 0], [1, 1], 2)),
    ("conv_weight", lambda t: (t(1, 3, 7), t(1, 2, 5), [2, 3, 3], [1], [0, 0], [1], 1)),
])
def test_operator_registrations_pass_opcheck(name, args):
    """torch.library.opcheck: schema, shape function against the kernel, autograd registration."""
    def tensor(*shape):
        return torch.randn(*shape, dtype=torch.float64, requires_grad=True)

    torch.library.opcheck(getattr(torch.ops.numbaconv, name).default, args(tensor))
