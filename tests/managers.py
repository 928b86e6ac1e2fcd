"""Real managers for tests: in-process on port 0, or the real `agenthost manager` command.

`manager_config` writes a manager TOML into a temporary directory;
`running_manager` starts the real grpc.aio manager in this process and yields a
connected stub; `ManagerProcess` runs `agenthost manager` as a separate process
(for kill -9 and restart tests); `linked_daemon_config` writes a daemon TOML that
registers with a manager and heartbeats fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import textwrap
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import tomlkit

from common.home import token_file
from manager.config import load_manager_config
from manager.server import ManagerServer
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.servers import AgenthostProcess, DaemonProcess, daemon_config

HEARTBEAT = 0.2  # seconds between a test daemon's heartbeats


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manager_config(tmp_path: Path, listen: str = "127.0.0.1:0", **settings: object) -> Path:
    """Write manager.toml with its database under tmp_path; settings override [manager] keys.

    Plaintext on loopback unless settings give `tls`; the admin token is the
    session's ($AGENTHOST_HOME/token, see tests/conftest.py).
    """
    values: dict[str, object] = {
        "listen": listen,
        "db_path": str(tmp_path / "manager.db"),
        "liveness_check_interval": 0.05,
        "call_timeout": 5.0,
        **settings,
    }
    if "tls" not in values:
        values.setdefault("insecure", True)
    path = tmp_path / "manager.toml"
    path.write_text(tomlkit.dumps({"manager": values}))
    return path


def linked_daemon_config(
    tmp_path: Path,
    name: str,
    manager_address: str,
    agents: str,
    heartbeat: float = HEARTBEAT,
    listen: str = "127.0.0.1:0",
    trust: str = "insecure = true",
    reconcile_interval: float = 0.5,
) -> Path:
    """A daemon TOML in tmp_path/name whose daemon registers with manager_address."""
    directory = tmp_path / name
    directory.mkdir(parents=True, exist_ok=True)
    path = daemon_config(
        directory,
        agents,
        daemon=textwrap.dedent(
            f"""\
            manager = "{manager_address}"
            heartbeat_interval = {heartbeat}
            node = "{name}"
            """
        ),
        trust=trust,
        reconcile_interval=reconcile_interval,
    )
    text = path.read_text().replace('listen = "127.0.0.1:0"', f'listen = "{listen}"')
    path.write_text(text)
    return path


def agents_toml(*agents: tuple[str, str, int, str]) -> str:
    """[[agents]] entries from (id, scaling_group, first_port, extra inline keys)."""
    return "".join(
        f"""
[[agents]]
id = "{agent_id}"
scaling_group = "{group}"
port_range = [{port}, {port + 9}]
{extra}
"""
        for agent_id, group, port, extra in agents
    )


@dataclass
class Manager:
    """An in-process manager and a stub connected to it."""

    server: ManagerServer
    stub: manager_pb2_grpc.ManagerServiceStub
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        """Where it listens."""
        return self.server.address


class _WithToken:
    def __init__(self, token: str) -> None:
        self.entry = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self.entry)
        return details._replace(metadata=metadata)


class _TokenOnUnary(_WithToken, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


class _TokenOnStream(_WithToken, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_token(details), request)


def bearer_token(token: str) -> list[Any]:
    """Interceptors adding `authorization: Bearer <token>` to every call of an aio channel
    (one object per kind: grpc.aio files an interceptor under its first kind only)."""
    return [_TokenOnUnary(token), _TokenOnStream(token)]


def admin_token() -> str:
    """The session's admin token (every test manager accepts it)."""
    return token_file().read_text().strip()


def user_channel(
    address: str, token: str | None, credentials: grpc.ChannelCredentials | None = None
) -> grpc.aio.Channel:
    """A channel to a manager's user port sending token (plaintext without credentials)."""
    interceptors = bearer_token(token) if token else []
    if credentials is None:
        return grpc.aio.insecure_channel(address, interceptors=interceptors)
    return grpc.aio.secure_channel(address, credentials, interceptors=interceptors)


