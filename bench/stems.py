"""Stems (few input channels a group) by im2col, channels_last and polyphase: forward and weight gradient.

A network's first convolution reads an image's 3 colours (or audio's one
channel) through a strided kernel, so its reduction ``(C/g) * prod(kernel)``
is short: im2col builds a column matrix of that many rows per output,
gathered at the stride, for BLAS products of a few dozen rows;
``channels_last`` broadcasts each input element from its channels-last grid
into a tile of output-channel vectors; ``polyphase`` runs vectors along the
output rows, read from phase planes of the input. Times the three (and
PyTorch) on the stems of ResNet, MobileNetV2, AlexNet, R3D-18, R(2+1)D, I3D,
U-Net and wav2vec 2.0 and on patch embeddings (ViT, ConvNeXt), taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed for
20 ms), float32, and prints the ratios PyTorch time / numbaconv time.
``numbaconv.dispatch``'s rules 0c and 0d rest on them (docs/decisions.md,
CL2, PP1, PE1).

    python bench/stems.py [--rounds 6]

Needs PyTorch.
"""
import argparse

import numpy as np
import torch

import numbaconv
from numbaconv.timing import best_times
from numbaconv.tools.bench import calls_in_turn, prepare_timing

ALGORITHMS = ("im2col", "channels_last", "polyphase")
# name, x shape, w shape, stride, padding
STEMS = [
    ("resnet 7x7/2", (4, 3, 224, 224), (64, 3, 7, 7), 2, 3),
    ("mobilenet_v2 3x3/2", (4, 3, 224, 224), (32, 3, 3, 3), 2, 1),
    ("alexnet 11x11/4", (8, 3, 224, 224), (64, 3, 11, 11), 4, 2),
    ("r3d 3x7x7/(1,2,2)", (1, 3, 16, 112, 112), (64, 3, 3, 7, 7), (1, 2, 2), (1, 3, 3)),
    ("r2plus1d 1x7x7/(1,2,2)", (1, 3, 16, 112, 112), (45, 3, 1, 7, 7), (1, 2, 2), (0, 3, 3)),
    ("i3d 7x7x7/2", (1, 3, 16, 112, 112), (64, 3, 7, 7, 7), 2, 3),
    ("unet 3x3 1->32", (2, 1, 256, 256), (32, 1, 3, 3), 1, 1),
    ("wav2vec2 k10/5 1->512", (4, 1, 16000), (512, 1, 10), 5, 0),
    # patch embeddings: windows that do not overlap
    ("vit-b/16 16x16/16", (2, 3, 224, 224), (768, 3, 16, 16), 16, 0),
    ("vit-l/14 14x14/14", (2, 3, 224, 224), (1024, 3, 14, 14), 14, 0),
    ("vit-b/32 32x32/32", (2, 3, 224, 224), (768, 3, 32, 32), 32, 0),
    ("vit 8x8/8 on 32x32", (8, 3, 32, 32), (384, 3, 8, 8), 8, 0),
    ("patch 8x8/8", (2, 3, 224, 224), (384, 3, 8, 8), 8, 0),
    ("patch 7x7/7", (2, 3, 224, 224), (384, 3, 7, 7), 7, 0),
    ("convnext 4x4/4", (4, 3, 224, 224), (96, 3, 4, 4), 4, 0),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds, the calls taking turns")
    args = parser.parse_args()
    rng = prepare_timing(torch)
    print(f"{'stem':24s} {'pass':7s} {'reduction':>9s} {'torch ms':>9s}   PyTorch time / numbaconv time")
    for name, x_shape, w_shape, stride, padding in STEMS:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        conv = getattr(numbaconv, f"conv{len(x_shape) - 2}d")
        grad_y = rng.standard_normal(conv(x, w, None, stride, padding).shape).astype(np.float32)
        reduction = w_shape[1] * int(np.prod(w_shape[2:]))
        for pass_name in ("forward", "weight"):
            calls = calls_in_turn(torch, x, w, grad_y, {"stride": stride, "padding": padding}, pass_name, ALGORITHMS)
            times = best_times(calls, warmup=1, rounds=args.rounds, settle_s=0.02)
            ratios = ", ".join(f"{a} {times[0] / t:.2f}" for a, t in zip(ALGORITHMS, times[1:]))
            print(f"{name:24s} {pass_name:7s} {reduction:9d} {times[0] * 1e3:9.2f}   {ratios}", flush=True)


if __name__ == "__main__":
    main()
