"""One group's life: start in waves, roll back, heal, time out, end.

The runner is a reconcile loop (one asyncio task per group). Each step looks at
the group's phase and its members' kernel records and does what the phase asks:

- Pending/Starting: for each wave in order, create the members that do not
  exist yet (one batch per agent), then wait until each is ready (its kernel
  RUNNING and its readiness probe passing) or its role has failed. Wave n+1
  starts only once every role of wave n is ready. A failed role rolls everything
  back (Failed) under Atomic or when it is the coordinator; under BestEffort its
  members are ended, it is recorded as degraded, roles that depend on it fail too,
  and the start goes on. Then Running (every member ready) or Degraded.
- Running/Degraded: a member whose kernel exited, was removed or whose agent is
  LOST is recreated under `OnFailure` (elsewhere when its agent is LOST; after a
  back-off when it keeps failing) with its dependencies' current addresses;
  under `Never` its role is Degraded, and the group Failed (everything ended) if
  it is the coordinator's.
- `idleTimeout`, `maxDuration` and deletion end the group: Terminating (members
  ended in reverse start order within `rollbackTimeout`), then Terminated with
  the reason kept. A deleted group is then forgotten.

The step is idempotent, so a manager restarted in any phase goes on from the
stored status: members already created are found in the kernel table (after the
daemons registered again), missing ones are created. The status is written (and
watchers told) only when it differs from what was written last. The loop sleeps
until the kernel table says a member changed, a deadline passes, or it is asked
to end. Knows the manager's parts through the controller; nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from typing import Protocol

from common.durations import format_duration
from common.errors import AgentHostError
from common.ids import AgentId, KernelId
from manager.core import Manager
from manager.groups import discovery
from manager.groups.discovery import Endpoint, host_of, peers_env
from manager.groups.placement import Placer, Request, pick_host_ports, ports_held
from manager.groups.plan import GroupPlan, RolePlan
from manager.groups.readiness import probe
from manager.groups.record import (
    DEGRADED,
    FAILED,
    PENDING,
    RUNNING,
    STARTING,
    TERMINATED,
    TERMINATING,
    GroupRecord,
    phase_name,
)
from manager.kernels import TERMINATED as KERNEL_TERMINATED
from manager.kernels import UNKNOWN as KERNEL_UNKNOWN
from manager.kernels import KernelRecord, KernelTable
from manager.registry import Liveness
from manager.store import Store
from manager.templates import kernel_spec
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

log = logging.getLogger(__name__)

KERNEL_RUNNING = pb.KERNEL_STATE_RUNNING
# How long a member without a readiness check may take to be RUNNING.
DEFAULT_READY_TIMEOUT = 60.0
DEFAULT_PERIOD = 0.2
RESYNC_SECONDS = 30.0  # a step at least this often, whatever happens
HEAL_BACKOFF = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)  # before the n-th recreation of a member
SETTLE_POLL = 0.2


class Controller(Protocol):
    """What a runner uses of the controller that owns it (`controller.GroupController`)."""

    manager: Manager
    kernels: KernelTable
    store: Store
    placer: Placer

    def index(self, kernel_id: str, runner: GroupRunner) -> None:
        """kernel_id is (about to be) a member of runner's group."""

    def unindex(self, kernel_id: str) -> None:
        """kernel_id is no member any more."""

    async def forget(self, runner: GroupRunner) -> None:
        """Drop an ended group for good."""


