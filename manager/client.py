"""Calls from the manager to daemons, routed by agent_id.

One grpc.aio channel per daemon, that is per (address, daemon identity), shared by
every agent on that daemon: mutual TLS with the manager's certificate, where the
daemon's certificate must name the identity that registered it (`daemon_host`)
rather than the address dialed; or plaintext for a plaintext manager.
`client.agent(agent_id, address, daemon_id)` returns a handle whose every call goes to that
daemon and carries that agent_id; the caller has resolved the agent already, so
the client never looks it up again. Every call has a deadline. Idempotent calls
(GetKernel, ListKernels, GetKernelLogs, ListAgents) are retried with backoff when
the daemon is UNAVAILABLE; CreateKernels, DestroyKernel and Execute never are. A
daemon's error comes back as the domain error of the same meaning (the inverse of
the one mapping, `common/status.py`), so the manager's interceptor
hands the caller the daemon's code and message. Every routed call is timed by
daemon, method and final status code (`call_timings`, read by the manager's
metrics when scraped). Knows gRPC channels and the daemon's protocol; nothing of
scheduling, liveness or storage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from common.credentials import daemon_host
from common.errors import AgentHostError
from common.status import error_class
from common.timings import Timings
from manager.errors import DaemonUnreachable
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

log = logging.getLogger(__name__)

# A daemon that restarts should be reachable again within a second, not after
# gRPC's default reconnect backoff of up to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def domain_error(exc: grpc.aio.AioRpcError, agent_id: str, address: str) -> AgentHostError:
    """The domain error a daemon's status stands for (UNAVAILABLE/DEADLINE: unreachable)."""
    code = exc.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        what = "did not answer in time" if code is grpc.StatusCode.DEADLINE_EXCEEDED else "is down"
        return DaemonUnreachable(
            f"the daemon of agent {agent_id!r} at {address} {what}: {exc.details()}"
        )
    cls = error_class(code)
    if cls is None:
        return AgentHostError(
            f"the daemon of agent {agent_id!r} at {address} failed: {code.name}: {exc.details()}"
        )
    return cls(exc.details() or code.name)


