"""Vector operations on ``LANES`` consecutive elements, emitted as LLVM vector instructions.

Numba leaves LLVM's SLP vectoriser off, so fixed-length loops over the
lanes of a channels-last row (``for l in range(LANES)``) compile to scalar
operations, and LLVM's loop vectoriser does not turn strided copies into
transposes. These intrinsics emit the vector code themselves; LLVM lowers a
``<LANES x float>`` to as many registers as the target has room for (two
AVX2 registers of float32, one AVX-512 register). Every array argument is
1-d and C-contiguous, of one float dtype; there are no bounds checks: the
caller keeps every ``LANES``-long slice inside its array.

- :func:`add_product_sums`, ``add_product_sums_4``: ``out[o:o+L] += sum over
  t of a[...] * b[...]`` for one or four outputs, the sums held in registers
  (one load and store of ``out`` per output and call, each ``a`` vector
  loaded once for all the outputs);
- ``sliding_sums_5``, ``sliding_sums_7`` (:func:`_sliding_sums`): add_product_sums_4's
  stride-1 case for kernels 5 or 7 wide, on vectors of one register
  (``SLIDING_BYTES``: all 16 lanes a call with AVX-512, half with AVX2):
  the kernel row's weight vectors stay in registers and each input vector
  is loaded once for the four outputs it reaches, so a
  row costs ``4 + KW - 1`` input loads for ``4 KW`` multiply-adds, where
  add_product_sums_4 loads ``5 KW`` vectors; ``sliding_sums_3x8`` and
  ``sliding_sums_5x8`` the same for 3- and 5-wide kernels on
  ``WIDE_SLIDING_OUTPUTS = 8`` outputs (twelve and fourteen registers),
  ``sliding_sums_3`` on four (a 3-wide row's outputs past its eights);
  ``halving_sums_3``, ``_5``, ``_7`` at stride 2, four outputs reading
  ``6 + KW`` input vectors, and ``halving_spreads_*`` their scatter (four
  outputs' products added into ``6 + KW`` vectors of a stride-2 input
  gradient's grid);
- :func:`broadcast_sums`: ``out[o_r:o_r+W] (+)= sum of a[...] * b[...:+W]`` for a tile of
  outputs ``r``, each ``a`` element broadcast to all ``W`` lanes (an input element times a
  vector of output channels' weights), the tile's sums held in registers over four nested
  loops, the innermost through a table of offsets: the register-blocked direct convolution
  of the channels-last algorithm;
- :func:`transpose_lanes`: a ``LANES x LANES`` block from ``LANES`` vectors
  anywhere in one array to ``LANES`` vectors anywhere in another (rows of
  ``LANES`` channel planes to ``LANES`` channels-last positions, or back),
  in blocks of 256-bit vectors, three rounds of shuffles each.
"""
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

LANES = 16
# The widest vector register the host has (AVX-512: 64 bytes, 32 registers; AVX2: 32 bytes, 16),
# for the intrinsics whose vectors are one register each (the sliding and row intrinsics).
_AVX512 = bool(binding.get_host_cpu_features().get("avx512f", False))
VECTOR_BYTES = 64 if _AVX512 else 32


