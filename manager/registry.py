"""The agents the manager knows and whether their daemons are alive.

`agent_id -> (daemon address, scaling group, capacity, occupied, status, last
heartbeat)`. A daemon registers all its agents at once and gets a session; its
heartbeats carry that session. A daemon whose heartbeats stop for its timeout
(`missed_heartbeats` of its own interval, or the configured `heartbeat_timeout`)
is expired: its agents become LOST and its session is dropped, so its next
heartbeat is refused and it registers again (which is when the manager
reconciles kernels with it). Sessions live only in memory, so a restarted
manager makes every daemon register again.

An agent id belongs to the daemon identity that registered it (with TLS, the name
in that daemon's certificate): another identity is refused, LOST or not, until an
admin removes the agent (`remove`). One identity may run on several nodes (the
pods of a DaemonSet share one certificate): each (identity, node) has a session
and agents of its own, so one node's registration never drops another's agents.
A daemon authenticated by its certificate cannot register or heartbeat as
another. Knows nothing of kernels, scheduling, storage or gRPC.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from common.ids import ID_SYNTAX, AgentId, is_valid_id
from manager.errors import AgentOwned, UnknownSession
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb


class Liveness(StrEnum):
    """Whether an agent's daemon heartbeats."""

    ALIVE = "alive"
    LOST = "lost"


@dataclass(slots=True)
class AgentRecord:
    """One agent as the manager knows it."""

    agent_id: AgentId
    daemon_id: str
    daemon_address: str
    node: str
    info: pb.AgentInfo  # as its daemon last reported it
    status: Liveness
    last_heartbeat: float  # unix seconds (shown); liveness itself uses the monotonic clock

    @property
    def scaling_group(self) -> str:
        """The agent's scaling group as last reported."""
        return self.info.scaling_group

    @property
    def schedulable(self) -> bool:
        """ALIVE and its backend answers: it may receive kernels."""
        return self.status is Liveness.ALIVE and self.info.healthy


@dataclass(slots=True)
class DaemonSession:
    """One daemon's registration: its agents and when it was last heard from."""

    daemon_id: str
    address: str
    node: str
    heartbeat_interval: float
    agent_ids: tuple[AgentId, ...]
    session_id: str  # empty: loaded from the store, waiting for the daemon to register
    last_seen: float = field(default_factory=time.monotonic)

    def owns(self, record: AgentRecord) -> bool:
        """Whether record is one of this session's agents (its identity, on its node)."""
        return record.daemon_id == self.daemon_id and record.node == self.node


@dataclass(frozen=True)
class Registration:
    """What a registration changed."""

    session_id: str
    agents: tuple[AgentRecord, ...]
    dropped: tuple[AgentId, ...]  # agents this daemon had before and no longer reports


