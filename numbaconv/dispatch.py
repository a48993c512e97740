"""The (device, algorithm) registry and the choice of algorithm.

``algo="auto"`` on the CPU, in order, with ``P = (K / groups) * (C / groups)
* prod(kernel)`` the size of each group's matrix product (its rows times its
reduction). Rules 1-3 were measured on the project's earlier 2-core Intel
Xeon, partly against ``shifted`` (removed since: see 4); rule 4 on the 2-core
AMD EPYC that replaced it, rule 0 on the AVX-512 EPYC after that.

0. ``depthwise`` for the problems it runs (3x3 depthwise, stride 1, "same"
   padding): planar's taps without its plane copies (float32, 2 cores, ms,
   interleaved, depthwise vs planar: 256ch 28x28 N=8 forward 0.33 vs 0.55,
   weight 0.67 vs 0.69; 512ch 14x14 N=8 forward 0.26 vs 0.77, weight 0.35
   vs 0.68; more in cpu/depthwise.py).
1. ``winograd`` (F(4x4, 3x3)) for 3x3 stride-1 2-d problems with at least
   ``WINOGRAD_MIN_CHANNELS`` input channels per group and ``WINOGRAD_MIN_TILES``
   4x4 output tiles: its filter transform (36 K C/g values, ~100 flops each)
   must be small next to the tiles' work, and a reduction over 3 channels is
   too short for its products. Measured after the transforms were vectorised
   (float32, CPU time of one thread, ms, forward / input / weight, winograd
   vs shifted): 64ch 56x56 N=8 (1568 tiles) 9.8 / 9.7 / 11.7 vs 25 / 29 / 31;
   32->64 26x26 N=64 (3136) 11.5 / 13.7 / 13.1 vs 22 / 24 / 25; 8ch 56x56
   N=8 1.1 / 1.0 / 1.7 vs 1.6 / 2.3 / 2.6; 256ch 14x14 N=8 (128 tiles) 12.6 /
   13.0 / 18.3 vs 18.6 / 19.7 / 20.6; 128ch 14x14 N=8 (128) 3.7 / 3.9 / 4.1
   vs 5.8 / 7.0 / 7.1; but 512ch 7x7 N=8 (32) 32 / 38 / 56 vs 24 / 26 / 28,
   256ch 14x14 N=2 (32) 7.7 / 8.4 / 8.9 vs 4.9 / 5.5 / 6.1, batch-1 16ch
   32x32 (64) 0.25 vs 0.22 and 3->64 56x56 3.3 / 4.0 / 4.1 vs 3.1 / 3.6 / 3.7.
   Since Winograd goes by filter blocks where tiles are few (cpu/winograd.py),
   the forward and input passes also take it from ``WINOGRAD_WIDE_MIN_TILES``
   tiles when they reduce over at least ``WINOGRAD_WIDE_MIN_CHANNELS`` channels
   per group; ``auto`` picks per pass. Measured on the AMD EPYC (float32, 2
   cores, ms, forward / input + weight, winograd vs im2col, best of 8): 512ch
   7x7 N=8 (32 tiles) 11.1 / 37.5 vs 15.4 / 31.4; 256ch 14x14 N=2 (32) 3.3 /
   11.0 vs 4.2 / 8.6, N=4 (64) 5.2 / 13.0 vs 13.0 / 14.2; 128ch 28x28 N=1 (49)
   1.8 / 4.6 vs 1.9 / 6.0 (a toss-up, left to im2col); but 128ch 14x14 N=2
   (32) 2.0 vs 1.35, 64ch 14x14 N=2 (32) 0.81 vs 0.57, 512ch 7x7 N=1 (4) 4.9
   vs 4.0 and 256 -> 512 7x7 N=4 (16) 5.5 vs 4.5. The weight gradient takes
   it from the same tile count where both channel counts reach
   ``WINOGRAD_WIDE_MIN_CHANNELS``, since it too goes by filter blocks (512ch
   7x7 N=8, ``numbaconv bench``, ms, winograd vs im2col: 20.5 vs 24.6;
   alone, best of 6: 17.4 vs 17.5-19.5; before, with per-block sums added
   into one total: 25.7 vs 19.4).
2. ``planar`` at stride 1 when ``P < PLANAR_PRODUCT_LIMIT`` and the kernel has more
   than one tap, or ``P < DIRECT_PRODUCT_LIMIT`` (depthwise 1x1): where
   the GEMM algorithms' products are too small to pay for building their
   columns. Measured (float32, 2 cores, ms, forward / input / weight, planar
   vs the best of shifted, winograd and im2col, each pair in one run of
   ``numbaconv bench``): depthwise 256ch 28x28 N=8 0.88 / 1.00 / 1.05 vs
   19 / 39 / 18 (direct 8.1 / 8.3 / 8.8); batch-1 16ch 32x32 (P = 2304)
   0.065 / 0.073 / 0.073 vs 0.24 / 0.29 / 0.30; 1 -> 32 3x3 28x28 N=64
   (P = 288, bench/train_step.py) 0.57 / - / 0.34 vs 1.6 / - / 2.2;
   LeNet's 1 -> 20 5x5 (P = 500) 1.0 / 1.3 / 0.89 vs 2.2 / 3.2 / 4.2 and
   20 -> 20 5x5 (P = 10000) 2.7 / 4.1 / 2.4 vs 6.1 / 6.8 / 8.7; video
   16 -> 32 3x3x3 (P = 13824) 3.0 / 3.1 / 2.8 vs 8.0 / 6.7 / 9.9;
   32 -> 64 3x3 26x26 N=64 (P = 18432) 12.3 / 17.1 / 19.4 vs 17.8 / 21.0 /
   17.5 (before winograd's transforms were vectorised; winograd takes it now); 48ch 28x28 N=8 (P = 20736) 2.2 / 2.2 / 2.1 vs 2.7 / 2.5 / 2.7;
   96 -> 32 7x7 N=8 (P = 27648) 0.62 / 0.58 / 0.60 vs 0.72 / 0.61 / 0.67;
   but 64ch 14x14 N=8 (P = 36864) 1.42 / 1.35 / 1.46 vs 1.38 / 1.31 / 1.34
   and 256ch 14x14 (P = 589824) 21 / 23 / 25 vs 14 / 13 / 15; a 1x1
   kernel (one tap a pass) lost 256 -> 64 at 56x56 (P = 16384) 23 vs 14.
   The weight gradient's limit was lower (4096) until planar's dot products
   went one output channel a pass (AMD EPYC, ``numbaconv bench``, ms, planar
   vs im2col, weight gradient): video 16 -> 32 3x3x3 (P = 13824) 4.0-4.4 vs
   5.9-6.4, LeNet's 20 -> 20 5x5 (P = 10000) 2.6-3.8 vs 3.1-4.0 (a toss-up
   through the noise), 64ch 56x56 (P = 36864) 21 vs 27 (winograd takes it).
   From ``P = PLANAR_SMALL_PLANE_PRODUCT`` on, planar also needs at least
   ``PLANAR_MIN_PLANE_OUTPUTS`` outputs a sample's plane: on small planes its
   passes over the grid are short and im2col's products are not. Measured on
   the AMD EPYC with AVX-512 that replaced the first one (float32, 2 cores, ms,
   forward / input / weight, planar vs im2col, interleaved, best of 12, NumPy's
   OpenBLAS in im2col): LeNet's 20 -> 20 5x5 at 14x14 N=64 (P = 10000, 100
   outputs) 2.00 / 2.81 / 2.49 vs 1.46 / 1.84 / 1.94, at 10x10 (36) 1.21 /
   1.96 / 1.59 vs 0.64 / 0.76 / 0.82; 32ch 3x3 at 10x10 N=16 (P = 9216, 100)
   0.46 / 0.48 / 0.67 vs 0.35 / 0.35 / 0.39, at 8x8 N=64 (64) 1.54 / 1.56 /
   2.11 vs 0.89 / 0.98 / 1.17; but 16ch at 10x10 N=64 (P = 2304, 100) 0.48 /
   0.48 / 0.69 vs 0.46 / 0.56 / 0.59, 8ch (P = 576) 0.15 / 0.16 / 0.23 vs
   0.23 / 0.31 / 0.34, 1 -> 20 5x5 at 12x12 (P = 500, 64) 0.15 / 0.26 / 0.12
   vs 0.16 / 0.34 / 0.34; and from 144 outputs a toss-up: 16ch 5x5 at 12x12
   N=32 (P = 6400, 144) 0.81 / 0.81 / 1.04 vs 0.76 / 1.01 / 1.08, 32ch 3x3 at
   14x14 N=8 (P = 9216, 196) 0.34 / 0.35 / 0.46 vs 0.32 / 0.34 / 0.38, at
   28x28 (784) 0.84 / 0.85 / 1.22 vs 0.95 / 0.93 / 1.17.
3. ``direct`` when ``P < DIRECT_PRODUCT_LIMIT`` (strided depthwise
   convolutions): with so few rows and columns the GEMM algorithms spend more
   on moving columns than on arithmetic. Measured (float32, 2 cores, ms,
   direct / im2col / shifted): depthwise 256ch 28x28 N=8 14 / 32 / 21 (at
   stride 1, which planar now takes).
4. ``im2col`` otherwise, or ``direct`` where im2col's one-column blocks
   would not fit the workspace limit. (A fourth algorithm, ``shifted``, im2col on the
   padded grid with each column row one contiguous copy, took the stride-1
   problems here until im2col gathered its columns through a table of
   offsets and balanced its blocks over the threads; it then lost every
   layer it held. Measured on the 2-core AMD EPYC, float32, ms, forward /
   input / weight, im2col vs shifted, in one run of ``numbaconv bench``:
   512ch 7x7 N=8 18.0 / 17.4 / 28.6 vs 24.0 / 27.0 / 34.6; 1x1 256 -> 64
   56x56 6.1 / 6.8 / 6.9 vs 14.4 / 11.7 / 13.4 and 128 -> 512 28x28 6.3 /
   5.7 / 7.6 vs 13.0 / 11.2 / 15.4; 3x3 256ch 14x14 15.9 / 18.1 / 18.5 vs
   18.5 / 20.5 / 22.0; 5x5 64ch 28x28 12.3 / 16.0 / 15.1 vs 16.1 / 17.6 /
   15.7; 1-d 64ch k9 N=8 7.9 / 9.1 / 7.7 vs 10.6 / 11.0 / 10.9; only 64ch
   14x14 N=2 0.78 / 0.77 / 0.80 vs 0.64 / 0.66 / 0.92 went the other way.)

``algo="auto"`` on the GPU: ``direct`` when ``(C / groups) * prod(kernel)`` is
below ``CUDA_DIRECT_REDUCTION_LIMIT`` (most of a 16-deep matrix-product tile
would multiply zeros), else ``im2col``.

The CUDA algorithms are imported on first use, and only when a GPU (or
Numba's CUDA simulator) is usable: importing numbaconv never imports
numba.cuda.

``algo="tune"`` times the algorithms instead of following these rules
(numbaconv/tuning.py); it never reaches :func:`choose`.
"""
import functools
import math

