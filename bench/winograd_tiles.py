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

import numpy as np
import torch

import numbaconv
from numbaconv import dispatch
from numbaconv.spec import ConvSpec
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

OTHERS = ("channels_last", "im2col", "planar", "polyphase")
# batch, input channels, output channels, plane side; 3x3 kernels, padding 1
LAYERS = [(1, 128, 128, 40), (1, 64, 64, 40), (1, 32, 32, 40), (2, 64, 64, 28), (4, 96, 96, 20), (2, 128, 256, 28),
          (1, 64, 128, 44), (4, 16, 32, 20), (1, 16, 16, 40), (1, 8, 16, 40), (1, 64, 64, 28), (1, 128, 128, 28),
          (4, 64, 64, 14), (4, 128, 32, 14), (2, 128, 128, 14), (1, 128, 128, 20)]


def _calls(x, w, grad_y, pass_name, algorithms):
    """PyTorch's call, then each algorithm's, for one pass."""
    x_t, w_t, grad_y_t = (torch.from_numpy(a) for a in (x, w, grad_y))
    if pass_name == "forward":
        return [lambda: torch.nn.functional.conv2d(x_t, w_t, padding=1)] + [
            lambda a=a: numbaconv.conv2d(x, w, padding=1, algo=a) for a in algorithms]
    if pass_name == "input":
        return [lambda: torch.nn.grad.conv2d_input(x_t.shape, w_t, grad_y_t, padding=1)] + [
            lambda a=a: numbaconv.conv2d_input(x.shape, w, grad_y, padding=1, algo=a) for a in algorithms]
    return [lambda: torch.nn.grad.conv2d_weight(x_t, w_t.shape, grad_y_t, padding=1)] + [
        lambda a=a: numbaconv.conv2d_weight(x, w.shape, grad_y, padding=1, algo=a) for a in algorithms]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.8, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    for batch, channels, filters, side in LAYERS:
        x = rng.standard_normal((batch, channels, side, side)).astype(np.float32)
        w = rng.standard_normal((filters, channels, 3, 3)).astype(np.float32)
        spec = ConvSpec.create(x.shape, w.shape, 1, 1)
        grad_y = rng.standard_normal(spec.y_shape).astype(np.float32)
        others = [a for a in OTHERS if a in dispatch.runnable("cpu", spec.as_3d())]
        tiles = batch * math.ceil(side / 4) ** 2
        for pass_name in ("forward", "input", "weight"):
            times = best_times(_calls(x, w, grad_y, pass_name, ["winograd", *others]), warmup=1, max_rounds=20,
                               budget_s=args.budget, settle_s=0.02)
            other_time, other = min(zip(times[2:], others))
            auto = dispatch.choose("cpu", "auto", spec.as_3d(), pass_name).__name__.rsplit(".", 1)[1]
            print(f"N={batch} {channels}->{filters} {side}x{side} ({tiles} tiles) {pass_name:7s} "
                  f"torch {times[0] * 1e3:.3f}  winograd {times[0] / times[1]:.2f}  {other} {times[0] / other_time:.2f}"
                  f"  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
