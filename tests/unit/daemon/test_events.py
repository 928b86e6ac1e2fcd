"""daemon/events.py: every change of a kernel record is in the journal, in order."""

from __future__ import annotations

import asyncio

from common.ids import AgentId, KernelId
from daemon.events import KernelEvent, KernelJournal
from daemon.kernels import AggregateKernelRegistry, Kernel, KernelSpec, KernelState


def kernel(kernel_id: str, state: KernelState = KernelState.PENDING) -> Kernel:
    return Kernel(
        kernel_id=KernelId(kernel_id),
        agent_id=AgentId("a0"),
        backend="local",
        spec=KernelSpec(kernel_id=KernelId(kernel_id)),
        state=state,
    )


class TestJournal:
    def test_the_registries_record_every_change(self) -> None:
        aggregate = AggregateKernelRegistry()
        registry = aggregate.new_registry(AgentId("a0"))
        registry.add(kernel("k1"))
        registry.replace(kernel("k1", KernelState.RUNNING))
        registry.remove(KernelId("k1"))
        registry.remove(KernelId("k1"))  # twice: no event
        events = aggregate.journal.since(0)
        assert events is not None
        assert [(e.seq, e.kind, e.kernel.state, e.previous) for e in events] == [
            (1, "added", KernelState.PENDING, None),
            (2, "changed", KernelState.RUNNING, KernelState.PENDING),
            (3, "removed", KernelState.RUNNING, KernelState.RUNNING),
        ]
        assert aggregate.journal.since(3) == []

    def test_a_reader_too_far_behind_is_told_so(self) -> None:
        journal = KernelJournal(keep=2)
        for i in range(3):
            journal.record("added", kernel(f"k{i}"), None)
        assert journal.since(0) is None
        assert [e.seq for e in journal.since(1) or []] == [2, 3]

    async def test_wait_returns_once_something_happened(self) -> None:
        journal = KernelJournal()
        assert not await journal.wait(0, timeout=0.01)
        waiting = asyncio.create_task(journal.wait(0, timeout=5))
        await asyncio.sleep(0)
        journal.record("added", kernel("k1"), None)
        assert await waiting

    def test_subscribers_see_every_event_and_a_failing_one_breaks_nothing(self) -> None:
        journal = KernelJournal()
        seen: list[KernelEvent] = []

        def broken(event: KernelEvent) -> None:
            raise RuntimeError("subscriber bug")

        journal.subscribe(broken)
        stop = journal.subscribe(seen.append)
        journal.record("added", kernel("k1"), None)
        stop()
        journal.record("added", kernel("k2"), None)
        assert [e.kernel.kernel_id for e in seen] == ["k1"]
        assert journal.last_seq == 2
