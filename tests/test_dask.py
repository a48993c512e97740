"""numbaconv.dask on a real distributed cluster (2 worker processes, 1 thread each): every
function equals the in-memory numbaconv result, whatever the chunks; arguments are checked when
the graph is built; each block's Numba threads share the host's cores."""
import dataclasses
import re

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason='Dask is not installed: pip install -e ".[dask]"')
distributed = pytest.importorskip("distributed", reason='distributed is not installed: pip install -e ".[dask]"')
import dask  # noqa: E402
import numba  # noqa: E402

import numbaconv as nc  # noqa: E402
import numbaconv.dask as ncd  # noqa: E402
from numbaconv.spec import ConvSpec, transpose_output_size  # noqa: E402

RESULT_TOLERANCE = 1e-6    # float32, norm-relative: outputs and input gradients
WEIGHT_TOLERANCE = 1e-5    # weight and bias gradients (sums over blocks in another order)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        yield client


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    x_shape: tuple
    w_shape: tuple
    stride: object
    padding: object
    dilation: object
    groups: int
    x_chunks: tuple           # the input's chunks
    grad_chunks: tuple        # the output gradient's spatial chunks (batch and channels: one chunk)
    output_padding: object = None   # conv_transpose's; None: the one that gives back x's size

    def __str__(self):
        return self.name


CASES = [
    Case("1d-same-odd-chunks", (3, 2, 23), (4, 2, 3), 1, "same", 1, 1,
         ((2, 1), 2, (5, 7, 1, 10)), ((9, 3, 11),)),
    Case("1d-stride2-dilated-asymmetric-tiny-chunks", (2, 2, 29), (3, 2, 3), 2, ((3, 1),), 2, 1,
         (2, 2, (1,) * 29), ((2, 1, 3, 1, 2, 1, 3, 2),)),
    Case("1d-stride-past-kernel-pad-past-kernel", (2, 3, 19), (2, 3, 1), 3, ((2, 3),), 1, 1,
         (2, 3, (4, 1, 2, 12)), ((1, 2, 1, 4),)),
    Case("1d-dilation-past-stride-output-padding", (1, 2, 11), (3, 2, 3), 1, 0, 3, 1,
         (1, 2, (3, 3, 5)), ((2, 3),), output_padding=2),
    Case("2d-same", (2, 3, 13, 11), (4, 3, 3, 3), 1, "same", 1, 1,
         ((1, 1), 3, (4, 5, 4), (3, 3, 5)), ((6, 7), (2, 9))),
    Case("2d-same-stride2-groups", (2, 4, 15, 12), (4, 2, 3, 2), 2, "same", 1, 2,
         (2, 4, (5, 5, 5), (7, 5)), ((3, 5), (2, 2, 2))),
    Case("2d-asymmetric-dilated-chunks-under-reach", (1, 2, 16, 14), (3, 2, 3, 2), 1,
         ((2, 0), (1, 3)), (2, 3), 1, (1, 2, (1, 2, 3, 1, 9), (2,) * 7), ((1,) * 14, (5, 2, 8))),
    Case("2d-depthwise-stride2-valid", (2, 3, 17, 9), (3, 1, 5, 3), 2, 0, 1, 3,
         ((1, 1), 3, (3, 7, 7), (4, 5)), ((1, 5, 1), (2, 2))),
    Case("3d-same", (1, 2, 9, 8, 7), (3, 2, 3, 3, 3), 1, "same", 1, 1,
         (1, 2, (3, 3, 3), (4, 4), (2, 5)), ((5, 4), (8,), (3, 4))),
    Case("3d-stride2-asymmetric-dilated-groups", (2, 2, 11, 9, 10), (2, 1, 3, 2, 3), (2, 1, 2),
         ((1, 2), (0, 1), (2, 0)), (1, 2, 1), 2, (2, 2, (4, 7), (2, 3, 4), (5, 5)), ((3, 3), (4, 4), (2, 3))),
]


def _relative_error(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), np.finfo(np.float64).tiny)


def _read_only(array):
    array.flags.writeable = False
    return array


def _operands(case, rng):
    """``(spec, x, w, bias, grad_y)``: random float32, read-only."""
    spec = ConvSpec.create(case.x_shape, case.w_shape, case.stride, case.padding, case.dilation,
                           case.groups)
    def rand(*shape):
        return _read_only(rng.standard_normal(shape).astype(np.float32))
    return (spec, rand(*spec.x_shape), rand(*spec.w_shape), rand(spec.out_channels),
            rand(*spec.y_shape))


