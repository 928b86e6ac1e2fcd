"""The daemon's commands: `agenthost daemon`, and the check of a daemon config that
`agenthost config check` (`cli/config.py`) runs.

A thin layer mapping flags to config and calls; `cli/main.py` attaches
`COMMANDS` to the root group.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from common.console import fail, log_level_option
from common.errors import AgentHostError, ConfigError
from common.formatting import format_bytes, plural, render_table
from common.logsetup import setup_logging
from daemon.config import DaemonConfig, load_config
from daemon.resources import format_cores, format_devices


def load_or_exit(path: Path, node: str | None = None) -> DaemonConfig:
    """The validated config at path, or every problem printed and exit code 2."""
    try:
        return load_config(path, node=node)
    except ConfigError as exc:
        fail(exc.problems, 2)


@click.command("daemon")
@click.option(
    "--config",
    "config_path",
    envvar="AGENTHOST_DAEMON_CONFIG",
    show_envvar=True,
    required=True,
    type=click.Path(path_type=Path),
    help="daemon TOML file (e.g. configs/daemon-multi.toml)",
)
@click.option("--listen", default=None, help="override [daemon] listen (host:port; port 0 = any)")
@click.option(
    "--node",
    envvar="AGENTHOST_DAEMON_NODE",
    show_envvar=True,
    default=None,
    help="override [daemon] node (a DaemonSet passes the node's name from the downward API)",
)
@click.option(
    "--destroy-kernels-on-exit",
    is_flag=True,
    help="destroy every kernel on shutdown instead of leaving them running",
)
@log_level_option
def daemon(
    config_path: Path,
    listen: str | None,
    node: str | None,
    destroy_kernels_on_exit: bool,
    log_level: str,
) -> None:
    """Run the node daemon: every agent of FILE behind one gRPC port.

    SIGTERM or Ctrl-C shuts down gracefully; kernels keep running (and are
    re-adopted on the next start) unless --destroy-kernels-on-exit is given.
    """
    setup_logging(log_level)
    config = load_or_exit(config_path, node)
    from daemon.server import run_daemon

    try:
        asyncio.run(run_daemon(config, listen, destroy_kernels_on_exit))
    except (AgentHostError, OSError) as exc:
        fail([str(exc)], 1)


def check_daemon_config(file: Path, node: str | None) -> None:
    """`agenthost config check` of a daemon TOML: each agent's resolved slice, or every
    problem and exit code 2. Agent ids with {node} are shown as on that node."""
    cfg = load_or_exit(file, node)
    rows = [
        [
            a.id,
            a.backend,
            a.scaling_group,
            format_cores(a.slice.cores),
            format_bytes(a.slice.memory),
            format_devices(a.slice.devices),
            f"{a.port_range[0]}-{a.port_range[1]}",
        ]
        for a in cfg.agents
    ]
    click.echo(
        f"{file}: ok, {plural(len(cfg.agents), 'agent')}, "
        f"allocation_mode {cfg.daemon.allocation_mode}, "
        f"listen {cfg.daemon.listen}, state_dir {cfg.state_dir}"
    )
    click.echo(
        render_table(
            ["AGENT_ID", "BACKEND", "SCALING_GROUP", "CORES", "MEMORY", "DEVICES", "PORT_RANGE"],
            rows,
        )
    )
    if cfg.hooks:
        click.echo(f"hooks: {', '.join(h.name for h in cfg.hooks)}")
    for note in cfg.notes:
        click.echo(f"note: {note}")


COMMANDS = (daemon,)
