"""common/metrics.py: the RPC hook through a real grpc.aio server, the endpoint over real HTTP.

Every call is timed under the status code the error mapping gave it (refusals of
the authorization policy included, and calls grpc cancelled); the endpoint serves
its own registry at /metrics and answers anything else with the right HTTP status.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from common.errors import NotFound, PermissionDenied
from common.metrics import MetricsEndpoint, RpcMetrics, timings_family
from common.principal import Principal
from common.serving import GrpcServer, Listener, start_grpc_server
from common.timings import Timings
from tests.scrape import fetch, parse, scrape

SERVICE = "test.Metrics"
CALLER = Principal(kind="insecure", role="user", name="tester")


async def ok(request: bytes, context: Any) -> bytes:
    return request


async def missing(request: bytes, context: Any) -> bytes:
    raise NotFound("no such thing")


async def slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(30)
    return request


async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request


def policy(method: str, context: Any) -> Principal:
    if method.endswith("/Refused"):
        raise PermissionDenied("not you")
    return CALLER


def add_service(server: grpc.aio.Server) -> None:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(handler)
        for name, handler in (("Ok", ok), ("Missing", missing), ("Slow", slow), ("Refused", ok))
    }
    handlers["Stream"] = grpc.unary_stream_rpc_method_handler(stream)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@dataclass
class Served:
    server: GrpcServer
    channel: grpc.aio.Channel
    endpoint: MetricsEndpoint
    outcomes: list[tuple[str, str]]

    async def call(self, method: str, timeout: float | None = None) -> grpc.StatusCode:
        try:
            await self.channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    registry = CollectorRegistry()
    outcomes: list[tuple[str, str]] = []
    hook = RpcMetrics(
        registry,
        "test",
        agent_label=lambda request: "a0",
        outcome=lambda method, request, code: outcomes.append((method, code)),
    )
    server = await start_grpc_server(
        add_service, SERVICE, [Listener("127.0.0.1:0")], policy, metrics=hook
    )
    endpoint = await MetricsEndpoint.start("127.0.0.1:0", registry)
    channel = grpc.aio.insecure_channel(server.address)
    try:
        yield Served(server, channel, endpoint, outcomes)
    finally:
        await channel.close()
        await endpoint.stop()
        await server.server.stop(0)


def count(text: str, method: str, code: str) -> float:
    samples = parse(text)
    name = "test_rpc_duration_seconds_count"
    return samples.get(name, method=method, code=code, agent_id="a0") or 0.0


class TestRpcHook:
    async def test_each_call_is_timed_under_the_code_the_error_mapping_gave_it(
        self, served: Served
    ) -> None:
        assert await served.call("Ok") is grpc.StatusCode.OK
        assert await served.call("Ok") is grpc.StatusCode.OK
        assert await served.call("Missing") is grpc.StatusCode.NOT_FOUND
        assert await served.call("Refused") is grpc.StatusCode.PERMISSION_DENIED
        _, _, text = await asyncio.to_thread(fetch, served.endpoint.address)
        assert count(text, "Ok", "OK") == 2
        assert count(text, "Missing", "NOT_FOUND") == 1
        assert count(text, "Refused", "PERMISSION_DENIED") == 1
        assert served.outcomes == [
            ("Ok", "OK"),
            ("Ok", "OK"),
            ("Missing", "NOT_FOUND"),
            ("Refused", "PERMISSION_DENIED"),
        ]

    async def test_a_call_past_its_deadline_counts_as_deadline_exceeded(
        self, served: Served
    ) -> None:
        assert await served.call("Slow", timeout=0.2) is grpc.StatusCode.DEADLINE_EXCEEDED

        async def counted() -> bool:
            _, _, text = await asyncio.to_thread(fetch, served.endpoint.address)
            return count(text, "Slow", "DEADLINE_EXCEEDED") == 1

        await _eventually(counted)

    async def test_a_call_the_client_cancels_counts_as_cancelled(self, served: Served) -> None:
        call = served.channel.unary_unary(f"/{SERVICE}/Slow")(b"x")
        await asyncio.sleep(0.2)
        call.cancel()

        async def counted() -> bool:
            _, _, text = await asyncio.to_thread(fetch, served.endpoint.address)
            return count(text, "Slow", "CANCELLED") == 1

        await _eventually(counted)

    async def test_a_stream_is_timed_once_over_its_whole_life(self, served: Served) -> None:
        replies = [r async for r in served.channel.unary_stream(f"/{SERVICE}/Stream")(b"x")]
        assert len(replies) == 3
        samples = await scrape(served.endpoint.address)
        assert (
            samples.value(
                "test_rpc_duration_seconds_count", method="Stream", code="OK", agent_id="a0"
            )
            == 1
        )


async def _eventually(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "not counted in time"
        await asyncio.sleep(0.05)


class TestEndpoint:
    @pytest.fixture
    async def endpoint(self) -> AsyncIterator[MetricsEndpoint]:
        registry = CollectorRegistry()
        Counter("things", "Things counted", registry=registry).inc(3)
        endpoint = await MetricsEndpoint.start("127.0.0.1:0", registry)
        try:
            yield endpoint
        finally:
            await endpoint.stop()

    async def test_get_metrics_serves_the_registry_in_the_text_format(
        self, endpoint: MetricsEndpoint
    ) -> None:
        status, content_type, body = await asyncio.to_thread(fetch, endpoint.address)
        assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
        assert parse(body).value("things_total") == 3

    @pytest.mark.parametrize(
        ("path", "method", "status"),
        [
            ("/", "GET", 404),
            ("/metrics/more", "GET", 404),
            ("/metrics", "POST", 405),
            ("/metrics", "DELETE", 405),
            ("/metrics?name[]=things", "GET", 200),
            ("/metrics", "HEAD", 200),
        ],
        ids=["root", "below", "post", "delete", "query_ignored", "head"],
    )
    async def test_other_paths_and_methods_get_their_http_status(
        self, endpoint: MetricsEndpoint, path: str, method: str, status: int
    ) -> None:
        got, _, body = await asyncio.to_thread(fetch, endpoint.address, path, method)
        assert got == status
        if method == "HEAD":
            assert body == ""

    async def test_a_client_that_never_finishes_its_request_does_not_hold_up_others(
        self, endpoint: MetricsEndpoint
    ) -> None:
        host, _, port = endpoint.address.rpartition(":")
        _, idle = await asyncio.open_connection(host, int(port))
        idle.write(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        await idle.drain()
        samples = await scrape(endpoint.address)
        assert samples.value("things_total") == 3
        idle.close()

    async def test_a_malformed_request_line_is_a_bad_request(
        self, endpoint: MetricsEndpoint
    ) -> None:
        host, _, port = endpoint.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"nonsense\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        writer.close()

    async def test_a_busy_port_is_refused_naming_the_address(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: "):
                await MetricsEndpoint.start(f"127.0.0.1:{port}", CollectorRegistry())

    async def test_a_listen_address_that_is_not_host_port_is_refused(self) -> None:
        with pytest.raises(OSError, match="cannot serve metrics on 'nowhere'"):
            await MetricsEndpoint.start("nowhere", CollectorRegistry())


class TestTimingsFamily:
    def test_a_timings_becomes_a_histogram_with_cumulative_buckets(self) -> None:
        registry = CollectorRegistry()
        t = Timings(bounds=(0.1, 1.0))
        for seconds in (0.05, 0.1, 0.5, 2.0):
            t.observe(seconds)

        class Collector:
            def collect(self) -> Any:
                yield timings_family("step_seconds", "A step", ["agent_id"], [(["a0"], t)])

        registry.register(Collector())
        samples = parse(generate_latest(registry).decode())
        buckets = {
            le: samples.value("step_seconds_bucket", agent_id="a0", le=le)
            for le in ("0.1", "1.0", "+Inf")
        }
        assert buckets == {"0.1": 2, "1.0": 3, "+Inf": 4}
        assert samples.value("step_seconds_count", agent_id="a0") == 4
        assert samples.value("step_seconds_sum", agent_id="a0") == pytest.approx(2.65)
