"""The CUDA engine: every algorithm x pass x dtype against the reference, device selection,
GPU arrays in and out, bias, N = 0, and a clear error without a GPU.

Without a real GPU these run in Numba's CUDA simulator (tests/conftest.py turns
it on), which runs every GPU thread as a Python thread: the grid below is
small and most tests shrink the blocks (``SMALL_LAUNCH``) so that edge tiles,
several blocks and grid-stride loops are all exercised in seconds.
``test_default_launch`` runs the shipped block shapes. On a real GPU
(bench/gpu_check.sh) the same tests run in hardware.
"""
import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda   # tests/conftest.py has chosen a real GPU or the simulator by now

from conftest import REAL_GPU, assert_close, poisoned, random_array, random_problem
import numbaconv as nc
from numbaconv import dispatch, reference
from numbaconv.devices import on_gpu, resolve_device
from numbaconv.cuda import common, gemm, im2col
from numbaconv.spec import ConvSpec

ALGORITHMS = nc.algorithms("cuda")
DTYPES = [np.float32, np.float64]
SMALL_LAUNCH = common.Launch(threads=32, reduce_threads=8, gemm_threads=(2, 4), gemm_registers=(2, 2),
                             gemm_depth=4)
# Tiny problems (the simulator runs a Python thread per GPU thread) that still cover stride > 1,
# asymmetric and "same" padding, dilation, groups, depthwise, 1-d and 3-d:
# (name, x_shape, w_shape, stride, padding, dilation, groups), as in numbaconv/tools/grid.py.
CUDA_CASES = [
    ("2d-strided-asymmetric-dilated-groups", (2, 2, 5, 4), (4, 1, 3, 2), (2, 1), ((1, 0), (0, 2)), (1, 2), 2),
    ("2d-depthwise-same", (1, 3, 4, 3), (3, 1, 2, 2), 1, "same", 1, 3),
    ("1d-strided-dilated", (2, 2, 7), (3, 2, 3), 2, ((2, 1),), 2, 1),
    ("3d-mixed", (1, 2, 3, 2, 4), (2, 1, 2, 2, 2), (1, 2, 1), ((1, 0), (0, 1), (1, 1)), (1, 1, 2), 2),
]


@pytest.fixture
def small_launch(monkeypatch):
    if not REAL_GPU:
        monkeypatch.setattr(common, "LAUNCH", SMALL_LAUNCH)


def check_passes(module, spec, x, w, grad_y, dtype):
    """The three passes of a CUDA algorithm module into poisoned device outputs, against the reference."""
    spec3d = spec.as_3d()
    x5, w5, gy5 = (cuda.to_device(a.reshape(s)) for a, s in
                   ((x, spec3d.x_shape), (w, spec3d.w_shape), (grad_y, spec3d.y_shape)))
    for name, run, shape, expected in (
            ("forward", lambda out: module.forward(spec3d, x5, w5, out), spec3d.y_shape,
             reference.forward(spec, x, w)),
            ("input gradient", lambda out: module.backward_input(spec3d, gy5, w5, out), spec3d.x_shape,
             reference.backward_input(spec, grad_y, w)),
            ("weight gradient", lambda out: module.backward_weight(spec3d, x5, gy5, out), spec3d.w_shape,
             reference.backward_weight(spec, x, grad_y))):
        out = cuda.to_device(poisoned(shape, dtype))
        run(out)
        assert_close(out.copy_to_host().reshape(expected.shape), expected, dtype, name)
    for device_array, original in ((x5, x), (w5, w), (gy5, grad_y)):
        np.testing.assert_array_equal(device_array.copy_to_host().reshape(original.shape), original)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("algo", ALGORITHMS)
@pytest.mark.parametrize("case", CUDA_CASES, ids=[c[0] for c in CUDA_CASES])
def test_kernel_passes_match_reference(rng, small_launch, case, algo, dtype):
    spec, x, w, grad_y = random_problem(rng, case, dtype)
    check_passes(dispatch.REGISTRY["cuda"][algo], spec, x, w, grad_y, dtype)


@pytest.mark.parametrize("algo, w_shape", [("direct", (2, 1, 2, 2)), ("im2col", (65, 1, 2, 2))])
def test_default_launch(rng, algo, w_shape):
    """The shipped block shapes: 128-thread reductions; 64 x 64 GEMM tiles, one cut by the edge."""
    spec, x, w, grad_y = random_problem(rng, ("", (1, 1, 3, 3), w_shape, 1, 0, 1, 1), np.float32)
    check_passes(dispatch.REGISTRY["cuda"][algo], spec, x, w, grad_y, np.float32)


