"""`agenthost manager`: run the manager; and the check of a manager config that
`agenthost config check` (`cli/config.py`) runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from common.console import fail, log_level_option
from common.errors import AgentHostError, ConfigError
from common.logsetup import setup_logging


@click.command("manager")
@click.option(
    "--config",
    "config_path",
    envvar="AGENTHOST_MANAGER_CONFIG",
    show_envvar=True,
    required=True,
    type=click.Path(path_type=Path),
    help="manager TOML file (e.g. configs/manager.toml)",
)
@click.option("--listen", default=None, help="override [manager] listen (host:port; port 0 = any)")
@click.option(
    "--daemon-listen", default=None, help="override [manager] daemon_listen (the daemons' port)"
)
@log_level_option
def manager_command(
    config_path: Path, listen: str | None, daemon_listen: str | None, log_level: str
) -> None:
    """Run the manager: the agent registry, scheduler and user API.

    Users call `listen` over TLS with bearer tokens; daemons register and heartbeat
    on `daemon_listen` with their certificates (with `insecure = true`: one
    plaintext loopback port for both). On first start it writes an admin token to
    `admin_token_file` (default $AGENTHOST_HOME/token, where client commands look).
    SIGTERM or Ctrl-C shuts down gracefully; its state is in the SQLite file.
    """
    from manager.config import load_manager_config
    from manager.server import run_manager

    setup_logging(log_level)
    try:
        config = load_manager_config(config_path)
    except ConfigError as exc:
        fail(exc.problems, 2)
    try:
        asyncio.run(run_manager(config, listen, daemon_listen))
    except (AgentHostError, OSError) as exc:
        fail([str(exc)], 1)


def check_manager_config(file: Path) -> None:
    """`agenthost config check` of a manager TOML: what the manager would serve and
    where it keeps its state, or every problem and exit code 2."""
    from manager.config import load_manager_config

    try:
        config = load_manager_config(file)
    except ConfigError as exc:
        fail(exc.problems, 2)
    section = config.manager
    if config.tls is None:
        serving = f"listen {section.listen} (plaintext, insecure = true; daemons there too)"
    else:
        serving = (
            f"listen {section.listen} (TLS, bearer tokens), "
            f"daemons on {config.daemon_listen_for(section.listen)} (mutual TLS)"
        )
    audit = config.audit_log
    click.echo(f"{file}: ok, manager {serving}")
    click.echo(f"scheduling_policy {section.scheduling_policy}, db {config.db_path}")
    click.echo(f"audit log {audit if audit is not None else 'off'}")
    click.echo(f"admin token file {config.admin_token_file}")
