"""The benchmark layer suite: named convolution problems and their random operands.

``numbaconv bench``, the pytest-benchmark suite in bench/ and bench/gpu_check.py run these
layers. FLOPs are ``2 N K (C / groups) prod(out) prod(kernel)`` for every pass (the input and
weight gradients do the same multiply-adds as the forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import ConvSpec

DTYPES = ("float32", "float64")


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
