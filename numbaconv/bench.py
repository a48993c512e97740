"""The benchmark layer suite and the timing, checking and report code.

Shared by ``numbaconv bench`` (numbaconv/cli.py) and the pytest-benchmark
suites in bench/. One measurement is a (layer, pass, dtype) triple timed for
several implementations: each numbaconv algorithm on each available device,
PyTorch on the CPU and on CUDA when installed, and the float64 reference on
the smallest layers.

How a number is obtained (DESIGN.md, Measuring):

1. Every implementation's result is first checked against a float64 truth
   (PyTorch in float64 when installed, else ``numbaconv.reference``): the
   error is ``||result - truth|| / ||truth||`` and must stay within
   ``TOLERANCE`` of the dtype (the reference itself is exact by definition).
2. That first call is the warm-up; its time, which holds Numba's compilation
   when the on-disk cache is cold, is reported on its own (``first_ms``).
3. The implementations then take turns, one call each per round, and each
   keeps its best time: alternating spreads machine noise evenly, so ratios
   hold where absolute times drift. Rounds go on until every implementation
   has at least ``min_repeats`` calls and the round budget is spent.
4. CPU calls are timed with ``time.perf_counter``; GPU calls with CUDA events
   recorded around the call, synchronised before the time is read.
5. ``numbaconv bench`` first asks glibc's malloc to keep freed memory
   (:func:`keep_freed_memory`), so that no timed call pays page faults for
   memory an earlier call handed back to the system.

FLOPs are ``2 N K (C / groups) prod(out) prod(kernel)`` for every pass (the
input and weight gradients do the same multiply-adds as the forward).
"""
from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import dispatch, functional, reference, tuning
from .cpu import workspace
from .devices import available_devices, cuda_simulated
from .spec import ConvSpec

PASSES = ("forward", "input", "weight")
DTYPES = ("float32", "float64")
# Norm-relative error allowed against the float64 truth, as in tests/.
TOLERANCE = {"float32": 1e-5, "float64": 1e-12}
# The reference joins only layers this small (it is NumPy loops over taps).
REFERENCE_FLOP_LIMIT = 60e6


@dataclass(frozen=True)
class Layer:
    """One convolution problem of the suite (integer padding, same on every side)."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1

    @property
    def rank(self) -> int:
        return len(self.size)

    @property
    def spec(self) -> ConvSpec:
        return ConvSpec.create((self.batch, self.in_channels, *self.size),
                               (self.out_channels, self.in_channels // self.groups, *self.kernel),
                               self.stride, self.padding, self.dilation, self.groups)

    @property
    def arguments(self) -> dict:
        """The keyword arguments numbaconv and PyTorch share for this layer."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def describe(self) -> str:
        spec = self.spec
        extras = "".join(f" {key} {value}" for key, value in self.arguments.items()
                         if value != (0 if key == "padding" else 1))
        return (f"x {spec.x_shape} w {spec.w_shape}{extras} -> y {spec.y_shape}, "
                f"{spec.flops / 1e9:.3f} GFLOP")


def _square(name, batch, channels_in, channels_out, size, kernel, **options):
    return Layer(name, batch, channels_in, channels_out, (size, size), (kernel, kernel), **options)


LAYERS = {layer.name: layer for layer in [
    _square("stem7x7s2", 8, 3, 64, 224, 7, stride=2, padding=3),
    _square("conv3x3_64", 8, 64, 64, 56, 3, padding=1),
    _square("conv3x3_128", 8, 128, 128, 28, 3, padding=1),
    _square("conv3x3_256", 8, 256, 256, 14, 3, padding=1),
    _square("conv3x3_512", 8, 512, 512, 7, 3, padding=1),
    _square("conv3x3s2_128", 8, 128, 256, 28, 3, stride=2, padding=1),
    _square("conv1x1_256to64", 8, 256, 64, 56, 1),
    _square("conv1x1_128to512", 8, 128, 512, 28, 1),
    _square("depthwise3x3_256", 8, 256, 256, 28, 3, padding=1, groups=256),
    _square("lenet_conv1", 64, 1, 20, 32, 5),
    _square("lenet_conv2", 64, 20, 20, 14, 5),
    _square("batch1_16ch", 1, 16, 16, 32, 3, padding=1),
    Layer("audio1d", 8, 32, 64, (8000,), (9,), stride=2, padding=4),
    Layer("video3d", 2, 16, 32, (8, 28, 28), (3, 3, 3), padding=1),
]}
SUITES = {
    "quick": ("conv3x3_128", "conv3x3s2_128", "conv1x1_128to512", "depthwise3x3_256",
              "lenet_conv1", "lenet_conv2", "batch1_16ch", "audio1d", "video3d"),
    "full": tuple(LAYERS),
}


