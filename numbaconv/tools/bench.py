"""The implementations ``numbaconv bench`` compares, and how one comparison runs.

Shared by ``numbaconv bench`` (numbaconv/tools/cli.py) and the pytest-benchmark suite in
bench/. One comparison is a (layer, pass, dtype) of the suite (numbaconv/tools/suite.py)
run by several implementations: each numbaconv algorithm on each available device, PyTorch
on the CPU and on CUDA when installed, and the float64 reference on the smallest layers.

How a number is obtained (:func:`compare`):

1. Every implementation's result is first checked against a float64 truth
   (PyTorch in float64 when installed and its column matrix is not huge, else
   ``numbaconv.reference``): the
   error is ``||result - truth|| / ||truth||`` and must stay within
   ``numbaconv.accuracy.TOLERANCE`` of the dtype (the reference itself is
   exact by definition).
2. That first call is the warm-up; its time, which holds Numba's compilation
   when the on-disk cache is cold, is reported on its own (``first_ms``).
3. The implementations then take turns, one call each per round, each after
   running untimed for ``SETTLE_S``, and each keeps its best time
   (``numbaconv.timing.best_times``). Rounds go on until every implementation
   has at least ``min_repeats`` calls and the round budget is spent.
4. CPU calls are timed with ``time.perf_counter``; GPU calls with CUDA events
   recorded around the call, synchronised before the time is read.
5. ``numbaconv bench`` first asks glibc's malloc to keep freed memory
   (:func:`keep_freed_memory`), so that no timed call pays page faults for
   memory an earlier call handed back to the system.
"""
from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import dispatch, functional, reference, timing, tuning
from ..accuracy import TOLERANCE, relative_error
from ..cpu import workspace
from ..cpu.threads import thread_count
from ..devices import available_devices, cuda_simulated
from ..passes import pass_calls
from ..spec import ConvSpec
from .report import Row
from .suite import Layer, Problem

# The reference joins only layers this small (it is NumPy loops over taps).
REFERENCE_FLOP_LIMIT = 60e6
# Seconds each implementation runs untimed right before each timed call (timing.best_times's
# settle_s): docs/decisions.md, B2.
SETTLE_S = float(os.environ.get("NUMBACONV_BENCH_SETTLE_S", "0.02"))


@dataclass
class Implementation:
    """One way to run a pass: ``prepare(problem, pass) -> call``; the call returns a NumPy-readable result."""

    label: str          # "cpu/im2col", "torch-cpu", ...
    device: str         # "cpu" or "cuda": whose PyTorch it is compared with
    prepare: Callable
    clock: timing.Clock = timing.host_clock()
    to_host: Callable = np.asarray
    synchronize: Callable = lambda: None    # waits for the device's queued work


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20                  # the most glibc takes on 64-bit


