"""The networks suite: the convolution layers of whole networks, each distinct layer once with
the number of times the network runs it (``numbaconv bench --suite networks``, ``--network``,
and ``NUMBACONV_BENCH_SUITE=networks`` in bench/test_speed.py).

Each network is written down from its published architecture: the stage tables below are the
papers' (and torchvision's, where it builds the network) as data, and a short walk through them
records every convolution in the order the network runs it, with the shapes it sees.
Convolutions with the same problem (shapes, stride, padding, groups, transposed or not) are one
layer with a count. Only convolutions are listed: pooling, normalisation, activations, the
classifier and wav2vec 2.0's 512 -> 768 feature projection (a matrix product) are not.

In training every layer computes its forward, input gradient and weight gradient, except the
first layer of a network, whose input is the data: autograd computes no gradient for it
(``NetworkLayer.input_grad``).

The inputs and batch sizes are those of issues 21 and 22 (float32 layers, 2 threads):

| network      | input (N x ...)        | convolutions (distinct) |
|--------------|------------------------|-------------------------|
| resnet50     | 4 x 3 x 224 x 224      | 53 (23)                 |
| unet         | 2 x 1 x 256 x 256      | 23 (19)                 |
| wav2vec2     | 4 x 1 x 16000          | 8 (8)                   |
| r3d_18       | 1 x 3 x 16 x 112 x 112 | 20 (11)                 |
| mobilenet_v2 | 4 x 3 x 224 x 224      | 52 (30)                 |

and, as a sixth entry that is not a network, ``depthwise_grouped``: five depthwise and grouped
layers of other networks (issue 22's extra layers), each counted once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..passes import PASSES
from .suite import Layer


@dataclass(frozen=True)
class NetworkLayer:
    """One distinct convolution of a network and how many times the network runs it."""

    layer: Layer
    count: int
    input_grad: bool = True     # False for the network's first layer: its input is the data

    @property
    def passes(self) -> tuple[str, ...]:
        """The passes training runs: all three, less the input gradient of the first layer."""
        return tuple(p for p in PASSES if p != "input" or self.input_grad)


@dataclass(frozen=True)
class Network:
    name: str
    architecture: str           # "ResNet-50 v1.5"
    sample: str                 # one sample of the input, "3x224x224"
    layers: tuple[NetworkLayer, ...]

    @property
    def batch(self) -> int:
        return self.layers[0].layer.batch

    @property
    def title(self) -> str:
        """The architecture and its input, for the report."""
        batches = sorted({entry.layer.batch for entry in self.layers})
        batch = "-".join(map(str, (batches[0], batches[-1]) if len(batches) > 1 else batches))
        return f"{self.architecture} (N={batch}, {self.sample})"

    @property
    def convolutions(self) -> int:
        """Convolution layers in the network (each distinct layer times its count)."""
        return sum(entry.count for entry in self.layers)

    def at_batch(self, batch: int) -> "Network":
        """The same network on a batch of ``batch`` (the smoke tests run N=1)."""
        return dataclasses.replace(self, layers=tuple(
            dataclasses.replace(entry, layer=dataclasses.replace(entry.layer, batch=batch)) for entry in self.layers))


def _dims(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


class _Walk:
    """Records a network's convolutions in order, merging identical problems into counts."""

    def __init__(self, batch: int, rank: int):
        self.batch, self.rank = batch, rank
        self.entries: dict[tuple, list] = {}      # problem -> [Layer, count, input_grad]

    def _tuple(self, value) -> tuple[int, ...]:
        return (value,) * self.rank if isinstance(value, int) else tuple(value)

    def conv(self, in_channels, out_channels, size, kernel, stride=1, padding=0, groups=1,
             transposed=False) -> tuple[int, ...]:
        """Record one convolution on an input of spatial ``size``; returns its output's size."""
        size, kernel, stride, padding = (self._tuple(v) for v in (size, kernel, stride, padding))
        same = lambda value: value[0] if len(set(value)) == 1 else value   # noqa: E731
        stride, padding = same(stride), same(padding)
        kind = "up" if transposed else ("dw" if groups == in_channels == out_channels and groups > 1 else "")
        shape = "k" + _dims(kernel) if self.rank == 1 else "x".join(map(str, kernel))
        strided = f"s{_dims(self._tuple(stride))}" if self._tuple(stride) != (1,) * self.rank else ""
        grouped = f"g{groups}" if groups > 1 and kind != "dw" else ""
        channels = str(in_channels) if kind == "dw" else f"{in_channels}to{out_channels}"
        name = f"{kind}{shape}{strided}{grouped}_{channels}_{_dims(size)}"
        layer = Layer(name, self.batch, in_channels, out_channels, size, kernel, stride, padding,
                      groups=groups, transposed=transposed)
        key = dataclasses.astuple(layer)[1:]
        if key in self.entries:
            self.entries[key][1] += 1
        else:
            if any(entry[0].name == name for entry in self.entries.values()):
                raise ValueError(f"two different layers named {name}")
            self.entries[key] = [layer, 1, bool(self.entries)]     # the first one needs no input gradient
        return layer.y_shape[2:]

    def network(self, name: str, architecture: str, sample: str) -> Network:
        return Network(name, architecture, sample, tuple(NetworkLayer(*entry) for entry in self.entries.values()))