@dataclass(frozen=True)
class Problem:
    """The operands of one (layer, dtype): input, weight and output gradient."""

    layer: Layer
    dtype: str
    x: np.ndarray
    w: np.ndarray
    grad_y: np.ndarray

    @classmethod
    def create(cls, layer: Layer, dtype: str, seed: int = 0) -> "Problem":
        rng = np.random.default_rng(seed)
        spec = layer.spec
        x, w, grad_y = (rng.standard_normal(shape).astype(dtype)
                        for shape in (spec.x_shape, spec.w_shape, spec.y_shape))
        return cls(layer, dtype, x, w, grad_y)


@dataclass
class Implementation:
    """One way to run a pass: ``prepare(problem, pass) -> call``; the call returns a NumPy-readable result."""

    label: str          # "cpu/im2col", "torch-cpu", ...
    device: str         # "cpu" or "cuda": whose PyTorch it is compared with
    prepare: Callable
    timer: Callable     # timer(call) -> seconds
    to_host: Callable = np.asarray
    synchronize: Callable = lambda: None    # waits for the device's queued work


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20                  # the most glibc takes on 64-bit


def keep_freed_memory() -> str:
    """Set glibc's malloc to serve blocks up to 32 MiB from its heap and never trim the heap, for
    the rest of the process; returns what was done, for the report.

    Both libraries allocate each call's result (PyTorch its scratch too). With glibc's defaults
    that memory often goes back to the system on free and the next call faults every page in
    again, by how much depending on what ran before: in fresh processes (2-core AMD EPYC,
    float32, best of 20, ms) PyTorch's stem forward took 25.3 against 10.7 with this setting,
    the digits CNN's 32 -> 64 3x3 forward 14.1 against 6.9, and the depthwise 3x3 forward 0.65
    or 7.6 depending on one convolution run before it (0.58-0.65 with the setting)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):   # no C library by that name, or no mallopt in it
        return "malloc left as it is (no glibc mallopt here)"
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) != 1 or mallopt(M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return "malloc left as it is (mallopt refused)"
    return "malloc keeps freed memory (glibc mallopt: blocks up to 32 MiB from the heap, heap never trimmed)"


def wall_time(call) -> float:
    """Seconds one call takes on the host clock."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _cuda_event_timer(event_factory, synchronize):
    """A timer that records GPU events around a call (numba.cuda or torch.cuda events)."""
    def timer(call):
        start, end = event_factory(), event_factory()
        start.record()
        call()
        end.record()
        synchronize(end)
        return start.elapsed_time(end) / 1e3
    return timer


def pass_calls(engine, rank, arguments, x, w, grad_y, bias=None, **options) -> dict:
    """Zero-argument calls of the three passes through ``engine`` (numbaconv.functional or
    numbaconv.reference, which share their signatures); the forward adds ``bias``."""
    forward, input_grad, weight_grad = (getattr(engine, f"conv{rank}d{suffix}") for suffix in ("", "_input", "_weight"))
    return {
        "forward": lambda: forward(x, w, bias, **arguments, **options),
        "input": lambda: input_grad(x.shape, w, grad_y, **arguments, **options),
        "weight": lambda: weight_grad(x, w.shape, grad_y, **arguments, **options),
    }


def _numbaconv_call(device: str, algo: str, problem: Problem, pass_name: str, put=None):
    """A zero-argument call running one pass of ``problem`` with numbaconv (operands moved by ``put``)."""
    operands = (put(a) if put else a for a in (problem.x, problem.w, problem.grad_y))
    return pass_calls(functional, problem.layer.rank, problem.layer.arguments, *operands,
                      algo=algo, device=device)[pass_name]


def _reference_call(problem: Problem, pass_name: str):
    return pass_calls(reference, problem.layer.rank, problem.layer.arguments,
                      problem.x, problem.w, problem.grad_y)[pass_name]


