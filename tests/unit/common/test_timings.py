"""common/timings.py: durations counted into the bucket whose upper bound holds them."""

from __future__ import annotations

import threading

import pytest

from common.timings import DURATION_BUCKETS, Timings


class TestTimings:
    def test_a_duration_on_a_bound_counts_in_that_bound(self) -> None:
        t = Timings(bounds=(1.0, 2.0))
        for seconds in (0.5, 1.0, 1.5, 2.0, 9.0):
            t.observe(seconds)
        snapshot = t.snapshot()
        assert snapshot.buckets == ((1.0, 2), (2.0, 4), (float("inf"), 5))
        assert (snapshot.count, snapshot.sum) == (5, pytest.approx(14.0))

    def test_timed_observes_a_block_that_raised_too(self) -> None:
        t = Timings()
        with pytest.raises(RuntimeError), t.timed():
            raise RuntimeError("the step failed")
        with t.timed():
            pass
        assert t.snapshot().count == 2

    def test_observations_from_many_threads_are_all_counted(self) -> None:
        t = Timings()

        def observe() -> None:
            for _ in range(10_000):
                t.observe(0.001)

        threads = [threading.Thread(target=observe) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert t.snapshot().count == 40_000

    def test_the_default_bounds_are_increasing(self) -> None:
        assert list(DURATION_BUCKETS) == sorted(set(DURATION_BUCKETS))
