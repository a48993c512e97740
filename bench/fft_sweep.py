"""The sweep behind dispatch.FFT_MIN_MODEL_RATE (docs/decisions.md, F1): per pass, the FFT against
the algorithm auto picks without it, and the cost model's direct-FLOPs rate (column m), on dense
2-d, depthwise 2-d, 1-d and 3-d problems of growing kernels. ``python bench/fft_sweep.py [float32|float64]``."""
import sys, time, numpy as np
import numbaconv as nc
from numbaconv import dispatch
from numbaconv.cpu import fft
from numbaconv.spec import ConvSpec
from numbaconv.tools import bench
from numbaconv.passes import pass_calls
bench.keep_freed_memory()
dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
def best(f, budget=0.25):
    f(); t0 = time.perf_counter(); ts = []
    while (time.perf_counter() - t0 < budget or len(ts) < 2) and len(ts) < 30:
        a = time.perf_counter(); f(); ts.append(time.perf_counter() - a)
    return min(ts) * 1e3
problems = []
for k in (3, 5, 7, 9, 11): problems.append(((2, 64, 64, 64), (64, 64, k, k), k // 2, 1))
for k in (5, 7, 9, 13, 17): problems.append(((2, 128, 56, 56), (128, 1, k, k), k // 2, 128))
for k in (9, 17, 33, 65): problems.append(((4, 64, 4000), (64, 64, k), k // 2, 1))
for k in (3, 5, 7): problems.append(((1, 16, 32, 32, 32), (16, 16, k, k, k), k // 2, 1))
rng = np.random.default_rng(0)
for xs, ws, pad, g in problems:
    spec = ConvSpec.create(xs, ws, 1, pad, 1, g)
    s3 = spec.as_3d()
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    gy = rng.standard_normal(spec.y_shape).astype(dtype)
    rank = len(xs) - 2
    args = dict(stride=1, padding=pad, dilation=1, groups=g)
    out = []
    for p in ("forward", "input", "weight"):
        others = [a for a in dispatch.runnable("cpu", s3) if a != "fft"]
        auto = dispatch._auto_cpu(s3, tuple(others), p)
        cf = pass_calls(nc, rank, args, x, w, gy, algo="fft")[p]
        ca = pass_calls(nc, rank, args, x, w, gy, algo=auto)[p]
        tf, ta = best(cf), best(ca)
        model = s3.flops / fft._cost(s3, p, fft._plan(s3, p, x.itemsize).axes)
        out.append(f"{p[0]} {auto:>9s} {ta:7.1f} fft {tf:7.1f} x{ta/tf:5.2f} m{model:6.0f}")
    print(f"{str(xs):22s} k{ws[2:]} g{g}: " + " | ".join(out), flush=True)