def _pooled(size, kernel=2, stride=2, padding=0) -> tuple[int, ...]:
    return tuple((n + 2 * padding - kernel) // stride + 1 for n in size)


# ResNet-50 (He et al., "Deep residual learning for image recognition", CVPR 2016) as torchvision
# builds it, v1.5: the bottleneck's stride in its 3x3 conv, 1x1 projection shortcuts (stride 1
# or 2) on each stage's first block. Input 4 x 3 x 224 x 224.
RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))   # (width, blocks, stride); out = 4 x width


def resnet50(batch: int = 4, size: int = 224) -> Network:
    walk = _Walk(batch, 2)
    plane = walk.conv(3, 64, size, 7, stride=2, padding=3)
    plane = _pooled(plane, 3, 2, 1)                        # 3x3 max pool, stride 2
    channels = 64
    for width, blocks, stride in RESNET50_STAGES:
        for block in range(blocks):
            step = stride if block == 0 else 1
            walk.conv(channels, width, plane, 1)
            out_plane = walk.conv(width, width, plane, 3, stride=step, padding=1)
            walk.conv(width, 4 * width, out_plane, 1)
            if block == 0:
                walk.conv(channels, 4 * width, plane, 1, stride=step)     # downsample shortcut
            channels, plane = 4 * width, out_plane
    return walk.network("resnet50", "ResNet-50 v1.5", f"3x{size}x{size}")


# U-Net (Ronneberger et al., MICCAI 2015) with 32 base channels and 'same' 3x3 convolutions: two
# 3x3 convs per level, 4 downsamplings (2x2 max pool), 2x2 stride-2 transposed up-convolutions
# halving the channels, concatenation with the skip, a final 1x1 conv to 2 classes. Input
# 2 x 1 x 256 x 256.
UNET_BASE, UNET_DEPTH, UNET_CLASSES = 32, 4, 2


def unet(batch: int = 2, size: int = 256) -> Network:
    walk = _Walk(batch, 2)
    channels, plane, skips = 1, (size, size), []
    for level in range(UNET_DEPTH + 1):
        width = UNET_BASE * 2 ** level
        plane = walk.conv(channels, width, plane, 3, padding=1)
        walk.conv(width, width, plane, 3, padding=1)
        channels = width
        if level < UNET_DEPTH:
            skips.append(width)
            plane = _pooled(plane)
    for width in reversed(skips):
        plane = walk.conv(channels, width, plane, 2, stride=2, transposed=True)
        walk.conv(2 * width, width, plane, 3, padding=1)     # the up-convolution's output and the skip
        walk.conv(width, width, plane, 3, padding=1)
        channels = width
    walk.conv(channels, UNET_CLASSES, plane, 1)
    return walk.network("unet", f"U-Net, {UNET_BASE} base channels", f"1x{size}x{size}")


# wav2vec 2.0 (Baevski et al., NeurIPS 2020) feature encoder: seven 512-channel 1-d convs, no
# padding, then the Transformer's convolutional positional embedding (768 channels, kernel 128,
# padding 64, 16 groups) on the 49 frames, after the 512 -> 768 projection. Input 4 x 1 x 16000
# (one second at 16 kHz).
WAV2VEC2_ENCODER = ((10, 5),) + ((3, 2),) * 4 + ((2, 2),) * 2    # (kernel, stride), 512 channels each


