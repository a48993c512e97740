"""threads.on_threads: a serial body run once per logical thread through its machine-code address."""
import sys

import numpy as np
import pytest
from numba import njit

from numbaconv.cpu import threads


@njit
def _record(thread, threads, source, offsets, scale, negate, out):
    """Row ``thread`` of ``out``: its share of ``source`` scaled, shifted by ``offsets[thread % 2]``
    (a tuple of tuples), negated where ``negate``; the last column the thread count."""
    first, stop = threads_share(source.size, thread, threads)
    row = out[thread]
    for i in range(first, stop):
        value = source[i] * scale + offsets[thread % 2][0] - offsets[thread % 2][1]
        row[i] = -value if negate else value
    row[-1] = threads


threads_share = threads.share


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_thread_runs_its_share_with_the_arguments_given(count):
    source = np.arange(12.0)[::2]   # a strided view
    source.flags.writeable = False  # read-only input
    out = np.full((count, source.size + 1), np.nan)
    threads.on_threads(_record, count, source, ((1.0, 0.5), (3.0, 1.0)), 2.0, True, out)
    expected = np.full_like(out, np.nan)
    for thread in range(count):
        first, stop = source.size * thread // count, source.size * (thread + 1) // count
        shift = (1.0 - 0.5) if thread % 2 == 0 else (3.0 - 1.0)
        expected[thread, first:stop] = -(source[first:stop] * 2.0 + shift)
        expected[thread, -1] = count
    np.testing.assert_array_equal(out, expected)


def test_no_reference_leaks_and_temporary_arguments_live_through_the_call():
    out = np.zeros((2, 7))
    source = np.arange(6.0)
    before = sys.getrefcount(source), sys.getrefcount(out)
    for _ in range(100):
        threads.on_threads(_record, 2, source, ((0.0, 0.0), (0.0, 0.0)), 1.0, False, out)
    assert (sys.getrefcount(source), sys.getrefcount(out)) == before
    threads.on_threads(_record, 2, np.arange(6.0) * 3, ((0.0, 0.0), (0.0, 0.0)), 1.0, False, out)
    np.testing.assert_array_equal(out[0, :3], [0.0, 3.0, 6.0])
    np.testing.assert_array_equal(out[1, 3:6], [9.0, 12.0, 15.0])


def test_a_body_compiles_once_per_argument_types_not_per_shape():
    def calls():
        return sum(1 for key in threads._BODY_ADDRESSES if key[0] is _record)

    tuples = ((0.0, 0.0), (0.0, 0.0))
    threads.on_threads(_record, 2, np.arange(6.0), tuples, 1.0, False, np.zeros((2, 7)))
    known = calls()
    threads.on_threads(_record, 2, np.arange(10.0), tuples, 1.0, False, np.zeros((2, 11)))
    assert calls() == known
    threads.on_threads(_record, 2, np.arange(10.0, dtype=np.float32), tuples, 1.0, False, np.zeros((2, 11)))
    assert calls() == known + 1
    assert len(_record.signatures) == known + 1


@njit
def _fail_on(thread, threads, out, failing):
    if thread == failing:
        raise ValueError("share failed")
    out[thread] = thread + 1


@pytest.mark.parametrize("failing", [0, 1])
def test_an_exception_in_any_threads_body_reaches_the_caller(failing):
    out = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="share failed"):
        threads.on_threads(_fail_on, 2, out, failing)
    threads.on_threads(_fail_on, 2, out, -1)
    np.testing.assert_array_equal(out, [1, 2])


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("partials_shape, columns", [((2, 8, 27), 27), ((3, 5, 10), 7)])
def test_partials_add_in_thread_order_by_numpy_or_by_the_threads(monkeypatch, threaded, partials_shape, columns):
    """Both ways of add_partials (NumPy under THREADED_PARTIALS_MIN elements, the threads from it)
    give the bits of the partials summed in thread order, with the partials' columns past ``out``'s
    left out, into an out of another dtype."""
    monkeypatch.setattr(threads, "THREADED_PARTIALS_MIN", 0 if threaded else 1 << 30)
    partials = np.random.default_rng(0).standard_normal(partials_shape)
    out = np.full((partials_shape[1], columns), np.nan, np.float32)
    threads.add_partials(partials, out)
    expected = partials[0, :, :columns].copy()
    for partial in partials[1:]:
        expected = expected + partial[:, :columns]
    np.testing.assert_array_equal(out, expected.astype(np.float32))
