"""Agent-scoped networks: kernels of one network reach each other by kernel id."""

from __future__ import annotations

import json
from pathlib import Path

import aiodocker
import grpc
import pytest

from daemon.backends.docker.networks import network_name
from protos import agent_pb2 as pb
from tests.integration.docker.conftest import SERVER
from tests.servers import Daemon, Stub, create, eventually, execute, identity_of, sleeper

pytestmark = pytest.mark.docker

CLIENT = (
    "import socket, sys\n"
    "print(socket.create_connection((sys.argv[1], 9000), timeout=5).recv(100).decode())\n"
)


async def create_network(stub: Stub, agent_id: str, name: str) -> pb.CreateNetworkResponse:
    reply: pb.CreateNetworkResponse = await stub.CreateNetwork(
        pb.CreateNetworkRequest(agent_id=agent_id, name=name)
    )
    return reply


class TestNetworks:
    async def test_kernels_of_one_network_reach_each_other_by_kernel_id(
        self, daemon: Daemon
    ) -> None:
        await create_network(daemon.stub, "d0", "s1")
        await create(
            daemon.stub,
            "d0",
            pb.KernelSpec(
                kernel_id="server",
                command=["python3", "-c", SERVER],
                env={"LISTEN": "9000"},
                networks=["s1"],
            ),
            sleeper("client", networks=["s1"]),
        )

        async def reply() -> bytes:
            _, out, _, exit_ = await execute(
                daemon.stub, "d0", "client", ["python3", "-c", CLIENT, "server"]
            )
            return out if exit_.exit_code == 0 else b""

        assert await eventually(reply, timeout=20) == b"hello from server\n"

    async def test_a_kernel_joins_every_network_it_names(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        await create_network(daemon.stub, "d0", "s1")
        await create_network(daemon.stub, "d0", "s2")
        [kernel] = await create(daemon.stub, "d0", sleeper("k1", networks=["s1", "s2"]))
        info = await docker.containers.container(kernel.backend_ref.split()[1]).show()
        networks = info["NetworkSettings"]["Networks"]
        assert len(networks) == 2
        assert all("k1" in n["Aliases"] for n in networks.values())

    async def test_network_names_are_scoped_by_agent(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        n0 = await create_network(daemon.stub, "d0", "s1")
        n1 = await create_network(daemon.stub, "d1", "s1")
        assert n0.network_id != n1.network_id
        identity = identity_of(tmp_path)
        for agent_id, reply in (("d0", n0), ("d1", n1)):
            info = await docker._query_json(f"networks/{reply.network_id}")
            assert info["Name"] == network_name(identity, agent_id, "s1")
            assert info["Labels"]["agenthost.agent_id"] == agent_id
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create_network(daemon.stub, "d0", "s1")
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert err.value.details() == "network 's1' already exists on agent 'd0'"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(daemon.stub, "d1", sleeper("k1", networks=["s2"]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

    async def test_unknown_network_is_not_found_and_leaves_nothing(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(daemon.stub, "d0", sleeper("k1", networks=["nope"]))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == (
            "network 'nope' not found on agent 'd0'; create it with CreateNetwork"
        )
        filters = json.dumps({"label": [f"agenthost.daemon={identity_of(tmp_path)}"]})
        assert (
            await docker._query_json("containers/json", params={"all": True, "filters": filters})
            == []
        )

    async def test_destroy_network_refuses_while_kernels_are_attached(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        reply = await create_network(daemon.stub, "d0", "s1")
        await create(daemon.stub, "d0", sleeper("k1", networks=["s1"]))
        request = pb.DestroyNetworkRequest(agent_id="d0", name="s1")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.DestroyNetwork(request)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "still has kernels attached" in err.value.details()
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="d0", kernel_id="k1"))
        await daemon.stub.DestroyNetwork(request)
        with pytest.raises(aiodocker.DockerError):
            await docker._query_json(f"networks/{reply.network_id}")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.DestroyNetwork(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
