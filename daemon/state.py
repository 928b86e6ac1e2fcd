"""The state of one agent: its kernel records and what they hold, written through to disk.

Three layers, as the kubelet's CPU manager keeps them (`state.go`, `state_mem.go`,
`state_checkpoint.go`):

- `AgentState`, the interface. Reads are plain calls. Every change is applied
  at once and returns a `Durable`; awaiting it returns once the change is on disk.
- `MemoryState`: the records (a `KernelRegistry`), the `ResourceAllocator` and
  the `PortPool`, kept in step: a record's allocation and ports are exactly what
  the allocator and the pool hold for it, because only these changes touch them.
  Records are immutable, so what a reader was handed never changes under it.
- `CheckpointedState`: a MemoryState whose every change is written through to
  the agent's `Checkpoint` (see the class for how writes coalesce).

The allocation itself stays pure in `resources.py` and `ports.py`. The agent holds
the policy (what to start, stop, adopt), the coordination between its tasks and
the reconcile loop; this module knows records, allocations and one file, nothing
of backends, gRPC or other agents (the registry enforces daemon-wide ids).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Container, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypedDict, TypeVar, Unpack

from common.ids import KernelId
from common.kernel_events import EndReason
from daemon.checkpoint import Checkpoint
from daemon.kernels import Kernel, KernelRegistry, KernelState
from daemon.ports import PortPool
from daemon.resources import Allocation, ResourceAllocator

log = logging.getLogger(__name__)

T = TypeVar("T")

# Checkpoint reads, writes and directory fsyncs run in threads of their own, shared by
# every agent of the process: what a create's or a destroy's reply waits for never
# queues behind the loop's other blocking work (a large kernel directory's removal,
# log rotation), which has only a few threads (`common/serving.py`).
_CHECKPOINT_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="checkpoint")


async def _in_checkpoint_thread(fn: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(_CHECKPOINT_THREADS, fn)


class KernelUpdate(TypedDict, total=False):
    """The fields `update` may set; what a kernel holds changes only by claim,
    restore, terminate and remove, so allocator, pool and records never disagree."""

    state: KernelState
    exit_code: int | None
    status_message: str
    memory_limit: str
    limits: dict[str, str]
    uid: int | None
    gid: int | None
    handle: dict[str, Any]
    backend_ref: str


class Durable(Generic[T]):
    """A change already applied in memory. Awaiting it returns `value` once a
    checkpoint write that includes the change has been fsynced (at once when the
    change does not show in the file), or raises why that write failed."""

    __slots__ = ("_written", "value")

    def __init__(self, value: T, written: asyncio.Future[None] | None = None) -> None:
        self.value = value
        self._written = written

    def __await__(self) -> Generator[Any, None, T]:
        if self._written is not None:
            # Shielded: one caller giving up must not cancel a write others wait for.
            yield from asyncio.shield(self._written).__await__()
        return self.value


class AgentState(Protocol):
    """What an agent reads and changes about its kernels and what they hold."""

    def get(self, kernel_id: KernelId) -> Kernel:
        """The record, or NotFound naming the agent (and the owner, if another agent)."""
        ...

    def find(self, kernel_id: KernelId) -> Kernel | None:
        """The record, if this agent has it."""
        ...

    def kernels(self) -> list[Kernel]:
        """Every record, in the order they were added."""
        ...

    def ordered(self) -> list[Kernel]:
        """Every record, oldest first."""
        ...

    def alive_count(self) -> int:
        """Records that are not terminated."""
        ...

    def alive_ids(self) -> Container[KernelId]:
        """A live view: `kernel_id in view` while that kernel is not terminated."""
        ...

    def occupied(self) -> Allocation:
        """Everything the kernels hold, summed."""
        ...

    @property
    def ports_total(self) -> int:
        """How many ports the agent's range has."""
        ...

    def ports_used(self) -> int:
        """How many of them kernels hold."""
        ...

    def claim(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Add new records with the resources and ports their specs ask for: all or none."""
        ...

    def update(self, kernel_id: KernelId, **changes: Unpack[KernelUpdate]) -> Durable[Kernel]:
        """Set some fields of a record."""
        ...

    def terminate(
        self, kernel_id: KernelId, exit_code: int | None, reason: str, end: EndReason
    ) -> Durable[Kernel]:
        """Record how a kernel ended (reason in words, end in one) and release what it held."""
        ...

    def remove(self, kernel_id: KernelId) -> Durable[Kernel]:
        """Forget a record, releasing whatever it still held; gives its last form."""
        ...

    def restore(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Take back records read from a checkpoint, with what the live ones hold."""
        ...

    async def load(self) -> list[Kernel]:
        """The records where this state persists (to decide what to restore)."""
        ...

    async def flush(self) -> None:
        """Return once every change so far is on disk."""
        ...


class MemoryState:
    """An agent's records, allocator and port pool, changed only together."""

    def __init__(
        self, registry: KernelRegistry, allocator: ResourceAllocator, ports: PortPool
    ) -> None:
        self._registry = registry
        self._allocator = allocator
        self._ports = ports

    # ----------------------------------------------------------------- reads

    def get(self, kernel_id: KernelId) -> Kernel:
        """The record, or NotFound naming the agent (and the owner, if another agent)."""
        return self._registry.get(kernel_id)

    def find(self, kernel_id: KernelId) -> Kernel | None:
        """The record, if this agent has it."""
        return self._registry.get(kernel_id) if kernel_id in self._registry else None

    def kernels(self) -> list[Kernel]:
        """Every record, in the order they were added."""
        return list(self._registry)

    def ordered(self) -> list[Kernel]:
        """Every record, oldest first."""
        return self._registry.ordered()

    def alive_count(self) -> int:
        """Records that are not terminated."""
        return self._registry.alive_count()

    def alive_ids(self) -> Container[KernelId]:
        """A live view: `kernel_id in view` while that kernel is not terminated."""
        return self._registry.alive_ids()

    def occupied(self) -> Allocation:
        """Everything the kernels hold, summed."""
        return self._allocator.occupied()

    @property
    def ports_total(self) -> int:
        """How many ports the agent's range has."""
        return self._ports.size

    def ports_used(self) -> int:
        """How many of them kernels hold."""
        return len(self._ports.in_use())

    # --------------------------------------------------------------- changes

    def claim(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Add new records with the resources and ports their specs ask for: all or none.

        Raises the first refusal (a taken id, slots or ports not free) having
        taken nothing.
        """
        claimed: list[Kernel] = []
        try:
            for kernel in kernels:
                self._registry.add(kernel)
                claimed.append(kernel)
                spec = kernel.spec
                allocation = self._allocator.allocate(kernel.kernel_id, spec.resources)
                ports = self._ports.allocate(
                    kernel.kernel_id,
                    (p.name for p in spec.ports),
                    {p.name: p.host_port for p in spec.ports if p.host_port},
                )
                claimed[-1] = kernel.model_copy(update={"allocation": allocation, "ports": ports})
                self._registry.replace(claimed[-1])
        except BaseException:
            for kernel in claimed:
                self._drop(kernel.kernel_id)
            raise
        return Durable(claimed)

    def update(self, kernel_id: KernelId, **changes: Unpack[KernelUpdate]) -> Durable[Kernel]:
        """Set some fields of a record."""
        kernel = self._registry.get(kernel_id).model_copy(update=dict(changes))
        self._registry.replace(kernel)
        return Durable(kernel)

    def terminate(
        self, kernel_id: KernelId, exit_code: int | None, reason: str, end: EndReason
    ) -> Durable[Kernel]:
        """Record how a kernel ended (reason in words, end in one) and release what it held."""
        kernel = self._registry.get(kernel_id).ended(exit_code, reason, end)
        self._release(kernel_id)
        self._registry.replace(kernel)
        return Durable(kernel)

    def remove(self, kernel_id: KernelId) -> Durable[Kernel]:
        """Forget a record, releasing whatever it still held; gives its last form."""
        kernel = self._registry.get(kernel_id)
        self._drop(kernel_id)
        return Durable(kernel)

    def restore(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Take back records read from a checkpoint, with what the live ones hold: all or none."""
        restored: list[Kernel] = []
        try:
            for kernel in kernels:
                self._registry.add(kernel)
                restored.append(kernel)
                if kernel.alive:
                    self._allocator.restore(kernel.kernel_id, kernel.allocation)
                    self._ports.restore(kernel.kernel_id, kernel.ports)
        except BaseException:
            for kernel in restored:
                self._drop(kernel.kernel_id)
            raise
        return Durable(restored)

    async def load(self) -> list[Kernel]:
        """Nothing: memory does not outlive the process."""
        return []

    async def flush(self) -> None:
        """Nothing to write."""

    def _release(self, kernel_id: KernelId) -> None:
        self._allocator.release(kernel_id)
        self._ports.release(kernel_id)

    def _drop(self, kernel_id: KernelId) -> None:
        self._release(kernel_id)
        self._registry.remove(kernel_id)


def checkpointed(kernel: Kernel) -> bool:
    """Whether the checkpoint holds kernel: once created. A pending kernel was never
    reported created, so a restart would not re-adopt it (its leftovers are reaped)."""
    return kernel.state is not KernelState.PENDING


class CheckpointedState:
    """An in-memory state (a MemoryState) written through to a checkpoint file on every change.

    A change is applied to memory at once, on the event loop, and makes a write
    of the whole state due. One writer task per agent writes in a thread; while
    a write is under way, every further change joins the one next write, which
    snapshots the state when it starts. So any number of changes made meanwhile
    cost one more fsync, a later snapshot supersedes an earlier pending one, and
    no change is ever left out: awaiting a change returns only after a write whose
    snapshot was taken after it has been fsynced. A failed write is raised to
    every caller awaiting it and leaves the previous file (written atomically);
    the next change or `flush` writes the whole state again. The directory is
    fsynced once after each burst of writes, off the callers' path (see
    `Checkpoint.write`): a kill -9 of the daemon loses no reported change; a crash
    of the machine in between could only bring back the previous whole file, and
    `flush` waits for that fsync too.

    A change that only touches pending records does not show in the file, so it
    needs no write (claiming resources for a kernel being created is written
    with the kernel once it runs).
    """

    def __init__(self, memory: AgentState, checkpoint: Checkpoint) -> None:
        self.memory = memory
        self.checkpoint = checkpoint
        self._next: asyncio.Future[None] | None = None  # the write that takes the next changes
        self._writing: asyncio.Future[None] | None = None  # the write under way
        self._writer: asyncio.Task[None] | None = None
        self._behind = False  # the last write failed: the file lags the memory

    # ----------------------------------------------------------------- reads

    def get(self, kernel_id: KernelId) -> Kernel:
        """The record, or NotFound naming the agent (and the owner, if another agent)."""
        return self.memory.get(kernel_id)

    def find(self, kernel_id: KernelId) -> Kernel | None:
        """The record, if this agent has it."""
        return self.memory.find(kernel_id)

    def kernels(self) -> list[Kernel]:
        """Every record, in the order they were added."""
        return self.memory.kernels()

    def ordered(self) -> list[Kernel]:
        """Every record, oldest first."""
        return self.memory.ordered()

    def alive_count(self) -> int:
        """Records that are not terminated."""
        return self.memory.alive_count()

    def alive_ids(self) -> Container[KernelId]:
        """A live view: `kernel_id in view` while that kernel is not terminated."""
        return self.memory.alive_ids()

    def occupied(self) -> Allocation:
        """Everything the kernels hold, summed."""
        return self.memory.occupied()

    @property
    def ports_total(self) -> int:
        """How many ports the agent's range has."""
        return self.memory.ports_total

    def ports_used(self) -> int:
        """How many of them kernels hold."""
        return self.memory.ports_used()

    # --------------------------------------------------------------- changes

    def claim(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Add new records with the resources and ports their specs ask for: all or none."""
        claimed = self.memory.claim(kernels).value
        return self._written(claimed, any(checkpointed(k) for k in claimed))

    def update(self, kernel_id: KernelId, **changes: Unpack[KernelUpdate]) -> Durable[Kernel]:
        """Set some fields of a record."""
        before = self.memory.get(kernel_id)
        after = self.memory.update(kernel_id, **changes).value
        return self._written(after, checkpointed(before) or checkpointed(after))

    def terminate(
        self, kernel_id: KernelId, exit_code: int | None, reason: str, end: EndReason
    ) -> Durable[Kernel]:
        """Record how a kernel ended (reason in words, end in one) and release what it held."""
        before = self.memory.get(kernel_id)
        after = self.memory.terminate(kernel_id, exit_code, reason, end).value
        return self._written(after, checkpointed(before) or checkpointed(after))

    def remove(self, kernel_id: KernelId) -> Durable[Kernel]:
        """Forget a record, releasing whatever it still held; gives its last form."""
        removed = self.memory.remove(kernel_id).value
        return self._written(removed, checkpointed(removed))

    def restore(self, kernels: Sequence[Kernel]) -> Durable[list[Kernel]]:
        """Take back records read from the checkpoint; always written, so from the start
        the file holds exactly what was restored (and a state dir that cannot be
        written fails the agent's start, not its first kernel)."""
        restored = self.memory.restore(kernels).value
        return self._written(restored, True)

    async def load(self) -> list[Kernel]:
        """The records in the checkpoint file (CheckpointError when it cannot be used)."""
        return await _in_checkpoint_thread(self.checkpoint.load)

    async def flush(self) -> None:
        """Return once every change so far is on disk (the directory fsynced too), writing
        again if the last write failed."""
        if self._next is None and self._writing is None and self._behind:
            self._due()
        pending = self._next or self._writing
        if pending is not None:
            await asyncio.shield(pending)
        if self._writer is not None:  # and the directory's fsync after it
            await asyncio.shield(self._writer)

    # ---------------------------------------------------------------- writing

    def _written(self, value: T, shows_in_file: bool) -> Durable[T]:
        return Durable(value, self._due() if shows_in_file else None)

    def _due(self) -> asyncio.Future[None]:
        """The write that will include every change so far, its writer started if idle."""
        loop = asyncio.get_running_loop()
        if self._next is None:
            self._next = loop.create_future()
        if self._writer is None:
            self._writer = loop.create_task(
                self._write_due(), name=f"checkpoint {self.checkpoint.agent_id}"
            )
        return self._next

    async def _write_due(self) -> None:
        try:
            while self._next is not None:
                await self._write_pending()
                # The directory after the burst, off the callers' path (see Checkpoint.write);
                # changes made meanwhile are written by the next turn of the loop.
                try:
                    await _in_checkpoint_thread(self.checkpoint.sync)
                except Exception as exc:
                    log.warning(
                        "agent %s: cannot fsync the directory of %s: %s",
                        self.checkpoint.agent_id,
                        self.checkpoint.path,
                        exc,
                    )
        finally:
            # Only when cancelled (the loop is closing) can a write be left unfinished.
            for pending in (self._writing, self._next):
                if pending is not None and not pending.done():
                    pending.cancel()
                    self._behind = True
            self._writing = self._next = None
            self._writer = None

    def _encode_and_write(self, records: list[Kernel]) -> None:
        self.checkpoint.write(self.checkpoint.encode(records))

    async def _write_pending(self) -> None:
        """Write until no change is due; each caller's future resolves with its write."""
        while self._next is not None:
            self._writing, self._next = self._next, None
            try:
                # Snapshot on the loop: the records as they are now; changes from
                # here on wait for the next write.
                records = [k for k in self.memory.kernels() if checkpointed(k)]
                # Records are immutable: encoding the snapshot can leave the loop.
                await _in_checkpoint_thread(functools.partial(self._encode_and_write, records))
            except Exception as exc:
                self._behind = True
                log.warning(
                    "agent %s: cannot write %s: %s; the next change writes it again",
                    self.checkpoint.agent_id,
                    self.checkpoint.path,
                    exc,
                )
                self._writing.set_exception(exc)
                self._writing.exception()  # logged above; awaiting callers still get it
            else:
                self._behind = False
                self._writing.set_result(None)
            self._writing = None