@contextlib.asynccontextmanager
async def running_manager(
    config_path: Path,
    listen: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> AsyncIterator[Manager]:
    """Start the real manager in this process, with an admin stub; stop it after.

    credentials: the client TLS of the stub, for a manager with [manager.tls].
    """
    server = await ManagerServer.start(load_manager_config(config_path), listen)
    channel = user_channel(server.address, admin_token(), credentials)
    try:
        yield Manager(server, manager_pb2_grpc.ManagerServiceStub(channel), channel)
    finally:
        await channel.close(None)
        await server.stop(grace=0.5)


async def agents_by_id(stub: manager_pb2_grpc.ManagerServiceStub) -> dict[str, mpb.ManagedAgent]:
    """ListAgents as a dict."""
    response = await stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=10)
    return {a.info.agent_id: a for a in response.agents}


async def wait_for_agents(
    stub: manager_pb2_grpc.ManagerServiceStub,
    count: int,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 20.0,
) -> None:
    """Return once the manager lists at least count agents (its daemons registered);
    TimeoutError after timeout seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        listed = await stub.ListAgents(
            mpb.ManagerListAgentsRequest(), timeout=10, metadata=metadata
        )
        if len(listed.agents) >= count:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the manager lists {len(listed.agents)} agents, not {count}")
        await asyncio.sleep(0.05)


async def kernels_by_id(stub: manager_pb2_grpc.ManagerServiceStub) -> dict[str, mpb.ManagedKernel]:
    """ListKernels as a dict."""
    response = await stub.ListKernels(mpb.ManagerListKernelsRequest(), timeout=10)
    return {k.kernel.kernel_id: k for k in response.kernels}


async def create(
    stub: manager_pb2_grpc.ManagerServiceStub,
    spec: pb.KernelSpec,
    scaling_group: str = "",
    agent_id: str = "",
) -> mpb.ManagedKernel:
    """CreateKernel through the manager."""
    response = await stub.CreateKernel(
        mpb.CreateKernelRequest(spec=spec, scaling_group=scaling_group, agent_id=agent_id),
        timeout=30,
    )
    kernel: mpb.ManagedKernel = response.kernel
    return kernel


async def run(
    stub: manager_pb2_grpc.ManagerServiceStub, kernel_id: str, argv: list[str]
) -> tuple[bytes, bytes, int]:
    """Execute through the manager: stdout, stderr, exit code."""
    out, err, code = b"", b"", None
    async for m in stub.Execute(pb.ExecuteRequest(kernel_id=kernel_id, argv=argv), timeout=30):
        out += m.stdout
        err += m.stderr
        if m.HasField("exit"):
            code = m.exit.exit_code
    assert code is not None
    return out, err, code


class ManagerProcess(AgenthostProcess):
    """`agenthost manager --config FILE`."""

    command = "manager"


@contextlib.contextmanager
def manager_process(config_path: Path, *extra: str) -> Iterator[ManagerProcess]:
    """A ManagerProcess that is always cleaned up."""
    proc = ManagerProcess(config_path, *extra)
    try:
        yield proc
    finally:
        proc.close()


def pid_of(kernel: pb.Kernel) -> int:
    """The process (group) id of a local-backend kernel ("pid N" in backend_ref)."""
    return int(kernel.backend_ref.split()[1])


def reap(kernels: list[pb.Kernel]) -> None:
    """Kill the process groups of local-backend kernels that may have outlived their daemon."""
    for kernel in kernels:
        with contextlib.suppress(ProcessLookupError, IndexError, ValueError):
            os.killpg(pid_of(kernel), signal.SIGKILL)


@contextlib.asynccontextmanager
async def daemon_process_off_loop(config_path: Path, *extra: str) -> AsyncIterator[DaemonProcess]:
    """A DaemonProcess started and cleaned up in a thread, so an in-process manager keeps
    serving heartbeats meanwhile."""
    proc = await asyncio.to_thread(DaemonProcess, config_path, *extra)
    try:
        yield proc
    finally:
        await asyncio.to_thread(proc.close)
