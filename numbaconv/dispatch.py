"""The (device, algorithm) registry and the choice of algorithm.

``algo="auto"`` on the CPU, per pass, in order, with ``P = (K / groups) * (C /
groups) * prod(kernel)`` the size of each group's matrix product (its rows
times its reduction). docs/decisions.md (D1-D9) holds the measurements behind
each rule; the command after each rule reproduces them.

0. Depthwise problems (one input channel per group, ``groups > 1``): on
   hosts with 512-bit vectors (AVX-512), every pass of ``depthwise``'s
   problems (3x3, stride 1, "same" padding) on planes of at least
   ``DEPTHWISE_WIDE_MIN_PLANE_OUTPUTS`` outputs goes to ``depthwise``: its
   loops along whole rows of the planes, which LLVM vectorises to the
   host's width, beat the 256-bit pieces of ``blocked``'s rows and
   ``planar``'s copies there (on AVX2 hosts they did not). Else the
   forward and input gradient go to ``blocked`` (SIMD lanes across
   channels) where its 16-lane blocks are at least ``BLOCKED_MIN_LANE_FILL``
   full (the output channels', or for the input gradient the input
   channels'; its taps run at about a third of the dense algorithms' rate,
   so empty lanes sink it on compute-heavy problems) and the 2-d kernel is
   either ``BLOCKED_SLIDING_WIDTHS`` wide at stride and dilation 1 (its
   rows then keep the weights in registers and load each input once for
   four outputs: ConvNeXt's 7x7, EfficientNet's 5x5) or at least
   ``BLOCKED_MIN_KERNEL_SIDE`` taps high and wide (it sums a whole kernel
   row into four outputs held in registers, where ``planar`` loads and
   stores its plane of sums every nine taps: RepLKNet's 31x31). Else, at
   stride 1 on planes of at least ``PLANAR_NARROW_GROUP_MIN_OUTPUTS``
   outputs, ``planar`` (its rows along whole padded planes are long enough
   to pay for its plane copies); else ``blocked`` where its lanes are full
   enough (any kernel, stride, dilation or multiplier), else ``depthwise``
   (3x3, stride 1, "same" padding) where it runs. One-channel stems
   (``groups = 1``) go by the rules below. ``python
   bench/depthwise_kernels.py``, ``numbaconv bench --network
   mobilenet_v2,depthwise_grouped --algo planar,blocked,depthwise,direct``
   (docs/decisions.md, D2, BL1, BL2).
0a. ``fft`` for problems with more than one input channel per group where the
   FFT plan's modelled time (``cpu/fft.py``'s cost model) is at most
   ``1 / FFT_MIN_MODEL_RATE`` ns per FLOP of the direct count: large kernels
   (7x7 and up at 64 channels, 17 taps and up in 1-d, 7x7x7 in 3-d); the
   forward of a kernel over two or three axes needs
   ``FFT_MIN_MODEL_RATE_FORWARD_AXES`` (9x9 and up in 2-d): the model
   underrates those transforms, and ``channels_last`` runs these forwards
   faster up to 7x7 and 5x5x5 (docs/decisions.md, F2). Depthwise
   problems stay with rule 0: its passes over 31x31 kernels on 28x28 and 56x56
   planes are as fast as the FFT or faster, whose channels-last transforms of few channels
   cost more than its products save. ``numbaconv bench --suite large_kernels --algo
   all`` and the sweep in docs/decisions.md (F1).
0b. Grouped layers (``groups > 1``, more than one input channel a group)
   with at most ``GROUPED_MAX_CHANNELS`` channels a group (input and output)
   and kernels of more than one tap: the forward and weight gradient with
   at most ``POLYPHASE_GROUPED_MAX_CHANNELS`` input channels and at least
   ``POLYPHASE_MIN_GROUP_OUTPUTS`` output channels a group go to
   ``polyphase`` (vectors along output rows, a group's few input channels
   read straight from its phase planes), and so does the stride-1 input
   gradient where its correlation is such a forward (rule 2a); else ``planar`` at stride 1 on
   planes of at least ``PLANAR_NARROW_GROUP_MIN_OUTPUTS`` outputs (its
   passes along whole planes do a group's few channels without any copy to
   speak of), else ``channels_last`` (output channels in SIMD lanes, a tile
   of outputs in registers) where a group has at least
   ``CHANNELS_LAST_MIN_GROUP_CHANNELS`` channels (its lanes), except where a
   group's products are large enough for im2col: the weight gradient from
   ``GROUPED_GEMM_MIN_CHANNELS`` input channels a group, the input gradient
   below ``CHANNELS_LAST_MIN_OUTPUTS`` outputs a sample. Elsewhere the
   GEMM algorithms run one small product per group and Winograd transforms
   each group's planes for few channels. 1x1 grouped layers stay with
   im2col (the transposes cost ``channels_last`` more than the products).
   ``python bench/grouped.py`` (docs/decisions.md, CL1, GR1).
0c. ``polyphase`` for stems: at most ``STEM_MAX_CHANNELS`` input channels a
   group (an image's colours, audio's one channel), at least
   ``POLYPHASE_MIN_GROUP_OUTPUTS`` output channels a group (its blocks of
   output channels) and more than one tap: the weight gradient always, the
   forward where the reduction ``(C / groups) * prod(kernel)`` is below
   ``CHANNELS_LAST_STEM_MIN_REDUCTION``. im2col's products there have a few
   dozen rows (the forward) or a few dozen times a few dozen outputs (the
   weight gradient), which BLAS runs at a fraction of its speed after a
   column matrix is built; ``polyphase`` runs vectors along output rows
   from phase planes of the input, its sums in registers (ResNet's 7x7/2,
   MobileNetV2's 3x3/2, U-Net's and wav2vec 2.0's one-channel first layers,
   and the weight gradient of AlexNet's and the video networks' stems).
   Patch embeddings (stems whose windows do not overlap: ViT's 16x16/16,
   ConvNeXt's 4x4/4) go to im2col instead, every pass: its column matrix
   is then the input once over, reordered, while ``polyphase``'s rows are
   one output per patch (14 for ViT at 224), and ``channels_last``
   transposes for products im2col runs as fast. ``python bench/stems.py``
   (docs/decisions.md, PP1, PE1).
0d. ``channels_last`` for the forward of the other strided stems: at most
   ``STEM_MAX_CHANNELS`` input channels a group and a reduction of at least
   ``CHANNELS_LAST_STEM_MIN_REDUCTION``: im2col's column matrix then has
   hundreds of rows a output, gathered at the stride, where ``channels_last``
   broadcasts each input element straight from its grid (AlexNet's 11x11/4,
   the 3x7x7 and 7x7x7 stems of video networks), where ``polyphase`` loads a
   vector of inputs for every four vector FMAs. ``python bench/stems.py``
   (docs/decisions.md, CL2, PP1).
1. ``winograd`` (F(4x4, 3x3)) for 3x3 stride-1 2-d problems with at least
   ``WINOGRAD_MIN_CHANNELS`` input channels per group and ``WINOGRAD_MIN_TILES``
   4x4 output tiles: its filter transform (36 K C/g values, ~100 flops each)
   must be small next to the tiles' work, and a reduction over 3 channels is
   too short for its products. From ``WINOGRAD_MID_MIN_TILES`` tiles it
   takes groups of at least ``WINOGRAD_MID_MIN_CHANNELS`` input and output
   channels (a batch of one on 40x40 planes, 28x28 at two): its transforms
   cost per channel and tile, its products per channel pair and tile, so
   wider groups pay for them sooner (under 32 channels ``planar`` stays
   ahead there). With fewer tiles, from
   ``WINOGRAD_WIDE_MIN_TILES`` on, a pass still takes it when it reduces over
   at least ``WINOGRAD_WIDE_MIN_CHANNELS`` channels per group (the forward
   over C/g, the input gradient over K/g, the weight gradient over both):
   Winograd then goes by filter blocks (cpu/winograd.py), which pays on wide
   layers only. ``numbaconv bench --layer
   conv3x3_64,conv3x3_256,conv3x3_512,batch1_16ch --algo winograd,im2col,planar``,
   ``python bench/winograd_tiles.py`` (docs/decisions.md, D3, D3a, D4).
1a. ``depth_taps`` for 3-d problems (a kernel deeper than one slice, or a
   1xKxK kernel over several slices: R(2+1)D's and P3D's spatial
   convolutions) when one depth tap's 2-d problem (every output slice a
   sample) is a Winograd problem by rule 1: the sum over depth taps of
   Winograd's 2-d passes does a quarter of the multiplications of the 3-d
   algorithms' products. ``numbaconv bench --network r3d_18 --algo
   depth_taps,im2col``, ``python bench/video_factorised.py``
   (docs/decisions.md, DT1, DT2).
1b. ``winograd1d`` for 1-d problems whose phases' minimal filters take at most
   ``WINOGRAD1D_MAX_PRODUCT_SHARE`` of the direct count's multiplications (3 taps at
   stride 1, any dilation: F(4, 3), half) with at least ``WINOGRAD1D_MIN_CHANNELS``
   channels per group on both sides: its transforms cost per channel and tile, its
   products per channel pair. Where they take up to ``WINOGRAD1D_STRIDED_MAX_PRODUCT_SHARE``
   (3 taps at stride 2, three quarters) it needs ``WINOGRAD1D_STRIDED_MIN_CHANNELS``
   channels per group and ``WINOGRAD1D_STRIDED_MIN_TILES`` tiles of 4 outputs in all
   (samples x tiles: speech models' feature encoders on raw audio); on fewer it ties or
   loses. ``python bench/winograd1d.py`` (docs/decisions.md, W1D2).
1c. ``channels_last`` for every pass of the stride-1 layers whose product ``P`` rule 2 would
   give ``planar`` but whose 2-d (or 3-d) kernel has more taps than ``planar`` fuses in a pass
   (more than ``planar.FUSED_TAPS``: 5x5, 7x7), with at least
   ``CHANNELS_LAST_MIN_GROUP_CHANNELS`` channels a group on both sides (its lanes) and
   ``CHANNELS_LAST_MIN_OUTPUTS`` outputs a sample: ``planar`` passes over its planes once per
   nine taps and runs the rest one tap a pass, ``channels_last`` holds a tile's sums in
   registers over all of them. 1-d kernels keep rule 2 (not measured). ``python
   bench/stride_one.py`` (docs/decisions.md, CL7).
2. ``planar`` at stride 1 when ``P < PLANAR_PRODUCT_LIMIT`` and the kernel
   has more than one tap, or when ``P < DIRECT_PRODUCT_LIMIT`` (depthwise
   1x1): the GEMM algorithms' products are too small there to pay for
   building their columns, and a 1x1 kernel leaves planar nothing to fuse.
   From ``P = PLANAR_SMALL_PLANE_PRODUCT`` on, planar also needs at least
   ``PLANAR_MIN_PLANE_OUTPUTS`` outputs in a sample's plane: on small planes
   its passes over the grid are short and im2col's products are not. A
   kernel of fewer taps than planar fuses in a pass (``planar.FUSED_TAPS``:
   1-d kernels of 3 to 7 taps, 1x3, 2x2) over at least
   ``CHANNELS_LAST_MIN_GROUP_CHANNELS`` channels a group on both sides goes
   on to the rules below: planar then loads and stores its plane of sums
   for a few multiply-adds, where ``polyphase``'s and ``channels_last``'s
   blocks of channels fill. ``numbaconv bench --layer
   batch1_16ch,lenet_conv1,lenet_conv2,video3d,conv1x1_256to64 --algo
   planar,im2col``, ``python bench/stride_one.py`` (docs/decisions.md, D5, D5a).
2a. ``polyphase`` for the forward and weight gradient of the rest with at most
   ``POLYPHASE_MAX_GROUP_CHANNELS`` input channels a group and at least
   ``POLYPHASE_MIN_GROUP_OUTPUTS`` output channels a group, unless pointwise
   (a 1x1 kernel at stride 1 without padding: im2col multiplies views of the
   input, no columns): im2col's products there reduce over a few hundred
   column rows built at the stride, ``polyphase`` sums the same taps in
   registers from phase planes (1-d front ends with 32 channels, LeNet's
   second layer, U-Net's up-convolution gradients at 32 channels). From 64
   channels a group the two tie, from 128 im2col wins. The stride-1 input gradient goes to
   ``polyphase`` where its correlation (``grad_y`` with the kernel turned, the filters its
   input channels: ``common.input_correlation``) is such a forward, here and in rule 0b:
   ``polyphase`` runs it as that forward. ``numbaconv bench --layer audio1d,lenet_conv2 --algo
   im2col,polyphase``, ``python bench/grouped.py`` (docs/decisions.md, PP2, PP3).
2b. ``channels_last`` for the forward of the rest whose windows overlap (more taps than the
   stride's volume), with at least ``CHANNELS_LAST_MIN_OUTPUTS`` outputs a sample and at least
   ``CHANNELS_LAST_MIN_PRODUCTS`` multiply-adds an input element (``K/g`` times the taps over
   the stride's volume): im2col builds its column matrix, the input copied once for every tap
   over the stride's volume (25 times for a 5x5 kernel at stride 1), where ``channels_last``
   copies the input once, channels-last, and broadcasts each element from there into sums
   held in registers (ResNet's 3x3/2, the video networks' 3x3x3/2, speech encoders' 3/2 on
   short inputs; at stride 1 the kernels Winograd does not take: 5x5, 7x7, 1x7 and 7x1,
   dilated 3x3, 3x3 on too few tiles). On fewer outputs a sample im2col's products win, and
   on few products an input element ``channels_last``'s transpose costs more than it saves.
   Where windows do not overlap (2x2/2 down- and up-sampling, k2/2 in 1-d) and have more than
   one tap, ``channels_last`` takes the forward from ``CHANNELS_LAST_MIN_OUTPUTS`` outputs a
   sample while a sample's input holds at most ``CHANNELS_LAST_DISJOINT_MAX_SAMPLE`` elements:
   im2col's columns there are one copy of the input too, gathered at the stride, where
   ``channels_last`` transposes by vector blocks; on larger samples its grid goes through
   memory once more than im2col's column blocks, and it loses wherever memory is busy.
   ``numbaconv bench --network resnet50,r3d_18,wav2vec2,unet --algo channels_last,im2col
   --pass forward,input``, ``python bench/stride_one.py``, ``python bench/disjoint_windows.py``
   (docs/decisions.md, CL4, CL5, CL9).
2c. ``channels_last`` for the gradients of the rest whose windows overlap and whose groups have
   ``CHANNELS_LAST_MIN_GROUP_CHANNELS`` (its lanes) to ``CHANNELS_LAST_NARROW_FILTERS`` output
   channels; the input gradient also needs ``CHANNELS_LAST_INPUT_MIN_CHANNELS`` input channels
   a group (its lanes there) and ``CHANNELS_LAST_INPUT_MIN_OUTPUTS`` outputs in the batch.
   im2col's products there have a short side: the weight gradient ``K/g`` rows, the input
   gradient a reduction over ``K/g`` (DenseNet's 3x3 layers of 32 filters, audio front ends
   of 32), which BLAS runs at a fraction of its speed next to building or folding the column
   matrix; ``channels_last`` sums them in registers. Its input gradient needs enough outputs
   for its panels. On hosts with 512-bit vectors (AVX-512), where its weight gradient's tiles
   are wider (cpu/channels_last.py), it also takes the weight gradient of more than
   ``CHANNELS_LAST_NARROW_FILTERS`` up to ``CHANNELS_LAST_WIDE_WEIGHT_FILTERS`` output channels a
   group with at least ``CHANNELS_LAST_MIN_OUTPUTS`` outputs a sample, at any stride and rank
   (ResNet's and the video networks' first 3x3/2 of 128 filters, 5x5 and 7x7 layers of 64, 1-d
   layers of 64-128); from 256 filters, or on 7x7 planes, im2col's products win.
   ``python bench/narrow_filters.py`` (docs/decisions.md, CL6, CL8).
3. ``direct`` when ``P < DIRECT_PRODUCT_LIMIT`` (strided problems with few
   channels a group that ``blocked`` leaves: lanes mostly empty): with so few
   rows and columns the GEMM algorithms spend more on moving columns than on
   arithmetic. ``numbaconv.tune`` on a stride-2
   depthwise problem (the command is in docs/decisions.md, D7).
4. ``im2col`` otherwise, or ``direct`` where im2col's one-column blocks
   would not fit the workspace limit (direct borrows no scratch).
   ``numbaconv bench --suite full --algo all`` checks all the rules together:
   the ``*`` rows against the fastest of each pass.

``algo="auto"`` on the GPU: ``direct`` when ``(C / groups) * prod(kernel)`` is
below ``CUDA_DIRECT_REDUCTION_LIMIT`` (most of a 16-deep matrix-product tile
would multiply zeros), else ``im2col``; ``bash bench/gpu_check.sh`` times
both on a GPU (docs/decisions.md, D9).

The CUDA algorithms are imported on first use, and only when a GPU (or
Numba's CUDA simulator) is usable: importing numbaconv never imports
numba.cuda.

``algo="tune"`` times the algorithms instead of following these rules
(numbaconv/tuning.py); it never reaches :func:`choose`.
"""
import functools
import math

