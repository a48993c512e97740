"""ConvSpec: one convolution problem, normalised and validated once.

Every public function turns its arguments into a :class:`ConvSpec` before
anything else happens, so the kernels never parse arguments: they see plain
tuples of ints, one entry per spatial dimension, with padding already split
into ``(low, high)`` pairs.

Sizes along one spatial dimension (PyTorch's convention)::

    extent  = dilation * (kernel - 1) + 1          # span of one window
    out     = (in + pad_lo + pad_hi - extent) // stride + 1

``padding="same"`` gives ``out = ceil(in / stride)`` with the odd pad at the
high end (TensorFlow/JAX); at stride 1 that is PyTorch's ``"same"``.

This module imports no Numba.
"""
from __future__ import annotations

import functools
import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The largest stride, dilation, padding, output_padding or groups accepted: far past any real
# problem, and small enough that the kernels' int64 index arithmetic cannot overflow.
ARGUMENT_LIMIT = 2**31 - 1


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_range(name: str, values, minimum: int, given) -> None:
    if any(v < minimum for v in values):
        rule = "non-negative" if minimum == 0 else f">= {minimum}"
        raise ValueError(f"{name} entries must be {rule}, got {given!r}")
    if any(v > ARGUMENT_LIMIT for v in values):
        raise ValueError(f"{name} entries must be <= {ARGUMENT_LIMIT} (2**31 - 1), got {given!r}")


def normalize_ints(name: str, value, rank: int, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``rank`` ints, each in ``[minimum, ARGUMENT_LIMIT]``, as a tuple."""
    values = (value,) * rank if _is_int(value) else value
    if not isinstance(values, (tuple, list)) or not all(_is_int(v) for v in values):
        raise TypeError(f"{name} must be an int or a tuple of {rank} ints, got {value!r}")
    if len(values) != rank:
        raise ValueError(f"{name} must have {rank} entries for a {rank}-d convolution, got {value!r}")
    _check_range(name, values, minimum, value)
    return tuple(int(v) for v in values)


def normalize_padding(padding, rank: int) -> tuple[tuple[int, int], ...] | str:
    """Padding as ``rank`` ``(low, high)`` pairs, or the string ``"same"``.

    Accepts an int, ``rank`` ints, ``rank`` ``(low, high)`` pairs, ``"valid"``
    or ``"same"``. ``"same"`` is resolved later, once the input size is known.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * rank
        if padding == "same":
            return "same"
        raise ValueError(f"padding string must be 'valid' or 'same', got {padding!r}")
    if _is_int(padding):
        pairs = ((padding, padding),) * rank
    elif isinstance(padding, (tuple, list)) and len(padding) == rank and all(_is_int(p) for p in padding):
        pairs = tuple((p, p) for p in padding)
    elif (isinstance(padding, (tuple, list)) and len(padding) == rank
          and all(isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(q) for q in p)
                  for p in padding)):
        pairs = tuple(tuple(p) for p in padding)
    else:
        raise TypeError(
            f"padding must be an int, {rank} ints, {rank} (low, high) pairs, 'valid' or 'same'; "
            f"got {padding!r}")
    _check_range("padding", [q for pair in pairs for q in pair], 0, padding)
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def check_dtype(**arrays) -> np.dtype:
    """The one float dtype shared by all ``arrays`` (None entries skipped)."""
    dtypes = {name: np.dtype(a.dtype) for name, a in arrays.items() if a is not None}
    for name, dtype in dtypes.items():
        if dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has dtype {dtype}; numbaconv supports float32 and float64")
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name}={dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"all operands must share one dtype, got {listing}")
    return next(iter(dtypes.values()))


def check_groups(groups) -> None:
    """groups must be an int >= 1."""
    if not _is_int(groups):
        raise TypeError(f"groups must be an int, got {groups!r}")
    _check_range("groups", (groups,), 1, groups)


def _check_shape(name: str, shape, rank: int) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(_is_int(s) for s in shape):
        raise TypeError(f"{name} shape must be a tuple of ints, got {shape!r}")
    if len(shape) != rank + 2:
        raise ValueError(
            f"{name} must have {rank + 2} dims for a {rank}-d convolution, got shape {tuple(shape)}")
    if any(s < 0 for s in shape):
        raise ValueError(f"{name} shape has a negative size: {tuple(shape)}")
    return tuple(int(s) for s in shape)


