"""Real servers for tests: an in-process daemon on port 0, or the real `agenthost` command.

`daemon_config` writes a TOML file; `running_daemon` starts the real grpc.aio
server in this process and yields a connected stub; `DaemonFactory` does both for
one test's directory (the `start_daemon` and `daemon` fixtures of
`tests/conftest.py` are built on it); `DaemonProcess` runs
`agenthost daemon` as a separate process (for kill -9 and restart tests). The
typed RPC helpers (`create`, `get`, `agent_info`, `execute`) are what tests call
instead of spelling out request messages. `kernel_processes`, `daemon_cgroups`
and `clean_up_after` find (and remove) what a daemon left on the host.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import grpc
import psutil

from daemon.config import load_config
from daemon.server import DaemonServer
from daemon.state_dir import daemon_identity
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc

AGENTHOST = str(Path(sys.executable).with_name("agenthost"))
# Kernels' working directories of every test daemon: under pytest's tmp_path (mode
# 0700) a kernel running as a uid of its own could not reach its directory by path,
# so they go here instead, searchable by all (0711), one directory per test.
KERNELS_ROOT = Path(tempfile.mkdtemp(prefix="agenthost-test-kernels-"))
KERNELS_ROOT.chmod(0o711)
atexit.register(shutil.rmtree, KERNELS_ROOT, ignore_errors=True)

Stub = agent_pb2_grpc.AgentServiceStub
T = TypeVar("T")


def daemon_config(
    tmp_path: Path,
    agents: str,
    daemon: str = "",
    name: str = "daemon.toml",
    reconcile_interval: float = 0.5,
    allocation_mode: str = "shared",
    trust: str = "insecure = true",
) -> Path:
    """Write a daemon TOML with a [daemon] table pointing into tmp_path, plus agents.

    trust is the daemon's trust setting: plaintext on loopback by default, or e.g.
    `tls = { ca = ..., cert = ..., key = ... }` (see tests/pki.py). Kernels work
    under kernels_dir_of(tmp_path) unless daemon names a kernels_dir.
    """
    path = tmp_path / name
    kernels = "" if "kernels_dir" in daemon else f'kernels_dir = "{kernels_dir_of(tmp_path)}"\n'

    path.write_text(
        textwrap.dedent(
            f"""\
            [daemon]
            listen = "127.0.0.1:0"
            state_dir = "{tmp_path / "state"}"
            reconcile_interval = {reconcile_interval}
            shutdown_grace = 1
            allocation_mode = "{allocation_mode}"
            """
        )
        + kernels
        + trust
        + "\n"
        + textwrap.dedent(daemon)
        + "\n"
        + textwrap.dedent(agents)
    )
    return path


def kernels_dir_of(tmp_path: Path) -> Path:
    """Where a daemon whose config daemon_config wrote into tmp_path keeps its kernels' dirs."""
    return KERNELS_ROOT / hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]


