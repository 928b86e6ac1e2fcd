"""What happened to kernels, in order: the daemon's kernel journal.

Every change of a kernel record (added, changed, removed) is one `KernelEvent`
with a daemon-wide sequence number, recorded by the registries as it happens, so
no change can be missed. Readers resume from a sequence number: the manager link
sends only what changed since its last acknowledged heartbeat, a `WatchKernels`
call streams what follows its snapshot, `WaitKernel` waits for an end. The journal
keeps the last `keep` events; a reader that fell further behind is told so and
starts over from a snapshot. It also keeps the last form of the last `keep_removed`
forgotten kernels, so a wait that races a destroy still learns how the kernel
ended, and wakes each kernel's end-waiters with the one event that concerns them.
Subscribers (lifecycle hooks, the audit trail) are called synchronously for each
event and must not block. Knows kernel records; nothing of backends, agents'
slices or gRPC.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from common.ids import KernelId
    from daemon.kernels import Kernel, KernelState

log = logging.getLogger(__name__)

EventKind = Literal["added", "changed", "removed"]
KEEP = 100_000
KEEP_REMOVED = 10_000


@dataclass(frozen=True, slots=True)
class KernelEvent:
    """One change of one kernel record."""

    seq: int
    kind: EventKind
    kernel: Kernel  # the record after the change (for removed: its last form)
    previous: KernelState | None  # the state before (None for added)

    @property
    def ends(self) -> bool:
        """The kernel terminated, or was forgotten, with this event."""
        return self.kind == "removed" or (
            not self.kernel.alive and self.previous != self.kernel.state
        )


Subscriber = Callable[[KernelEvent], None]


class KernelJournal:
    """The last `keep` kernel events, and whoever waits for the next ones."""

    def __init__(self, keep: int = KEEP, keep_removed: int = KEEP_REMOVED) -> None:
        self._events: collections.deque[KernelEvent] = collections.deque(maxlen=keep)
        self._seq = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._end_waiters: dict[KernelId, list[asyncio.Future[Kernel]]] = {}
        self._removed: collections.OrderedDict[KernelId, Kernel] = collections.OrderedDict()
        self._keep_removed = keep_removed
        self._subscribers: list[Subscriber] = []

    @property
    def last_seq(self) -> int:
        """The sequence number of the latest event (0: none yet)."""
        return self._seq

    def record(self, kind: EventKind, kernel: Kernel, previous: KernelState | None) -> None:
        """Append an event, wake the waiters, tell the subscribers."""
        self._seq += 1
        event = KernelEvent(self._seq, kind, kernel, previous)
        self._events.append(event)
        self._remember(event)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if event.ends:
            for end_waiter in self._end_waiters.pop(kernel.kernel_id, ()):
                if not end_waiter.done():
                    end_waiter.set_result(kernel)
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:  # a subscriber's fault never fails the change itself
                log.exception("kernel event subscriber %r failed", subscriber)

    def since(self, seq: int) -> list[KernelEvent] | None:
        """The events after seq, or None when some of them are no longer kept."""
        if seq >= self._seq:
            return []
        if not self._events or self._events[0].seq > seq + 1:
            return None
        start = seq + 1 - self._events[0].seq
        return [self._events[i] for i in range(start, len(self._events))]

    async def wait(self, seq: int, timeout: float | None = None) -> bool:
        """Return True once an event after seq exists, False after timeout seconds."""
        if self._seq > seq:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def removed(self, kernel_id: KernelId) -> Kernel | None:
        """The last form of a kernel forgotten lately (None: not among the last ones)."""
        return self._removed.get(kernel_id)

    async def wait_end(self, kernel_id: KernelId, timeout: float | None) -> Kernel | None:
        """The kernel's record once it terminates or is forgotten; None after timeout."""
        end = asyncio.get_running_loop().create_future()
        self._end_waiters.setdefault(kernel_id, []).append(end)
        try:
            return await asyncio.wait_for(asyncio.shield(end), timeout)
        except TimeoutError:
            return None
        finally:
            waiters = self._end_waiters.get(kernel_id)
            if waiters is not None and end in waiters:
                waiters.remove(end)
                if not waiters:
                    del self._end_waiters[kernel_id]

    def _remember(self, event: KernelEvent) -> None:
        kernel_id = event.kernel.kernel_id
        if event.kind == "removed":
            self._removed[kernel_id] = event.kernel
            if len(self._removed) > self._keep_removed:
                self._removed.popitem(last=False)
        elif event.kind == "added":
            self._removed.pop(kernel_id, None)  # the id is in use again

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call subscriber with every event from now on; returns how to stop."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)
