"""Factorised video convolutions (R(2+1)D, P3D): 1x3x3 spatial and 3x1x1 temporal kernels, every algorithm.

R(2+1)D splits each 3x3x3 convolution of a video network into a 1x3x3
spatial one over every frame and a 3x1x1 temporal one. The spatial kernels
are 2-d 3x3 kernels over several slices: ``depth_taps`` runs them as one 2-d
problem, every output slice a sample, on Winograd. Times the algorithms that
run each problem (and PyTorch), taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints the ratio PyTorch time / numbaconv time and
what ``algo="auto"`` picks. ``numbaconv.dispatch``'s rule 1a rests on them
(docs/decisions.md, DT2).

    python bench/video_factorised.py [--budget 0.8]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("depth_taps", "channels_last", "im2col", "planar", "polyphase")
# name, x shape, w shape, padding; stride 1
LAYERS = [
    ("R(2+1)D spatial 64->144 at 8x56x56", (1, 64, 8, 56, 56), (144, 64, 1, 3, 3), (0, 1, 1)),
    ("R(2+1)D temporal 144->64 at 8x56x56", (1, 144, 8, 56, 56), (64, 144, 3, 1, 1), (1, 0, 0)),
    ("R(2+1)D spatial 128->288 at 4x28x28", (1, 128, 4, 28, 28), (288, 128, 1, 3, 3), (0, 1, 1)),
    ("R(2+1)D temporal 288->128 at 4x28x28", (1, 288, 4, 28, 28), (128, 288, 3, 1, 1), (1, 0, 0)),
    ("P3D spatial 256 at 2x14x14, N=2", (2, 256, 2, 14, 14), (256, 256, 1, 3, 3), (0, 1, 1)),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.8, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for name, x_shape, w_shape, padding in LAYERS:
        for pass_name, torch_time, times, auto in layer_in_turn(
                torch, rng, x_shape, w_shape, {"padding": padding}, ("forward", "input", "weight"), ALGORITHMS,
                args.budget, max_rounds=15):
            cells = "  ".join(f"{a} {torch_time / t:.2f}" for a, t in times.items())
            print(f"{name:38s} {pass_name:7s} torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
