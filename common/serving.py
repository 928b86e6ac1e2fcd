"""What every agenthost gRPC server shares: building and binding it, and stop signals.

`start_grpc_server` makes a grpc.aio server with the error-mapping and the
authorization interceptors (and, when asked, the RPC metrics hook and the audit
hook around them), the grpc.health.v1 service and server reflection, binds its
listeners (plaintext or TLS; never sharing a busy port) and starts it.
`stop_signals` turns the first SIGTERM/SIGINT into an event and a second one
into an immediate exit. `settle_for_serving` (once the servers serve) keeps the
garbage collector's full passes from rescanning everything startup made and
bounds the threads of the loop's blocking work. Used by the daemon and the manager; knows
nothing of agents or kernels.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from common.addresses import check_host_port
from common.audit import AuditHook, AuditLog
from common.interceptors import (
    Authorization,
    CallHook,
    ErrorMapping,
    HookedInterceptor,
    Policy,
)
from common.limits import Limits
from common.validation import Validation

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Listener:
    """One address a server binds, with its TLS credentials (None: plaintext)."""

    address: str
    credentials: grpc.ServerCredentials | None = None


@dataclass(frozen=True)
class GrpcServer:
    """A started grpc.aio server, its health servicer and the addresses it is bound to."""

    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (untyped)
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        """The first bound address."""
        return self.addresses[0]


# A second server on a busy port must fail, not share it (grpc enables
# SO_REUSEPORT by default on Linux, so two daemons would split the calls).
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


async def start_grpc_server(
    add_servicers: Callable[[grpc.aio.Server], None],
    service_name: str,
    listeners: Sequence[Listener],
    policy: Policy,
    limits: Limits | None = None,
    metrics: CallHook | None = None,
    audit: AuditLog | None = None,
) -> GrpcServer:
    """Build, bind every listener (port 0: any free port) and start; health says SERVING.

    Every call passes the error mapping, the authorization policy and the request
    validation (with limits) before its handler; with metrics (the RPC metrics
    hook), that hook outside them, so it sees every call with its final status code;
    with an audit log, the audit hook outside them all writes how each call ended,
    refused and failed ones included.
    """
    hooks: tuple[CallHook, ...] = (
        ErrorMapping(),
        Authorization(policy),
        Validation(limits or Limits()),
    )
    if metrics is not None:
        hooks = (metrics, *hooks)
    if audit is not None:
        hooks = (AuditHook(audit), *hooks)
    server = grpc.aio.server(interceptors=[HookedInterceptor(*hooks)], options=SERVER_OPTIONS)
    generic = _GenericHandlersOnly(server)
    add_servicers(generic)  # type: ignore[arg-type]
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, generic)
    # What reflection.enable_server_reflection does for an aio server (it tells one by
    # its class, which the wrapper is not): the asyncio servicer, no thread per stream.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
            (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME)
        ),
        generic,
    )
    addresses = tuple(_bind(server, listener) for listener in listeners)
    await server.start()
    await health_servicer.set("", SERVING)
    await health_servicer.set(service_name, SERVING)
    return GrpcServer(server, health_servicer, addresses)


class _GenericHandlersOnly:
    """The server as the generated `add_*_to_server` functions see it: they add each
    service twice, as a generic handler and as registered methods, and only the
    generic handlers are kept. grpc.aio's server waits for its next call with one
    pending task per registered method (`asyncio.wait` over all of them, for every
    call it accepts: 33 tasks on the manager, for its service's, health's and
    reflection's methods and the rest); with generic handlers only it waits on one,
    and finds the method in a dict."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Dropped: the same handlers come as a generic handler too."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _bind(server: grpc.aio.Server, listener: Listener) -> str:
    """Bind one listener; OSError naming the address when it cannot be bound."""
    listen = listener.address
    try:
        check_host_port(listen)
    except ValueError as exc:
        raise OSError(f"cannot listen on {listen!r}: {exc}") from None
    try:
        if listener.credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, listener.credentials)
    except RuntimeError:  # grpc's "Failed to bind to address"
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {listen}: the port is in use or the address is not on this host"
        )
    return f"{listen.rpartition(':')[0]}:{port}"


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by the first SIGTERM/SIGINT; a second one exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received: shutting down", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


# Threads for the loop's blocking work (asyncio.to_thread: file I/O, checkpoint
# writes, log reads) once serving. That work is system calls that need the
# interpreter lock only between them: two threads keep both cores of a small node
# busy, while more (asyncio's default is cores + 4) fight the event loop for the
# lock when much is in flight at once, and every call waits the longer for it
# (bench_robustness.py: the p99 of ListAgents during a 128-kernel batch went from
# 50-230 ms to 30-45 ms with two). Kernel starts and stops, checkpoint I/O and sync
# hooks have threads of their own.
BLOCKING_THREADS = 2


def settle_for_serving() -> None:
    """Ready the process for serving, right after its servers start.

    - Every object that exists by now (modules, the gRPC and pydantic machinery,
      configs, agents) lives as long as the process, yet each full collection
      would walk all of them: tens of milliseconds in which the event loop answers
      nothing (45-100 ms measured in a daemon during a 128-kernel batch). They are
      frozen out of the collector's reach (as Instagram does after its fork).
    - The loop's default executor gets BLOCKING_THREADS threads; startup (agents
      built concurrently, each reading its checkpoint) used the default's.
    """
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    previous = getattr(loop, "_default_executor", None)
    loop.set_default_executor(ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="blocking"))
    if isinstance(previous, ThreadPoolExecutor):
        previous.shutdown(wait=False)