from .cpu import workspace
from .cpu import depthwise as cpu_depthwise, direct as cpu_direct, im2col as cpu_im2col, planar as cpu_planar, winograd as cpu_winograd
from .devices import cuda_usable

REGISTRY = {
    "cpu": {"depthwise": cpu_depthwise, "direct": cpu_direct, "im2col": cpu_im2col, "planar": cpu_planar, "winograd": cpu_winograd},
}
DIRECT_PRODUCT_LIMIT = 32
PLANAR_PRODUCT_LIMIT = 32768
PLANAR_SMALL_PLANE_PRODUCT = 4096
PLANAR_MIN_PLANE_OUTPUTS = 128
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_TILES = 128
WINOGRAD_WIDE_MIN_TILES = 32
WINOGRAD_WIDE_MIN_CHANNELS = 256
CUDA_DIRECT_REDUCTION_LIMIT = 16


def registry(device: str) -> dict:
    """The algorithm modules of ``device`` by name; the CUDA ones registered on first use."""
    if device == "cuda" and "cuda" not in REGISTRY and cuda_usable():
        from .cuda import direct as cuda_direct, im2col as cuda_im2col
        REGISTRY["cuda"] = {"direct": cuda_direct, "im2col": cuda_im2col}
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; devices with algorithms: ('cpu', 'cuda')")
    return REGISTRY.get(device, {})


