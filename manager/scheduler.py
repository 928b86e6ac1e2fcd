"""The scheduler: which agent gets a kernel, and what the manager has promised each agent.

Scheduling policy. Candidates are the agents of the requested scaling group that
are ALIVE and healthy and whose free cores, memory, devices (per kind) and ports
cover the request. "Free" is the agent's capacity minus what the manager holds
for it: every kernel the manager knows there (by what the daemon allocated it)
plus every reservation of a create still in flight. Among the candidates:

- ``spread`` (default) picks the least loaded agent, where load is the largest
  used fraction over cores, memory, devices and ports; ties go to the agent with
  the fewest kernels, then to the one registered first. Kernels that ask for
  nothing exclusive therefore still spread out round-robin.
- ``pack`` picks the most loaded agent that still fits (same load, ties to the
  most kernels), filling agents one after another and keeping whole agents free
  for big requests.

A request no agent of the group could fit even when idle is `NoAgentFits`
(FAILED_PRECONDITION) saying why; one that fits some agent's capacity but finds
them all full is `AllAgentsBusy` (RESOURCE_EXHAUSTED); one whose only fitting
agents are LOST or unhealthy is `AgentLost` (UNAVAILABLE).

`reserve` decides and records the hold in one synchronous step (no await), so
concurrent creates on the event loop can never over-commit an agent; a failed
create releases its reservation. Usage is kept in columnar numpy arrays so a
decision over 10,000 agents is a handful of vector operations.

Each decision is timed and counted by outcome where it is made (`decision_timings`,
`decisions`), for the manager's metrics to read.

Knows agents only as ids with a scaling group, a capacity and a flag saying
whether they may receive kernels; nothing of daemons, gRPC or storage.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from common.formatting import format_bytes, plural
from common.ids import AgentId, KernelId
from common.timings import FAST_BUCKETS, Timings
from manager.config import POLICIES, Policy
from manager.errors import AgentLost, AllAgentsBusy, BadRequest, NoAgentFits
from protos import agent_pb2 as pb

IntArray = npt.NDArray[np.int64]

_DIMENSIONS = ("cores", "memory", "ports")


@dataclass(frozen=True)
class Demand:
    """What one kernel takes from an agent: counts of cores, bytes, ports, devices by kind."""

    cores: int = 0
    memory: int = 0
    ports: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of_spec(cls, spec: pb.KernelSpec) -> Demand:
        """What a kernel spec asks for."""
        r = spec.resources
        return cls(
            cores=r.cpu_count or len(r.cores),
            memory=r.memory_bytes,
            ports=len(spec.ports),
            devices={k: n for k, n in r.devices.items() if n},
        )

    @classmethod
    def of_resources(cls, resources: pb.Resources) -> Demand:
        """What an agent's capacity offers, or what a created kernel was allocated."""
        return cls(
            cores=len(resources.cores),
            memory=resources.memory_bytes,
            ports=resources.ports,
            devices={k: len(v.ids) for k, v in resources.devices.items() if v.ids},
        )

    def describe(self) -> str:
        """'2 cores, 1GiB memory, 1 cuda device, 2 ports' (only what is asked)."""
        parts = []
        if self.cores:
            parts.append(plural(self.cores, "core"))
        if self.memory:
            parts.append(f"{format_bytes(self.memory)} memory")
        parts += [plural(n, f"{kind} device") for kind, n in sorted(self.devices.items())]
        if self.ports:
            parts.append(plural(self.ports, "port"))
        return ", ".join(parts) or "nothing exclusive"


@dataclass(frozen=True)
class Reservation:
    """A hold on one agent for one kernel (in flight, or created)."""

    kernel_id: KernelId
    agent_id: AgentId
    demand: Demand


