"""One training step of the digits CNN (examples/digits_cnn.py) with numbaconv.torch.Conv2d against torch.nn.Conv2d.

The network of examples/digits_cnn.py on 28x28 inputs (MNIST's size), batch 64
of random data, float32, SGD. Prints the step times (alternating, best of
several, after a warm-up) and their ratio (torch time / numbaconv time, so
1.0 is parity), then where numbaconv's step time goes: each convolution's
forward, input gradient and weight gradient against PyTorch's (numbaconv with
``algo="auto"``, as the layers run it, and the fastest of its algorithms), and
the Python overhead of one call on a tiny problem.

Every process first sets glibc's malloc to keep freed memory
(``numbaconv.tools.bench.keep_freed_memory``), as ``numbaconv bench`` does. The
step is timed twice, each time in a fresh process: with the OpenMP wait
policy the environment gives (PyTorch's workers then spin for milliseconds
after each of its operations, on the cores numbaconv's threads need next), and
with ``OMP_WAIT_POLICY=PASSIVE`` (they sleep at once), which an OpenMP runtime
reads only when it loads.

    python bench/train_step.py [--repeats 7]

Needs PyTorch.
"""
import argparse
import os
import subprocess
import sys

import numpy as np
import torch

import numbaconv as nc
import numbaconv.torch as nct
from numbaconv import dispatch, timing
from numbaconv.spec import ConvSpec
from numbaconv.tools.bench import SETTLE_S, keep_freed_memory

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from digits_cnn import build_cnn, time_training_steps  # noqa: E402  (one definition of the network)

BATCH, SIZE = 64, 28


def best_of(functions, repeats, number):
    """``{name: best seconds per call}`` of a dict of functions, timed as ``numbaconv bench`` times
    (numbaconv.timing: in turns, each timed block of ``number`` calls after the function ran
    untimed for ``SETTLE_S``, so no block starts while another runtime's threads still spin)."""
    seconds = timing.best_times(list(functions.values()), rounds=repeats, settle_s=SETTLE_S, number=number)
    return dict(zip(functions, seconds))


def conv_passes(x_shape, w_shape, repeats):
    """{pass: {"torch" or numbaconv algo name: seconds}} for one convolution of the network.

    numbaconv runs with ``algo="auto"`` (what the layers use) and with each
    CPU algorithm that can run the problem, to show what the auto rule chose.
    """
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape, np.float32), rng.standard_normal(w_shape, np.float32)
    y = nc.conv2d(x, w)
    grad_y = rng.standard_normal(y.shape, np.float32)
    xt, wt, gyt = (torch.from_numpy(a) for a in (x, w, grad_y))

    def torch_backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            gyt, xt, wt, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    functions = {("forward", "torch"): lambda: torch.nn.functional.conv2d(xt, wt),
                 ("input grad", "torch"): torch_backward([True, False, False]),
                 ("weight grad", "torch"): torch_backward([False, True, False])}
    for algo in ("auto", *runnable(x_shape, w_shape)):
        functions.update({
            ("forward", algo): lambda algo=algo: nc.conv2d(x, w, algo=algo),
            ("input grad", algo): lambda algo=algo: nc.conv2d_input(x.shape, w, grad_y, algo=algo),
            ("weight grad", algo): lambda algo=algo: nc.conv2d_weight(x, w.shape, grad_y, algo=algo)})
    times = best_of(functions, repeats, 3)
    passes = {}
    for (pass_name, who), seconds in times.items():
        passes.setdefault(pass_name, {})[who] = seconds
    return passes


def runnable(x_shape, w_shape):
    """The CPU algorithms that run this (unpadded, stride-1) convolution."""
    return dispatch.runnable("cpu", ConvSpec.create(x_shape, w_shape).as_3d())


def call_overhead(repeats):
    """Seconds per call on a 1x1x4x4 problem: torch.nn.functional, numbaconv, numbaconv.torch."""
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 2, 2), np.float32)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    return best_of({"torch.nn.functional.conv2d": lambda: torch.nn.functional.conv2d(xt, wt),
                    "numbaconv.conv2d (NumPy)": lambda: nc.conv2d(x, w),
                    "numbaconv.torch.conv2d": lambda: nct.conv2d(xt, wt)}, repeats, 200)