def test_im2col_batch_chunks(rng, small_launch, monkeypatch):
    """One sample per chunk: the weight gradient accumulates over chunks."""
    monkeypatch.setattr("numbaconv.cpu.workspace.WORKSPACE_LIMIT_BYTES", 1)   # the limit set_workspace_limit sets
    spec, x, w, grad_y = random_problem(rng, ("", (3, 2, 4, 4), (2, 2, 2, 2), 2, 1, 1, 1), np.float64)
    assert im2col._Columns(spec.as_3d(), np.float64).chunk == 1
    check_passes(im2col, spec, x, w, grad_y, np.float64)


@pytest.mark.parametrize("transpose_a, transpose_b", [(False, False), (True, False), (False, True)])
def test_matmul_edges_broadcast_and_batch_sum(rng, small_launch, transpose_a, transpose_b):
    """Odd shapes (edge tiles), a operand repeating over batches, c summing over them, accumulate."""
    m, k, n = 5, 6, 7
    a = random_array(rng, (2, k, m) if transpose_a else (2, m, k))
    b = random_array(rng, (6, n, k) if transpose_b else (6, k, n))
    op_a = a.transpose(0, 2, 1) if transpose_a else a
    op_b = b.transpose(0, 2, 1) if transpose_b else b
    products = np.stack([op_a[z % 2] @ op_b[z] for z in range(6)])
    c = cuda.to_device(poisoned((6, m, n), np.float64))
    gemm.matmul(cuda.to_device(a), cuda.to_device(b), c, transpose_a=transpose_a, transpose_b=transpose_b)
    assert_close(c.copy_to_host(), products, np.float64, "per batch")
    start = random_array(rng, (3, m, n))
    c = cuda.to_device(start)
    gemm.matmul(cuda.to_device(a), cuda.to_device(b), c, transpose_a=transpose_a, transpose_b=transpose_b,
                accumulate=True)
    assert_close(c.copy_to_host(), start + products[:3] + products[3:], np.float64, "summed over batches")


def test_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="do not agree"):
        gemm.matmul(cuda.device_array((1, 3, 4)), cuda.device_array((1, 5, 2)), cuda.device_array((1, 3, 2)))


def test_public_api_numpy_and_gpu_arrays(rng, small_launch):
    x, w, bias = random_array(rng, (2, 2, 4, 3)), random_array(rng, (4, 1, 2, 2)), random_array(rng, (4,))
    kwargs = dict(stride=(2, 1), padding="same", groups=2)
    expected = reference.conv2d(x, w, bias, **kwargs)
    y = nc.conv2d(x, w, bias, **kwargs, device="cuda")            # NumPy in, NumPy out
    assert isinstance(y, np.ndarray)
    assert_close(y, expected, np.float64, "numpy in")
    y = nc.conv2d(cuda.to_device(x), cuda.to_device(w), cuda.to_device(bias), **kwargs)   # auto: on the GPU
    assert on_gpu(y) and y.shape == expected.shape
    assert_close(y.copy_to_host(), expected, np.float64, "device arrays in")
    y = nc.conv2d(cuda.to_device(x), w, bias, **kwargs)           # mixed: host operands copied in
    assert on_gpu(y)
    assert_close(y.copy_to_host(), expected, np.float64, "mixed")


def test_non_contiguous_gpu_input_is_made_contiguous(rng, small_launch):
    x_wide, w = random_array(rng, (1, 2, 3, 8)), random_array(rng, (2, 2, 2, 2))
    x_device = cuda.to_device(x_wide)[:, :, :, ::2]
    assert not x_device.is_c_contiguous()
    y = nc.conv2d(x_device, w, algo="direct")
    assert_close(y.copy_to_host(), reference.conv2d(x_wide[:, :, :, ::2], w), np.float64, "strided input")
    np.testing.assert_array_equal(cuda.to_device(x_wide).copy_to_host(), x_wide)


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_backward_transpose_and_ranks_on_gpu(rng, small_launch, algo):
    gy_shape, x, w = (2, 4, 2, 2), random_array(rng, (2, 2, 3, 3)), random_array(rng, (4, 1, 2, 2))
    grad_y = random_array(rng, gy_shape)
    grads = nc.conv2d_backward(cuda.to_device(grad_y), cuda.to_device(x), cuda.to_device(w), groups=2, algo=algo)
    for got, want, name in zip(grads, reference.conv2d_backward(grad_y, x, w, groups=2), "xwb"):
        assert on_gpu(got)
        assert_close(got.copy_to_host(), want, np.float64, f"grad {name}")
    wt, bias = random_array(rng, (2, 2, 2, 2)), random_array(rng, (2,))
    up = nc.conv_transpose2d(x, wt, bias, stride=2, padding=1, output_padding=1, algo=algo, device="cuda")
    assert_close(up, reference.conv_transpose2d(x, wt, bias, stride=2, padding=1, output_padding=1),
                 np.float64, "conv_transpose2d with bias")
    x1, w1 = random_array(rng, (1, 2, 6), np.float32), random_array(rng, (2, 2, 3), np.float32)
    assert_close(nc.conv1d(x1, w1, stride=2, algo=algo, device="cuda"), reference.conv1d(x1, w1, stride=2),
                 np.float32, "conv1d")
    x3, w3 = random_array(rng, (1, 1, 2, 3, 2)), random_array(rng, (2, 1, 2, 2, 2))
    assert_close(nc.conv3d_input(x3.shape, w3, reference.conv3d(x3, w3), algo=algo, device="cuda"),
                 reference.conv3d_input(x3.shape, w3, reference.conv3d(x3, w3)), np.float64, "conv3d_input")


