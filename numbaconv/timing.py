"""Timing, written once: every time numbaconv measures (``algo="tune"``'s plans, and the tools'
``numbaconv bench``, ``compile-time``, bench/train_step.py, bench/gpu_check.py) is taken here.

A clock times one call, ``clock(call) -> seconds``:

- :func:`host_clock` reads ``time.perf_counter`` around the call. Given a ``synchronize``
  callable (``numba.cuda.synchronize``, ``torch.cuda.synchronize``) it waits for the device's
  queued work before the clock starts and again before it is read, so a GPU call counts whole.
- :func:`event_clock` records two GPU events around the call (``numba.cuda.event`` or
  ``torch.cuda.Event(enable_timing=True)``) and reads the time between them on the device,
  without the host's launch overhead.

:func:`best_times` compares calls: warm-up rounds first (compilation, first touch of scratch
buffers), then timed rounds in which the calls take turns, one call each (round-robin: machine
noise falls on all of them alike, so their ratios hold where absolute times drift), each call
keeping its best time (noise only ever adds time). :func:`timed_call` is the single call
whose result is wanted too, such as a first call that compiles.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

Clock = Callable[[Callable], float]


def timed_call(call, synchronize=None):
    """``(result, seconds)`` of one call on the host clock; ``synchronize``, when given, waits for
    the device's queued work before the clock starts and before it is read."""
    if synchronize is not None:
        synchronize()
    start = time.perf_counter()
    result = call()
    if synchronize is not None:
        synchronize()
    return result, time.perf_counter() - start


def host_clock(synchronize=None) -> Clock:
    """A clock on ``time.perf_counter`` (see :func:`timed_call` for ``synchronize``)."""
    return lambda call: timed_call(call, synchronize)[1]


def event_clock(make_event) -> Clock:
    """A clock from two GPU events made by ``make_event()`` and recorded around the call; the
    host waits for the second before reading the time between them."""
    def clock(call):
        start, end = make_event(), make_event()
        start.record()
        call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3     # both libraries' events report milliseconds
    return clock


def best_times(calls: Sequence[Callable], clocks: Clock | Sequence[Clock] | None = None, *, warmup: int = 0,
               rounds: int = 3, max_rounds: int | None = None, budget_s: float = 0.0, settle_s: float = 0.0,
               number: int = 1) -> list[float]:
    """Best seconds per call of each of ``calls``, the calls taking turns.

    ``clocks``: one clock for every call, or one per call (default: the host clock).
    ``warmup``: untimed rounds before the first timed one.
    ``rounds``, ``max_rounds``, ``budget_s``: at least ``rounds`` timed rounds, then more, up to
    ``max_rounds`` (default ``rounds``), until ``budget_s`` seconds have passed since the first.
    ``settle_s``: right before each timed call the same call runs untimed for this many seconds
    (at least once when positive). A parallel runtime's threads go on spinning after its work
    ends (GNU OpenMP's, which PyTorch and Numba share, for milliseconds), so a call timed right
    after another implementation's would share the cores with them; a pause instead would time
    it starting from sleeping threads.
    ``number``: calls in one timed block, whose time is divided by ``number`` (for calls too
    short for one clock reading).
    """
    if clocks is None or callable(clocks):
        clocks = [clocks or host_clock()] * len(calls)
    if len(clocks) != len(calls):
        raise ValueError(f"{len(calls)} calls but {len(clocks)} clocks")
    blocks = calls if number == 1 else [lambda call=call: [call() for _ in range(number)] for call in calls]
    for _ in range(warmup):
        for call in calls:
            call()
    best = [math.inf] * len(calls)
    start = time.perf_counter()
    for index in range(max(rounds, max_rounds or rounds)):
        for position, (call, block, clock) in enumerate(zip(calls, blocks, clocks)):
            if settle_s > 0:
                settle_until = time.perf_counter() + settle_s
                call()
                while time.perf_counter() < settle_until:
                    call()
            best[position] = min(best[position], clock(block) / number)
        if index + 1 >= rounds and time.perf_counter() - start >= budget_s:
            break
    return best
