"""How soon Ctrl-C stops a long call, per CPU algorithm (numbaconv.slices).

    python bench/interrupt.py                 # every algorithm, SIGINT 1 s into the call
    python bench/interrupt.py --unsliced      # the same with slicing off: how long one kernel call runs on

Each algorithm gets a float32 layer that keeps it busy for several seconds on
two cores; a child process compiles, starts the call, and the parent sends
SIGINT a second later and reports the seconds until the child's
KeyboardInterrupt (or until the call finished, with --unsliced).
"""
import argparse
import signal
import subprocess
import sys
import time

# algorithm -> (x shape, w shape, groups): a "same" layer the algorithm runs for seconds. (depthwise
# is left out: its passes stream memory, and a call that fits in memory ends within a second.)
LAYERS = {
    "direct": ((32, 128, 56, 56), (128, 128, 3, 3), 1),
    "im2col": ((64, 256, 56, 56), (256, 256, 5, 5), 1),
    "planar": ((32, 256, 56, 56), (256, 256, 5, 5), 1),
    "winograd": ((96, 512, 56, 56), (512, 512, 3, 3), 1),
}

CHILD = """
import sys, time, numpy as np, numbaconv as nc
from numbaconv import dispatch
algo, x_shape, w_shape, groups, unsliced = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
if unsliced:
    for module in dispatch.REGISTRY["cpu"].values():
        module.SLICE_FLOPS = None
x = np.random.default_rng(0).standard_normal(x_shape).astype(np.float32)
w = np.random.default_rng(1).standard_normal(w_shape).astype(np.float32)
nc.conv2d(x[:1, :, :8, :8], w, padding="same", groups=groups, algo=algo)
print("start", flush=True)
try:
    nc.conv2d(x, w, padding="same", groups=groups, algo=algo)
    print("finished", time.perf_counter(), flush=True)
except KeyboardInterrupt:
    print("interrupted", time.perf_counter(), flush=True)
"""


def latency(algo: str, unsliced: bool, delay: float) -> tuple[str, float]:
    x_shape, w_shape, groups = LAYERS[algo]
    child = subprocess.Popen([sys.executable, "-c", CHILD, algo, repr(x_shape), repr(w_shape), str(groups),
                              "1" if unsliced else "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "start"
        time.sleep(delay)
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        how, when = child.stdout.readline().split()
        child.wait(timeout=600)
    finally:
        child.kill()
    return how, float(when) - sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unsliced", action="store_true", help="turn slicing off (how it was without it)")
    parser.add_argument("--algo", default=",".join(LAYERS), help="comma-separated algorithms")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds into the call to send SIGINT")
    options = parser.parse_args()
    for algo in options.algo.split(","):
        how, seconds = latency(algo, options.unsliced, options.delay)
        when = f"{seconds:.2f} s after SIGINT" if seconds >= 0 else f"{-seconds:.2f} s before SIGINT (too short a call)"
        print(f"{algo:10} {str(LAYERS[algo][:2]):42} {how} {when}", flush=True)


if __name__ == "__main__":
    main()
