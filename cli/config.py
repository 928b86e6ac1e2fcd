"""`agenthost config check|sample`: configuration files, the daemon's and the manager's.

`check` tells the two kinds apart by their tables (a manager config has only a
[manager] table) and hands the file to the daemon's or the manager's own check, so
each side keeps its rules; anything else (a daemon config, a broken file) goes to
the daemon's check, which names every problem.
"""

from __future__ import annotations

from pathlib import Path

import click

from common.config import read_toml
from common.errors import ConfigError
from daemon.cli import check_daemon_config
from daemon.config import render_sample
from manager.cli.server import check_manager_config

DAEMON_TABLES = {"daemon", "defaults", "agents", "agent"}


def is_manager_config(path: Path) -> bool:
    """True when path parses as TOML with a [manager] table and no daemon table."""
    try:
        raw = read_toml(path)
    except ConfigError:
        return False
    return "manager" in raw and not DAEMON_TABLES & raw.keys()


@click.group("config")
def config() -> None:
    """Inspect configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--node",
    envvar="AGENTHOST_DAEMON_NODE",
    show_envvar=True,
    default=None,
    help="check as the daemon of this node would ({node} in agent ids becomes it)",
)
def config_check(file: Path, node: str | None) -> None:
    """Validate FILE, a daemon or a manager config, or print every error (exit 2).

    A daemon config: each agent's resolved slice; agent ids with {node} are shown
    as on this host (its [daemon] node, or --node). A manager config (only a
    [manager] table): where it serves, with what trust, and where its state is.
    """
    if is_manager_config(file):
        check_manager_config(file)
    else:
        check_daemon_config(file, node)


@config.command("sample")
def config_sample() -> None:
    """Print an annotated sample daemon TOML with every option, its default and meaning."""
    click.echo(render_sample(), nl=False)


COMMANDS = (config,)
