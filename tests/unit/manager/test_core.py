"""The manager's core without daemons: registrations, heartbeats, LOST agents, restarts.

Registrations and heartbeats are fed to `Manager` directly (as the servicer would);
its store is a temporary SQLite file. Calls that would reach a daemon are not made.
The reconciliation rules themselves are tested in test_reconcile.py.
"""

from __future__ import annotations

import asyncio
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.errors import Unauthenticated
from common.principal import Principal
from manager.config import ManagerConfig, ManagerSection
from manager.core import Manager
from manager.delegation import DELEGATION_LABEL, Budget
from manager.errors import AgentLost, BadRequest, DelegationExhausted, StoreError
from manager.tokens import new_delegated_token, new_token
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

RUNNING, PENDING = pb.KERNEL_STATE_RUNNING, pb.KERNEL_STATE_PENDING
TERMINATED, UNKNOWN = pb.KERNEL_STATE_TERMINATED, pb.KERNEL_STATE_UNKNOWN
T0 = 1_000_000.0  # the daemon's clock


def kernel(
    kernel_id: str, agent_id: str = "a0", state: int = RUNNING, created: float = T0
) -> pb.Kernel:
    return pb.Kernel(
        kernel_id=kernel_id,
        agent_id=agent_id,
        state=state,  # type: ignore[arg-type]
        created_at=created,
        allocated=pb.Resources(memory_bytes=1 << 20),
    )


def registration(*kernels: pb.Kernel, taken_at: float = T0 + 10) -> mpb.RegisterAgentsRequest:
    return mpb.RegisterAgentsRequest(
        daemon_address="127.0.0.1:7001",
        node="n1",
        daemon_id="n1/d",
        heartbeat_interval=1,
        taken_at=taken_at,
        agents=[
            pb.AgentInfo(
                agent_id="a0",
                scaling_group="default",
                healthy=True,
                capacity=pb.Resources(memory_bytes=1 << 30, ports=10),
            )
        ],
        kernels=kernels,
    )


def heartbeat(
    session: str, *states: tuple[str, int], taken_at: float = T0 + 20
) -> mpb.HeartbeatRequest:
    return mpb.HeartbeatRequest(
        daemon_address="127.0.0.1:7001",
        session_id=session,
        taken_at=taken_at,
        agents=[
            mpb.AgentHeartbeat(
                agent_id="a0",
                scaling_group="default",
                healthy=True,
                kernels=[mpb.KernelStatus(kernel_id=k, state=s) for k, s in states],  # type: ignore[misc]
            )
        ],
    )


DAEMON = Principal(kind="insecure", role="daemon", name="loopback")
ADMIN = Principal(kind="token", role="user", name="admin", admin=True)


def config(tmp_path: Path, **settings: object) -> ManagerConfig:
    return ManagerConfig(ManagerSection(db_path=tmp_path / "m.db", **settings))  # type: ignore[arg-type]


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[Manager]:
    m = await Manager.create(config(tmp_path))
    yield m
    await m.close()


def states(m: Manager) -> dict[str, int]:
    return {k: r.kernel.state for k, r in m.kernels.items()}


class TestRegistrationReconciles:
    async def test_unknown_kernels_are_adopted_and_hold_their_resources(
        self, manager: Manager
    ) -> None:
        await manager.register(DAEMON, registration(kernel("k1"), kernel("k2", state=TERMINATED)))
        assert states(manager) == {"k1": RUNNING, "k2": TERMINATED}
        assert manager.scheduler.usage("a0").memory == 1 << 20  # type: ignore[arg-type]

    async def test_kernels_the_daemon_no_longer_has_become_terminated(
        self, manager: Manager
    ) -> None:
        await manager.register(DAEMON, registration(kernel("k1"), kernel("k2")))
        await manager.register(DAEMON, registration(kernel("k1")))
        assert states(manager) == {"k1": RUNNING, "k2": TERMINATED}
        assert manager.kernels["k2"].kernel.status_message == "gone from its daemon"  # type: ignore[index]

    async def test_a_snapshot_older_than_the_kernel_does_not_terminate_it(
        self, manager: Manager
    ) -> None:
        await manager.register(DAEMON, registration(kernel("k1", created=T0 + 50)))
        await manager.register(DAEMON, registration(taken_at=T0 + 40))
        assert states(manager) == {"k1": RUNNING}


