"""polyphase's parts alone: its two register-tile intrinsics, its phase planes, its row chunks and
the layers ``auto`` gives it (its passes against the reference: tests/test_kernels.py's grid)."""
import numpy as np
import pytest
from numba import njit

from numbaconv import dispatch, reference
from numbaconv.algorithm import read_only
from numbaconv.cpu import polyphase
from numbaconv.cpu.simd import ROW_TILE, channel_row_sums, outer_row_sums, vector_lanes
from numbaconv.spec import ConvSpec

from conftest import WIDE_WEIGHT, assert_close, poisoned, random_array


@njit
def _channel_row_sums(out, out_offsets, vectors, first, a, a_at, a_table, b, b_at, taps):
    channel_row_sums(out, out_offsets, vectors, first, a, a_at, a_table, b, b_at, taps)


@njit
def _outer_row_sums(out, a, a_offsets, b, b_offsets, loops, length):
    outer_row_sums(out, a, a_offsets, b, b_offsets, loops, length)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_row_sums_writes_each_vector_up_to_its_count(rng, dtype):
    """Vectors anywhere, one partial and one empty: every counted lane holds its sum, no other
    element of the output changes, and the inputs past a vector's count (NaN here) are never read."""
    rows, count = ROW_TILE
    lanes = vector_lanes(np.dtype(dtype).itemsize)
    taps = 7
    a = random_array(rng, 40 * lanes, dtype)
    b = random_array(rng, taps * rows, dtype)
    table = rng.integers(0, 20 * lanes, taps).astype(np.int64)
    counts = [lanes, lanes - 3, 0] + [lanes] * (count - 3)
    ins = rng.integers(0, 10 * lanes, count)
    a[np.array([i + c for i, c in zip(ins, counts) if c < lanes]) + table.max()] = np.nan   # past a count
    vectors = np.array([(v * lanes * 2 + 1, i, c) for v, (i, c) in enumerate(zip(ins, counts))], np.int64)
    out_offsets = (np.arange(rows) * count * lanes * 2 + 3).astype(np.int64)
    out = poisoned(rows * count * lanes * 2 + 8, dtype)
    expected = out.copy()
    for i in range(rows):
        for (out_at, in_at, valid) in vectors:
            for e in range(valid):
                expected[out_offsets[i] + out_at + e] = sum(
                    b[t * rows + i] * float(a[5 + table[t] + in_at + e]) for t in range(taps))
    _channel_row_sums(out, out_offsets, vectors.reshape(-1), 0, a, 5, table, b, 0, taps)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, equal_nan=True)


@pytest.mark.parametrize("length", [1, 16, 37])
def test_outer_row_sums_reads_no_element_past_a_row(rng, length):
    """``I x J`` dot products over 2 planes of 3 rows of ``length`` (a partial last vector): the
    lanes add up to the dot products, with NaN right after each row never read."""
    left, right = ROW_TILE
    lanes = vector_lanes(8)
    a_row, b_row, a_plane, b_plane = 50, 60, 1000, 900
    a, b = random_array(rng, 2 * a_plane + 12 * a_row), random_array(rng, 2 * b_plane + 12 * b_row)
    a_offsets = (np.arange(left) * 2 * a_row).astype(np.int64)
    b_offsets = (np.arange(right) * b_row + 1).astype(np.int64)
    rows = [(p, r) for p in range(2) for r in range(3)]
    for start in list(a_offsets):
        a[[start + p * a_plane + r * a_row + length for p, r in rows]] = np.nan
    for start in list(b_offsets):
        b[[start + p * b_plane + r * b_row + length for p, r in rows]] = np.nan
    out = poisoned(left * right * lanes, np.float64)
    _outer_row_sums(out, a, a_offsets, b, b_offsets, (2, a_plane, b_plane, 3, a_row, b_row), length)
    sums = out.reshape(left, right, lanes).sum(axis=2)
    for i in range(left):
        for j in range(right):
            expected = sum(a[a_offsets[i] + p * a_plane + r * a_row:][:length]
                           @ b[b_offsets[j] + p * b_plane + r * b_row:][:length] for p, r in rows)
            assert sums[i, j] == pytest.approx(expected, rel=1e-12)