def keep_freed_memory() -> str:
    """Set glibc's malloc to serve blocks up to 32 MiB from its heap and never trim the heap, for
    the rest of the process; returns what was done, for the report.

    Both libraries allocate each call's result (PyTorch its scratch too). With glibc's defaults
    that memory often goes back to the system on free, and the next call faults every page in
    again, by how much depending on what ran before; kept, it is reused without faults
    (docs/decisions.md, B1)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):   # no C library by that name, or no mallopt in it
        return "malloc left as it is (no glibc mallopt here)"
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) != 1 or mallopt(M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        return "malloc left as it is (mallopt refused)"
    return "malloc keeps freed memory (glibc mallopt: blocks up to 32 MiB from the heap, heap never trimmed)"


def _layer_calls(engine, layer: Layer, x, w, grad_y, **options) -> dict:
    """``{pass name: zero-argument call}`` of ``layer``'s three passes through ``engine``
    (numbaconv.functional or numbaconv.reference). A transposed layer's forward is the engine's
    ``conv_transpose``; its gradients are the forward and the weight gradient of the convolution
    from its output to its input (``layer.spec``), as numbaconv.torch's ConvTranspose layers run
    them (numbaconv.nn.conv_transpose_gradients)."""
    if not layer.transposed:
        return pass_calls(engine, layer.rank, layer.arguments, x, w, grad_y, **options)
    # that convolution's input is the layer's output gradient, its output gradient the layer's input
    calls = pass_calls(engine, layer.rank, layer.arguments, grad_y, w, x, **options)
    transpose = getattr(engine, f"conv_transpose{layer.rank}d")
    return {"forward": lambda: transpose(x, w, None, **layer.arguments, **options),
            "input": calls["forward"], "weight": calls["weight"]}


def numbaconv_call(device: str, algo: str, problem: Problem, pass_name: str, put=None):
    """A zero-argument call running one pass of ``problem`` with numbaconv (operands moved by ``put``)."""
    operands = (put(a) if put else a for a in (problem.x, problem.w, problem.grad_y))
    return _layer_calls(functional, problem.layer, *operands, algo=algo, device=device)[pass_name]


def _reference_call(problem: Problem, pass_name: str):
    return _layer_calls(reference, problem.layer, problem.x, problem.w, problem.grad_y)[pass_name]


def prepare_timing(torch):
    """What a bench script that times layers in turns does first: glibc's malloc keeps freed memory
    (:func:`keep_freed_memory`), PyTorch runs on numbaconv's thread count; returns the scripts'
    random generator (seed 0)."""
    keep_freed_memory()
    torch.set_num_threads(thread_count())
    return np.random.default_rng(0)


def calls_in_turn(torch, x, w, grad_y, arguments: dict, pass_name: str, algorithms) -> list:
    """Zero-argument calls of one pass for the bench scripts' tables: PyTorch's (CPU tensors sharing
    the arrays' memory: ``torch.nn.functional`` and ``torch.nn.grad``), then numbaconv's with each
    of ``algorithms``; ``arguments`` are the convolution's (stride, padding, dilation, groups)."""
    rank = x.ndim - 2
    tensors = [torch.from_numpy(a) for a in (x, w, grad_y)]
    return [pass_calls(_torch_engine(torch, rank), rank, arguments, *tensors)[pass_name]] + [
        pass_calls(functional, rank, arguments, x, w, grad_y, algo=algo)[pass_name] for algo in algorithms]


def _torch_engine(torch, rank):
    """PyTorch's functional convolution and torch.nn.grad's gradients under numbaconv.functional's
    names (``conv2d``, ``conv2d_input``, ``conv2d_weight``), for :func:`numbaconv.passes.pass_calls`."""
    return type("TorchEngine", (), {
        f"conv{rank}d": staticmethod(getattr(torch.nn.functional, f"conv{rank}d")),
        f"conv{rank}d_input": staticmethod(getattr(torch.nn.grad, f"conv{rank}d_input")),
        f"conv{rank}d_weight": staticmethod(getattr(torch.nn.grad, f"conv{rank}d_weight"))})


def layer_in_turn(torch, rng, x_shape, w_shape, arguments: dict, pass_names, algorithms, budget_s: float,
                  max_rounds: int = 20):
    """For the bench scripts' tables: one float32 layer on random data, each pass timed by PyTorch and
    by numbaconv with each of ``algorithms`` that runs it, taking turns
    (:func:`numbaconv.timing.best_times`, settled); yields ``(pass name, PyTorch seconds, {algorithm:
    seconds}, the algorithm "auto" picks)``."""
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    spec = ConvSpec.create(x.shape, w.shape, **arguments)
    grad_y = rng.standard_normal(spec.y_shape).astype(np.float32)
    runnable = [a for a in algorithms if a in dispatch.runnable("cpu", spec.as_3d())]
    for pass_name in pass_names:
        times = timing.best_times(calls_in_turn(torch, x, w, grad_y, arguments, pass_name, runnable), warmup=1,
                                  max_rounds=max_rounds, budget_s=budget_s, settle_s=SETTLE_S)
        auto = dispatch.choose("cpu", "auto", spec.as_3d(), pass_name).__name__.rsplit(".", 1)[1]
        yield pass_name, times[0], dict(zip(runnable, times[1:])), auto


def _torch_call(torch, problem: Problem, pass_name: str, device: str, dtype: str | None = None):
    """A zero-argument call running one pass with PyTorch (dtype overrides the problem's): the
    functional convolution and torch.nn.grad's gradients; for a transposed layer
    F.conv_transpose and aten.convolution_backward with transposed=True, the call autograd makes
    for ConvTranspose layers (torch.nn.grad makes it with transposed=False)."""
    layer, rank = problem.layer, problem.layer.rank
    convert = getattr(torch, dtype or problem.dtype)
    x, w, grad_y = (torch.from_numpy(a).to(device=device, dtype=convert) for a in (problem.x, problem.w, problem.grad_y))
    if layer.transposed:
        if pass_name == "forward":
            function = getattr(torch.nn.functional, f"conv_transpose{rank}d")
            return lambda: function(x, w, **layer.arguments)
        per_dim = [[v] * rank if isinstance(v, int) else list(v) for v in (layer.stride, layer.padding, layer.dilation)]
        mask, index = ((True, False, False), 0) if pass_name == "input" else ((False, True, False), 1)
        return lambda: torch.ops.aten.convolution_backward(grad_y, x, w, None, *per_dim, True, [0] * rank,
                                                          layer.groups, mask)[index]
    return pass_calls(_torch_engine(torch, rank), rank, layer.arguments, x, w, grad_y)[pass_name]


def import_torch():
    """PyTorch if it is installed, else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# The largest column matrix of one sample that PyTorch's float64 convolution may unfold for a truth
# (it has no other float64 CPU path: 24 GiB for a 9x9x9 kernel over 16 channels of 64^3).
TRUTH_COLUMN_BYTES = 512 * 2**20


def truth(problem: Problem, pass_name: str, torch=None) -> np.ndarray:
    """The float64 result of a pass: PyTorch in float64 where installed and its column matrix of
    one sample stays under ``TRUTH_COLUMN_BYTES``, else numbaconv.reference (tap by tap, a
    result-sized temporary)."""
    columns = problem.x.shape[1] * math.prod(problem.w.shape[2:]) * math.prod(problem.grad_y.shape[2:]) * 8
    if torch is not None and columns <= TRUTH_COLUMN_BYTES:
        return _torch_call(torch, problem, pass_name, "cpu", "float64")().numpy()
    as64 = Problem(problem.layer, "float64", *(a.astype(np.float64) for a in (problem.x, problem.w, problem.grad_y)))
    return _reference_call(as64, pass_name)()


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
        clock, put, to_host, synchronize = timing.host_clock(), None, np.asarray, lambda: None
        if device == "cuda":
            from numba import config, cuda
            put, to_host, synchronize = cuda.to_device, lambda array: array.copy_to_host(), cuda.synchronize
            # the simulator's events report 0 ms: time it (slowly, for the smoke tests) on the host clock
            clock = timing.host_clock(cuda.synchronize) if config.ENABLE_CUDASIM else timing.event_clock(cuda.event)
        for algo in (algos or dispatch.algorithms(device)):
            if algo not in algorithm_choices(device):
                continue
            result.append(Implementation(
                f"{device}/{algo}", device,
                lambda problem, pass_name, device=device, algo=algo, put=put:
                    numbaconv_call(device, algo, problem, pass_name, put),
                clock, to_host, synchronize))
        if torch is not None and (device == "cpu" or torch.cuda.is_available()):
            torch_clock, torch_synchronize = timing.host_clock(), lambda: None
            if device == "cuda":
                torch_clock = timing.event_clock(lambda: torch.cuda.Event(enable_timing=True))
                torch_synchronize = torch.cuda.synchronize
            result.append(Implementation(
                f"torch-{device}", device,
                lambda problem, pass_name, device=device: _torch_call(torch, problem, pass_name, device),
                torch_clock, lambda tensor: tensor.cpu().numpy(), torch_synchronize))
    if with_reference and "cpu" in devices:
        result.append(Implementation("cpu/reference", "cpu", _reference_call))
    return result


def runs(implementation: Implementation, layer: Layer) -> bool:
    """Whether ``implementation`` takes part in ``layer``'s problems (declined algorithms and big reference
    runs do not)."""
    label = implementation.label
    if label == "cpu/reference":
        return layer.spec.flops <= REFERENCE_FLOP_LIMIT
    if label.startswith("torch"):
        return True
    device, algo = label.split("/")
    if algo in ("auto", "tune"):
        return True
    return algo in dispatch.runnable(device, layer.spec.as_3d())


def auto_choice(device: str, layer: Layer, pass_name: str) -> str:
    """The algorithm ``algo="auto"`` picks for one pass of ``layer`` on ``device``."""
    chosen = dispatch.choose(device, "auto", layer.spec.as_3d(), layer.kernel_pass(pass_name))
    return next(name for name, module in dispatch.registry(device).items() if module is chosen)


def tuned_choice(device: str, problem: Problem, pass_name: str) -> str:
    """The algorithm ``algo="tune"`` ran for this pass of ``problem`` (after a call made the plan)."""
    plan = tuning.lookup(device, problem.layer.kernel_pass(pass_name), problem.layer.spec.as_3d(), problem.dtype)
    return plan["algo"] if plan else ""


def compare(problem: Problem, pass_name: str, candidates, torch=None, *, peak_gflops=math.nan,
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
        result, first = timing.timed_call(lambda: candidate.to_host(call()))
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
            timed.append((row, call, candidate.clock))
            if device == "cpu" and algo != "reference":
                row.workspace_mib = peak_workspace_bytes(call) / 2**20
    seconds = timing.best_times([call for _, call, _ in timed], [clock for _, _, clock in timed],
                                rounds=min_repeats, max_rounds=max_repeats, budget_s=budget_s, settle_s=SETTLE_S)
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
    [best] = timing.best_times([lambda: a @ b], warmup=1, rounds=repeats)
    return 2 * size ** 3 / best / 1e9
