"""Host capacity, per-agent resource slices and the allocator that carves kernels
out of a slice.

The assignment (`assign`) is pure: it receives the slice and what is held and
returns an allocation or raises; no locks, no I/O. `ResourceAllocator` keeps the
held allocations of one agent; the agent's state (`daemon/state.py`) keeps it in
step with the kernel records and persists them. How the host is divided into
slices is `daemon/slices.py`. Knows nothing of ports, files, backends or gRPC.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Collection, Container, Iterable, Mapping
from dataclasses import dataclass, field

import psutil

from common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from common.formatting import format_bytes
from common.ids import KernelId

Devices = Mapping[str, tuple[str, ...]]


def format_cores(cores: Iterable[int]) -> str:
    """(0, 1, 2, 5) -> '0-2,5'."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts) or "-"


def format_devices(devices: Devices) -> str:
    """{'cuda': ('0', '1')} -> 'cuda:0,1'."""
    return (
        " ".join(f"{kind}:{','.join(ids)}" for kind, ids in sorted(devices.items()) if ids) or "-"
    )


@dataclass(frozen=True)
class HostCapacity:
    """What the host offers: usable cores, total memory, accelerator devices."""

    cores: tuple[int, ...]
    memory: int
    devices: Devices = field(default_factory=dict)

    @classmethod
    def detect(cls) -> HostCapacity:
        """Read the cores this process may use, the physical memory and CUDA devices."""
        cores = tuple(sorted(os.sched_getaffinity(0)))
        memory = psutil.virtual_memory().total
        return cls(cores=cores, memory=memory, devices=_detect_devices())


def _detect_devices() -> dict[str, tuple[str, ...]]:
    cuda = sorted(
        (
            m.group(1)
            for p in glob.glob("/dev/nvidia*")
            if (m := re.fullmatch(r"/dev/nvidia(\d+)", p))
        ),
        key=int,
    )
    return {"cuda": tuple(cuda)} if cuda else {}


@dataclass(frozen=True)
class ResourceSlice:
    """One agent's share of the host."""

    cores: tuple[int, ...]
    memory: int
    devices: Devices = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceRequest:
    """What one kernel asks for; cpu_count or explicit cores, never both."""

    cpu_count: int = 0
    cores: tuple[int, ...] = ()
    memory: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)
    cpu_quota: float = 0.0


@dataclass(frozen=True)
class Allocation:
    """What one kernel holds."""

    cores: tuple[int, ...] = ()
    memory: int = 0
    devices: Devices = field(default_factory=dict)
    cpu_quota: float = 0.0


def validate_request(request: ResourceRequest) -> None:
    """Reject requests whose shape is wrong whatever the slice."""
    if request.cpu_count and request.cores:
        raise InvalidArgument("resources: give cpu_count or cores, not both")
    if len(set(request.cores)) != len(request.cores):
        raise InvalidArgument(f"resources: cores {list(request.cores)} names a core twice")
    if request.cpu_quota < 0 or request.memory < 0 or any(n < 0 for n in request.devices.values()):
        raise InvalidArgument("resources: amounts must not be negative")


def assign(
    slice_: ResourceSlice,
    held: Iterable[Allocation],
    request: ResourceRequest,
    cores_elsewhere: Collection[int] = (),
) -> Allocation:
    """Pick the resources for request from what slice_ has left after held.

    cores_elsewhere are cores of the slice held exclusively by kernels of other
    agents (slices overlap in shared and round-robin auto-split modes): never given.
    Raises FailedPrecondition when the request could never fit this slice and
    ResourceExhausted when it fits the slice but not what is free right now.
    Exclusive cores are picked lowest-first so allocations stay compact.
    """
    validate_request(request)
    # Every "can never fit" check comes before any "not free now" check: a request
    # too big for the slice must fail as such even while the slice is busy, or a
    # caller would keep retrying it.
    if request.cores:
        foreign = sorted(set(request.cores) - set(slice_.cores))
        if foreign:
            raise FailedPrecondition(
                f"cores {foreign} are not in the agent's slice (cores {format_cores(slice_.cores)})"
            )
    elif request.cpu_count > len(slice_.cores):
        raise FailedPrecondition(
            f"{request.cpu_count} cores requested but the agent's slice has "
            f"{len(slice_.cores)} (cores {format_cores(slice_.cores)})"
        )
    if request.cpu_quota > max(len(slice_.cores), 1):
        raise FailedPrecondition(
            f"cpu_quota {request.cpu_quota} exceeds the agent's {len(slice_.cores)} cores"
        )
    if request.memory > slice_.memory:
        raise FailedPrecondition(
            f"{format_bytes(request.memory)} memory requested but the agent's slice has "
            f"{format_bytes(slice_.memory)}"
        )
    for kind, count in sorted(request.devices.items()):
        own = slice_.devices.get(kind, ())
        if count > len(own):
            raise FailedPrecondition(
                f"{count} {kind} devices requested but the agent's slice has {len(own)}"
            )

    held = list(held)
    used_cores = {c for a in held for c in a.cores} | set(cores_elsewhere)
    used_memory = sum(a.memory for a in held)
    used_devices: dict[str, set[str]] = {}
    for a in held:
        for kind, ids in a.devices.items():
            used_devices.setdefault(kind, set()).update(ids)

    if request.cores:
        taken = sorted(set(request.cores) & used_cores)
        if taken:
            raise ResourceExhausted(f"cores {taken} are held by other kernels")
        cores = tuple(sorted(request.cores))
    elif request.cpu_count:
        free = [c for c in slice_.cores if c not in used_cores]
        if len(free) < request.cpu_count:
            raise ResourceExhausted(
                f"{request.cpu_count} cores requested, {len(free)} of the agent's "
                f"{len(slice_.cores)} are free"
            )
        cores = tuple(sorted(free)[: request.cpu_count])
    else:
        cores = ()

    if request.memory > slice_.memory - used_memory:
        raise ResourceExhausted(
            f"{format_bytes(request.memory)} memory requested, "
            f"{format_bytes(slice_.memory - used_memory)} of {format_bytes(slice_.memory)} free"
        )

    devices: dict[str, tuple[str, ...]] = {}
    for kind, count in sorted(request.devices.items()):
        if count == 0:
            continue
        own = slice_.devices.get(kind, ())
        free_ids = [d for d in own if d not in used_devices.get(kind, set())]
        if len(free_ids) < count:
            raise ResourceExhausted(
                f"{count} {kind} devices requested, {len(free_ids)} of {len(own)} free"
            )
        devices[kind] = tuple(free_ids[:count])
    return Allocation(
        cores=cores, memory=request.memory, devices=devices, cpu_quota=request.cpu_quota
    )