class TestHeartbeats:
    async def test_exit_is_applied_and_frees_the_hold(self, manager: Manager) -> None:
        session = await manager.register(DAEMON, registration(kernel("k1")))
        await manager.heartbeat(DAEMON, heartbeat(session, ("k1", TERMINATED)))
        assert states(manager) == {"k1": TERMINATED}
        assert manager.scheduler.usage("a0").memory == 0  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("known", "reported", "after"),
        [
            (RUNNING, PENDING, RUNNING),
            (TERMINATED, RUNNING, TERMINATED),
            (TERMINATED, PENDING, TERMINATED),
            (PENDING, RUNNING, RUNNING),
        ],
        ids=["running stays running", "terminated stays", "terminated stays (pending)", "forward"],
    )
    async def test_a_kernels_state_only_moves_forward(
        self, manager: Manager, known: int, reported: int, after: int
    ) -> None:
        session = await manager.register(DAEMON, registration(kernel("k1", state=known)))
        await manager.heartbeat(DAEMON, heartbeat(session, ("k1", reported)))
        assert states(manager) == {"k1": after}

    async def test_a_kernel_missing_from_a_heartbeat_is_terminated(self, manager: Manager) -> None:
        session = await manager.register(DAEMON, registration(kernel("k1")))
        await manager.heartbeat(DAEMON, heartbeat(session))
        assert states(manager) == {"k1": TERMINATED}


class TestLiveness:
    async def test_expired_daemon_makes_agents_lost_and_kernels_unknown(
        self, tmp_path: Path
    ) -> None:
        m = await Manager.create(config(tmp_path, heartbeat_timeout=0.05))
        try:
            await m.register(DAEMON, registration(kernel("k1"), kernel("k2", state=TERMINATED)))

            async def lost() -> bool:
                await m.expire()
                return m.list_agents()[0].status == mpb.AGENT_STATUS_LOST

            for _ in range(200):
                if await lost():
                    break
                await asyncio.sleep(0.02)
            assert states(m) == {"k1": UNKNOWN, "k2": TERMINATED}
            # Registering again makes it ALIVE and the daemon's word wins.
            await m.register(DAEMON, registration(kernel("k1")))
            assert m.list_agents()[0].status == mpb.AGENT_STATUS_ALIVE
            assert states(m)["k1"] == RUNNING
        finally:
            await m.close()


@pytest.fixture
async def lost(tmp_path: Path) -> AsyncIterator[Manager]:
    """A manager whose one agent a0 (kernel k1 running, k2 terminated) is LOST."""
    m = await Manager.create(config(tmp_path, heartbeat_timeout=1e-6))
    await m.register(DAEMON, registration(kernel("k1"), kernel("k2", state=TERMINATED)))
    for _ in range(200):
        await m.expire()
        if m.list_agents()[0].status == mpb.AGENT_STATUS_LOST:
            break
        await asyncio.sleep(0.01)
    yield m
    await m.close()


def lost_message(kernel_id: str) -> re.Pattern[str]:
    return re.compile(
        r"agent 'a0' is LOST \(its daemon at 127\.0\.0\.1:7001 has sent no heartbeat since "
        rf"\d\d:\d\d:\d\d\); kernel '{kernel_id}' can be reached once it is back"
    )


