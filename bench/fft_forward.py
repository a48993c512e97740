"""The forward passes behind dispatch.FFT_MIN_MODEL_RATE_FORWARD_AXES (docs/decisions.md, F2): fft against
channels_last and im2col near the FFT rule's threshold, in 1-d, 2-d and 3-d.

Times the three and PyTorch taking turns in one process (numbaconv.timing.best_times, each call after the
same call ran untimed for 20 ms), float32, and prints milliseconds, the fastest other algorithm's time over
fft's (above 1: fft faster), the FFT cost model's rate (direct FLOPs per modelled ns) and what
``algo="auto"`` picks.

    python bench/fft_forward.py [--budget 1.5]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.cpu import fft
from numbaconv.spec import ConvSpec
from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("fft", "channels_last", "im2col")
# x shape, w shape, padding (stride 1, "same" padding)
LAYERS = [((2, 64, 64, 64), (64, 64, 7, 7), 3), ((2, 128, 32, 32), (128, 128, 7, 7), 3),
          ((4, 32, 56, 56), (32, 32, 7, 7), 3), ((2, 64, 56, 56), (64, 64, 9, 9), 4),
          ((1, 32, 64, 64), (32, 32, 9, 9), 4), ((2, 32, 64, 64), (32, 32, 11, 11), 5),
          ((2, 16, 32, 30), (16, 16, 15, 15), 7), ((2, 16, 32, 30), (16, 16, 17, 17), 8),
          ((4, 64, 4000), (64, 64, 13), 6), ((4, 64, 4000), (64, 64, 17), 8), ((4, 128, 2000), (128, 128, 15), 7),
          ((8, 32, 8000), (32, 32, 21), 10), ((4, 768, 49), (768, 48, 128), 64),
          ((1, 16, 32, 32, 32), (16, 16, 7, 7, 7), 3), ((1, 32, 24, 24, 24), (32, 32, 5, 5, 5), 2)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of timing per layer")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for x_shape, w_shape, padding in LAYERS:
        groups = x_shape[1] // w_shape[1]
        spec = ConvSpec.create(x_shape, w_shape, 1, padding, 1, groups).as_3d()
        rate = spec.flops / fft.modelled_ns(spec, "forward")
        axes = sum(1 for taps in spec.kernel_size if taps > 1)
        for _, torch_time, times, auto in layer_in_turn(torch, rng, x_shape, w_shape,
                                                         {"padding": padding, "groups": groups}, ["forward"],
                                                         ALGORITHMS, args.budget, max_rounds=20):
            others = min(t for name, t in times.items() if name != "fft")
            cells = "  ".join(f"{name} {t * 1e3:.2f}" for name, t in times.items())
            print(f"{str(x_shape):20s} k{w_shape[2:]} axes {axes} rate {rate:5.0f}  best other / fft "
                  f"{others / times['fft']:.2f}  {cells}  torch {torch_time * 1e3:.2f}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