class DaemonClient:
    """Channels to every daemon, and per-agent handles over them."""

    def __init__(
        self,
        call_timeout: float = 10.0,
        create_timeout: float = 120.0,
        execute_timeout: float = 3600.0,
        retries: int = 2,
        backoff: float = 0.1,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.call_timeout = call_timeout
        self.create_timeout = create_timeout
        self.execute_timeout = execute_timeout
        self.retries = retries
        self.backoff = backoff
        self.credentials = credentials  # the manager's certificate (mutual TLS); None: plaintext
        # By (address, daemon id): with TLS, the daemon id its certificate must name.
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], agent_pb2_grpc.AgentServiceStub] = {}
        # Which daemon (id, node) is at each address, as the last handle on it said.
        self._daemons: dict[str, tuple[str, str]] = {}
        # How long routed calls took, by (daemon id, node, method, status code): read
        # by the manager's metrics.
        self.call_timings: dict[tuple[str, str, str, str], Timings] = {}
        self._methods: dict[str, str] = {}  # request message name -> method

    def agent(
        self, agent_id: str, address: str, daemon_id: str = "", node: str = ""
    ) -> AgentHandle:
        """A handle on agent_id at its daemon's address: every call carries its id.

        daemon_id and node name the daemon there (its routed calls are timed under them).
        """
        self._daemons[address] = (daemon_id, node)
        return AgentHandle(self, agent_id, address, self.stub(address, daemon_id))

    def stub(self, address: str, daemon_id: str = "") -> agent_pb2_grpc.AgentServiceStub:
        """The stub over the one channel to daemon_id at address (opened on first use).

        With TLS the daemon's certificate must carry daemon_id, its identity, as a host
        name (`daemon_host`): the manager checks a daemon by its name, not by the
        address it dials, which in a cluster is a pod IP no certificate names.
        Without daemon_id the address itself is checked.
        """
        key = (address, daemon_id)
        stub = self._stubs.get(key)
        if stub is None:
            if self.credentials is None:
                channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                options: list[tuple[str, int | str]] = list(CHANNEL_OPTIONS)
                if daemon_id:
                    options.append(("grpc.ssl_target_name_override", daemon_host(daemon_id)))
                channel = grpc.aio.secure_channel(address, self.credentials, options=options)
            self._channels[key] = channel
            stub = self._stubs[key] = agent_pb2_grpc.AgentServiceStub(channel)
        return stub

    @property
    def addresses(self) -> set[str]:
        """Daemon addresses with an open channel."""
        return {address for address, _ in self._channels}

    async def close_unused(self, in_use: set[tuple[str, str]]) -> None:
        """Close the channels to daemons, (address, daemon id), no agent is on any more."""
        for key in [k for k in self._channels if k not in in_use]:
            self._stubs.pop(key, None)
            await self._channels.pop(key).close(None)

    async def close(self) -> None:
        """Close every channel."""
        await self.close_unused(set())

    async def call(
        self,
        agent_id: str,
        address: str,
        rpc: Callable[..., Any],
        request: Any,
        timeout: float | None,
        idempotent: bool,
    ) -> Any:
        """One unary call with a deadline; retried on UNAVAILABLE only when idempotent.

        Timed from the first attempt to the answer, under the final status code.
        """
        attempt = 0
        start = time.perf_counter()
        while True:
            try:
                response = await rpc(request, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if (
                    idempotent
                    and exc.code() is grpc.StatusCode.UNAVAILABLE
                    and attempt < self.retries
                ):
                    await asyncio.sleep(self.backoff * 2**attempt)
                    attempt += 1
                    continue
                self.timed(address, request, exc.code(), start)
                raise domain_error(exc, agent_id, address) from None
            self.timed(address, request, grpc.StatusCode.OK, start)
            return response

    def timed(self, address: str, request: Any, code: grpc.StatusCode, start: float) -> None:
        """Record a routed call to address that started at start (perf_counter) and ended
        now with code; the method is the one request is for (agenthost.v1 names each
        request message `<Method>Request`)."""
        seconds = time.perf_counter() - start
        message = request.DESCRIPTOR.name
        method = self._methods.get(message)
        if method is None:
            method = self._methods[message] = message.removesuffix("Request")
        key = (*self._daemons.get(address, ("", "")), method, code.name)
        timings = self.call_timings.get(key)
        if timings is None:
            timings = self.call_timings[key] = Timings()
        timings.observe(seconds)


class AgentHandle:
    """One agent on its daemon; every request it sends carries its agent_id."""

    def __init__(
        self,
        client: DaemonClient,
        agent_id: str,
        address: str,
        stub: agent_pb2_grpc.AgentServiceStub,
    ) -> None:
        self.client = client
        self.agent_id = agent_id
        self.address = address
        self.stub = stub

    async def create_kernels(self, specs: list[pb.KernelSpec]) -> list[pb.Kernel]:
        """CreateKernels (all or nothing; never retried)."""
        request = pb.CreateKernelsRequest(agent_id=self.agent_id, kernels=specs)
        response = await self._call(
            self.stub.CreateKernels, request, self.client.create_timeout, idempotent=False
        )
        return list(response.kernels)

    async def destroy_kernel(self, kernel_id: str, grace_seconds: float = 0) -> pb.Kernel:
        """DestroyKernel (never retried); its deadline covers the grace period."""
        request = pb.DestroyKernelRequest(
            agent_id=self.agent_id, kernel_id=kernel_id, grace_seconds=grace_seconds
        )
        timeout = self.client.call_timeout + grace_seconds
        response = await self._call(self.stub.DestroyKernel, request, timeout, idempotent=False)
        return response.kernel  # type: ignore[no-any-return]

    async def get_kernel(self, kernel_id: str) -> pb.Kernel:
        """GetKernel (retried)."""
        request = pb.GetKernelRequest(agent_id=self.agent_id, kernel_id=kernel_id)
        response = await self._call(
            self.stub.GetKernel, request, self.client.call_timeout, idempotent=True
        )
        return response.kernel  # type: ignore[no-any-return]

    async def list_kernels(self) -> list[pb.Kernel]:
        """This agent's kernels on its daemon (retried)."""
        request = pb.ListKernelsRequest(agent_id=self.agent_id)
        response = await self._call(
            self.stub.ListKernels, request, self.client.call_timeout, idempotent=True
        )
        return list(response.kernels)

    async def kernel_logs(
        self, kernel_id: str, tail_lines: int = 0, max_bytes: int = 0
    ) -> pb.GetKernelLogsResponse:
        """GetKernelLogs (retried)."""
        request = pb.GetKernelLogsRequest(
            agent_id=self.agent_id, kernel_id=kernel_id, tail_lines=tail_lines, max_bytes=max_bytes
        )
        response: pb.GetKernelLogsResponse = await self._call(
            self.stub.GetKernelLogs, request, self.client.call_timeout, idempotent=True
        )
        return response

    async def wait_kernel(self, kernel_id: str, timeout: float) -> pb.WaitKernelResponse:
        """WaitKernel (never retried: the caller falls back on what heartbeats tell);
        its deadline is the wait's timeout and a margin, or none for an unbounded wait."""
        request = pb.WaitKernelRequest(agent_id=self.agent_id, kernel_id=kernel_id, timeout=timeout)
        deadline = timeout + self.client.call_timeout if timeout > 0 else None
        response: pb.WaitKernelResponse = await self._call(
            self.stub.WaitKernel, request, deadline, idempotent=False
        )
        return response

    async def stream_logs(
        self, kernel_id: str, tail_lines: int, follow: bool
    ) -> AsyncIterator[pb.KernelLogChunk]:
        """StreamKernelLogs, each chunk as the daemon sends it (following: no deadline
        but the caller's)."""
        request = pb.StreamKernelLogsRequest(
            agent_id=self.agent_id, kernel_id=kernel_id, tail_lines=tail_lines, follow=follow
        )
        call = self.stub.StreamKernelLogs(
            request, timeout=None if follow else self.client.execute_timeout
        )
        async for chunk in self._stream(call, request):
            yield chunk

    async def execute(
        self, kernel_id: str, argv: list[str], stdin: bytes = b"", timeout: float = 0
    ) -> AsyncIterator[pb.ExecuteResponse]:
        """Execute, yielding each message as the daemon sends it (never retried)."""
        request = pb.ExecuteRequest(
            agent_id=self.agent_id, kernel_id=kernel_id, argv=argv, stdin=stdin, timeout=timeout
        )
        deadline = (
            timeout + self.client.call_timeout if timeout > 0 else self.client.execute_timeout
        )
        call = self.stub.Execute(request, timeout=deadline)
        async for message in self._stream(call, request):
            yield message

    async def _stream(self, call: Any, request: Any) -> AsyncIterator[Any]:
        """The messages of a streaming call, timed over its whole life (a caller that
        stops reading cancels it: CANCELLED)."""
        start = time.perf_counter()
        code = grpc.StatusCode.CANCELLED
        try:
            async for message in call:
                yield message
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise domain_error(exc, self.agent_id, self.address) from None
        finally:
            call.cancel()
            self.client.timed(self.address, request, code, start)

    async def _call(
        self, rpc: Callable[..., Any], request: Any, timeout: float | None, idempotent: bool
    ) -> Any:
        return await self.client.call(
            self.agent_id, self.address, rpc, request, timeout, idempotent
        )
