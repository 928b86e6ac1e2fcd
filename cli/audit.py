"""`agenthost audit tail`: read the audit trail of a daemon or a manager.

Finds the log from a daemon or a manager TOML (a `[manager]` table makes it a
manager's; only that table is read, so no certificate or host check stands in the
way) or takes the file itself; prints the last entries across the rotated parts,
optionally only those naming one kernel, then, with --follow, what is written
after. One line per entry, key=value, or the JSON lines as stored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from common.audit import concerns_kernel, follow_entries, last_entries, log_parts
from common.config import describe_errors, read_toml
from common.console import fail
from common.errors import ConfigError
from daemon.config import DaemonSection, audit_log_path
from manager.config import ManagerConfig, ManagerSection


@click.group("audit")
def audit_group() -> None:
    """Read the audit trail of a daemon or a manager (one JSON line per call and per
    kernel spawned or terminated)."""


@audit_group.command("tail")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="a daemon or a manager TOML: read the audit log its audit_log names (default: "
    "<state_dir>/audit.log for a daemon, audit.log beside db_path for a manager)",
)
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path),
    default=None,
    help="the audit log itself; its rotated parts FILE.1, FILE.2, ... are read too",
)
@click.option(
    "-n",
    "--lines",
    "count",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="how many of the last entries to print, read across the rotated parts",
)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="then keep printing entries as they are written, across rotations (Ctrl-C stops)",
)
@click.option(
    "--kernel",
    "kernel_id",
    default=None,
    metavar="ID",
    help="only entries naming this kernel: calls about it (batches included), its spawn "
    "and its end",
)
@click.option("--json", "as_json", is_flag=True, help="print the entries as JSON lines")
def audit_tail(
    config_path: Path | None,
    file: Path | None,
    count: int,
    follow: bool,
    kernel_id: str | None,
    as_json: bool,
) -> None:
    """Print the last entries of an audit log (give --config or --file).

    \b
    Each line: TIME SERVER EVENT then key=value fields, e.g.
      2025-05-01T10:00:00.000001Z manager call ManagerService/GetKernel
        caller=token:alice kernel=k1 code=OK duration=0.8ms
    EVENT is call (one per RPC, with its status code), spawned or terminated.
    """
    path = _log_path(config_path, file)
    if not follow and not log_parts(path):
        fail([f"no audit log at {path} (nothing written yet, or another path configured)"], 1)
    tail = last_entries(path, count, kernel_id)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        for entry in tail.entries:
            click.echo(_render(entry, as_json))
        if tail.skipped and not follow:
            click.echo(f"note: {tail.skipped} lines of {path} are not audit entries", err=True)
        if follow:
            for new in follow_entries(path, tail.offset):
                if new is not None and (kernel_id is None or concerns_kernel(new, kernel_id)):
                    click.echo(_render(new, as_json))


def _log_path(config_path: Path | None, file: Path | None) -> Path:
    """The audit log the options name; exit 2 when they name none or two."""
    if (config_path is None) == (file is None):
        raise click.UsageError("give either --config FILE or --file PATH")
    if file is not None:
        return file
    assert config_path is not None
    try:
        path = _configured(config_path)
    except ConfigError as exc:
        fail(exc.problems, 2)
    if path is None:
        fail([f'{config_path}: audit_log = "": this server keeps no audit log'], 2)
    return path


def _configured(config_path: Path) -> Path | None:
    """The audit log a daemon or manager TOML configures (None: off)."""
    raw = read_toml(config_path)
    if "manager" in raw:
        table, model = "manager", ManagerSection
    else:
        table, model = "daemon", DaemonSection  # type: ignore[assignment]
    try:
        section = model.model_validate(raw.get(table, {}))
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, f"{config_path}: {table}")) from None
    if isinstance(section, ManagerSection):
        return ManagerConfig(manager=section, path=config_path).audit_log
    return audit_log_path(config_path, section)


LEAD = ("time", "server", "event", "method")


def _render(entry: Mapping[str, Any], as_json: bool) -> str:
    """One entry as a line: its JSON, or TIME SERVER EVENT [METHOD] key=value ... (fields
    that are null or empty left out)."""
    if as_json:
        return json.dumps(entry, separators=(",", ":"))
    head = [_text(entry.get("time", "-")), _text(entry.get("server", "-"))]
    head.append(_text(entry.get("event", "-")))
    method = entry.get("method")
    if isinstance(method, str):
        head.append(_text(method.rsplit(".", 1)[-1]))  # AgentService/GetKernel
    fields = [
        f"{_key(key)}={_value(key, value)}"
        for key, value in entry.items()
        if key not in LEAD and value is not None and value != ""
    ]
    return " ".join(head + fields)


def _key(key: str) -> str:
    return {"agent_id": "agent", "kernel_id": "kernel", "kernel_ids": "kernels"}.get(key, key)


def _value(key: str, value: Any) -> str:
    if key == "duration" and isinstance(value, int | float):
        return f"{value * 1000:.1f}ms"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{_text(k)}:{_text(v)}" for k, v in value.items()) or "-"
    return _text(value)


def _text(value: Any) -> str:
    """value for a terminal: quoted (JSON-escaped) when it has spaces, quotes or controls."""
    text = str(value)
    if text and all(c.isprintable() and not c.isspace() and c not in "\"'" for c in text):
        return text
    return json.dumps(text)


COMMANDS = (audit_group,)
