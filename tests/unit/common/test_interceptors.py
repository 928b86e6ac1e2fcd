"""common/interceptors.py: through a real in-process grpc.aio server, a domain error ends
the call with its code and message, anything else is INTERNAL with a generic message
(the traceback logged, never sent), for unary and both kinds of streaming handlers."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from common.errors import (
    AgentHostError,
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Unsupported,
)
from common.interceptors import ErrorMapping, HookedInterceptor
from daemon.errors import CheckpointError

SERVICE = "test.Errors"
SECRET = "/var/lib/secret-token-1234"


@dataclass(frozen=True)
class Raised:
    """A handler that raises `error` ends the call with `code` and `details`
    ({method} is the called method's full name)."""

    name: str
    error: Callable[[], Exception]
    code: grpc.StatusCode
    details: str


RAISED = [
    Raised(
        "invalid_argument",
        lambda: InvalidArgument("argv: give the command to execute"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "argv: give the command to execute",
    ),
    Raised(
        "not_found",
        lambda: NotFound("agent 'gpu9' not found on this daemon; available: a0, a1"),
        grpc.StatusCode.NOT_FOUND,
        "agent 'gpu9' not found on this daemon; available: a0, a1",
    ),
    Raised(
        "already_exists",
        lambda: AlreadyExists("kernel 'k1' already exists on agent 'a0'"),
        grpc.StatusCode.ALREADY_EXISTS,
        "kernel 'k1' already exists on agent 'a0'",
    ),
    Raised(
        "resource_exhausted",
        lambda: ResourceExhausted("2 cores requested, 1 of the agent's 2 are free"),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "2 cores requested, 1 of the agent's 2 are free",
    ),
    Raised(
        "failed_precondition",
        lambda: FailedPrecondition("kernel 'k1' is terminated"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "kernel 'k1' is terminated",
    ),
    Raised(
        "unavailable",
        lambda: Unavailable("docker engine at unix:///x does not answer"),
        grpc.StatusCode.UNAVAILABLE,
        "docker engine at unix:///x does not answer",
    ),
    Raised(
        "unsupported",
        lambda: Unsupported("agent 'a0': backend 'local' has no networks"),
        grpc.StatusCode.UNIMPLEMENTED,
        "agent 'a0': backend 'local' has no networks",
    ),
    Raised(
        "subclass_takes_its_base_code",
        lambda: CheckpointError("state.json: checksum mismatch"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "state.json: checksum mismatch",
    ),
    Raised(
        "config_error_lists_every_problem",
        lambda: ConfigError(["d.toml: first", "d.toml: second"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "d.toml: first\nd.toml: second",
    ),
    Raised(
        "bare_domain_error_is_internal_with_its_message",
        lambda: AgentHostError("no finer kind applies"),
        grpc.StatusCode.INTERNAL,
        "no finer kind applies",
    ),
    Raised(
        "unmapped_error_is_internal_and_generic",
        lambda: RuntimeError(f"cannot open {SECRET}"),
        grpc.StatusCode.INTERNAL,
        "{method}: internal error",
    ),
    Raised(
        "key_error_is_internal_and_generic",
        lambda: KeyError(SECRET),
        grpc.StatusCode.INTERNAL,
        "{method}: internal error",
    ),
]
BY_NAME = {case.name: case for case in RAISED}


def raise_for(request: bytes) -> None:
    if request != b"ok":
        raise BY_NAME[request.decode()].error()


async def unary(request: bytes, context: Any) -> bytes:
    raise_for(request)
    return b"ok"


async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"one"
    yield b"two"
    raise_for(request)


async def stream_by_writes(request: bytes, context: Any) -> None:
    # A coroutine that writes its responses itself, as grpc.health.v1 Watch does.
    await context.write(b"one")
    raise_for(request)


async def aborts_itself(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")
    return b""


HANDLER = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "StreamByWrites": grpc.unary_stream_rpc_method_handler(stream_by_writes),
        "AbortsItself": grpc.unary_unary_rpc_method_handler(aborts_itself),
    },
)


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[grpc.aio.Channel]:
    """A real grpc.aio server on port 0 with the interceptor, a tiny service and health."""
    server = grpc.aio.server(interceptors=[HookedInterceptor(ErrorMapping())])
    server.add_generic_rpc_handlers((HANDLER,))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(0)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    async with serving() as channel:
        yield channel


def expected(case: Raised, method: str) -> str:
    return case.details.format(method=f"/{SERVICE}/{method}")


class TestUnary:
    @pytest.mark.parametrize("case", RAISED, ids=[c.name for c in RAISED])
    async def test_ends_with_the_mapped_code_and_message(
        self, channel: grpc.aio.Channel, case: Raised
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"/{SERVICE}/Unary")(case.name.encode(), timeout=10)
        assert (info.value.code(), info.value.details()) == (case.code, expected(case, "Unary"))

    async def test_a_handler_that_raises_nothing_answers(self, channel: grpc.aio.Channel) -> None:
        assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"ok", timeout=10) == b"ok"

    async def test_a_handlers_own_abort_keeps_its_code(self, channel: grpc.aio.Channel) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"/{SERVICE}/AbortsItself")(b"", timeout=10)
        assert (info.value.code(), info.value.details()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "not yours",
        )


class TestStreams:
    @pytest.mark.parametrize("case", RAISED, ids=[c.name for c in RAISED])
    async def test_a_generator_delivers_what_it_yielded_then_the_mapped_error(
        self, channel: grpc.aio.Channel, case: Raised
    ) -> None:
        received: list[bytes] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for message in channel.unary_stream(f"/{SERVICE}/Stream")(
                case.name.encode(), timeout=10
            ):
                received.append(message)
        assert received == [b"one", b"two"]
        assert (info.value.code(), info.value.details()) == (case.code, expected(case, "Stream"))

    @pytest.mark.parametrize("case", RAISED, ids=[c.name for c in RAISED])
    async def test_a_writing_coroutine_gets_the_mapped_error_too(
        self, channel: grpc.aio.Channel, case: Raised
    ) -> None:
        call = channel.unary_stream(f"/{SERVICE}/StreamByWrites")(case.name.encode(), timeout=10)
        assert await call.read() == b"one"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert (info.value.code(), info.value.details()) == (
            case.code,
            expected(case, "StreamByWrites"),
        )

    async def test_the_health_service_works_through_the_interceptor(
        self, channel: grpc.aio.Channel
    ) -> None:
        stub = health_pb2_grpc.HealthStub(channel)
        check = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


class TestNothingLeaks:
    @pytest.mark.parametrize(
        "method", ["Unary", "Stream", "StreamByWrites"], ids=["unary", "stream", "writes"]
    )
    async def test_an_unmapped_error_is_logged_with_its_traceback_and_never_sent(
        self, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture, method: str
    ) -> None:
        caplog.set_level(logging.ERROR, logger="common.interceptors")
        rpc = f"/{SERVICE}/{method}"
        request = b"unmapped_error_is_internal_and_generic"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if method == "Unary":
                await channel.unary_unary(rpc)(request, timeout=10)
            else:
                async for _ in channel.unary_stream(rpc)(request, timeout=10):
                    pass
        error = info.value
        assert error.details() == f"{rpc}: internal error"
        sent = f"{error.details()} {error.debug_error_string()} {error.trailing_metadata()}"
        assert SECRET not in sent and "Traceback" not in sent and "RuntimeError" not in sent
        (record,) = [r for r in caplog.records if r.name == "common.interceptors"]
        assert record.getMessage() == f"{rpc} failed"
        assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
        assert SECRET in str(record.exc_info[1])

    async def test_a_domain_error_is_not_logged_as_a_failure(
        self, channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.ERROR, logger="common.interceptors")
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary(f"/{SERVICE}/Unary")(b"not_found", timeout=10)
        assert [r for r in caplog.records if r.name == "common.interceptors"] == []