def visible_to_kernels(tmp_path: Path) -> Path:
    """A directory for tmp_path's test that kernels of any uid can search (0755), for
    files a kernel's command waits for; tmp_path itself is 0700."""
    directory = KERNELS_ROOT / ("shared-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12])
    directory.mkdir(mode=0o755, exist_ok=True)
    directory.chmod(0o755)
    return directory


def identity_of(tmp_path: Path) -> str:
    """The daemon identity of a daemon whose config daemon_config wrote into tmp_path."""
    return daemon_identity(tmp_path / "state")


def local_agents(count: int, memory: str = "1GiB", base_port: int = 41000) -> str:
    """`count` local agents a0..a{count-1}, each with 100 ports, sharing the host."""
    return "".join(
        f"""
[[agents]]
id = "a{i}"
port_range = [{base_port + 100 * i}, {base_port + 100 * i + 99}]
resources = {{ memory = "{memory}" }}
"""
        for i in range(count)
    )


@dataclass
class Daemon:
    """An in-process daemon and a stub connected to it."""

    server: DaemonServer
    stub: agent_pb2_grpc.AgentServiceStub
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def running_daemon(
    config_path: Path,
    destroy_kernels: bool = True,
    credentials: grpc.ChannelCredentials | None = None,
) -> AsyncIterator[Daemon]:
    """Start the real daemon on port 0 in this process; stop it (destroying kernels) after.

    credentials: the stub's client TLS (a manager or admin certificate) for a daemon
    with [daemon.tls]; plaintext otherwise.
    """
    server = await DaemonServer.start(load_config(config_path))
    channel = (
        grpc.aio.secure_channel(server.address, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(server.address)
    )
    try:
        yield Daemon(server, agent_pb2_grpc.AgentServiceStub(channel), channel)
    finally:
        await channel.close(None)
        await server.stop(destroy_kernels=destroy_kernels, grace=0.5)


@dataclass(frozen=True)
class DaemonSetup:
    """What a test daemon serves: its [[agents]] entries and how the host is divided."""

    agents: str
    allocation_mode: str = "shared"


@dataclass(frozen=True)
class DaemonFactory:
    """Starts in-process daemons whose config and state live in one test's directory.

    Every daemon it starts uses the same state_dir (tmp_path/state), so a second
    one started after the first stopped finds the first one's kernels.
    """

    tmp_path: Path

    def __call__(
        self,
        agents: str,
        *,
        allocation_mode: str = "shared",
        daemon: str = "",
        destroy_kernels: bool = True,
    ) -> AbstractAsyncContextManager[Daemon]:
        """The real daemon serving agents; it destroys its kernels on exit unless told not to."""
        path = daemon_config(self.tmp_path, agents, daemon=daemon, allocation_mode=allocation_mode)
        return running_daemon(path, destroy_kernels=destroy_kernels)


def sleeper(kernel_id: str = "", seconds: int = 300, **fields: Any) -> pb.KernelSpec:
    """A kernel spec that just sleeps (or runs the command given among fields)."""
    fields.setdefault("command", ["sleep", str(seconds)])
    return pb.KernelSpec(kernel_id=kernel_id, **fields)


async def create(stub: Stub, agent_id: str, *specs: pb.KernelSpec) -> list[pb.Kernel]:
    """CreateKernels on agent_id; the created kernels."""
    reply: pb.CreateKernelsResponse = await stub.CreateKernels(
        pb.CreateKernelsRequest(agent_id=agent_id, kernels=specs)
    )
    return list(reply.kernels)


async def get(stub: Stub, agent_id: str, kernel_id: str) -> pb.Kernel:
    """GetKernel."""
    reply: pb.GetKernelResponse = await stub.GetKernel(
        pb.GetKernelRequest(agent_id=agent_id, kernel_id=kernel_id)
    )
    return reply.kernel


async def agent_info(stub: Stub, agent_id: str) -> pb.AgentInfo:
    """One agent's entry of ListAgents (capacity, occupancy, kernel count, health)."""
    reply: pb.ListAgentsResponse = await stub.ListAgents(pb.ListAgentsRequest())
    return next(a for a in reply.agents if a.agent_id == agent_id)


async def logs(stub: Stub, agent_id: str, kernel_id: str, tail_lines: int = 0) -> bytes:
    """GetKernelLogs: everything, or the last tail_lines lines."""
    reply: pb.GetKernelLogsResponse = await stub.GetKernelLogs(
        pb.GetKernelLogsRequest(agent_id=agent_id, kernel_id=kernel_id, tail_lines=tail_lines)
    )
    return reply.logs


async def execute(
    stub: Stub,
    agent_id: str,
    kernel_id: str,
    argv: list[str],
    stdin: bytes = b"",
    timeout: float = 0,
) -> tuple[list[pb.ExecuteResponse], bytes, bytes, pb.ExecuteExit]:
    """Run Execute and collect messages, stdout, stderr and the exit."""
    messages = []
    async for m in stub.Execute(
        pb.ExecuteRequest(
            agent_id=agent_id, kernel_id=kernel_id, argv=argv, stdin=stdin, timeout=timeout
        )
    ):
        messages.append(m)
    out = b"".join(m.stdout for m in messages)
    err = b"".join(m.stderr for m in messages)
    exits = [m.exit for m in messages if m.HasField("exit")]
    assert len(exits) == 1 and messages[-1].HasField("exit")
    return messages, out, err, exits[0]


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T | None]], timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(
    predicate: Callable[[], T | None], timeout: float = ..., interval: float = ...
) -> T: ...
async def eventually(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll an (async or sync) predicate until it returns truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class AgenthostProcess:
    """`agenthost <command> --config FILE` as a real process; address parsed from its log."""

    command = ""

    def __init__(self, config_path: Path, *extra: str) -> None:
        self.log_path = config_path.with_suffix(f".{int(time.time() * 1000)}.log")
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [AGENTHOST, self.command, "--config", str(config_path), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        self.address = self._wait_address()

    def _wait_address(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(rf"{self.command} listening on (\S+)", self.log_path.read_text())
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.command} exited early:\n{self.log_path.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"{self.command} did not start:\n{self.log_path.read_text()}")

    def log(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text()

    def kill9(self) -> None:
        """SIGKILL the process (a daemon's kernels survive)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


class DaemonProcess(AgenthostProcess):
    """`agenthost daemon --config FILE`."""

    command = "daemon"


@contextlib.contextmanager
def daemon_process(config_path: Path, *extra: str) -> Iterator[DaemonProcess]:
    """A DaemonProcess that is always cleaned up."""
    proc = DaemonProcess(config_path, *extra)
    try:
        yield proc
    finally:
        proc.close()


def kernel_processes(identity: str) -> list[psutil.Process]:
    """Live (not zombie) processes that the daemon with this identity started for kernels."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if (
                proc.environ().get("AGENTHOST_DAEMON") == identity
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(proc)
    return found


def daemon_cgroups(identity: str) -> list[Path]:
    """The daemon's cgroup directories in every hierarchy (its own, its agents', its
    kernels'), deepest first; none once it has removed them."""
    found: list[Path] = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[2] not in ("cgroup", "cgroup2"):
            continue
        base = Path(fields[1]) / f"agenthost-{identity}"
        if base.is_dir():
            agents = [a for a in base.iterdir() if a.is_dir()]
            found += [k for a in agents for k in a.iterdir() if k.is_dir()] + agents + [base]
    return found


def clean_up_after(identity: str) -> None:
    """Kill what a daemon's kernels left running and remove its cgroups (for a test
    that killed its daemon, or failed half-way)."""
    for proc in kernel_processes(identity):
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for group in daemon_cgroups(identity):
        for _ in range(50):  # a killed process leaves its cgroup a moment later
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