def _float_arrays(*array_types):
    return (all(isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" for t in array_types)
            and len({t.dtype for t in array_types}) == 1 and isinstance(array_types[0].dtype, types.Float))


class _Lanes:
    """Vector loads and stores of ``width`` (default ``LANES``) elements of one array argument."""

    def __init__(self, context, builder, array_type, array):
        self.builder = builder
        self.data = context.make_array(array_type)(context, builder, array).data
        self.element = context.get_value_type(array_type.dtype)
        self.align = array_type.dtype.bitwidth // 8

    def pointer(self, index, width):
        element = self.builder.gep(self.data, [index], inbounds=True)
        return self.builder.bitcast(element, ir.VectorType(self.element, width).as_pointer())

    def load(self, index, width=LANES):
        return self.builder.load(self.pointer(index, width), align=self.align)

    def store(self, value, index, width=LANES):
        self.builder.store(value, self.pointer(index, width), align=self.align)


def _intp(context, builder, signature, args, position):
    return context.cast(builder, args[position], signature.args[position], types.intp)


def _product_sums(outputs):
    """The intrinsic :func:`add_product_sums` for ``outputs`` outputs at once (see there)."""

    @intrinsic
    def product_sums(typingctx, out, out_at, out_step, a, a_at, a_step, a_row_step, b, b_at, b_step, b_row_step,
                     b_out_step, count, rows):
        if not _float_arrays(out, a, b):
            return None

        def codegen(context, builder, signature, args):
            index = lambda position: _intp(context, builder, signature, args, position)  # noqa: E731
            out_lanes, a_lanes, b_lanes = (_Lanes(context, builder, t, args[i]) for t, i in ((out, 0), (a, 3), (b, 7)))
            out_at, out_step, a_at, a_step, a_row_step, b_at, b_step, b_row_step, b_out_step, total, rows = (
                index(i) for i in (1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13))
            zero = ir.Constant(ir.VectorType(out_lanes.element, LANES), None)
            slots = [cgutils.alloca_once_value(builder, zero) for _ in range(outputs)]
            with cgutils.for_range(builder, rows) as row, cgutils.for_range(builder, total) as loop:
                a_row, b_row = builder.mul(row.index, a_row_step), builder.mul(row.index, b_row_step)
                shared = a_lanes.load(builder.add(builder.add(a_at, a_row), builder.mul(loop.index, a_step)))
                b_start = builder.add(builder.add(b_at, b_row), builder.mul(loop.index, b_step))
                for r, slot in enumerate(slots):
                    b_value = b_lanes.load(builder.add(b_start, builder.mul(context.get_constant(types.intp, r), b_out_step)))
                    product = builder.fmul(shared, b_value, flags=("contract",))
                    builder.store(builder.fadd(builder.load(slot), product, flags=("contract",)), slot)
            for r, slot in enumerate(slots):
                at = builder.add(out_at, builder.mul(context.get_constant(types.intp, r), out_step))
                out_lanes.store(builder.fadd(out_lanes.load(at), builder.load(slot), flags=("contract",)), at)
            return context.get_dummy_value()

        return types.none(out, out_at, out_step, a, a_at, a_step, a_row_step, b, b_at, b_step, b_row_step,
                          b_out_step, count, rows), codegen

    return product_sums


add_product_sums = _product_sums(1)
add_product_sums.__doc__ = """``add_product_sums(out, out_at, out_step, a, a_at, a_step, a_row_step, b, b_at, b_step,
b_row_step, b_out_step, count, rows)``: for ``r < R``, ``out[out_at + r out_step:+L] += sum over
i < rows and t < count of a[a_at + i a_row_step + t a_step:+L] * b[b_at + r b_out_step + i
b_row_step + t b_step:+L]``, R = 1 (``add_product_sums_4``: R = 4): a kernel's rows of taps on R
outputs, each output's sum in a register, each ``a`` vector loaded once for all R outputs, then
one add into ``out`` per output."""
REGISTER_OUTPUTS = 4
add_product_sums_4 = _product_sums(REGISTER_OUTPUTS)


# Kernel widths of the sliding_sums intrinsics: each holds a kernel row's weight vectors in registers.
SLIDING_TAPS = (5, 7)
# The width of their vectors: one register (their weights, sums and input vector take 12-14 of
# them: of AVX2's 16, of AVX-512's 32).
SLIDING_BYTES = VECTOR_BYTES


def _row_operands(context, builder, signature, args):
    """The operands of the sliding and spreading intrinsics, ``(a, a_at, weights, weights_at, b,
    b_at, grid_row, rows)``: the three arrays as lanes, the five indices as intp, and a maker of
    intp constants."""
    arrays = tuple(_Lanes(context, builder, signature.args[i], args[i]) for i in (0, 2, 4))
    indices = tuple(_intp(context, builder, signature, args, i) for i in (1, 3, 5, 6, 7))
    return arrays, indices, lambda value: context.get_constant(types.intp, value)


def _kernel_row(builder, weight_lanes, weights_at, grid_at, grid_row, row, taps, width, constant):
    """``(kernel_row, grid_start)`` of kernel row ``row`` in the sliding and spreading intrinsics:
    its ``taps`` weight vectors, loaded (``LANES`` apart, rows ``taps LANES`` apart), and where
    its grid row starts."""
    weights_row = builder.add(weights_at, builder.mul(row, constant(taps * LANES)))
    kernel_row = [weight_lanes.load(builder.add(weights_row, constant(t * LANES)), width) for t in range(taps)]
    return kernel_row, builder.add(grid_at, builder.mul(row, grid_row))


def _sliding_sums(taps, outputs=REGISTER_OUTPUTS, stride=1):
    """The intrinsic ``sliding_sums[taps]``: :func:`add_product_sums_4`'s case of ``stride`` (1 or
    2) and dilation 1 for kernels ``taps`` wide, on vectors of ``SLIDING_BYTES``, for ``outputs``
    outputs a call: input vector ``p`` of a row (``(outputs - 1) stride + taps`` of them) feeds
    output ``r`` through tap ``p - r stride``."""

    @intrinsic
    def sliding_sums(typingctx, out, out_at, weights, weights_at, grid, grid_at, grid_row, rows):
        if not _float_arrays(out, weights, grid):
            return None
        width = SLIDING_BYTES * 8 // out.dtype.bitwidth

        def codegen(context, builder, signature, args):
            (out_lanes, weight_lanes, grid_lanes), (out_at, weights_at, grid_at, grid_row, rows), constant = (
                _row_operands(context, builder, signature, args))
            vector = ir.VectorType(out_lanes.element, width)
            slots = [cgutils.alloca_once_value(builder, ir.Constant(vector, None)) for _ in range(outputs)]
            with cgutils.for_range(builder, rows) as row:
                kernel_row, grid_start = _kernel_row(builder, weight_lanes, weights_at, grid_at, grid_row, row.index,
                                                     taps, width, constant)
                sums = [builder.load(slot) for slot in slots]
                for position in range((outputs - 1) * stride + taps):   # each input vector loaded once
                    value = grid_lanes.load(builder.add(grid_start, constant(position * LANES)), width)
                    for r in range(outputs):
                        if 0 <= position - r * stride < taps:
                            product = builder.fmul(kernel_row[position - r * stride], value, flags=("contract",))
                            sums[r] = builder.fadd(sums[r], product, flags=("contract",))
                for slot, total in zip(slots, sums):
                    builder.store(total, slot)
            for r, slot in enumerate(slots):
                at = builder.add(out_at, constant(r * LANES))
                out_lanes.store(builder.fadd(out_lanes.load(at, width), builder.load(slot), flags=("contract",)),
                                at, width)
            return context.get_dummy_value()

        return types.none(out, out_at, weights, weights_at, grid, grid_at, grid_row, rows), codegen

    return sliding_sums


sliding_sums_5, sliding_sums_7 = (_sliding_sums(taps) for taps in SLIDING_TAPS)
sliding_sums_3 = _sliding_sums(3)   # a 3-wide row's outputs past its groups of eight
# Kernel widths whose rows slide at stride 2 (four outputs a call: EfficientNet's 5x5/2 and
# MobileNet's 3x3/2 depthwise layers).
HALVING_TAPS = (3, 5, 7)
halving_sums_3, halving_sums_5, halving_sums_7 = (_sliding_sums(taps, stride=2) for taps in HALVING_TAPS)


def _halving_spreads(taps, outputs=REGISTER_OUTPUTS):
    """The intrinsic ``halving_spreads[taps]``: the scatter that :func:`_sliding_sums`' stride-2
    sums gather, ``grid[grid_at + row grid_row + p LANES:+W] += sum over r < outputs of
    weights[weights_at + (row KW + p - 2 r) LANES:+W] * sources[sources_at + r LANES:+W]`` for
    every row ``< rows`` and position ``p < 2 (outputs - 1) + taps`` (the taps ``0 <= p - 2 r <
    taps`` only), on vectors of ``SLIDING_BYTES``: a kernel row's weights and the outputs'
    vectors stay in registers, and each grid vector is loaded and stored once for all the outputs
    that reach it (a stride-2 input gradient's products, ``taps + 6`` grid vectors for ``4 taps``
    multiply-adds, where one output at a time loads and stores ``4 taps``)."""

    @intrinsic
    def halving_spreads(typingctx, grid, grid_at, weights, weights_at, sources, sources_at, grid_row, rows):
        if not _float_arrays(grid, weights, sources):
            return None
        width = SLIDING_BYTES * 8 // grid.dtype.bitwidth

        def codegen(context, builder, signature, args):
            (grid_lanes, weight_lanes, source_lanes), (grid_at, weights_at, sources_at, grid_row, rows), constant = (
                _row_operands(context, builder, signature, args))
            values = [source_lanes.load(builder.add(sources_at, constant(r * LANES)), width) for r in range(outputs)]
            with cgutils.for_range(builder, rows) as row:
                kernel_row, grid_start = _kernel_row(builder, weight_lanes, weights_at, grid_at, grid_row, row.index,
                                                     taps, width, constant)
                for position in range(2 * (outputs - 1) + taps):
                    at = builder.add(grid_start, constant(position * LANES))
                    total = grid_lanes.load(at, width)
                    for r in range(outputs):
                        if 0 <= position - 2 * r < taps:
                            product = builder.fmul(kernel_row[position - 2 * r], values[r], flags=("contract",))
                            total = builder.fadd(total, product, flags=("contract",))
                    grid_lanes.store(total, at, width)
            return context.get_dummy_value()

        return types.none(grid, grid_at, weights, weights_at, sources, sources_at, grid_row, rows), codegen

    return halving_spreads


halving_spreads_3, halving_spreads_5, halving_spreads_7 = (_halving_spreads(taps) for taps in HALVING_TAPS)
WIDE_SLIDING_OUTPUTS = 8   # outputs a call of the rows narrow enough to hold eight sums beside their weights
sliding_sums_3x8, sliding_sums_5x8 = (_sliding_sums(taps, WIDE_SLIDING_OUTPUTS) for taps in (3, 5))

# Bytes of accumulators a broadcast_sums tile holds in registers: twelve 256-bit registers, which
# leaves an AVX2 core's other four for the weight vector and the broadcast element. And at most
# TILE_MAX_OUTPUTS outputs: each has its own address in a register (of the 16 general ones).
TILE_BYTES = 384
TILE_MAX_OUTPUTS = 8


def tile_outputs(width, itemsize):
    """Outputs in one :func:`broadcast_sums` tile of ``width`` lanes of ``itemsize`` bytes."""
    return min(TILE_BYTES // (width * itemsize), TILE_MAX_OUTPUTS)


def _splat(builder, value, vector):
    """``value`` in every lane of a ``vector`` (an ``ir.VectorType`` of its type)."""
    single = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(single, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count))


def _broadcast_sums(width, accumulate, outputs=None):
    """``broadcast_sums(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops,
    a_table)`` for ``width`` lanes: for each output ``r`` of a tile of ``R = outputs`` (default
    ``tile_outputs(width, itemsize)``), ``out[out_at + out_offsets[first + r]:+W]`` ``= sum over i0, i1, i2, i3 of
    a[a_at + a_offsets[first + r] + i0 a0 + i1 a1 + i2 a2 + a_table[i3]] * b[b_at + i0 b0 + i1
    b1 + i2 b2 + i3 b3:+W]`` (``+=`` where ``accumulate``), ``loops = (n0, a0, b0, n1, a1, b1,
    n2, a2, b2, n3, b3)``: four nested loops, outermost first, each with its count and its
    steps through ``a`` and ``b``, the innermost reading its steps through ``a`` from
    ``a_table`` (so it can run over taps and channels that are not evenly spaced). Each ``a``
    element is broadcast to the ``W`` lanes; each ``b`` vector is loaded once for the tile;
    the tile's sums stay in registers until the end. FLOPs ``2 R W n0 n1 n2 n3``; loads per
    step of the innermost loop: ``R`` elements, one table entry and one ``W``-vector, for ``R
    W / V`` vector FMAs (``V`` lanes a register)."""

    @intrinsic
    def broadcast_sums(typingctx, out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table):
        index_arrays = (out_offsets, a_offsets, a_table)
        if not (_float_arrays(out, a, b) and isinstance(loops, types.BaseTuple) and len(loops) == 11
                and all(isinstance(t, types.Integer) for t in loops)
                and all(isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.int64 for t in index_arrays)):
            return None
        count = outputs or tile_outputs(width, out.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            index = lambda position: _intp(context, builder, signature, args, position)  # noqa: E731
            out_lanes, a_lanes, b_lanes = (_Lanes(context, builder, t, args[i]) for t, i in ((out, 0), (a, 3), (b, 7)))
            out_at, a_at, first, b_at = (index(i) for i in (1, 4, 6, 8))
            plan = [context.cast(builder, builder.extract_value(args[9], i), loops[i], types.intp) for i in range(11)]
            table = context.make_array(a_table)(context, builder, args[10]).data
            out_starts = _offsets(context, builder, out_offsets, args[2], first, out_at, count)
            a_starts = _offsets(context, builder, a_offsets, args[5], first, a_at, count)
            vector = ir.VectorType(out_lanes.element, width)
            slots = [cgutils.alloca_once_value(builder, ir.Constant(vector, None)) for _ in range(count)]

            def multiply_add(a_offset, b_offset):
                b_value = b_lanes.load(b_offset, width)
                for start, slot in zip(a_starts, slots):
                    element = builder.load(builder.gep(a_lanes.data, [builder.add(start, a_offset)], inbounds=True))
                    product = builder.fmul(_splat(builder, element, vector), b_value, flags=("contract",))
                    builder.store(builder.fadd(builder.load(slot), product, flags=("contract",)), slot)

            def nest(level, a_offset, b_offset):
                if level == 3:
                    count, b_stride = plan[9:11]
                else:
                    count, a_stride, b_stride = plan[3 * level:3 * level + 3]
                with cgutils.for_range(builder, count) as loop:
                    if level == 3:
                        step = builder.load(builder.gep(table, [loop.index], inbounds=True))
                    else:
                        step = builder.mul(loop.index, a_stride)
                    a_here = builder.add(a_offset, step)
                    b_here = builder.add(b_offset, builder.mul(loop.index, b_stride))
                    if level < 3:
                        nest(level + 1, a_here, b_here)
                    else:
                        multiply_add(a_here, b_here)

            nest(0, context.get_constant(types.intp, 0), b_at)
            for at, slot in zip(out_starts, slots):
                value = builder.load(slot)
                if accumulate:
                    value = builder.fadd(out_lanes.load(at, width), value, flags=("contract",))
                out_lanes.store(value, at, width)
            return context.get_dummy_value()

        return types.none(out, out_at, out_offsets, a, a_at, a_offsets, first, b, b_at, loops, a_table), codegen

    return broadcast_sums


broadcast_sums_8, broadcast_sums_16 = _broadcast_sums(8, False), _broadcast_sums(16, False)
add_broadcast_sums_8, add_broadcast_sums_16 = _broadcast_sums(8, True), _broadcast_sums(16, True)
# Wider tiles for hosts with 32 vector registers (AVX-512), float32: lanes -> outputs a tile, twelve
# 512-bit registers of sums where TILE_BYTES holds six. At 32 lanes each broadcast element feeds two
# vector FMAs, at 16 lanes over twelve outputs each ``b`` vector feeds twelve: fewer loads a FMA.
WIDE_TILE_OUTPUTS = {32: 6, 16: 12}
broadcast_sums_32x6, broadcast_sums_16x12 = (_broadcast_sums(width, False, outputs)
                                             for width, outputs in WIDE_TILE_OUTPUTS.items())


# The transpose of a V x V block of 256-bit vectors (V = 8 float32 or 4 float64) in the
# shuffles x86 runs in one instruction each: interleave neighbouring rows' elements (unpack),
# then pairs of elements (shufps; float32 only), then 128-bit halves (vperm2f128). Each stage
# lists (first row, second row, mask) per output row, the rows numbered as the stage's inputs.
_UNPACK = {8: ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]), 4: ([0, 4, 2, 6], [1, 5, 3, 7])}
_PAIRS = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
_HALVES = {8: ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]), 4: ([0, 1, 4, 5], [2, 3, 6, 7])}


