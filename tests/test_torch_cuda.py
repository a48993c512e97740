"""numbaconv.torch's CUDA routing: which engine a tensor's device picks, and the plumbing to numbaconv's
CUDA engine (device arrays on the tensors' memory, results back as tensors, torch's stream).

Without a GPU, torch cannot make CUDA tensors: the routing is tested with stand-ins (a CPU tensor
posing as a CUDA tensor, Numba device arrays made by copying, fake torch streams), and the CUDA
kernels run in Numba's simulator (tests/conftest.py). The two conversions that need a real GPU,
``numba.cuda.as_cuda_array`` on a tensor and ``torch.as_tensor`` on a device array, run only in
the tests at the end, which need PyTorch with CUDA and a GPU.
"""
import types

import numpy as np
import pytest
from numba import cuda   # tests/conftest.py has chosen a real GPU or the simulator by now

torch = pytest.importorskip("torch", reason="PyTorch is not installed: numbaconv.torch is skipped")
import numbaconv as nc  # noqa: E402
import numbaconv.torch as nct  # noqa: E402
from numbaconv.cuda import common  # noqa: E402

CUDA = torch.device("cuda", 0)
OPTIONS = ((2, 1), (1, 0, 0, 1), (1, 2), 2)   # stride, flat padding, dilation, groups
TORCH_CUDA = torch.cuda.is_available()


class CudaLike:
    """A CPU tensor posing as a CUDA tensor, for what the routing reads of one."""

    device, is_cpu, is_cuda = CUDA, False, True

    def __init__(self, tensor):
        self.tensor = tensor

    def dim(self):
        return self.tensor.dim()

    def detach(self):
        return self

    def contiguous(self):
        return self


class FakeStream:
    """A torch stream with a handle, recording the waits made on it into a shared list."""

    def __init__(self, handle, log):
        self.cuda_stream, self.log = handle, log

    def wait_stream(self, other):
        self.log.append(("wait", self.cuda_stream, other.cuda_stream))


@pytest.fixture
def fake_gpu(monkeypatch):
    """Stand-ins for torch's CUDA side: CudaLike tensors become device arrays by copying, results
    come back to the host, torch's current stream is handle 7 unless a test changes it and its
    default stream handle 0. Yields the log of stream waits and kernel calls."""
    log = []
    monkeypatch.setattr(nct, "_gpu_array", lambda t: cuda.to_device(t.tensor.numpy()))
    monkeypatch.setattr(nct, "_gpu_tensor", lambda array, device: torch.from_numpy(array.copy_to_host()))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream(7, log))
    monkeypatch.setattr(torch.cuda, "default_stream", lambda device=None: FakeStream(0, log))
    monkeypatch.setattr(common, "LAUNCH", common.Launch(threads=32, reduce_threads=8, gemm_threads=(2, 4),
                                                        gemm_registers=(2, 2), gemm_depth=4))
    yield log


def test_each_device_picks_its_engine(monkeypatch):
    """CPU tensors: NumPy views; CUDA tensors: the GPU path; anything else: an error naming the op."""
    gpu_calls = []
    monkeypatch.setattr(nct, "_on_gpu", lambda device, call, tensors: gpu_calls.append((device, tensors)))
    x, seen = torch.randn(2, 3), []

    def on_cpu(array, none):
        seen.append((np.shares_memory(array, x.numpy()), none))
        return np.zeros(1)

    assert isinstance(nct._on_device("op", on_cpu, x, None), torch.Tensor) and seen == [(True, None)]
    fake = CudaLike(x)
    nct._on_device("op", None, fake, None)
    assert gpu_calls == [(CUDA, [fake, None])]
    for device in ("meta", "mps"):
        with pytest.raises(RuntimeError, match=f"op: got a tensor on {device}; numbaconv runs CPU and CUDA"):
            nct._on_device("op", None, types.SimpleNamespace(device=torch.device(device), is_cpu=False,
                                                               is_cuda=False))


def test_other_devices_are_refused_by_name():
    tensor = types.SimpleNamespace(device=torch.device("mps"), is_cpu=False, is_cuda=False, is_meta=False)
    with pytest.raises(RuntimeError, match="numbaconv.torch.Conv1d: got a tensor on mps; numbaconv runs CPU"):
        nct._check_operands("numbaconv.torch.Conv1d", tensor, tensor, None, 2)


