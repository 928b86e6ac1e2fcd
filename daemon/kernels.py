"""Kernel records and the registries that hold them.

A `Kernel` record is immutable: a change is a new record swapped in by the
agent's state (`daemon/state.py`), the one writer. `KernelRegistry` holds one
agent's kernels. `AggregateKernelRegistry` is a view over every agent's registry
(lookup by kernel id without an agent id, listing, counts); it keeps no copy of
its own, so it cannot drift. The registries also enforce that a kernel id is
unique across the whole daemon. Knows nothing of files, backends or gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Container, Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import AlreadyExists, NotFound
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.events import KernelJournal
from daemon.resources import Allocation, ResourceRequest


class KernelState(StrEnum):
    """Where a kernel is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATED = "terminated"


class ServicePort(BaseModel):
    """A named port a kernel exposes; container_port matters to container backends."""

    model_config = ConfigDict(frozen=True)
    name: str
    container_port: int = 0
    host_port: int = 0  # asked for (from the agent's range); 0: any free one


class KernelSpec(BaseModel):
    """What a caller asked for."""

    model_config = ConfigDict(frozen=True)
    kernel_id: KernelId
    image: str = ""
    command: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    resources: ResourceRequest = ResourceRequest()
    ports: tuple[ServicePort, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)
    networks: tuple[str, ...] = ()


class Kernel(BaseModel):
    """One kernel as the daemon knows it; serialised as is into the agent's checkpoint.

    A record is immutable: the agent's state (`daemon/state.py`) swaps in a new one on
    every change, so nothing can change a record without the checkpoint hearing of it.
    """

    model_config = ConfigDict(frozen=True)
    kernel_id: KernelId
    agent_id: AgentId
    backend: str
    spec: KernelSpec
    state: KernelState = KernelState.PENDING
    allocation: Allocation = Allocation()
    ports: dict[str, int] = Field(default_factory=dict)
    exit_code: int | None = None
    status_message: str = ""
    end_reason: EndReason | None = None  # once terminated: why, in one word
    memory_limit: str = ""
    # Which limits are in force and how (the backend's words), and whom it runs as.
    limits: dict[str, str] = Field(default_factory=dict)
    uid: int | None = None
    gid: int | None = None
    created_at: float = Field(default_factory=time.time)
    finished_at: float = 0.0
    # The backend's own, versioned, serialisable handle (pid, container id, ...).
    handle: dict[str, Any] = Field(default_factory=dict)
    backend_ref: str = ""

    @property
    def alive(self) -> bool:
        """Pending or running: it holds resources."""
        return self.state is not KernelState.TERMINATED

    def ended(self, exit_code: int | None, reason: str, end: EndReason) -> Kernel:
        """This record once the kernel has ended: terminated, holding nothing."""
        return self.model_copy(
            update={
                "state": KernelState.TERMINATED,
                "allocation": Allocation(),
                "ports": {},
                "exit_code": exit_code,
                "status_message": reason,
                "end_reason": end,
                "finished_at": time.time(),
            }
        )


