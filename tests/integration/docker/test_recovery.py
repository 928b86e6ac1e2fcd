"""Recovery: kill -9 of the daemon, restart, containers re-adopted by label; strays reaped."""

from __future__ import annotations

import json
from pathlib import Path

import aiodocker
import grpc
import pytest

from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.dockerd import IMAGE
from tests.integration.docker.conftest import MIB, SERVER, TWO_DOCKER
from tests.integration.docker.test_containers import greeting
from tests.servers import daemon_config, daemon_process, eventually, execute, identity_of

pytestmark = pytest.mark.docker


def web(kernel_id: str) -> pb.KernelSpec:
    """A kernel holding one core, some memory and a published port, serving on it."""
    return pb.KernelSpec(
        kernel_id=kernel_id,
        command=["python3", "-c", SERVER],
        resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
        ports=[pb.ServicePort(name="http")],
    )


async def kernels_of(address: str) -> dict[str, pb.Kernel]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        return {k.kernel_id: k for k in (await stub.ListKernels(pb.ListKernelsRequest())).kernels}


def held(kernel: pb.Kernel) -> tuple[object, ...]:
    return (
        kernel.agent_id,
        kernel.state,
        dict(kernel.ports),
        list(kernel.allocated.cores),
        kernel.allocated.memory_bytes,
        kernel.backend_ref,
    )


async def test_kill_9_then_restart_readopts_containers_with_same_ports_and_slots(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    path = daemon_config(tmp_path, TWO_DOCKER, allocation_mode="manual")
    with daemon_process(path) as first:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            for agent_id in ("d0", "d1"):
                await stub.CreateKernels(
                    pb.CreateKernelsRequest(agent_id=agent_id, kernels=[web(f"{agent_id}-web")])
                )
        before = await kernels_of(first.address)
        first.kill9()

    # The containers outlive the daemon; their servers still answer.
    for kernel in before.values():
        assert await eventually(lambda k=kernel: greeting(k.ports["http"]), timeout=20)

    with daemon_process(path) as second:
        after = await kernels_of(second.address)
        assert {k: held(v) for k, v in after.items()} == {k: held(v) for k, v in before.items()}
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            agents = {a.agent_id: a for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents}
            assert list(agents["d0"].occupied.cores) == [0]
            assert agents["d0"].occupied.ports == 1 and agents["d0"].healthy
            # The re-adopted kernel still holds its core: nothing else gets it.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.CreateKernels(pb.CreateKernelsRequest(agent_id="d0", kernels=[web("x")]))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            _, out, _, _ = await execute(stub, "d1", "d1-web", ["sh", "-c", "echo $PORT_HTTP"])
            assert out == f"{before['d1-web'].ports['http']}\n".encode()
            # And it is watched again: its end is seen and its slots come back.
            container = before["d1-web"].backend_ref.split()[1]
            await docker.containers.container(container).kill(signal="SIGKILL")

            async def ended() -> bool:
                k = (await kernels_of(second.address))["d1-web"]
                return k.state == pb.KERNEL_STATE_TERMINATED

            assert await eventually(ended, timeout=20)
            agents = {a.agent_id: a for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents}
            assert list(agents["d1"].occupied.cores) == []


async def test_start_reaps_only_this_agents_unrecorded_containers(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    identity = identity_of(tmp_path)

    async def make(daemon: str, agent_id: str, kernel_id: str) -> str:
        container = await docker.containers.create(
            {
                "Image": IMAGE,
                "Cmd": ["sleep", "300"],
                "Labels": {
                    LABEL_DAEMON: daemon,
                    LABEL_AGENT_ID: agent_id,
                    LABEL_KERNEL_ID: kernel_id,
                },
            }
        )
        await container.start()
        return str(container.id)

    stray = await make(identity, "d0", "stray")
    other_agent = await make(identity, "elsewhere", "k")
    other_daemon = await make("someone-else", "d0", "stray")
    try:
        path = daemon_config(tmp_path, TWO_DOCKER, allocation_mode="manual")
        with daemon_process(path) as proc:
            assert "ended dangling kernel stray" in proc.log()
        with pytest.raises(aiodocker.DockerError):
            await docker.containers.container(stray).show()
        for survivor in (other_agent, other_daemon):
            assert (await docker.containers.container(survivor).show())["State"]["Running"]
    finally:
        for container in (other_agent, other_daemon):
            await docker.containers.container(container).delete(force=True)


async def test_container_that_ended_while_the_daemon_was_down_frees_its_slots(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    path = daemon_config(tmp_path, TWO_DOCKER, allocation_mode="manual")
    with daemon_process(path) as first:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            await stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="d0", kernels=[web("doomed")])
            )
        before = await kernels_of(first.address)
        first.kill9()
    container = before["doomed"].backend_ref.split()[1]
    await docker.containers.container(container).kill(signal="SIGKILL")
    with daemon_process(path) as second:
        after = (await kernels_of(second.address))["doomed"]
        assert after.state == pb.KERNEL_STATE_TERMINATED
        assert (dict(after.ports), list(after.allocated.cores)) == ({}, [])
        filters = json.dumps({"label": [f"{LABEL_DAEMON}={identity_of(tmp_path)}"]})
        left = await docker._query_json("containers/json", params={"all": True, "filters": filters})
        assert left == []
