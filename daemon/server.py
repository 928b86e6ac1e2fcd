"""Running the daemon: startup -> serve -> shutdown.

Startup builds the runtime whole, then binds one gRPC port serving
AgentService, grpc.health.v1 (overall and one service name per agent) and server
reflection; with `[daemon] manager` set, a `ManagerLink` registers the agents
and heartbeats. Shutdown: health says NOT_SERVING, `server.stop(grace)` drains
in-flight calls, agents stop (kernels keep running unless asked otherwise),
checkpoints are flushed. Signal handlers only set a flag; a second signal forces exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from daemon.config import DaemonConfig
from daemon.manager_link import ManagerLink
from daemon.runtime import AgentRuntime
from daemon.service import AgentServicer, ErrorMappingInterceptor
from protos import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def agent_health_name(agent_id: str) -> str:
    """The grpc.health.v1 service name of one agent: `agenthost.v1.AgentService/<agent_id>`.

    The bare agent_id is published too, as an alias.
    """
    return f"{SERVICE_NAME}/{agent_id}"


class DaemonServer:
    """A started daemon: its runtime, gRPC server, health servicer and bound address."""

    def __init__(
        self,
        runtime: AgentRuntime,
        server: grpc.aio.Server,
        health_servicer: Any,
        address: str,
    ) -> None:
        self.runtime = runtime
        self.server = server
        self.health = health_servicer
        self.address = address
        self._health_task = asyncio.create_task(self._health_forever(), name="health")
        manager = runtime.config.daemon.manager
        self.manager_link = ManagerLink(runtime, address, manager) if manager else None

    @classmethod
    async def start(cls, config: DaemonConfig, listen: str | None = None) -> DaemonServer:
        """Build the runtime, bind the port, start serving."""
        runtime = await AgentRuntime.create(config)
        try:
            server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
            agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(runtime), server)
            health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
            health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
            reflection.enable_server_reflection(
                (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
            )
            address = listen or config.daemon.listen
            host = address.rpartition(":")[0]
            port = server.add_insecure_port(address)
            if port == 0:
                raise OSError(f"cannot listen on {address}")
            await server.start()
        except BaseException:
            await runtime.close()
            raise
        bound = f"{host}:{port}"
        daemon = cls(runtime, server, health_servicer, bound)
        await daemon._publish_health()
        for status in runtime.list_agents():
            log.info(
                "agent %s (backend %s, scaling group %s, ports %d-%d) serving on %s",
                status.agent_id,
                status.backend,
                status.scaling_group,
                status.port_range[0],
                status.port_range[1],
                bound,
            )
        log.info("daemon listening on %s with %d agents", bound, len(runtime.agents))
        return daemon

    async def stop(self, destroy_kernels: bool = False, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain, close agents, flush checkpoints."""
        self._health_task.cancel()
        if self.manager_link is not None:
            await self.manager_link.close()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(
            self.runtime.config.daemon.shutdown_grace if grace is None else grace
        )
        await self.runtime.close(destroy_kernels=destroy_kernels)
        log.info("daemon stopped%s", " (kernels destroyed)" if destroy_kernels else "")

    async def _publish_health(self) -> None:
        await self.health.set("", SERVING)
        await self.health.set(SERVICE_NAME, SERVING)
        for agent in self.runtime.agents.values():
            status = SERVING if agent.healthy else NOT_SERVING
            await self.health.set(agent_health_name(agent.id), status)
            await self.health.set(agent.id, status)

    async def _health_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self.runtime.config.daemon.reconcile_interval, 2.0))
            await self._publish_health()


async def run_daemon(
    config: DaemonConfig, listen: str | None, destroy_kernels_on_exit: bool
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
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
    daemon = await DaemonServer.start(config, listen)
    try:
        await stop.wait()
    finally:
        await daemon.stop(destroy_kernels=destroy_kernels_on_exit)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
