"""Two daemons with three agents each behind one manager: registration and placement.

Everything is real: the manager and both daemons serve over loopback gRPC, the
daemons register through their own ManagerLink, kernels are local processes. Where
the manager says a kernel is, is checked through the daemons' own ListKernels.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    Manager,
    agents_by_id,
    create,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.servers import Daemon, eventually, running_daemon, sleeper

MIB = 1 << 20


def three_agents(prefix: str, base_port: int) -> str:
    """Two 'default' agents (1GiB, 10 ports) and one 'batch' agent (5 ports)."""
    return f"""
[[agents]]
id = "{prefix}0"
scaling_group = "default"
port_range = [{base_port}, {base_port + 9}]
resources = {{ memory = "1GiB" }}

[[agents]]
id = "{prefix}1"
scaling_group = "default"
port_range = [{base_port + 10}, {base_port + 19}]
resources = {{ memory = "1GiB" }}

[[agents]]
id = "{prefix}2"
scaling_group = "batch"
port_range = [{base_port + 20}, {base_port + 24}]
resources = {{ memory = "1GiB" }}
"""


@dataclass
class Cluster:
    manager: Manager
    daemons: dict[str, Daemon]  # daemon address -> daemon


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    # A generous timeout: this test is about placement, not liveness, and the one
    # event loop it shares with both daemons is busy starting 30 processes.
    config = manager_config(tmp_path, missed_heartbeats=50)
    async with running_manager(config) as manager:
        d1 = linked_daemon_config(tmp_path, "d1", manager.address, three_agents("x", 47000))
        d2 = linked_daemon_config(tmp_path, "d2", manager.address, three_agents("y", 47100))
        async with running_daemon(d1) as one, running_daemon(d2) as two:

            async def all_registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 6

            await eventually(all_registered)
            yield Cluster(manager, {one.server.address: one, two.server.address: two})


async def daemon_kernels(address: str) -> list[pb.Kernel]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return list((await stub.ListKernels(pb.ListKernelsRequest(), timeout=10)).kernels)


class TestRegistration:
    async def test_six_agents_of_two_daemons_are_alive_with_their_addresses(
        self, cluster: Cluster
    ) -> None:
        agents = await agents_by_id(cluster.manager.stub)
        assert set(agents) == {"x0", "x1", "x2", "y0", "y1", "y2"}
        assert {a.status for a in agents.values()} == {mpb.AGENT_STATUS_ALIVE}
        by_daemon = collections.defaultdict(set)
        for agent_id, a in agents.items():
            by_daemon[a.daemon_address].add(agent_id)
        assert dict(by_daemon) == {
            address: {a.agent_id for a in daemon.server.runtime.list_agents()}
            for address, daemon in cluster.daemons.items()
        }
        assert agents["x2"].info.scaling_group == "batch"
        assert agents["y0"].info.capacity.memory_bytes == 1024 * MIB
        assert agents["y2"].info.capacity.ports == 5
        assert {a.node for a in agents.values()} == {"d1", "d2"}


class TestPlacement:
    async def test_thirty_kernels_land_by_scaling_group_and_capacity(
        self, cluster: Cluster
    ) -> None:
        stub = cluster.manager.stub
        # 20 in "default" at 200MiB each: four 1GiB agents hold exactly five each.
        # 10 in "batch" with one port each: two agents of five ports hold five each.
        # All 30 at once: concurrent creates must never over-commit an agent.
        results = await asyncio.gather(
            *(
                create(
                    stub,
                    sleeper(f"m{i}", resources=pb.ResourceRequest(memory_bytes=200 * MIB)),
                    "default",
                )
                for i in range(20)
            ),
            *(
                create(stub, sleeper(f"p{i}", ports=[pb.ServicePort(name="http")]), "batch")
                for i in range(10)
            ),
        )
        placed = collections.Counter(k.kernel.agent_id for k in results)
        assert placed == {"x0": 5, "x1": 5, "y0": 5, "y1": 5, "x2": 5, "y2": 5}
        for k in results:
            expected_group = "default" if k.kernel.kernel_id.startswith("m") else "batch"
            assert k.scaling_group == expected_group

        # Each kernel is on exactly the daemon and agent the manager says, and nowhere else.
        listed = await kernels_by_id(stub)
        assert set(listed) == {k.kernel.kernel_id for k in results}
        on_daemon = {address: await daemon_kernels(address) for address in cluster.daemons}
        for kernel_id, managed in listed.items():
            found = [
                (address, k.agent_id)
                for address, kernels in on_daemon.items()
                for k in kernels
                if k.kernel_id == kernel_id
            ]
            assert found == [(managed.daemon_address, managed.kernel.agent_id)], kernel_id
            assert managed.kernel.state == pb.KERNEL_STATE_RUNNING
        assert sum(len(v) for v in on_daemon.values()) == 30

        # The 21st "default" kernel fits an agent's capacity but finds every one full.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(stub, sleeper(resources=pb.ResourceRequest(memory_bytes=200 * MIB)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == (
            "all 4 agents of scaling group 'default' that could fit 200MiB memory are busy "
            "right now: x0, x1, y0, y1"
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(stub, sleeper(ports=[pb.ServicePort(name="http")]), "batch")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # One that no agent could ever hold says why.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(stub, sleeper(resources=pb.ResourceRequest(memory_bytes=2048 * MIB)))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == (
            "no agent of scaling group 'default' (4 agents) could ever fit 2GiB memory; "
            "the largest offer 1GiB memory"
        )

        # Destroying one frees its room for the next.
        victim = next(
            k for k in results if k.kernel.agent_id == "y1" and k.scaling_group == "default"
        )
        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id=victim.kernel.kernel_id))
        again = await create(stub, sleeper(resources=pb.ResourceRequest(memory_bytes=200 * MIB)))
        assert again.kernel.agent_id == "y1"

    async def test_pinned_kernel_lands_on_its_agent(self, cluster: Cluster) -> None:
        stub = cluster.manager.stub
        k = await create(stub, sleeper("pinned"), agent_id="y2")
        assert (k.kernel.agent_id, k.scaling_group) == ("y2", "batch")
        kernels = await daemon_kernels(k.daemon_address)
        assert [(x.kernel_id, x.agent_id) for x in kernels] == [("pinned", "y2")]

    async def test_kernels_without_requests_spread_over_agents(self, cluster: Cluster) -> None:
        stub = cluster.manager.stub
        placed = [(await create(stub, sleeper())).kernel.agent_id for _ in range(8)]
        assert collections.Counter(placed) == {"x0": 2, "x1": 2, "y0": 2, "y1": 2}