class Registry:
    """Agents by id, and daemon sessions by (daemon id, node)."""

    def __init__(self, missed_heartbeats: int = 3, heartbeat_timeout: float | None = None) -> None:
        self.missed_heartbeats = missed_heartbeats
        self.heartbeat_timeout = heartbeat_timeout
        self._agents: dict[AgentId, AgentRecord] = {}
        # By (daemon id, node): one daemon identity may run on several nodes (a
        # DaemonSet's pods share one certificate), each with its own session and agents.
        self._daemons: dict[tuple[str, str], DaemonSession] = {}
        self._sessions: dict[str, DaemonSession] = {}

    # -------------------------------------------------------------- daemons

    def register(
        self, request: mpb.RegisterAgentsRequest, identity: str | None = None
    ) -> Registration:
        """Record a daemon's agents (all of them) and open a new session for it.

        identity is the daemon's authenticated name (its certificate's); None on a
        plaintext manager, where the daemon's own daemon_id is taken.
        """
        if not request.daemon_address:
            raise InvalidArgument("daemon_address is required (host:port the manager can reach)")
        if not request.agents:
            raise InvalidArgument("agents: a daemon registers at least one agent")
        daemon_id = _daemon_id(request.daemon_id, request.daemon_address, identity)
        ids = [AgentId(a.agent_id) for a in request.agents]
        for agent_id in ids:
            if not is_valid_id(agent_id):
                raise InvalidArgument(f"agent_id {agent_id!r} is not valid: {ID_SYNTAX}")
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"agent ids repeat within the registration: {ids}")
        for agent_id in ids:
            current = self._agents.get(agent_id)
            if current is not None and current.daemon_id != daemon_id:
                raise AgentOwned(
                    f"agent {agent_id!r} belongs to daemon {current.daemon_id!r} (at "
                    f"{current.daemon_address}, node {current.node!r}, {current.status.value}); "
                    f"daemon {daemon_id!r} may not take it over: agent ids are unique across "
                    f"daemons (an admin can remove a LOST agent: agenthost agents rm {agent_id})"
                )

        interval = request.heartbeat_interval if request.heartbeat_interval > 0 else 5.0
        key = (daemon_id, request.node)
        previous = self._daemons.pop(key, None)
        if previous is not None:
            self._sessions.pop(previous.session_id, None)
        kept = set(ids)
        dropped = tuple(a for a in (previous.agent_ids if previous else ()) if a not in kept)
        for agent_id in dropped:
            self._agents.pop(agent_id, None)
        # An agent this identity registered from another node (the daemon's node was
        # renamed) is now this session's alone.
        for agent_id in ids:
            current = self._agents.get(agent_id)
            if current is not None and (current.daemon_id, current.node) != key:
                other = self._daemons.get((current.daemon_id, current.node))
                if other is not None:
                    other.agent_ids = tuple(a for a in other.agent_ids if a != agent_id)

        session = DaemonSession(
            daemon_id=daemon_id,
            address=request.daemon_address,
            node=request.node,
            heartbeat_interval=interval,
            agent_ids=tuple(ids),
            session_id=uuid.uuid4().hex,
        )
        self._daemons[key] = session
        self._sessions[session.session_id] = session
        now = time.time()
        records = []
        for info in request.agents:
            record = AgentRecord(
                agent_id=AgentId(info.agent_id),
                daemon_id=daemon_id,
                daemon_address=request.daemon_address,
                node=request.node,
                info=info,
                status=Liveness.ALIVE,
                last_heartbeat=now,
            )
            self._agents[record.agent_id] = record
            records.append(record)
        return Registration(session.session_id, tuple(records), dropped)

    def heartbeat(
        self, request: mpb.HeartbeatRequest, identity: str | None = None
    ) -> tuple[DaemonSession, list[AgentRecord]]:
        """Note a heartbeat and the agents' reported state; UnknownSession if not registered.

        identity: as for register. Returns the session and the agents whose scaling
        group changed.
        """
        session = self._sessions.get(request.session_id)
        if session is None or session.address != request.daemon_address:
            raise UnknownSession(
                f"daemon at {request.daemon_address or '(no address given)'} has no session "
                "with this manager "
                "(manager restarted, or the daemon was LOST): register again"
            )
        if identity is not None and session.daemon_id != identity:
            raise PermissionDenied(
                f"daemon {identity!r} may not heartbeat for the session of daemon "
                f"{session.daemon_id!r}"
            )
        session.last_seen = time.monotonic()
        now = time.time()
        regrouped = []
        for beat in request.agents:
            record = self._agents.get(AgentId(beat.agent_id))
            if record is None or not session.owns(record):
                continue
            info = record.info
            info.occupied.CopyFrom(beat.occupied)
            info.kernel_count = beat.kernel_count
            info.healthy = beat.healthy
            info.status_message = beat.status_message
            if beat.scaling_group and beat.scaling_group != info.scaling_group:
                info.scaling_group = beat.scaling_group
                regrouped.append(record)
            record.last_heartbeat = now
        return session, regrouped

    def expire(self, now: float | None = None) -> list[DaemonSession]:
        """Mark LOST the agents of every daemon past its heartbeat timeout; return those daemons."""
        now = time.monotonic() if now is None else now
        expired = [d for d in self._daemons.values() if now - d.last_seen > self.timeout_of(d)]
        for daemon in expired:
            del self._daemons[(daemon.daemon_id, daemon.node)]
            self._sessions.pop(daemon.session_id, None)
            for agent_id in daemon.agent_ids:
                record = self._agents.get(agent_id)
                if record is not None and daemon.owns(record):
                    record.status = Liveness.LOST
        return expired

    def awaiting_registration(self) -> bool:
        """Whether a daemon read back from the store has neither registered again nor
        been found LOST yet (until then, its kernels' records may be out of date)."""
        return any(not d.session_id for d in self._daemons.values())

    def forgive(self, seconds: float) -> None:
        """Move every daemon's last heartbeat forward by seconds the manager was stalled."""
        for daemon in self._daemons.values():
            daemon.last_seen += seconds

    def timeout_of(self, daemon: DaemonSession) -> float:
        """Seconds without a heartbeat after which daemon's agents are LOST."""
        if self.heartbeat_timeout is not None:
            return self.heartbeat_timeout
        return self.missed_heartbeats * daemon.heartbeat_interval

    def remove(self, agent_id: str) -> AgentRecord:
        """Forget a LOST agent, so that any daemon identity may register it again."""
        record = self.get(agent_id)
        if record.status is Liveness.ALIVE:
            raise FailedPrecondition(
                f"agent {agent_id!r} is ALIVE (daemon {record.daemon_id!r} at "
                f"{record.daemon_address} heartbeats); stop that daemon or remove the agent "
                "from its config first"
            )
        del self._agents[record.agent_id]
        daemon = self._daemons.get((record.daemon_id, record.node))
        if daemon is not None:
            daemon.agent_ids = tuple(a for a in daemon.agent_ids if a != record.agent_id)
        return record

    def restore(self, record: AgentRecord, heartbeat_interval: float) -> None:
        """Put back an agent read from the store.

        An ALIVE agent gets a session-less daemon entry: the daemon's next heartbeat
        is refused (it registers again), and if none comes it is expired like any other.
        """
        self._agents[record.agent_id] = record
        if record.status is not Liveness.ALIVE:
            return
        key = (record.daemon_id, record.node)
        daemon = self._daemons.get(key)
        if daemon is None:
            daemon = DaemonSession(
                daemon_id=record.daemon_id,
                address=record.daemon_address,
                node=record.node,
                heartbeat_interval=heartbeat_interval,
                agent_ids=(),
                session_id="",
            )
            self._daemons[key] = daemon
        daemon.agent_ids = (*daemon.agent_ids, record.agent_id)

    def interval_of(self, agent_id: AgentId) -> float:
        """The heartbeat interval of agent_id's daemon (5 s when unknown)."""
        record = self._agents.get(agent_id)
        daemon = self._daemons.get((record.daemon_id, record.node)) if record else None
        return daemon.heartbeat_interval if daemon else 5.0

    # --------------------------------------------------------------- agents

    def get(self, agent_id: str) -> AgentRecord:
        """The agent, or NotFound naming some of the known ids."""
        record = self._agents.get(AgentId(agent_id))
        if record is None:
            if not is_valid_id(agent_id):
                raise InvalidArgument(f"agent_id {agent_id!r} is not valid: {ID_SYNTAX}")
            known = list(self._agents)
            shown = ", ".join(known[:10]) + (
                f" and {len(known) - 10} more" if len(known) > 10 else ""
            )
            raise NotFound(
                f"agent {agent_id!r} is not registered with the manager; known: {shown or 'none'}"
            )
        return record

    def find(self, agent_id: str) -> AgentRecord | None:
        """The agent, or None."""
        return self._agents.get(AgentId(agent_id))

    def list(self, scaling_group: str = "") -> list[AgentRecord]:
        """Agents in registration order, optionally of one scaling group."""
        return [
            r
            for r in self._agents.values()
            if not scaling_group or r.scaling_group == scaling_group
        ]

    def daemons_in_use(self) -> set[tuple[str, str]]:
        """Every daemon, (address, daemon id), some agent is on."""
        return {(r.daemon_address, r.daemon_id) for r in self._agents.values()}


def _daemon_id(claimed: str, address: str, identity: str | None) -> str:
    """The daemon id a registration is recorded under: the authenticated name if any."""
    if identity is None:
        return claimed or address
    if claimed and claimed != identity:
        raise PermissionDenied(
            f"daemon certificate {identity!r} may not register as daemon {claimed!r}: a "
            "daemon's identity is the name in its certificate"
        )
    return identity
