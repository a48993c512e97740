"""numbaconv's CUDA engine against PyTorch (cuDNN, TF32 off) on 2-d layers, timed with CUDA events.

    python bench/gpu_check.py                 # on a GPU machine (bench/gpu_check.sh runs it)
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_check.py --smoke   # the logic on a tiny layer, no GPU

For each layer (N=8, float32): forward, and backward (input and weight
gradients, FLOPs counted for both). Both libraries read the same PyTorch
tensors (numbaconv through the CUDA Array Interface, no copy). After a
warm-up (the first call compiles the kernels: its time is reported on its own),
the two run alternately ``--repeats`` times and the best time of each is kept.
"""
import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numbaconv as nc  # noqa: E402
from numbaconv.spec import ConvSpec  # noqa: E402

# name, in channels, out channels, image size, kernel, stride, padding
LAYERS = [
    ("3x3 64ch 56x56", 64, 64, 56, 3, 1, 1),
    ("3x3 128ch 28x28", 128, 128, 28, 3, 1, 1),
    ("3x3 256ch 14x14", 256, 256, 14, 3, 1, 1),
    ("3x3 512ch 7x7", 512, 512, 7, 3, 1, 1),
    ("1x1 256->64 56x56", 256, 64, 56, 1, 1, 0),
    ("7x7/2 stem 3->64 224x224", 3, 64, 224, 7, 2, 3),
]
SMOKE_LAYERS = [("3x3 4ch 6x6 (smoke)", 4, 4, 6, 3, 1, 1)]


class Timer:
    """Seconds of one call: CUDA events on a GPU, the wall clock in the simulator or on the CPU."""

    def __init__(self, use_events):
        from numba import cuda
        self.cuda, self.use_events = cuda, use_events

    def __call__(self, function):
        if not self.use_events:
            start = time.perf_counter()
            function()
            return time.perf_counter() - start
        start, stop = self.cuda.event(timing=True), self.cuda.event(timing=True)
        start.record()
        function()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one tiny layer, batch 1 (for the simulator)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--algo", default="auto", help="numbaconv algorithm (default: auto)")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    on_gpu = torch.cuda.is_available() and not args.smoke
    if not on_gpu and not args.smoke:
        sys.exit("gpu_check: PyTorch sees no CUDA GPU; use --smoke with NUMBA_ENABLE_CUDASIM=1 to test the logic")
    if "cuda" not in nc.devices():
        sys.exit("gpu_check: numba.cuda finds no GPU (and the simulator is off)")
    torch_device = "cuda" if on_gpu else "cpu"
    batch, layers = (1, SMOKE_LAYERS) if args.smoke else (8, LAYERS)
    repeats, warmup = (1, 1) if args.smoke else (args.repeats, args.warmup)
    timer = Timer(use_events=on_gpu)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    print(f"numbaconv CUDA ({args.algo}) vs PyTorch {torch.__version__} "
          f"({torch.cuda.get_device_name() if on_gpu else 'CPU, smoke run'}), N={batch}, float32, TF32 off; "
          f"best of {repeats} after {warmup} warm-up calls")
    header = (f"{'layer':26} {'pass':8} {'numbaconv ms':>12} {'GFLOP/s':>9} {'torch ms':>9} {'GFLOP/s':>9} "
              f"{'torch/nc':>8} {'1st call s':>10}")
    print(header)
    print("-" * len(header))
    generator = torch.Generator(device=torch_device).manual_seed(0)
    for name, channels, filters, size, kernel, stride, padding in layers:
        spec = ConvSpec.create((batch, channels, size, size), (filters, channels, kernel, kernel),
                               stride, padding)
        x = torch.randn(spec.x_shape, device=torch_device, generator=generator)
        w = torch.randn(spec.w_shape, device=torch_device, generator=generator)
        grad_y = torch.randn(spec.y_shape, device=torch_device, generator=generator)
        operands = (x, w, grad_y) if on_gpu else tuple(nc_device(t) for t in (x, w, grad_y))
        nx, nw, ngy = operands
        passes = {
            "forward": (spec.flops,
                        lambda: nc.conv2d(nx, nw, stride=stride, padding=padding, algo=args.algo),
                        lambda: F.conv2d(x, w, stride=stride, padding=padding)),
            "backward": (2 * spec.flops,
                         lambda: nc.conv2d_backward(ngy, nx, nw, stride=stride, padding=padding, bias=False,
                                                    algo=args.algo),
                         lambda: torch.ops.aten.convolution_backward(
                             grad_y, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
                             [True, True, False])),
        }
        for pass_name, (flops, ours, theirs) in passes.items():
            start = time.perf_counter()
            first_result = ours()   # the first call of a dtype compiles the kernels
            sync()
            first_call = time.perf_counter() - start
            check(pass_name, first_result, theirs())
            for _ in range(warmup):
                ours(), theirs()
            sync()
            best_ours = best_theirs = math.inf
            for _ in range(repeats):
                best_ours = min(best_ours, timer(ours))
                best_theirs = min(best_theirs, timer(theirs))
            print(f"{name:26} {pass_name:8} {best_ours * 1e3:12.3f} {flops / best_ours / 1e9:9.1f} "
                  f"{best_theirs * 1e3:9.3f} {flops / best_theirs / 1e9:9.1f} {best_theirs / best_ours:8.2f} "
                  f"{first_call:10.2f}")


def nc_device(tensor):
    """A CPU tensor as a Numba device array (the simulator cannot read PyTorch memory)."""
    from numba import cuda
    return cuda.to_device(tensor.numpy())


def to_numpy(result):
    if hasattr(result, "copy_to_host"):
        return result.copy_to_host()
    return result.detach().cpu().numpy()


def check(pass_name, ours, theirs):
    """The two libraries agree to float32 accuracy (norm-relative 1e-4) before anything is timed."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    for mine, reference in zip(ours, theirs):
        if mine is None:
            continue
        mine, reference = to_numpy(mine).astype(np.float64), to_numpy(reference).astype(np.float64)
        error = np.linalg.norm(mine - reference) / np.linalg.norm(reference)
        if not error <= 1e-4:
            sys.exit(f"gpu_check: {pass_name} differs from PyTorch: relative error {error:.2e}")


if __name__ == "__main__":
    main()
