"""`agenthost token create|ls|revoke`: users' bearer tokens (admin only)."""

from __future__ import annotations

import time

import click

from common.console import fail, print_json
from common.durations import DURATION_SYNTAX, parse_duration
from common.errors import InvalidArgument
from common.formatting import render_table
from manager.cli.connection import CALL_TIMEOUT, Connection, connection_options, json_option
from manager.cli.render import as_dict
from protos import manager_pb2 as mpb


@click.group("token")
def token_group() -> None:
    """Create, list and revoke users' bearer tokens (needs an admin token)."""


@token_group.command("create")
@click.option("--name", required=True, help="unique name; a kernel's owner is shown by it")
@click.option("--admin", is_flag=True, help="may do everything")
@click.option(
    "--viewer",
    is_flag=True,
    help="read-only: lists and gets the kernels of its scaling groups (all if none given), "
    "env values redacted",
)
@click.option(
    "--scaling-group",
    "scaling_groups",
    multiple=True,
    help="a scaling group it may create kernels in (repeatable; required unless --admin)",
)
@click.option("--expires", default="", help=f"lifetime ({DURATION_SYNTAX}); default: never")
@connection_options
@json_option
def token_create(
    name: str,
    admin: bool,
    viewer: bool,
    scaling_groups: tuple[str, ...],
    expires: str,
    conn: Connection,
    as_json: bool,
) -> None:
    """Create a token and print it, once: the manager keeps only its hash."""
    try:
        expires_in = parse_duration(expires) if expires else 0.0
    except InvalidArgument as exc:
        fail([f"--expires: {exc}"], 2)
    with conn.stub() as stub:
        response = stub.CreateToken(
            mpb.CreateTokenRequest(
                name=name,
                admin=admin,
                viewer=viewer,
                scaling_groups=scaling_groups,
                expires_in=expires_in,
            ),
            timeout=CALL_TIMEOUT,
        )
    if as_json:
        print_json({"token": response.token, "info": as_dict(response.info)})
        return
    click.echo(response.token)
    click.echo(
        f"token {name!r} (id {response.info.token_id}): store it now, it is not shown again",
        err=True,
    )


@token_group.command("ls")
@click.option("--all", "include_revoked", is_flag=True, help="revoked tokens too")
@connection_options
@json_option
def token_ls(include_revoked: bool, conn: Connection, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    with conn.stub() as stub:
        response = stub.ListTokens(
            mpb.ListTokensRequest(include_revoked=include_revoked), timeout=CALL_TIMEOUT
        )
    if as_json:
        print_json([as_dict(t) for t in response.tokens])
        return
    now = time.time()
    rows = [
        [
            t.name,
            t.token_id,
            _scope(t),
            _when(t.created_at),
            _when(t.expires_at) if t.expires_at else "never",
            "revoked"
            if t.revoked_at
            else "expired"
            if t.expires_at and t.expires_at <= now
            else "active",
            t.created_by,
        ]
        for t in response.tokens
    ]
    click.echo(
        render_table(
            ["NAME", "TOKEN_ID", "SCOPE", "CREATED", "EXPIRES", "STATE", "CREATED_BY"], rows
        )
    )


@token_group.command("revoke")
@click.argument("tokens", nargs=-1, required=True)
@connection_options
def token_revoke(tokens: tuple[str, ...], conn: Connection) -> None:
    """Revoke tokens by name or token id; calls with them fail at once."""
    with conn.stub() as stub:
        for token in tokens:
            info = stub.RevokeToken(mpb.RevokeTokenRequest(token=token), timeout=CALL_TIMEOUT).info
            click.echo(f"revoked token {info.name} (id {info.token_id})")


def _scope(token: mpb.TokenInfo) -> str:
    if token.admin:
        return "admin"
    groups = ",".join(token.scaling_groups)
    if token.parent_kernel_id:
        return f"kernel {token.parent_kernel_id} in {groups}"
    return f"viewer:{groups or '*'}" if token.viewer else groups


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))