class TestUserOperationsOnALostAgent:
    """Nothing here reaches a daemon: nothing listens at the agent's address."""

    async def test_get_shows_the_last_known_record(self, lost: Manager) -> None:
        got = await lost.get_kernel(ADMIN, "k1")
        assert (got.kernel.state, got.daemon_address) == (UNKNOWN, "127.0.0.1:7001")
        assert (got.scaling_group, got.node) == ("default", "n1")

    async def test_destroying_a_kernel_that_holds_resources_is_unavailable(
        self, lost: Manager
    ) -> None:
        with pytest.raises(AgentLost) as err:
            await lost.destroy_kernel(ADMIN, "k1")
        assert lost_message("k1").fullmatch(str(err.value))
        assert states(lost) == {"k1": UNKNOWN, "k2": TERMINATED}

    async def test_a_terminated_kernel_is_forgotten_without_its_daemon(self, lost: Manager) -> None:
        gone = await lost.destroy_kernel(ADMIN, "k2", "a0")
        assert (gone.kernel.kernel_id, gone.kernel.state) == ("k2", TERMINATED)
        assert [
            k.kernel.kernel_id for k in lost.list_kernels(ADMIN, scaling_group="default")[0]
        ] == ["k1"]

    async def test_execute_and_logs_are_unavailable(self, lost: Manager) -> None:
        with pytest.raises(AgentLost) as err:
            await lost.kernel_logs(ADMIN, pb.GetKernelLogsRequest(kernel_id="k1"))
        assert lost_message("k1").fullmatch(str(err.value))
        with pytest.raises(AgentLost):
            _ = [
                m
                async for m in lost.execute(ADMIN, pb.ExecuteRequest(kernel_id="k1", argv=["true"]))
            ]


class TestRestart:
    async def test_everything_comes_back_from_the_store(self, tmp_path: Path) -> None:
        m = await Manager.create(config(tmp_path))
        await m.register(DAEMON, registration(kernel("k1"), kernel("k2")))
        await m.close()
        again = await Manager.create(config(tmp_path))
        try:
            assert [a.info.agent_id for a in again.list_agents()] == ["a0"]
            listed, _ = again.list_kernels(ADMIN)
            assert [k.kernel.kernel_id for k in listed] == ["k1", "k2"]
            assert again.scheduler.usage("a0").memory == 2 << 20  # type: ignore[arg-type]
            assert listed[0].daemon_address == "127.0.0.1:7001"
        finally:
            await again.close()


class TestDelegation:
    """A delegating kernel's token and limits, without daemons (creates through real
    daemons are in tests/integration/trust/test_delegation.py)."""

    @staticmethod
    def delegating(manager: Manager, kernel_id: str, limits: Budget) -> tuple[str, pb.Kernel]:
        token, grant = new_delegated_token(kernel_id, "default", limits, "token:alice")
        manager.tokens.add(grant)
        parent = kernel(kernel_id)
        parent.spec.labels[DELEGATION_LABEL] = grant.token_id
        return token, parent

    async def test_its_token_stops_the_moment_the_manager_learns_it_ended(
        self, manager: Manager
    ) -> None:
        token, parent = self.delegating(manager, "p", Budget.of(0, 0, 1))
        session = await manager.register(DAEMON, registration(parent))
        assert manager.tokens.authenticate(token).parent_kernel_id == "p"
        await manager.heartbeat(DAEMON, heartbeat(session, ("p", TERMINATED)))
        with pytest.raises(Unauthenticated, match="kernel 'p' no longer works"):
            manager.tokens.authenticate(token)
        listed, _ = manager.list_kernels(ADMIN)
        assert listed[0].delegation.token_id and not listed[0].delegation.active

    async def test_a_restart_ends_tokens_of_kernels_gone_meanwhile(self, tmp_path: Path) -> None:
        m = await Manager.create(config(tmp_path))
        token, _ = self.delegating(m, "p", Budget.of(0, 0, 1))
        grant = m.tokens.authenticate(token)
        await m.store.save_token(grant)  # saved, but its kernel never recorded
        await m.close()
        again = await Manager.create(config(tmp_path))
        try:
            with pytest.raises(Unauthenticated, match="kernel 'p' no longer works"):
                again.tokens.authenticate(token)
        finally:
            await again.close()

    async def test_past_its_limits_a_create_is_refused_before_anything_is_reserved(
        self, manager: Manager
    ) -> None:
        token, parent = self.delegating(manager, "p", Budget.of(0, 0, 1))
        await manager.register(DAEMON, registration(parent))
        principal = manager.tokens.authenticate(token).principal()
        owned = kernel("c1")
        manager.kernels.add(owned, "127.0.0.1:7001", owner=str(principal))
        with pytest.raises(DelegationExhausted) as err:
            await manager.create_kernel(principal, pb.KernelSpec(kernel_id="c2", command=["x"]))
        assert str(err.value) == (
            "kernel 'c2' would pass the limits kernel 'p' was given for what it creates: "
            "kernels: limit 1 (--delegate-kernels), 1 in use, this create adds 1"
        )
        assert "c2" not in manager.kernels and not manager.reconciler.creating

    @pytest.mark.parametrize("label", ["agenthost.parent", "agenthost.delegation"])
    async def test_labels_only_the_manager_sets_are_refused(
        self, manager: Manager, label: str
    ) -> None:
        spec = pb.KernelSpec(command=["x"], labels={label: "k9"})
        with pytest.raises(BadRequest, match=f"label '{label}' is set by the manager"):
            await manager.create_kernel(ADMIN, spec)

    async def test_env_the_delegation_sets_is_refused_from_the_caller(
        self, manager: Manager
    ) -> None:
        spec = pb.KernelSpec(command=["x"], env={"AGENTHOST_TOKEN": "mine"})
        with pytest.raises(BadRequest, match="env AGENTHOST_TOKEN: set by the manager"):
            await manager.create_kernel(ADMIN, spec, delegate=True)
        assert manager.tokens.delegations() == []


