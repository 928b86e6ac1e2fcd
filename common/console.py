"""What every `agenthost` command does at the terminal: errors with exit codes, JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from common.logsetup import LOG_LEVELS

log_level_option = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="how much the process logs (to stderr)",
)


def fail(problems: Iterable[str], code: int) -> NoReturn:
    """Print each problem as `error: ...` on stderr and exit with code."""
    for problem in problems:
        click.echo(f"error: {problem}", err=True)
    raise SystemExit(code)


def print_json(value: Any) -> None:
    """Print value as indented, key-sorted JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=True))
