"""``numbaconv verify``: every algorithm and pass against the float64 reference on random problems.

The problems cross every argument the engine takes: rank 1, 2 and 3; stride
1 and 2; padding 0, 1, "same" and asymmetric (low 1, high 0); dilation 1 and
2; groups 1, 2 and depthwise (groups = C), the depthwise ones also with a
3x3 kernel (1x3x3 in 3-d, 3 in 1-d: the depthwise algorithm's problems where
the padding is "same"); float32 and float64. Channel counts, sizes and
kernel sizes are drawn at random per problem (kernels of 1-3 taps per dim,
inputs large enough for every combination), and the forward
pass includes a bias. Each result is compared with ``numbaconv.reference``
by ``numbaconv.accuracy.relative_error`` against ``numbaconv.accuracy.TOLERANCE``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .. import dispatch, functional, reference
from ..accuracy import TOLERANCE, relative_error
from ..passes import pass_calls
from ..spec import ConvSpec

STRIDES = (1, 2)
PADDINGS = (0, 1, "same", "asymmetric")
DILATIONS = (1, 2)
GROUPINGS = (1, 2, "depthwise", "depthwise 3x3")
SIZE_RANGE = {1: (7, 16), 2: (5, 10), 3: (5, 8)}  # wide enough for 3 taps at dilation 2


def random_problems(rng, draws=3, dtypes=("float32", "float64")):
    """Yield ``(rank, arguments, x, w, bias, grad_y, dtype)``, ``draws`` problems per argument combination."""
    for rank, stride, padding, dilation, grouping, dtype, _ in itertools.product(
            (1, 2, 3), STRIDES, PADDINGS, DILATIONS, GROUPINGS, dtypes, range(draws)):
        depthwise = grouping in ("depthwise", "depthwise 3x3")
        groups = int(rng.integers(2, 4)) if depthwise else grouping
        group_in = 1 if depthwise else int(rng.integers(1, 4))
        channels_in, channels_out = groups * group_in, groups * int(rng.integers(1, 4))
        size = tuple(int(s) for s in rng.integers(*SIZE_RANGE[rank], size=rank))
        if grouping == "depthwise 3x3":
            kernel = (1,) * (rank - 2) + (3,) * min(rank, 2)
        else:
            kernel = tuple(int(k) for k in rng.integers(1, 4, size=rank))
        pads = ((1, 0),) * rank if padding == "asymmetric" else padding
        arguments = dict(stride=stride, padding=pads, dilation=dilation, groups=groups)
        x = rng.standard_normal((2, channels_in, *size)).astype(dtype)
        w = rng.standard_normal((channels_out, group_in, *kernel)).astype(dtype)
        bias = rng.standard_normal(channels_out).astype(dtype)
        grad_y = rng.standard_normal(ConvSpec.create(x.shape, w.shape, **arguments).y_shape).astype(dtype)
        yield rank, arguments, x, w, bias, grad_y, dtype


@dataclass
class Tally:
    """What one (device, algorithm, pass) did over the problems."""

    checked: int = 0
    declined: int = 0
    max_error: dict = field(default_factory=lambda: {dtype: 0.0 for dtype in TOLERANCE})
    failures: list = field(default_factory=list)


def verify(devices, seed=0, algos=None, draws=3, progress=None) -> dict:
    """Check every algorithm on ``devices``; returns ``{(device, algo, pass): Tally}``.
    ``progress(done, total, text)`` is called before each problem."""
    rng = np.random.default_rng(seed)
    tallies = {}
    problems = list(random_problems(rng, draws))
    for index, problem in enumerate(problems):
        rank, arguments, x, w, bias, grad_y, dtype = problem
        if progress is not None:
            progress(index, len(problems), f"conv{rank}d {dtype} x {x.shape} w {w.shape}")
        x64, w64, grad_y64, bias64 = (a.astype(np.float64) for a in (x, w, grad_y, bias))
        expected = {name: run() for name, run in
                    pass_calls(reference, rank, arguments, x64, w64, grad_y64, bias64).items()}
        for device in devices:
            for algo in algos or dispatch.algorithms(device):
                runs = pass_calls(functional, rank, arguments, x, w, grad_y, bias, algo=algo, device=device)
                for pass_name, run in runs.items():
                    tally = tallies.setdefault((device, algo, pass_name), Tally())
                    try:
                        result = run()
                    except ValueError as declined:
                        if "cannot run this problem" not in str(declined):
                            raise
                        tally.declined += 1
                        continue
                    error = relative_error(result, expected[pass_name])
                    tally.checked += 1
                    tally.max_error[dtype] = float(np.maximum(tally.max_error[dtype], error))  # NaN sticks
                    if not error <= TOLERANCE[dtype]:
                        tally.failures.append(f"conv{rank}d {dtype} {arguments} x {x.shape} w {w.shape}: "
                                              f"error {error:.2e}")
    return tallies