def algorithms(device: str = "cpu") -> tuple[str, ...]:
    """Names of the algorithms available on ``device``; () for "cuda" without a usable GPU."""
    return tuple(registry(device))


def choose(device: str, algo: str, spec, pass_name: str = "forward"):
    """The algorithm module that runs one pass ("forward", "input" or "weight") of ``spec`` (a 3-d
    ConvSpec, ``ConvSpec.as_3d``) on ``device``.

    Remembered per (device, algo, spec, pass) and workspace limit (which decides what the
    algorithms support): a training loop asks the same question every step."""
    return _choose(device, algo, spec, pass_name, workspace.workspace_limit())


@functools.lru_cache(maxsize=4096)
def _choose(device, algo, spec, pass_name, workspace_limit):
    candidates = registry(device)
    runnable = _runnable(device, spec, workspace_limit)
    if algo == "auto":
        return candidates[_auto_cuda(spec) if device == "cuda" else _auto_cpu(spec, runnable, pass_name)]
    if algo not in candidates:
        raise ValueError(f"unknown algo {algo!r} for device {device!r}; "
                         f"choose 'auto', 'tune' or one of {tuple(candidates)}")
    if algo not in runnable:
        raise ValueError(f"algo {algo!r} cannot run this problem ({candidates[algo].supports(spec)}); "
                         f"algorithms that can: {runnable}")
    return candidates[algo]


