"""im2col's forward and weight gradient by blocks of columns against chunks of input channels.

im2col cuts its column matrix into blocks of columns, and every block
multiplies the whole weight matrix: where a layer has few outputs and many
channels (the deep stages of a network at a small batch, 3-d layers at a
batch of one) the weights outweigh the columns and stream from memory once
per block. Chunks of input channels (``im2col._channel_chunks``) unfold a
chunk's rows of all the columns and stream the weights once in all. Times
both, with PyTorch, on layers whose ratio of output channels to columns
(``K/g / (N * P)``) runs from 0.02 to 10, taking turns in one process
(numbaconv.timing.best_times, each call after the same call ran untimed
for 20 ms), float32, and prints the ratios PyTorch time / numbaconv time.
``im2col.CHANNEL_SPLIT_MIN_RATIO`` and ``CHANNEL_SPLIT_FORWARD_MIN_REDUCTION``
rest on them (docs/decisions.md, I7).

    python bench/channel_chunks.py [--rounds 8] [--layer NAME,...]

Needs PyTorch.
"""
import argparse
import math

import numpy as np
import torch

import numbaconv
from numbaconv.cpu import im2col
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

# name, x shape, w shape, stride, padding
LAYERS = [
    ("3x3 64ch 56x56 N=1", (1, 64, 56, 56), (64, 64, 3, 3), 1, 1),
    ("3x3x3 128ch 8x28x28 N=1", (1, 128, 8, 28, 28), (128, 128, 3, 3, 3), 1, 1),
    ("3x3 128ch 28x28 N=2", (2, 128, 28, 28), (128, 128, 3, 3), 1, 1),
    ("k3/2 512ch 799 N=4", (4, 512, 799), (512, 512, 3), 2, 0),
    ("3x3 256ch 14x14 N=4", (4, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("3x3x3 256ch 4x14x14 N=1", (1, 256, 4, 14, 14), (256, 256, 3, 3, 3), 1, 1),
    ("3x3 256ch 14x14 N=2", (2, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("k2/2 512ch 199 N=4", (4, 512, 199), (512, 512, 2), 2, 0),
    ("3x3 256ch 14x14 N=1", (1, 256, 14, 14), (256, 256, 3, 3), 1, 1),
    ("3x3 512ch 7x7 N=8", (8, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("k3/2 512ch 399 N=1", (1, 512, 399), (512, 512, 3), 2, 0),
    ("3x3/2 256->512 14x14 N=4", (4, 256, 14, 14), (512, 256, 3, 3), 2, 1),
    ("3x3 512ch 7x7 N=4", (4, 512, 7, 7), (512, 512, 3, 3), 1, 1),
    ("3x3x3 512ch 2x7x7 N=1", (1, 512, 2, 7, 7), (512, 512, 3, 3, 3), 1, 1),
    ("3x3x3/2 256->512 4x14x14 N=1", (1, 256, 4, 14, 14), (512, 256, 3, 3, 3), 2, 1),
    ("1x1x1/2 256->512 4x14x14 N=1", (1, 256, 4, 14, 14), (512, 256, 1, 1, 1), 2, 0),
    ("1x1/2 1024->2048 14x14 N=4", (4, 1024, 14, 14), (2048, 1024, 1, 1), 2, 0),
]


def _by(chunks, call):
    """``call`` run with im2col's rule set to chunks of channels for every such layer, or to blocks of
    columns for all (restored after)."""
    rule = ("CHANNEL_SPLIT_MIN_RATIO", "CHANNEL_SPLIT_FORWARD_MIN_REDUCTION")
    def run():
        kept = [getattr(im2col, name) for name in rule]
        for name in rule:
            setattr(im2col, name, 0 if chunks else math.inf)
        try:
            return call()
        finally:
            for name, value in zip(rule, kept):
                setattr(im2col, name, value)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds, the calls taking turns")
    parser.add_argument("--layer", help="comma-separated names (or parts of names) of the layers to time")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    layers = [layer for layer in LAYERS
              if not args.layer or any(part in layer[0] for part in args.layer.split(","))]
    print(f"{'layer':30s} {'K/cols':>6s}   forward: torch ms, ratio columns, chunks"
          f"   weight: torch ms, ratio columns, chunks")
    for name, x_shape, w_shape, stride, padding in layers:
        rank = len(x_shape) - 2
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        conv = getattr(numbaconv, f"conv{rank}d")
        conv_weight = getattr(numbaconv, f"conv{rank}d_weight")
        y = conv(x, w, None, stride, padding, algo="im2col")
        grad_y = rng.standard_normal(y.shape).astype(np.float32)
        x_t, w_t, grad_y_t = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(grad_y)
        torch_conv = getattr(torch.nn.functional, f"conv{rank}d")
        torch_weight = getattr(torch.nn.grad, f"conv{rank}d_weight")
        forward = lambda: conv(x, w, None, stride, padding, algo="im2col")  # noqa: E731
        weight = lambda: conv_weight(x, w_shape, grad_y, stride, padding, algo="im2col")  # noqa: E731
        calls = [lambda: torch_conv(x_t, w_t, None, stride, padding),
                 _by(False, forward), _by(True, forward),
                 lambda: torch_weight(x_t, w_t.shape, grad_y_t, stride, padding),
                 _by(False, weight), _by(True, weight)]
        times = best_times(calls, warmup=1, rounds=args.rounds, settle_s=0.02)
        columns = x_shape[0] * math.prod(y.shape[2:])
        print(f"{name:30s} {w_shape[0] / columns:6.2f}   forward {times[0] * 1e3:7.2f}, "
              f"{times[0] / times[1]:.2f}, {times[0] / times[2]:.2f}   weight {times[3] * 1e3:7.2f}, "
              f"{times[3] / times[4]:.2f}, {times[3] / times[5]:.2f}", flush=True)


if __name__ == "__main__":
    main()
