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

import numpy as np
import torch

import numbaconv
from numbaconv import dispatch
from numbaconv.spec import ConvSpec
from numbaconv.timing import best_times
from numbaconv.tools.bench import keep_freed_memory

ALGORITHMS = ("planar", "channels_last", "polyphase", "im2col")
# batch, channels (in = out), plane side, groups, stride; 3x3 kernels, padding 1
LAYERS = [(4, 128, 56, 32, 1), (4, 256, 56, 32, 2), (4, 256, 28, 32, 1), (4, 512, 28, 32, 2), (4, 512, 14, 32, 1),
          (4, 1024, 14, 32, 2), (4, 1024, 7, 32, 1), (4, 64, 56, 8, 1), (4, 128, 28, 16, 1), (4, 384, 14, 24, 1),
          (4, 960, 7, 60, 1)]


def _calls(x, w, grad_y, stride, groups, pass_name, algorithms):
    """PyTorch's call, then each algorithm's, for one pass."""
    x_t, w_t, grad_y_t = (torch.from_numpy(a) for a in (x, w, grad_y))
    options = {"stride": stride, "padding": 1, "groups": groups}
    if pass_name == "forward":
        return [lambda: torch.nn.functional.conv2d(x_t, w_t, **options)] + [
            lambda a=a: numbaconv.conv2d(x, w, **options, algo=a) for a in algorithms]
    if pass_name == "input":
        return [lambda: torch.nn.grad.conv2d_input(x_t.shape, w_t, grad_y_t, **options)] + [
            lambda a=a: numbaconv.conv2d_input(x.shape, w, grad_y, **options, algo=a) for a in algorithms]
    return [lambda: torch.nn.grad.conv2d_weight(x_t, w_t.shape, grad_y_t, **options)] + [
        lambda a=a: numbaconv.conv2d_weight(x, w.shape, grad_y, **options, algo=a) for a in algorithms]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass", dest="passes", default="forward,input,weight", help="comma-separated passes")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timing per layer and pass")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(numbaconv.cpu.threads.thread_count())
    rng = np.random.default_rng(0)
    for batch, channels, side, groups, stride in LAYERS:
        x = rng.standard_normal((batch, channels, side, side)).astype(np.float32)
        w = rng.standard_normal((channels, channels // groups, 3, 3)).astype(np.float32)
        spec = ConvSpec.create(x.shape, w.shape, stride, 1, 1, groups)
        grad_y = rng.standard_normal(spec.y_shape).astype(np.float32)
        algorithms = [a for a in ALGORITHMS if a in dispatch.runnable("cpu", spec.as_3d())]
        for pass_name in args.passes.split(","):
            times = best_times(_calls(x, w, grad_y, stride, groups, pass_name, algorithms), warmup=1,
                               max_rounds=40, budget_s=args.budget, settle_s=0.02)
            auto = dispatch.choose("cpu", "auto", spec.as_3d(), pass_name).__name__.rsplit(".", 1)[1]
            cells = "  ".join(f"{a} {t * 1e3:.3f} ({times[0] / t:.2f})" for a, t in zip(algorithms, times[1:]))
            print(f"{channels}ch {side}x{side} g{groups} ({channels // groups} a group) /{stride} {pass_name:7s} "
                  f"torch {times[0] * 1e3:.3f}  {cells}  auto: {auto}", flush=True)


if __name__ == "__main__":
    main()
