"""Dense stride-1 layers that Winograd does not take, by im2col, channels_last, polyphase and planar: every pass.

Kernels of 5x5, 7x7, 1x7 and 7x1 (Inception, large-kernel blocks), dilated
3x3 (DeepLab's ASPP), 3x3 on too few tiles for Winograd (a batch of one on
14x14 and 28x28 planes), 1-d kernels of 5 and 7 taps, and, with products
small enough for ``planar``, 5x5 and 7x7 kernels over 8-32 channels and
kernels of fewer taps than it fuses (1-d audio layers, 1x3, 2x2).
im2col copies the input once for every tap into its column matrix (25
times for 5x5);
``channels_last`` copies it once and broadcasts each element into sums held
in registers. Times the algorithms that run each problem (and PyTorch),
taking turns in one process (numbaconv.timing.best_times, each call after
the same call ran untimed for 20 ms), float32, and prints milliseconds with
the ratio PyTorch time / numbaconv time, and what ``algo="auto"`` picks.
``numbaconv.dispatch``'s rules 1c, 2 and 2b rest on them (docs/decisions.md, CL5, CL7, D5a).

    python bench/stride_one.py [--pass forward,input,weight] [--budget 1.5]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("im2col", "channels_last", "polyphase", "planar")
# name, x shape, w shape, padding, dilation; stride 1
LAYERS = [
    ("inception 5x5 48->64 at 35", (4, 48, 35, 35), (64, 48, 5, 5), 2, 1),
    ("inception 1x7 192 at 17", (4, 192, 17, 17), (192, 192, 1, 7), (0, 3), 1),
    ("inception 7x1 160->192 at 17", (4, 160, 17, 17), (192, 160, 7, 1), (3, 0), 1),
    ("5x5 64 at 14", (4, 64, 14, 14), (64, 64, 5, 5), 2, 1),
    ("7x7 64 at 28", (2, 64, 28, 28), (64, 64, 7, 7), 3, 1),
    ("3x3 dilation 2, 256 at 28", (2, 256, 28, 28), (256, 256, 3, 3), 2, 2),
    ("aspp 3x3 dilation 6, 512->256 at 33", (2, 512, 33, 33), (256, 512, 3, 3), 6, 6),
    ("3x3 128 at 14, N=1", (1, 128, 14, 14), (128, 128, 3, 3), 1, 1),
    ("3x3 64 at 28, N=1", (1, 64, 28, 28), (64, 64, 3, 3), 1, 1),
    ("1-d k5 256 at 500", (4, 256, 500), (256, 256, 5), 2, 1),
    ("1-d k7 64->128 at 1000", (4, 64, 1000), (128, 64, 7), 3, 1),
    # products under planar's limit (32768), kernels wider than its 9 fused taps
    ("5x5 32 at 56", (4, 32, 56, 56), (32, 32, 5, 5), 2, 1),
    ("5x5 16->32 at 56", (4, 16, 56, 56), (32, 16, 5, 5), 2, 1),
    ("5x5 16 at 56, N=2", (2, 16, 56, 56), (16, 16, 5, 5), 2, 1),
    ("5x5 24 at 28", (4, 24, 28, 28), (24, 24, 5, 5), 2, 1),
    ("5x5 32 at 28, N=8", (8, 32, 28, 28), (32, 32, 5, 5), 2, 1),
    ("7x7 16 at 56, N=2", (2, 16, 56, 56), (16, 16, 7, 7), 3, 1),
    ("7x7 8->16 at 56, N=2", (2, 8, 56, 56), (16, 8, 7, 7), 3, 1),
    # products under planar's limit, kernels of fewer taps than it fuses
    ("1-d k3 dilation 3, 32 at 24000, N=1", (1, 32, 24000), (32, 32, 3), 3, 3),
    ("1-d k5 16 at 16000", (4, 16, 16000), (16, 16, 5), 2, 1),
    ("1-d k3 8->16 at 8000, N=8", (8, 8, 8000), (16, 8, 3), 1, 1),
    ("1-d k3 64 at 24000, N=1", (1, 64, 24000), (64, 64, 3), 1, 1),
    ("1x3 32 at 56, N=2", (2, 32, 56, 56), (32, 32, 1, 3), (0, 1), 1),
    ("2x2 32 at 56, N=2", (2, 32, 56, 56), (32, 32, 2, 2), 0, 1),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="passes", default="forward,input,weight", help="comma-separated passes")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for name, x_shape, w_shape, padding, dilation in LAYERS:
        for pass_name, torch_time, times, auto in layer_in_turn(
                torch, rng, x_shape, w_shape, {"padding": padding, "dilation": dilation}, args.passes.split(","),
                ALGORITHMS, args.budget, max_rounds=40):
            cells = "  ".join(f"{a} {t * 1e3:.3f} ({torch_time / t:.2f})" for a, t in times.items())
            print(f"{name:36s} {pass_name:7s} torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
