"""Grouped 3x3 layers of 4 to 32 channels a group by planar, channels_last, polyphase and im2col: every pass.

ResNeXt's 32 groups (4, 8, 16 and 32 channels a group, stride 1 and the
stride-2 first layer of a stage) and RegNet-like group widths of 8 and 16
on 56x56 down to 7x7 planes, N=4. Times the algorithms that run each
problem (and PyTorch), taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints milliseconds with the ratio PyTorch time /
numbaconv time, and what ``algo="auto"`` picks. ``numbaconv.dispatch``'s
rule 0b rests on them (docs/decisions.md, GR1).

    python bench/grouped.py [--pass forward,input,weight] [--budget 2]

Needs PyTorch.
"""
import argparse

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

ALGORITHMS = ("planar", "channels_last", "polyphase", "im2col")
# batch, channels (in = out), plane side, groups, stride; 3x3 kernels, padding 1
LAYERS = [(4, 128, 56, 32, 1), (4, 256, 56, 32, 2), (4, 256, 28, 32, 1), (4, 512, 28, 32, 2), (4, 512, 14, 32, 1),
          (4, 1024, 14, 32, 2), (4, 1024, 7, 32, 1), (4, 64, 56, 8, 1), (4, 128, 28, 16, 1), (4, 384, 14, 24, 1),
          (4, 960, 7, 60, 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="passes", default="forward,input,weight", help="comma-separated passes")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for batch, channels, side, groups, stride in LAYERS:
        for pass_name, torch_time, times, auto in layer_in_turn(
                torch, rng, (batch, channels, side, side), (channels, channels // groups, 3, 3),
                {"stride": stride, "padding": 1, "groups": groups}, args.passes.split(","), ALGORITHMS, args.budget,
                max_rounds=40):
            cells = "  ".join(f"{a} {t * 1e3:.3f} ({torch_time / t:.2f})" for a, t in times.items())
            print(f"{channels}ch {side}x{side} g{groups} ({channels // groups} a group) /{stride} {pass_name:7s} "
                  f"torch {torch_time * 1e3:.3f}  {cells}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
