"""Dividing the host among agents, and the rules that look across their slices.

Every agent's `resources` entry, as written, is an `AgentClaim`. `check_claims`
applies the core, device and memory rules that involve the host or several
agents (a core or device given twice or missing from the host, memory adding up
past the host) and words each problem for the operator. Once the claims pass,
the one function of the allocation mode turns them into final slices:

- `manual_slices`: each agent gets what it wrote; cores and devices exclusive.
- `auto_split_slices`: agents that leave cores, memory or devices out divide
  what the others did not claim evenly (sizes differ by at most one).
- `shared_slices`: every agent sees the whole host, or what it wrote.

Everything here is pure: no I/O, no locks. It knows the host's capacity and what
agents ask; nothing of TOML, pydantic models, backends or kernels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from common.formatting import format_bytes, plural
from daemon.resources import HostCapacity, ResourceSlice, format_cores

AllocationMode = Literal["manual", "auto-split", "shared"]
ALLOCATION_MODES: tuple[AllocationMode, ...] = ("manual", "auto-split", "shared")

MIB = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True)
class SliceRequest:
    """An agent's `resources` entry: explicit cores (as written) or a core count,
    memory in bytes, devices by kind. None means the entry leaves it out."""

    cpus: tuple[int, ...] | int | None = None
    memory: int | None = None
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentClaim:
    """What one agent asks of the host; `where` (file, entry, id) prefixes its problems."""

    agent_id: str
    where: str
    resources: SliceRequest | None = None


@dataclass(frozen=True)
class Division:
    """The host divided: one slice per claim, in claim order, and notes for the operator."""

    slices: tuple[ResourceSlice, ...]
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------ checking


def check_claims(
    claims: Sequence[AgentClaim], mode: AllocationMode, host: HostCapacity, file: str
) -> list[str]:
    """Every problem with the claims' cores, devices and memory, in file order.

    Per-agent problems come first, at the agent's own entry (`where`); the totals
    after them are prefixed with `file` and count only what passed the per-agent
    checks, so one oversized agent is reported once.
    """
    ledger = _Ledger(mode, host)
    problems: list[str] = []
    for claim in claims:
        problems += ledger.enter(claim)
    if mode != "shared":
        problems += ledger.totals(claims, file)
    return problems


class _Ledger:
    """Who holds which core, device and memory so far, while claims are checked in order."""

    def __init__(self, mode: AllocationMode, host: HostCapacity) -> None:
        self.mode = mode
        self.host = host
        self.exclusive = mode != "shared"
        self.core_owner: dict[int, str] = {}
        self.core_counts: dict[str, int] = {}
        self.device_owner: dict[tuple[str, str], str] = {}
        self.memory_of: dict[str, int] = {}

    def enter(self, claim: AgentClaim) -> list[str]:
        """Record claim and return its own problems."""
        r = claim.resources
        if r is None:
            if self.mode == "manual":
                return [
                    f'{claim.where}: resources: required when allocation_mode is "manual" '
                    '(or set [daemon] allocation_mode = "auto-split")'
                ]
            return []
        problems: list[str] = []
        if self.mode == "manual" and (r.cpus is None or r.memory is None):
            missing = " and ".join(
                k for k, v in (("cpus", r.cpus), ("memory", r.memory)) if v is None
            )
            problems.append(
                f'{claim.where}: resources: {missing} required when allocation_mode is "manual"'
            )
        problems += self._cores(claim, r)
        problems += self._devices(claim, r)
        problems += self._memory(claim, r)
        return problems

    def _cores(self, claim: AgentClaim, r: SliceRequest) -> list[str]:
        problems: list[str] = []
        host_cores = self.host.cores
        if isinstance(r.cpus, tuple):
            unknown = sorted(set(r.cpus) - set(host_cores))
            if unknown:
                problems.append(
                    f"{claim.where}: resources.cpus: cores {unknown} do not exist on this host "
                    f"(cores {format_cores(host_cores)})"
                )
            if self.exclusive:
                for core in r.cpus:
                    if core in unknown:
                        continue
                    if core in self.core_owner:
                        problems.append(
                            f"{claim.where}: resources.cpus: core {core} is already given to "
                            f'agent "{self.core_owner[core]}"'
                        )
                    else:
                        self.core_owner[core] = claim.agent_id
        elif isinstance(r.cpus, int):
            if r.cpus > len(host_cores):
                problems.append(
                    f"{claim.where}: resources.cpus: {r.cpus} cores requested, "
                    f"the host has {len(host_cores)}"
                )
            else:
                self.core_counts[claim.agent_id] = r.cpus
        return problems

    def _devices(self, claim: AgentClaim, r: SliceRequest) -> list[str]:
        problems: list[str] = []
        for kind, ids in r.devices.items():
            have = self.host.devices.get(kind, ())
            for dev in ids:
                if dev not in have:
                    problems.append(
                        f"{claim.where}: resources.devices.{kind}: device {dev!r} does not exist "
                        f"on this host ({kind}: {', '.join(have) or 'none'})"
                    )
                elif self.exclusive and (kind, dev) in self.device_owner:
                    problems.append(
                        f"{claim.where}: resources.devices.{kind}: device {dev!r} is already "
                        f'given to agent "{self.device_owner[(kind, dev)]}"'
                    )
                self.device_owner.setdefault((kind, dev), claim.agent_id)
        return problems

    def _memory(self, claim: AgentClaim, r: SliceRequest) -> list[str]:
        if r.memory is None:
            return []
        if r.memory > self.host.memory:
            return [
                f"{claim.where}: resources.memory: {format_bytes(r.memory)} exceeds the host's "
                f"{format_bytes(self.host.memory)}"
            ]
        if r.memory == 0:
            return [f"{claim.where}: resources.memory: must be more than 0"]
        self.memory_of[claim.agent_id] = r.memory
        return []

    def totals(self, claims: Sequence[AgentClaim], file: str) -> list[str]:
        """Problems of the claims taken together (exclusive modes only)."""
        problems: list[str] = []
        host = self.host
        cores_total = len(self.core_owner) + sum(self.core_counts.values())
        if self.core_counts and cores_total > len(host.cores):
            owned = Counter(self.core_owner.values())
            takes = ", ".join(
                f"{c.agent_id} {owned[c.agent_id] + self.core_counts.get(c.agent_id, 0)}"
                for c in claims
                if owned[c.agent_id] + self.core_counts.get(c.agent_id, 0)
            )
            problems.append(
                f"{file}: resources.cpus: agents take {cores_total} cores in all ({takes}), "
                f"the host has {len(host.cores)}"
            )
        memory_total = sum(self.memory_of.values())
        if memory_total > host.memory:
            takes = ", ".join(f"{a} {format_bytes(m)}" for a, m in self.memory_of.items())
            problems.append(
                f"{file}: resources.memory: agents' memory adds up to "
                f"{format_bytes(memory_total)} ({takes}), past the host's "
                f"{format_bytes(host.memory)}"
            )
        auto_memory = [c.agent_id for c in claims if _memory_of(c) is None]
        left = host.memory - memory_total
        if self.mode == "auto-split" and auto_memory and 0 <= left < len(auto_memory) * MIB:
            problems.append(
                f"{file}: resources.memory: explicit slices take {format_bytes(memory_total)} "
                f"of the host's {format_bytes(host.memory)}, leaving less than 1MiB each for "
                f"agents {', '.join(auto_memory)}; lower the explicit memory or set theirs"
            )
        return problems


# ------------------------------------------------------------------ dividing


def divide_host(claims: Sequence[AgentClaim], mode: AllocationMode, host: HostCapacity) -> Division:
    """The slices of claims that passed `check_claims`, by the mode's own function."""
    return DIVIDERS[mode](claims, host)