def test_cuda_tensors_run_numbaconvs_cuda_engine(fake_gpu):
    """Each operator's kernel (and the fused backward) on device arrays, against the CPU."""
    generator = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 2, 4, 3, generator=generator), torch.randn(2, 1, 2, 2, generator=generator)
    b = torch.randn(2, generator=generator)
    y = nct._conv_kernel(x, w, b, *OPTIONS)
    grad_y = torch.randn(y.shape, generator=generator)
    calls = [(nct._conv_kernel, (x, w, b)), (nct._conv_input_kernel, (grad_y, w, None, x.shape)),
             (nct._conv_weight_kernel, (x, grad_y, w.shape)), (nct._conv_backward_kernel, (grad_y, x, w))]
    for kernel, operands in calls:
        on_gpu = kernel(*(CudaLike(t) if isinstance(t, torch.Tensor) else t for t in operands), *OPTIONS)
        on_cpu = kernel(*operands, *OPTIONS)
        for actual, expected in zip(*(r if isinstance(r, tuple) else (r,) for r in (on_gpu, on_cpu))):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert fake_gpu == [("wait", 0, 7), ("wait", 7, 0)] * len(calls)


def test_torch_default_stream_needs_no_waits(fake_gpu, monkeypatch):
    """torch's current stream is its default stream, Numba's: the launches are in order already."""
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream(0, fake_gpu))
    ran = []
    with nct._on_torch_stream(CUDA):
        ran.append(True)
    assert ran and fake_gpu == []


def test_side_stream_orders_numbaconv_between(fake_gpu):
    """Another current stream: the default stream (Numba's) waits for it, then it for the default."""
    with nct._on_torch_stream(CUDA):
        fake_gpu.append("kernels")
    assert fake_gpu == [("wait", 0, 7), "kernels", ("wait", 7, 0)]


# ---- on a GPU, with PyTorch built for CUDA ------------------------------------------------------

needs_gpu = pytest.mark.skipif(not TORCH_CUDA, reason="needs PyTorch with CUDA and a GPU")


@needs_gpu
def test_cuda_gradcheck_and_gradgradcheck():
    generator = torch.Generator(device="cuda").manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, device="cuda", generator=generator).requires_grad_()

    x, w, b = leaf(2, 4, 5, 5), leaf(4, 2, 2, 2), leaf(4)
    for function in (lambda x, w, b: nct.conv2d(x, w, b, 2, 1, 1, 2),
                     lambda x, w, b: nct.conv_transpose2d(x, w, b, 2, 1, 1, 2, 1)):
        assert torch.autograd.gradcheck(function, (x, w, b))
        assert torch.autograd.gradgradcheck(function, (x, w, b))


@needs_gpu
def test_cuda_results_share_memory_with_numbaconvs_arrays(monkeypatch):
    """The input reaches numbaconv without a copy, and the output is the engine's own array."""
    import numbaconv.functional as functional
    seen = {}
    original = functional.conv2d

    def conv2d(x, w, *args):
        seen["x"], seen["y"] = x, original(x, w, *args)
        return seen["y"]

    monkeypatch.setattr(functional, "conv2d", conv2d)
    x, w = torch.randn(2, 3, 8, 8, device="cuda"), torch.randn(4, 3, 3, 3, device="cuda")
    y = nct.conv2d(x, w)
    assert seen["x"].__cuda_array_interface__["data"][0] == x.data_ptr()
    assert seen["y"].__cuda_array_interface__["data"][0] == y.data_ptr()
    torch.testing.assert_close(y.cpu(), torch.from_numpy(nc.conv2d(x.cpu().numpy(), w.cpu().numpy())),
                               rtol=1e-5, atol=1e-5)


@needs_gpu
def test_cuda_training_steps_match_torch_nn_on_a_side_stream(monkeypatch):
    """Five SGD steps of a small CNN on CUDA tensors, run on a non-default stream, against torch.nn
    (cuDNN without TF32, so that both compute in float32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    def build(namespace):
        torch.manual_seed(0)
        return torch.nn.Sequential(namespace.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                   namespace.Conv2d(8, 8, 3, stride=2, groups=2), torch.nn.ReLU(),
                                   namespace.ConvTranspose2d(8, 2, 2, stride=2)).cuda()

    x = torch.randn(4, 3, 10, 10, device="cuda")
    models = [build(torch.nn), build(nct)]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for model in models:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for _ in range(5):
                optimizer.zero_grad()
                model(x).square().mean().backward()
                optimizer.step()
    torch.cuda.synchronize()
    for reference, ours in zip(*(model.parameters() for model in models)):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
