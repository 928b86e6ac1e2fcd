"""How the benchmarks measure calls: sequential latency, concurrent throughput, and
side-by-side comparison with interleaved repetitions (drift cancels; figures are
medians over repetitions, ratios the medians of per-repetition ratios); and paired
latency, the two calls alternating one by one, for effects of a few percent on a
machine whose load moves faster than a block of calls lasts."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

Call = Callable[[], Awaitable[object]]


async def latency(call: Call, n: int) -> float:
    """Mean seconds per call over n sequential calls."""
    start = time.perf_counter()
    for _ in range(n):
        await call()
    return (time.perf_counter() - start) / n


async def throughput(call: Call, seconds: float, concurrency: int) -> float:
    """Completed calls per second with concurrency calls always in flight."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


@dataclass(frozen=True)
class Comparison:
    """Two ways of making the same call, measured side by side."""

    latency_us: dict[str, float]
    rps: dict[str, float]
    latency_ratio: float  # candidate / baseline
    throughput_ratio: float  # baseline / candidate (>1: the candidate is slower)


async def compare(
    baseline: tuple[str, Call],
    candidate: tuple[str, Call],
    reps: int,
    calls: int,
    seconds: float,
    concurrency: int,
    warmup: int = 100,
) -> Comparison:
    """Measure both, interleaved (the order flips every repetition)."""
    named: Mapping[str, Call] = dict([baseline, candidate])
    for call in named.values():
        await latency(call, warmup)
    lat: dict[str, list[float]] = {name: [] for name in named}
    thr: dict[str, list[float]] = {name: [] for name in named}
    for rep in range(reps):
        order = list(named.items())
        if rep % 2:
            order.reverse()
        for name, call in order:
            lat[name].append(await latency(call, calls))
        for name, call in order:
            thr[name].append(await throughput(call, seconds, concurrency))
    b, c = baseline[0], candidate[0]
    return Comparison(
        latency_us={n: statistics.median(v) * 1e6 for n, v in lat.items()},
        rps={n: statistics.median(v) for n, v in thr.items()},
        latency_ratio=statistics.median(x / y for x, y in zip(lat[c], lat[b], strict=True)),
        throughput_ratio=statistics.median(x / y for x, y in zip(thr[b], thr[c], strict=True)),
    )


@dataclass(frozen=True)
class Paired:
    """Per-call latencies of two ways of making a call, made alternately."""

    median_us: dict[str, float]
    ratio: float  # candidate median / baseline median


async def paired(baseline: tuple[str, Call], candidate: tuple[str, Call], pairs: int) -> Paired:
    """Time each call alone, the two alternating (the order flips every pair); the
    medians of the single-call latencies, and their ratio."""
    times: dict[str, list[float]] = {baseline[0]: [], candidate[0]: []}
    for i in range(pairs):
        order = (baseline, candidate) if i % 2 else (candidate, baseline)
        for name, call in order:
            start = time.perf_counter()
            await call()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(v) * 1e6 for name, v in times.items()}
    return Paired(medians, medians[candidate[0]] / medians[baseline[0]])
