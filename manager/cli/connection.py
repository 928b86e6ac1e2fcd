"""How client commands reach the manager: address, TLS, bearer token, errors.

Every client command takes `--manager` (AGENTHOST_MANAGER, default
127.0.0.1:6000), `--token` (AGENTHOST_TOKEN, else the file $AGENTHOST_HOME/token
that `agenthost up` and a manager's first start write), `--ca` (AGENTHOST_CA, else
$AGENTHOST_HOME/pki/ca.crt when it exists; a path, or the PEM text itself, which is
how a kernel created with --delegate is given it) and `--insecure` (AGENTHOST_INSECURE).
With a CA the manager is verified over TLS; without one, or with `--insecure`, the
channel is plaintext, which is allowed only to a loopback address (the token would
cross the network in the clear). Every call carries `authorization: Bearer <token>`.
A failed call prints the manager's message and code and exits 1.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import grpc

from common.addresses import is_loopback
from common.console import fail
from common.credentials import CA_CERT
from common.home import pki_dir, token_file
from protos import manager_pb2_grpc

DEFAULT_MANAGER = "127.0.0.1:6000"
CALL_TIMEOUT = 30.0  # seconds: every unary call
F = TypeVar("F", bound=Callable[..., Any])


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self.metadata = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = [*(details.metadata or ()), self.metadata]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


@dataclass(frozen=True)
class Connection:
    """Where the manager is and how to prove who we are."""

    address: str
    token: str | None
    ca: Path | bytes | None  # a CA file, or its PEM
    insecure: bool

    def channel(self) -> grpc.Channel:
        """A channel with TLS (when a CA is known) and the bearer token on every call."""
        ca = self.ca if self.ca is not None else _default_ca()
        if self.insecure or ca is None:
            if not is_loopback(self.address):
                fail(
                    [
                        f"no CA certificate to verify the manager at {self.address} with: give "
                        "--ca or AGENTHOST_CA (plaintext is allowed only to a loopback address)"
                    ],
                    2,
                )
            channel = grpc.insecure_channel(self.address)
        else:
            try:
                root = ca if isinstance(ca, bytes) else ca.read_bytes()
            except OSError as exc:
                fail([f"cannot read the CA certificate {ca!s}: {exc.strerror}"], 2)
            channel = grpc.secure_channel(self.address, grpc.ssl_channel_credentials(root))
        token = self.token if self.token is not None else _default_token()
        if token:
            channel = grpc.intercept_channel(channel, _BearerToken(token))
        return channel

    @contextlib.contextmanager
    def stub(self) -> Iterator[manager_pb2_grpc.ManagerServiceStub]:
        """A stub on the manager; a failed call prints its code and message and exits 1."""
        channel = self.channel()
        try:
            yield manager_pb2_grpc.ManagerServiceStub(channel)
        except grpc.RpcError as exc:
            fail([self.describe(exc)], 1)
        finally:
            channel.close()

    def describe(self, exc: grpc.RpcError) -> str:
        """The manager's message and code, with a hint when the cause is likely here."""
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        details = (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""
        hint = ""
        if code is grpc.StatusCode.UNAVAILABLE:
            hint = (
                f"\nhint: is a manager running at {self.address}? (agenthost up, or --manager / "
                "AGENTHOST_MANAGER); a TLS manager needs its CA (--ca, AGENTHOST_CA or "
                "$AGENTHOST_HOME/pki/ca.crt), a plaintext one --insecure"
            )
        elif code is grpc.StatusCode.UNAUTHENTICATED:
            hint = (
                f"\nhint: give a token with --token or AGENTHOST_TOKEN, or put it in {token_file()}"
            )
        return f"{details} ({code.name}){hint}"


def _default_ca() -> Path | None:
    path = pki_dir() / CA_CERT
    return path if path.is_file() else None


def _default_token() -> str | None:
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


def _ca_source(value: str | None) -> Path | bytes | None:
    """--ca as given: PEM text (it starts with a PEM header) or a path."""
    if value is None or not value.strip():
        return None
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value)


def connection_options(f: F) -> F:
    """--manager, --token, --ca, --insecure, passed to the command as `conn`."""

    @click.option(
        "--manager",
        "manager_address",
        envvar="AGENTHOST_MANAGER",
        default=DEFAULT_MANAGER,
        show_default=True,
        show_envvar=True,
        help="manager host:port (its user port)",
    )
    @click.option(
        "--token",
        envvar="AGENTHOST_TOKEN",
        show_envvar=True,
        default=None,
        help="bearer token (default: the file $AGENTHOST_HOME/token)",
    )
    @click.option(
        "--ca",
        envvar="AGENTHOST_CA",
        show_envvar=True,
        default=None,
        help=(
            "CA certificate to verify the manager with, a file or its PEM text "
            "(default: $AGENTHOST_HOME/pki/ca.crt)"
        ),
    )
    @click.option(
        "--insecure",
        envvar="AGENTHOST_INSECURE",
        show_envvar=True,
        is_flag=True,
        help="plaintext to a manager with insecure = true (loopback only)",
    )
    @functools.wraps(f)
    def wrapper(
        *args: Any,
        manager_address: str,
        token: str | None,
        ca: str | None,
        insecure: bool,
        **kwargs: Any,
    ) -> Any:
        conn = Connection(manager_address, token, _ca_source(ca), insecure)
        return f(*args, conn=conn, **kwargs)

    return wrapper  # type: ignore[return-value]


def json_option(f: F) -> F:
    """The `--json` flag."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")(f)
