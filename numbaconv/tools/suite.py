"""The benchmark layer suite: named convolution problems and their random operands.

``numbaconv bench``, the pytest-benchmark suite in bench/ and bench/gpu_check.py run these
layers; numbaconv/tools/networks.py builds whole networks' layers from the same ``Layer``. FLOPs
are ``2 N K (C / groups) prod(out) prod(kernel)`` for every pass (the input and weight gradients
do the same multiply-adds as the forward).

A transposed layer (``transposed=True``: U-Net's up-convolutions) is described as the user sees
it: ``in_channels`` and ``size`` are its input's, its weight is ``(in, out / groups, *kernel)``
as in ``torch.nn.ConvTranspose2d``. Its three passes are the three passes of ``spec``, the
convolution from the layer's output shape to its input's, in another order
(:meth:`Layer.kernel_pass`): its forward is that convolution's input gradient, its input
gradient that convolution's forward, its weight gradient that convolution's weight gradient
(with the roles of input and output gradient swapped). No output_padding: the output size is
``(size - 1) stride - 2 padding + dilation (kernel - 1) + 1``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import ConvSpec

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Layer:
    """One convolution problem of the suite (numeric padding, the same at both ends of a dim)."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    dilation: int = 1
    groups: int = 1
    transposed: bool = False

    @property
    def rank(self) -> int:
        return len(self.size)

    @property
    def x_shape(self) -> tuple[int, ...]:
        """The layer's input."""
        return (self.batch, self.in_channels, *self.size)

    @property
    def w_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    @property
    def y_shape(self) -> tuple[int, ...]:
        """The layer's output."""
        return self.spec.x_shape if self.transposed else self.spec.y_shape

    @property
    def spec(self) -> ConvSpec:
        """The convolution whose passes compute the layer's: the layer itself, or for a transposed
        layer the convolution from its output's shape to its input's."""
        if not self.transposed:
            return ConvSpec.create(self.x_shape, self.w_shape, self.stride, self.padding, self.dilation, self.groups)
        per_dim = [(v,) * self.rank if isinstance(v, int) else tuple(v)
                   for v in (self.stride, self.padding, self.dilation)]
        out = tuple((n - 1) * s - 2 * p + d * (k - 1) + 1
                    for n, k, s, p, d in zip(self.size, self.kernel, *per_dim))
        return ConvSpec.create((self.batch, self.out_channels, *out), self.w_shape, self.stride, self.padding,
                               self.dilation, self.groups)

    def kernel_pass(self, pass_name: str) -> str:
        """The pass of ``spec`` that computes the layer's pass ``pass_name``."""
        return {"forward": "input", "input": "forward"}.get(pass_name, pass_name) if self.transposed else pass_name

    @property
    def arguments(self) -> dict:
        """The keyword arguments numbaconv and PyTorch share for this layer."""
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def describe(self) -> str:
        extras = "".join(f" {key} {value}" for key, value in self.arguments.items()
                         if value != (0 if key == "padding" else 1))
        kind = "transposed, " if self.transposed else ""
        return (f"x {self.x_shape} w {self.w_shape}{extras} -> y {self.y_shape}, "
                f"{kind}{self.spec.flops / 1e9:.3f} GFLOP")


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
    # large kernels (the FFT's layers): a learned filter bank, wav2vec 2.0's positional convolution,
    # RepLKNet's 31x31 depthwise stages, a 15x15 restoration layer, a 9x9x9 volume layer
    Layer("filterbank1d", 8, 1, 64, (16000,), (255,), padding=127),
    Layer("wav2vec_pos49", 4, 768, 768, (49,), (128,), padding=64, groups=16),
    Layer("wav2vec_pos500", 4, 768, 768, (500,), (128,), padding=64, groups=16),
    _square("replk31_56", 2, 128, 128, 56, 31, padding=15, groups=128),
    _square("replk31_28", 2, 256, 256, 28, 31, padding=15, groups=256),
    _square("conv15x15_64", 2, 64, 64, 128, 15, padding=7),
    Layer("volume9", 1, 16, 16, (64, 64, 64), (9, 9, 9), padding=4),
]}
SUITES = {
    "quick": ("conv3x3_128", "conv3x3s2_128", "conv1x1_128to512", "depthwise3x3_256",
              "lenet_conv1", "lenet_conv2", "batch1_16ch", "audio1d", "video3d"),
    "large_kernels": ("filterbank1d", "wav2vec_pos49", "wav2vec_pos500", "replk31_56", "replk31_28",
                      "conv15x15_64", "volume9"),
}
SUITES["full"] = tuple(name for name in LAYERS if name not in SUITES["large_kernels"])


@dataclass(frozen=True)
class Problem:
    """The operands of one (layer, dtype): the layer's input, weight and output gradient."""

    layer: Layer
    dtype: str
    x: np.ndarray
    w: np.ndarray
    grad_y: np.ndarray

    @classmethod
    def create(cls, layer: Layer, dtype: str, seed: int = 0) -> "Problem":
        rng = np.random.default_rng(seed)
        x, w, grad_y = (rng.standard_normal(shape).astype(dtype)
                        for shape in (layer.x_shape, layer.w_shape, layer.y_shape))
        return cls(layer, dtype, x, w, grad_y)
