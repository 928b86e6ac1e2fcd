"""Kernels' ends and lives as the manager learns them: the table side of `WaitKernel`
and `WatchKernels`.

The kernel table (`manager/kernels.py`) announces every change of a record. A
watcher subscribes and takes its snapshot in one step, so no change can fall
between the two; it then gets every kernel it may see as it is (`initial`),
`SYNCED`, and each change as the manager learns it (creates, destroys, heartbeats,
waits). A watcher that falls `MAX_BACKLOG` changes behind is given a fresh
snapshot rather than an unbounded queue. `table_end` is how a wait also hears of
an end that reaches the manager another way than from the daemon it asked (its
agent removed, the kernel destroyed by someone else).

Knows the kernel table and protocol messages; nothing of gRPC, daemons or who may
see what (the caller passes `shown`, which answers that).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable

from common.ids import KernelId
from common.kernel_events import SYNCED, event_for
from manager.kernels import TERMINATED, ChangeKind, KernelChange, KernelRecord, KernelTable
from protos import agent_pb2 as pb

MAX_BACKLOG = 10_000

# The kernel as the watcher may see it (a copy, redacted as needed); None: hidden from it.
Shown = Callable[[KernelRecord], pb.Kernel | None]


def table_end(
    table: KernelTable, kernel_id: KernelId
) -> tuple[asyncio.Future[None], Callable[[], None]]:
    """A future resolved once kernel_id's record terminates or is forgotten; and how to stop."""
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_change(change: KernelChange) -> None:
        if change.record.kernel_id != kernel_id or ended.done():
            return
        if change.kind is ChangeKind.FORGOTTEN or change.record.kernel.state == TERMINATED:
            ended.set_result(None)

    return ended, table.subscribe(on_change)


async def watch(table: KernelTable, shown: Shown) -> AsyncIterator[pb.KernelEvent]:
    """The events of the kernels shown lets through: snapshot, SYNCED, then changes."""
    pending: collections.deque[pb.KernelEvent] = collections.deque()
    wake = asyncio.Event()
    behind = False

    def on_change(change: KernelChange) -> None:
        nonlocal behind
        events = () if behind else _told(change, shown)
        if not events:
            return
        if len(pending) >= MAX_BACKLOG:
            behind = True  # the watcher starts over from a snapshot
            pending.clear()
        else:
            pending.extend(events)
        wake.set()

    unsubscribe = table.subscribe(on_change)
    try:
        while True:
            behind = False
            pending.clear()
            snapshot = [kernel for r in list(table.values()) if (kernel := shown(r)) is not None]
            for kernel in snapshot:
                yield event_for(kernel, initial=True)
            yield SYNCED
            while True:
                while pending:
                    yield pending.popleft()
                if behind:
                    break
                wake.clear()
                await wake.wait()
    finally:
        unsubscribe()


def _told(change: KernelChange, shown: Shown) -> tuple[pb.KernelEvent, ...]:
    """The watcher's events for a change of the table (none: nothing for this watcher).

    A kernel the manager first hears of already running (it learns of a create once
    the daemon has started it) is told as CREATED then RUNNING, as a daemon tells it.
    """
    kernel = shown(change.record)
    if kernel is None:
        return ()
    if change.kind is ChangeKind.FORGOTTEN:
        return (event_for(kernel, removed=True),)
    if change.kind is ChangeKind.ADDED:
        created = event_for(kernel, created=True)
        if kernel.state == pb.KERNEL_STATE_PENDING:
            return (created,)
        return created, event_for(kernel)
    if kernel.state == pb.KERNEL_STATE_PENDING:
        return ()  # a restart stopping it: RUNNING follows once it is back
    return (event_for(kernel),)