def _torch_call(torch, problem: Problem, pass_name: str, device: str, dtype: str | None = None):
    """A zero-argument call running one pass with PyTorch (dtype overrides the problem's)."""
    layer, rank = problem.layer, problem.layer.rank
    convert = getattr(torch, dtype or problem.dtype)
    x, w, grad_y = (torch.from_numpy(a).to(device=device, dtype=convert) for a in (problem.x, problem.w, problem.grad_y))
    if pass_name == "forward":
        function = getattr(torch.nn.functional, f"conv{rank}d")
        return lambda: function(x, w, **layer.arguments)
    if pass_name == "input":
        function = getattr(torch.nn.grad, f"conv{rank}d_input")
        return lambda: function(x.shape, w, grad_y, **layer.arguments)
    function = getattr(torch.nn.grad, f"conv{rank}d_weight")
    return lambda: function(x, w.shape, grad_y, **layer.arguments)


def import_torch():
    """PyTorch if it is installed, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def truth(problem: Problem, pass_name: str, torch=None) -> np.ndarray:
    """The float64 result of a pass: PyTorch in float64 where installed, else numbaconv.reference."""
    if torch is not None:
        return _torch_call(torch, problem, pass_name, "cpu", "float64")().numpy()
    as64 = Problem(problem.layer, "float64", *(a.astype(np.float64) for a in (problem.x, problem.w, problem.grad_y)))
    return _reference_call(as64, pass_name)()


def relative_error(result, expected) -> float:
    """||result - expected|| / ||expected|| in float64 (NaN anywhere gives NaN)."""
    result, expected = np.asarray(result, np.float64), np.asarray(expected, np.float64)
    if result.shape != expected.shape:
        return math.nan
    scale = max(float(np.linalg.norm(expected)), np.finfo(np.float64).tiny)
    return float(np.linalg.norm(result - expected)) / scale


def timed_devices() -> tuple[str, ...]:
    """The devices worth timing by default: the available ones, less a simulated GPU."""
    return tuple(d for d in available_devices() if not (d == "cuda" and cuda_simulated()))


def algorithm_choices(device: str) -> tuple[str, ...]:
    """What ``--algo`` may name on ``device``: "auto", "tune" and the registered algorithms."""
    return ("auto", "tune") + dispatch.algorithms(device)


def implementations(devices=None, algos=None, torch=None, with_reference=True) -> list[Implementation]:
    """Every implementation to compare: numbaconv (device x algorithm), PyTorch per device, the reference.

    ``devices``: subset of the available devices (default: ``timed_devices()``).
    ``algos``: numbaconv algorithm names, "auto" included (default: every registered algorithm).
    """
    devices = tuple(devices or timed_devices())
    result = []
    for device in devices:
        timer, put, to_host, synchronize = wall_time, None, np.asarray, lambda: None
        if device == "cuda":
            from numba import config, cuda
            put, to_host, synchronize = cuda.to_device, lambda array: array.copy_to_host(), cuda.synchronize
            # the simulator's events report 0 ms: time it (slowly, for the smoke tests) on the host clock
            timer = (lambda call: wall_time(lambda: (call(), cuda.synchronize()))) if config.ENABLE_CUDASIM \
                else _cuda_event_timer(cuda.event, lambda event: event.synchronize())
        for algo in (algos or dispatch.algorithms(device)):
            if algo not in algorithm_choices(device):
                continue
            result.append(Implementation(
                f"{device}/{algo}", device,
                lambda problem, pass_name, device=device, algo=algo, put=put:
                    _numbaconv_call(device, algo, problem, pass_name, put),
                timer, to_host, synchronize))
        if torch is not None and (device == "cpu" or torch.cuda.is_available()):
            torch_timer, torch_synchronize = wall_time, lambda: None
            if device == "cuda":
                torch_timer = _cuda_event_timer(lambda: torch.cuda.Event(enable_timing=True),
                                                lambda event: event.synchronize())
                torch_synchronize = torch.cuda.synchronize
            result.append(Implementation(
                f"torch-{device}", device,
                lambda problem, pass_name, device=device: _torch_call(torch, problem, pass_name, device),
                torch_timer, lambda tensor: tensor.cpu().numpy(), torch_synchronize))
    if with_reference and "cpu" in devices:
        result.append(Implementation("cpu/reference", "cpu", _reference_call, wall_time))
    return result


def runs(implementation: Implementation, problem: Problem) -> bool:
    """Whether ``implementation`` takes part in ``problem`` (declined algorithms and big reference runs do not)."""
    label = implementation.label
    if label == "cpu/reference":
        return problem.layer.spec.flops <= REFERENCE_FLOP_LIMIT
    if label.startswith("torch"):
        return True
    device, algo = label.split("/")
    if algo in ("auto", "tune"):
        return True
    return algo in dispatch.runnable(device, problem.layer.spec.as_3d())


def auto_choice(device: str, layer: Layer, pass_name: str) -> str:
    """The algorithm ``algo="auto"`` picks for one pass of ``layer`` on ``device``."""
    chosen = dispatch.choose(device, "auto", layer.spec.as_3d(), pass_name)
    return next(name for name, module in dispatch.registry(device).items() if module is chosen)


def tuned_choice(device: str, problem: Problem, pass_name: str) -> str:
    """The algorithm ``algo="tune"`` ran for this pass of ``problem`` (after a call made the plan)."""
    plan = tuning.lookup(device, pass_name, problem.layer.spec.as_3d(), problem.dtype)
    return plan["algo"] if plan else ""


SETTLE_S = float(os.environ.get("NUMBACONV_BENCH_SETTLE_S", "0.02"))


def best_times(calls, timers, min_repeats=3, max_repeats=25, budget_s=1.0) -> list[float]:
    """Best time of each call, the calls taking turns (round-robin) after the caller's warm-up.

    Before each timed call the implementation runs untimed for ``SETTLE_S``
    seconds: PyTorch's OpenMP threads (GNU libgomp) spin for milliseconds after
    a parallel region, and timed right after a PyTorch call numbaconv's threads
    shared the cores with them (conv3x3_128 forward: 8.6 ms against 4.7 ms
    alone); a pause instead of the untimed calls timed both from idle threads
    (batch1_16ch: 0.6-0.9 ms where a hot call takes 0.05-0.09 ms). Stops after
    ``max_repeats`` rounds, or once ``min_repeats`` rounds are done and
    ``budget_s`` seconds have gone by.
    """
    best = [math.inf] * len(calls)
    start = time.perf_counter()
    for round_index in range(max_repeats):
        for index, (call, timer) in enumerate(zip(calls, timers)):
            settle_until = time.perf_counter() + SETTLE_S
            while time.perf_counter() < settle_until:
                call()
            best[index] = min(best[index], timer(call))
        if round_index + 1 >= min_repeats and time.perf_counter() - start >= budget_s:
            break
    return best


@dataclass
class Row:
    """One line of the report."""

    layer: str
    pass_name: str
    dtype: str
    implementation: str
    device: str
    flops: int
    first_ms: float
    best_ms: float = math.nan
    error: float = math.nan
    correct: bool = True
    auto_pick: bool = False     # this algorithm is the one algo="auto" picks
    picked: str = ""            # for the "auto" and "tune" rows: the algorithm it ran
    vs_torch: float = math.nan
    percent_of_peak: float = math.nan
    workspace_mib: float = math.nan   # numbaconv on the CPU: scratch one call borrows

    @property
    def gflops(self) -> float:
        return self.flops / (self.best_ms * 1e-3) / 1e9

    def as_dict(self) -> dict:
        """The row as JSON-ready values (NaN, meaning "not measured", becomes None)."""
        values = dict(dataclasses.asdict(self), gflops=self.gflops)
        return {key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in values.items()}


def measure(problem: Problem, pass_name: str, candidates, torch=None, *, peak_gflops=math.nan,
            min_repeats=3, max_repeats=25, budget_s=1.0) -> list[Row]:
    """Check, warm up and time every candidate on one pass of ``problem``; one Row each.

    A candidate whose result misses the tolerance is reported (correct=False)
    and not timed.
    """
    layer = problem.layer
    expected = truth(problem, pass_name, torch)
    tolerance = TOLERANCE[problem.dtype]
    picks = {device: auto_choice(device, layer, pass_name) for device in {c.device for c in candidates}}
    rows, timed = [], []
    for candidate in candidates:
        call = candidate.prepare(problem, pass_name)
        start = time.perf_counter()
        result = candidate.to_host(call())
        first = time.perf_counter() - start
        error = relative_error(result, expected)
        device, _, algo = candidate.label.partition("/")
        picked = ""
        if algo == "auto":
            picked = picks.get(device, "")
        elif algo == "tune":
            picked = tuned_choice(device, problem, pass_name)
        row = Row(layer.name, pass_name, problem.dtype, candidate.label, candidate.device, layer.spec.flops,
                  first * 1e3, error=error, correct=candidate.label == "cpu/reference" or error <= tolerance,
                  auto_pick=picks.get(device) == algo, picked=picked)
        rows.append(row)
        if row.correct:
            timed.append((row, call, candidate.timer))
            if device == "cpu" and algo != "reference":
                row.workspace_mib = peak_workspace_bytes(call) / 2**20
    seconds = best_times([call for _, call, _ in timed], [timer for _, _, timer in timed],
                         min_repeats, max_repeats, budget_s)
    for (row, _, _), best in zip(timed, seconds):
        row.best_ms = best * 1e3
        if row.device == "cpu":
            row.percent_of_peak = 100 * row.gflops / peak_gflops
    torch_ms = {row.device: row.best_ms for row in rows if row.implementation.startswith("torch")}
    for row in rows:
        if row.device in torch_ms:
            row.vs_torch = torch_ms[row.device] / row.best_ms
    return rows


def peak_workspace_bytes(call) -> int:
    """Scratch one call borrows through numbaconv.cpu.workspace, all threads together (a call
    after the warm-up: with algo="tune" the first call also times every candidate)."""
    workspace.reset_peak()
    call()
    return workspace.peak_bytes()


def cpu_peak_gflops(size=2048, repeats=5) -> float:
    """The practical CPU ceiling: best GFLOP/s of a float32 ``size``-square matrix product through NumPy's BLAS."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    a @ b
    best = min(wall_time(lambda: a @ b) for _ in range(repeats))
    return 2 * size ** 3 / best / 1e9


