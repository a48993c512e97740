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

import numpy as np
import torch

import numbaconv
from numbaconv import dispatch
from numbaconv.spec import ConvSpec
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

ALGORITHMS = ("depth_taps", "channels_last", "im2col", "planar", "polyphase")
# name, x shape, w shape, padding; stride 1
LAYERS = [
    ("R(2+1)D spatial 64->144 at 8x56x56", (1, 64, 8, 56, 56), (144, 64, 1, 3, 3), (0, 1, 1)),
    ("R(2+1)D temporal 144->64 at 8x56x56", (1, 144, 8, 56, 56), (64, 144, 3, 1, 1), (1, 0, 0)),
    ("R(2+1)D spatial 128->288 at 4x28x28", (1, 128, 4, 28, 28), (288, 128, 1, 3, 3), (0, 1, 1)),
    ("R(2+1)D temporal 288->128 at 4x28x28", (1, 288, 4, 28, 28), (128, 288, 3, 1, 1), (1, 0, 0)),
    ("P3D spatial 256 at 2x14x14, N=2", (2, 256, 2, 14, 14), (256, 256, 1, 3, 3), (0, 1, 1)),
]


def _calls(x, w, grad_y, padding, pass_name, algorithms):
    """PyTorch's call, then each algorithm's, for one pass."""
    x_t, w_t, grad_y_t = (torch.from_numpy(a) for a in (x, w, grad_y))
    if pass_name == "forward":
        return [lambda: torch.nn.functional.conv3d(x_t, w_t, padding=padding)] + [
            lambda a=a: numbaconv.conv3d(x, w, padding=padding, algo=a) for a in algorithms]
    if pass_name == "input":
        return [lambda: torch.nn.grad.conv3d_input(x_t.shape, w_t, grad_y_t, padding=padding)] + [
            lambda a=a: numbaconv.conv3d_input(x.shape, w, grad_y, padding=padding, algo=a) for a in algorithms]
    return [lambda: torch.nn.grad.conv3d_weight(x_t, w_t.shape, grad_y_t, padding=padding)] + [
        lambda a=a: numbaconv.conv3d_weight(x, w.shape, grad_y, padding=padding, algo=a) for a in algorithms]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.8, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape, padding in LAYERS:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        spec = ConvSpec.create(x.shape, w.shape, 1, padding)
        grad_y = rng.standard_normal(spec.y_shape).astype(np.float32)
        algorithms = [a for a in ALGORITHMS if a in dispatch.runnable("cpu", spec.as_3d())]
        for pass_name in ("forward", "input", "weight"):
            times = best_times(_calls(x, w, grad_y, padding, pass_name, algorithms), warmup=1, max_rounds=15,
                               budget_s=args.budget, settle_s=0.02)
            auto = dispatch.choose("cpu", "auto", spec.as_3d(), pass_name).__name__.rsplit(".", 1)[1]
            cells = "  ".join(f"{a} {times[0] / t:.2f}" for a, t in zip(algorithms, times[1:]))
            print(f"{name:38s} {pass_name:7s} torch {times[0] * 1e3:.3f}  {cells}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
