"""The manager's kernel table: every kernel it knows, by id and by agent.

A record is the daemon's own `Kernel` message as last reported, plus the address of
the daemon that reported it. The table keeps the scheduler's holds in step with
each record's state: a kernel that is not TERMINATED (UNKNOWN included, while its
agent is LOST) holds what its daemon allocated it; a TERMINATED or forgotten one
holds nothing. `account` shows a create or a destroy in an agent's occupancy at
once, until that daemon's next heartbeat replaces the numbers with its own.

Secrets: a kernel's `AGENTHOST_TOKEN` env value (a delegated token, or any token
someone gave a kernel) is replaced by `REDACTED` whenever a daemon's word for a
kernel enters the table (`scrub_secrets`), so no record, listing, stored row, event
or log line of the manager holds it, for anyone, owners and admins included; the
kernel itself and its daemon have it.

Change notifications: `subscribe(callback)` has the table call callback with a
`KernelChange` after a record is added, after its state changes (whoever changed
it: every change of a record goes through one of the table's methods, which
compares the state with the one last announced), and after it is forgotten.
Callbacks run synchronously, inside the change, in subscription order: they must
be quick, must not raise and must not change the table (hand the change to a
queue or set an event instead). Records restored at construction are not
announced. The group controller uses this to react to its members; a stream of
kernel changes can be built on it the same way.

Knows protocol messages, the scheduler's holds and the domain errors of a kernel
lookup; nothing of agents' liveness, daemons, gRPC or storage, and does no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, ValuesView
from dataclasses import dataclass
from enum import StrEnum

from common.errors import InvalidArgument, NotFound
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from manager.delegation import ENV_TOKEN
from manager.errors import KernelNotFound
from manager.scheduler import Demand, Scheduler
from protos import agent_pb2 as pb

log = logging.getLogger(__name__)

TERMINATED = pb.KERNEL_STATE_TERMINATED
UNKNOWN = pb.KERNEL_STATE_UNKNOWN
REDACTED = "<redacted>"
SECRET_ENV = (ENV_TOKEN,)  # env values the manager never keeps, shows or stores


def scrub_secrets(kernel: pb.Kernel) -> pb.Kernel:
    """Replace kernel's secret env values (SECRET_ENV) by REDACTED, in place; kernel."""
    env = kernel.spec.env
    for key in SECRET_ENV:
        if key in env and env[key] != REDACTED:
            env[key] = REDACTED
    return kernel


@dataclass(slots=True)
class KernelRecord:
    """One kernel: what its daemon last said of it, where that daemon is, who made it."""

    kernel: pb.Kernel
    daemon_address: str
    owner: str = ""  # the principal that created it ("" for kernels adopted from a daemon)

    @property
    def kernel_id(self) -> KernelId:
        """The kernel's id."""
        return KernelId(self.kernel.kernel_id)

    @property
    def agent_id(self) -> AgentId:
        """The agent the kernel lives on."""
        return AgentId(self.kernel.agent_id)

    @property
    def holds_resources(self) -> bool:
        """Not terminated: what it was allocated stays promised on its agent."""
        return self.kernel.state != TERMINATED


class ChangeKind(StrEnum):
    """What happened to a record."""

    ADDED = "added"
    STATE = "state"  # its state changed (RUNNING -> TERMINATED, -> UNKNOWN, ...)
    FORGOTTEN = "forgotten"


@dataclass(frozen=True, slots=True)
class KernelChange:
    """One change of the table, as subscribers receive it."""

    kind: ChangeKind
    record: KernelRecord
    previous_state: int  # the state announced before (UNSPECIFIED for ADDED)


Subscriber = Callable[[KernelChange], None]


