"""numbaconv.timing: the order of the calls, warm-up, rounds, budget, settling, blocks, clocks.

The clocks here are fakes that count calls, so nothing depends on the machine's speed.
"""
import pytest

from numbaconv import timing


def _recorder():
    log = []
    return log, [lambda name=name: log.append(name) for name in "abc"]


def _counting_clock():
    """A clock whose n-th reading is n seconds long."""
    readings = []

    def clock(call):
        call()
        readings.append(len(readings) + 1)
        return float(readings[-1])
    return clock


def test_calls_take_turns_after_the_warm_up():
    log, calls = _recorder()
    timing.best_times(calls, warmup=2, rounds=3)
    assert log == list("abc") * 5


def test_best_is_the_fastest_call_of_each():
    durations = {"a": iter([5.0, 2.0, 3.0]), "b": iter([1.0, 4.0, 0.5])}
    clocks = [lambda call, name=name: (call(), next(durations[name]))[1] for name in durations]
    assert timing.best_times([lambda: None] * 2, clocks, rounds=3) == [2.0, 0.5]


def test_rounds_go_on_within_the_budget_up_to_the_most():
    log, calls = _recorder()
    timing.best_times(calls[:1], rounds=2, max_rounds=4, budget_s=60)
    assert len(log) == 4
    log.clear()
    timing.best_times(calls[:1], rounds=2, max_rounds=4, budget_s=0)
    assert len(log) == 2
    log.clear()
    timing.best_times(calls[:1], rounds=5, max_rounds=3)   # "at least rounds" wins
    assert len(log) == 5


def test_settle_runs_the_call_untimed_first_and_blocks_divide():
    log, calls = _recorder()
    seconds = timing.best_times(calls[:2], _counting_clock(), rounds=1, settle_s=1e-9, number=4)
    assert log == ["a"] + ["a"] * 4 + ["b"] + ["b"] * 4
    assert seconds == [1 / 4, 2 / 4]


def test_one_clock_per_call_or_a_mismatch():
    with pytest.raises(ValueError, match="2 calls but 1 clocks"):
        timing.best_times([lambda: None] * 2, [timing.host_clock()])


def test_timed_call_keeps_the_result_and_synchronizes_around_the_call():
    log = []
    result, seconds = timing.timed_call(lambda: log.append("call") or 42, lambda: log.append("sync"))
    assert result == 42 and seconds >= 0 and log == ["sync", "call", "sync"]


def test_event_clock_reads_the_events_in_seconds():
    class Event:
        made = []

        def __init__(self):
            self.made.append(self)
            self.at = None

        def record(self):
            self.at = 10.0 * len([e for e in self.made if e.at is not None])   # ms

        def synchronize(self):
            assert self.at is not None

        def elapsed_time(self, end):
            return end.at - self.at

    assert timing.event_clock(Event)(lambda: None) == pytest.approx(0.010)