def _transpose_arguments(case, spec):
    """``conv_transpose``'s padding pairs and output padding for the case (numeric padding only)."""
    padding = tuple(zip(spec.pad_lo, spec.pad_hi))
    if case.output_padding is not None:
        return padding, case.output_padding
    size = transpose_output_size(spec.out_size, spec.kernel_size, spec.stride, spec.pad_lo,
                                 spec.pad_hi, spec.dilation, (0,) * spec.rank)
    return padding, tuple(n - m for n, m in zip(spec.in_size, size))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_function_equals_the_in_memory_result(client, case, rng):
    spec, x, w, bias, grad_y = _operands(case, rng)
    rank, copies = spec.rank, [a.copy() for a in (x, w, bias, grad_y)]
    arguments = (case.stride, case.padding, case.dilation, case.groups)
    transpose_padding, output_padding = _transpose_arguments(case, spec)
    transpose_bias = _read_only(rng.standard_normal(spec.in_channels).astype(np.float32))
    transpose = (transpose_padding, output_padding, case.groups, case.dilation)

    def calls(module, x, grad_y):
        function = {name: getattr(module, name.format(rank)) for name in (
            "conv{}d", "conv{}d_input", "conv{}d_weight", "conv{}d_backward", "conv_transpose{}d")}
        grad_x, grad_w, grad_b = function["conv{}d_backward"](grad_y, x, w, *arguments)
        return {"conv": function["conv{}d"](x, w, bias, *arguments),
                "input": function["conv{}d_input"](spec.x_shape, w, grad_y, *arguments),
                "weight": function["conv{}d_weight"](x, spec.w_shape, grad_y, *arguments),
                "backward input": grad_x, "backward weight": grad_w, "backward bias": grad_b,
                "transpose": function["conv_transpose{}d"](grad_y, w, transpose_bias, case.stride,
                                                             *transpose)}

    expected = calls(nc, x, grad_y)   # first: the workers then find the kernels in Numba's cache
    grad_chunks = (x.shape[0], spec.out_channels, *case.grad_chunks)
    graphs = calls(ncd, da.from_array(x, chunks=case.x_chunks), da.from_array(grad_y, chunks=grad_chunks))
    results = dict(zip(graphs, dask.compute(*graphs.values())))
    for name, result in results.items():
        tolerance = WEIGHT_TOLERANCE if "weight" in name or "bias" in name else RESULT_TOLERANCE
        assert graphs[name].shape == expected[name].shape, name
        assert result.dtype == np.float32, name
        error = _relative_error(result, expected[name])
        assert error <= tolerance, f"{name}: relative error {error:.2e}"
    for array, copy in zip((x, w, bias, grad_y), copies):
        np.testing.assert_array_equal(array, copy)


def test_same_padding_at_stride_1_keeps_the_chunks():
    x = da.zeros((2, 3, 20, 17), dtype=np.float32, chunks=(1, 3, (6, 6, 8), (9, 8)))
    w = np.ones((5, 3, 3, 5), np.float32)
    assert ncd.conv2d(x, w, padding="same").chunks == ((1, 1), (5,), (6, 6, 8), (9, 8))
    assert ncd.conv2d_input(x.shape, w, ncd.conv2d(x, w, padding="same"), padding="same").chunks == x.chunks


def test_chunks_under_the_halo_or_the_stride_merge():
    """Chunks of one element: a width-5 window padded by 2 takes a halo of 2 each side, so the
    chunks merge to 2; at stride 3 every output block holds at least one output."""
    x = da.zeros((1, 1, 12), dtype=np.float32, chunks=(1, 1, 1))
    assert ncd.conv1d(x, np.ones((1, 1, 5), np.float32), padding=2).chunks[2] == (2,) * 6
    strided = ncd.conv1d(x, np.ones((1, 1, 1), np.float32), stride=3).chunks[2]
    assert sum(strided) == 4 and min(strided) >= 1


@pytest.mark.parametrize("seed", range(6))
def test_random_1d_problems_and_chunks_on_the_local_scheduler(seed):
    """Random 1-d geometry (stride, dilation, padding up to past the window) and random chunks,
    sizes 1 and up, forward, input and weight gradients, without the cluster."""
    rng = np.random.default_rng(seed)
    for _ in range(8):
        kernel, stride, dilation = (int(v) for v in rng.integers(1, 5, 3))
        size, pads = int(rng.integers(1, 25)), tuple(int(p) for p in rng.integers(0, 6, 2))
        try:
            spec = ConvSpec.create((2, 2, size), (3, 2, kernel), stride, (pads,), dilation)
        except ValueError:
            continue
        x = rng.standard_normal(spec.x_shape).astype(np.float32)
        w = rng.standard_normal(spec.w_shape).astype(np.float32)
        grad_y = rng.standard_normal(spec.y_shape).astype(np.float32)
        x_chunks = (1, 2, _random_chunks(rng, size))
        grad_chunks = (2, 3, _random_chunks(rng, spec.out_size[0]))
        arguments = (stride, (pads,), dilation)
        pairs = [(ncd.conv1d(da.from_array(x, chunks=x_chunks), w, None, *arguments), nc.conv1d(x, w, None, *arguments)),
                 (ncd.conv1d_input(x.shape, w, da.from_array(grad_y, chunks=grad_chunks), *arguments),
                  nc.conv1d_input(x.shape, w, grad_y, *arguments)),
                 (ncd.conv1d_weight(da.from_array(x, chunks=x_chunks), w.shape,
                                    da.from_array(grad_y, chunks=grad_chunks), *arguments),
                  nc.conv1d_weight(x, w.shape, grad_y, *arguments))]
        results = dask.compute(*(graph for graph, _ in pairs), scheduler="sync")
        for result, (_, expected) in zip(results, pairs):
            assert _relative_error(result, expected) <= WEIGHT_TOLERANCE, (spec, x_chunks, grad_chunks)