class TestRestartKeepsOccupancy:
    async def test_occupancy_from_heartbeats_is_listed_right_after_a_restart(
        self, tmp_path: Path
    ) -> None:
        first = await Manager.create(config(tmp_path))
        session = await first.register(DAEMON, registration())
        beat = heartbeat(session)
        beat.agents[0].occupied.memory_bytes = 3 << 20
        beat.agents[0].kernel_count = 2
        await first.heartbeat(DAEMON, beat)
        await first.close()

        second = await Manager.create(config(tmp_path))
        try:
            [agent] = second.list_agents()
            assert (agent.info.occupied.memory_bytes, agent.info.kernel_count) == (3 << 20, 2)
        finally:
            await second.close()


class TestBootstrapAdminToken:
    """The manager's first start leaves an admin credential where clients look (like k3s)."""

    async def test_first_start_writes_a_private_admin_token_that_later_starts_keep(
        self, tmp_path: Path
    ) -> None:
        file = tmp_path / "home" / "token"
        m = await Manager.create(config(tmp_path, admin_token_file=file))
        token = file.read_text().strip()
        assert stat.S_IMODE(file.stat().st_mode) == 0o600
        assert stat.S_IMODE(file.parent.stat().st_mode) == 0o700
        assert m.tokens.authenticate(token).admin
        await m.close()
        again = await Manager.create(config(tmp_path, admin_token_file=file))
        assert file.read_text().strip() == token
        assert [t.name for t in again.tokens.list()] == ["admin"]
        assert again.tokens.authenticate(token).admin
        await again.close()

    async def test_a_token_file_from_elsewhere_is_adopted_as_admin(self, tmp_path: Path) -> None:
        file = tmp_path / "token"
        token, _ = new_token("someone", admin=True, scaling_groups=[])
        file.write_text(token + "\n")
        m = await Manager.create(config(tmp_path, admin_token_file=file))
        assert m.tokens.authenticate(token).admin
        await m.close()

    async def test_a_revoked_bootstrap_token_stays_revoked(self, tmp_path: Path) -> None:
        file = tmp_path / "token"
        m = await Manager.create(config(tmp_path, admin_token_file=file))
        await m.revoke_token("admin")
        await m.close()
        again = await Manager.create(config(tmp_path, admin_token_file=file))
        with pytest.raises(Unauthenticated, match="revoked"):
            again.tokens.authenticate(file.read_text().strip())
        await again.close()

    async def test_a_file_that_holds_no_token_is_refused_naming_it(self, tmp_path: Path) -> None:
        file = tmp_path / "token"
        file.write_text("not a token\n")
        with pytest.raises(StoreError, match=rf"admin_token_file {file}: not an agenthost token"):
            await Manager.create(config(tmp_path, admin_token_file=file))