from .cpu import workspace
from .cpu.common import input_correlation
from .cpu.simd import SLIDING_TAPS, VECTOR_BYTES
from .cpu import blocked as cpu_blocked, channels_last as cpu_channels_last, depth_taps as cpu_depth_taps, depthwise as cpu_depthwise, direct as cpu_direct, fft as cpu_fft, im2col as cpu_im2col, planar as cpu_planar, polyphase as cpu_polyphase, winograd as cpu_winograd, winograd1d as cpu_winograd1d
from .devices import cuda_usable

REGISTRY = {
    "cpu": {"blocked": cpu_blocked, "channels_last": cpu_channels_last, "depth_taps": cpu_depth_taps, "depthwise": cpu_depthwise, "direct": cpu_direct, "fft": cpu_fft, "im2col": cpu_im2col, "planar": cpu_planar, "polyphase": cpu_polyphase, "winograd": cpu_winograd, "winograd1d": cpu_winograd1d},
}
DIRECT_PRODUCT_LIMIT = 32
CHANNELS_LAST_MIN_GROUP_CHANNELS = 8
GROUPED_MAX_CHANNELS = 64
STEM_MAX_CHANNELS = 4
POLYPHASE_MIN_GROUP_OUTPUTS = 8
POLYPHASE_MAX_GROUP_CHANNELS = 32
POLYPHASE_GROUPED_MAX_CHANNELS = 8
GROUPED_GEMM_MIN_CHANNELS = 32
CHANNELS_LAST_STEM_MIN_REDUCTION = 256
CHANNELS_LAST_MIN_OUTPUTS = 192
CHANNELS_LAST_MIN_PRODUCTS = 256
CHANNELS_LAST_DISJOINT_MAX_SAMPLE = 2**19   # input elements a sample: 2 MiB in float32
CHANNELS_LAST_NARROW_FILTERS = 32
CHANNELS_LAST_WIDE_WEIGHT_FILTERS = 128
CHANNELS_LAST_INPUT_MIN_CHANNELS = 32
CHANNELS_LAST_INPUT_MIN_OUTPUTS = 512
BLOCKED_MIN_LANE_FILL = 0.75
DEPTHWISE_WIDE_MIN_PLANE_OUTPUTS = 196
BLOCKED_MIN_KERNEL_SIDE = 19
BLOCKED_SLIDING_WIDTHS = SLIDING_TAPS   # the kernel widths blocked's stride-1 rows slide over
PLANAR_NARROW_GROUP_MIN_OUTPUTS = 784
PLANAR_PRODUCT_LIMIT = 32768
PLANAR_SMALL_PLANE_PRODUCT = 4096
PLANAR_MIN_PLANE_OUTPUTS = 128
WINOGRAD_MIN_CHANNELS = 8
WINOGRAD_MIN_TILES = 128
WINOGRAD_MID_MIN_TILES = 96
WINOGRAD_MID_MIN_CHANNELS = 32
WINOGRAD_WIDE_MIN_TILES = 16
WINOGRAD_WIDE_MIN_CHANNELS = 256
WINOGRAD1D_MAX_PRODUCT_SHARE = 0.5
WINOGRAD1D_MIN_CHANNELS = 128
WINOGRAD1D_STRIDED_MAX_PRODUCT_SHARE = 0.75
WINOGRAD1D_STRIDED_MIN_CHANNELS = 512
WINOGRAD1D_STRIDED_MIN_TILES = 600
CUDA_DIRECT_REDUCTION_LIMIT = 16
FFT_MIN_MODEL_RATE = 300
FFT_MIN_MODEL_RATE_FORWARD_AXES = 400


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


