"""The routing client over real loopback gRPC, against a scripted fake daemon.

The fake AgentService fails on cue, so retries, deadlines and error mapping can be
checked exactly; the real daemon is exercised in tests/integration/manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from common.credentials import issue
from common.errors import AgentHostError, FailedPrecondition, NotFound
from manager.client import DaemonClient
from manager.errors import DaemonUnreachable
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.pki import Pki


class ScriptedDaemon(agent_pb2_grpc.AgentServiceServicer):
    """Answers each call with the next scripted status code (None: success); records agent ids."""

    def __init__(self) -> None:
        self.script: list[grpc.StatusCode | None] = []
        self.calls: list[tuple[str, str]] = []
        self.delay = 0.0

    async def _answer(self, method: str, agent_id: str, context: Any) -> None:
        self.calls.append((method, agent_id))
        if self.delay:
            await asyncio.sleep(self.delay)
        code = self.script.pop(0) if self.script else None
        if code is not None:
            await context.abort(code, f"scripted {code.name}")

    async def GetKernel(self, request: pb.GetKernelRequest, context: Any) -> pb.GetKernelResponse:
        await self._answer("GetKernel", request.agent_id, context)
        return pb.GetKernelResponse(
            kernel=pb.Kernel(kernel_id=request.kernel_id, agent_id=request.agent_id)
        )

    async def CreateKernels(
        self, request: pb.CreateKernelsRequest, context: Any
    ) -> pb.CreateKernelsResponse:
        await self._answer("CreateKernels", request.agent_id, context)
        return pb.CreateKernelsResponse(
            kernels=[
                pb.Kernel(kernel_id=s.kernel_id, agent_id=request.agent_id) for s in request.kernels
            ]
        )

    async def DestroyKernel(
        self, request: pb.DestroyKernelRequest, context: Any
    ) -> pb.DestroyKernelResponse:
        await self._answer("DestroyKernel", request.agent_id, context)
        return pb.DestroyKernelResponse(kernel=pb.Kernel(kernel_id=request.kernel_id))

    async def ListKernels(
        self, request: pb.ListKernelsRequest, context: Any
    ) -> pb.ListKernelsResponse:
        await self._answer("ListKernels", request.agent_id, context)
        return pb.ListKernelsResponse()

    async def Execute(
        self, request: pb.ExecuteRequest, context: Any
    ) -> AsyncIterator[pb.ExecuteResponse]:
        await self._answer("Execute", request.agent_id, context)
        yield pb.ExecuteResponse(stdout=b"hi\n")
        yield pb.ExecuteResponse(exit=pb.ExecuteExit(exit_code=7))


@pytest.fixture
async def daemon() -> AsyncIterator[tuple[ScriptedDaemon, str]]:
    servicer = ScriptedDaemon()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, f"127.0.0.1:{port}"
    await server.stop(0)


@pytest.fixture
async def client() -> AsyncIterator[DaemonClient]:
    c = DaemonClient(call_timeout=2.0, retries=2, backoff=0.01)
    yield c
    await c.close()


class TestRouting:
    async def test_every_call_carries_the_handles_agent_id(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        await client.agent("a0", address).get_kernel("k")
        await client.agent("a1", address).create_kernels([pb.KernelSpec(kernel_id="k")])
        await client.agent("a2", address).list_kernels()
        messages = [m async for m in client.agent("a1", address).execute("k", ["true"])]
        assert messages[-1].exit.exit_code == 7
        assert fake.calls == [
            ("GetKernel", "a0"),
            ("CreateKernels", "a1"),
            ("ListKernels", "a2"),
            ("Execute", "a1"),
        ]

    async def test_agents_of_one_daemon_share_one_channel(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        _, address = daemon
        a0, a1 = client.agent("a0", address), client.agent("a1", address)
        assert a0.stub is a1.stub
        assert len(client.addresses) == 1
        await client.close_unused(set())
        assert client.addresses == set()

    async def test_each_daemon_address_gets_its_own_channel_until_unused(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        _, address = daemon
        here, elsewhere = client.agent("a0", address), client.agent("a1", "127.0.0.1:1")
        assert here.stub is not elsewhere.stub
        assert (here.address, elsewhere.address) == (address, "127.0.0.1:1")
        await client.close_unused({(address, "")})
        assert client.addresses == {address}

    async def test_another_daemon_at_the_same_address_gets_its_own_channel(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        # A pod IP given to another daemon: the channel checks one identity only.
        _, address = daemon
        before, after = client.agent("a0", address, "d1"), client.agent("a0", address, "d2")
        assert before.stub is not after.stub
        await client.close_unused({(address, "d2")})
        assert client.agent("a0", address, "d2").stub is after.stub
        assert client.agent("a0", address, "d1").stub is not before.stub  # opened anew


class TestRetries:
    async def test_idempotent_call_is_retried_on_unavailable(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        fake.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
        kernel = await client.agent("a0", address).get_kernel("k")
        assert kernel.kernel_id == "k"
        assert len(fake.calls) == 3

    async def test_retries_are_bounded(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        fake.script = [grpc.StatusCode.UNAVAILABLE] * 5
        with pytest.raises(DaemonUnreachable):
            await client.agent("a0", address).get_kernel("k")
        assert len(fake.calls) == 3

    @pytest.mark.parametrize("method", ["create", "destroy", "execute"])
    async def test_non_idempotent_call_is_never_retried(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient, method: str
    ) -> None:
        fake, address = daemon
        fake.script = [grpc.StatusCode.UNAVAILABLE]
        handle = client.agent("a0", address)
        with pytest.raises(DaemonUnreachable):
            if method == "create":
                await handle.create_kernels([pb.KernelSpec(kernel_id="k")])
            elif method == "destroy":
                await handle.destroy_kernel("k")
            else:
                _ = [m async for m in handle.execute("k", ["true"])]
        assert len(fake.calls) == 1

    async def test_other_errors_are_not_retried(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        fake.script = [grpc.StatusCode.NOT_FOUND]
        with pytest.raises(NotFound) as err:
            await client.agent("a0", address).get_kernel("k")
        assert str(err.value) == "scripted NOT_FOUND"
        assert len(fake.calls) == 1


class TestErrors:
    async def test_status_codes_come_back_as_domain_errors(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        fake.script = [grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.DATA_LOSS]
        with pytest.raises(FailedPrecondition):
            await client.agent("a0", address).create_kernels([pb.KernelSpec()])
        with pytest.raises(AgentHostError) as err:
            await client.agent("a0", address).create_kernels([pb.KernelSpec()])
        assert "DATA_LOSS" in str(err.value)

    async def test_every_call_has_a_deadline(
        self, daemon: tuple[ScriptedDaemon, str], client: DaemonClient
    ) -> None:
        fake, address = daemon
        fake.delay = 5
        quick = DaemonClient(call_timeout=0.2)
        try:
            with pytest.raises(DaemonUnreachable) as err:
                await quick.agent("a0", address).get_kernel("k")
        finally:
            await quick.close()
        assert str(err.value).startswith(f"the daemon of agent 'a0' at {address} did not answer")

    async def test_a_daemon_that_is_down_is_unreachable(self) -> None:
        client = DaemonClient(call_timeout=1, retries=1, backoff=0.01)
        try:
            with pytest.raises(DaemonUnreachable) as err:
                await client.agent("a0", "127.0.0.1:1").get_kernel("k")
        finally:
            await client.close()
        assert str(err.value).startswith("the daemon of agent 'a0' at 127.0.0.1:1 is down")


class TestDaemonCheckedByName:
    """With TLS the client checks a daemon's certificate against the identity it expects
    there, not the address it dials (in a cluster, a pod IP no certificate names)."""

    @pytest.fixture
    async def tls_daemon(self, pki: Pki) -> AsyncIterator[str]:
        # Named "nodes" (one certificate for every node), no address among its names.
        cert, key = issue(pki.directory, "daemon", "nodes", sans=())
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(ScriptedDaemon(), server)
        credentials = grpc.ssl_server_credentials(
            [(key.read_bytes(), cert.read_bytes())],
            root_certificates=pki.ca.read_bytes(),
            require_client_auth=True,
        )
        port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        yield f"127.0.0.1:{port}"
        await server.stop(0)

    @pytest.fixture
    async def tls_client(self, pki: Pki) -> AsyncIterator[DaemonClient]:
        credentials = pki.files("manager", "m1").channel_credentials()
        c = DaemonClient(call_timeout=2.0, retries=0, credentials=credentials)
        yield c
        await c.close()

    async def test_the_daemon_that_registered_is_reached_at_an_address_its_certificate_lacks(
        self, tls_daemon: str, tls_client: DaemonClient
    ) -> None:
        kernel = await tls_client.agent("w-node-a", tls_daemon, "nodes", "node-a").get_kernel("k")
        assert kernel.agent_id == "w-node-a"

    @pytest.mark.parametrize("expected", ["node-a", ""], ids=["another_identity", "by_address"])
    async def test_a_certificate_of_another_name_is_not_the_daemon(
        self, tls_daemon: str, tls_client: DaemonClient, expected: str
    ) -> None:
        with pytest.raises(DaemonUnreachable):
            await tls_client.agent("a0", tls_daemon, expected).get_kernel("k")
