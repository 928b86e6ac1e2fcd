"""The `agenthost` command: a thin layer mapping flags to config and calls.

Every option can also come from an environment variable with the `AGENTHOST_`
prefix (e.g. AGENTHOST_DAEMON_CONFIG for `agenthost daemon --config`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from daemon.config import DaemonConfig, load_config, plural, render_sample
from daemon.errors import AgentHostError, ConfigError
from daemon.resources import format_bytes, format_cores, format_devices


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _load_or_exit(path: Path) -> DaemonConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        raise SystemExit(2) from None


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [headers, *rows]
    ]
    return "\n".join(lines)


@click.group(
    context_settings={"auto_envvar_prefix": "AGENTHOST", "help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """agenthost: one node daemon hosting several agents, each keyed by agent_id.

    \b
    Quick start (a manager plus a daemon with three local agents):
      agenthost up
      agenthost kernel create -- sleep 600
      agenthost kernel ls
    Validate a daemon config:  agenthost config check FILE

    Every option can also come from an environment variable named
    AGENTHOST_<COMMAND>_<OPTION> (e.g. AGENTHOST_DAEMON_CONFIG); client commands
    read the manager address from AGENTHOST_MANAGER.
    """


@main.command()
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
    "--destroy-kernels-on-exit",
    is_flag=True,
    help="destroy every kernel on shutdown instead of leaving them running",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
def daemon(
    config_path: Path, listen: str | None, destroy_kernels_on_exit: bool, log_level: str
) -> None:
    """Run the node daemon: every agent of FILE behind one gRPC port.

    SIGTERM or Ctrl-C shuts down gracefully; kernels keep running (and are
    re-adopted on the next start) unless --destroy-kernels-on-exit is given.
    """
    _setup_logging(log_level)
    config = _load_or_exit(config_path)
    from daemon.server import run_daemon

    try:
        asyncio.run(run_daemon(config, listen, destroy_kernels_on_exit))
    except AgentHostError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None
    except OSError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(1) from None


@main.group()
def config() -> None:
    """Inspect configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def config_check(file: Path) -> None:
    """Validate FILE and print each agent's resolved slice, or every error (exit 2)."""
    cfg = _load_or_exit(file)
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
        f"listen {cfg.daemon.listen}"
    )
    click.echo(
        render_table(
            ["AGENT_ID", "BACKEND", "SCALING_GROUP", "CORES", "MEMORY", "DEVICES", "PORT_RANGE"],
            rows,
        )
    )
    for note in cfg.notes:
        click.echo(f"note: {note}")


@config.command("sample")
def config_sample() -> None:
    """Print an annotated sample daemon TOML with every option, its default and meaning."""
    click.echo(render_sample(), nl=False)


def _attach_manager_commands() -> None:
    """`manager`, `up`, `agents` and `kernel` live in manager/cli.py."""
    from manager.cli import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_attach_manager_commands()
