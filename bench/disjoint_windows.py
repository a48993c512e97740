"""Forwards of disjoint windows (2x2/2, k2/2, 4x4/4, 2x2x2/2) by im2col, channels_last and polyphase.

U-Net's 2x2/2 up-convolutions (their input gradient is a 2x2/2 forward),
ConvNeXt's 2x2/2 downsampling, 1-d k2/2 and k4/4 layers and 3-d 2x2x2/2
layers: each input element is in one window, so im2col's column matrix is
one copy of the input, gathered at the stride, and ``channels_last``'s
channels-last grid is one copy too, transposed by vector blocks. Times the
algorithms that run each problem (and PyTorch), taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints the ratio PyTorch time / numbaconv time and what
``algo="auto"`` picks. ``numbaconv.dispatch``'s rule 2b for disjoint windows
rests on them (docs/decisions.md, CL9).

    python bench/disjoint_windows.py [--budget 2.5]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("im2col", "channels_last", "polyphase")
# x shape, w shape, stride (no padding)
LAYERS = [
    ((2, 128, 128, 128), (64, 128, 2, 2), 2),
    ((2, 64, 128, 128), (128, 64, 2, 2), 2),
    ((2, 128, 64, 64), (256, 128, 2, 2), 2),
    ((2, 256, 32, 32), (512, 256, 2, 2), 2),
    ((2, 96, 56, 56), (192, 96, 2, 2), 2),
    ((2, 192, 28, 28), (384, 192, 2, 2), 2),
    ((2, 64, 112, 112), (64, 64, 2, 2), 2),
    ((4, 128, 56, 56), (128, 128, 2, 2), 2),
    ((4, 256, 28, 28), (256, 256, 2, 2), 2),
    ((1, 256, 28, 28), (256, 256, 2, 2), 2),
    ((2, 32, 256, 256), (64, 32, 2, 2), 2),
    ((2, 16, 128, 128), (32, 16, 2, 2), 2),
    ((4, 128, 2000), (128, 128, 2), 2),
    ((4, 64, 2000), (128, 64, 4), 4),
    ((2, 64, 56, 56), (128, 64, 4, 4), 4),
    ((1, 64, 16, 32, 32), (128, 64, 2, 2, 2), 2),
    ((1, 32, 32, 64, 64), (64, 32, 2, 2, 2), 2),
    ((1, 64, 32, 64, 64), (64, 64, 2, 2, 2), 2),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=2.5, help="seconds of timing per layer")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for x_shape, w_shape, stride in LAYERS:
        for _, torch_time, times, auto in layer_in_turn(torch, rng, x_shape, w_shape, {"stride": stride},
                                                        ("forward",), ALGORITHMS, args.budget):
            cells = "  ".join(f"{a} {torch_time / t:.2f}" for a, t in times.items())
            print(f"x {x_shape} w {w_shape} /{stride} forward torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}",
                  flush=True)


if __name__ == "__main__":
    main()