def nonfinite_check(module, pass_name: str):
    """What the engine checks so that ``module``'s pass leaves NaN and Inf where
    numbaconv.reference does (``"result"`` or an operand's name, from its ``INEXACT_NONFINITE``;
    numbaconv.functional explains the checks), or None: the pass always places them so."""
    return getattr(module, "INEXACT_NONFINITE", {}).get(pass_name)


def places_nonfinite_as_reference(module, pass_name: str) -> bool:
    """Whether ``module``'s pass puts NaN and Inf where numbaconv.reference does, always."""
    return nonfinite_check(module, pass_name) is None


def choose_as_reference(device: str, spec, pass_name: str):
    """The algorithm "auto" picks for one pass of ``spec`` (3-d) among those that place NaN and
    Inf as the reference does (``direct`` where nothing else can run the problem)."""
    return _choose_as_reference(device, spec, pass_name, workspace.workspace_limit())


@functools.lru_cache(maxsize=4096)
def _choose_as_reference(device, spec, pass_name, workspace_limit):
    candidates = registry(device)
    runnable = tuple(name for name in _runnable(device, spec, workspace_limit)
                     if places_nonfinite_as_reference(candidates[name], pass_name))
    return candidates[_auto_cpu(spec, runnable, pass_name)]


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
    if spec.group_in_channels == 1 and spec.groups > 1:
        choice = _depthwise_choice(spec, runnable, pass_name)
        if choice is not None:
            return choice
    if "fft" in runnable and spec.group_in_channels > 1 and _fft_pays(spec, pass_name):
        return "fft"
    choice = _grouped_choice(spec, runnable, pass_name, product, taps)
    if choice is not None:
        return choice
    if "im2col" in runnable and _patch_embedding(spec):
        return "im2col"
    if "polyphase" in runnable and _polyphase_stem(spec, pass_name):
        return "polyphase"
    if "channels_last" in runnable and _strided_stem(spec, pass_name):
        return "channels_last"
    if "depth_taps" in runnable and _winograd_pays_per_tap(spec, pass_name):
        return "depth_taps"
    if "winograd1d" in runnable and _winograd1d_pays(spec):
        return "winograd1d"
    if "winograd" in runnable and _winograd_pays(spec, pass_name):
        return "winograd"
    if "channels_last" in runnable and _wide_kernel_small_product(spec, product, taps):
        return "channels_last"
    if "planar" in runnable and _planar_pays(spec, product, taps):
        return "planar"
    if "polyphase" in runnable and _polyphase_narrow(spec, pass_name, product):
        return "polyphase"
    if "channels_last" in runnable and product >= DIRECT_PRODUCT_LIMIT and (
            _channels_last_forward(spec, pass_name, taps) or _narrow_gradient(spec, pass_name)):
        return "channels_last"
    if "im2col" in runnable and (product >= DIRECT_PRODUCT_LIMIT or "direct" not in runnable):
        return "im2col"
    return "direct"


