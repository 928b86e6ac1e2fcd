"""Running the daemon: startup -> serve -> shutdown.

Startup builds the runtime whole, then (with `[daemon] metrics_listen`) the
Prometheus endpoint, then binds one gRPC port (mutual TLS, or
plaintext on loopback with `insecure = true`) serving AgentService,
grpc.health.v1 (overall and one service name per agent) and server reflection;
with `[daemon] manager` set, a `ManagerLink` registers the agents
and heartbeats. The audit log (unless `audit_log = ""`) gets a line per call and
per kernel spawned or terminated. Shutdown: health says NOT_SERVING,
`server.stop(grace)` drains in-flight calls, the metrics endpoint closes, agents
stop (kernels keep running unless asked otherwise), checkpoints are flushed, the
audit log is closed (after the kernels' last lines). Signal handlers only set a
flag; a second signal forces exit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import grpc

from common.addresses import plaintext_refusal
from common.audit import AuditLog
from common.interceptors import CallHook
from common.limits import Limits
from common.serving import (
    NOT_SERVING,
    SERVING,
    Listener,
    settle_for_serving,
    start_grpc_server,
    stop_signals,
)
from daemon.audit import audit_kernel_events
from daemon.authz import daemon_policy
from daemon.config import DaemonConfig
from daemon.manager_link import ManagerLink
from daemon.runtime import AgentRuntime
from daemon.service import AgentServicer
from daemon.state_dir import StateDirLock
from protos import agent_pb2, agent_pb2_grpc

if TYPE_CHECKING:
    from common.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


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
        lock: StateDirLock,
        audit: AuditLog | None,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self.runtime = runtime
        self.lock = lock  # held while this daemon runs: one daemon per state_dir
        self.audit = audit  # None: audit_log = "" (off)
        self.server = server
        self.health = health_servicer
        self.address = address
        self.metrics = metrics  # the Prometheus endpoint, with [daemon] metrics_listen
        self._health_task = asyncio.create_task(self._health_forever(), name="health")
        manager = runtime.config.daemon.manager
        self.manager_link = ManagerLink(runtime, address, manager) if manager else None

    @classmethod
    async def start(cls, config: DaemonConfig, listen: str | None = None) -> DaemonServer:
        """Build the runtime, bind the port, start serving."""
        address = listen or config.daemon.listen
        refusal = plaintext_refusal(address, "daemon") if config.tls is None else None
        if refusal is not None:
            raise OSError(refusal)
        credentials = (
            config.tls.server_credentials(require_client_cert=True) if config.tls else None
        )
        lock = await asyncio.to_thread(StateDirLock.acquire, config.state_dir)
        try:
            runtime = await AgentRuntime.create(config)
        except BaseException:
            lock.release()
            raise
        hook: CallHook | None = None
        endpoint: MetricsEndpoint | None = None
        audit = None
        try:
            audit = await open_audit_log(config)
            if audit is not None:
                audit_kernel_events(runtime.kernels.journal, audit)
            if config.daemon.metrics_listen:
                from daemon.metrics import serve_metrics  # prometheus_client only when asked

                hook, endpoint = await serve_metrics(runtime, config.daemon.metrics_listen)
            started = await start_grpc_server(
                lambda server: agent_pb2_grpc.add_AgentServiceServicer_to_server(
                    AgentServicer(runtime), server
                ),
                SERVICE_NAME,
                [Listener(address, credentials)],
                daemon_policy(insecure=config.tls is None),
                Limits(max_batch=config.daemon.max_batch),
                metrics=hook,
                audit=audit,
            )
        except BaseException:
            if endpoint is not None:
                await endpoint.stop()
            await runtime.close()
            if audit is not None:
                await audit.aclose()
            lock.release()
            raise
        bound = started.address
        if config.tls is None:
            log.warning(
                "daemon serving PLAINTEXT on %s (insecure = true): any local user can create "
                "kernels and run commands in them; use [daemon.tls] on shared hosts",
                bound,
            )
        daemon = cls(runtime, started.server, started.health, bound, lock, audit, endpoint)
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
        if endpoint is not None:
            log.info("daemon metrics on http://%s/metrics", endpoint.address)
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
        if self.metrics is not None:
            await self.metrics.stop()
        await self.runtime.close(destroy_kernels=destroy_kernels)
        if self.audit is not None:  # after the kernels' last lines
            await self.audit.aclose()
        self.lock.release()
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


async def open_audit_log(config: DaemonConfig) -> AuditLog | None:
    """The daemon's audit log, opened (None when `audit_log = ""`)."""
    path = config.audit_log
    if path is None:
        return None
    daemon = config.daemon
    return await AuditLog.open(path, "daemon", int(daemon.audit_max_bytes), daemon.audit_backups)


async def run_daemon(
    config: DaemonConfig, listen: str | None, destroy_kernels_on_exit: bool
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    async with stop_signals() as stop:
        daemon = await DaemonServer.start(config, listen)
        settle_for_serving()
        try:
            await stop.wait()
        finally:
            await daemon.stop(destroy_kernels=destroy_kernels_on_exit)