class _Columns:
    """Per-agent numbers in parallel arrays, one slot per agent; grows by doubling."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.cap: dict[str, IntArray] = {d: np.zeros(size, np.int64) for d in _DIMENSIONS}
        self.used: dict[str, IntArray] = {d: np.zeros(size, np.int64) for d in _DIMENSIONS}
        self.kernels: IntArray = np.zeros(size, np.int64)
        self.group: IntArray = np.full(size, -1, np.int64)
        self.schedulable = np.zeros(size, bool)

    def device_kind(self, kind: str) -> str:
        """The column name of a device kind, created on first sight."""
        name = "device:" + kind
        if name not in self.cap:
            self.cap[name] = np.zeros(self.size, np.int64)
            self.used[name] = np.zeros(self.size, np.int64)
        return name

    def grow(self) -> None:
        """Double every array."""
        self.size *= 2

        def bigger(a: npt.NDArray[np.generic], fill: object) -> npt.NDArray[np.generic]:
            out = np.full(self.size, fill, a.dtype)
            out[: a.size] = a
            return out

        for table in (self.cap, self.used):
            for name in table:
                table[name] = bigger(table[name], 0)  # type: ignore[assignment]
        self.kernels = bigger(self.kernels, 0)  # type: ignore[assignment]
        self.group = bigger(self.group, -1)  # type: ignore[assignment]
        self.schedulable = bigger(self.schedulable, False)


def _columns_of(demand: Demand, cols: _Columns) -> dict[str, int]:
    """The demand as column name -> amount, leaving out zeros."""
    wanted = {"cores": demand.cores, "memory": demand.memory, "ports": demand.ports}
    wanted.update({cols.device_kind(k): n for k, n in demand.devices.items()})
    return {name: amount for name, amount in wanted.items() if amount}


class Scheduler:
    """Places kernels on agents and keeps what is held on each agent."""

    def __init__(self, policy: Policy = "spread") -> None:
        if policy not in POLICIES:
            raise BadRequest(f"unknown scheduling policy {policy!r}; valid: {', '.join(POLICIES)}")
        self.policy: Policy = policy
        self._cols = _Columns()
        self._slot: dict[AgentId, int] = {}
        self._agent_at: list[AgentId | None] = []
        self._free_slots: list[int] = []
        self._groups: dict[str, int] = {}
        self._group_names: list[str] = []
        self._holds: dict[KernelId, Reservation] = {}
        # Every decision, timed and by outcome (read by the manager's metrics).
        self.decision_timings = Timings(FAST_BUCKETS)
        self.decisions: Counter[type[Exception] | None] = Counter()

    # --------------------------------------------------------------- agents

    def upsert_agent(
        self, agent_id: AgentId, scaling_group: str, capacity: Demand, schedulable: bool
    ) -> None:
        """Add an agent or update its group, capacity and whether it may receive kernels."""
        slot = self._slot.get(agent_id)
        if slot is None:
            if self._free_slots:
                slot = self._free_slots.pop()
            else:
                slot = len(self._agent_at)
                self._agent_at.append(None)
                if slot >= self._cols.size:
                    self._cols.grow()
            self._slot[agent_id] = slot
            self._agent_at[slot] = agent_id
        cols = self._cols
        for name in list(cols.cap):
            cols.cap[name][slot] = 0
        cols.cap["cores"][slot] = capacity.cores
        cols.cap["memory"][slot] = capacity.memory
        cols.cap["ports"][slot] = capacity.ports
        for kind, n in capacity.devices.items():
            cols.cap[cols.device_kind(kind)][slot] = n
        cols.group[slot] = self._group_code(scaling_group)
        cols.schedulable[slot] = schedulable

    def set_schedulable(self, agent_id: AgentId, schedulable: bool) -> None:
        """ALIVE and healthy agents receive kernels; others are skipped."""
        slot = self._slot.get(agent_id)
        if slot is not None:
            self._cols.schedulable[slot] = schedulable

    def set_scaling_group(self, agent_id: AgentId, scaling_group: str) -> None:
        """Move an agent to another scaling group."""
        slot = self._slot.get(agent_id)
        if slot is not None:
            self._cols.group[slot] = self._group_code(scaling_group)

    def remove_agent(self, agent_id: AgentId) -> None:
        """Forget an agent and every hold on it."""
        slot = self._slot.pop(agent_id, None)
        if slot is None:
            return
        for kernel_id in [k for k, r in self._holds.items() if r.agent_id == agent_id]:
            del self._holds[kernel_id]
        cols = self._cols
        for table in (cols.cap, cols.used):
            for name in table:
                table[name][slot] = 0
        cols.kernels[slot] = 0
        cols.group[slot] = -1
        cols.schedulable[slot] = False
        self._agent_at[slot] = None
        self._free_slots.append(slot)

    def __contains__(self, agent_id: object) -> bool:
        return agent_id in self._slot

    def __len__(self) -> int:
        return len(self._slot)

    # ---------------------------------------------------------------- holds

    def reserve(
        self,
        kernel_id: KernelId,
        demand: Demand,
        scaling_group: str,
        agent_id: AgentId | None = None,
        exclude: Iterable[AgentId] = (),
    ) -> Reservation:
        """Pick an agent for demand (or check the pinned one) and hold it, in one step.

        Each call is one decision: timed, and counted under its outcome (None: an
        agent was reserved; else the kind of error that refused it).
        """
        start = time.perf_counter()
        outcome: type[Exception] | None = None
        try:
            return self._reserve(kernel_id, demand, scaling_group, agent_id, exclude)
        except Exception as exc:
            outcome = type(exc)
            raise
        finally:
            self.decision_timings.observe(time.perf_counter() - start)
            self.decisions[outcome] += 1

    def _reserve(
        self,
        kernel_id: KernelId,
        demand: Demand,
        scaling_group: str,
        agent_id: AgentId | None,
        exclude: Iterable[AgentId],
    ) -> Reservation:
        if kernel_id in self._holds:
            raise BadRequest(f"kernel {kernel_id!r} already holds a reservation")
        if agent_id is not None:
            slot = self._check_pinned(agent_id, demand)
        else:
            slot = self._pick(demand, scaling_group, exclude)
        chosen = self._agent_at[slot]
        assert chosen is not None
        reservation = Reservation(kernel_id, chosen, demand)
        self._add(reservation, slot, +1)
        return reservation

    def hold(self, kernel_id: KernelId, agent_id: AgentId, demand: Demand) -> None:
        """Record (or replace) what a known kernel holds on agent_id, without checking room."""
        self.release(kernel_id)
        slot = self._slot.get(agent_id)
        if slot is None:
            return
        reservation = Reservation(kernel_id, agent_id, demand)
        self._add(reservation, slot, +1)

    def release(self, kernel_id: KernelId) -> None:
        """Drop kernel_id's hold; releasing twice is harmless."""
        reservation = self._holds.get(kernel_id)
        if reservation is None:
            return
        slot = self._slot.get(reservation.agent_id)
        if slot is None:
            del self._holds[kernel_id]
            return
        self._add(reservation, slot, -1)

    def held(self, kernel_id: KernelId) -> Reservation | None:
        """The hold of kernel_id, if any."""
        return self._holds.get(kernel_id)

    def usage(self, agent_id: AgentId) -> Demand:
        """What the manager holds on agent_id right now."""
        slot = self._slot[agent_id]
        used = self._cols.used
        return Demand(
            cores=int(used["cores"][slot]),
            memory=int(used["memory"][slot]),
            ports=int(used["ports"][slot]),
            devices={
                name.removeprefix("device:"): int(a[slot])
                for name, a in used.items()
                if name.startswith("device:") and a[slot]
            },
        )

    # -------------------------------------------------------------- details

    def _group_code(self, name: str) -> int:
        code = self._groups.get(name)
        if code is None:
            code = self._groups[name] = len(self._group_names)
            self._group_names.append(name)
        return code

    def _add(self, reservation: Reservation, slot: int, sign: int) -> None:
        cols = self._cols
        for name, amount in _columns_of(reservation.demand, cols).items():
            cols.used[name][slot] += sign * amount
        cols.kernels[slot] += sign
        if sign > 0:
            self._holds[reservation.kernel_id] = reservation
        else:
            del self._holds[reservation.kernel_id]

    def _pick(self, demand: Demand, scaling_group: str, exclude: Iterable[AgentId]) -> int:
        cols = self._cols
        n = len(self._agent_at)
        code = self._groups.get(scaling_group)
        in_group = cols.group[:n] == (-2 if code is None else code)
        if not in_group.any():
            raise NoAgentFits(
                f"no agent is in scaling group {scaling_group!r}; groups: {self._describe_groups()}"
            )
        wanted = _columns_of(demand, cols)
        could = in_group.copy()
        fits = in_group & cols.schedulable[:n]
        for name, amount in wanted.items():
            could &= cols.cap[name][:n] >= amount
            fits &= cols.cap[name][:n] - cols.used[name][:n] >= amount
        for agent_id in exclude:
            slot = self._slot.get(agent_id)
            if slot is not None:
                fits[slot] = False
        candidates = np.flatnonzero(fits)
        if candidates.size:
            return int(candidates[self._best(candidates)])
        self._explain(demand, scaling_group, in_group, could, n)

    def _best(self, candidates: IntArray) -> int:
        """Index into candidates of the agent the policy prefers."""
        cols = self._cols
        load = np.zeros(candidates.size)
        for name, cap in cols.cap.items():
            c = cap[candidates]
            frac = np.divide(
                cols.used[name][candidates], c, out=np.zeros(candidates.size), where=c > 0
            )
            np.maximum(load, frac, out=load)
        # Lexicographic (load, kernels): loads are quantised so that kernel counts break ties.
        key = np.round(load * 1e6) * 1e6 + cols.kernels[candidates]
        return int(np.argmin(key) if self.policy == "spread" else np.argmax(key))

    def _check_pinned(self, agent_id: AgentId, demand: Demand) -> int:
        slot = self._slot.get(agent_id)
        if slot is None:
            raise NoAgentFits(f"agent {agent_id!r} is not registered with the manager")
        cols = self._cols
        short_cap = []
        short_now = []
        for name, amount in _columns_of(demand, cols).items():
            cap, used = int(cols.cap[name][slot]), int(cols.used[name][slot])
            if cap < amount:
                short_cap.append(f"{_label(name, amount)} (it has {_label(name, cap)})")
            elif cap - used < amount:
                short_now.append(f"{_label(name, amount)} ({_label(name, cap - used)} free)")
        if short_cap:
            raise NoAgentFits(
                f"agent {agent_id!r} could never fit {demand.describe()}: needs "
                + ", ".join(short_cap)
            )
        if not cols.schedulable[slot]:
            raise AgentLost(f"agent {agent_id!r} is LOST or unhealthy; it takes no kernels now")
        if short_now:
            raise AllAgentsBusy(
                f"agent {agent_id!r} is busy: {demand.describe()} requested, short of "
                + ", ".join(short_now)
            )
        return slot

    def _explain(
        self,
        demand: Demand,
        scaling_group: str,
        in_group: npt.NDArray[np.bool_],
        could: npt.NDArray[np.bool_],
        n: int,
    ) -> NoReturn:
        cols = self._cols
        group_size = int(in_group.sum())
        if not could.any():
            members = np.flatnonzero(in_group)
            largest = ", ".join(
                _label(name, int(cols.cap[name][members].max()))
                for name in _columns_of(demand, cols)
            )
            raise NoAgentFits(
                f"no agent of scaling group {scaling_group!r} ({group_size} agents) could ever fit "
                f"{demand.describe()}; the largest offer {largest}"
            )
        usable = could & cols.schedulable[:n]
        if not usable.any():
            ids = self._ids(np.flatnonzero(could))
            raise AgentLost(
                f"the agents of scaling group {scaling_group!r} that could fit "
                f"{demand.describe()} are LOST or unhealthy: {ids}"
            )
        raise AllAgentsBusy(
            f"all {int(usable.sum())} agents of scaling group {scaling_group!r} that could fit "
            f"{demand.describe()} are busy right now: {self._ids(np.flatnonzero(usable))}"
        )

    def _ids(self, slots: IntArray, limit: int = 8) -> str:
        names = [str(self._agent_at[int(s)]) for s in slots[:limit]]
        more = f" and {slots.size - limit} more" if slots.size > limit else ""
        return ", ".join(names) + more

    def _describe_groups(self) -> str:
        n = len(self._agent_at)
        counts = np.bincount(self._cols.group[:n][self._cols.group[:n] >= 0])
        groups = [
            f"{self._group_names[code]} ({plural(int(count), 'agent')})"
            for code, count in enumerate(counts)
            if count
        ]
        return ", ".join(groups) or "none (no agents registered)"


def _label(name: str, amount: int) -> str:
    if name == "memory":
        return f"{format_bytes(amount)} memory"
    if name.startswith("device:"):
        return plural(amount, f"{name.removeprefix('device:')} device")
    return plural(amount, name[:-1])