def _depthwise_choice(spec, runnable, pass_name):
    """Rule 0 of the module docstring, or None where no depthwise algorithm takes the problem."""
    if ("depthwise" in runnable and VECTOR_BYTES == 64
            and math.prod(spec.out_size) >= DEPTHWISE_WIDE_MIN_PLANE_OUTPUTS):
        return "depthwise"
    lanes_full = cpu_blocked.lane_fill(spec.in_channels if pass_name == "input" else spec.out_channels)
    blocked_fits = "blocked" in runnable and lanes_full >= BLOCKED_MIN_LANE_FILL
    flat, unit_steps = spec.kernel_size[0] == 1, spec.stride == (1, 1, 1) and spec.dilation == (1, 1, 1)
    long_rows = flat and min(spec.kernel_size[1:]) >= BLOCKED_MIN_KERNEL_SIDE
    sliding = flat and unit_steps and spec.kernel_size[2] in BLOCKED_SLIDING_WIDTHS
    if blocked_fits and (long_rows or sliding) and pass_name != "weight":
        return "blocked"
    if "planar" in runnable and math.prod(spec.out_size) >= PLANAR_NARROW_GROUP_MIN_OUTPUTS:
        return "planar"
    if blocked_fits:
        return "blocked"
    return "depthwise" if "depthwise" in runnable else None


