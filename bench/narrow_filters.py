"""Gradients of layers with few filters (16-64 output channels) by im2col, channels_last, Winograd and polyphase.

DenseNet's 3x3 layers add 32 channels each (128 -> 32 at 56x56 to 7x7),
and 5x5 and 7x7 layers of 32-64 filters turn up in older and larger-kernel
networks. im2col's input gradient there reduces over those few filters
(``w.T @ grad_y``, a reduction of 32) and its weight gradient has that
many rows, short sides BLAS runs slowly, around a column matrix built or
folded at full size; ``channels_last`` keeps the sums in registers. Times
the algorithms that run each problem (and PyTorch), taking turns in one
process (numbaconv.timing.best_times, each call after the same call ran
untimed for 20 ms), float32, and prints the ratio PyTorch time / numbaconv
time and what ``algo="auto"`` picks. ``numbaconv.dispatch``'s rule 2c rests
on them (docs/decisions.md, CL6); the second table, weight gradients of 48-512
filters at any stride and rank, on its wider bound for the weight gradient on
AVX-512 hosts (CL8).

    python bench/narrow_filters.py [--budget 0.8]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("im2col", "channels_last", "winograd", "polyphase")
# batch, input channels, filters, plane side, kernel side, stride; padding kernel // 2
LAYERS = [(4, 128, 32, 14, 3, 1), (4, 128, 32, 7, 3, 1), (8, 128, 32, 7, 3, 1), (1, 128, 32, 14, 3, 1),
          (4, 256, 32, 14, 3, 1), (4, 48, 32, 14, 3, 1), (4, 128, 16, 14, 3, 1), (4, 128, 32, 28, 3, 2),
          (4, 64, 32, 14, 5, 1), (2, 96, 48, 14, 3, 1), (4, 128, 64, 14, 3, 1), (4, 64, 64, 7, 3, 1),
          (64, 20, 20, 14, 5, 1), (4, 3, 32, 224, 3, 2)]
# (x shape, w shape, arguments): weight gradients of 48-512 filters
WIDE_WEIGHT_LAYERS = [
    ((4, 128, 56, 56), (128, 128, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 64, 56, 56), (128, 64, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 96, 28, 28), (96, 96, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 256, 28, 28), (256, 256, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 512, 14, 14), (512, 512, 3, 3), {"stride": 2, "padding": 1}),
    ((1, 64, 16, 56, 56), (128, 64, 3, 3, 3), {"stride": 2, "padding": 1}),
    ((1, 128, 8, 28, 28), (256, 128, 3, 3, 3), {"stride": 2, "padding": 1}),
    ((4, 128, 14, 14), (64, 128, 3, 3), {"padding": 1}),
    ((2, 96, 14, 14), (48, 96, 3, 3), {"padding": 1}),
    ((4, 64, 7, 7), (64, 64, 3, 3), {"padding": 1}),
    ((4, 48, 35, 35), (64, 48, 5, 5), {"padding": 2}),
    ((2, 64, 28, 28), (64, 64, 7, 7), {"padding": 3}),
    ((1, 128, 33, 33), (128, 128, 3, 3), {"padding": 6, "dilation": 6}),
    ((8, 64, 8000), (64, 64, 9), {"stride": 2, "padding": 4}),
    ((4, 128, 1000), (128, 128, 5), {"padding": 2}),
    ((4, 512, 799), (512, 512, 3), {"stride": 2}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.8, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for batch, channels, filters, side, kernel, stride in LAYERS:
        for pass_name, torch_time, times, auto in layer_in_turn(
                torch, rng, (batch, channels, side, side), (filters, channels, kernel, kernel),
                {"stride": stride, "padding": kernel // 2}, ("input", "weight"), ALGORITHMS, args.budget):
            cells = "  ".join(f"{a} {torch_time / t:.2f}" for a, t in times.items())
            print(f"N={batch} {channels}->{filters} {kernel}x{kernel}/{stride} at {side} {pass_name:6s} "
                  f"torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}", flush=True)
    for x_shape, w_shape, arguments in WIDE_WEIGHT_LAYERS:
        for _, torch_time, times, auto in layer_in_turn(torch, rng, x_shape, w_shape, arguments, ("weight",),
                                                        ("im2col", "channels_last"), args.budget):
            cells = "  ".join(f"{a} {torch_time / t:.2f}" for a, t in times.items())
            print(f"x {x_shape} w {w_shape} {arguments} weight torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}",
                  flush=True)


if __name__ == "__main__":
    main()