def manual_slices(claims: Sequence[AgentClaim], host: HostCapacity) -> Division:
    """Each agent's resources as written; a core count takes the lowest cores that no
    agent lists, agents in claim order. Every claim must give cpus and memory."""
    listed = {c for claim in claims for c in _listed_cores(claim)}
    free = [c for c in host.cores if c not in listed]
    slices = []
    for claim in claims:
        r = claim.resources
        if r is None or r.cpus is None or r.memory is None:
            raise ValueError(f"{claim.where}: manual_slices needs cpus and memory (check_claims)")
        if isinstance(r.cpus, int):
            cores, free = tuple(free[: r.cpus]), free[r.cpus :]
        else:
            cores = r.cpus
        slices.append(ResourceSlice(cores=cores, memory=r.memory, devices=dict(r.devices)))
    return Division(tuple(slices))


def auto_split_slices(claims: Sequence[AgentClaim], host: HostCapacity) -> Division:
    """What agents write is theirs; the rest of the host is divided evenly among the
    agents that leave cores, memory or devices out.

    Core counts take the lowest unlisted cores first, in claim order. With fewer
    unclaimed cores than agents that need some, those agents share cores round-robin
    (and a note says so). Memory shares are whole MiB.
    """
    notes: list[str] = []
    claimed_cores = {c for claim in claims for c in _listed_cores(claim)}
    free_cores = [c for c in host.cores if c not in claimed_cores]
    claimed_memory = sum(m for claim in claims if (m := _memory_of(claim)))
    claimed_devices = {
        (kind, dev)
        for claim in claims
        if claim.resources
        for kind, ids in claim.resources.devices.items()
        for dev in ids
    }

    counted: dict[str, tuple[int, ...]] = {}
    for claim in claims:
        r = claim.resources
        if r is not None and isinstance(r.cpus, int):
            counted[claim.agent_id] = tuple(free_cores[: r.cpus])
            free_cores = free_cores[r.cpus :]

    auto = [c.agent_id for c in claims if c.resources is None or c.resources.cpus is None]
    auto_cores = split_evenly(free_cores, len(auto))
    if auto and len(free_cores) < len(auto):
        pool = free_cores or list(host.cores)
        auto_cores = [(pool[i % len(pool)],) for i in range(len(auto))]
        if free_cores:
            notes.append(
                f"auto-split: {plural(len(auto), 'agent')} but "
                f"{plural(len(free_cores), 'unclaimed core')}; "
                f"agents {', '.join(auto)} share cores {format_cores(pool)} round-robin"
            )
        else:
            notes.append(
                f"auto-split: every core is claimed by an agent's resources; "
                f"{', '.join(auto)} run on cores {format_cores(pool)} round-robin, "
                "shared with the agents that claimed them"
            )
    auto_memory = [c.agent_id for c in claims if _memory_of(c) is None]
    memory_share = (host.memory - claimed_memory) // max(len(auto_memory), 1) // MIB * MIB
    free_devices = {
        kind: [d for d in ids if (kind, d) not in claimed_devices]
        for kind, ids in host.devices.items()
    }
    auto_devices = [c.agent_id for c in claims if c.resources is None or not c.resources.devices]
    device_parts = {
        kind: split_evenly(ids, len(auto_devices)) for kind, ids in free_devices.items()
    }

    slices = []
    for claim in claims:
        r = claim.resources
        if r is not None and isinstance(r.cpus, tuple):
            cores = r.cpus
        elif claim.agent_id in counted:
            cores = counted[claim.agent_id]
        else:
            cores = auto_cores[auto.index(claim.agent_id)]
        memory = r.memory if r is not None and r.memory is not None else memory_share
        if r is not None and r.devices:
            devices = dict(r.devices)
        else:
            i = auto_devices.index(claim.agent_id)
            devices = {kind: parts[i] for kind, parts in device_parts.items() if parts[i]}
        slices.append(ResourceSlice(cores=cores, memory=memory, devices=devices))
    return Division(tuple(slices), tuple(notes))


