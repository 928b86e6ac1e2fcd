"""A trusted cluster for tests: a manager with `[manager.tls]` and two daemons with
`[daemon.tls]`, all in this process, certificates from one session CA (tests/pki.py).

`trusted_cluster` starts it (daemon `n1` with agents `w1` (group g1) and `x1` (g2),
daemon `n2` with `w2` (g1)) and yields a `Cluster` once every agent is registered;
the trust tests and the audit tests run against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from protos import manager_pb2 as mpb
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    linked_daemon_config,
    manager_config,
    running_manager,
    user_channel,
)
from tests.pki import Pki
from tests.servers import Daemon, eventually, running_daemon


@dataclass
class Cluster:
    pki: Pki
    manager: Manager
    daemons: dict[str, Daemon]
    tmp_path: Path

    @property
    def users(self) -> str:
        """The manager's user port."""
        return self.manager.server.address

    def channel(self, token: str | None) -> grpc.aio.Channel:
        """A TLS channel to the user port that verifies the manager and sends token."""
        return user_channel(self.users, token, self.pki.server_only_credentials())

    async def token(self, name: str, **scope: object) -> str:
        response = await self.manager.stub.CreateToken(
            mpb.CreateTokenRequest(name=name, **scope)  # type: ignore[arg-type]
        )
        return response.token


@contextlib.asynccontextmanager
async def trusted_cluster(pki: Pki, tmp_path: Path) -> AsyncIterator[Cluster]:
    """The manager (m1) and daemons n1 and n2 over TLS, every agent registered."""
    config = manager_config(
        tmp_path, tls=pki.files("manager", "m1").table(), daemon_listen="127.0.0.1:0"
    )
    as_manager = pki.files("manager", "m1").channel_credentials()
    async with running_manager(config, credentials=pki.server_only_credentials()) as manager:
        daemon_port = manager.server.daemon_address
        async with (
            running_daemon(
                linked_daemon_config(
                    tmp_path,
                    "n1",
                    daemon_port,
                    agents_toml(("w1", "g1", 48100, ""), ("x1", "g2", 48110, "")),
                    trust=f"tls = {pki.files('daemon', 'n1').toml()}",
                ),
                credentials=as_manager,
            ) as one,
            running_daemon(
                linked_daemon_config(
                    tmp_path,
                    "n2",
                    daemon_port,
                    agents_toml(("w2", "g1", 48120, "")),
                    trust=f"tls = {pki.files('daemon', 'n2').toml()}",
                ),
                credentials=as_manager,
            ) as two,
        ):

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 3

            await eventually(registered)
            yield Cluster(pki, manager, {"n1": one, "n2": two}, tmp_path)
