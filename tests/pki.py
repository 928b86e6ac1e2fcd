"""Certificates for tests: one cluster CA per test session, and a foreign one.

`Pki.files(role, name)` issues (once) and returns the `ca`/`cert`/`key` paths of
a certificate for role/name, ready for a `[daemon.tls]` or `[manager.tls]` table
or for a client channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from common.credentials import cert_paths, init_ca, issue


@dataclass(frozen=True)
class TlsPaths:
    """The three files of one holder."""

    ca: Path
    cert: Path
    key: Path

    def toml(self) -> str:
        """As an inline TOML table."""
        return f'{{ ca = "{self.ca}", cert = "{self.cert}", key = "{self.key}" }}'

    def table(self) -> dict[str, str]:
        """As a TOML table's values."""
        return {"ca": str(self.ca), "cert": str(self.cert), "key": str(self.key)}

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client TLS presenting this certificate."""
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), self.key.read_bytes(), self.cert.read_bytes()
        )


class Pki:
    """A CA directory and the certificates issued from it."""

    SANS = ("127.0.0.1", "localhost", "::1")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        init_ca(directory)

    @property
    def ca(self) -> Path:
        """The CA certificate."""
        return self.directory / "ca.crt"

    def files(self, role: str, name: str, admin: bool = False) -> TlsPaths:
        """The certificate of role/name (issued on first use)."""
        cert, key = cert_paths(self.directory, role, name)
        if not cert.exists():
            issue(self.directory, role, name, self.SANS, admin=admin)
        return TlsPaths(self.ca, cert, key)

    def server_only_credentials(self) -> grpc.ChannelCredentials:
        """Client TLS that verifies the server but presents no certificate."""
        return grpc.ssl_channel_credentials(self.ca.read_bytes())