class KernelRegistry:
    """The kernels of one agent, by kernel id."""

    def __init__(self, agent_id: AgentId, aggregate: AggregateKernelRegistry) -> None:
        self.agent_id = agent_id
        self._aggregate = aggregate
        self._kernels: dict[KernelId, Kernel] = {}

    def add(self, kernel: Kernel) -> None:
        """Insert kernel; its id must be new on the whole daemon."""
        self._aggregate.claim_id(kernel.kernel_id, self.agent_id)
        self._kernels[kernel.kernel_id] = kernel
        self._aggregate.journal.record("added", kernel, None)

    def get(self, kernel_id: KernelId) -> Kernel:
        """The kernel, if this agent owns it."""
        kernel = self._kernels.get(kernel_id)
        if kernel is None:
            owner = self._aggregate.owner(kernel_id)
            where = f"; it belongs to agent {owner!r}" if owner else ""
            raise NotFound(f"kernel {kernel_id!r} not found on agent {self.agent_id!r}{where}")
        return kernel

    def replace(self, kernel: Kernel) -> None:
        """Swap in the new form of a record this registry holds, keeping its place."""
        previous = self.get(kernel.kernel_id)
        self._kernels[kernel.kernel_id] = kernel
        self._aggregate.journal.record("changed", kernel, previous.state)

    def remove(self, kernel_id: KernelId) -> None:
        """Forget kernel_id; forgetting twice is harmless."""
        kernel = self._kernels.pop(kernel_id, None)
        if kernel is not None:
            self._aggregate.release_id(kernel_id)
            self._aggregate.journal.record("removed", kernel, kernel.state)

    def __contains__(self, kernel_id: object) -> bool:
        return kernel_id in self._kernels

    def __iter__(self) -> Iterator[Kernel]:
        return iter(list(self._kernels.values()))

    def __len__(self) -> int:
        return len(self._kernels)

    def ordered(self) -> list[Kernel]:
        """The kernels, oldest first."""
        return sorted(self._kernels.values(), key=lambda k: k.created_at)

    def alive_count(self) -> int:
        """Kernels that are not terminated."""
        return sum(1 for k in self._kernels.values() if k.alive)

    def alive_ids(self) -> AliveKernelIds:
        """A live view: `kernel_id in view` is true while that kernel is not terminated."""
        return AliveKernelIds(self._kernels)


class AliveKernelIds(Container[KernelId]):
    """Membership answered at the moment of asking, so a slow scan never acts on a stale set."""

    def __init__(self, kernels: dict[KernelId, Kernel]) -> None:
        self._kernels = kernels

    def __contains__(self, kernel_id: object) -> bool:
        kernel = self._kernels.get(kernel_id)  # type: ignore[call-overload]
        return kernel is not None and kernel.alive


class AggregateKernelRegistry:
    """A read view over every agent's registry; the registries are its only data, but
    for the index of which agent holds which id (kept by the registries as they change,
    so an id check is one lookup whatever the number of agents) and the journal of
    every change."""

    def __init__(self, journal: KernelJournal | None = None) -> None:
        self._registries: dict[AgentId, KernelRegistry] = {}
        self._owners: dict[KernelId, AgentId] = {}
        self.journal = journal or KernelJournal()

    def claim_id(self, kernel_id: KernelId, agent_id: AgentId) -> None:
        """Reserve kernel_id for agent_id; AlreadyExists naming the agent that has it."""
        owner = self._owners.setdefault(kernel_id, agent_id)
        if owner != agent_id or kernel_id in self._registries[agent_id]:
            raise AlreadyExists(f"kernel {kernel_id!r} already exists on agent {owner!r}")

    def release_id(self, kernel_id: KernelId) -> None:
        """Free kernel_id for reuse."""
        self._owners.pop(kernel_id, None)

    def new_registry(self, agent_id: AgentId) -> KernelRegistry:
        """Create and attach the registry of one agent."""
        if agent_id in self._registries:
            raise AlreadyExists(f"agent {agent_id!r} already has a registry")
        registry = KernelRegistry(agent_id, self)
        self._registries[agent_id] = registry
        return registry

    def owner(self, kernel_id: KernelId) -> AgentId | None:
        """The agent that holds kernel_id, if any."""
        return self._owners.get(kernel_id)

    def find(self, kernel_id: KernelId) -> Kernel | None:
        """The kernel with that id on any agent."""
        owner = self.owner(kernel_id)
        return self._registries[owner].get(kernel_id) if owner is not None else None

    def list(self) -> list[Kernel]:
        """Every kernel of every agent, ordered by agent then creation time."""
        return [k for registry in self._registries.values() for k in registry.ordered()]

    def counts(self) -> dict[AgentId, int]:
        """Kernels that are not terminated, per agent."""
        return {a: r.alive_count() for a, r in self._registries.items()}
