"""Routing by agent_id through the real daemon over loopback gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import agent_pb2 as pb
from tests.servers import (
    Daemon,
    DaemonSetup,
    Stub,
    daemon_config,
    execute,
    local_agents,
    running_daemon,
    sleeper,
)

THREE_AGENTS = local_agents(3, base_port=41000)


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    return DaemonSetup(THREE_AGENTS)


async def kernel_ids(stub: Stub, agent_id: str) -> set[str]:
    reply = await stub.ListKernels(pb.ListKernelsRequest(agent_id=agent_id))
    return {k.kernel_id for k in reply.kernels}


class TestRouting:
    async def test_kernel_lands_only_on_the_named_agent(self, daemon: Daemon) -> None:
        for agent_id in ("a0", "a1", "a2"):
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id=agent_id, kernels=[sleeper(f"k-{agent_id}")])
            )
        for agent_id in ("a0", "a1", "a2"):
            assert await kernel_ids(daemon.stub, agent_id) == {f"k-{agent_id}"}
        every = await daemon.stub.ListKernels(pb.ListKernelsRequest())
        assert {(k.agent_id, k.kernel_id) for k in every.kernels} == {
            ("a0", "k-a0"),
            ("a1", "k-a1"),
            ("a2", "k-a2"),
        }

    async def test_each_rpc_reaches_the_agent_it_names_and_no_other(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a1", kernels=[sleeper("k1")])
        )
        got = await daemon.stub.GetKernel(pb.GetKernelRequest(agent_id="a1", kernel_id="k1"))
        assert got.kernel.agent_id == "a1"
        _, out, _, exit_ = await execute(
            daemon.stub, "a1", "k1", ["sh", "-c", "echo $AGENTHOST_AGENT_ID"]
        )
        assert out == b"a1\n" and exit_.exit_code == 0
        for other in ("a0", "a2"):
            for call in (
                daemon.stub.GetKernel(pb.GetKernelRequest(agent_id=other, kernel_id="k1")),
                daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id=other, kernel_id="k1")),
                daemon.stub.RestartKernel(pb.RestartKernelRequest(agent_id=other, kernel_id="k1")),
                daemon.stub.GetKernelLogs(pb.GetKernelLogsRequest(agent_id=other, kernel_id="k1")),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await call
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                assert err.value.details() == (
                    f"kernel 'k1' not found on agent '{other}'; it belongs to agent 'a1'"
                )
        # The failed destroy calls on other agents left the kernel alone.
        again = await daemon.stub.GetKernel(pb.GetKernelRequest(agent_id="a1", kernel_id="k1"))
        assert again.kernel.state == pb.KERNEL_STATE_RUNNING
        agents = {
            a.agent_id: a for a in (await daemon.stub.ListAgents(pb.ListAgentsRequest())).agents
        }
        assert [agents[a].kernel_count for a in ("a0", "a1", "a2")] == [0, 1, 0]

    async def test_unknown_agent_is_not_found_and_lists_available(self, daemon: Daemon) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.ListKernels(pb.ListKernelsRequest(agent_id="gpu9"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "agent 'gpu9' not found on this daemon; available: a0, a1, a2"

    async def test_empty_agent_id_with_several_agents_is_invalid(self, daemon: Daemon) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.CreateKernels(pb.CreateKernelsRequest(kernels=[sleeper("k")]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "agent_id is required" in err.value.details()
        assert await kernel_ids(daemon.stub, "") == set()

    async def test_kernel_id_is_unique_across_the_daemon(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("dup")])
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a2", kernels=[sleeper("fresh"), sleeper("dup")])
            )
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert err.value.details() == "kernel 'dup' already exists on agent 'a0'"
        assert await kernel_ids(daemon.stub, "a2") == set()  # all or nothing: "fresh" is gone too

    async def test_health_per_agent_and_reflection(self, daemon: Daemon) -> None:
        health = health_pb2_grpc.HealthStub(daemon.channel)
        for service in ("", "agenthost.v1.AgentService", "agenthost.v1.AgentService/a2", "a0"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health.Check(
                health_pb2.HealthCheckRequest(service="agenthost.v1.AgentService/zz")
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        refl = reflection_pb2_grpc.ServerReflectionStub(daemon.channel)
        replies = [
            r
            async for r in refl.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
        ]
        names = {s.name for s in replies[0].list_services_response.service}
        assert "agenthost.v1.AgentService" in names and "grpc.health.v1.Health" in names


class TestDefaultAgent:
    async def test_single_agent_daemon_routes_empty_id_to_it(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, local_agents(1, base_port=42000))) as d:
            reply = await d.stub.CreateKernels(pb.CreateKernelsRequest(kernels=[sleeper("k")]))
            assert reply.kernels[0].agent_id == "a0"

    async def test_named_default_agent_takes_empty_ids(self, tmp_path: Path) -> None:
        path = daemon_config(
            tmp_path, local_agents(2, base_port=42100), daemon='default_agent = "a1"\n'
        )
        async with running_daemon(path) as d:
            reply = await d.stub.CreateKernels(pb.CreateKernelsRequest(kernels=[sleeper("k")]))
            assert reply.kernels[0].agent_id == "a1"
            assert await kernel_ids(d.stub, "a0") == set()


class TestUpdateScalingGroup:
    async def test_persists_for_that_agent_only_with_comments_intact(self, tmp_path: Path) -> None:
        agents = (
            '# the fleet\n[[agents]]\nid = "a0"  # first\nport_range = [42200, 42299]\n'
            'resources = { memory = "1GiB" }\n\n[[agents]]\nid = "a1"\n'
            'scaling_group = "gpu"  # keep\n'
            'port_range = [42300, 42399]\nresources = { memory = "1GiB" }\n'
        )
        path = daemon_config(tmp_path, agents)
        before = path.read_text()
        async with running_daemon(path) as d:
            reply = await d.stub.UpdateScalingGroup(
                pb.UpdateScalingGroupRequest(agent_id="a0", scaling_group="batch")
            )
            assert reply.agent.scaling_group == "batch"
            listed = {
                a.agent_id: a.scaling_group
                for a in (await d.stub.ListAgents(pb.ListAgentsRequest())).agents
            }
            assert listed == {"a0": "batch", "a1": "gpu"}
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.UpdateScalingGroup(
                    pb.UpdateScalingGroupRequest(agent_id="a1", scaling_group="no spaces")
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        after = path.read_text().splitlines()
        added = [line for line in after if line not in before.splitlines()]
        assert added == ['scaling_group = "batch"']
        # Everything else, comments included, is untouched and the new key sits in a0's entry.
        assert [line for line in after if line not in added] == before.splitlines()
        second_entry = [i for i, line in enumerate(after) if line == "[[agents]]"][1]
        assert after.index('scaling_group = "batch"') < second_entry
        assert (tmp_path / "daemon.toml.bak").read_text() == before
