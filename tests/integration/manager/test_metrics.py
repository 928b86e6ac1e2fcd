"""The manager's Prometheus metrics, scraped over real HTTP from a real manager.

Two real daemons (d1: agents m0, m1; d2: agent m2) register with it; kernels and a
group are created through it over gRPC. Its series must show the agents by
status (a daemon stopped: its agent LOST), every scheduling decision by outcome,
routed calls timed by the daemon they went to, groups by phase and its own RPCs.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml

from daemon.config import load_config
from daemon.server import DaemonServer
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    create,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.scrape import Samples, scrape
from tests.servers import eventually, identity_of, sleeper

MIB = 1 << 20


@dataclass
class Cluster:
    manager: Manager
    daemons: dict[str, DaemonServer]
    tmp_path: Path

    @property
    def metrics(self) -> str:
        endpoint = self.manager.server.metrics
        assert endpoint is not None
        return endpoint.address

    def daemon_id(self, name: str) -> str:
        """A plaintext daemon's id at the manager: its node and its identity."""
        return f"{name}/{identity_of(self.tmp_path / name)}"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    config = manager_config(tmp_path, metrics_listen="127.0.0.1:0", missed_heartbeats=5)
    async with running_manager(config) as manager:
        layout = {
            "d1": agents_toml(
                ("m0", "default", 47600, 'resources = { memory = "1GiB" }'),
                ("m1", "default", 47610, 'resources = { memory = "1GiB" }'),
            ),
            "d2": agents_toml(("m2", "default", 47620, 'resources = { memory = "1GiB" }')),
        }
        daemons: dict[str, DaemonServer] = {}
        try:
            for name, agents in layout.items():
                path = linked_daemon_config(tmp_path, name, manager.address, agents)
                daemons[name] = await DaemonServer.start(load_config(path))

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 3

            await eventually(registered)
            yield Cluster(manager, daemons, tmp_path)
        finally:
            for daemon in daemons.values():
                with contextlib.suppress(Exception):
                    await daemon.stop(destroy_kernels=True, grace=0.5)


def routed(samples: Samples, daemon_id: str, node: str, method: str, code: str) -> float:
    return (
        samples.get(
            "agenthost_manager_routed_call_duration_seconds_count",
            daemon_id=daemon_id,
            node=node,
            method=method,
            code=code,
        )
        or 0.0
    )


class TestManagerSeries:
    async def test_agents_by_status_scheduling_and_routed_calls_by_daemon(
        self, cluster: Cluster
    ) -> None:
        stub = cluster.manager.stub
        placed = [(await create(stub, sleeper(f"k{i}"))).kernel.agent_id for i in range(3)]
        assert sorted(placed) == ["m0", "m1", "m2"]  # spread over both daemons
        await stub.GetKernel(pb.GetKernelRequest(kernel_id="k0"))
        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k1"))
        too_big = sleeper("huge", resources=pb.ResourceRequest(memory_bytes=4096 * MIB))
        with pytest.raises(grpc.aio.AioRpcError) as never_fits:
            await create(stub, too_big)
        assert never_fits.value.code() is grpc.StatusCode.FAILED_PRECONDITION

        samples = await scrape(cluster.metrics)
        assert samples.value("agenthost_manager_agents", status="alive") == 3
        assert samples.value("agenthost_manager_agents", status="lost") == 0
        decisions = "agenthost_manager_scheduling_decisions_total"
        assert samples.value(decisions, outcome="scheduled") == 3
        assert samples.value(decisions, outcome="FAILED_PRECONDITION") == 1
        assert samples.value("agenthost_manager_scheduling_duration_seconds_count") == 4
        d1, d2 = cluster.daemon_id("d1"), cluster.daemon_id("d2")
        d1_creates = routed(samples, d1, "d1", "CreateKernels", "OK")
        d2_creates = routed(samples, d2, "d2", "CreateKernels", "OK")
        assert (d1_creates, d2_creates) == (2, 1)
        on = {"k0": placed[0], "k1": placed[1]}
        daemon_of = {"m0": ("d1", d1), "m1": ("d1", d1), "m2": ("d2", d2)}
        node, daemon_id = daemon_of[on["k0"]]
        assert routed(samples, daemon_id, node, "GetKernel", "OK") == 1
        node, daemon_id = daemon_of[on["k1"]]
        assert routed(samples, daemon_id, node, "DestroyKernel", "OK") == 1
        assert samples.value("agenthost_manager_kernels", state="running") == 2
        rpc = "agenthost_manager_rpc_duration_seconds_count"
        assert samples.value(rpc, method="CreateKernel", code="OK") == 3
        assert samples.value(rpc, method="CreateKernel", code="FAILED_PRECONDITION") == 1

    async def test_a_stopped_daemons_agents_show_as_lost(self, cluster: Cluster) -> None:
        await cluster.daemons["d2"].stop(destroy_kernels=True, grace=0.5)

        async def lost() -> Samples | None:
            s = await scrape(cluster.metrics)
            return s if s.value("agenthost_manager_agents", status="lost") == 1 else None

        samples = await eventually(lost, timeout=20)
        assert samples.value("agenthost_manager_agents", status="alive") == 2

    async def test_groups_by_phase(self, cluster: Cluster) -> None:
        samples = await scrape(cluster.metrics)
        phases = ("Pending", "Starting", "Running", "Degraded", "Failed", "Terminating")
        assert all(samples.value("agenthost_manager_groups", phase=p) == 0 for p in phases)
        document = yaml.safe_dump(
            {
                "apiVersion": "agenthost.io/v1alpha1",
                "kind": "AgentGroup",
                "metadata": {"name": "pair"},
                "spec": {
                    "roles": [
                        {
                            "name": "lead",
                            "coordinator": True,
                            "kernel": {"command": ["sleep", "300"]},
                        },
                        {
                            "name": "worker",
                            "dependsOn": ["lead"],
                            "kernel": {"command": ["sleep", "300"]},
                        },
                    ]
                },
            }
        )
        await cluster.manager.stub.CreateGroup(mpb.CreateGroupRequest(document=document))

        async def running() -> Samples | None:
            s = await scrape(cluster.metrics)
            return s if s.value("agenthost_manager_groups", phase="Running") == 1 else None

        samples = await eventually(running, timeout=30)
        assert samples.value("agenthost_manager_groups", phase="Pending") == 0

    async def test_without_metrics_listen_there_is_no_endpoint(self, tmp_path: Path) -> None:
        (tmp_path / "plain").mkdir()
        async with running_manager(manager_config(tmp_path / "plain")) as manager:
            assert manager.server.metrics is None