def format_table(rows: list[Row], torch_note: str | None = None) -> str:
    """The report as aligned text; '*' marks the algorithm algo="auto" picks."""
    header = (f"{'layer':<18}{'pass':<9}{'implementation':<18}{'ms':>10}{'GFLOP/s':>9}{'%peak':>7}"
              f"{'vs torch':>9}{'rel err':>10}{'ws MiB':>9}")
    lines = [header, "-" * len(header)]
    previous = None
    for row in rows:
        if previous is not None and (row.layer, row.pass_name) != previous:
            lines.append("")
        previous = (row.layer, row.pass_name)
        label = row.implementation + ("*" if row.auto_pick else "") + (f"={row.picked}" if row.picked else "")
        if not row.correct:
            lines.append(f"{row.layer:<18}{row.pass_name:<9}{label:<18}"
                         f"{'MISMATCH: not timed':>35}{row.error:>10.1e}")
            continue
        vs_torch = "" if math.isnan(row.vs_torch) else f"{row.vs_torch:.2f}x"
        peak = "" if math.isnan(row.percent_of_peak) else f"{row.percent_of_peak:.0f}"
        scratch = "" if math.isnan(row.workspace_mib) else f"{row.workspace_mib:.1f}"
        lines.append(f"{row.layer:<18}{row.pass_name:<9}{label:<18}{row.best_ms:>10.3f}{row.gflops:>9.1f}"
                     f"{peak:>7}{vs_torch:>9}{row.error:>10.1e}{scratch:>9}")
    lines.append("")
    if any(row.auto_pick for row in rows):
        lines.append("* = the algorithm algo=\"auto\" picks.")
    lines.append("vs torch = PyTorch time / this time on the same device (above 1: faster than PyTorch); "
                 "rel err = ||result - float64 truth|| / ||truth||;\n"
                 "ws MiB = scratch numbaconv's CPU algorithms borrowed in one call, all threads together "
                 "(numbaconv.cpu.workspace: all their scratch, under the workspace limit; the results are not counted).")
    if torch_note:
        lines.append(f"The 'vs torch' column is empty because {torch_note}; the truth is numbaconv.reference.")
    return "\n".join(lines)


def plot(rows: list[Row], path: str) -> None:
    """A bar chart: GFLOP/s per layer, one bar per implementation, one panel per pass (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passes = [p for p in PASSES if any(row.pass_name == p for row in rows)]
    layers = list(dict.fromkeys(row.layer for row in rows))
    labels = list(dict.fromkeys(row.implementation for row in rows))
    width = 0.8 / len(labels)
    figure, axes = plt.subplots(len(passes), 1, figsize=(max(8, 1.1 * len(layers) + 3), 3.2 * len(passes)),
                                squeeze=False)
    for axis, pass_name in zip(axes[:, 0], passes):
        for index, label in enumerate(labels):
            speed = {row.layer: row.gflops for row in rows
                     if row.pass_name == pass_name and row.implementation == label and row.correct}
            positions = [i + (index - (len(labels) - 1) / 2) * width for i in range(len(layers))]
            axis.bar(positions, [speed.get(layer, 0.0) for layer in layers], width, label=label)
        axis.set_title(f"{pass_name} pass")
        axis.set_ylabel("GFLOP/s")
        axis.set_xticks(range(len(layers)))
        axis.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=8, ncol=min(len(labels), 4))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
