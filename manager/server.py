"""Running the manager: startup -> serve -> shutdown.

Startup builds the core whole (store opened, registry and holds rebuilt) and the
group controller (every stored group's runner going on where it was), then
(with `[manager] metrics_listen`) the Prometheus endpoint, then binds one gRPC
port serving ManagerService, grpc.health.v1 and server reflection; the audit log
(unless `audit_log = ""`) gets a line per call and per kernel the manager learns
was spawned or terminated.
Shutdown: health says NOT_SERVING, `server.stop(grace)` drains in-flight calls,
the metrics endpoint closes, the group runners stop (groups go on at the next
start), the core closes its channels and the store. Signal handlers only set a
flag; a second signal forces exit.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import grpc

from common.addresses import plaintext_refusal
from common.audit import AuditLog
from common.interceptors import CallHook
from common.serving import Listener, settle_for_serving, start_grpc_server, stop_signals
from manager.audit import audit_kernel_changes
from manager.authz import manager_policy
from manager.config import ManagerConfig
from manager.core import Manager
from manager.groups.controller import GroupController
from manager.service import ManagerServicer
from protos import manager_pb2, manager_pb2_grpc

if TYPE_CHECKING:
    from common.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

SERVICE_NAME = manager_pb2.DESCRIPTOR.services_by_name["ManagerService"].full_name


class ManagerServer:
    """A started manager: its core, gRPC server, health servicer and bound addresses."""

    def __init__(
        self,
        manager: Manager,
        groups: GroupController,
        server: grpc.aio.Server,
        health_servicer: Any,
        address: str,
        daemon_address: str,
        audit: AuditLog | None,
        metrics: MetricsEndpoint | None = None,
    ) -> None:
        self.manager = manager
        self.audit = audit  # None: audit_log = "" (off)
        self.groups = groups
        self.server = server
        self.health = health_servicer
        self.address = address  # users (and, plaintext, daemons)
        self.daemon_address = daemon_address  # where daemons register (= address if plaintext)
        self.metrics = metrics  # the Prometheus endpoint, with [manager] metrics_listen

    @classmethod
    async def start(
        cls, config: ManagerConfig, listen: str | None = None, daemon_listen: str | None = None
    ) -> ManagerServer:
        """Build the core, bind the ports, start serving."""
        listeners = _listeners(config, listen, daemon_listen)
        manager = await Manager.create(config)
        audit = None
        try:
            audit = await open_audit_log(config)
            if audit is not None:
                audit_kernel_changes(manager.kernels, audit)
            groups = await GroupController.create(manager)
        except BaseException:
            await manager.close()
            if audit is not None:
                await audit.aclose()
            raise
        hook: CallHook | None = None
        endpoint: MetricsEndpoint | None = None
        try:
            if config.manager.metrics_listen:
                from manager.metrics import serve_metrics  # prometheus_client only when asked

                hook, endpoint = await serve_metrics(manager, groups, config.manager.metrics_listen)
            started = await start_grpc_server(
                lambda server: manager_pb2_grpc.add_ManagerServiceServicer_to_server(
                    ManagerServicer(manager, groups), server
                ),
                SERVICE_NAME,
                listeners,
                manager_policy(manager.tokens, insecure=config.tls is None),
                metrics=hook,
                audit=audit,
            )
        except BaseException:
            if endpoint is not None:
                await endpoint.stop()
            await groups.close()
            await manager.close()
            if audit is not None:
                await audit.aclose()
            raise
        bound = started.address
        daemons = started.addresses[-1]
        manager.listening_on(bound)
        if config.tls is None:
            log.warning(
                "manager serving PLAINTEXT on %s (insecure = true): tokens cross unencrypted and "
                "daemons are not authenticated; use [manager.tls] beyond this host",
                bound,
            )
        log.info(
            "manager listening on %s (daemons on %s; policy %s, state %s, admin token in %s)",
            bound,
            daemons,
            config.manager.scheduling_policy,
            config.db_path,
            config.admin_token_file,
        )
        if endpoint is not None:
            log.info("manager metrics on http://%s/metrics", endpoint.address)
        return cls(manager, groups, started.server, started.health, bound, daemons, audit, endpoint)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain, close the core."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(
            self.manager.config.manager.shutdown_grace if grace is None else grace
        )
        if self.metrics is not None:
            await self.metrics.stop()
        await self.groups.close()
        await self.manager.close()
        if self.audit is not None:
            await self.audit.aclose()
        log.info("manager stopped")


async def open_audit_log(config: ManagerConfig) -> AuditLog | None:
    """The manager's audit log, opened (None when `audit_log = ""`)."""
    path = config.audit_log
    if path is None:
        return None
    section = config.manager
    return await AuditLog.open(path, "manager", int(section.audit_max_bytes), section.audit_backups)


async def run_manager(
    config: ManagerConfig, listen: str | None, daemon_listen: str | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    async with stop_signals() as stop:
        manager = await ManagerServer.start(config, listen, daemon_listen)
        settle_for_serving()
        try:
            await stop.wait()
        finally:
            await manager.stop()


def _listeners(
    config: ManagerConfig, listen: str | None, daemon_listen: str | None
) -> list[Listener]:
    """Users' port (TLS, tokens) and daemons' port (mutual TLS); one plaintext port if insecure."""
    users = listen or config.manager.listen
    if config.tls is None:
        refusal = plaintext_refusal(users, "manager")
        if refusal is not None:
            raise OSError(refusal)
        return [Listener(users)]
    daemons = daemon_listen or config.daemon_listen_for(users)
    assert daemons is not None
    return [
        Listener(users, config.tls.server_credentials(require_client_cert=False)),
        Listener(daemons, config.tls.server_credentials(require_client_cert=True)),
    ]