def step_times(repeats):
    """(torch ms, numbaconv ms) per training step, the two models alternating."""
    torch.manual_seed(0)
    models = {"torch.nn.Conv2d": build_cnn(torch.nn.Conv2d, SIZE),
              "numbaconv.torch.Conv2d": build_cnn(nct.Conv2d, SIZE)}
    models["numbaconv.torch.Conv2d"].load_state_dict(models["torch.nn.Conv2d"].state_dict())
    x = torch.randn(BATCH, 1, SIZE, SIZE)
    labels = torch.randint(0, 10, (BATCH,))
    step = time_training_steps(models, x, labels, steps=3, repeats=repeats)
    return step["torch.nn.Conv2d"] * 1e3, step["numbaconv.torch.Conv2d"] * 1e3


def step_in_fresh_process(repeats, **environment):
    """step_times in a new Python process with ``environment`` added to this one's."""
    command = [sys.executable, os.path.abspath(__file__), "--step-only", "--repeats", str(repeats)]
    result = subprocess.run(command, env={**os.environ, **environment}, capture_output=True, text=True, check=True)
    return tuple(float(ms) for ms in result.stdout.split())


def main(repeats=7):
    print(f"the digits CNN, batch {BATCH} of 1x{SIZE}x{SIZE}, float32, SGD step; torch threads "
          f"{torch.get_num_threads()}, best of {repeats} alternating repeats after warm-up")
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    steps = {}
    for label, environment in ((f"OMP_WAIT_POLICY {policy}", {}),
                               ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"})):
        torch_ms, ours_ms = steps[label] = step_in_fresh_process(repeats, **environment)
        print(f"training step, {label}: torch.nn.Conv2d {torch_ms:.1f} ms, numbaconv.torch.Conv2d "
              f"{ours_ms:.1f} ms, ratio (torch / numbaconv) {torch_ms / ours_ms:.2f}")
    print(f"\nconvolutions alone, in this process (OMP_WAIT_POLICY {policy})")
    torch_ms, ours_ms = steps[f"OMP_WAIT_POLICY {policy}"]

    # The first layer's input gradient is never needed (the image does not require grad).
    layers = [("conv1 1->32", (BATCH, 1, SIZE, SIZE), (32, 1, 3, 3), ("forward", "weight grad")),
              ("conv2 32->64", (BATCH, 32, SIZE - 2, SIZE - 2), (64, 32, 3, 3),
               ("forward", "input grad", "weight grad"))]
    print(f"{'layer':14s} {'pass':12s} {'numbaconv ms':>12s} {'torch ms':>9s} {'ratio':>6s}   "
          f"fastest numbaconv algo (ms)")
    total_ours = total_torch = 0.0
    for name, x_shape, w_shape, passes in layers:
        for pass_name, times in conv_passes(x_shape, w_shape, repeats).items():
            if pass_name in passes:
                ours, theirs = times["auto"], times["torch"]
                total_ours, total_torch = total_ours + ours, total_torch + theirs
                fastest = min(runnable(x_shape, w_shape), key=times.get)
                print(f"{name:14s} {pass_name:12s} {ours * 1e3:12.2f} {theirs * 1e3:9.2f} "
                      f"{theirs / ours:6.2f}   {fastest} {times[fastest] * 1e3:.2f}")
    print(f"{'convolutions':14s} {'in a step':12s} {total_ours * 1e3:12.2f} {total_torch * 1e3:9.2f} "
          f"{total_torch / total_ours:6.2f}")
    print(f"rest of the step (torch layers, optimizer, autograd): about "
          f"{ours_ms - total_ours * 1e3:.1f} ms with numbaconv, {torch_ms - total_torch * 1e3:.1f} ms with torch\n")

    print("Python overhead of one call (1x1x4x4 input, 2x2 kernel):")
    for name, seconds in call_overhead(repeats).items():
        print(f"  {name:28s} {seconds * 1e6:8.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="alternating repeats (default 7)")
    parser.add_argument("--step-only", action="store_true", help="print the two step times in ms and stop")
    arguments = parser.parse_args()
    # as numbaconv bench does: otherwise the convolutions timed alone may pay page faults or not,
    # depending on what ran before in the process, and that time would land in "the rest of the step"
    print(keep_freed_memory(), file=sys.stderr)
    if arguments.step_only:
        print(*step_times(arguments.repeats))
    else:
        main(arguments.repeats)