def _fft_pays(spec, pass_name):
    """Rule 0a of the module docstring: the FFT's modelled time is short next to the direct FLOPs."""
    axes = sum(1 for taps in spec.kernel_size if taps > 1)
    rate = FFT_MIN_MODEL_RATE_FORWARD_AXES if pass_name == "forward" and axes > 1 else FFT_MIN_MODEL_RATE
    return spec.flops >= rate * cpu_fft.modelled_ns(spec, pass_name)


def _grouped_choice(spec, runnable, pass_name, product, taps):
    """Rule 0b of the module docstring: a grouped layer of a few channels a group; None where it
    does not apply."""
    narrowest = min(spec.group_in_channels, spec.group_out_channels)
    grouped = (spec.groups > 1 and spec.group_in_channels > 1 and taps > 1
               and max(spec.group_in_channels, spec.group_out_channels) <= GROUPED_MAX_CHANNELS)
    if not grouped:
        return None
    if "polyphase" in runnable and _polyphase_narrow(spec, pass_name, product, POLYPHASE_GROUPED_MAX_CHANNELS):
        return "polyphase"
    if "planar" in runnable and math.prod(spec.out_size) >= PLANAR_NARROW_GROUP_MIN_OUTPUTS:
        return "planar"
    gemm_shaped = (pass_name == "weight" and spec.group_in_channels >= GROUPED_GEMM_MIN_CHANNELS
                   or pass_name == "input" and math.prod(spec.out_size) < CHANNELS_LAST_MIN_OUTPUTS)
    if gemm_shaped and "im2col" in runnable:
        return "im2col"
    if "channels_last" in runnable and narrowest >= CHANNELS_LAST_MIN_GROUP_CHANNELS:
        return "channels_last"
    return None