def wav2vec2(batch: int = 4, samples: int = 16000) -> Network:
    walk = _Walk(batch, 1)
    channels, length = 1, (samples,)
    for kernel, stride in WAV2VEC2_ENCODER:
        length = walk.conv(channels, 512, length, kernel, stride=stride)
        channels = 512
    walk.conv(768, 768, length, 128, padding=64, groups=16)
    return walk.network("wav2vec2", "wav2vec 2.0 feature encoder + positional conv", f"1x{samples}")


# R3D-18 (Tran et al., "A closer look at spatiotemporal convolutions", CVPR 2018) as torchvision's
# r3d_18: a 3x7x7 stem, stride (1, 2, 2), padding (1, 3, 3), no pooling; two basic blocks of
# 3x3x3 convs per stage, the first of stages 2-4 with stride 2 in every dim and a 1x1x1 stride-2
# shortcut. Input 1 x 3 x 16 x 112 x 112.
R3D18_STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))     # (channels, stride); 2 blocks each


def r3d_18(batch: int = 1, frames: int = 16, size: int = 112) -> Network:
    walk = _Walk(batch, 3)
    volume = walk.conv(3, 64, (frames, size, size), (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3))
    channels = 64
    for width, stride in R3D18_STAGES:
        for block in range(2):
            step = stride if block == 0 else 1
            out_volume = walk.conv(channels, width, volume, 3, stride=step, padding=1)
            walk.conv(width, width, out_volume, 3, padding=1)
            if step != 1 or channels != width:
                walk.conv(channels, width, volume, 1, stride=step)     # downsample shortcut
            channels, volume = width, out_volume
    return walk.network("r3d_18", "R3D-18", f"3x{frames}x{size}x{size}")


# MobileNetV2 (Sandler et al., CVPR 2018) at width 1.0 as torchvision builds it: a 3x3 stride-2
# stem to 32 channels, inverted residual blocks (1x1 expansion by t, except for t = 1; 3x3
# depthwise, stride s on a stage's first block; 1x1 projection), a final 1x1 to 1280. Input
# 4 x 3 x 224 x 224.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                      (6, 160, 3, 2), (6, 320, 1, 1))      # (expansion t, channels c, blocks n, stride s)


def mobilenet_v2(batch: int = 4, size: int = 224) -> Network:
    walk = _Walk(batch, 2)
    plane = walk.conv(3, 32, size, 3, stride=2, padding=1)
    channels = 32
    for expansion, width, blocks, stride in MOBILENETV2_STAGES:
        for block in range(blocks):
            hidden = channels * expansion
            if expansion != 1:
                walk.conv(channels, hidden, plane, 1)
            out_plane = walk.conv(hidden, hidden, plane, 3, stride=stride if block == 0 else 1, padding=1,
                                  groups=hidden)
            walk.conv(hidden, width, out_plane, 1)
            channels, plane = width, out_plane
    walk.conv(channels, 1280, plane, 1)
    return walk.network("mobilenet_v2", "MobileNetV2 1.0", f"3x{size}x{size}")


# Not a network: depthwise and grouped layers that users' networks are full of beyond MobileNetV2
# (issue 22): ConvNeXt's 7x7 depthwise at 384 and 768 channels (N=2), EfficientNet's 5x5 stride-2
# depthwise at 240 channels (N=4), ResNeXt-50 32x4d's grouped 3x3 at 256 and 512 channels (N=4).
def depthwise_grouped(batch: int = 4) -> Network:
    """The extra layers, each once; ``batch`` for the N=4 layers, half of it for the N=2 ones."""
    large, small = _Walk(max(1, batch // 2), 2), _Walk(batch, 2)
    large.conv(384, 384, 14, 7, padding=3, groups=384)
    large.conv(768, 768, 7, 7, padding=3, groups=768)
    small.conv(240, 240, 28, 5, stride=2, padding=2, groups=240)
    small.conv(256, 256, 28, 3, padding=1, groups=32)
    small.conv(512, 512, 14, 3, padding=1, groups=32)
    layers = tuple(NetworkLayer(layer, 1) for walk in (large, small) for layer, _, _ in walk.entries.values())
    return Network("depthwise_grouped", "Depthwise and grouped layers (not a network)", "ConvNeXt, EfficientNet, ResNeXt",
                   layers)


NETWORKS = {network.name: network for network in (resnet50(), unet(), wav2vec2(), r3d_18(), mobilenet_v2())}
SUITE = {**NETWORKS, "depthwise_grouped": depthwise_grouped()}   # what --suite networks runs
