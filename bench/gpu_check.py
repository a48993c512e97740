"""numbaconv's CUDA engine against PyTorch (cuDNN, TF32 off) on 2-d layers, timed with CUDA events.

    python bench/gpu_check.py                 # on a GPU machine (bench/gpu_check.sh runs it)
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_check.py --smoke   # the logic on a tiny layer, no GPU

The layers are the bench suite's ResNet-style 2-d layers (numbaconv/tools/suite.py, N=8,
float32). For each: forward, and backward (input and weight gradients, FLOPs counted for
both). Both libraries read the same PyTorch tensors (numbaconv through the CUDA Array
Interface, no copy). After a warm-up (the first call compiles the kernels: its time is
reported on its own), the two take turns ``--repeats`` times and the best time of each is kept
(numbaconv.timing).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numbaconv as nc  # noqa: E402
from numbaconv import timing  # noqa: E402
from numbaconv.accuracy import relative_error  # noqa: E402
from numbaconv.tools.suite import LAYERS, Layer  # noqa: E402

LAYER_NAMES = ("conv3x3_64", "conv3x3_128", "conv3x3_256", "conv3x3_512", "conv1x1_256to64", "stem7x7s2")
SMOKE_LAYER = Layer("smoke3x3_4ch", 1, 4, 4, (6, 6), (3, 3), padding=1)
# cuDNN and numbaconv sum in different orders, both in float32 (TF32 off)
AGREEMENT = 1e-4


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
    from numba import cuda
    torch_device = "cuda" if on_gpu else "cpu"
    layers = [SMOKE_LAYER] if args.smoke else [LAYERS[name] for name in LAYER_NAMES]
    repeats, warmup = (1, 1) if args.smoke else (args.repeats, args.warmup)
    sync = torch.cuda.synchronize if on_gpu else cuda.synchronize
    clock = timing.event_clock(cuda.event) if on_gpu else timing.host_clock(sync)
    print(f"numbaconv CUDA ({args.algo}) vs PyTorch {torch.__version__} "
          f"({torch.cuda.get_device_name() if on_gpu else 'CPU, smoke run'}), N={layers[0].batch}, float32, "
          f"TF32 off; best of {repeats} after {warmup} warm-up calls")
    header = (f"{'layer':26} {'pass':8} {'numbaconv ms':>12} {'GFLOP/s':>9} {'torch ms':>9} {'GFLOP/s':>9} "
              f"{'torch/nc':>8} {'1st call s':>10}")
    print(header)
    print("-" * len(header))
    generator = torch.Generator(device=torch_device).manual_seed(0)
    for layer in layers:
        spec, options = layer.spec, layer.arguments
        x = torch.randn(spec.x_shape, device=torch_device, generator=generator)
        w = torch.randn(spec.w_shape, device=torch_device, generator=generator)
        grad_y = torch.randn(spec.y_shape, device=torch_device, generator=generator)
        operands = (x, w, grad_y) if on_gpu else tuple(nc_device(t) for t in (x, w, grad_y))
        nx, nw, ngy = operands
        passes = {
            "forward": (spec.flops,
                        lambda: nc.conv2d(nx, nw, **options, algo=args.algo),
                        lambda: F.conv2d(x, w, **options)),
            "backward": (2 * spec.flops,
                         lambda: nc.conv2d_backward(ngy, nx, nw, **options, bias=False, algo=args.algo),
                         lambda: torch.ops.aten.convolution_backward(
                             grad_y, x, w, None, [layer.stride] * 2, [layer.padding] * 2, [layer.dilation] * 2,
                             False, [0, 0], layer.groups, [True, True, False])),
        }
        for pass_name, (flops, ours, theirs) in passes.items():
            first_result, first_call = timing.timed_call(ours, sync)   # the first call of a dtype compiles
            check(pass_name, first_result, theirs())
            best_ours, best_theirs = timing.best_times([ours, theirs], clock, warmup=warmup, rounds=repeats)
            print(f"{layer.name:26} {pass_name:8} {best_ours * 1e3:12.3f} {flops / best_ours / 1e9:9.1f} "
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
    """The two libraries agree to float32 accuracy (norm-relative ``AGREEMENT``) before anything is timed."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    theirs = theirs if isinstance(theirs, tuple) else (theirs,)
    for mine, reference in zip(ours, theirs):
        if mine is None:
            continue
        error = relative_error(to_numpy(mine), to_numpy(reference))
        if not error <= AGREEMENT:
            sys.exit(f"gpu_check: {pass_name} differs from PyTorch: relative error {error:.2e}")


if __name__ == "__main__":
    main()
