"""common/serving.py: what a process does once its servers serve."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Iterator

import pytest

from common.serving import BLOCKING_THREADS, settle_for_serving


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


async def test_settling_freezes_the_heap_and_bounds_the_blocking_threads(unfrozen: None) -> None:
    await asyncio.to_thread(lambda: None)  # the loop's first default executor, asyncio's own
    settle_for_serving()
    assert gc.get_freeze_count() > 0

    # Many blocking calls at once run on at most BLOCKING_THREADS threads.
    seen: set[int] = set()
    gate = threading.Barrier(BLOCKING_THREADS, timeout=10)

    def work() -> None:
        seen.add(threading.get_ident())
        if len(seen) <= BLOCKING_THREADS:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()  # keep the first ones busy together, so others need new threads

    await asyncio.gather(*(asyncio.to_thread(work) for _ in range(4 * BLOCKING_THREADS)))
    assert len(seen) == BLOCKING_THREADS
