"""3x3 stride-1 layers with few 4x4 tiles (a batch of one or two) by Winograd and the others: every pass.

Winograd's filter transform costs per output and input channel pair and
call, its input and output transforms per channel and tile, its products per
channel pair and tile: with few tiles (a batch of one on 20x20 to 44x44
planes, 14x14 to 28x28 at a few samples) the transforms weigh more, and
whether it still beats ``channels_last``, im2col, ``planar`` and
``polyphase`` depends on the channels. Times the algorithms that run each
problem (and PyTorch), taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints the ratio PyTorch time / numbaconv time for
Winograd and for the fastest other, and what ``algo="auto"`` picks.
``numbaconv.dispatch``'s rule 1 rests on them (docs/decisions.md, D3a).

    python bench/winograd_tiles.py [--budget 0.8]

Needs PyTorch.
"""
import argparse
import math

import torch

from numbaconv.tools.bench import layer_in_turn, prepare_timing

OTHERS = ("channels_last", "im2col", "planar", "polyphase")
# batch, input channels, output channels, plane side; 3x3 kernels, padding 1
LAYERS = [(1, 128, 128, 40), (1, 64, 64, 40), (1, 32, 32, 40), (2, 64, 64, 28), (4, 96, 96, 20), (2, 128, 256, 28),
          (1, 64, 128, 44), (4, 16, 32, 20), (1, 16, 16, 40), (1, 8, 16, 40), (1, 64, 64, 28), (1, 128, 128, 28),
          (4, 64, 64, 14), (4, 128, 32, 14), (2, 128, 128, 14), (1, 128, 128, 20)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.8, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    for batch, channels, filters, side in LAYERS:
        tiles = batch * math.ceil(side / 4) ** 2
        for pass_name, torch_time, times, auto in layer_in_turn(
                torch, rng, (batch, channels, side, side), (filters, channels, 3, 3), {"padding": 1},
                ("forward", "input", "weight"), ("winograd", *OTHERS), args.budget):
            other_time, other = min((t, a) for a, t in times.items() if a != "winograd")
            print(f"N={batch} {channels}->{filters} {side}x{side} ({tiles} tiles) {pass_name:7s} "
                  f"torch {torch_time * 1e3:.3f}  winograd {torch_time / times['winograd']:.2f}  "
                  f"{other} {torch_time / other_time:.2f}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
