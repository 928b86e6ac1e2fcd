"""`agenthost up`: a manager and one daemon registered with it, in one process.

The only module that starts both sides; neither `daemon` nor `manager` imports
the other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import click

from common.console import fail, log_level_option
from common.errors import AgentHostError, ConfigError
from common.logsetup import setup_logging
from common.serving import stop_signals
from daemon.config import DaemonConfig, load_config
from daemon.server import DaemonServer
from manager.config import ManagerConfig, load_manager_config
from manager.server import ManagerServer

log = logging.getLogger(__name__)


async def run_up(
    manager_config: ManagerConfig,
    daemon_config: DaemonConfig,
    manager_listen: str | None = None,
    daemon_listen: str | None = None,
) -> None:
    """A manager and one daemon registered with it, until SIGTERM or SIGINT stops both."""
    async with stop_signals() as stop:
        manager = await ManagerServer.start(manager_config, manager_listen)
        try:
            pointed = dataclasses.replace(
                daemon_config,
                daemon=daemon_config.daemon.model_copy(update={"manager": manager.address}),
            )
            daemon = await DaemonServer.start(pointed, daemon_listen)
            try:
                log.info(
                    "up: manager on %s, daemon on %s with agents %s; try: "
                    "AGENTHOST_MANAGER=%s agenthost kernel create -- sleep 600",
                    manager.address,
                    daemon.address,
                    ", ".join(daemon.runtime.agents),
                    manager.address,
                )
                await stop.wait()
            finally:
                await daemon.stop()
        finally:
            await manager.stop()


@click.command("up")
@click.option(
    "--config",
    "daemon_config_path",
    envvar="AGENTHOST_UP_CONFIG",
    default="configs/daemon-multi.toml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="daemon TOML file",
)
@click.option(
    "--manager-config",
    "manager_config_path",
    default="configs/manager.toml",
    show_default=True,
    type=click.Path(path_type=Path),
    help="manager TOML file",
)
@click.option("--manager-listen", default=None, help="override the manager's listen address")
@click.option("--daemon-listen", default=None, help="override the daemon's listen address")
@log_level_option
def up_command(
    daemon_config_path: Path,
    manager_config_path: Path,
    manager_listen: str | None,
    daemon_listen: str | None,
    log_level: str,
) -> None:
    """Run a manager and one daemon registered with it, in one process.

    The daemon's `[daemon] manager` is set to the manager's address. Ctrl-C or
    SIGTERM stops both; kernels keep running and are re-adopted next time.
    """
    setup_logging(log_level)
    try:
        manager_config = load_manager_config(manager_config_path)
        daemon_config = load_config(daemon_config_path)
    except ConfigError as exc:
        fail(exc.problems, 2)
    try:
        asyncio.run(run_up(manager_config, daemon_config, manager_listen, daemon_listen))
    except (AgentHostError, OSError) as exc:
        fail([str(exc)], 1)
