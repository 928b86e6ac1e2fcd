"""How long a recurring step took: a count, a sum and cumulative buckets, nothing else.

A `Timings` is owned by what it measures (an agent's checkpoint writes, its
reconcile passes, the manager's scheduling decisions and routed calls) and read
by a metrics collector when Prometheus scrapes, so the measured code imports no
metrics library and there is nothing to keep in step: observing is a lock, a
bisection and two additions. Safe to observe from threads (checkpoint writes run
in one). `DURATION_BUCKETS` is the bucket layout of every duration the servers
export that crosses a process or a disk (RPC latency histograms too),
`FAST_BUCKETS` that of steps that stay in memory. Knows nothing of Prometheus.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

# Seconds: from a sub-millisecond loopback call to a minute-long create.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

# Seconds: steps that never leave the process (a scheduling decision).
FAST_BUCKETS: tuple[float, ...] = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.1,
)


@dataclass(frozen=True)
class TimingsSnapshot:
    """Timings at one moment: cumulative counts per upper bound (the last is +Inf)."""

    buckets: tuple[tuple[float, int], ...]
    count: int
    sum: float


class Timings:
    """Durations of one step, bucketed as a Prometheus histogram is."""

    __slots__ = ("_bounds", "_counts", "_lock", "_sum")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one step that took seconds."""
        index = bisect.bisect_left(self._bounds, seconds)
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Observe how long the with-block took, however it ended."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe(time.perf_counter() - start)

    def snapshot(self) -> TimingsSnapshot:
        """The counts so far, cumulative per bound as the exposition format wants them."""
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return TimingsSnapshot(tuple(cumulative), running, total)
