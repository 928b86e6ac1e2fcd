"""common/serving.py: what a process does once its servers serve."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import grpc.aio._server
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

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

    async def ListKernels(
        self, request: pb.ListKernelsRequest, context: object
    ) -> pb.ListKernelsResponse:
        raise NotImplementedError("a library's own NotImplementedError, deep in a handler")


def _anyone(method: str, context: object) -> Principal:
    return Principal(kind="insecure", role="user", name="tester")


@dataclass
class _Served:
    channel: grpc.aio.Channel
    registered: list[str]


@pytest.fixture
async def served(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_Served]:
    """An AgentService (ListAgents, and ListKernels raising NotImplementedError) behind
    start_grpc_server, with every add_registered_method_handlers call recorded."""
    registered: list[str] = []
    monkeypatch.setattr(
        grpc.aio._server.Server,
        "add_registered_method_handlers",
        lambda self, service, handlers: registered.append(service),
    )
    server = await start_grpc_server(
        lambda server: agent_pb2_grpc.add_AgentServiceServicer_to_server(_Agents(), server),
        "agenthost.v1.AgentService",
        [Listener("127.0.0.1:0")],
        _anyone,
    )
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield _Served(channel, registered)
    finally:
        await server.server.stop(0)


async def _code_of(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value.code(), failed.value.details() or ""


class TestGenericHandlersOnly:
    """The generated add_*_to_server functions also register every method; grpc.aio's
    server then waits for each call with a task per registered method. None reaches it,
    and every service still answers: ours, health and reflection."""

    async def test_the_services_answer_with_nothing_registered(self, served: _Served) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        reply = await stub.ListAgents(pb.ListAgentsRequest(), timeout=10)
        assert [a.agent_id for a in reply.agents] == ["a-served"]
        unknown = served.channel.unary_unary("/agenthost.v1.AgentService/NoSuchMethod")
        code, _ = await _code_of(unknown(b"", timeout=10))
        assert code is grpc.StatusCode.UNIMPLEMENTED
        health = await health_pb2_grpc.HealthStub(served.channel).Check(
            health_pb2.HealthCheckRequest(service="agenthost.v1.AgentService"), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        assert served.registered == []

    async def test_reflection_lists_the_services_without_holding_a_thread_per_stream(
        self, served: _Served
    ) -> None:
        """Open reflection streams (as grpcurl keeps them) hold no thread: with the
        blocking servicer each would hold one of the loop's default executor."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
        stub = reflection_pb2_grpc.ServerReflectionStub(served.channel)
        done = asyncio.Event()

        async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
            yield reflection_pb2.ServerReflectionRequest(list_services="")
            await done.wait()

        streams = [stub.ServerReflectionInfo(requests(), timeout=30) for _ in range(3)]
        try:
            for stream in streams:
                answer = await stream.read()
                names = {s.name for s in answer.list_services_response.service}
                assert "agenthost.v1.AgentService" in names
                assert "grpc.health.v1.Health" in names
            assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        finally:
            done.set()
            for stream in streams:
                stream.cancel()


class TestNotImplemented:
    async def test_a_method_left_to_its_generated_default_is_unimplemented(
        self, served: _Served
    ) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        code, details = await _code_of(
            stub.GetKernel(pb.GetKernelRequest(agent_id="a", kernel_id="k"), timeout=10)
        )
        assert code is grpc.StatusCode.UNIMPLEMENTED
        assert "GetKernel is not implemented" in details

    async def test_a_handlers_own_not_implemented_error_is_internal(self, served: _Served) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(served.channel)
        code, details = await _code_of(
            stub.ListKernels(pb.ListKernelsRequest(agent_id="a"), timeout=10)
        )
        assert code is grpc.StatusCode.INTERNAL
        assert "library" not in details  # the generic message; the traceback is logged