def _stem(spec):
    """Whether ``spec`` is a stem of rules 0c and 0d: few input channels a group, more than one tap."""
    return spec.group_in_channels <= STEM_MAX_CHANNELS and math.prod(spec.kernel_size) > 1


def _patch_embedding(spec):
    """Rule 0c's exception: a stem whose windows do not overlap."""
    return _stem(spec) and not _windows_overlap(spec)


def _polyphase_stem(spec, pass_name):
    """Rule 0c of the module docstring: the weight gradient of a stem, and its forward over a
    short reduction."""
    reduction = spec.group_in_channels * math.prod(spec.kernel_size)
    stem = _stem(spec) and spec.group_out_channels >= POLYPHASE_MIN_GROUP_OUTPUTS
    return stem and (pass_name == "weight" or pass_name == "forward" and reduction < CHANNELS_LAST_STEM_MIN_REDUCTION)


def _channels_last_forward(spec, pass_name, taps):
    """Rule 2b of the module docstring: the forward of a layer with many outputs a sample, of
    overlapping windows with many products an input element, or of disjoint windows of more than
    one tap over a sample whose channels-last copy stays in cache."""
    if pass_name != "forward" or math.prod(spec.out_size) < CHANNELS_LAST_MIN_OUTPUTS:
        return False
    if _windows_overlap(spec):
        return spec.group_out_channels * taps >= CHANNELS_LAST_MIN_PRODUCTS * math.prod(spec.stride)
    return taps > 1 and spec.in_channels * math.prod(spec.in_size) <= CHANNELS_LAST_DISJOINT_MAX_SAMPLE