class KernelTable(Mapping[KernelId, KernelRecord]):
    """Kernel records by id and by agent; the scheduler's holds follow each record."""

    def __init__(self, scheduler: Scheduler, records: Iterable[KernelRecord] = ()) -> None:
        self.scheduler = scheduler
        self._records: dict[KernelId, KernelRecord] = {}
        self._by_agent: dict[AgentId, set[KernelId]] = {}
        self._announced: dict[KernelId, int] = {}  # state last announced per kernel
        self._subscribers: list[Subscriber] = []
        for record in records:
            self._insert(record)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call callback after every change (see the module docstring); returns an unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def __getitem__(self, kernel_id: KernelId) -> KernelRecord:
        return self._records[kernel_id]

    def __iter__(self) -> Iterator[KernelId]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    # Straight to the dict: Mapping's defaults go through __getitem__ per key.
    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._records

    def values(self) -> ValuesView[KernelRecord]:
        """Every record, in the order first recorded."""
        return self._records.values()

    def locate(self, kernel_id: str, agent_id: str = "") -> KernelRecord:
        """The kernel (checked to be on agent_id if given), or an error naming what is wrong."""
        record = self._records.get(KernelId(kernel_id))
        if record is None:
            if not kernel_id:
                raise InvalidArgument("kernel_id is required")
            raise KernelNotFound(f"kernel {kernel_id!r} is not known to the manager")
        if agent_id and agent_id != record.agent_id:
            raise NotFound(
                f"kernel {kernel_id!r} is on agent {record.agent_id!r}, not {agent_id!r}"
            )
        return record

    def on_agent(self, agent_id: AgentId) -> list[KernelRecord]:
        """The records of agent_id's kernels."""
        return [self._records[k] for k in self._by_agent.get(agent_id, ())]

    def add(self, kernel: pb.Kernel, address: str, owner: str = "") -> KernelRecord:
        """Record a kernel its daemon at address reported, holding what it holds."""
        record = KernelRecord(kernel, address, owner)
        self._insert(record)
        self._announce(ChangeKind.ADDED, record, pb.KERNEL_STATE_UNSPECIFIED)
        return record

    def update(self, record: KernelRecord, kernel: pb.Kernel) -> None:
        """Take the daemon's word for the kernel, and hold (or release) what it holds."""
        if record.kernel is not kernel:
            record.kernel = kernel
        scrub_secrets(kernel)
        if record.holds_resources:
            self.scheduler.hold(
                record.kernel_id, record.agent_id, Demand.of_resources(kernel.allocated)
            )
        else:
            self.scheduler.release(record.kernel_id)
        self._state_changed(record)

    def terminate(self, record: KernelRecord, reason: str) -> None:
        """Mark the kernel TERMINATED for reason (lost to the manager) and release its hold."""
        kernel = record.kernel
        kernel.state = TERMINATED
        kernel.status_message = reason
        kernel.end_reason = kernel.end_reason or EndReason.LOST
        if not kernel.finished_at:
            kernel.finished_at = time.time()
        self.scheduler.release(record.kernel_id)
        log.info("kernel %s on agent %s: %s", kernel.kernel_id, kernel.agent_id, reason)
        self._state_changed(record)

    def terminate_all(self, agent_id: AgentId, reason: str) -> list[KernelRecord]:
        """Terminate every kernel of agent_id not terminated yet; return those."""
        changed = []
        for record in self.on_agent(agent_id):
            if record.kernel.state != TERMINATED:
                self.terminate(record, reason)
                changed.append(record)
        return changed

    def mark_unknown(self, agent_id: AgentId) -> list[KernelRecord]:
        """Agent LOST: its live kernels become UNKNOWN (still holding); return those."""
        changed = []
        for record in self.on_agent(agent_id):
            if record.kernel.state not in (TERMINATED, UNKNOWN):
                record.kernel.state = UNKNOWN
                changed.append(record)
                self._state_changed(record)
        return changed

    def forget(self, kernel_id: KernelId) -> None:
        """Drop the kernel's record and its hold; forgetting twice is harmless."""
        record = self._records.pop(kernel_id, None)
        if record is not None:
            self._by_agent.get(record.agent_id, set()).discard(kernel_id)
        self.scheduler.release(kernel_id)
        if record is not None:
            previous = self._announced.pop(kernel_id, record.kernel.state)
            self._announce(ChangeKind.FORGOTTEN, record, previous)

    def _insert(self, record: KernelRecord) -> None:
        self._records[record.kernel_id] = record
        self._by_agent.setdefault(record.agent_id, set()).add(record.kernel_id)
        self._announced[record.kernel_id] = record.kernel.state
        self.update(record, record.kernel)

    def _state_changed(self, record: KernelRecord) -> None:
        """Announce record's state if it differs from the one announced last."""
        kernel_id = record.kernel_id
        previous = self._announced.get(kernel_id)
        if previous is None or previous == record.kernel.state:
            return
        self._announced[kernel_id] = record.kernel.state
        self._announce(ChangeKind.STATE, record, previous)

    def _announce(self, kind: ChangeKind, record: KernelRecord, previous: int) -> None:
        if not self._subscribers:
            return
        change = KernelChange(kind, record, previous)
        for callback in list(self._subscribers):
            try:
                callback(change)
            except Exception:  # a subscriber's bug must not break the table
                log.exception("kernel table subscriber %r failed", callback)


def account(info: pb.AgentInfo, kernel: pb.Kernel, sign: int) -> None:
    """Show a create (+1) or destroy (-1) of kernel in its agent's reported occupancy.

    The daemon's next heartbeat replaces these numbers with its own.
    """
    occupied, allocated = info.occupied, kernel.allocated
    cores = set(occupied.cores)
    cores = cores | set(allocated.cores) if sign > 0 else cores - set(allocated.cores)
    occupied.cores[:] = sorted(cores)
    occupied.memory_bytes = max(0, occupied.memory_bytes + sign * allocated.memory_bytes)
    occupied.ports = max(0, occupied.ports + sign * allocated.ports)
    for kind, ids in allocated.devices.items():
        held = set(occupied.devices[kind].ids)
        held = held | set(ids.ids) if sign > 0 else held - set(ids.ids)
        occupied.devices[kind].ids[:] = sorted(held)
    info.kernel_count = max(0, info.kernel_count + sign)
