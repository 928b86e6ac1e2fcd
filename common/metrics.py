"""Prometheus metrics every agenthost server shares: the endpoint and the RPC hook.

`MetricsEndpoint` serves one server's own `CollectorRegistry` (never the
process-wide default one, so two servers in one process keep their series apart)
as the text exposition format on `http://<metrics_listen>/metrics`. It is a
small HTTP/1.1 responder on the server's event loop: one request per
connection, a bounded request head and a deadline to send it, GET and HEAD only.
Collectors therefore run on the loop, between the handlers, and read live state
without locks; the families they return are then formatted in a thread (most of
a scrape's cost), so a scrape stalls the calls only for the collecting.

`RpcMetrics` is the call hook (see `common/interceptors.py`) that times every
call, outermost, so refused calls count too: a histogram of seconds by method,
status code and, where the server says which agent a request concerns,
`agent_id`. The code is the one the error mapping gave the call (read back from
the call's context), so there is one mapping. A server may also hand it an
`outcome` callback that sees each finished call (the daemon counts kernel starts
and failures with it).

`timings_family` turns a `Timings` (`common/timings.py`) into a histogram family
for a collector. Knows Prometheus, gRPC call contexts and HTTP; nothing of agents
or kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import HistogramMetricFamily, Metric

from common.addresses import check_host_port
from common.interceptors import CallHook
from common.timings import DURATION_BUCKETS, Timings

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
MAX_HEAD = 16 << 10  # bytes of request line and headers
HEAD_TIMEOUT = 10.0  # seconds a client gets to send them

AgentLabel = Callable[[Any], str]
"""The agent_id a request concerns (a label value from a bounded set), or ""."""

Outcome = Callable[[str, Any, str], None]
"""Told (method, request, status code name) when a call has ended."""


# ----------------------------------------------------------------- the hook


class RpcMetrics(CallHook):
    """Times every call: `<prefix>_rpc_duration_seconds{method, code[, agent_id]}`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        prefix: str,
        agent_label: AgentLabel | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        labels = ("method", "code", "agent_id") if agent_label else ("method", "code")
        self.histogram = Histogram(
            f"{prefix}_rpc_duration_seconds",
            "Seconds from receiving a call to its end (a stream: its whole life), by method "
            "and status code",
            labels,
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.agent_label = agent_label
        self.outcome = outcome
        self._short: dict[str, str] = {}  # "/pkg.Service/Method" -> "Method"
        self._children: dict[tuple[str, ...], Any] = {}  # label values -> histogram child

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Note when the call started (and what it asked, for the labels)."""
        return time.perf_counter(), request, context

    def leave(self, method: str, state: Any) -> None:
        """Observe the call's duration under its method, code and agent."""
        if state is None:
            return
        start, request, context = state
        seconds = time.perf_counter() - start
        code = code_name(context)
        name = self._short.get(method)
        if name is None:
            name = self._short[method] = method.rpartition("/")[2]
        key: tuple[str, ...] = (name, code)
        if self.agent_label is not None:
            key += (self.agent_label(request),)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.histogram.labels(*key)
        child.observe(seconds)
        if self.outcome is not None:
            self.outcome(name, request, code)


def code_name(context: Ctx) -> str:
    """The status code a call ended with: what the error mapping aborted it with, else
    DEADLINE_EXCEEDED or CANCELLED when grpc cancelled the handler, else OK."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED.name
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.OK.name


# --------------------------------------------------------------- collectors


def timings_family(
    name: str,
    documentation: str,
    label_names: Sequence[str],
    timings: Iterable[tuple[Sequence[str], Timings]],
) -> HistogramMetricFamily:
    """One histogram family holding each (label values, timings) pair."""
    family = HistogramMetricFamily(name, documentation, labels=list(label_names))
    for values, t in timings:
        snapshot = t.snapshot()
        family.add_metric(
            list(values),
            [(_bound(le), float(count)) for le, count in snapshot.buckets],
            snapshot.sum,
        )
    return family


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


# ----------------------------------------------------------------- endpoint


class MetricsEndpoint:
    """`GET /metrics` of one registry over plain HTTP, on the running event loop."""

    def __init__(self, server: asyncio.Server, registry: CollectorRegistry, address: str) -> None:
        self._server = server
        self.registry = registry
        self.address = address  # host:port as bound (port 0 resolved)

    @classmethod
    async def start(cls, listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
        """Bind listen (port 0: any free port) and serve; OSError naming the address when
        it cannot be bound (a busy port is never shared)."""
        try:
            check_host_port(listen)
        except ValueError as exc:
            raise OSError(f"cannot serve metrics on {listen!r}: {exc}") from None
        host, _, port = listen.rpartition(":")
        endpoint: MetricsEndpoint | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert endpoint is not None
            await endpoint._respond(reader, writer)

        try:
            server = await asyncio.start_server(
                handle, host.strip("[]"), int(port), limit=MAX_HEAD, reuse_port=False
            )
        except OSError as exc:
            raise OSError(
                f"cannot serve metrics on {listen}: {exc.strerror or exc} (the port is in use or "
                "the address is not on this host)"
            ) from None
        bound = server.sockets[0].getsockname()[1]
        endpoint = cls(server, registry, f"{host}:{bound}")
        return endpoint

    async def stop(self) -> None:
        """Stop listening; scrapes under way finish on their own."""
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _respond(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            status, headers, body = await self._answer(head)
            lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        """Status line, headers and body for one request head."""
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _plain("400 Bad Request", "malformed request line\n")
        verb, target, _ = parts
        if target.partition("?")[0] != METRICS_PATH:
            return _plain("404 Not Found", f"metrics are at {METRICS_PATH}\n")
        if verb not in ("GET", "HEAD"):
            return _plain("405 Method Not Allowed", "GET or HEAD only\n", {"Allow": "GET, HEAD"})
        accept = _header(header_lines, "accept")
        encoder, content_type = choose_encoder(accept)
        # Collected here, on the loop (collectors read live state between handlers);
        # the snapshot is then formatted in a thread, where it cannot stall the calls.
        collected = Collected(list(self.registry.collect()))
        body = await asyncio.to_thread(encoder, collected)
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Connection": "close",
        }
        return "200 OK", headers, b"" if verb == "HEAD" else body


class Collected:
    """The metric families of one scrape, as a registry the encoders can format."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        """The families, as collected."""
        return self.families


def _header(lines: Iterable[str], name: str) -> str:
    for line in lines:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return ""


def _plain(
    status: str, text: str, extra: Mapping[str, str] | None = None
) -> tuple[str, dict[str, str], bytes]:
    body = text.encode()
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Length": str(len(body)),
        "Connection": "close",
        **(extra or {}),
    }
    return status, headers, body