def _block_stages(width):
    low, high = _UNPACK[width]
    stages = [[(2 * (i // 2), 2 * (i // 2) + 1, (low, high)[i % 2]) for i in range(width)]]
    if width == 8:
        stages.append([(4 * q + h, 4 * q + 2 + h, _PAIRS[i]) for q in range(2) for h in range(2) for i in range(2)])
    half = width // 2
    stages.append([(i % half, half + i % half, _HALVES[width][i // half]) for i in range(width)])
    return stages


def _block_transpose(builder, rows):
    """The transpose of ``rows``, ``V`` vectors of ``V`` elements (the stages of :func:`_block_stages`)."""
    for stage in _block_stages(len(rows)):
        rows = [builder.shuffle_vector(rows[first], rows[second],
                                       ir.Constant(ir.VectorType(ir.IntType(32), len(mask)), mask))
                for first, second, mask in stage]
    return rows


def _offsets(context, builder, offsets_type, offsets, first, at, count=LANES):
    """``offsets[first + i] + at`` for ``i < count`` (``offsets`` a 1-d int64 array)."""
    array = context.make_array(offsets_type)(context, builder, offsets)
    return [builder.add(builder.load(builder.gep(array.data, [builder.add(first, context.get_constant(types.intp, i))])),
                        at) for i in range(count)]


@intrinsic
def transpose_lanes(typingctx, dst, dst_offsets, dst_at, src, src_offsets, src_at):
    """``dst[dst_offsets[i] + dst_at + k] = src[src_offsets[k] + src_at + i]`` for ``i, k < LANES``:
    the LANES vectors at ``src_offsets`` (say, one row per channel) become LANES vectors at
    ``dst_offsets`` (one per position, its lanes the channels), or the other way round."""
    offset_types = (dst_offsets, src_offsets)
    if not (_float_arrays(dst, src) and all(isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.int64
                                            for t in offset_types)):
        return None

    def codegen(context, builder, signature, args):
        dst_lanes, src_lanes = _Lanes(context, builder, dst, args[0]), _Lanes(context, builder, src, args[3])
        zero = context.get_constant(types.intp, 0)
        sources = _offsets(context, builder, src_offsets, args[4], zero, _intp(context, builder, signature, args, 5))
        targets = _offsets(context, builder, dst_offsets, args[1], zero, _intp(context, builder, signature, args, 2))
        width = 256 // dst.dtype.bitwidth
        step = lambda start, count: builder.add(start, context.get_constant(types.intp, count))  # noqa: E731
        for row_block in range(0, LANES, width):
            for column_block in range(0, LANES, width):
                block = [src_lanes.load(step(sources[row_block + r], column_block), width) for r in range(width)]
                for c, vector in enumerate(_block_transpose(builder, block)):
                    dst_lanes.store(vector, step(targets[column_block + c], row_block), width)
        return context.get_dummy_value()

    return types.none(dst, dst_offsets, dst_at, src, src_offsets, src_at), codegen


# The row intrinsics' register tiles, (rows of accumulators, accumulators a row), each a vector of
# VECTOR_BYTES: about two thirds of the registers hold sums, the rest the operands of one step.
ROW_TILE = (4, 5) if _AVX512 else (2, 4)


def vector_lanes(itemsize):
    """Elements of ``itemsize`` bytes in one vector of the row intrinsics."""
    return VECTOR_BYTES // itemsize


def _lane_mask(builder, width, valid, first):
    """The ``width``-lane mask of lanes ``first + lane < valid`` (``valid``, ``first`` intp values;
    compared as 32-bit lanes, one instruction a mask)."""
    count = ir.VectorType(ir.IntType(32), width)
    limit = _splat(builder, builder.trunc(builder.sub(valid, first), ir.IntType(32)), count)
    return builder.icmp_signed("<", ir.Constant(count, list(range(width))), limit)


def _masked(builder, lanes, index, width, mask, value=None):
    """``lanes``' vector at ``index``, loaded (zeros in the lanes ``mask`` leaves out) or, with
    ``value``, stored to the lanes ``mask`` keeps (llvm.masked.load / llvm.masked.store)."""
    vector = ir.VectorType(lanes.element, width)
    suffix = f"v{width}{'f32' if lanes.element == ir.FloatType() else 'f64'}.p0"
    align = ir.Constant(ir.IntType(32), lanes.align)
    pointer, mask_type = lanes.pointer(index, width), ir.VectorType(ir.IntType(1), width)
    if value is None:
        load = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            vector, [vector.as_pointer(), ir.IntType(32), mask_type, vector]), f"llvm.masked.load.{suffix}")
        return builder.call(load, [pointer, align, mask, ir.Constant(vector, None)])
    store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [vector, vector.as_pointer(), ir.IntType(32), mask_type]), f"llvm.masked.store.{suffix}")
    builder.call(store, [value, pointer, align, mask])


def _row_arguments(float_arrays, index_arrays):
    """Whether the row intrinsics' arguments have their types: 1-d C-contiguous arrays of one float
    dtype, and 1-d int64 index arrays."""
    return _float_arrays(*float_arrays) and all(isinstance(t, types.Array) and t.ndim == 1 and t.dtype == types.int64
                                                for t in index_arrays)


def _register_tile(builder, out_lanes, rows, columns):
    """``(width, vector type, slots)`` of a row intrinsic: ``rows x columns`` zeroed vector sums of
    ``out_lanes``' dtype, one register each."""
    width = vector_lanes(4 if out_lanes.element == ir.FloatType() else 8)
    vector = ir.VectorType(out_lanes.element, width)
    slots = [[cgutils.alloca_once_value(builder, ir.Constant(vector, None)) for _ in range(columns)]
             for _ in range(rows)]
    return width, vector, slots


@intrinsic
def channel_row_sums(typingctx, out, out_offsets, vectors, first, a, a_at, a_table, b, b_at, taps):
    """``channel_row_sums(out, out_offsets, vectors, first, a, a_at, a_table, b, b_at, taps)``: ``I``
    output channels times ``V`` vectors of ``L`` outputs, ``(I, V) = ROW_TILE``, ``L =
    vector_lanes``, each vector anywhere: vector ``v`` is row ``first + v`` of ``vectors`` (int64,
    three a row, flat: its outputs' offset, its inputs' offset, how many of its lanes are outputs).
    For ``i < I``, ``v < V`` and lane ``e`` below the vector's count, ``out[out_offsets[i] + out_v +
    e] = sum over t < taps of b[b_at + t I + i] * a[a_at + a_table[t] + in_v + e]``. The ``I V``
    sums stay in registers over all the taps; each step loads ``V`` vectors of ``a`` and broadcasts
    ``I`` elements of ``b`` for ``I V`` vector FMAs. Lanes past a vector's count are neither loaded
    nor stored. FLOPs ``2 I L V taps``."""
    if not _row_arguments((out, a, b), (out_offsets, vectors, a_table)):
        return None

    def codegen(context, builder, signature, args):
        index = lambda position: _intp(context, builder, signature, args, position)  # noqa: E731
        constant = lambda value: context.get_constant(types.intp, value)  # noqa: E731
        out_lanes, a_lanes, b_lanes = (_Lanes(context, builder, t, args[i]) for t, i in ((out, 0), (a, 4), (b, 7)))
        first, a_at, b_at, taps = (index(i) for i in (3, 5, 8, 9))
        rows, count = ROW_TILE
        width, vector, slots = _register_tile(builder, out_lanes, rows, count)
        fields = _offsets(context, builder, vectors, args[2], builder.mul(first, constant(3)), constant(0), 3 * count)
        out_at, in_at = fields[0::3], fields[1::3]
        masks = [_lane_mask(builder, width, valid, constant(0)) for valid in fields[2::3]]
        table = context.make_array(a_table)(context, builder, args[6]).data
        with cgutils.for_range(builder, taps) as loop:
            at = builder.add(a_at, builder.load(builder.gep(table, [loop.index], inbounds=True)))
            values = [_masked(builder, a_lanes, builder.add(at, in_at[v]), width, masks[v]) for v in range(count)]
            weights_at = builder.add(b_at, builder.mul(loop.index, constant(rows)))
            for i in range(rows):
                element = builder.load(builder.gep(b_lanes.data, [builder.add(weights_at, constant(i))], inbounds=True))
                spread = _splat(builder, element, vector)
                for v in range(count):
                    product = builder.fmul(spread, values[v], flags=("contract",))
                    builder.store(builder.fadd(builder.load(slots[i][v]), product, flags=("contract",)), slots[i][v])
        for i, start in enumerate(_offsets(context, builder, out_offsets, args[1], constant(0), constant(0), rows)):
            for v in range(count):
                _masked(builder, out_lanes, builder.add(start, out_at[v]), width, masks[v], builder.load(slots[i][v]))
        return context.get_dummy_value()

    return types.none(out, out_offsets, vectors, first, a, a_at, a_table, b, b_at, taps), codegen


@intrinsic
def outer_row_sums(typingctx, out, a, a_offsets, b, b_offsets, loops, length):
    """``outer_row_sums(out, a, a_offsets, b, b_offsets, loops, length)``: for ``i < I`` and ``j <
    J``, ``(I, J) = ROW_TILE``, the ``L``-lane vector ``out[(i J + j) L:+L]`` of sums over ``p <
    planes``, ``r < rows`` and ``e < length`` (``e`` in lane ``e mod L``) of ``a[a_offsets[i] + p
    a_plane + r a_row + e] * b[b_offsets[j] + p b_plane + r b_row + e]``, ``loops = (planes,
    a_plane, b_plane, rows, a_row, b_row)``: ``I x J`` dot products of rows at once, their
    vectors in registers; each step loads ``I + J`` vectors for ``I J`` vector FMAs. A row's last
    partial vector is loaded masked (no element past ``length`` is read). FLOPs ``2 I J planes
    rows length``."""
    if not (_row_arguments((out, a, b), (a_offsets, b_offsets)) and isinstance(loops, types.BaseTuple)
            and len(loops) == 6 and all(isinstance(t, types.Integer) for t in loops)):
        return None

    def codegen(context, builder, signature, args):
        constant = lambda value: context.get_constant(types.intp, value)  # noqa: E731
        out_lanes, a_lanes, b_lanes = (_Lanes(context, builder, t, args[i]) for t, i in ((out, 0), (a, 1), (b, 3)))
        planes, a_plane, b_plane, count, a_row, b_row = (
            context.cast(builder, builder.extract_value(args[5], i), loops[i], types.intp) for i in range(6))
        length = _intp(context, builder, signature, args, 6)
        left, right = ROW_TILE
        width, vector, slots = _register_tile(builder, out_lanes, left, right)
        zero = constant(0)
        a_starts = _offsets(context, builder, a_offsets, args[2], zero, zero, left)
        b_starts = _offsets(context, builder, b_offsets, args[4], zero, zero, right)
        full = builder.mul(builder.sdiv(length, constant(width)), constant(width))
        tail_mask = _lane_mask(builder, width, length, full)

        def multiply_add(load, a_here, b_here):
            a_values = [load(a_lanes, builder.add(start, a_here)) for start in a_starts]
            b_values = [load(b_lanes, builder.add(start, b_here)) for start in b_starts]
            for i in range(left):
                for j in range(right):
                    product = builder.fmul(a_values[i], b_values[j], flags=("contract",))
                    builder.store(builder.fadd(builder.load(slots[i][j]), product, flags=("contract",)), slots[i][j])

        with cgutils.for_range(builder, planes) as plane, cgutils.for_range(builder, count) as row:
            a_here = builder.add(builder.mul(plane.index, a_plane), builder.mul(row.index, a_row))
            b_here = builder.add(builder.mul(plane.index, b_plane), builder.mul(row.index, b_row))
            with cgutils.for_range_slice(builder, zero, full, constant(width)) as (step, _):
                multiply_add(lambda lanes, at: lanes.load(builder.add(at, step), width), a_here, b_here)
            with builder.if_then(builder.icmp_signed("<", full, length)):
                multiply_add(lambda lanes, at: _masked(builder, lanes, builder.add(at, full), width, tail_mask),
                             a_here, b_here)
        for i in range(left):
            for j in range(right):
                out_lanes.store(builder.load(slots[i][j]), constant((i * right + j) * width), width)
        return context.get_dummy_value()

    return types.none(out, a, a_offsets, b, b_offsets, loops, length), codegen
