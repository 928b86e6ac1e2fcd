"""`agenthost certs init|issue`: the cluster CA and the certificates it signs."""

from __future__ import annotations

from pathlib import Path

import click

from common.console import fail
from common.credentials import CERT_DAYS, ROLES, init_ca, issue
from common.errors import AgentHostError
from common.home import pki_dir


def _default_dir() -> Path:
    return pki_dir()


@click.group("certs")
def certs_group() -> None:
    """Make the cluster CA and the certificates of managers, daemons and users."""


@certs_group.command("init")
@click.argument("directory", required=False, type=click.Path(path_type=Path))
def certs_init(directory: Path | None) -> None:
    """Create a cluster CA in DIRECTORY (default: $AGENTHOST_HOME/pki).

    Writes ca.crt and ca.key (mode 0600). Refuses to replace an existing CA.
    """
    directory = directory or _default_dir()
    try:
        cert, key = init_ca(directory)
    except AgentHostError as exc:
        fail([str(exc)], 1)
    click.echo(f"CA certificate: {cert}\nCA key:         {key} (keep it secret)")


@certs_group.command("issue")
@click.option("--role", type=click.Choice(ROLES), required=True, help="who holds the certificate")
@click.option("--name", required=True, help="its name: daemon identity, manager or user name")
@click.option(
    "--san",
    "sans",
    multiple=True,
    help=(
        "a host name or address the holder serves on (repeatable): managers; daemons only "
        "for clients that dial them directly (the manager checks a daemon by its name)"
    ),
)
@click.option("--admin", is_flag=True, help="user certificates: may call daemons and everything")
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path),
    default=None,
    help="the CA directory; the certificate is written there too (default: $AGENTHOST_HOME/pki)",
)
@click.option("--days", type=click.IntRange(min=1), default=CERT_DAYS, show_default=True)
def certs_issue(
    role: str, name: str, sans: tuple[str, ...], admin: bool, directory: Path | None, days: int
) -> None:
    """Issue a certificate for --role and --name, signed by the CA in --dir.

    The role and name are written into the certificate (SAN URI
    agenthost://ROLE/NAME); peers take the holder's identity from it.
    Writes ROLE-NAME.crt and ROLE-NAME.key (0600) into --dir.
    """
    directory = directory or _default_dir()
    try:
        cert, key = issue(directory, role, name, sans, admin=admin, days=days)
    except AgentHostError as exc:
        fail([str(exc)], 1)
    click.echo(f"certificate: {cert}\nkey:         {key} (mode 0600)")


COMMANDS = (certs_group,)
