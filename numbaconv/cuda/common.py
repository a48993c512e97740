"""Launch settings, index helpers and the small kernels shared by the CUDA algorithms.

Every kernel indexes 5-d arrays ``(N, C, D, H, W)`` with 64-bit flat indices
(kernel arguments that are Python ints are int64, and thread positions are
widened before they are multiplied), so tensors above 2**31 elements are
addressed correctly. Element-wise kernels use a grid-stride loop over a grid
of at most ``LAUNCH.max_blocks`` blocks.
"""
import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import cuda, from_dtype


@dataclass(frozen=True)
class Launch:
    """Block shapes of all CUDA kernels.

    threads: threads per block of the element-wise kernels.
    reduce_threads: threads per block of the block reductions (a power of two).
    gemm_threads, gemm_registers: (rows, columns) of threads in a matrix-product
        block and of outputs each thread keeps in registers; the block's tile
        of C is their product.
    gemm_depth: reduction entries per shared-memory tile.
    max_blocks: cap of a grid-stride grid.
    """

    threads: int = 128
    reduce_threads: int = 128
    gemm_threads: tuple = (16, 16)
    gemm_registers: tuple = (4, 4)
    gemm_depth: int = 16
    max_blocks: int = 65536


LAUNCH = Launch()


def grid_blocks(total: int) -> int:
    """Blocks of ``LAUNCH.threads`` for a grid-stride loop over ``total`` elements."""
    return max(1, min(math.ceil(total / LAUNCH.threads), LAUNCH.max_blocks))


@cuda.jit(device=True, inline=True)
def grid_stride():
    """(first, step) of this thread's grid-stride loop, both int64."""
    first = cuda.threadIdx.x + cuda.blockIdx.x * np.int64(cuda.blockDim.x)
    return first, cuda.gridDim.x * np.int64(cuda.blockDim.x)


@cuda.jit(device=True, inline=True)
def unravel(index, shape):
    """The 5-d coordinates of flat C-order ``index`` in an array of ``shape``."""
    i4 = index % shape[4]
    rest = index // shape[4]
    i3 = rest % shape[3]
    rest //= shape[3]
    i2 = rest % shape[2]
    rest //= shape[2]
    return rest // shape[1], rest % shape[1], i2, i3, i4


@cuda.jit(device=True, inline=True)
def source_output(position, tap, stride, dilation, pad_lo, out_len):
    """The output index whose window puts ``tap`` on input ``position`` along one dim, or -1.

    Solves ``o * stride - pad_lo + tap * dilation = position`` for an integer
    ``0 <= o < out_len``: the gather form of the input gradient.
    """
    span = position + pad_lo - tap * dilation
    if span < 0 or span % stride != 0:
        return -1
    out = span // stride
    return out if out < out_len else -1


@cuda.jit(device=True, inline=True)
def block_sum(value, shared):
    """The sum of ``value`` over the block's threads, returned to every thread.

    ``shared`` holds one slot per thread (``blockDim.x == shared.size``, a power
    of two). Every thread of the block must call it: it synchronises.
    """
    thread = cuda.threadIdx.x
    shared[thread] = value
    cuda.syncthreads()
    half = shared.size // 2
    while half > 0:
        if thread < half:
            shared[thread] += shared[thread + half]
        cuda.syncthreads()
        half //= 2
    total = shared[0]
    cuda.syncthreads()   # all have read shared[0] before a later call overwrites it
    return total


@functools.cache
def _copy_kernel():
    @cuda.jit
    def copy(source, target):
        """target = source, 5-d, any strides into C order. 2 x size x itemsize bytes: bandwidth."""
        first, step = grid_stride()
        for index in range(first, target.size, step):
            n, c, d, h, w = unravel(index, target.shape)
            target[n, c, d, h, w] = source[n, c, d, h, w]
    return copy


def contiguous_copy(array):
    """A C-contiguous copy, on the GPU, of a strided device array of up to 5 dims."""
    lead = (1,) * (5 - array.ndim)
    target = cuda.device_array(array.shape, array.dtype)
    if target.size:
        _copy_kernel()[grid_blocks(target.size), LAUNCH.threads](
            array.reshape(lead + array.shape), target.reshape(lead + array.shape))
    return target


@functools.cache
def _bias_kernels(dtype, reduce_threads):
    float_t = from_dtype(dtype)
    zero = dtype.type(0)

    @cuda.jit
    def add_bias(y, bias):
        """y[n, k, p] += bias[k]. Reads and writes y once: bandwidth-bound."""
        first, step = grid_stride()
        for index in range(first, y.size, step):
            n, k, p = index // (y.shape[1] * y.shape[2]), index // y.shape[2] % y.shape[1], index % y.shape[2]
            y[n, k, p] += bias[k]

    @cuda.jit
    def bias_gradient(grad_y, grad_b):
        """grad_b[k] = sum over n, p of grad_y[n, k, p]; one block per k, reduced in shared
        memory. N K P adds, grad_y read once (coalesced along p): bandwidth-bound."""
        partial_sums = cuda.shared.array(reduce_threads, float_t)
        positions = grad_y.shape[0] * np.int64(grad_y.shape[2])
        for k in range(cuda.blockIdx.x, grad_y.shape[1], cuda.gridDim.x):
            total = zero
            for index in range(cuda.threadIdx.x, positions, reduce_threads):
                total += grad_y[index // grad_y.shape[2], k, index % grad_y.shape[2]]
            total = block_sum(total, partial_sums)
            if cuda.threadIdx.x == 0:
                grad_b[k] = total

    return add_bias, bias_gradient


def add_bias(y, bias):
    """y (N, K, ...) += bias[k] on the GPU, in place."""
    if y.size:
        flat = y.reshape(y.shape[0], y.shape[1], math.prod(y.shape[2:]))
        _bias_kernels(np.dtype(y.dtype), LAUNCH.reduce_threads)[0][grid_blocks(y.size), LAUNCH.threads](
            flat, bias)


def bias_gradient(grad_y):
    """The bias gradient sum over all but dim 1 of grad_y (N, K, ...), a new device array."""
    channels = grad_y.shape[1]
    grad_b = cuda.device_array(channels, grad_y.dtype)
    kernel = _bias_kernels(np.dtype(grad_y.dtype), LAUNCH.reduce_threads)[1]
    kernel[min(channels, LAUNCH.max_blocks), LAUNCH.reduce_threads](
        grad_y.reshape(grad_y.shape[0], channels, math.prod(grad_y.shape[2:])), grad_b)
    return grad_b