def _narrow_gradient(spec, pass_name):
    """Rule 2c of the module docstring: a gradient of a layer of overlapping windows with few output
    channels a group."""
    if pass_name == "forward" or not _windows_overlap(spec):
        return False
    if (pass_name == "weight" and VECTOR_BYTES == 64
            and CHANNELS_LAST_NARROW_FILTERS < spec.group_out_channels <= CHANNELS_LAST_WIDE_WEIGHT_FILTERS
            and math.prod(spec.out_size) >= CHANNELS_LAST_MIN_OUTPUTS):
        return True
    if not CHANNELS_LAST_MIN_GROUP_CHANNELS <= spec.group_out_channels <= CHANNELS_LAST_NARROW_FILTERS:
        return False
    return pass_name == "weight" or (spec.group_in_channels >= CHANNELS_LAST_INPUT_MIN_CHANNELS
                                     and spec.batch * math.prod(spec.out_size) >= CHANNELS_LAST_INPUT_MIN_OUTPUTS)


def _windows_overlap(spec):
    """Whether neighbouring windows share inputs: more taps than the stride's volume. Where they do
    not (patch embeddings, 2x2/2 downsampling), im2col's column matrix holds each input once."""
    return math.prod(spec.kernel_size) > math.prod(spec.stride)


def _polyphase_narrow(spec, pass_name, product, max_channels=POLYPHASE_MAX_GROUP_CHANNELS):
    """Rule 2a of the module docstring (and 0b's first part, with ``max_channels`` of its own): the
    forward or weight gradient of a layer of at most ``max_channels`` input channels a group that
    im2col would run with columns; the stride-1 input gradient where its correlation's forward is
    one (polyphase runs it as that forward)."""
    if pass_name == "input":
        correlation = input_correlation(spec)
        return correlation is not None and _polyphase_narrow(correlation, "forward", product, max_channels)
    return (not cpu_im2col.pointwise(spec) and product >= DIRECT_PRODUCT_LIMIT
            and spec.group_in_channels <= max_channels
            and spec.group_out_channels >= POLYPHASE_MIN_GROUP_OUTPUTS)


