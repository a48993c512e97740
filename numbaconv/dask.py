"""Convolutions over Dask arrays: inputs larger than memory, batches spread over a cluster.

    import dask.array as da, numbaconv.dask as ncd
    x = da.from_zarr("volume.zarr")                      # (N, C, D, H, W), chunked
    y = ncd.conv3d(x, w, b, padding="same")              # a Dask array; nothing runs yet
    y.to_zarr("filtered.zarr")                           # runs, block by block

The fifteen functions of ``numbaconv`` (``conv{1,2,3}d``, ``_input``, ``_weight``,
``_backward``, ``conv_transpose{1,2,3}d``) with the same arguments and results, taking Dask
arrays for the input and the output gradient and NumPy arrays for the weight and bias. Each
block of the result is one call of the ordinary in-memory function (``algo="auto"``, CPU) on a
block of the operand and the halo its windows reach into; the weight and bias gradients are
sums of per-block partials, added in a tree by Dask. Arguments are checked, with the in-memory
API's errors, when the graph is built.

Chunks:

- the batch axis maps block to block;
- the channel axis must be one chunk (a warning, then a rechunk, where it is not);
- each spatial axis: a block of the result holds the outputs whose windows are anchored in one
  chunk of the operand (the anchor of output ``j`` of a forward pass is input position
  ``j * stride - pad_lo + min(pad_lo, extent - 1)``, so at stride 1 with ``"same"`` padding the
  result has the operand's chunks), and takes from its neighbours the halo the windows of the
  block reach (dask.array.overlap), the same depth for every block of the axis: the most any
  of its blocks reads. The input gradient and the transposed convolution map the other way,
  each block of the result holding the input positions from the anchor of its first output.
  Every output is computed once, whatever the chunk sizes: chunks too small to hold the halo,
  or holding no anchor (smaller than the stride), are merged with their neighbour first.

Threads: each block runs on ``task_threads()`` Numba threads, the cores of its host shared
among the tasks that can run there at once (the threads of all Dask workers on the host, or
Dask's local thread pool), so workers x threads does not exceed the cores. docs/dask.md has
the details, the multi-machine set-up and measurements.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import warnings
from dataclasses import dataclass

import dask
import dask.array as da
import dask.system
import numba
import numpy as np

from . import functional
from .signatures import _as_shape, _check_grad_output, _check_vector, _transpose_spec, as_array
from .spec import ConvSpec, check_dtype

# ---------------------------------------------------------------------------------------------
# Threads


def _cores() -> int:
    """The cores this process may use (affinity and container limits counted, as Dask counts)."""
    return dask.system.CPU_COUNT


@functools.cache
def _host_threads(worker_address: str) -> int:
    """Dask threads of all workers on the host of the worker at ``worker_address`` (asked of the
    scheduler once per worker process)."""
    from distributed import get_client

    workers = get_client().scheduler_info(n_workers=-1)["workers"]
    host = workers[worker_address]["host"]
    return sum(info["nthreads"] for info in workers.values() if info["host"] == host)


def _concurrent_tasks() -> int:
    """How many tasks may run at once on this host: the threads of every distributed worker on
    it, or the size of Dask's local thread pool when no distributed worker runs the task."""
    try:
        from distributed import get_worker
        worker = get_worker()
    except (ImportError, ValueError):
        return dask.config.get("num_workers", None) or _cores()
    return _host_threads(worker.address)


