"""The daemon's side of the manager: register every agent, then heartbeat.

Started by the daemon server when `[daemon] manager` is set. It registers all
agents with every kernel (so the manager can reconcile), then sends a heartbeat
every `heartbeat_interval` (per agent: occupancy, health, scaling group and each
kernel's state). A heartbeat refused with NOT_FOUND means the manager no longer
knows this daemon's session (it restarted, or marked the daemon LOST): the link
registers again at once. A manager that is down or slow is logged once and
retried every interval; nothing here ever blocks or stops the daemon. Every call
has a deadline. With `[daemon.tls]` it speaks mutual TLS with the daemon's
certificate, and the manager takes the daemon's identity from that certificate.
Knows the runtime's read side and the manager's protocol; nothing of the
manager's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time

import grpc

from daemon import convert
from daemon.runtime import AgentRuntime
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

log = logging.getLogger(__name__)

_WILDCARDS = ("0.0.0.0", "::", "[::]", "")


def advertised_address(bound: str, manager: str) -> str:
    """The address the manager can reach this daemon on.

    A wildcard listen address (0.0.0.0, [::]) is replaced by the local address
    this host uses to reach the manager.
    """
    host, _, port = bound.rpartition(":")
    if host not in _WILDCARDS:
        return bound
    manager_host = manager.rpartition(":")[0].strip("[]")
    try:
        family = socket.AF_INET6 if ":" in manager_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((manager_host, 9))  # UDP: nothing is sent
            local = probe.getsockname()[0]
    except OSError:
        local = socket.gethostname()
    return f"[{local}]:{port}" if ":" in local else f"{local}:{port}"


class ManagerLink:
    """Keeps this daemon's agents registered with its manager."""

    def __init__(self, runtime: AgentRuntime, daemon_address: str, manager_address: str) -> None:
        self.runtime = runtime
        self.manager_address = manager_address
        self.daemon_address = advertised_address(daemon_address, manager_address)
        self.interval = runtime.config.daemon.heartbeat_interval
        self.timeout = max(2 * self.interval, 2.0)
        self.session_id = ""
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(max(self.interval, 1.0) * 1000)),
        ]
        tls = runtime.config.tls
        self._channel = (
            grpc.aio.secure_channel(manager_address, tls.channel_credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(manager_address, options=options)
        )
        # With TLS the manager knows this daemon by its certificate's name; plaintext
        # daemons name themselves (node and state directory).
        self.daemon_id = (
            tls.identity.name
            if tls is not None
            else f"{runtime.config.daemon.node}/{runtime.identity}"
        )
        self._stub = manager_pb2_grpc.ManagerServiceStub(self._channel)
        self._last_problem = ""
        self._task = asyncio.create_task(self._run(), name="manager-link")
        log.info(
            "reporting to manager %s as %s every %.1fs",
            manager_address,
            self.daemon_address,
            self.interval,
        )

    async def close(self) -> None:
        """Stop heartbeating and close the channel."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channel.close(None)

    async def _run(self) -> None:
        while True:
            try:
                if self.session_id:
                    await self._heartbeat()
                else:
                    await self._register()
                self._recovered()
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND and self.session_id:
                    log.info("manager %s: %s", self.manager_address, exc.details())
                    self.session_id = ""
                    continue  # register again at once
                self._problem(f"{exc.code().name}: {exc.details()}")
            except Exception as exc:
                log.exception("manager link failed")
                self._problem(repr(exc))
            await asyncio.sleep(self.interval)

    async def _register(self) -> None:
        taken_at = time.time()
        request = mpb.RegisterAgentsRequest(
            daemon_address=self.daemon_address,
            node=self.runtime.config.daemon.node,
            agents=[convert.agent_to_proto(s) for s in self.runtime.list_agents()],
            kernels=[convert.kernel_to_proto(k) for k in self.runtime.list_kernels("")],
            taken_at=taken_at,
            heartbeat_interval=self.interval,
            daemon_id=self.daemon_id,
        )
        response = await self._stub.RegisterAgents(request, timeout=self.timeout)
        self.session_id = response.session_id
        log.info(
            "registered agents %s with manager %s",
            ", ".join(self.runtime.agents),
            self.manager_address,
        )

    async def _heartbeat(self) -> None:
        taken_at = time.time()
        agents = []
        for status in self.runtime.list_agents():
            occupied = status.occupied
            agents.append(
                mpb.AgentHeartbeat(
                    agent_id=status.agent_id,
                    scaling_group=status.scaling_group,
                    occupied=convert.resources_to_proto(
                        occupied.cores, occupied.memory, occupied.devices, status.ports_used
                    ),
                    kernel_count=status.kernel_count,
                    healthy=status.healthy,
                    status_message=status.status_message,
                    kernels=[
                        mpb.KernelStatus(
                            kernel_id=k.kernel_id,
                            state=convert.KERNEL_STATES[k.state],
                            exit_code=k.exit_code,
                            status_message=k.status_message,
                            finished_at=k.finished_at,
                        )
                        for k in self.runtime.agents[status.agent_id].list_kernels()
                    ],
                )
            )
        await self._stub.Heartbeat(
            mpb.HeartbeatRequest(
                daemon_address=self.daemon_address,
                session_id=self.session_id,
                taken_at=taken_at,
                agents=agents,
            ),
            timeout=self.timeout,
        )

    def _problem(self, problem: str) -> None:
        if problem != self._last_problem:
            log.warning(
                "manager %s: %s (retrying every %.1fs)",
                self.manager_address,
                problem,
                self.interval,
            )
        self._last_problem = problem

    def _recovered(self) -> None:
        if self._last_problem:
            log.info("manager %s answers again", self.manager_address)
        self._last_problem = ""