def _strided_stem(spec, pass_name):
    """Rule 0d of the module docstring: the forward of a strided layer over few input channels a
    group with a long reduction."""
    reduction = spec.group_in_channels * math.prod(spec.kernel_size)
    return (pass_name == "forward" and max(spec.stride) > 1 and _stem(spec)
            and reduction >= CHANNELS_LAST_STEM_MIN_REDUCTION)


def _wide_kernel_small_product(spec, product, taps):
    """Rule 1c of the module docstring: planar's products with more taps than it fuses a pass."""
    return (taps > cpu_planar.FUSED_TAPS and spec.kernel_size[1] > 1 and spec.stride == (1, 1, 1)
            and product < PLANAR_PRODUCT_LIMIT
            and min(spec.group_in_channels, spec.group_out_channels) >= CHANNELS_LAST_MIN_GROUP_CHANNELS
            and math.prod(spec.out_size) >= CHANNELS_LAST_MIN_OUTPUTS)


def _planar_pays(spec, product, taps):
    """Rule 2 of the module docstring: a product too small for the GEMM algorithms, on planes large
    enough for planar's passes once the product is not tiny, and a kernel of enough taps for its
    fused passes unless few channels leave the other algorithms' blocks empty."""
    if product < DIRECT_PRODUCT_LIMIT:
        return True
    if taps == 1 or product >= PLANAR_PRODUCT_LIMIT:
        return False
    narrowest = min(spec.group_in_channels, spec.group_out_channels)
    if taps < cpu_planar.FUSED_TAPS and narrowest >= CHANNELS_LAST_MIN_GROUP_CHANNELS:
        return False
    return product < PLANAR_SMALL_PLANE_PRODUCT or math.prod(spec.out_size) >= PLANAR_MIN_PLANE_OUTPUTS


def _winograd_pays(spec, pass_name):
    """Rule 1 of the module docstring: enough channels and tiles (fewer tiles for wider groups; the
    widest layers go by filter blocks)."""
    tiles = cpu_winograd.tile_count(spec)
    if spec.group_in_channels < WINOGRAD_MIN_CHANNELS:
        return False
    if tiles >= WINOGRAD_MIN_TILES:
        return True
    narrowest = min(spec.group_in_channels, spec.group_out_channels)
    if tiles >= WINOGRAD_MID_MIN_TILES and narrowest >= WINOGRAD_MID_MIN_CHANNELS:
        return True
    reduced = {"forward": spec.group_in_channels, "input": spec.group_out_channels,
               "weight": min(spec.group_in_channels, spec.group_out_channels)}[pass_name]
    return tiles >= WINOGRAD_WIDE_MIN_TILES and reduced >= WINOGRAD_WIDE_MIN_CHANNELS


def _winograd1d_pays(spec):
    """Rule 1b of the module docstring: few products next to the direct count and wide groups, or
    three quarters of them, wider groups and many tiles."""
    share, narrowest = cpu_winograd1d.product_share(spec), min(spec.group_in_channels, spec.group_out_channels)
    if share <= WINOGRAD1D_MAX_PRODUCT_SHARE:
        return narrowest >= WINOGRAD1D_MIN_CHANNELS
    return (share <= WINOGRAD1D_STRIDED_MAX_PRODUCT_SHARE and narrowest >= WINOGRAD1D_STRIDED_MIN_CHANNELS
            and cpu_winograd1d.tile_count(spec) >= WINOGRAD1D_STRIDED_MIN_TILES)


def plane_algorithm(plane, pass_name: str):
    """The module that runs one depth tap's 2-d pass for ``depth_taps``: the automatic choice, or
    where that would place NaN or Inf otherwise than the reference through an operand, the choice
    among those that do not (Winograd's results are checked by the engine)."""
    module = choose("cpu", "auto", plane, pass_name)
    if nonfinite_check(module, pass_name) not in (None, "result"):
        module = choose_as_reference("cpu", plane, pass_name)
    return module


cpu_depth_taps.choose_plane_algorithm = plane_algorithm


def _winograd_pays_per_tap(spec, pass_name):
    """Rule 1a of the module docstring: a depth tap's 2-d problem is one Winograd runs and pays on."""
    plane = cpu_depth_taps.plane_spec(spec)
    return cpu_winograd.supports(plane) is None and _winograd_pays(plane, pass_name)


def _auto_cuda(spec):
    """The CUDA algorithm "auto" picks (rule in the module docstring)."""
    if spec.group_in_channels * math.prod(spec.kernel_size) < CUDA_DIRECT_REDUCTION_LIMIT:
        return "direct"
    return "im2col"