def test_empty_batch_on_gpu():
    x, w, bias = np.ones((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), np.ones(3)
    y = nc.conv2d(cuda.to_device(x), cuda.to_device(w), cuda.to_device(bias))
    assert on_gpu(y) and y.shape == (0, 3, 3, 3)
    grad_x, grad_w, grad_b = nc.conv2d_backward(np.ones((0, 3, 3, 3)), x, w, device="cuda")
    assert grad_x.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(grad_w, np.zeros((3, 2, 3, 3)))
    np.testing.assert_array_equal(grad_b, np.zeros(3))


def test_device_selection(monkeypatch):
    x = np.ones((1, 1, 3, 3))
    monkeypatch.delenv("NUMBACONV_DEVICE", raising=False)
    assert resolve_device("auto", x) == "cpu"
    assert resolve_device("auto", x, cuda.to_device(x)) == "cuda"
    assert resolve_device("cuda", x) == "cuda"
    monkeypatch.setenv("NUMBACONV_DEVICE", "cuda")
    assert resolve_device("auto", x) == "cuda"
    assert resolve_device("cpu", x) == "cpu"
    with pytest.raises(ValueError, match="copy them to the host"):
        resolve_device("cpu", cuda.to_device(x))


def test_auto_rule_on_gpu():
    assert set(ALGORITHMS) == {"direct", "im2col"}
    depthwise = ConvSpec.create((1, 8, 9, 9), (8, 1, 3, 3), groups=8).as_3d()
    dense = ConvSpec.create((1, 8, 9, 9), (8, 8, 3, 3)).as_3d()
    assert dispatch.choose("cuda", "auto", depthwise) is dispatch.REGISTRY["cuda"]["direct"]
    assert dispatch.choose("cuda", "auto", dense) is dispatch.REGISTRY["cuda"]["im2col"]
    with pytest.raises(ValueError, match="unknown algo"):
        dispatch.choose("cuda", "shifted", dense)


@pytest.mark.skipif(REAL_GPU, reason="a GPU is present")
def test_no_gpu_raises_a_clear_error():
    """Without a GPU and without the simulator, "cuda" is refused clearly (in a fresh process)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBACONV_DEVICE")}
    script = (
        "import numpy as np, numbaconv as nc\n"
        "assert nc.devices() == ('cpu',) and nc.algorithms('cuda') == (), nc.devices()\n"
        "x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))\n"
        "assert nc.conv2d(x, w).shape == (1, 1, 2, 2)\n"
        "for call in (lambda: nc.conv2d(x, w, device='cuda'), lambda: nc.conv2d_input(x.shape, w, x[..., :2, :2], device='cuda')):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as error:\n"
        "        assert 'no usable GPU' in str(error), error\n"
        "    else:\n"
        "        raise AssertionError('no error')\n"
        "import os; os.environ['NUMBACONV_DEVICE'] = 'cuda'\n"
        "try:\n"
        "    nc.conv2d(x, w)\n"
        "except RuntimeError as error:\n"
        "    assert 'no usable GPU' in str(error), error\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "print('ok')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_tune_on_the_gpu(rng, tmp_path, monkeypatch):
    """algo="tune" names the GPU in its plans (the simulator's device has no name)."""
    from numbaconv import tuning
    monkeypatch.setenv("NUMBACONV_CACHE_DIR", str(tmp_path))
    tuning.forget()
    x, w = random_array(rng, (1, 2, 6, 6), np.float32), random_array(rng, (2, 2, 3, 3), np.float32)
    y = nc.conv2d(x, w, padding=1, algo="tune", device="cuda")
    assert_close(y, reference.conv2d(x.astype(np.float64), w.astype(np.float64), padding=1), np.float32)
    assert tuning.lookup("cuda", "forward", ConvSpec.create(x.shape, w.shape, padding=1).as_3d(), np.float32)
    tuning.forget()
