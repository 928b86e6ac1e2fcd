"""Agent groups through a real manager and two real daemons (in this process, over gRPC).

Daemon d1 has agents g0, g1 and daemon d2 has g2, g3 (all local backend, scaling
group default). Members are real processes; readiness probes are real TCP
connects and real execs; failures are real exits and a real daemon going away.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from common.ids import AgentId
from daemon.config import load_config
from daemon.server import DaemonServer
from manager.scheduler import Demand
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    pid_of,
    run,
    running_manager,
    user_channel,
)
from tests.servers import AGENTHOST, eventually, visible_to_kernels

ROOT = Path(__file__).resolve().parents[3]
PENDING, STARTING = mpb.GROUP_PHASE_PENDING, mpb.GROUP_PHASE_STARTING
RUNNING, DEGRADED = mpb.GROUP_PHASE_RUNNING, mpb.GROUP_PHASE_DEGRADED
FAILED, TERMINATED = mpb.GROUP_PHASE_FAILED, mpb.GROUP_PHASE_TERMINATED
AGENTS = ("g0", "g1", "g2", "g3")
HTTP = 'exec python3 -m http.server "$PORT_HTTP" --bind 127.0.0.1'
# Exits with 3 before its readiness (its port accepting) can ever pass.
CRASHING: dict[str, Any] = {
    "kernel": {"ports": [{"name": "http"}]},
    "readiness": {"port": "http", "timeout": "60s", "period": "0.1s"},
}


@dataclass
class Cluster:
    manager: Manager
    daemons: dict[str, DaemonServer]
    tmp_path: Path
    stopped: set[str] = field(default_factory=set)

    @property
    def stub(self) -> Any:
        return self.manager.stub

    @property
    def core(self) -> Any:
        return self.manager.server.manager

    async def stop_daemon(self, name: str) -> None:
        self.stopped.add(name)
        await self.daemons[name].stop(destroy_kernels=True, grace=0.5)

    def daemon_kernels(self) -> list[str]:
        return [
            k.kernel_id
            for name, d in self.daemons.items()
            if name not in self.stopped
            for k in d.runtime.list_kernels("")
        ]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    config = manager_config(tmp_path, missed_heartbeats=10)
    async with running_manager(config) as manager:
        daemons: dict[str, DaemonServer] = {}
        layout = {
            "d1": agents_toml(("g0", "default", 48600, ""), ("g1", "default", 48610, "")),
            "d2": agents_toml(("g2", "default", 48620, ""), ("g3", "default", 48630, "")),
        }
        cluster = Cluster(manager, daemons, tmp_path)
        try:
            for name, agents in layout.items():
                path = linked_daemon_config(tmp_path, name, manager.address, agents)
                daemons[name] = await DaemonServer.start(load_config(path))

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 4

            await eventually(registered)
            yield cluster
        finally:
            for name, daemon in daemons.items():
                if name not in cluster.stopped:
                    await daemon.stop(destroy_kernels=True, grace=0.5)


def document(name: str, *roles: dict[str, Any], **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "agenthost.io/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": name},
            "spec": {"roles": list(roles), **spec},
        }
    )


def role(name: str, command: str = "exec sleep 300", **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kernel": {"command": ["sh", "-c", command]}}
    kernel = fields.pop("kernel", {})
    out["kernel"].update(kernel)
    out.update(fields)
    return out


def coordinator(**fields: Any) -> dict[str, Any]:
    return role(
        "coordinator",
        HTTP,
        coordinator=True,
        kernel={"ports": [{"name": "http"}]},
        readiness={"port": "http", "timeout": "30s", "period": "0.1s"},
        **fields,
    )


async def create_group(stub: Any, text: str, fmt: str = "yaml") -> mpb.Group:
    response = await stub.CreateGroup(mpb.CreateGroupRequest(document=text, format=fmt))
    return response.group  # type: ignore[no-any-return]


async def get_group(stub: Any, name: str) -> mpb.Group:
    return (await stub.GetGroup(mpb.GetGroupRequest(name=name))).group  # type: ignore[no-any-return]


async def until_phase(stub: Any, name: str, *phases: int, timeout: float = 30.0) -> mpb.Group:
    async def reached() -> mpb.Group | None:
        group = await get_group(stub, name)
        return group if group.status.phase in phases else None

    return await eventually(reached, timeout=timeout, interval=0.1)


async def until_rolled_back(stub: Any, name: str) -> mpb.Group:
    """Failed, with every member ended (finished_at is set once the rollback is over)."""

    async def done() -> mpb.Group | None:
        group = await get_group(stub, name)
        return group if group.status.phase == FAILED and group.status.finished_at else None

    return await eventually(done, timeout=30, interval=0.1)


def members(group: mpb.Group, role_name: str) -> list[mpb.GroupMember]:
    return [m for m in group.status.members if m.role == role_name]


def nothing_held(cluster: Cluster) -> bool:
    scheduler = cluster.core.scheduler
    return all(scheduler.usage(AgentId(a)) == Demand() for a in AGENTS)


class TestStart:
    async def test_all_members_ready_is_running_with_labels_and_identity(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "g1",
            coordinator(),
            role("worker", replicas=2, dependsOn=["coordinator"], placement={"spread": True}),
        )
        created = await create_group(cluster.stub, text)
        assert created.status.phase in (PENDING, STARTING) and created.owner == "token:admin"
        group = await until_phase(cluster.stub, "g1", RUNNING)
        assert [(m.role, m.index, m.ready, m.wave) for m in group.status.members] == [
            ("coordinator", 0, True, 1),
            ("worker", 0, True, 2),
            ("worker", 1, True, 2),
        ]
        assert group.status.observed_generation == group.generation == 1
        assert (group.status.wave, group.status.waves) == (2, 2)
        workers = members(group, "worker")
        assert workers[0].agent_id != workers[1].agent_id  # spread
        kernels = await kernels_by_id(cluster.stub)
        assert set(kernels) == {m.kernel_id for m in group.status.members}
        worker = kernels[workers[1].kernel_id].kernel
        assert worker.spec.labels["agenthost.io/group"] == "g1"
        assert worker.spec.labels["agenthost.io/role"] == "worker"
        out, _, code = await run(
            cluster.stub,
            worker.kernel_id,
            ["sh", "-c", "echo $AGENTHOST_GROUP $AGENTHOST_ROLE $AGENTHOST_REPLICA"],
        )
        assert (out, code) == (b"g1 worker 1\n", 0)
        coordinator_member = members(group, "coordinator")[0]
        assert dict(worker.spec.env)["AGENTHOST_PEERS_COORDINATOR"] == (
            f"127.0.0.1:{coordinator_member.ports['http']}"
        )

    async def test_partly_ready_stays_starting(self, cluster: Cluster) -> None:
        never = role(
            "worker",
            "exec sleep 300",
            dependsOn=["coordinator"],
            kernel={"ports": [{"name": "http"}]},
            readiness={"port": "http", "timeout": "5m"},
        )
        await create_group(cluster.stub, document("g2", coordinator(), never))

        async def worker_waiting() -> mpb.Group | None:
            group = await get_group(cluster.stub, "g2")
            w = members(group, "worker")[0]
            return group if w.kernel_id and w.message.startswith("not ready") else None

        group = await eventually(worker_waiting, timeout=30)
        assert group.status.phase == STARTING
        assert [m.ready for m in group.status.members] == [True, False]
        assert "127.0.0.1:" in members(group, "worker")[0].message

    async def test_a_bad_document_is_refused_and_nothing_is_created(self, cluster: Cluster) -> None:
        text = document(
            "bad",
            role("a", coordinator=True, dependsOn=["b"]),
            role("b", dependsOn=["a"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create_group(cluster.stub, text)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "AgentGroup 'bad': dependsOn has a cycle: a -> b -> a"
        assert (await cluster.stub.ListGroups(mpb.ListGroupsRequest())).groups == []
        assert await kernels_by_id(cluster.stub) == {}

    async def test_a_missing_template_is_refused_and_a_known_one_is_used(
        self, cluster: Cluster
    ) -> None:
        text = document("t1", coordinator(), {"name": "worker", "template": "sleeper"})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create_group(cluster.stub, text)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == (
            "AgentGroup 't1': role 'worker': template 'sleeper' is not known; known: none"
        )
        assert await kernels_by_id(cluster.stub) == {}
        templates = (ROOT / "configs" / "groups" / "templates.yaml").read_text()
        applied = await cluster.stub.ApplyTemplate(mpb.ApplyTemplateRequest(document=templates))
        assert [t.name for t in applied.templates] == ["http-server", "sleeper"]
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "t1", RUNNING)
        kernels = await kernels_by_id(cluster.stub)
        assert list(kernels[members(group, "worker")[0].kernel_id].kernel.spec.command) == [
            "sleep",
            "86400",
        ]

    async def test_waves_start_a_role_only_once_its_dependencies_are_ready(
        self, cluster: Cluster
    ) -> None:
        flag = visible_to_kernels(cluster.tmp_path) / "coordinator-ready"
        text = document(
            "w1",
            role(
                "plan",
                coordinator=True,
                readiness={"exec": ["test", "-e", str(flag)], "timeout": "60s", "period": "0.1s"},
            ),
            role("code", dependsOn=["plan"], replicas=2),
            role("test", dependsOn=["code", "plan"]),
        )
        await create_group(cluster.stub, text)

        async def plan_probed() -> mpb.Group | None:
            group = await get_group(cluster.stub, "w1")
            plan = members(group, "plan")[0]
            return group if plan.message.startswith("not ready") else None

        group = await eventually(plan_probed, timeout=30)
        # The coordinator runs but is not ready: nothing of later waves exists.
        assert [m.kernel_id for m in group.status.members if m.role != "plan"] == ["", "", ""]
        assert len(await kernels_by_id(cluster.stub)) == 1
        flag.touch()
        group = await until_phase(cluster.stub, "w1", RUNNING)
        plan, code, test = (members(group, r) for r in ("plan", "code", "test"))
        # Each member's own start time (its daemon's clock, this host) follows the
        # readiness the manager observed of every role it depends on.
        assert all(c.created_at >= plan[0].ready_at for c in code)
        assert test[0].created_at >= max(c.ready_at for c in code)
        assert test[0].created_at >= plan[0].ready_at

    async def test_watch_streams_each_change_until_running(self, cluster: Cluster) -> None:
        await create_group(cluster.stub, document("wt", coordinator(), role("worker")))
        phases = []
        async for group in cluster.stub.WatchGroup(mpb.WatchGroupRequest(name="wt")):
            phases.append(group.status.phase)
            if group.status.phase == RUNNING:
                break
        assert phases[-1] == RUNNING and STARTING in phases
        assert phases == sorted(phases)


class TestDiscovery:
    async def test_a_worker_reaches_the_coordinator_across_daemons(self, cluster: Cluster) -> None:
        fetch = (
            'python3 -c "import os, urllib.request; '
            "print(urllib.request.urlopen('http://' + "
            "os.environ['AGENTHOST_PEERS_COORDINATOR'] + '/', timeout=5).status)\""
        )
        text = document(
            "d1",
            coordinator(placement={"agent": "g0"}),
            role("worker", dependsOn=["coordinator"], placement={"agent": "g2"}),
        )
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "d1", RUNNING)
        c, w = members(group, "coordinator")[0], members(group, "worker")[0]
        assert c.daemon_address == cluster.daemons["d1"].address
        assert w.daemon_address == cluster.daemons["d2"].address
        out, err, code = await run(cluster.stub, w.kernel_id, ["sh", "-c", fetch])
        assert (out, code) == (b"200\n", 0), err
        topology = await cluster.stub.GetGroupTopology(mpb.GetGroupTopologyRequest(name="d1"))
        roles = {r.role: r for r in topology.roles}
        assert roles["coordinator"].env["AGENTHOST_PEERS_COORDINATOR"] == (
            f"127.0.0.1:{c.ports['http']}"
        )
        assert list(roles["worker"].depends_on) == ["coordinator"]

    async def test_peer_members_know_every_other_role_from_the_start(
        self, cluster: Cluster
    ) -> None:
        ports = {"kernel": {"ports": [{"name": "http"}, {"name": "admin"}]}}
        text = document(
            "p1",
            role("planner", HTTP, coordinator=True, **ports),
            role("coder", HTTP, **ports),
            role("tester", HTTP, **ports),
            topology="Peer",
        )
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "p1", RUNNING)
        kernels = await kernels_by_id(cluster.stub)
        by_role = {m.role: m for m in group.status.members}
        for m in group.status.members:
            env = dict(kernels[m.kernel_id].kernel.spec.env)
            for other in by_role.values():
                key = f"AGENTHOST_PEERS_{other.role.upper()}"
                if other.role == m.role:
                    assert key not in env
                    continue
                assert env[key] == f"127.0.0.1:{other.ports['http']}"
                assert env[f"{key}_ADMIN"] == f"127.0.0.1:{other.ports['admin']}"
        tester = by_role["tester"]

        async def reached() -> bool:
            # The roles have no readiness check: RUNNING is not yet listening.
            out, _, code = await run(
                cluster.stub,
                tester.kernel_id,
                [
                    "python3",
                    "-c",
                    "import os, urllib.request; print(urllib.request.urlopen('http://' + "
                    "os.environ['AGENTHOST_PEERS_PLANNER'] + '/', timeout=5).status)",
                ],
            )
            return (out, code) == (b"200\n", 0)

        await eventually(reached)


class TestFailures:
    async def test_atomic_rollback_after_the_third_role_fails_leaves_nothing(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "rb",
            coordinator(),
            role("b", dependsOn=["coordinator"], replicas=2),
            role("c", "exit 3", dependsOn=["b"], **CRASHING),
            rollbackTimeout="20s",
        )
        await create_group(cluster.stub, text)
        group = await until_rolled_back(cluster.stub, "rb")
        assert group.status.reason == "RolledBack"
        assert group.status.message.startswith("role 'c' failed to start: member c[0] ended")
        assert "exit code 3" in group.status.message
        assert await kernels_by_id(cluster.stub) == {}
        assert cluster.daemon_kernels() == []
        assert nothing_held(cluster)

    async def test_best_effort_records_the_failed_role_and_keeps_the_rest(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "be",
            coordinator(),
            role("b", dependsOn=["coordinator"]),
            role("c", "exit 3", dependsOn=["b"], **CRASHING),
            role("d", dependsOn=["c"]),
            startupPolicy="BestEffort",
        )
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "be", DEGRADED)
        degraded = {d.role: d.reason for d in group.status.degraded_roles}
        assert set(degraded) == {"c", "d"}
        assert "exit code 3" in degraded["c"]
        assert degraded["d"] == "it depends on role 'c', which failed"
        live = {m.role for m in group.status.members if m.ready}
        assert live == {"coordinator", "b"}
        kernels = await kernels_by_id(cluster.stub)
        assert {k.kernel.spec.labels["agenthost.io/role"] for k in kernels.values()} == {
            "coordinator",
            "b",
        }

    async def test_a_failed_coordinator_rolls_back_even_under_best_effort(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "bc",
            role("a", "exit 1", coordinator=True, **CRASHING),
            role("b"),
            startupPolicy="BestEffort",
        )
        await create_group(cluster.stub, text)
        group = await until_rolled_back(cluster.stub, "bc")
        assert group.status.message.startswith("the coordinator role failed to start")
        assert await kernels_by_id(cluster.stub) == {}
        assert cluster.daemon_kernels() == [] and nothing_held(cluster)

    async def test_a_member_that_exits_is_recreated_under_on_failure(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "h1",
            coordinator(),
            role("worker", dependsOn=["coordinator"], restartPolicy="OnFailure"),
        )
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "h1", RUNNING)
        old = members(group, "worker")[0]
        kernel = (await kernels_by_id(cluster.stub))[old.kernel_id].kernel
        os.killpg(pid_of(kernel), signal.SIGKILL)

        async def healed() -> mpb.Group | None:
            group = await get_group(cluster.stub, "h1")
            worker = members(group, "worker")[0]
            ok = group.status.phase == RUNNING and worker.restarts == 1 and worker.ready
            return group if ok else None

        group = await eventually(healed, timeout=30)
        new = members(group, "worker")[0]
        assert new.kernel_id != old.kernel_id
        kernels = await kernels_by_id(cluster.stub)
        assert old.kernel_id not in kernels and new.kernel_id in kernels
        topology = await cluster.stub.GetGroupTopology(mpb.GetGroupTopologyRequest(name="h1"))
        worker_topology = next(r for r in topology.roles if r.role == "worker")
        assert [m.kernel_id for m in worker_topology.members] == [new.kernel_id]

    async def test_a_member_that_exits_degrades_the_group_under_never(
        self, cluster: Cluster
    ) -> None:
        text = document("n1", coordinator(), role("worker", dependsOn=["coordinator"]))
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "n1", RUNNING)
        worker = members(group, "worker")[0]
        kernel = (await kernels_by_id(cluster.stub))[worker.kernel_id].kernel
        os.killpg(pid_of(kernel), signal.SIGKILL)
        group = await until_phase(cluster.stub, "n1", DEGRADED)
        (degraded,) = group.status.degraded_roles
        assert degraded.role == "worker" and "ended" in degraded.reason
        assert members(group, "coordinator")[0].ready

    async def test_the_coordinator_lost_under_never_fails_the_group(self, cluster: Cluster) -> None:
        text = document("n2", coordinator(), role("worker", dependsOn=["coordinator"]))
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "n2", RUNNING)
        c = members(group, "coordinator")[0]
        kernel = (await kernels_by_id(cluster.stub))[c.kernel_id].kernel
        os.killpg(pid_of(kernel), signal.SIGKILL)
        group = await until_rolled_back(cluster.stub, "n2")
        assert group.status.reason == "CoordinatorLost"
        assert await kernels_by_id(cluster.stub) == {}
        assert cluster.daemon_kernels() == []

    async def test_members_whose_agent_is_lost_are_recreated_on_another_daemon(
        self, cluster: Cluster
    ) -> None:
        text = document(
            "lost",
            coordinator(restartPolicy="OnFailure"),
            role("worker", dependsOn=["coordinator"], restartPolicy="OnFailure"),
        )
        await create_group(cluster.stub, text)
        group = await until_phase(cluster.stub, "lost", RUNNING)
        worker = members(group, "worker")[0]
        gone = next(n for n, d in cluster.daemons.items() if d.address == worker.daemon_address)
        other = cluster.daemons["d2" if gone == "d1" else "d1"].address
        await cluster.stop_daemon(gone)

        async def moved() -> mpb.Group | None:
            group = await get_group(cluster.stub, "lost")
            ok = group.status.phase == RUNNING and all(
                m.ready and m.daemon_address == other for m in group.status.members
            )
            return group if ok else None

        group = await eventually(moved, timeout=40)
        assert members(group, "worker")[0].restarts == 1
        kernels = await kernels_by_id(cluster.stub)
        assert set(kernels) >= {m.kernel_id for m in group.status.members}


class TestLifetime:
    async def test_deleting_the_group_removes_every_member(self, cluster: Cluster) -> None:
        await create_group(cluster.stub, document("rm", coordinator(), role("w", replicas=3)))
        await until_phase(cluster.stub, "rm", RUNNING)
        assert len(cluster.daemon_kernels()) == 4
        deleted = (await cluster.stub.DeleteGroup(mpb.DeleteGroupRequest(name="rm"))).group
        assert deleted.status.phase == TERMINATED and deleted.status.reason == "Deleted"
        assert await kernels_by_id(cluster.stub) == {} and cluster.daemon_kernels() == []
        assert nothing_held(cluster)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get_group(cluster.stub, "rm")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    @pytest.mark.parametrize(
        ("setting", "reason"),
        [("idleTimeout", "IdleTimeout"), ("maxDuration", "MaxDuration")],
        ids=["idle", "max-duration"],
    )
    async def test_timeouts_end_the_group_with_the_reason(
        self, cluster: Cluster, setting: str, reason: str
    ) -> None:
        await create_group(
            cluster.stub, document("to", role("a", coordinator=True), role("b"), **{setting: "2s"})
        )
        group = await until_phase(cluster.stub, "to", TERMINATED, timeout=30)
        assert group.status.reason == reason
        assert await kernels_by_id(cluster.stub) == {} and cluster.daemon_kernels() == []
        assert (await cluster.stub.ListGroups(mpb.ListGroupsRequest())).groups[0].name == "to"


class TestOwnership:
    async def test_a_group_belongs_to_its_creator(self, cluster: Cluster) -> None:
        async def token(name: str, **scope: Any) -> str:
            response = await cluster.stub.CreateToken(mpb.CreateTokenRequest(name=name, **scope))
            return response.token  # type: ignore[no-any-return]

        alice_token = await token("alice", scaling_groups=["default"])
        bob_token = await token("bob", scaling_groups=["default"])
        batch_token = await token("carol", scaling_groups=["batch"])
        from protos import manager_pb2_grpc

        address = cluster.manager.address
        async with (
            user_channel(address, alice_token) as a,
            user_channel(address, bob_token) as b,
            user_channel(address, batch_token) as c,
        ):
            alice = manager_pb2_grpc.ManagerServiceStub(a)
            bob = manager_pb2_grpc.ManagerServiceStub(b)
            carol = manager_pb2_grpc.ManagerServiceStub(c)
            text = document("own", role("a", coordinator=True), role("b"))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await create_group(carol, text)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert err.value.details().startswith(
                "token:carol may not create kernels in scaling group 'default' (role 'a')"
            )
            await create_group(alice, text)
            group = await until_phase(alice, "own", RUNNING)
            assert group.owner == "token:alice"
            kernels = await kernels_by_id(alice)
            assert {k.owner for k in kernels.values()} == {"token:alice"}
            assert (await bob.ListGroups(mpb.ListGroupsRequest())).groups == []
            for call in (
                bob.GetGroup(mpb.GetGroupRequest(name="own")),
                bob.DeleteGroup(mpb.DeleteGroupRequest(name="own")),
                bob.GetGroupTopology(mpb.GetGroupTopologyRequest(name="own")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert len((await cluster.stub.ListGroups(mpb.ListGroupsRequest())).groups) == 1
            await alice.DeleteGroup(mpb.DeleteGroupRequest(name="own"))


class TestCommands:
    async def test_the_cli_creates_waits_lists_and_removes_the_example_group(
        self, cluster: Cluster
    ) -> None:
        env = {
            **os.environ,
            "AGENTHOST_MANAGER": cluster.manager.address,
            "AGENTHOST_INSECURE": "1",
        }

        def agenthost(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [AGENTHOST, *args], capture_output=True, text=True, timeout=120, env=env
            )

        example = str(ROOT / "configs" / "groups" / "analysis.yaml")
        created = await asyncio.to_thread(agenthost, "group", "create", "-f", example, "--wait")
        assert created.returncode == 0, created.stderr
        assert "group analysis created" in created.stdout and "Running" in created.stdout
        listed = await asyncio.to_thread(agenthost, "group", "ls", "--json")
        (group,) = json.loads(listed.stdout)
        assert group["name"] == "analysis" and group["status"]["phase"] == "GROUP_PHASE_RUNNING"
        topology = await asyncio.to_thread(agenthost, "group", "topology", "analysis")
        assert "AGENTHOST_PEERS_COORDINATOR=127.0.0.1:" in topology.stdout
        shown = await asyncio.to_thread(agenthost, "group", "get", "analysis")
        assert "phase           Running" in shown.stdout
        removed = await asyncio.to_thread(agenthost, "group", "rm", "analysis")
        assert removed.returncode == 0 and "group analysis removed" in removed.stdout
        assert await kernels_by_id(cluster.stub) == {}

    async def test_kernel_create_with_an_unknown_template_lists_the_known(
        self, cluster: Cluster
    ) -> None:
        templates = (ROOT / "configs" / "groups" / "templates.yaml").read_text()
        await cluster.stub.ApplyTemplate(mpb.ApplyTemplateRequest(document=templates))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await cluster.stub.CreateKernel(mpb.CreateKernelRequest(template="nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "template 'nope' is not known; known: http-server, sleeper"
        made = await cluster.stub.CreateKernel(
            mpb.CreateKernelRequest(template="sleeper", spec=pb.KernelSpec(env={"X": "1"}))
        )
        assert list(made.kernel.kernel.spec.command) == ["sleep", "86400"]
        assert dict(made.kernel.kernel.spec.env) == {"X": "1"}