def _random_chunks(rng, size):
    cuts = np.unique(rng.integers(1, size, int(rng.integers(0, size)))) if size > 1 else []
    bounds = [0, *cuts.tolist(), size] if len(cuts) else [0, size]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


def _never_computed(shape):
    """A Dask array whose computation fails: checks made when the graph is built never touch it."""
    return da.zeros(shape, dtype=np.float32, chunks=(1, -1, 3, 4)).map_blocks(lambda block: 1 / 0, dtype=np.float32)


@pytest.mark.parametrize("call", [
    lambda module, x: module.conv2d(x, np.ones((4, 2, 3, 3), np.float32)),           # channels differ
    lambda module, x: module.conv2d(x, np.ones((4, 3, 3, 3), np.float64)),           # dtypes differ
    lambda module, x: module.conv2d(x, np.ones((4, 3, 9, 3), np.float32)),           # kernel past the input
    lambda module, x: module.conv2d(x, np.ones((4, 3, 3, 3), np.float32), stride=0),
    lambda module, x: module.conv2d(x, np.ones((4, 3, 3, 3), np.float32), padding="full"),
    lambda module, x: module.conv2d(x, np.ones((4, 3, 3, 3), np.float32), np.ones(3, np.float32)),
    lambda module, x: module.conv2d(x, None),
    lambda module, x: module.conv3d(x, np.ones((4, 3, 3, 3), np.float32)),
    lambda module, x: module.conv2d_input((2, 3, 6, 7), np.ones((4, 3, 3, 3), np.float32), x),
    lambda module, x: module.conv2d_weight(x, (4, 3, 3, 3), x),
    lambda module, x: module.conv2d_backward(x, x, np.ones((4, 3, 3, 3), np.float32)),
    lambda module, x: module.conv_transpose2d(x, np.ones((3, 2, 3, 3), np.float32), output_padding=1),
    lambda module, x: module.conv_transpose2d(x, np.ones((3, 2, 3, 3), np.float32), padding="same"),
])
def test_bad_arguments_raise_the_in_memory_error_when_the_graph_is_built(call):
    shape = (2, 3, 6, 7)
    with pytest.raises((ValueError, TypeError)) as in_memory:
        call(nc, np.zeros(shape, np.float32))
    with pytest.raises(in_memory.type, match=f"^{re.escape(str(in_memory.value))}$"):
        call(ncd, _never_computed(shape))


def test_unknown_chunk_sizes_are_an_error():
    x = da.zeros((2, 3, 6, 7), dtype=np.float32, chunks=2)
    x = x[x[:, 0, 0, 0] >= 0]     # a boolean index: the batch size is unknown until computed
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        ncd.conv2d(x, np.ones((4, 3, 3, 3), np.float32))


def test_channels_in_chunks_are_rechunked_with_a_warning(rng):
    x = rng.standard_normal((2, 4, 9)).astype(np.float32)
    w = rng.standard_normal((3, 4, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="4 chunks along its channel axis"):
        y = ncd.conv1d(da.from_array(x, chunks=(1, 1, 5)), w, padding=1)
    assert _relative_error(y.compute(scheduler="sync"), nc.conv1d(x, w, padding=1)) <= RESULT_TOLERANCE


def test_blocks_run_at_once_on_the_local_thread_pool(rng):
    """Dask's local threaded scheduler: blocks on two threads at once, each on its share of Numba's."""
    x = rng.standard_normal((4, 3, 21, 19)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    with dask.config.set(scheduler="threads", num_workers=2):
        y = ncd.conv2d(da.from_array(x, chunks=(1, 3, 7, 6)), w, padding="same").compute()
    assert _relative_error(y, nc.conv2d(x, w, padding="same")) <= RESULT_TOLERANCE


def test_each_worker_gives_a_block_its_share_of_the_cores(client):
    """2 workers x 1 thread on this host: each block gets cores // 2 Numba threads (at least 1)."""
    share = max(1, min(numba.config.NUMBA_NUM_THREADS, dask.system.CPU_COUNT // 2))
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    assert len(workers) == 2
    assert [client.submit(ncd.task_threads, pure=False, workers=[worker]).result()
            for worker in workers] == [share, share]


def test_the_local_scheduler_shares_the_cores_among_its_threads_and_restores_numba():
    cores = min(numba.config.NUMBA_NUM_THREADS, dask.system.CPU_COUNT)
    with dask.config.set(num_workers=1):
        assert ncd.task_threads() == cores
    with dask.config.set(num_workers=2 * dask.system.CPU_COUNT):
        assert ncd.task_threads() == 1
    before = numba.get_num_threads()
    x = da.ones((1, 1, 8), dtype=np.float32, chunks=4)
    ncd.conv1d(x, np.ones((1, 1, 3), np.float32)).compute(scheduler="sync")
    assert numba.get_num_threads() == before