def total(allocations: Iterable[Allocation]) -> Allocation:
    """The sum of several allocations (what an agent has occupied)."""
    cores: set[int] = set()
    memory = 0
    devices: dict[str, set[str]] = {}
    for a in allocations:
        cores.update(a.cores)
        memory += a.memory
        for kind, ids in a.devices.items():
            devices.setdefault(kind, set()).update(ids)
    return Allocation(
        cores=tuple(sorted(cores)),
        memory=memory,
        devices={k: tuple(sorted(v)) for k, v in devices.items()},
    )


class NodeCores:
    """Which kernel holds which core exclusively, across every agent of the node.

    Agents' slices share cores in `shared` mode and when auto-split has fewer cores
    than agents; an exclusive core must still go to one kernel of the node only.
    """

    def __init__(self) -> None:
        self._holder: dict[int, KernelId] = {}

    def held_by_others(self, kernel_ids: Container[KernelId]) -> set[int]:
        """Cores held exclusively by kernels not in kernel_ids."""
        return {core for core, holder in self._holder.items() if holder not in kernel_ids}

    def take(self, kernel_id: KernelId, cores: Iterable[int]) -> None:
        """Record that kernel_id holds cores exclusively."""
        for core in cores:
            self._holder[core] = kernel_id

    def release(self, kernel_id: KernelId, cores: Iterable[int]) -> None:
        """Give back kernel_id's cores."""
        for core in cores:
            if self._holder.get(core) == kernel_id:
                del self._holder[core]


class ResourceAllocator:
    """The allocations held in one agent's slice; never over-commits it, nor a core
    another agent's kernel holds exclusively (through the node's `NodeCores`)."""

    def __init__(self, slice_: ResourceSlice, node: NodeCores | None = None) -> None:
        self.slice = slice_
        self.node = node or NodeCores()
        self._held: dict[KernelId, Allocation] = {}

    def allocate(self, kernel_id: KernelId, request: ResourceRequest) -> Allocation:
        """Carve request out of the free part of the slice and record it for kernel_id."""
        if kernel_id in self._held:
            raise InvalidArgument(f"kernel {kernel_id!r} already holds resources")
        elsewhere = self.node.held_by_others(self._held)
        allocation = assign(self.slice, self._held.values(), request, elsewhere)
        self._held[kernel_id] = allocation
        self.node.take(kernel_id, allocation.cores)
        return allocation

    def restore(self, kernel_id: KernelId, allocation: Allocation) -> None:
        """Record an allocation read back from a checkpoint (a re-adopted kernel)."""
        self._held[kernel_id] = allocation
        self.node.take(kernel_id, allocation.cores)

    def release(self, kernel_id: KernelId) -> None:
        """Return everything kernel_id holds; releasing twice is harmless."""
        allocation = self._held.pop(kernel_id, None)
        if allocation is not None:
            self.node.release(kernel_id, allocation.cores)

    def occupied(self) -> Allocation:
        """Everything currently held, summed."""
        return total(self._held.values())

    def held(self) -> dict[KernelId, Allocation]:
        """A copy of the per-kernel allocations."""
        return dict(self._held)
