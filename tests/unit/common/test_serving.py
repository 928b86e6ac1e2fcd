"""common/serving.py: what a process does once its servers serve."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Iterator

import grpc
import grpc.aio._server
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.principal import Principal
from common.serving import BLOCKING_THREADS, Listener, settle_for_serving, start_grpc_server
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


async def test_settling_freezes_the_heap_and_bounds_the_blocking_threads(unfrozen: None) -> None:
    await asyncio.to_thread(lambda: None)  # the loop's first default executor, asyncio's own
    settle_for_serving()
    assert gc.get_freeze_count() > 0

    # Many blocking calls at once run on at most BLOCKING_THREADS threads.
    seen: set[int] = set()
    gate = threading.Barrier(BLOCKING_THREADS, timeout=10)

    def work() -> None:
        seen.add(threading.get_ident())
        if len(seen) <= BLOCKING_THREADS:
            with contextlib.suppress(threading.BrokenBarrierError):
                gate.wait()  # keep the first ones busy together, so others need new threads

    await asyncio.gather(*(asyncio.to_thread(work) for _ in range(4 * BLOCKING_THREADS)))
    assert len(seen) == BLOCKING_THREADS


class _Agents(agent_pb2_grpc.AgentServiceServicer):
    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: object
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(agents=[pb.AgentInfo(agent_id="a-served")])


def _anyone(method: str, context: object) -> Principal:
    return Principal(kind="insecure", role="user", name="tester")


async def test_generated_services_are_served_through_their_generic_handlers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generated add_*_to_server functions also register every method; grpc.aio's
    server then waits for each call with a task per registered method. None reaches it,
    and the services still answer (theirs, health's and reflection's)."""
    registered: list[str] = []
    monkeypatch.setattr(
        grpc.aio._server.Server,
        "add_registered_method_handlers",
        lambda self, service, handlers: registered.append(service),
    )
    served = await start_grpc_server(
        lambda server: agent_pb2_grpc.add_AgentServiceServicer_to_server(_Agents(), server),
        "agenthost.v1.AgentService",
        [Listener("127.0.0.1:0")],
        _anyone,
    )
    try:
        async with grpc.aio.insecure_channel(served.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            reply = await stub.ListAgents(pb.ListAgentsRequest(), timeout=10)
            assert [a.agent_id for a in reply.agents] == ["a-served"]
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await channel.unary_unary("/agenthost.v1.AgentService/NoSuchMethod")(
                    b"", timeout=10
                )
            assert unknown.value.code() is grpc.StatusCode.UNIMPLEMENTED
            # a method the servicer leaves to its generated default: UNIMPLEMENTED too
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetKernel(pb.GetKernelRequest(agent_id="a", kernel_id="k"), timeout=10)
            assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert "GetKernel is not implemented" in (missing.value.details() or "")
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="agenthost.v1.AgentService"), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await served.server.stop(0)
    assert registered == []
