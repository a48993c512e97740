"""1-d layers of 2 and 3 taps by im2col and winograd1d, every pass, across channel counts and strides.

``winograd1d`` splits a 1-d convolution into its phases and runs each
through Winograd's minimal filter F(4, r): at 3 taps and stride 1 (any
dilation) half the direct count's products, at stride 2 three quarters, at 2
taps and stride 1 five eighths; its transforms cost per channel and tile. Times both
(and PyTorch) on each layer and pass, taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints im2col's time over winograd1d's and PyTorch's
over winograd1d's. ``numbaconv.dispatch``'s rule 1b rests on them
(docs/decisions.md, W1D2). The stride-2 rows at 512 channels are wav2vec 2.0's
feature encoder's layers, then the same on other batches and lengths.

    python bench/winograd1d.py [--budget 3]

Needs PyTorch.
"""
import argparse

import numpy as np
import torch

import numbaconv
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

# x shape, w shape, stride, padding, dilation, groups
LAYERS = [
    ((8, 16, 8000), (16, 16, 3), 1, 1, 1, 1),
    ((8, 32, 8000), (32, 32, 3), 1, 1, 1, 1),
    ((8, 64, 4000), (64, 64, 3), 1, 1, 1, 1),
    ((8, 128, 4096), (128, 128, 3), 1, 1, 1, 1),
    ((4, 256, 2000), (256, 64, 3), 1, 1, 1, 4),
    ((4, 512, 1000), (512, 512, 3), 1, 1, 1, 1),
    ((8, 128, 4096), (128, 128, 3), 1, 4, 4, 1),     # a TCN's dilated layer
    ((4, 256, 4000), (256, 256, 3), 1, 5, 5, 1),     # HiFi-GAN's dilated residual layers
    ((4, 256, 2000), (256, 256, 2), 1, 0, 1, 1),
    ((4, 256, 2000), (256, 256, 3), 2, 1, 1, 1),
    ((4, 128, 4000), (128, 128, 3), 2, 1, 1, 1),
    ((4, 512, 399), (512, 512, 3), 2, 0, 1, 1),
    ((4, 512, 799), (512, 512, 3), 2, 0, 1, 1),
    ((4, 512, 1599), (512, 512, 3), 2, 0, 1, 1),
    ((4, 512, 3199), (512, 512, 3), 2, 0, 1, 1),
    ((1, 512, 3199), (512, 512, 3), 2, 0, 1, 1),
    ((2, 512, 6399), (512, 512, 3), 2, 0, 1, 1),
    ((8, 512, 3199), (512, 512, 3), 2, 0, 1, 1),
    ((16, 512, 799), (512, 512, 3), 2, 0, 1, 1),
    ((4, 256, 6399), (256, 256, 3), 2, 0, 1, 1),
    ((4, 512, 199), (512, 512, 2), 2, 0, 1, 1),
]


def _passes(x, w, grad_y, stride, padding, dilation, groups):
    """``{pass: call(algo)}`` for the three passes of one layer."""
    options = (stride, padding, dilation, groups)
    return {"forward": lambda algo: numbaconv.conv1d(x, w, None, *options, algo=algo),
            "input": lambda algo: numbaconv.conv1d_input(x.shape, w, grad_y, *options, algo=algo),
            "weight": lambda algo: numbaconv.conv1d_weight(x, w.shape, grad_y, *options, algo=algo)}


def _torch_passes(x, w, grad_y, stride, padding, dilation, groups):
    x_t, w_t, grad_t = (torch.from_numpy(a) for a in (x, w, grad_y))
    options, grad = (stride, padding, dilation, groups), torch.nn.grad
    return {"forward": lambda: torch.nn.functional.conv1d(x_t, w_t, None, *options),
            "input": lambda: grad.conv1d_input(x_t.shape, w_t, grad_t, *options),
            "weight": lambda: grad.conv1d_weight(x_t, w_t.shape, grad_t, *options)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    print(f"{'x':>16s} {'w':>16s} {'s':>2s} {'d':>2s} {'g':>2s} {'share':>5s}  per pass: im2col/winograd1d, "
          f"torch/winograd1d")
    for x_shape, w_shape, *options in LAYERS:
        stride, _, dilation, groups = options
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        grad_y = rng.standard_normal(numbaconv.conv1d(x, w, None, *options).shape).astype(np.float32)
        ours, theirs = _passes(x, w, grad_y, *options), _torch_passes(x, w, grad_y, *options)
        spec = numbaconv.spec.ConvSpec.create(x_shape, w_shape, *options).as_3d()
        cells = []
        for pass_name, call in ours.items():
            calls = [lambda: call("im2col"), lambda: call("winograd1d"), theirs[pass_name]]
            im2col_s, winograd_s, torch_s = best_times(calls, warmup=1, rounds=3, max_rounds=30, budget_s=args.budget,
                                                       settle_s=0.02)
            cells.append(f"{pass_name} {im2col_s / winograd_s:.2f}, {torch_s / winograd_s:.2f}")
        share = numbaconv.cpu.winograd1d.product_share(spec)
        print(f"{str(x_shape):>16s} {str(w_shape):>16s} {stride:2d} {dilation:2d} {groups:2d} {share:5.3f}  "
              + "; ".join(cells), flush=True)


if __name__ == "__main__":
    main()