SPEC_CACHE_SIZE = 4096
_SPEC_CACHE = {}


def _plain(value) -> bool:
    """True for a plain int, str or None, or a tuple of plain ints and such tuples: values that
    are equal only when they mean the same (``stride=1.0`` or ``True`` must not hit ``stride=1``)."""
    kind = type(value)
    if kind is int or kind is str:
        return True
    if kind is tuple:
        for item in value:
            if type(item) is not int and not (type(item) is tuple and _plain(item)):
                return False
        return True
    return value is None


@dataclass(frozen=True)
class ConvSpec:
    """One forward convolution problem ``y = conv(x, w)``.

    Attributes:
        batch: N, the number of samples.
        in_channels: C, channels of the input ``x``.
        out_channels: K, channels of the output ``y`` (rows of ``w``).
        groups: channels are split into this many independent groups.
        in_size: spatial size of ``x``, one int per dim.
        kernel_size: spatial size of ``w``, one int per dim.
        stride, dilation: one int per dim, >= 1.
        pad_lo, pad_hi: zero padding before / after each dim.
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_lo: tuple[int, ...]
    pad_hi: tuple[int, ...]

    @classmethod
    def create(cls, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1, *, rank=None):
        """Validate the arguments of a convolution and resolve them.

        ``rank`` is the number of spatial dims (1, 2 or 3); when omitted it
        is taken from ``len(x_shape) - 2``. Resolved specs are remembered by
        the arguments (a call repeated in a training loop skips the validation,
        which costs about 0.1 ms) when they are plain ints, strings and tuples
        of ints; others (lists, NumPy integers, floats) are resolved every time.
        """
        key = (x_shape, w_shape, stride, padding, dilation, groups, rank)
        if not all(map(_plain, key)):
            return cls._resolve(x_shape, w_shape, stride, padding, dilation, groups, rank)
        spec = _SPEC_CACHE.get(key)
        if spec is None:
            spec = cls._resolve(x_shape, w_shape, stride, padding, dilation, groups, rank)
            if len(_SPEC_CACHE) >= SPEC_CACHE_SIZE:
                _SPEC_CACHE.clear()
            _SPEC_CACHE[key] = spec
        return spec

    @classmethod
    def _resolve(cls, x_shape, w_shape, stride, padding, dilation, groups, rank):
        if rank is None:
            rank = len(x_shape) - 2
        if rank not in (1, 2, 3):
            raise ValueError(f"numbaconv supports 1-d, 2-d and 3-d convolutions, got rank {rank}")
        x_shape = _check_shape("input", x_shape, rank)
        w_shape = _check_shape("weight", w_shape, rank)
        check_groups(groups)
        batch, in_channels, *in_size = x_shape
        out_channels, group_channels, *kernel_size = w_shape
        if in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"input {x_shape} and weight {w_shape} need at least one channel each")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide both input channels ({in_channels}, input {x_shape}) "
                f"and output channels ({out_channels}, weight {w_shape})")
        if group_channels != in_channels // groups:
            raise ValueError(
                f"weight {w_shape} must have input_channels / groups = {in_channels} / {groups} = "
                f"{in_channels // groups} in dim 1 (input {x_shape}), got {group_channels}")
        if any(k < 1 for k in kernel_size):
            raise ValueError(f"weight {w_shape} has an empty kernel")
        stride = normalize_ints("stride", stride, rank, 1)
        dilation = normalize_ints("dilation", dilation, rank, 1)
        pads = normalize_padding(padding, rank)
        if pads == "same":
            pads = tuple(_same_padding(n, k, s, d)
                         for n, k, s, d in zip(in_size, kernel_size, stride, dilation))
        for dim, (n, k, d, (lo, hi)) in enumerate(zip(in_size, kernel_size, dilation, pads)):
            extent = d * (k - 1) + 1
            if extent > n + lo + hi:
                raise ValueError(
                    f"kernel extent {extent} (kernel {k}, dilation {d}) is larger than the padded "
                    f"input {n} + {lo} + {hi} in spatial dim {dim}: input {x_shape}, weight {w_shape}")
        return cls(batch, in_channels, out_channels, groups, tuple(in_size), tuple(kernel_size),
                   stride, dilation, tuple(lo for lo, _ in pads), tuple(hi for _, hi in pads))

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def group_in_channels(self) -> int:
        return self.in_channels // self.groups

    @property
    def group_out_channels(self) -> int:
        return self.out_channels // self.groups

    @functools.cached_property
    def out_size(self) -> tuple[int, ...]:
        return tuple((n + lo + hi - d * (k - 1) - 1) // s + 1
                     for n, k, s, d, lo, hi in zip(self.in_size, self.kernel_size, self.stride,
                                                   self.dilation, self.pad_lo, self.pad_hi))

    @functools.cached_property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.in_size)

    @functools.cached_property
    def w_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.group_in_channels, *self.kernel_size)

    @functools.cached_property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, self.out_channels, *self.out_size)

    @functools.cached_property
    def flops(self) -> int:
        """Multiply-adds counted as 2 FLOPs: ``2 N K (C/g) prod(out) prod(kernel)``."""
        return (2 * self.batch * self.out_channels * self.group_in_channels
                * math.prod(self.out_size) * math.prod(self.kernel_size))

    def check_fits(self, dtype, shapes=("x", "w", "y")) -> None:
        """Raise ValueError, before anything is allocated, when one of the arrays named in
        ``shapes`` ("x", "w", "y") would take more bytes than this machine's memory: the mark of
        a mistaken size, padding or stride."""
        itemsize, memory = dtype.itemsize, physical_memory()
        for role in shapes:
            shape = getattr(self, _SHAPES[role])
            nbytes = math.prod(shape) * itemsize
            if memory and nbytes > memory:
                raise ValueError(
                    f"the {_ROLES[role]} of this convolution would have shape {shape}: "
                    f"{nbytes / 2**30:.3g} GiB of {np.dtype(dtype).name}, more than this machine's "
                    f"memory ({memory / 2**30:.3g} GiB); check the sizes and stride={self.stride}, "
                    f"padding={tuple(zip(self.pad_lo, self.pad_hi))}, dilation={self.dilation}")

    def nbytes(self, itemsize: int) -> int:
        """Bytes of x, w and y together: the least memory traffic of one pass."""
        return itemsize * (math.prod(self.x_shape) + math.prod(self.w_shape) + math.prod(self.y_shape))

    @functools.cached_property
    def _spec_3d(self) -> "ConvSpec":
        """as_3d's result, made once per spec (derived shapes are cached too: a training
        loop reuses its specs and each call asked for them several times)."""
        lead = 3 - self.rank

        def pad3(values, fill):
            return (fill,) * lead + tuple(values)

        return ConvSpec(self.batch, self.in_channels, self.out_channels, self.groups,
                        pad3(self.in_size, 1), pad3(self.kernel_size, 1), pad3(self.stride, 1),
                        pad3(self.dilation, 1), pad3(self.pad_lo, 0), pad3(self.pad_hi, 0))

    def as_3d(self) -> "ConvSpec":
        """The same problem with leading unit spatial dims, so every kernel is 3-d."""
        return self._spec_3d


_ROLES = {"x": "input", "w": "weight", "y": "output"}
_SHAPES = {"x": "x_shape", "w": "w_shape", "y": "y_shape"}


@functools.cache
def physical_memory() -> int:
    """Bytes of physical memory (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 0


def _same_padding(in_len: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(low, high) pads giving ``ceil(in_len / stride)`` outputs, the odd one high."""
    out_len = -(-in_len // stride)
    total = max((out_len - 1) * stride + dilation * (kernel - 1) + 1 - in_len, 0)
    return total // 2, total - total // 2


def transpose_output_size(in_size, kernel_size, stride, pad_lo, pad_hi, dilation, output_padding):
    """Spatial size of ``conv_transpose``: the input size of the convolution it inverts."""
    return tuple((n - 1) * s - lo - hi + d * (k - 1) + 1 + op
                 for n, k, s, lo, hi, d, op in zip(in_size, kernel_size, stride, pad_lo, pad_hi,
                                                   dilation, output_padding))
