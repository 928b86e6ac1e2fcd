"""Every group of the manager: created, listed, watched, deleted; reconciled by runners.

The controller validates a document whole before anything exists (shapes,
roles, templates, the caller's scaling groups and pinned agents), stores the
group, and starts its runner (`runner.py`). It subscribes to the kernel table:
a change of a member's kernel wakes that group's runner; a kernel labelled with
a group uid that no live group claims (a member of a deleted or rolled-back
group whose daemon was away, re-adopted later) is destroyed. Calls through the
manager that use a group (exec or logs of a member, its topology) count as
activity for its idleTimeout.

A group belongs to the principal that created it: others (but admins) neither
see nor reach it, and its members are created as that principal.
Knows the manager core, the kernel table and the group modules; nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from common.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from common.ids import KernelId
from common.principal import Principal
from manager.core import Manager
from manager.groups.discovery import LABEL_UID, Endpoint, peers_env
from manager.groups.document import load_group, parse_documents
from manager.groups.placement import Placer
from manager.groups.plan import GroupPlan, resolve_kernels
from manager.groups.record import PHASE_NAMES, GroupRecord, phase_name
from manager.groups.runner import GroupRunner
from manager.kernels import ChangeKind, KernelChange, KernelTable
from manager.store import Store
from protos import manager_pb2 as mpb

log = logging.getLogger(__name__)

# How long DeleteGroup waits for the members to end, beyond the group's rollbackTimeout.
DELETE_MARGIN = 10.0


class GroupController:
    """The manager's groups and their runners."""

    def __init__(self, manager: Manager, records: list[GroupRecord]) -> None:
        self.manager = manager
        self.kernels: KernelTable = manager.kernels
        self.store: Store = manager.store
        self.placer = Placer(manager)
        self._runners: dict[str, GroupRunner] = {}
        self._members: dict[str, GroupRunner] = {}  # kernel id -> its group's runner
        self._tasks: set[asyncio.Task[None]] = set()
        for record in records:
            runner = GroupRunner(self, record)
            self._runners[record.name] = runner
            for m in record.status.members:
                if m.kernel_id:
                    self._members[m.kernel_id] = runner
        self._unsubscribe = self.kernels.subscribe(self._on_kernel_change)

    @classmethod
    async def create(cls, manager: Manager) -> GroupController:
        """Every stored group, with its runner going on from its stored status."""
        controller = cls(manager, await manager.store.load_groups())
        for runner in controller._runners.values():
            runner.start()
        for record in list(manager.kernels.values()):
            controller._sweep_if_orphan(record.kernel_id, dict(record.kernel.spec.labels))
        log.info("groups: %d loaded", len(controller._runners))
        return controller

    async def close(self) -> None:
        """Stop every runner (groups go on after the next start)."""
        self._unsubscribe()
        tasks = [r.task for r in self._runners.values() if r.task is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------- operations

    async def create_group(self, principal: Principal, text: str, fmt: str = "") -> mpb.Group:
        """Validate a document whole, store the group (Pending) and start it."""
        if principal.viewer:
            raise PermissionDenied(f"{principal} is a viewer token: it may only list and get")
        documents = parse_documents(text, fmt or "yaml")
        if len(documents) != 1:
            raise InvalidArgument(f"give one AgentGroup document, not {len(documents)}")
        document = load_group(documents[0])
        name = document.metadata.name
        current = self._runners.get(name)
        if current is not None:
            raise AlreadyExists(
                f"group {name!r} already exists ({phase_name(current.status.phase)}, owner "
                f"{current.record.owner}); remove it first: agenthost group rm {name}"
            )
        kernels = resolve_kernels(
            document,
            self.manager.templates.specs(),
            self.manager.config.manager.default_scaling_group,
        )
        record = GroupRecord.new(document, kernels, str(principal), time.time())
        plan = record.plan()
        self._check_scope(principal, plan)
        if name in self._runners:  # created meanwhile
            raise AlreadyExists(f"group {name!r} already exists")
        runner = GroupRunner(self, record)
        self._runners[name] = runner
        try:
            await self.store.save_group(record)
        except BaseException:
            del self._runners[name]
            raise
        log.info(
            "group %s created: %d roles, %d members, %d waves (%s, %s)",
            name,
            len(plan.roles),
            plan.member_count,
            len(plan.waves),
            document.spec.topology,
            document.spec.startup_policy,
        )
        runner.start()
        return runner.to_proto()

    def get_group(self, principal: Principal, name: str) -> mpb.Group:
        """The group, if principal owns it (or is an admin)."""
        return self._owned(principal, name).to_proto()

    def list_groups(self, principal: Principal) -> list[mpb.Group]:
        """The groups principal owns (all for admins)."""
        caller = str(principal)
        return [
            r.to_proto()
            for r in self._runners.values()
            if principal.admin or r.record.owner == caller
        ]

    def count_by_phase(self) -> dict[str, int]:
        """How many groups are in each phase (every phase named, zeros included)."""
        counts = dict.fromkeys(PHASE_NAMES.values(), 0)
        for runner in self._runners.values():
            name = phase_name(runner.record.status.phase)
            counts[name] = counts.get(name, 0) + 1
        return counts

    async def delete_group(self, principal: Principal, name: str) -> mpb.Group:
        """End every member and forget the group; answers the group as it ended."""
        runner = self._owned(principal, name)
        if runner.task is None or runner.task.done():
            await self.forget(runner)
            return runner.to_proto()
        runner.request_end("Deleted", f"deleted by {principal}", forget=True)
        wait = runner.record.document.spec.rollback_timeout + DELETE_MARGIN
        try:
            await asyncio.wait_for(asyncio.shield(runner.task), wait)
        except TimeoutError:
            log.warning("group %s: still ending after %.0fs; it goes on", name, wait)
        return runner.to_proto()

    def topology(self, principal: Principal, name: str) -> mpb.GroupTopology:
        """Where each role's members are now, and the peers variables they imply."""
        runner = self._owned(principal, name)
        runner.last_activity = time.time()
        plan: GroupPlan = runner.plan
        out = mpb.GroupTopology(
            name=name, phase=runner.status.phase, topology=plan.document.spec.topology
        )
        for role in plan.roles:
            members = [m for m in runner.status.members if m.role == role.name]
            entry = out.roles.add(role=role.name, depends_on=role.depends_on)
            for m in members:
                if m.kernel_id:
                    entry.members.add(
                        index=m.index,
                        kernel_id=m.kernel_id,
                        host=m.host,
                        ports=m.ports,
                        ready=m.ready,
                    )
            endpoints = [Endpoint(m.host, dict(m.ports)) for m in members if m.kernel_id and m.host]
            if endpoints:
                entry.env.update(peers_env(role.name, role.port_names, endpoints))
        return out

    async def watch_group(self, principal: Principal, name: str) -> AsyncIterator[mpb.Group]:
        """The group now and at every change of its status, until Terminated."""
        runner = self._owned(principal, name)
        async for group in runner.watch():
            yield group

    def touch(self, kernel_id: str) -> None:
        """A call through the manager used a member: its group is not idle."""
        runner = self._members.get(kernel_id)
        if runner is not None:
            runner.last_activity = time.time()

    # ------------------------------------------------------ for the runners

    def index(self, kernel_id: str, runner: GroupRunner) -> None:
        """kernel_id is (about to be) a member of runner's group."""
        self._members[kernel_id] = runner

    def unindex(self, kernel_id: str) -> None:
        """kernel_id is no member any more."""
        if kernel_id:
            self._members.pop(kernel_id, None)

    async def forget(self, runner: GroupRunner) -> None:
        """Drop an ended group for good."""
        if self._runners.get(runner.name) is not runner:
            return
        del self._runners[runner.name]
        for m in runner.status.members:
            self.unindex(m.kernel_id)
        await self.store.delete_group(runner.name)
        log.info("group %s forgotten", runner.name)

    # ------------------------------------------------------------- details

    def _owned(self, principal: Principal, name: str) -> GroupRunner:
        runner = self._runners.get(name)
        if runner is None:
            if not name:
                raise InvalidArgument("name is required")
            raise NotFound(f"group {name[:63]!r} is not known to the manager")
        if not principal.admin and runner.record.owner != str(principal):
            raise PermissionDenied(
                f"group {name!r} is not yours: {principal} reaches only the groups it created"
            )
        return runner

    def _check_scope(self, principal: Principal, plan: GroupPlan) -> None:
        """Every role's scaling group is the caller's to use; pinned agents exist and agree."""
        problems = []
        for role in plan.roles:
            group = role.scaling_group
            if role.placement.agent:
                agent = self.manager.registry.find(role.placement.agent)
                if agent is None:
                    problems.append(
                        f"role {role.name!r}: agent {role.placement.agent!r} is not registered "
                        "with the manager"
                    )
                    continue
                if role.placement.scaling_group and agent.scaling_group != group:
                    problems.append(
                        f"role {role.name!r}: agent {agent.agent_id!r} is in scaling group "
                        f"{agent.scaling_group!r}, not {group!r}"
                    )
                group = agent.scaling_group
            if not principal.may_use_scaling_group(group):
                raise PermissionDenied(
                    f"{principal} may not create kernels in scaling group {group!r} (role "
                    f"{role.name!r}); its scaling groups: "
                    f"{', '.join(principal.scaling_groups) or 'none'}"
                )
        if problems:
            raise InvalidArgument(f"AgentGroup {plan.name!r}: " + "; ".join(problems))

    def _on_kernel_change(self, change: KernelChange) -> None:
        record = change.record
        runner = self._members.get(record.kernel_id)
        if runner is not None and runner.claims(record.kernel_id):
            runner.wake.set()
            return
        if change.kind is ChangeKind.ADDED:
            self._sweep_if_orphan(record.kernel_id, dict(record.kernel.spec.labels))

    def _sweep_if_orphan(self, kernel_id: KernelId, labels: dict[str, str]) -> None:
        uid = labels.get(LABEL_UID)
        if not uid:
            return
        runner = self._members.get(kernel_id)
        if runner is not None and runner.claims(kernel_id):
            return
        if self.manager.reconciler.busy(kernel_id):
            return
        self._spawn(self._remove_orphan(kernel_id))

    async def _remove_orphan(self, kernel_id: KernelId) -> None:
        await asyncio.sleep(0)  # out of the table's callback
        record = self.kernels.get(kernel_id)
        runner = self._members.get(kernel_id)
        if record is None or (runner is not None and runner.claims(kernel_id)):
            return
        log.info("kernel %s belongs to no live group any more: destroying it", kernel_id)
        try:
            await self.manager.remove_kernel(record)
        except Exception as exc:
            log.warning("orphan kernel %s not destroyed: %s", kernel_id, exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