def _spec(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    return ConvSpec.create(x_shape, w_shape, stride, padding, dilation, groups).as_3d()


@pytest.mark.parametrize("threaded", [False, True])
def test_each_tap_reads_its_input_from_the_phase_planes(rng, monkeypatch, threaded):
    """Stride 2 with dilation 3 and padding: for every tap and output, the planes hold the input the
    tap reads there (zero in the padding), at the tap's offset plus the output's row and column;
    the planes copied by NumPy (below THREADED_COPY_MIN inputs) or by the threads."""
    monkeypatch.setattr(polyphase, "THREADED_COPY_MIN", 0 if threaded else 1 << 30)
    spec = _spec((1, 2, 13, 16), (4, 2, 3, 3), stride=(2, 3), padding=(2, 4), dilation=(3, 2))
    x = random_array(rng, spec.x_shape)
    phases, _ = polyphase._phase_planes(spec, read_only(x))   # read-only, as the engine passes it
    (_, plane_h, plane_w), taps, _ = polyphase._layout(spec)
    padded = np.pad(x[0], [(0, 0), (0, 0)] + [(lo, hi) for lo, hi in zip(spec.pad_lo[1:], spec.pad_hi[1:])])
    kernel_h, kernel_w = spec.kernel_size[1:]
    for c in range(2):
        for th in range(kernel_h):
            for tw in range(kernel_w):
                at = taps[(c * kernel_h + th) * kernel_w + tw]
                for oh in range(spec.out_size[1]):
                    for ow in range(spec.out_size[2]):
                        expected = padded[c, 0, oh * spec.stride[1] + th * spec.dilation[1],
                                          ow * spec.stride[2] + tw * spec.dilation[2]]
                        assert phases[at + oh * plane_w + ow] == expected


@pytest.mark.parametrize("w_shape, groups", [((9, 3, 3, 3), 1), ((12, 2, 3, 3), 4), ((3, 5, 1, 7), 1)])
def test_weights_packed_by_numpy_and_by_the_threads_alike(rng, monkeypatch, w_shape, groups):
    """Below and from THREADED_COPY_MIN: each block of ROW_TILE[0] output channels of a group,
    tap by tap, its last block filled up with the group's last channel."""
    spec = _spec((2, w_shape[1] * groups, 8, 9), w_shape, groups=groups)
    w = read_only(random_array(rng, w_shape))
    packed = []
    for threshold in (1 << 30, 0):
        monkeypatch.setattr(polyphase, "THREADED_COPY_MIN", threshold)
        packed.append(polyphase._packed_weights(spec, w).copy())
    rows, group_out = ROW_TILE[0], w_shape[0] // groups
    grouped = w.reshape(groups, group_out, -1)
    expected = np.empty((groups, -(-group_out // rows), grouped.shape[2], rows), w.dtype)
    for g, block, tap, i in np.ndindex(expected.shape):
        expected[g, block, tap, i] = grouped[g, min(block * rows + i, group_out - 1), tap]
    np.testing.assert_array_equal(packed[0], expected)
    np.testing.assert_array_equal(packed[1], expected)


@pytest.mark.parametrize("x_shape, w_shape, chunk_outputs", [
    ((2, 3, 11, 14), (9, 3, 3, 3), 5),            # pieces of one row
    ((2, 3, 11, 14), (9, 3, 3, 3), 24),           # 3 rows of 7
    ((5, 3, 11, 14), (9, 3, 3, 3), 100),          # 2 samples' 6 x 7 planes
    ((2, 3, 9, 11, 14), (9, 3, 2, 3, 3), 100),    # 2 depth slices' 6 x 7 planes
])
def test_weight_gradient_in_chunks_of_rows_planes_and_pieces_of_rows(rng, monkeypatch, x_shape, w_shape,
                                                                      chunk_outputs):
    """Every way a chunk is cut: the float64 weight gradient equals the reference's, the poisoned
    output all written."""
    monkeypatch.setattr(polyphase, "CHUNK_OUTPUTS", chunk_outputs)
    polyphase._chunks.cache_clear()
    spec = _spec(x_shape, w_shape, stride=2, padding=1)
    if chunk_outputs == 100:
        assert polyphase._chunks(spec, 1)[:, 5].max() == 2
    x, grad_y = random_array(rng, spec.x_shape), random_array(rng, spec.y_shape)
    grad_w = poisoned(spec.w_shape, np.float64)
    polyphase.backward_weight(spec, read_only(x), read_only(grad_y), grad_w)   # as the engine passes them
    polyphase._chunks.cache_clear()
    expected = reference.conv3d_weight(x, spec.w_shape, grad_y, spec.stride, tuple(zip(spec.pad_lo, spec.pad_hi)))
    assert_close(grad_w, expected, np.float64, "weight gradient")


@pytest.mark.parametrize("x_shape, w_shape, options, forward, weight", [
    ((4, 3, 64, 64), (32, 3, 3, 3), dict(stride=2, padding=1), "polyphase", "polyphase"),   # reduction 27
    ((2, 1, 64, 64), (32, 1, 3, 3), dict(padding=1), "polyphase", "polyphase"),             # stride 1, one channel
    ((2, 1, 4000), (64, 1, 10), dict(stride=5), "polyphase", "polyphase"),                  # audio's first layer
    ((2, 3, 64, 64), (64, 3, 7, 7), dict(stride=2, padding=3), "polyphase", "polyphase"),   # reduction 147
    ((1, 3, 8, 32, 32), (16, 3, 3, 7, 7), dict(stride=(1, 2, 2)), "channels_last", "polyphase"),   # 441
    ((2, 5, 64, 64), (32, 5, 3, 3), dict(stride=2, padding=1), "polyphase", "polyphase"),    # 5: rule 2a
    ((2, 3, 64, 64), (4, 3, 3, 3), dict(stride=2, padding=1), "im2col", "im2col"),           # 4 outputs
    ((2, 3, 64, 64), (32, 3, 1, 1), dict(stride=2), "polyphase", "polyphase"),               # one tap, strided
    ((2, 32, 4000), (64, 32, 9), dict(stride=2, padding=4), "polyphase", "polyphase"),       # 32 channels
    ((2, 33, 4000), (64, 33, 9), dict(stride=2, padding=4), "channels_last", WIDE_WEIGHT),   # 33: rules 2b, 2c
    ((2, 16, 64, 64), (64, 16, 1, 1), dict(), "im2col", "im2col"),                           # pointwise
])
def test_auto_gives_it_stems_and_narrow_layers(x_shape, w_shape, options, forward, weight):
    """Stems (at most 4 input channels) by rule 0c, other layers of at most 32 input channels a
    group that im2col would run with columns by rule 2a; the input gradient only at stride 1 (these
    are strided or pointwise: test_auto_runs_stride_one_input_gradients_as_the_correlation)."""
    assert dispatch.STEM_MAX_CHANNELS == 4 and dispatch.POLYPHASE_MIN_GROUP_OUTPUTS == 8
    assert dispatch.POLYPHASE_MAX_GROUP_CHANNELS == 32
    assert dispatch.CHANNELS_LAST_STEM_MIN_REDUCTION == 256
    spec = ConvSpec.create(x_shape, w_shape, **options).as_3d()
    picks = [dispatch.choose("cpu", "auto", spec, p).__name__.rsplit(".", 1)[1] for p in ("forward", "weight")]
    assert picks == [forward, weight]
    assert dispatch.choose("cpu", "auto", spec, "input").__name__.rsplit(".", 1)[1] != "polyphase"


@pytest.mark.parametrize("x_shape, w_shape, options, chosen", [
    ((64, 20, 14, 14), (20, 20, 5, 5), dict(), "polyphase"),                        # LeNet-like: 20 filters
    ((4, 256, 28, 28), (256, 8, 3, 3), dict(padding=1, groups=32), "polyphase"),     # 8 filters a group (0b)
    ((4, 128, 56, 56), (128, 4, 3, 3), dict(padding=1, groups=32), "planar"),        # 4 input channels a group
    ((2, 64, 40, 40), (33, 64, 5, 5), dict(padding=2), "im2col"),                    # 33 filters
    ((2, 20, 28, 28), (20, 20, 5, 5), dict(stride=2, padding=2), "im2col"),          # strided
])
def test_auto_runs_stride_one_input_gradients_as_the_correlation(x_shape, w_shape, options, chosen):
    """The stride-1 input gradient by polyphase where the forward of its correlation (grad_y with the
    kernel turned, its filters the input channels) is a polyphase forward by rules 0b and 2a."""
    spec = ConvSpec.create(x_shape, w_shape, **options).as_3d()
    assert dispatch.choose("cpu", "auto", spec, "input").__name__.rsplit(".", 1)[1] == chosen