def task_threads() -> int:
    """The Numba threads a block gets where this runs (a task on a worker, or Dask's local
    scheduler): ``max(1, cores // tasks that run at once on the host)``, at most
    ``numba.config.NUMBA_NUM_THREADS``."""
    return max(1, min(numba.config.NUMBA_NUM_THREADS, _cores() // _concurrent_tasks()))


@contextlib.contextmanager
def _block_threads():
    """Runs the body on ``task_threads()`` Numba threads and restores the caller's count
    (Numba's count is per thread; a synchronous scheduler runs blocks on the caller's)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(task_threads())
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------
# Geometry: which outputs each block computes and which operand range it reads


@dataclass(frozen=True)
class _Geometry:
    """One spatial axis of a convolution: output ``j`` reads input positions
    ``j * stride - pad_lo + t * dilation`` for taps ``t`` in ``[0, kernel)``."""

    kernel: int
    stride: int
    dilation: int
    pad_lo: int

    @property
    def extent(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    @property
    def anchor_offset(self) -> int:
        """Where in its window an output is anchored: at the window's first input position
        past the low padding, so that "same" padding at stride 1 keeps the chunks."""
        return min(self.pad_lo, self.extent - 1)

    def forward_split(self, position: int) -> int:
        """The first output anchored at or after input ``position``."""
        return -(-(position + self.pad_lo - self.anchor_offset) // self.stride)

    def forward_reads(self, first: int, stop: int) -> tuple[int, int]:
        """The input range ``[start, stop)`` that outputs ``[first, stop)`` read (it may pass the
        input's ends: those positions are padding)."""
        return (first * self.stride - self.pad_lo,
                (stop - 1) * self.stride - self.pad_lo + self.extent)

    def input_split(self, output: int) -> int:
        """The input position anchoring ``output``: where a block of the input gradient starts."""
        return output * self.stride - self.pad_lo + self.anchor_offset

    def input_reads(self, first: int, stop: int) -> tuple[int, int]:
        """The outputs ``[start, stop)`` whose gradients input positions ``[first, stop)`` need:
        every window touching them, from one starting at or before ``first`` (so the local
        problem's low padding is not negative; outputs past the output's ends are zeros)."""
        touching = -(-(first - self.extent + 1 + self.pad_lo) // self.stride)
        return (min(touching, (first + self.pad_lo) // self.stride),
                (stop - 1 + self.pad_lo) // self.stride + 1)

    def input_padding(self, block: "_Block") -> tuple[int, int]:
        """The padding of the local input-gradient problem of ``block``: input positions
        ``[block.start, block.stop)``, outputs ``[block.read_start, block.read_stop)``."""
        return (block.start + self.pad_lo - block.read_start * self.stride,
                max(0, (block.read_stop - 1) * self.stride - self.pad_lo + self.extent - block.stop))


@dataclass(frozen=True)
class _Block:
    """One block of the result along one axis."""

    start: int          # the result's range [start, stop)
    stop: int
    read_start: int     # the operand range [read_start, read_stop) it reads
    read_stop: int
    take: slice         # the part of that range inside the operand, within the block and its halo
    before: int         # how far the read range passes the operand's low end
    after: int          # and its high end

    @property
    def padding(self) -> tuple[int, int]:
        """The forward pass's zero padding of the block: the read range past the input's ends."""
        return self.before, self.after


@dataclass(frozen=True)
class _AxisPlan:
    """How one spatial axis of the operand (Dask array) maps onto the result's blocks."""

    chunks: tuple[int, ...]         # the operand's chunks
    depth: tuple[int, int]          # the halo every block takes from its (low, high) neighbour
    out_chunks: tuple[int, ...]     # the result's chunks
    blocks: tuple[_Block, ...]


def _layout(cuts, size: int, out_size: int, split, reads) -> _AxisPlan:
    """The plan for operand chunks cut at ``cuts`` (interior positions, each starting a block)."""
    starts, stops = (0, *cuts), (*cuts, size)
    out_bounds = (0, *map(split, cuts), out_size)
    ranges = [reads(first, stop) for first, stop in itertools.pairwise(out_bounds)]
    low = max([start - read[0] for start, read in zip(starts[1:], ranges[1:])], default=0)
    high = max([read[1] - stop for stop, read in zip(stops[:-1], ranges[:-1])], default=0)
    depth = (max(low, 0), max(high, 0))
    blocks = []
    for i, ((start, stop), (read_start, read_stop)) in enumerate(zip(itertools.pairwise(out_bounds), ranges)):
        data_start = starts[i] - depth[0] if i else 0
        inside_start = min(max(read_start, 0), size)
        inside_stop = min(max(read_stop, inside_start), size)
        before = min(max(-read_start, 0), read_stop - read_start)
        after = read_stop - read_start - before - (inside_stop - inside_start)
        blocks.append(_Block(start, stop, read_start, read_stop,
                             slice(inside_start - data_start, inside_stop - data_start), before, after))
    return _AxisPlan(tuple(b - a for a, b in itertools.pairwise((0, *cuts, size))), depth,
                     tuple(b - a for a, b in itertools.pairwise(out_bounds)), tuple(blocks))


def _plan_axis(chunks, out_size: int, split, reads) -> _AxisPlan:
    """The plan of one axis: the operand's ``chunks``, merged where a chunk would start no
    output (``split(position)``: the first result index of a block starting at ``position``)
    or is smaller than the halo (``reads(first, stop)``: the operand range results
    ``[first, stop)`` read), so that dask.array.overlap needs no rechunk of its own."""
    size, cuts = sum(chunks), []
    for cut in itertools.accumulate(chunks[:-1]):
        first = split(cut)
        if 0 < first < out_size and first > (split(cuts[-1]) if cuts else 0):
            cuts.append(cut)
    halo = max(_layout(cuts, size, out_size, split, reads).depth)
    kept = []
    for cut in cuts:
        if cut - (kept[-1] if kept else 0) >= halo:
            kept.append(cut)
    if kept and size - kept[-1] < halo:
        kept.pop()
    return _layout(kept, size, out_size, split, reads)


def _geometries(spec: ConvSpec):
    return [_Geometry(k, s, d, lo) for k, s, d, lo in
            zip(spec.kernel_size, spec.stride, spec.dilation, spec.pad_lo)]


def _forward_plans(spec: ConvSpec, x) -> list[_AxisPlan]:
    """Blocks of the output (and of the output gradient, for the weight gradient) from x's chunks."""
    return [_plan_axis(chunks, out, g.forward_split, g.forward_reads)
            for chunks, out, g in zip(x.chunks[2:], spec.out_size, _geometries(spec))]


def _input_plans(spec: ConvSpec, grad_y) -> list[_AxisPlan]:
    """Blocks of the input gradient from grad_y's chunks."""
    return [_plan_axis(chunks, size, g.input_split, g.input_reads)
            for chunks, size, g in zip(grad_y.chunks[2:], spec.in_size, _geometries(spec))]


def _with_halo(array, plans):
    """``array`` rechunked to the plans' spatial chunks, each block with the plans' halo."""
    array = array.rechunk((array.chunks[0], array.chunks[1], *(plan.chunks for plan in plans)))
    depth = {2 + axis: plan.depth for axis, plan in enumerate(plans)}
    return da.overlap.overlap(array, depth=depth, boundary="none", allow_rechunk=False)


def _block_operand(block, plans, block_id):
    """What result block ``block_id`` reads of ``block`` (its operand block with the halo), and
    its plan along each spatial axis."""
    blocks = [plan.blocks[i] for plan, i in zip(plans, block_id[2:])]
    return block[(slice(None), slice(None), *(b.take for b in blocks))], blocks


# ---------------------------------------------------------------------------------------------
# Blocks: each one call of the in-memory function


def _forward_block(x, *, rank, plans, w, bias, stride, dilation, groups, block_id=None):
    x, blocks = _block_operand(x, plans, block_id)
    padding = tuple(b.padding for b in blocks)
    with _block_threads():
        return getattr(functional, f"conv{rank}d")(x, w, bias, stride, padding, dilation, groups)


def _input_block(grad_y, *, rank, plans, geometries, w, bias, in_channels, stride, dilation, groups,
                 block_id=None):
    grad_y, blocks = _block_operand(grad_y, plans, block_id)
    if any(b.before or b.after for b in blocks):   # outputs past grad_y's ends contribute zeros
        grad_y = np.pad(grad_y, [(0, 0), (0, 0), *(b.padding for b in blocks)])
    x_shape = (grad_y.shape[0], in_channels, *(b.stop - b.start for b in blocks))
    padding = tuple(g.input_padding(b) for g, b in zip(geometries, blocks))
    with _block_threads():
        grad_x = getattr(functional, f"conv{rank}d_input")(x_shape, w, grad_y, stride, padding,
                                                           dilation, groups)
    if bias is not None:
        grad_x += bias.reshape(-1, *(1,) * rank)
    return grad_x


def _weight_block(x, grad_y, *, rank, plans, w_shape, stride, dilation, groups, block_id=None):
    x, blocks = _block_operand(x, plans, block_id)
    padding = tuple(b.padding for b in blocks)
    with _block_threads():
        grad_w = getattr(functional, f"conv{rank}d_weight")(x, w_shape, grad_y, stride, padding,
                                                            dilation, groups)
    return grad_w.reshape((1,) * (rank + 2) + grad_w.shape)


# ---------------------------------------------------------------------------------------------
# Graphs


def _forward(rank, spec, x, w, bias):
    plans = _forward_plans(spec, x)
    return da.map_blocks(
        _forward_block, _with_halo(x, plans), dtype=x.dtype, meta=np.empty((0,) * x.ndim, x.dtype),
        chunks=(x.chunks[0], (spec.out_channels,), *(plan.out_chunks for plan in plans)),
        rank=rank, plans=plans, w=w, bias=bias, stride=spec.stride, dilation=spec.dilation,
        groups=spec.groups)


def _input_gradient(rank, spec, grad_y, w, bias=None):
    plans = _input_plans(spec, grad_y)
    return da.map_blocks(
        _input_block, _with_halo(grad_y, plans), dtype=grad_y.dtype,
        meta=np.empty((0,) * grad_y.ndim, grad_y.dtype),
        chunks=(grad_y.chunks[0], (spec.in_channels,), *(plan.out_chunks for plan in plans)),
        rank=rank, plans=plans, geometries=_geometries(spec), w=w, bias=bias,
        in_channels=spec.in_channels, stride=spec.stride, dilation=spec.dilation, groups=spec.groups)


def _weight_gradient(rank, spec, x, grad_y):
    """Per-block weight gradients (one per block of x), summed in a tree in float64."""
    plans = _forward_plans(spec, x)
    grad_y = grad_y.rechunk((x.chunks[0], grad_y.chunks[1], *(plan.out_chunks for plan in plans)))
    x = _with_halo(x, plans)
    partials = da.map_blocks(
        _weight_block, x, grad_y, dtype=x.dtype,
        meta=np.empty((0,) * (2 * x.ndim), x.dtype),
        chunks=(*((1,) * blocks for blocks in x.numblocks), *((size,) for size in spec.w_shape)),
        new_axis=list(range(x.ndim, 2 * x.ndim)),
        rank=rank, plans=plans, w_shape=spec.w_shape, stride=spec.stride, dilation=spec.dilation,
        groups=spec.groups)
    return partials.sum(axis=tuple(range(x.ndim)), dtype=np.float64).astype(x.dtype)


def _bias_gradient(grad_y):
    """The output gradient summed over all but the channel axis, in a tree, in float64."""
    axes = (0, *range(2, grad_y.ndim))
    return grad_y.sum(axis=axes, dtype=np.float64).astype(grad_y.dtype)


# ---------------------------------------------------------------------------------------------
# Arguments


def _as_dask(name: str, value):
    """A Dask array with its channel axis in one chunk; NumPy data becomes one (auto-chunked)."""
    if not isinstance(value, da.Array):
        value = da.asarray(as_array(name, value))
    if any(np.isnan(size) for size in value.shape):
        raise ValueError(f"{name} has unknown chunk sizes {value.chunks}; "
                         "call compute_chunk_sizes() on it first")
    if value.ndim > 1 and len(value.chunks[1]) > 1:
        warnings.warn(f"{name} has {len(value.chunks[1])} chunks along its channel axis; "
                      "numbaconv.dask rechunks it to one", stacklevel=3)
        value = value.rechunk({1: -1})
    return value


def _make_rank(rank: int) -> dict:
    """The five functions of one rank (1, 2 or 3 spatial dims), as in numbaconv.signatures."""
    d = f"{rank}d"

    def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
        x, w, bias = _as_dask("input", x), as_array("weight", w), as_array("bias", bias, optional=True)
        check_dtype(input=x, weight=w, bias=bias)
        spec = ConvSpec.create(x.shape, tuple(w.shape), stride, padding, dilation, groups, rank=rank)
        _check_vector("bias", bias, spec.out_channels)
        return _forward(rank, spec, x, w, bias)

    def conv_input(input_shape, w, grad_output, stride=1, padding=0, dilation=1, groups=1):
        w, grad_y = as_array("weight", w), _as_dask("grad_output", grad_output)
        check_dtype(weight=w, grad_output=grad_y)
        spec = ConvSpec.create(_as_shape("input_shape", input_shape), tuple(w.shape), stride, padding,
                               dilation, groups, rank=rank)
        _check_grad_output(spec, grad_y)
        return _input_gradient(rank, spec, grad_y, w)

    def conv_weight(x, weight_shape, grad_output, stride=1, padding=0, dilation=1, groups=1):
        x, grad_y = _as_dask("input", x), _as_dask("grad_output", grad_output)
        check_dtype(input=x, grad_output=grad_y)
        spec = ConvSpec.create(x.shape, _as_shape("weight_shape", weight_shape), stride, padding,
                               dilation, groups, rank=rank)
        _check_grad_output(spec, grad_y)
        return _weight_gradient(rank, spec, x, grad_y)

    def conv_backward(grad_output, x, w, stride=1, padding=0, dilation=1, groups=1, *, bias=True):
        grad_y = _as_dask("grad_output", grad_output)
        x, w = _as_dask("input", x), as_array("weight", w)
        check_dtype(grad_output=grad_y, input=x, weight=w)
        spec = ConvSpec.create(x.shape, tuple(w.shape), stride, padding, dilation, groups, rank=rank)
        _check_grad_output(spec, grad_y)
        return (_input_gradient(rank, spec, grad_y, w), _weight_gradient(rank, spec, x, grad_y),
                _bias_gradient(grad_y) if bias else None)

    def conv_transpose(x, w, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
        x, w, bias = _as_dask("input", x), as_array("weight", w), as_array("bias", bias, optional=True)
        check_dtype(input=x, weight=w, bias=bias)
        spec = _transpose_spec(rank, x.shape, tuple(w.shape), stride, padding, output_padding,
                               groups, dilation)
        _check_vector("bias", bias, spec.in_channels)
        return _input_gradient(rank, spec, x, w, bias)   # outputs past x's high end are zeros

    in_memory = functional.__dict__
    functions = {}
    for function, name in ((conv, f"conv{d}"), (conv_input, f"conv{d}_input"),
                           (conv_weight, f"conv{d}_weight"), (conv_backward, f"conv{d}_backward"),
                           (conv_transpose, f"conv_transpose{d}")):
        function.__name__ = function.__qualname__ = name
        function.__doc__ = (f"numbaconv.{name} over Dask arrays: the input / grad_output a Dask array "
                            "(NumPy data is wrapped), weight and bias NumPy; Dask arrays out "
                            "(nothing runs until they are computed). Blocks run with algo=\"auto\" "
                            "on the CPU: the algo and device arguments below do not apply.\n\n"
                            + in_memory[name].__doc__)
        functions[name] = function
    return functions


_API = {name: function for rank in (1, 2, 3) for name, function in _make_rank(rank).items()}
globals().update(_API)
__all__ = [*_API, "task_threads"]