def shared_slices(claims: Sequence[AgentClaim], host: HostCapacity) -> Division:
    """Every agent sees the whole host, or the cores, memory and devices it writes
    (a core count: the host's lowest cores); nothing is exclusive."""
    slices = []
    for claim in claims:
        r = claim.resources or SliceRequest()
        if isinstance(r.cpus, tuple):
            cores = r.cpus
        elif isinstance(r.cpus, int):
            cores = host.cores[: r.cpus]
        else:
            cores = host.cores
        slices.append(
            ResourceSlice(
                cores=cores,
                memory=r.memory or host.memory,
                devices=dict(r.devices) if r.devices else dict(host.devices),
            )
        )
    return Division(tuple(slices))


DIVIDERS: Mapping[AllocationMode, Callable[[Sequence[AgentClaim], HostCapacity], Division]] = {
    "manual": manual_slices,
    "auto-split": auto_split_slices,
    "shared": shared_slices,
}


def split_evenly(items: Sequence[T], n: int) -> list[tuple[T, ...]]:
    """Divide items into n contiguous parts whose sizes differ by at most one."""
    if n <= 0:
        return []
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(tuple(items[start:end]))
        start = end
    return parts


def _listed_cores(claim: AgentClaim) -> tuple[int, ...]:
    r = claim.resources
    return r.cpus if r is not None and isinstance(r.cpus, tuple) else ()


def _memory_of(claim: AgentClaim) -> int | None:
    return claim.resources.memory if claim.resources is not None else None
