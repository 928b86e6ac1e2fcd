"""Kernel records and the registries that hold them.

A `Kernel` record is immutable: a change is a new record swapped in by the
agent's state (`daemon/state.py`), the one writer. `KernelRegistry` holds one
agent's kernels. `AggregateKernelRegistry` is a view over every agent's registry
(lookup by kernel id without an agent id, listing, counts); it keeps no copy of
its own, so it cannot drift. The registries also enforce that a kernel id is
unique across the whole daemon. Knows nothing of files, backends or gRPC.
"""

from __future__ import annotations

import re
import time
from collections.abc import Container, Iterator
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import AlreadyExists, InvalidArgument, NotFound
from common.ids import ID_SYNTAX, AgentId, KernelId, is_valid_id
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


PORT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PORT_NAME_SYNTAX = "letters, digits and '_', not starting with a digit (it becomes PORT_<NAME>)"


def validate_spec(spec: KernelSpec) -> None:
    """Reject a spec whose names or strings cannot reach a process intact."""
    where = f"kernel {spec.kernel_id!r}"
    if not is_valid_id(spec.kernel_id):
        raise InvalidArgument(f"kernel_id {spec.kernel_id!r} is not valid: {ID_SYNTAX}")
    if any("\0" in arg for arg in spec.command):
        raise InvalidArgument(f"{where}: command contains a NUL byte")
    for key, value in spec.env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgument(
                f"{where}: env key {key!r} is not a valid environment variable name "
                "(non-empty, no '=' and no NUL byte)"
            )
    exported: dict[str, str] = {}
    for port in spec.ports:
        if not PORT_NAME_RE.fullmatch(port.name):
            raise InvalidArgument(
                f"{where}: port name {port.name!r} is not valid: {PORT_NAME_SYNTAX}"
            )
        other = exported.setdefault(port.name.upper(), port.name)
        if other != port.name or sum(p.name == port.name for p in spec.ports) > 1:
            raise InvalidArgument(
                f"{where}: port names {other!r} and {port.name!r} both become "
                f"PORT_{port.name.upper()}"
            )
        if not 0 <= port.container_port <= 65535:
            raise InvalidArgument(
                f"{where}: port {port.name!r}: container_port {port.container_port} "
                "is outside 0-65535"
            )


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

    def ended(self, exit_code: int | None, reason: str) -> Kernel:
        """This record once the kernel has ended: terminated, holding nothing."""
        return self.model_copy(
            update={
                "state": KernelState.TERMINATED,
                "allocation": Allocation(),
                "ports": {},
                "exit_code": exit_code,
                "status_message": reason,
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
        owner = self._aggregate.owner(kernel.kernel_id)
        if owner is not None:
            raise AlreadyExists(f"kernel {kernel.kernel_id!r} already exists on agent {owner!r}")
        self._kernels[kernel.kernel_id] = kernel

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
        self.get(kernel.kernel_id)
        self._kernels[kernel.kernel_id] = kernel

    def remove(self, kernel_id: KernelId) -> None:
        """Forget kernel_id; forgetting twice is harmless."""
        self._kernels.pop(kernel_id, None)

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
    """A read view over every agent's registry; the registries are its only data."""

    def __init__(self) -> None:
        self._registries: dict[AgentId, KernelRegistry] = {}

    def new_registry(self, agent_id: AgentId) -> KernelRegistry:
        """Create and attach the registry of one agent."""
        if agent_id in self._registries:
            raise AlreadyExists(f"agent {agent_id!r} already has a registry")
        registry = KernelRegistry(agent_id, self)
        self._registries[agent_id] = registry
        return registry

    def owner(self, kernel_id: KernelId) -> AgentId | None:
        """The agent that holds kernel_id, if any."""
        for agent_id, registry in self._registries.items():
            if kernel_id in registry:
                return agent_id
        return None

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
