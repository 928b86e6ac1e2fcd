"""The manager's operations: the shared core every ManagerService handler calls.

Ties together the registry (who is where, alive or LOST), the scheduler (which
agent, and what is promised to each), the kernel table and how daemons' reports
reconcile it (`manager.kernels`, `manager.reconcile`), the client (calls routed by
agent_id) and the store (write-through, so a restart loses nothing). Each
operation resolves its agent once and passes the record along: to the client
(which daemon to call), to the occupancy shown at once and to the answer. When a
daemon is expired its agents are LOST and their kernels UNKNOWN until it registers
again; fetching a kernel a heartbeat named runs in the background.

Every user operation receives the caller's `Principal` (resolved by the server's
authorization policy): a kernel belongs to the principal that created it, and a
non-admin creates only in its scaling groups and reaches only its own kernels;
kernel env values are shown only to their owner and admins. Tokens live in the
`TokenTable` the policy checks against, written through to the store.

Delegated spawning: a kernel created with `delegate` gets a token of its own in its
env (`manager/delegation.py` has the rules and the arithmetic, `manager/delegation_state.py`
the charges in flight and the cascades). Its children carry
the `agenthost.parent` label and are owned by that token's principal, which creates
only in the kernel's scaling group and within its limits (checked against the
kernel table, plus creates in flight, before anything is reserved). When a kernel
ends (its record TERMINATED or forgotten, however the manager learnt it) its token
is revoked at once and its children are destroyed, theirs in turn; DestroyKernel
answers once its kernel's whole tree is gone.

Knows protocol messages and the parts above; nothing of gRPC servers or contexts,
of SQL, or of the reconciliation rules themselves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from common.atomic_file import write_atomically
from common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from common.formatting import format_bytes
from common.ids import ID_SYNTAX, AgentId, KernelId, is_valid_id, new_kernel_id
from common.kernel_events import EndReason, waited
from common.paging import rendered_page
from common.principal import Principal
from manager.client import AgentHandle, DaemonClient
from manager.config import ManagerConfig
from manager.delegation import (
    DELEGATION_ENV,
    DELEGATION_LABEL,
    PARENT_LABEL,
    ZERO,
    Budget,
    delegation_env,
    resolve_limits,
)
from manager.delegation_state import DelegationState
from manager.errors import (
    AgentLost,
    AllAgentsBusy,
    BadRequest,
    DaemonUnreachable,
    StoreError,
    UnknownSession,
)
from manager.groups.document import KernelTemplateDocument
from manager.kernels import (
    REDACTED,
    TERMINATED,
    KernelRecord,
    KernelTable,
    account,
    scrub_secrets,
)
from manager.reconcile import GONE, Reconciler
from manager.registry import AgentRecord, Liveness, Registration, Registry
from manager.scheduler import Demand, Scheduler
from manager.store import Store
from manager.templates import TemplateRecord, TemplateTable, merged_spec
from manager.tokens import (
    ADMIN_TOKEN_NAME,
    TokenRecord,
    TokenTable,
    new_delegated_token,
    new_token,
    record_for,
)
from manager.watch import table_end, watch
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

log = logging.getLogger(__name__)

_STATUS = {Liveness.ALIVE: mpb.AGENT_STATUS_ALIVE, Liveness.LOST: mpb.AGENT_STATUS_LOST}
# Agents tried for one CreateKernel when daemons answer RESOURCE_EXHAUSTED (their
# view, e.g. host ports bound by other processes, can be narrower than ours).
CREATE_ATTEMPTS = 3
MANAGER_LABELS = (PARENT_LABEL, DELEGATION_LABEL)  # set by the manager alone


@dataclass
class PendingRegistration:
    """A registration whose kernels arrive in chunks (RegisterKernels)."""

    request: mpb.RegisterAgentsRequest
    registration: Registration
    kernels: list[pb.Kernel]


class Manager:
    """Registry, scheduler, client and store behind the manager's operations."""

    def __init__(
        self,
        config: ManagerConfig,
        store: Store,
        registry: Registry,
        scheduler: Scheduler,
        client: DaemonClient,
        kernels: KernelTable,
        tokens: TokenTable,
        templates: TemplateTable | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.templates = templates if templates is not None else TemplateTable()
        self.store = store
        self.registry = registry
        self.scheduler = scheduler
        self.client = client
        self.kernels = kernels
        self.reconciler = Reconciler(kernels)
        self._tasks: set[asyncio.Task[None]] = set()
        # Registrations whose kernels are still arriving in chunks, by session id.
        self._pending: dict[str, PendingRegistration] = {}
        self._persisted_info: dict[AgentId, bytes] = {}  # AgentInfo as last written
        # Where kernels given a delegated token reach the manager (see `listening_on`).
        self.address = config.manager.advertise_address or config.manager.listen
        self.delegations = DelegationState(
            tokens, kernels, store, lambda record: self.remove_kernel(record), self._spawn
        )
        self._liveness = asyncio.create_task(self._watch_liveness(), name="liveness")
        self._pruning = asyncio.create_task(self._prune_forever(), name="kernel retention")
        self._unsubscribe = kernels.subscribe(self.delegations.on_kernel_change)
        self.delegations.sweep()

    @classmethod
    async def create(cls, config: ManagerConfig) -> Manager:
        """Open the store and rebuild the registry, holds and kernels from it."""
        store = await Store.open(config.db_path)
        try:
            saved_agents, saved_kernels = await store.load()
        except BaseException:
            await store.close()
            raise
        section = config.manager
        registry = Registry(section.missed_heartbeats, section.heartbeat_timeout)
        scheduler = Scheduler(section.scheduling_policy)
        for saved in saved_agents:
            registry.restore(saved.record, saved.heartbeat_interval)
            _offer(scheduler, saved.record)
        kernels = KernelTable(scheduler, saved_kernels)
        try:
            tokens = TokenTable(await store.load_tokens())
            templates = TemplateTable(await store.load_templates())
            await _bootstrap_admin_token(config.admin_token_file, tokens, store)
        except BaseException:
            await store.close()
            raise
        client = DaemonClient(
            call_timeout=section.call_timeout,
            create_timeout=section.create_timeout,
            execute_timeout=section.execute_timeout,
            retries=section.retries,
            credentials=config.tls.channel_credentials() if config.tls else None,
        )
        log.info(
            "manager state %s: %d agents, %d kernels",
            config.db_path,
            len(saved_agents),
            len(kernels),
        )
        return cls(config, store, registry, scheduler, client, kernels, tokens, templates)

    def listening_on(self, address: str) -> None:
        """The user port is bound at address: what delegating kernels are told, unless
        [manager] advertise_address says otherwise (a wildcard host becomes loopback)."""
        if self.config.manager.advertise_address:
            return
        host, _, port = address.rpartition(":")
        if host in ("0.0.0.0", "[::]", "::", ""):
            host = "127.0.0.1"
        self.address = f"{host}:{port}"

    async def close(self) -> None:
        """Stop the liveness loop and background work; close channels and the store."""
        self._unsubscribe()
        tasks = [self._liveness, self._pruning, *self._tasks, *self.delegations.cascades]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()
        await self.store.close()

    # -------------------------------------------------------- daemon-facing

    async def register(self, principal: Principal, request: mpb.RegisterAgentsRequest) -> str:
        """Record a daemon's agents and open its session; reconcile its kernels once the
        registration has them all (more_kernels: the rest follow in RegisterKernels)."""
        registration = self.registry.register(request, _daemon_identity(principal))
        for agent_id in registration.dropped:
            self.scheduler.remove_agent(agent_id)
        for record in registration.agents:
            _offer(self.scheduler, record)
        await self.store.save_agents(registration.agents, self.registry.interval_of)
        await self.store.delete_agents(registration.dropped)
        await self.client.close_unused(self.registry.daemons_in_use())
        pending = PendingRegistration(request, registration, list(request.kernels))
        if request.more_kernels:
            self._pending[registration.session_id] = pending
        else:
            await self._reconcile_registration(pending)
        return registration.session_id

    async def register_kernels(
        self, principal: Principal, request: mpb.RegisterKernelsRequest
    ) -> None:
        """Take one more chunk of a registration's kernels; reconcile after the last."""
        pending = self._pending.get(request.session_id)
        if pending is None:
            raise UnknownSession(
                "no registration in progress for this session (the manager restarted or the "
                "daemon was LOST): register again"
            )
        identity = _daemon_identity(principal)
        if identity is not None and identity != pending.registration.agents[0].daemon_id:
            raise PermissionDenied(
                f"daemon {identity!r} may not add to another daemon's registration"
            )
        pending.kernels.extend(request.kernels)
        if request.last:
            del self._pending[request.session_id]
            await self._reconcile_registration(pending)

    async def _reconcile_registration(self, pending: PendingRegistration) -> None:
        request, registration = pending.request, pending.registration
        changed = self.reconciler.registration(
            [r.agent_id for r in registration.agents],
            pending.kernels,
            request.taken_at,
            request.daemon_address,
        )
        for agent_id in registration.dropped:
            changed += self.kernels.terminate_all(agent_id, "its agent is no longer on its daemon")
        await self._save(changed)
        log.info(
            "daemon at %s (node %s) registered agents %s%s",
            request.daemon_address,
            request.node,
            ", ".join(r.agent_id for r in registration.agents),
            f"; {len(changed)} kernel records reconciled" if changed else "",
        )

    async def heartbeat(self, principal: Principal, request: mpb.HeartbeatRequest) -> None:
        """Apply a heartbeat: agents' occupancy and health, kernels' states."""
        session, regrouped = self.registry.heartbeat(request, _daemon_identity(principal))
        for record in regrouped:
            self.scheduler.set_scaling_group(record.agent_id, record.scaling_group)
            log.info("agent %s: scaling group is now %s", record.agent_id, record.scaling_group)
        changed: list[KernelRecord] = []
        unknown: list[tuple[AgentId, KernelId]] = []
        reported: list[AgentRecord] = list(regrouped)
        for beat in request.agents:
            agent_id = AgentId(beat.agent_id)
            agent = self.registry.find(agent_id)
            if agent is None or not session.owns(agent):
                continue
            self.scheduler.set_schedulable(agent_id, agent.schedulable)
            applied = self.reconciler.heartbeat(
                agent_id, beat.kernels, request.taken_at, beat.removed_kernel_ids, request.delta
            )
            changed += applied.changed
            unknown += [(agent_id, kernel_id) for kernel_id in applied.to_adopt]
            # Occupancy and health as last reported survive a manager restart too,
            # written only when they changed.
            snapshot = agent.info.SerializeToString(deterministic=True)
            if self._persisted_info.get(agent_id) != snapshot:
                self._persisted_info[agent_id] = snapshot
                if agent not in reported:
                    reported.append(agent)
        if reported:
            await self.store.save_agents(reported, self.registry.interval_of)
        await self._save(changed)
        for agent_id, kernel_id in unknown:
            self.reconciler.adopting.add(kernel_id)
            self._spawn(self._adopt(agent_id, kernel_id))

    async def expire(self) -> list[AgentId]:
        """Mark LOST the agents of daemons past their heartbeat timeout; their kernels UNKNOWN."""
        lost: list[AgentRecord] = []
        changed: list[KernelRecord] = []
        for daemon in self.registry.expire():
            self._pending.pop(daemon.session_id, None)
            agents = [
                r
                for a in daemon.agent_ids
                if (r := self.registry.find(a)) is not None and r.status is Liveness.LOST
            ]
            log.warning(
                "daemon at %s (node %s) sent no heartbeat for %.1fs: agents %s are LOST",
                daemon.address,
                daemon.node,
                self.registry.timeout_of(daemon),
                ", ".join(r.agent_id for r in agents) or "-",
            )
            for record in agents:
                self.scheduler.set_schedulable(record.agent_id, False)
                changed += self.kernels.mark_unknown(record.agent_id)
            lost += agents
        await self.store.save_agents(lost, self.registry.interval_of)
        await self._save(changed)
        return [r.agent_id for r in lost]

    # ---------------------------------------------------------- user-facing

    def list_agents(self, scaling_group: str = "") -> list[mpb.ManagedAgent]:
        """Every agent (of one scaling group), with status and daemon address."""
        return [_managed_agent(r) for r in self.registry.list(scaling_group)]

    def list_kernels(
        self,
        principal: Principal,
        agent_id: str = "",
        scaling_group: str = "",
        states: Collection[int] = (),
        labels: Mapping[str, str] | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> tuple[list[mpb.ManagedKernel], str]:
        """A page of the kernels principal may see (all for admins), on one agent, of one
        scaling group, in the states and with the labels asked for; and the next token."""
        only = self.registry.get(agent_id) if agent_id else None
        wanted = set(states)
        chosen: list[tuple[KernelRecord, AgentRecord | None]] = []
        for record in self.kernels.values():
            if only is not None and record.agent_id != only.agent_id:
                continue
            if wanted and record.kernel.state not in wanted:
                continue
            if labels and any(record.kernel.spec.labels.get(k) != v for k, v in labels.items()):
                continue
            agent = only or self.registry.find(record.agent_id)
            if not _may_see(principal, record, agent):
                continue
            if scaling_group and (agent.scaling_group if agent else "") != scaling_group:
                continue
            chosen.append((record, agent))
        return rendered_page(
            chosen,
            lambda pair: (pair[0].kernel.created_at, pair[0].kernel_id),
            page_size,
            page_token,
            lambda pair: self._managed(pair[0], pair[1], principal),
        )

    async def create_kernel(
        self,
        principal: Principal,
        spec: pb.KernelSpec,
        scaling_group: str = "",
        agent_id: str = "",
        template: str = "",
        delegate: bool = False,
        delegate_limits: mpb.DelegateLimits | None = None,
    ) -> mpb.ManagedKernel:
        """Schedule (or take the pinned agent), reserve, create on the daemon, record.

        With a template, spec's own fields go over the template's; its scaling group
        is the default, and only agents of its backend (if it names one) are tried.
        With delegate, the kernel is given a delegated token (module docstring); a
        delegated principal's kernel is charged to its delegation first.
        """
        backend = ""
        if template:
            if principal.viewer:
                raise PermissionDenied(f"{principal} is a viewer token: it may only list and get")
            chosen = self.templates.get(template).spec
            spec = merged_spec(chosen, spec)
            scaling_group = scaling_group or ("" if agent_id else chosen.scaling_group or "")
            backend = chosen.backend or ""
        spec = _copy(spec)
        if not spec.kernel_id:
            spec.kernel_id = new_kernel_id()
        kernel_id = KernelId(spec.kernel_id)
        if not is_valid_id(kernel_id):
            raise InvalidArgument(f"kernel_id {kernel_id!r} is not valid: {ID_SYNTAX}")
        if kernel_id in self.kernels or kernel_id in self.reconciler.creating:
            where = self.kernels[kernel_id].agent_id if kernel_id in self.kernels else "?"
            raise AlreadyExists(f"kernel {kernel_id!r} already exists (on agent {where!r})")
        pinned = self.registry.get(agent_id) if agent_id else None
        if pinned is None:
            # A delegated token has one scaling group, its kernel's: that is its default.
            default = principal.scaling_groups[0] if principal.delegated else ""
            group = scaling_group or default or self.config.manager.default_scaling_group
        elif scaling_group and scaling_group != pinned.scaling_group:
            raise BadRequest(
                f"agent {agent_id!r} is in scaling group {pinned.scaling_group!r}, "
                f"not {scaling_group!r}; give one or the other"
            )
        else:
            group = pinned.scaling_group
        if principal.viewer:
            raise PermissionDenied(f"{principal} is a viewer token: it may only list and get")
        if not principal.may_use_scaling_group(group):
            raise PermissionDenied(
                f"{principal} may not create kernels in scaling group {group!r}; its scaling "
                f"groups: {', '.join(principal.scaling_groups) or 'none'}"
            )
        _claim_manager_labels(principal, spec)
        limits = resolve_limits(spec, delegate_limits or mpb.DelegateLimits()) if delegate else None
        if limits is not None:
            given = sorted(k for k in DELEGATION_ENV if k in spec.env)
            if given:
                raise BadRequest(
                    f"env {', '.join(given)}: set by the manager for a kernel created with "
                    "delegate; leave them out"
                )
        owner = str(principal)
        if principal.delegated:
            self.delegations.charge(principal, kernel_id, Budget.of_spec(spec) + (limits or ZERO))
        grant: TokenRecord | None = None
        try:
            if limits is not None:
                token, grant = new_delegated_token(kernel_id, group, limits, owner)
                # Known before the kernel starts: its first call may come at once.
                self.tokens.add(grant)
                spec.labels[DELEGATION_LABEL] = grant.token_id
                ca = self.config.tls.ca if self.config.tls is not None else None
                spec.env.update(delegation_env(token, self.address, ca))
            managed = await self._place(principal, spec, group, pinned, template, backend)
        except BaseException:
            if grant is not None:
                self.tokens.discard(grant.token_id)
            raise
        finally:
            self.delegations.settle(owner, kernel_id)
        if principal.delegated:
            await self.delegations.undo_if_orphaned(principal, kernel_id)
        if grant is not None and limits is not None:
            # As it is now: the kernel may have ended already, its token with it.
            await self.store.save_token(self.tokens.get(grant.token_id) or grant)
            log.info(
                "kernel %s delegates (token %s): in scaling group %s, at most %d kernels, "
                "%d cores, %s of memory",
                kernel_id,
                grant.token_id,
                group,
                limits.kernels,
                limits.cores,
                format_bytes(limits.memory_bytes),
            )
        return managed

    async def _place(
        self,
        principal: Principal,
        spec: pb.KernelSpec,
        group: str,
        pinned: AgentRecord | None,
        template: str,
        backend: str,
    ) -> mpb.ManagedKernel:
        """Reserve an agent of group (or pinned), create spec there and record it."""
        kernel_id = KernelId(spec.kernel_id)
        agent_id = pinned.agent_id if pinned else ""
        demand = Demand.of_spec(spec)
        tried: list[AgentId] = []
        if backend:
            if pinned is not None and pinned.info.backend != backend:
                raise BadRequest(
                    f"template {template!r} runs on {backend} agents; agent {agent_id!r} is "
                    f"{pinned.info.backend}"
                )
            tried = [a.agent_id for a in self.registry.list(group) if a.info.backend != backend]
        busy: ResourceExhausted | None = None
        for _ in range(CREATE_ATTEMPTS):
            reservation = self.scheduler.reserve(
                kernel_id, demand, group, pinned.agent_id if pinned else None, tried
            )
            self.reconciler.creating.add(kernel_id)
            try:
                agent = pinned or self.registry.get(reservation.agent_id)
                handle = self._on(agent)
                created = (await handle.create_kernels([spec]))[0]
            except ResourceExhausted as exc:
                self.scheduler.release(kernel_id)
                if pinned:
                    raise
                log.info("agent %s cannot take %s now: %s", reservation.agent_id, kernel_id, exc)
                tried.append(reservation.agent_id)
                busy = exc
                continue
            except BaseException:
                self.scheduler.release(kernel_id)
                raise
            finally:
                self.reconciler.creating.discard(kernel_id)
            record = self.kernels.add(created, handle.address, owner=str(principal))
            account(agent.info, created, +1)
            await self._save([record])
            log.info("kernel %s created on agent %s", kernel_id, reservation.agent_id)
            return self._managed(record, agent, principal)
        raise AllAgentsBusy(
            f"agents {', '.join(tried[-CREATE_ATTEMPTS:])} of scaling group {group!r} had no "
            f"room for "
            f"{demand.describe()}: {busy}"
        )

    async def get_kernel(
        self, principal: Principal, kernel_id: str, agent_id: str = ""
    ) -> mpb.ManagedKernel:
        """The kernel as its daemon sees it now (as last known while its agent is LOST)."""
        record = self._owned(principal, kernel_id, agent_id, viewing=True)
        agent = self.registry.find(record.agent_id)
        if agent is None or agent.status is Liveness.LOST:
            return self._managed(record, agent, principal)
        fresh: pb.Kernel | None
        try:
            fresh = await self._on(agent).get_kernel(kernel_id)
        except NotFound:
            fresh = None
        if self.reconciler.fetched(record, fresh):
            await self._save([record])
        return self._managed(record, agent, principal)

    async def destroy_kernel(
        self, principal: Principal, kernel_id: str, agent_id: str = "", grace_seconds: float = 0
    ) -> mpb.ManagedKernel:
        """Destroy the kernel on its daemon and forget it (on a LOST agent: UNAVAILABLE);
        answer once the kernels it created (and theirs) are gone too."""
        record = self._owned(principal, kernel_id, agent_id)
        agent = self.registry.find(record.agent_id)
        if agent is not None and agent.status is Liveness.LOST and record.holds_resources:
            raise _lost(agent, kernel_id)
        ended = self._managed(await self.remove_kernel(record, grace_seconds), agent, principal)
        await self.delegations.children_ended(record)
        return ended

    async def remove_kernel(self, record: KernelRecord, grace_seconds: float = 0) -> KernelRecord:
        """Destroy record's kernel on its daemon (if its agent is ALIVE) and forget it.

        No ownership check: callers decide who may. The kernel of a LOST agent is
        only forgotten here (its hold returns); should its daemon come back with it,
        it is adopted again. Returns the kernel as it ended.
        """
        agent = self.registry.find(record.agent_id)
        kernel_id = record.kernel_id
        final = _copy(record.kernel)
        if agent is not None and agent.status is Liveness.ALIVE:
            self.reconciler.destroying.add(kernel_id)
            try:
                final = scrub_secrets(
                    await self._on(agent).destroy_kernel(kernel_id, grace_seconds)
                )
            except NotFound:
                if final.state != TERMINATED:
                    final.state = TERMINATED
                    final.status_message = GONE
                    final.end_reason = EndReason.LOST
            finally:
                self.reconciler.destroying.discard(kernel_id)
        if record.holds_resources and agent is not None:
            account(agent.info, record.kernel, -1)
        if self.kernels.get(kernel_id) is record:
            if final.state == TERMINATED:
                self.kernels.update(record, _copy(final))  # waiters and watchers hear how it ended
            self.kernels.forget(kernel_id)
            await self.store.delete_kernels([kernel_id])
        log.info("kernel %s destroyed on agent %s", kernel_id, record.agent_id)
        return KernelRecord(final, record.daemon_address, record.owner)

    async def execute(
        self, principal: Principal, request: pb.ExecuteRequest
    ) -> AsyncIterator[pb.ExecuteResponse]:
        """Stream Execute through from the kernel's daemon."""
        record = self._owned(principal, request.kernel_id, request.agent_id)
        async for message in self._reachable(record).execute(
            request.kernel_id, list(request.argv), request.stdin, request.timeout
        ):
            yield message

    async def kernel_logs(
        self, principal: Principal, request: pb.GetKernelLogsRequest
    ) -> pb.GetKernelLogsResponse:
        """The end of the kernel's output, from its daemon."""
        record = self._owned(principal, request.kernel_id, request.agent_id)
        return await self._reachable(record).kernel_logs(
            request.kernel_id, request.tail_lines, request.max_bytes
        )

    async def stream_logs(
        self, principal: Principal, request: pb.StreamKernelLogsRequest
    ) -> AsyncIterator[pb.KernelLogChunk]:
        """The kernel's output in chunks, streamed through from its daemon."""
        record = self._owned(principal, request.kernel_id, request.agent_id)
        async for chunk in self._reachable(record).stream_logs(
            request.kernel_id, request.tail_lines, request.follow
        ):
            yield chunk

    async def wait_kernel(
        self, principal: Principal, request: pb.WaitKernelRequest
    ) -> pb.WaitKernelResponse:
        """The kernel once it has terminated, or as it is when the timeout passes.

        Routed to its daemon, which knows the end at once; the manager's own table is
        listened to meanwhile, so an end learnt another way (the agent removed, the
        kernel destroyed by another call, the daemon unreachable and then LOST) ends
        the wait too.
        """
        record = self._owned(principal, request.kernel_id, request.agent_id, viewing=True)
        if record.holds_resources:
            await self._await_end(record, request.timeout)
        return waited(_copy(_seen(record, principal)))

    def watch_kernels(self, principal: Principal, agent_id: str) -> AsyncIterator[pb.KernelEvent]:
        """Lifecycle events of the kernels principal may see (of agent_id, or all)."""
        only = self.registry.get(agent_id).agent_id if agent_id else None

        def shown(record: KernelRecord) -> pb.Kernel | None:
            if only is not None and record.agent_id != only:
                return None
            if not _may_see(principal, record, self.registry.find(record.agent_id)):
                return None
            kernel: pb.Kernel = _copy(_seen(record, principal))
            return kernel

        return watch(self.kernels, shown)

    async def prune(self, older_than: float, now: float | None = None) -> list[KernelId]:
        """Forget terminated kernels that ended older_than seconds ago (0: all of them)."""
        now = time.time() if now is None else now
        gone = [
            r.kernel_id
            for r in self.kernels.values()
            if r.kernel.state == TERMINATED
            and r.kernel_id not in self.reconciler.destroying
            and now - (r.kernel.finished_at or now) >= older_than
        ]
        for kernel_id in gone:
            self.kernels.forget(kernel_id)
        await self.store.delete_kernels(gone)
        if gone:
            log.info("pruned %d terminated kernels", len(gone))
        return gone

    # --------------------------------------------------------------- admin

    async def remove_agent(self, agent_id: str) -> tuple[mpb.ManagedAgent, int]:
        """Forget a LOST agent and its kernel records; any daemon may register it again."""
        record = self.registry.remove(agent_id)
        self.scheduler.remove_agent(record.agent_id)
        forgotten = [k.kernel_id for k in self.kernels.on_agent(record.agent_id)]
        for kernel_id in forgotten:
            self.kernels.forget(kernel_id)
        await self.store.delete_kernels(forgotten)
        await self.store.delete_agents([record.agent_id])
        log.info(
            "agent %s of daemon %s removed with %d kernel records",
            record.agent_id,
            record.daemon_id,
            len(forgotten),
        )
        return _managed_agent(record), len(forgotten)

    async def apply_templates(
        self, principal: Principal, documents: Iterable[KernelTemplateDocument]
    ) -> list[TemplateRecord]:
        """Create or replace templates (each: its owner or an admin), all written at once."""
        if principal.viewer:
            raise PermissionDenied(f"{principal} is a viewer token: it may only list and get")
        now = time.time()
        documents = list(documents)
        for document in documents:  # every refusal before any change
            self.templates.check_may_change(principal, document.metadata.name, "replace")
        applied = [self.templates.apply(principal, d, now) for d in documents]
        for record in applied:
            await self.store.save_template(record)
            log.info("template %s applied", record.name)
        return applied

    async def delete_template(self, principal: Principal, name: str) -> TemplateRecord:
        """Forget a template (its owner or an admin); groups made from it keep their copy."""
        record = self.templates.remove(principal, name)
        await self.store.delete_template(name)
        log.info("template %s removed", name)
        return record

    async def create_token(
        self,
        principal: Principal,
        name: str,
        admin: bool,
        scaling_groups: Iterable[str],
        expires_in: float,
        viewer: bool = False,
    ) -> tuple[str, TokenRecord]:
        """A new bearer token (shown once) and its record (kept, with only the hash)."""
        token, record = new_token(
            name, admin, scaling_groups, expires_in, str(principal), viewer=viewer
        )
        self.tokens.add(record)
        await self.store.save_token(record)
        log.info("token %r (id %s) created", record.name, record.token_id)
        return token, record

    async def revoke_token(self, name_or_id: str) -> TokenRecord:
        """Revoke a token; calls with it fail from now on."""
        record = self.tokens.revoke(name_or_id)
        await self.store.save_token(record)
        log.info("token %r (id %s) revoked", record.name, record.token_id)
        return record

    # -------------------------------------------------------------- details

    def _owned(
        self, principal: Principal, kernel_id: str, agent_id: str, viewing: bool = False
    ) -> KernelRecord:
        """The kernel, if principal may reach it: its owner or an admin (for viewing,
        also a viewer of its scaling group)."""
        record = self.kernels.locate(kernel_id, agent_id)
        if principal.admin or record.owner == str(principal):
            return record
        if viewing and _may_see(principal, record, self.registry.find(record.agent_id)):
            return record
        raise PermissionDenied(
            f"kernel {kernel_id!r} is not yours: {principal} reaches only the kernels it created"
        )

    async def _await_end(self, record: KernelRecord, timeout: float) -> None:
        """Return once record's kernel has ended (its record updated) or timeout (0: none)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        ended, stop_listening = table_end(self.kernels, record.kernel_id)
        routed: asyncio.Future[pb.WaitKernelResponse] | None = None
        agent = self.registry.find(record.agent_id)
        if agent is not None and agent.status is Liveness.ALIVE:
            routed = asyncio.ensure_future(self._on(agent).wait_kernel(record.kernel_id, timeout))
        try:
            while True:
                waiting: set[asyncio.Future[Any]] = {ended} if routed is None else {ended, routed}
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if routed is None or routed not in done:
                    return  # the table heard of the end, or the time is up
                try:
                    answer: pb.Kernel | None = routed.result().kernel
                except NotFound:
                    answer = None  # the daemon has forgotten it
                except DaemonUnreachable:
                    routed = None  # heartbeats and liveness will tell the end
                    continue
                ended_there = answer is None or answer.state == TERMINATED
                if ended_there and self.reconciler.fetched(record, answer):
                    await self._save([record])
                return
        finally:
            stop_listening()
            if routed is not None:
                routed.cancel()

    def handle(self, agent: AgentRecord) -> AgentHandle:
        """The handle on agent at its daemon's address (no second lookup): the one way
        every part of the manager reaches an agent."""
        return self.client.agent(agent.agent_id, agent.daemon_address, agent.daemon_id, agent.node)

    def _managed(
        self, record: KernelRecord, agent: AgentRecord | None, viewer: Principal
    ) -> mpb.ManagedKernel:
        """The kernel as viewer sees it (`_seen`), with its daemon, its agent's scaling
        group and node, and its delegation if it has one."""
        managed = mpb.ManagedKernel(
            kernel=_seen(record, viewer),
            daemon_address=record.daemon_address,
            scaling_group=agent.scaling_group if agent else "",
            node=agent.node if agent else "",
            owner=record.owner,
        )
        grant = self.delegations.grant_of(record)
        if grant is not None and grant.limits is not None:
            limits = grant.limits
            managed.delegation.CopyFrom(
                mpb.Delegation(
                    token_id=grant.token_id,
                    principal=grant.owner,
                    scaling_group=grant.scaling_groups[0] if grant.scaling_groups else "",
                    cores=limits.cores,
                    memory_bytes=limits.memory_bytes,
                    kernels=limits.kernels,
                    devices=limits.device_counts,
                    active=not grant.revoked_at,
                )
            )
        return managed

    def _on(self, agent: AgentRecord) -> AgentHandle:
        """The handle on agent (see handle)."""
        return self.handle(agent)

    def _reachable(self, record: KernelRecord) -> AgentHandle:
        """The handle on the kernel's agent; AgentLost while that agent is LOST."""
        agent = self.registry.get(record.agent_id)
        if agent.status is Liveness.LOST:
            raise _lost(agent, record.kernel.kernel_id)
        return self._on(agent)

    async def _adopt(self, agent_id: AgentId, kernel_id: KernelId) -> None:
        """Fetch a kernel a heartbeat named that the manager lacks, and adopt it."""
        try:
            # Resolved when the fetch runs: the agent may have gone since the heartbeat.
            handle = self._on(self.registry.get(agent_id))
            kernel = await handle.get_kernel(kernel_id)
        except Exception as exc:  # gone already, or the daemon is away: the next beat retries
            log.debug("kernel %s on agent %s not adopted: %s", kernel_id, agent_id, exc)
            return
        finally:
            self.reconciler.adopting.discard(kernel_id)
        record = self.reconciler.adopt(kernel, handle.address)
        if record is None:
            return
        await self._save([record])
        log.info("adopted kernel %s on agent %s", kernel_id, agent_id)

    async def _watch_liveness(self) -> None:
        interval = self.config.manager.liveness_check_interval
        while True:
            started = time.monotonic()
            await asyncio.sleep(interval)
            # Time the manager itself could not listen (its loop blocked, the
            # process stopped) is not time the daemons failed to heartbeat.
            stalled = time.monotonic() - started - interval
            if stalled > interval:
                log.warning("manager was stalled for %.1fs; heartbeat clocks extended", stalled)
                self.registry.forgive(stalled)
                continue
            try:
                await self.expire()
            except Exception:
                log.exception("liveness check failed")

    async def _prune_forever(self) -> None:
        """Forget terminated kernels kernel_retention after they ended."""
        retention = self.config.manager.kernel_retention
        if not retention:
            return
        while True:
            await asyncio.sleep(min(60.0, retention / 2))
            try:
                await self.prune(retention)
            except Exception:
                log.exception("pruning terminated kernels failed")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save(self, records: Iterable[KernelRecord]) -> None:
        await self.store.save_kernels(r for r in records if r.kernel_id in self.kernels)


def _offer(scheduler: Scheduler, agent: AgentRecord) -> None:
    """Tell the scheduler agent's group, capacity and whether it may receive kernels."""
    scheduler.upsert_agent(
        agent.agent_id,
        agent.scaling_group,
        Demand.of_resources(agent.info.capacity),
        agent.schedulable,
    )


def _managed_agent(agent: AgentRecord) -> mpb.ManagedAgent:
    """The agent as users see it: with its status and daemon."""
    return mpb.ManagedAgent(
        info=agent.info,
        status=_STATUS[agent.status],
        daemon_address=agent.daemon_address,
        node=agent.node,
        last_heartbeat=agent.last_heartbeat,
    )


def _claim_manager_labels(principal: Principal, spec: pb.KernelSpec) -> None:
    """Labels only the manager sets: refuse them from callers; mark a delegated
    principal's kernel with its parent."""
    for key in MANAGER_LABELS:
        if key not in spec.labels:
            continue
        if key == PARENT_LABEL and spec.labels[key] == principal.parent_kernel_id:
            continue
        raise BadRequest(
            f"label {key!r} is set by the manager (on kernels created by a delegating "
            "kernel, and on delegating kernels); leave it out"
        )
    if principal.delegated:
        spec.labels[PARENT_LABEL] = principal.parent_kernel_id


def _may_see(principal: Principal, record: KernelRecord, agent: AgentRecord | None) -> bool:
    """The one rule of who sees a kernel: an admin, its owner, a viewer of its scaling group."""
    if principal.admin or record.owner == str(principal):
        return True
    return principal.may_view_scaling_group(agent.scaling_group if agent else "")


def _seen(record: KernelRecord, viewer: Principal) -> pb.Kernel:
    """The kernel as viewer sees it: its env values only if viewer owns it or is an admin.

    The record itself when nothing is hidden (callers that keep it must copy it).
    """
    kernel = record.kernel
    if kernel.spec.env and not viewer.admin and record.owner != str(viewer):
        kernel = _copy(kernel)
        for key in kernel.spec.env:
            kernel.spec.env[key] = REDACTED
    return kernel


def _daemon_identity(principal: Principal) -> str | None:
    """The authenticated name of a daemon (None on a plaintext manager)."""
    return principal.name if principal.kind == "certificate" else None


async def _bootstrap_admin_token(path: Path, tokens: TokenTable, store: Store) -> None:
    """Accept the token in path as an admin token, making and writing one if missing.

    Like k3s's first start: the operator (and every client command on this host,
    which reads the same file by default) has an admin credential without a step.
    """
    now = time.time()
    try:
        token = (await asyncio.to_thread(path.read_text)).strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise StoreError(
            f"admin_token_file {path}: cannot read: {exc.strerror}; set [manager] "
            "admin_token_file to a readable file"
        ) from None
    if not token:
        token, record = new_token(ADMIN_TOKEN_NAME, True, (), created_by="bootstrap", now=now)
        await asyncio.to_thread(_write_secret, path, token + "\n")
        log.info("bootstrap admin token written to %s", path)
    else:
        try:
            record = record_for(token, ADMIN_TOKEN_NAME, admin=True, now=now)
        except InvalidArgument as exc:
            raise StoreError(f"admin_token_file {path}: {exc}") from None
        if tokens.get(record.token_id) is not None:
            return  # known already (possibly revoked on purpose: left as it is)
    for other in tokens.list():
        if other.name == ADMIN_TOKEN_NAME:
            record = replace(record, name=f"{ADMIN_TOKEN_NAME}-{record.token_id}")
            break
    tokens.add(record, now)
    await store.save_token(record)


def _write_secret(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, content, mode=0o600)


def _lost(agent: AgentRecord, kernel_id: str) -> AgentLost:
    since = time.strftime("%H:%M:%S", time.localtime(agent.last_heartbeat))
    return AgentLost(
        f"agent {agent.agent_id!r} is LOST (its daemon at {agent.daemon_address} has sent "
        f"no heartbeat since {since}); kernel {kernel_id!r} can be reached once it is back"
    )


def _copy(message: Any) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    return out