class GroupRunner:
    """The reconcile loop of one group."""

    def __init__(self, controller: Controller, record: GroupRecord) -> None:
        self.controller = controller
        self.record = record
        self.plan: GroupPlan = record.plan()
        self.wake = asyncio.Event()
        self.ending: tuple[str, str] | None = None  # (reason, message) once asked to end
        self.forget_when_ended = False
        self.last_activity = time.time()  # manager downtime does not count as idle
        self.version = 0
        self._changed = asyncio.Event()
        self._written = record.status.SerializeToString(deterministic=True)
        self._heal_at: dict[tuple[str, int], float] = {}
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ outside

    @property
    def status(self) -> mpb.GroupStatus:
        """The status as it is now (possibly not yet written)."""
        return self.record.status

    @property
    def name(self) -> str:
        """The group's name."""
        return self.record.name

    def start(self) -> None:
        """Run the loop in a task (unless the group is Terminated)."""
        if self.status.phase != TERMINATED:
            self.task = asyncio.create_task(self.run(), name=f"group {self.name}")

    def request_end(self, reason: str, message: str, forget: bool = False) -> None:
        """End the group (members and all); forget it afterwards if asked."""
        if self.ending is None:
            self.ending = (reason, message)
        self.forget_when_ended = self.forget_when_ended or forget
        self.wake.set()

    def claims(self, kernel_id: str) -> bool:
        """Whether kernel_id is one of the group's current members (and the group lives)."""
        if self.status.phase in (TERMINATED, FAILED):
            return False
        return any(m.kernel_id == kernel_id for m in self.status.members)

    async def watch(self) -> AsyncIterator[mpb.Group]:
        """The group now, then at every written change, until it is Terminated or forgotten."""
        seen = -1
        while True:
            # The event is taken before the version is looked at, with no await between:
            # a change made while the consumer held the last yield is never missed.
            changed = self._changed
            if self.version != seen:
                seen = self.version
                yield self.to_proto()
                continue
            if self.status.phase == TERMINATED and (self.task is None or self.task.done()):
                return
            if self.task is not None and self.task.done():
                return
            await changed.wait()

    def to_proto(self) -> mpb.Group:
        """The group as answered (a copy)."""
        out = mpb.Group()
        out.CopyFrom(self.record.to_proto())
        return out

    # --------------------------------------------------------------- loop

    async def run(self) -> None:
        """Reconcile until the group is Terminated."""
        while True:
            try:
                done = await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("group %s: reconcile step failed; retrying", self.name)
                await asyncio.sleep(1.0)
                continue
            if done:
                break
            delay = self._next_wake() - time.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
            self.wake.clear()
        if self.forget_when_ended:
            await self.controller.forget(self)

    async def _step(self) -> bool:
        status = self.status
        status.observed_generation = self.record.generation
        if status.phase == TERMINATED:
            return True
        self._check_deadlines()
        if self.ending is not None or status.phase == TERMINATING:
            await self._end()
            return True
        if status.phase in (PENDING, STARTING):
            await self._start()
        elif status.phase == FAILED:
            leftover = [m for m in status.members if m.kernel_id in self.controller.kernels]
            if leftover:
                await self._destroy(leftover)
                await self.commit()
        else:
            await self._supervise()
        return False

    def _deadlines(self) -> list[tuple[float, str, str]]:
        spec = self.record.document.spec
        out = []
        if spec.max_duration > 0:
            out.append(
                (
                    self.record.created_at + spec.max_duration,
                    "MaxDuration",
                    f"ended after its maxDuration of {format_duration(spec.max_duration)}",
                )
            )
        if spec.idle_timeout > 0:
            out.append(
                (
                    self.last_activity + spec.idle_timeout,
                    "IdleTimeout",
                    f"no exec, logs or topology call for its idleTimeout of "
                    f"{format_duration(spec.idle_timeout)}",
                )
            )
        return out

    def _check_deadlines(self) -> None:
        if self.ending is not None or self.status.phase not in (
            PENDING,
            STARTING,
            RUNNING,
            DEGRADED,
        ):
            return
        now = time.time()
        for at, reason, message in self._deadlines():
            if now >= at:
                log.info("group %s: %s", self.name, message)
                self.request_end(reason, message)
                return

    def _next_wake(self) -> float:
        now = time.time()
        times = [now + RESYNC_SECONDS]
        if self.status.phase in (PENDING, STARTING, RUNNING, DEGRADED):
            times += [at for at, _, _ in self._deadlines()]
        times += [t for t in self._heal_at.values() if t > 0]
        return min(times)

    # ------------------------------------------------------------ writing

    async def commit(self) -> None:
        """Write the status if it changed since last written, and tell watchers."""
        data = self.status.SerializeToString(deterministic=True)
        if data == self._written:
            return
        await self.controller.store.save_group_status(self.name, data)
        self._written = data
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _set_phase(self, phase: int, reason: str, message: str = "") -> None:
        status = self.status
        if status.phase != phase:
            log.info(
                "group %s: %s -> %s%s",
                self.name,
                phase_name(status.phase),
                phase_name(phase),
                f" ({message})" if message else "",
            )
            status.phase = phase  # type: ignore[assignment]
            status.transitioned_at = time.time()
        status.reason = reason
        status.message = message

    # --------------------------------------------------------------- start

    async def _start(self) -> None:
        status = self.status
        if status.phase == PENDING:
            self._set_phase(STARTING, "Starting", "starting its members in waves")
            status.started_at = time.time()
            status.waves = len(self.plan.waves)
            for role in self.plan.roles:
                for index in range(role.replicas):
                    status.members.add(role=role.name, index=index, wave=role.wave)
            await self.commit()
        await self._await_registrations()
        failed_roles = {d.role for d in status.degraded_roles}
        for number, names in enumerate(self.plan.waves, start=1):
            if self.ending is not None:
                return
            status.wave = number
            roles = [self.plan.by_name[n] for n in names if n not in failed_roles]
            failures: dict[str, str] = {}
            for role in roles:
                missing = [d for d in role.depends_on if d in failed_roles]
                if missing:
                    failures[role.name] = f"it depends on role {missing[0]!r}, which failed"
            roles = [r for r in roles if r.name not in failures]
            failures.update(await self._create_missing(roles))
            ready = [r for r in roles if r.name not in failures]
            failures.update(await self._await_ready(ready))
            if self.ending is not None:
                return
            if failures:
                if not await self._role_failures(failures):
                    return
                failed_roles |= set(failures)
            await self.commit()
        self._settle("Started")
        await self.commit()

    async def _await_registrations(self) -> None:
        """After a manager restart, wait until every daemon registered again (or is LOST),
        so that members created before the restart are found rather than made twice."""
        registry = self.controller.manager.registry
        while registry.awaiting_registration() and self.ending is None:  # noqa: ASYNC110
            await asyncio.sleep(SETTLE_POLL)  # the registry has no event to wait on

    async def _create_missing(self, roles: list[RolePlan]) -> dict[str, str]:
        """Create the members of roles that have no live kernel; role -> why it failed."""
        kernels = self.controller.kernels
        members = [
            m
            for role in roles
            for m in self._members(role.name)
            if not (m.kernel_id and m.kernel_id in kernels)
        ]
        if not members:
            return {}
        return await self._create(members, peer=self.plan.document.spec.topology == "Peer")

    async def _create(
        self,
        members: list[mpb.GroupMember],
        peer: bool,
        avoid: dict[tuple[str, int], AgentId] | None = None,
    ) -> dict[str, str]:
        """Create members (new kernel ids), one batch per agent; role -> why it failed."""
        avoid = avoid or {}
        for m in members:
            self.controller.unindex(m.kernel_id)
            m.kernel_id = self._new_kernel_id(m)
            m.ready = False
            m.ready_at = 0
            m.state = pb.KERNEL_STATE_PENDING
            m.message = "being created"
            self.controller.index(m.kernel_id, self)
        await self.commit()  # the ids are known before any daemon creates them
        requests = [self._request(m, avoid.get((m.role, m.index))) for m in members]
        placer = self.controller.placer
        owner = self.record.owner
        failures: dict[str, str] = {}
        if peer:
            agents = placer.reserve(requests)
            for m, agent in zip(members, agents, strict=True):
                if isinstance(agent, AgentHostError):
                    failures.setdefault(m.role, f"{_member_name(m)} not placed: {agent}")
            if failures:
                placer.release(
                    [
                        r
                        for r, a in zip(requests, agents, strict=True)
                        if not isinstance(a, AgentHostError)
                    ]
                )
                for m in members:
                    m.message = failures.get(m.role, "not created: another role failed")
                    m.state = pb.KERNEL_STATE_UNSPECIFIED
                await self.commit()
                return failures
            taken: dict[AgentId, set[int]] = {}
            for m, request, agent in zip(members, requests, agents, strict=True):
                assert not isinstance(agent, AgentHostError)
                used = taken.setdefault(
                    agent.agent_id, ports_held(self.controller.manager, agent.agent_id)
                )
                try:
                    picked = pick_host_ports(agent, len(request.spec.ports), used)
                except AgentHostError as exc:
                    failures.setdefault(m.role, f"{_member_name(m)}: {exc}")
                    continue
                used.update(picked)
                for port, host_port in zip(request.spec.ports, picked, strict=True):
                    port.host_port = host_port
                m.host = host_of(agent.daemon_address)
                m.ports.clear()
                m.ports.update({p.name: p.host_port for p in request.spec.ports})
            if failures:
                placer.release(requests)
                await self.commit()
                return failures
            for m, request in zip(members, requests, strict=True):
                request.spec.env.update(self._peers_env(self.plan.by_name[m.role]))
            outcomes = await placer.create(owner, requests, agents)
        else:
            for m, request in zip(members, requests, strict=True):
                request.spec.env.update(self._peers_env(self.plan.by_name[m.role]))
            outcomes = await placer.place(owner, requests)
        for m, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, AgentHostError):
                m.state = pb.KERNEL_STATE_UNSPECIFIED
                m.message = f"not created: {outcome}"
                failures.setdefault(m.role, f"{_member_name(m)} not created: {outcome}")
            else:
                self._fill(m, outcome)
                m.message = "waiting to be ready"
        await self.commit()
        return failures

    def _request(self, m: mpb.GroupMember, avoid: AgentId | None) -> Request:
        role = self.plan.by_name[m.role]
        spec = kernel_spec(role.kernel, m.kernel_id)
        spec.env.update(discovery.identity_env(self.name, role.name, m.index))
        spec.labels.update(discovery.member_labels(self.name, self.record.uid, role.name, m.index))
        placement = role.placement
        return Request(
            spec=spec,
            scaling_group=role.scaling_group,
            agent_id=AgentId(placement.agent) if placement.agent else None,
            backend=role.kernel.backend or "",
            spread=role.name if placement.spread else "",
            avoid=frozenset([avoid]) if avoid else frozenset(),
        )

    def _peers_env(self, role: RolePlan) -> dict[str, str]:
        env: dict[str, str] = {}
        for name in role.depends_on:
            other = self.plan.by_name[name]
            endpoints = [Endpoint(m.host, dict(m.ports)) for m in self._members(name) if m.host]
            if endpoints:
                env.update(peers_env(name, other.port_names, endpoints))
        return env

    def _new_kernel_id(self, m: mpb.GroupMember) -> str:
        return f"{self.name}-{m.role}-{m.index}-{secrets.token_hex(2)}"

    async def _await_ready(self, roles: list[RolePlan]) -> dict[str, str]:
        """Wait until every member of roles is ready; role -> why it failed."""
        pairs = [(role, m) for role in roles for m in self._members(role.name)]
        results = await asyncio.gather(*(self._until_ready(role, m) for role, m in pairs))
        failures: dict[str, str] = {}
        for (role, _), why in zip(pairs, results, strict=True):
            if why is not None:
                failures.setdefault(role.name, why)
        return failures

    async def _until_ready(self, role: RolePlan, m: mpb.GroupMember) -> str | None:
        """None once the member is ready, else why it will not be (the group is ending,
        its kernel ended, or its readiness timed out)."""
        if m.ready and m.kernel_id in self.controller.kernels:
            return None
        readiness = role.readiness
        timeout = readiness.timeout if readiness else DEFAULT_READY_TIMEOUT
        period = readiness.period if readiness else DEFAULT_PERIOD
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = "its kernel is not running yet"
        while True:
            if self.ending is not None:
                return "the group is ending"
            record = self.controller.kernels.get(KernelId(m.kernel_id))
            if record is None:
                return f"{_member_name(m)}: its kernel {m.kernel_id} is gone"
            await self._adopt(record)
            self._fill(m, record)
            state = record.kernel.state
            if state == KERNEL_TERMINATED:
                return f"{_member_name(m)} ended: {_ended(record)}"
            if state == KERNEL_RUNNING:
                why = None
                if readiness is not None:
                    manager = self.controller.manager
                    agent = manager.registry.find(record.agent_id)
                    why = (
                        await probe(
                            readiness, manager.handle(agent), m.kernel_id, m.host, dict(m.ports)
                        )
                        if agent is not None
                        else f"its agent {record.agent_id} is not registered"
                    )
                if why is None:
                    m.ready = True
                    m.ready_at = time.time()
                    m.message = ""
                    await self.commit()
                    return None
                last = why
                if m.message != f"not ready: {why}":
                    m.message = f"not ready: {why}"
                    await self.commit()
            if loop.time() >= deadline:
                return f"{_member_name(m)} not ready within {format_duration(timeout)}: {last}"
            await asyncio.sleep(period)

    async def _role_failures(self, failures: dict[str, str]) -> bool:
        """Handle failed roles of a start; False when the group was rolled back."""
        coordinator = self.plan.coordinator.name
        policy = self.plan.document.spec.startup_policy
        if policy == "Atomic" or coordinator in failures:
            role, why = (
                (coordinator, failures[coordinator])
                if coordinator in failures
                else next(iter(failures.items()))
            )
            what = "the coordinator role" if role == coordinator else f"role {role!r}"
            await self._fail(
                "RolledBack", f"{what} failed to start: {why}; everything was rolled back"
            )
            return False
        doomed = [m for m in self.status.members if m.role in failures]
        await self._destroy(doomed)
        for m in doomed:
            m.kernel_id, m.ready = "", False
            m.message = f"not started: {failures[m.role]}"
            m.ClearField("ports")
            m.host = ""
        for role, why in failures.items():
            self.status.degraded_roles.add(role=role, reason=why)
            log.warning("group %s: role %s is degraded: %s", self.name, role, why)
        await self.commit()
        return True

    # ------------------------------------------------------------ running

    async def _supervise(self) -> None:
        kernels = self.controller.kernels
        registry = self.controller.manager.registry
        if registry.awaiting_registration():
            return  # records may be stale until the daemons registered again
        heal: list[tuple[mpb.GroupMember, AgentId | None]] = []
        now = time.time()
        for m in self.status.members:
            if not m.kernel_id:
                continue  # a role that never started (BestEffort)
            role = self.plan.by_name[m.role]
            record = kernels.get(KernelId(m.kernel_id))
            if record is not None:
                await self._adopt(record)
                self._fill(m, record)
            state = record.kernel.state if record is not None else KERNEL_TERMINATED
            if state == KERNEL_RUNNING:
                if not m.ready and role.restart_policy == "Never" and m.ready_at:
                    m.ready, m.message = True, ""  # its agent came back
                if not m.ready and role.restart_policy == "OnFailure":
                    heal.append((m, None))  # recreated, not ready yet
                continue
            if state == pb.KERNEL_STATE_PENDING:
                continue
            m.ready = False
            if record is None:
                m.state = KERNEL_TERMINATED
                m.message = "its kernel was removed"
            elif state == KERNEL_UNKNOWN:
                agent = registry.find(record.agent_id)
                m.message = f"its agent {record.agent_id} is LOST" + (
                    "" if agent is None or agent.status is Liveness.LOST else " (coming back)"
                )
            else:
                m.message = f"ended: {_ended(record)}"
            if role.restart_policy == "OnFailure":
                lost = record.agent_id if record is not None and state == KERNEL_UNKNOWN else None
                heal.append((m, lost))
            elif role.coordinator:
                await self._fail(
                    "CoordinatorLost",
                    f"coordinator {_member_name(m)} {m.message}; the group was ended",
                )
                return
        due = [(m, lost) for m, lost in heal if self._heal_at.get((m.role, m.index), 0) <= now]
        if due:
            await self._heal(due)
        self._settle("Healed" if self.status.phase == DEGRADED else "Running")
        await self.commit()

    async def _heal(self, items: list[tuple[mpb.GroupMember, AgentId | None]]) -> None:
        """Recreate members (elsewhere if their agent is LOST) and wait for them to be ready."""
        fresh = [m for m, _ in items if m.state != KERNEL_RUNNING or not m.kernel_id]
        again = [m for m, _ in items if m not in fresh]
        for m in fresh:
            record = self.controller.kernels.get(KernelId(m.kernel_id))
            if record is not None:
                await self._remove(record)
            m.restarts += 1
            log.info(
                "group %s: recreating %s (%s; restart %d)",
                self.name,
                _member_name(m),
                m.message,
                m.restarts,
            )
        avoid = {(m.role, m.index): lost for m, lost in items if lost is not None}
        if fresh:
            await self._create(fresh, peer=False, avoid=avoid)
        results = await asyncio.gather(
            *(self._until_ready(self.plan.by_name[m.role], m) for m in fresh + again)
        )
        now = time.time()
        for m, why in zip(fresh + again, results, strict=True):
            key = (m.role, m.index)
            if why is None:
                self._heal_at.pop(key, None)
                continue
            m.message = why
            step = HEAL_BACKOFF[min(m.restarts, len(HEAL_BACKOFF) - 1)]
            self._heal_at[key] = now + max(step, 1.0)

    def _settle(self, reason: str) -> None:
        degraded: dict[str, str] = {d.role: d.reason for d in self.status.degraded_roles}
        start_failed = {m.role for m in self.status.members if not m.kernel_id}
        degraded = {r: why for r, why in degraded.items() if r in start_failed}
        for m in self.status.members:
            if m.kernel_id and not m.ready:
                degraded.setdefault(m.role, f"{_member_name(m)}: {m.message or 'not ready'}")
        del self.status.degraded_roles[:]
        for role in self.plan.roles:
            if role.name in degraded:
                self.status.degraded_roles.add(role=role.name, reason=degraded[role.name])
        if degraded:
            roles = ", ".join(degraded)
            self._set_phase(DEGRADED, "Degraded", f"roles {roles} are not ready")
        else:
            self._set_phase(RUNNING, reason, "every member is ready")
            if not self.status.running_at:
                self.status.running_at = time.time()

    # -------------------------------------------------------------- ending

    async def _fail(self, reason: str, message: str) -> None:
        """Failed: end every member (reverse start order, within rollbackTimeout)."""
        self._set_phase(FAILED, reason, message)
        await self.commit()
        log.warning("group %s failed: %s", self.name, message)
        await self._destroy(list(self.status.members))
        self.status.finished_at = time.time()
        await self.commit()

    async def _end(self) -> None:
        """Terminating, every member ended, Terminated (reason kept)."""
        reason, message = self.ending or (self.status.reason, self.status.message)
        if self.status.phase != TERMINATING:
            if self.status.phase == FAILED:
                message = f"{message} (it had failed: {self.status.message})"
            self._set_phase(TERMINATING, reason, message)
            await self.commit()
        await self._destroy(list(self.status.members))
        self._set_phase(TERMINATED, self.status.reason, self.status.message)
        self.status.finished_at = self.status.finished_at or time.time()
        await self.commit()

    async def _destroy(self, members: Iterable[mpb.GroupMember]) -> None:
        """End members' kernels, later waves first, within rollbackTimeout; what is left
        after it is forgotten (its hold returns; a kernel that shows up again is swept)."""
        members = [m for m in members if m.kernel_id]
        timeout = self.record.document.spec.rollback_timeout
        kernels = self.controller.kernels
        try:
            async with asyncio.timeout(timeout):
                for wave in sorted({m.wave for m in members}, reverse=True):
                    batch = sorted((m for m in members if m.wave == wave), key=lambda m: -m.index)
                    records = [kernels.get(KernelId(m.kernel_id)) for m in batch]
                    await asyncio.gather(*(self._remove(r) for r in records if r is not None))
        except TimeoutError:
            left = [m.kernel_id for m in members if m.kernel_id in kernels]
            log.warning(
                "group %s: members %s not ended within rollbackTimeout %s; forgotten",
                self.name,
                ", ".join(left),
                format_duration(timeout),
            )
            for kernel_id in left:
                kernels.forget(KernelId(kernel_id))
            await self.controller.store.delete_kernels(left)
        for m in members:
            m.ready = False
            m.state = KERNEL_TERMINATED

    async def _remove(self, record: KernelRecord) -> None:
        try:
            await self.controller.manager.remove_kernel(record)
        except AgentHostError as exc:
            log.warning(
                "group %s: kernel %s not destroyed: %s; forgotten", self.name, record.kernel_id, exc
            )
            if self.controller.kernels.get(record.kernel_id) is record:
                self.controller.kernels.forget(record.kernel_id)
                await self.controller.store.delete_kernels([record.kernel_id])

    # ------------------------------------------------------------- details

    def _members(self, role: str) -> list[mpb.GroupMember]:
        return [m for m in self.status.members if m.role == role]

    def _fill(self, m: mpb.GroupMember, record: KernelRecord) -> None:
        kernel = record.kernel
        agent = self.controller.manager.registry.find(record.agent_id)
        m.agent_id = kernel.agent_id
        m.daemon_address = record.daemon_address
        m.node = agent.node if agent is not None else m.node
        m.host = host_of(record.daemon_address)
        if dict(m.ports) != dict(kernel.ports):
            m.ports.clear()
            m.ports.update(kernel.ports)
        m.state = kernel.state
        m.created_at = kernel.created_at
        if kernel.HasField("exit_code"):
            m.exit_code = kernel.exit_code

    async def _adopt(self, record: KernelRecord) -> None:
        """A member re-adopted from its daemon (after a manager restart) is the owner's again."""
        if record.owner != self.record.owner:
            record.owner = self.record.owner
            await self.controller.store.save_kernels([record])


def _member_name(m: mpb.GroupMember) -> str:
    return f"member {m.role}[{m.index}]"


def _ended(record: KernelRecord) -> str:
    kernel = record.kernel
    parts = []
    if kernel.HasField("exit_code"):
        parts.append(f"exit code {kernel.exit_code}")
    if kernel.status_message:
        parts.append(kernel.status_message)
    return ", ".join(parts) or "terminated"
