"""Depthwise layers with kernels of 3x3 to 31x31: planar, blocked and depthwise, pass by pass.

``planar`` sums nine taps per pass over a whole padded plane, loading and
storing its plane of sums each pass; ``blocked`` puts 16 channels in SIMD
lanes and sums a whole kernel row into four outputs held in registers;
``depthwise`` (3x3 only) runs rows of planes with masks. Times them, with
PyTorch and ``auto``, for the forward, input and weight gradient of square
depthwise kernels on planes of 7x7 to 112x112 (padding ``k // 2``), taking
turns in one process (numbaconv.timing.best_times, each call after the same
call ran untimed for 20 ms), float32, and prints the ms of each ("-" where
an algorithm does not run the layer). ``numbaconv.dispatch``'s depthwise
rule rests on them (docs/decisions.md, D2).

    python bench/depthwise_kernels.py [--kernels 3,5,7,9,13,17,21,25,31] [--rounds 8]

Needs PyTorch.
"""
import argparse

import numpy as np
import torch

import numbaconv
from numbaconv import dispatch
from numbaconv.spec import ConvSpec
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

# channels, plane side, batch: MobileNetV2's (N=4), ConvNeXt's and RepLKNet's stages (N=2)
PLANES = [(32, 112, 4), (144, 56, 4), (192, 28, 4), (576, 14, 4), (960, 7, 4),
          (96, 56, 2), (128, 56, 2), (256, 28, 2), (384, 14, 2), (768, 7, 2)]
IMPLEMENTATIONS = ("torch", "planar", "blocked", "depthwise", "auto")


def _calls(x, w, grad_y, padding):
    """{pass: [PyTorch's call, then numbaconv's with each algorithm]} for one depthwise layer."""
    groups = x.shape[1]
    tx, tw, tgy = map(torch.from_numpy, (x, w, grad_y))
    options = dict(padding=padding, groups=groups)
    torch_calls = {
        "forward": lambda: torch.nn.functional.conv2d(tx, tw, **options),
        "input": lambda: torch.nn.grad.conv2d_input(x.shape, tw, tgy, **options),
        "weight": lambda: torch.nn.grad.conv2d_weight(tx, w.shape, tgy, **options),
    }
    ours = {
        "forward": lambda algo: lambda: numbaconv.conv2d(x, w, algo=algo, **options),
        "input": lambda algo: lambda: numbaconv.conv2d_input(x.shape, w, grad_y, algo=algo, **options),
        "weight": lambda algo: lambda: numbaconv.conv2d_weight(x, w.shape, grad_y, algo=algo, **options),
    }
    runs = dispatch.runnable("cpu", ConvSpec.create(x.shape, w.shape, 1, padding, 1, groups).as_3d())
    return {name: [torch_calls[name]] + [ours[name](algo) if algo == "auto" or algo in runs else None
                                         for algo in IMPLEMENTATIONS[1:]] for name in ours}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default="3,5,7,9,13,17,21,25,31", help="comma-separated kernel sides")
    parser.add_argument("--planes", help="comma-separated plane sides to keep (default: all)")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds, the calls taking turns")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    print("ms of " + " / ".join(IMPLEMENTATIONS) + " per pass")
    sides = None if args.planes is None else {int(side) for side in args.planes.split(",")}
    for channels, side, batch in PLANES:
        if sides is not None and side not in sides:
            continue
        for kernel in (int(k) for k in args.kernels.split(",")):
            if kernel > side:
                continue
            x = rng.standard_normal((batch, channels, side, side), dtype=np.float32)
            w = rng.standard_normal((channels, 1, kernel, kernel), dtype=np.float32)
            grad_y = rng.standard_normal(x.shape, dtype=np.float32)
            cells = []
            for pass_name, calls in _calls(x, w, grad_y, kernel // 2).items():
                timed = [call for call in calls if call is not None]
                times = iter(best_times(timed, budget_s=1.5, max_rounds=args.rounds, settle_s=0.02))
                cells.append(f"{pass_name} " + " / ".join("-" if call is None else f"{next(times) * 1e3:.2f}"
                                                          for call in calls))
            print(f"{channels}ch {side}x{side} N={batch} {kernel}x{kernel}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