def runnable(device: str, spec) -> tuple[str, ...]:
    """Names of the algorithms on ``device`` whose ``supports`` accepts ``spec`` (3-d) under the
    current workspace limit. Remembered per limit: ``algo="tune"`` asks on every call."""
    return _runnable(device, spec, workspace.workspace_limit())


@functools.lru_cache(maxsize=4096)
def _runnable(device, spec, workspace_limit):
    return tuple(name for name, module in registry(device).items() if module.supports(spec) is None)


def _auto_cpu(spec, runnable, pass_name):
    """The CPU algorithm "auto" picks for one pass (rule in the module docstring)."""
    taps = math.prod(spec.kernel_size)
    product = spec.group_out_channels * spec.group_in_channels * taps
    if "depthwise" in runnable:
        return "depthwise"
    if "winograd" in runnable and _winograd_pays(spec, pass_name):
        return "winograd"
    if "planar" in runnable and _planar_pays(spec, product, taps):
        return "planar"
    if product < DIRECT_PRODUCT_LIMIT or "im2col" not in runnable:
        return "direct"
    return "im2col"


def _planar_pays(spec, product, taps):
    """Rule 2 of the module docstring: a product too small for the GEMM algorithms, on planes large
    enough for planar's passes once the product is not tiny."""
    if product < DIRECT_PRODUCT_LIMIT:
        return True
    if taps == 1 or product >= PLANAR_PRODUCT_LIMIT:
        return False
    return product < PLANAR_SMALL_PLANE_PRODUCT or math.prod(spec.out_size) >= PLANAR_MIN_PLANE_OUTPUTS


def _winograd_pays(spec, pass_name):
    """Rule 1 of the module docstring: enough channels and tiles (or the wide layers with few
    tiles that go by filter blocks)."""
    tiles = cpu_winograd.tile_count(spec)
    if spec.group_in_channels < WINOGRAD_MIN_CHANNELS:
        return False
    if tiles >= WINOGRAD_MIN_TILES:
        return True
    reduced = {"forward": spec.group_in_channels, "input": spec.group_out_channels,
               "weight": min(spec.group_in_channels, spec.group_out_channels)}[pass_name]
    return tiles >= WINOGRAD_WIDE_MIN_TILES and reduced >= WINOGRAD_WIDE_MIN_CHANNELS


def _auto_cuda(spec):
    """The CUDA algorithm "auto" picks (rule in the module docstring)."""
    if spec.group_in_channels * math.prod(spec.kernel_size) < CUDA_DIRECT_REDUCTION_LIMIT:
        return "direct"
    return "im2col"
