"""Batched matrix product on the GPU with shared-memory tiles and register tiles.

    for z in range(batches):  c[z % Bc] (+)= op(a[z % Ba]) @ op(b[z % Bb])

``a``, ``b`` and ``c`` are 3-d device arrays (batch, rows, columns) of one
float dtype; ``op`` transposes an operand when asked. An operand with fewer
batch entries than ``batches`` repeats cyclically (a group's weights shared
by all samples), and ``c`` with fewer entries sums over the batches that map
to it (the weight gradient's sum over samples), without atomics: one block
owns a tile of one ``c`` entry and loops over its batches itself.

Each block computes a ``tile_m x tile_n`` tile of ``c``: its threads (a
``threads_m x threads_n`` grid) each keep ``registers_m x registers_n`` sums
in registers, strided by the thread grid so that neighbouring threads read
neighbouring shared-memory words. The reduction runs in steps of ``depth``:
the block loads a ``depth x tile_m`` slice of ``a`` and a ``depth x tile_n``
slice of ``b`` into shared memory (zeros past the matrix edges, so any shape
works), synchronises, and every thread does ``depth * registers_m *
registers_n`` multiply-adds from shared memory.

FLOPs: ``2 M N K`` per batch. Global traffic: ``a`` is read ``N / tile_n``
times and ``b`` ``M / tile_m`` times, ``c`` written once, so with 64 x 64
tiles each loaded element feeds 64 multiply-adds and large products are
bound by shared-memory bandwidth and issue rate, not by DRAM.
"""
import functools
import math

import numpy as np
from numba import cuda, from_dtype

from .common import LAUNCH

MAX_GRID_Z = 65535


@functools.cache
def _kernel(dtype, threads_m, threads_n, registers_m, registers_n, depth):
    float_t = from_dtype(dtype)
    zero = dtype.type(0)
    tile_m, tile_n = threads_m * registers_m, threads_n * registers_n
    threads = threads_m * threads_n

    @cuda.jit
    def matmul_kernel(a, b, c, batches, transpose_a, transpose_b, accumulate):
        """c[z % Bc] (+)= op(a[z % Ba]) @ op(b[z % Bb]) over z < batches; one c tile per block."""
        a_tile = cuda.shared.array((depth, tile_m), float_t)
        b_tile = cuda.shared.array((depth, tile_n), float_t)
        sums = cuda.local.array((registers_m, registers_n), float_t)
        b_values = cuda.local.array(registers_n, float_t)
        rows, columns = c.shape[1], c.shape[2]
        inner = a.shape[1] if transpose_a else a.shape[2]
        thread_m, thread_n = cuda.threadIdx.y, cuda.threadIdx.x
        thread = thread_m * threads_n + thread_n
        first_row = cuda.blockIdx.y * np.int64(tile_m)
        first_column = cuda.blockIdx.x * np.int64(tile_n)
        for zc in range(cuda.blockIdx.z, c.shape[0], cuda.gridDim.z):   # uniform per block
            for i in range(registers_m):
                for j in range(registers_n):
                    sums[i, j] = zero
            for z in range(zc, batches, c.shape[0]):
                za, zb = z % a.shape[0], z % b.shape[0]
                for step in range(0, inner, depth):
                    # load the tiles; consecutive threads read consecutive addresses of each operand
                    for e in range(thread, depth * tile_m, threads):
                        if transpose_a:   # a[za] is (inner, rows)
                            kk, i = e // tile_m, e % tile_m
                        else:             # a[za] is (rows, inner)
                            i, kk = e // depth, e % depth
                        row, kk_global = first_row + i, step + kk
                        value = zero
                        if row < rows and kk_global < inner:
                            value = a[za, kk_global, row] if transpose_a else a[za, row, kk_global]
                        a_tile[kk, i] = value
                    for e in range(thread, depth * tile_n, threads):
                        if transpose_b:   # b[zb] is (columns, inner)
                            j, kk = e // depth, e % depth
                        else:             # b[zb] is (inner, columns)
                            kk, j = e // tile_n, e % tile_n
                        column, kk_global = first_column + j, step + kk
                        value = zero
                        if column < columns and kk_global < inner:
                            value = b[zb, column, kk_global] if transpose_b else b[zb, kk_global, column]
                        b_tile[kk, j] = value
                    cuda.syncthreads()
                    for kk in range(depth):
                        for j in range(registers_n):
                            b_values[j] = b_tile[kk, thread_n + j * threads_n]
                        for i in range(registers_m):
                            a_value = a_tile[kk, thread_m + i * threads_m]
                            for j in range(registers_n):
                                sums[i, j] += a_value * b_values[j]
                    cuda.syncthreads()   # the tiles are read before the next step overwrites them
            for i in range(registers_m):
                row = first_row + thread_m + i * threads_m
                for j in range(registers_n):
                    column = first_column + thread_n + j * threads_n
                    if row < rows and column < columns:
                        if accumulate:
                            c[zc, row, column] += sums[i, j]
                        else:
                            c[zc, row, column] = sums[i, j]

    return matmul_kernel


def matmul(a, b, c, *, transpose_a=False, transpose_b=False, accumulate=False):
    """c[z % Bc] = (or += with ``accumulate``) op(a[z % Ba]) @ op(b[z % Bb]) for z < max(Ba, Bb, Bc).

    Every batch count must divide the largest; shapes must agree (ValueError otherwise).
    """
    batches = max(a.shape[0], b.shape[0], c.shape[0])
    m, k = (a.shape[2], a.shape[1]) if transpose_a else (a.shape[1], a.shape[2])
    k_b, n = (b.shape[2], b.shape[1]) if transpose_b else (b.shape[1], b.shape[2])
    if k != k_b or c.shape[1:] != (m, n) or any(batches % operand.shape[0] for operand in (a, b, c)):
        raise ValueError(f"matmul shapes do not agree: a {a.shape} (transposed: {transpose_a}), "
                         f"b {b.shape} (transposed: {transpose_b}), c {c.shape}")
    if c.size == 0:
        return
    (threads_m, threads_n), (registers_m, registers_n) = LAUNCH.gemm_threads, LAUNCH.gemm_registers
    kernel = _kernel(np.dtype(c.dtype), threads_m, threads_n, registers_m, registers_n, LAUNCH.gemm_depth)
    grid = (math.ceil(n / (threads_n * registers_n)), math.ceil(m / (threads_m * registers_m)),
            min(c.shape[0], MAX_GRID_Z))
    kernel[grid, (threads_n, threads_m)](a, b, c, batches, transpose_a, transpose_b, accumulate)
