"""The forward of strided stems (few input channels, large kernels) by im2col and channels_last.

A network's first convolution reads an image's 3 colours through a large
strided kernel: im2col then builds a column matrix of ``3 * prod(kernel)``
rows per output, gathered at the stride, while ``channels_last`` broadcasts
each input element from its channels-last grid. Times both (and PyTorch)
on the stems of ResNet, MobileNetV2, AlexNet, R3D-18, R(2+1)D and I3D,
taking turns in one process (numbaconv.timing.best_times, each call after
the same call ran untimed for 20 ms), float32, and prints the ratios
PyTorch time / numbaconv time. ``numbaconv.dispatch``'s rule 0c rests on
them (docs/decisions.md, CL2).

    python bench/stems.py [--rounds 6]

Needs PyTorch.
"""
import argparse

import numpy as np
import torch

import numbaconv
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

# name, x shape, w shape, stride, padding
STEMS = [
    ("resnet 7x7/2", (4, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    ("mobilenet_v2 3x3/2", (4, 3, 224, 224), (32, 3, 3, 3), 2, 1),
    ("alexnet 11x11/4", (8, 3, 224, 224), (64, 3, 11, 11), 4, 2),
    ("r3d 3x7x7/(1,2,2)", (1, 3, 16, 112, 112), (64, 3, 3, 7, 7), (1, 2, 2), (1, 3, 3)),
    ("r2plus1d 1x7x7/(1,2,2)", (1, 3, 16, 112, 112), (45, 3, 1, 7, 7), (1, 2, 2), (0, 3, 3)),
    ("i3d 7x7x7/2", (1, 3, 16, 112, 112), (64, 3, 7, 7, 7), 2, 3),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds, the calls taking turns")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    print(f"{'stem':24s} {'reduction':>9s} {'torch ms':>9s} {'im2col':>8s} {'channels_last':>14s}   ratios")
    for name, x_shape, w_shape, stride, padding in STEMS:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        conv = numbaconv.conv2d if len(x_shape) == 4 else numbaconv.conv3d
        torch_conv = torch.nn.functional.conv2d if len(x_shape) == 4 else torch.nn.functional.conv3d
        x_t, w_t = torch.from_numpy(x), torch.from_numpy(w)
        calls = [lambda: torch_conv(x_t, w_t, None, stride, padding),
                 lambda: conv(x, w, None, stride, padding, algo="im2col"),
                 lambda: conv(x, w, None, stride, padding, algo="channels_last")]
        torch_s, im2col_s, channels_last_s = best_times(calls, warmup=1, rounds=args.rounds, settle_s=0.02)
        reduction = w_shape[1] * int(np.prod(w_shape[2:]))
        print(f"{name:24s} {reduction:9d} {torch_s * 1e3:9.2f} {im2col_s * 1e3:8.2f} {channels_last_s * 1e3:14.2f}"
              f"   im2col {torch_s / im2col_s:.2f}, channels_last {torch_s / channels_last_s:.2f}", flush=True)


if __name__ == "__main__":
    main()
