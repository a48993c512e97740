"""Speed of numbaconv's CPU engine against PyTorch on the core 3x3 layers.

    python bench/speed_floor.py [--repeats 7] [--dtype float32]

Layers: N=8, 3x3, padding 1, 64ch 56x56, 128ch 28x28, 256ch 14x14, 512ch 7x7.
Forward is conv2d with algo="auto"; backward is the input gradient plus the
weight gradient. Each implementation is warmed up (compilation excluded), then
the implementations alternate and the best of the repeats counts; ratio =
PyTorch time / numbaconv time (above 1 means numbaconv is faster). Every
result is checked against PyTorch before it is timed.
"""
import argparse
import time

import numpy as np

import numbaconv as nc

LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]
BATCH = 8


def best_times(functions, repeats):
    """Best wall time of each function, calling them in turn ``repeats`` times after one warm-up."""
    for function in functions:
        function()
    best = [float("inf")] * len(functions)
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: the comparison columns stay empty")
    rng = np.random.default_rng(0)
    print(f"{'layer':<16}{'pass':<10}{'numbaconv ms':>13}{'GFLOP/s':>9}{'torch ms':>10}{'ratio':>7}{'max rel err':>13}")
    for channels, size in LAYERS:
        x = rng.standard_normal((BATCH, channels, size, size)).astype(args.dtype)
        w = rng.standard_normal((channels, channels, 3, 3)).astype(args.dtype)
        grad_y = rng.standard_normal(x.shape).astype(args.dtype)
        flops = nc.ConvSpec.create(x.shape, w.shape, padding=1).flops
        ours = {
            "forward": lambda: nc.conv2d(x, w, padding=1),
            "backward": lambda: (nc.conv2d_input(x.shape, w, grad_y, padding=1),
                                 nc.conv2d_weight(x, w.shape, grad_y, padding=1)),
        }
        theirs = {}
        if torch is not None:
            xt, wt, gyt = (torch.from_numpy(a) for a in (x, w, grad_y))
            theirs = {
                "forward": lambda: torch.nn.functional.conv2d(xt, wt, padding=1),
                "backward": lambda: (torch.nn.grad.conv2d_input(xt.shape, wt, gyt, padding=1),
                                     torch.nn.grad.conv2d_weight(xt, wt.shape, gyt, padding=1)),
            }
        for name, run in ours.items():
            pass_flops = flops * (2 if name == "backward" else 1)
            error = ""
            if name in theirs:
                results = run() if name == "backward" else (run(),)
                expected = theirs[name]() if name == "backward" else (theirs[name](),)
                error = max(np.abs(a - b.numpy()).max() / np.abs(b.numpy()).max()
                            for a, b in zip(results, expected))
                ours_s, theirs_s = best_times([run, theirs[name]], args.repeats)
                torch_cols = f"{theirs_s * 1e3:>10.2f}{theirs_s / ours_s:>7.2f}{error:>13.1e}"
            else:
                (ours_s,) = best_times([run], args.repeats)
                torch_cols = f"{'':>10}{'':>7}{'':>13}"
            label = f"{channels}ch {size}x{size}"
            print(f"{label:<16}{name:<10}{ours_s * 1e3:>13.2f}{pass_flops / ours_s / 1e9:>9.1f}{torch_cols}")


if __name__ == "__main__":
    main()
