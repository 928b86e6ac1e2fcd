"""Running the manager: startup -> serve -> shutdown.

Startup builds the core whole (store opened, registry and holds rebuilt), then
binds one gRPC port serving ManagerService, grpc.health.v1 and server reflection.
Shutdown: health says NOT_SERVING, `server.stop(grace)` drains in-flight calls,
the core closes its channels and the store. Signal handlers only set a flag; a
second signal forces exit.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from common.serving import start_grpc_server, stop_signals
from manager.config import ManagerConfig
from manager.core import Manager
from manager.service import ManagerServicer
from protos import manager_pb2, manager_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = manager_pb2.DESCRIPTOR.services_by_name["ManagerService"].full_name


class ManagerServer:
    """A started manager: its core, gRPC server, health servicer and bound address."""

    def __init__(
        self, manager: Manager, server: grpc.aio.Server, health_servicer: Any, address: str
    ) -> None:
        self.manager = manager
        self.server = server
        self.health = health_servicer
        self.address = address

    @classmethod
    async def start(cls, config: ManagerConfig, listen: str | None = None) -> ManagerServer:
        """Build the core, bind the port, start serving."""
        manager = await Manager.create(config)
        try:
            started = await start_grpc_server(
                lambda server: manager_pb2_grpc.add_ManagerServiceServicer_to_server(
                    ManagerServicer(manager), server
                ),
                SERVICE_NAME,
                listen or config.manager.listen,
            )
        except BaseException:
            await manager.close()
            raise
        bound = started.address
        log.info(
            "manager listening on %s (policy %s, state %s)",
            bound,
            config.manager.scheduling_policy,
            config.db_path,
        )
        return cls(manager, started.server, started.health, bound)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, drain, close the core."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(
            self.manager.config.manager.shutdown_grace if grace is None else grace
        )
        await self.manager.close()
        log.info("manager stopped")


async def run_manager(config: ManagerConfig, listen: str | None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    async with stop_signals() as stop:
        manager = await ManagerServer.start(config, listen)
        try:
            await stop.wait()
        finally:
            await manager.stop()
