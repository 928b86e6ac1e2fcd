"""Fixtures of the docker tests: a real engine, the test image, and cleanup by label.

Every test here needs a Docker engine and the image `scripts/docker-up.sh`
builds. When either is missing the tests skip with the reason, except under
CI=true, where they fail: CI must exercise the real engine. After every test,
whatever it left on the engine under its daemon identity (containers, networks)
is removed, whether it passed or not.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from daemon.backends.base import LABEL_DAEMON
from daemon.backends.docker.engine import resolve_url
from daemon.state_dir import daemon_identity
from protos import agent_pb2 as pb
from tests.servers import daemon_config, running_daemon

ROOT = Path(__file__).resolve().parents[3]
DOCKER_UP = ROOT / "scripts" / "docker-up.sh"
IMAGE = os.environ.get("AGENTHOST_TEST_IMAGE", "agenthost-test-python:latest")
DOCKERD_PIDFILE = Path("/var/run/docker.pid")
OUR_DOCKERD_PIDFILE = Path("/var/run/agenthost-dockerd.pid")  # written by docker-up.sh


def engine_socket() -> str | None:
    """The unix socket path of the engine the tests use (None for a tcp engine)."""
    url = resolve_url(None)
    return url.removeprefix("unix://") if url.startswith("unix://") else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def engine_request(method: str, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    """One plain HTTP call to the local engine (no event loop needed)."""
    sock_path = engine_socket()
    if sock_path is None:
        raise OSError("the docker tests talk to a local engine over its unix socket")
    conn = _UnixHTTPConnection(sock_path, timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def engine_problem() -> str | None:
    """Why the docker tests cannot run here, or None when they can."""
    try:
        status, _ = engine_request("GET", "/_ping", timeout=5)
    except OSError as exc:
        return f"no Docker engine answers at {resolve_url(None)} ({exc}); run scripts/docker-up.sh"
    if status != 200:
        return f"the Docker engine at {resolve_url(None)} answers {status} to /_ping"
    status, _ = engine_request("GET", f"/images/{IMAGE}/json", timeout=5)
    if status != 200:
        return f"image {IMAGE} is not on the engine; run scripts/docker-up.sh to build it"
    return None


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    """Skip (or, under CI=true, fail) the docker tests when no engine answers."""
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the docker tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


def run_docker_up() -> None:
    """Bring the engine back (or up) with the same script CI uses."""
    subprocess.run(["bash", str(DOCKER_UP)], check=True, timeout=600, stdin=subprocess.DEVNULL)


def identity_of(tmp_path: Path) -> str:
    """The daemon identity of a daemon whose state_dir is tmp_path/state (tests.servers)."""
    return daemon_identity(tmp_path / "state")


def remove_labelled(identity: str) -> None:
    """Remove every container and network labelled with this daemon identity."""
    filters = urllib.parse.quote(json.dumps({"label": [f"{LABEL_DAEMON}={identity}"]}))
    _, body = engine_request("GET", f"/containers/json?all=1&filters={filters}")
    for c in json.loads(body):
        engine_request("DELETE", f"/containers/{c['Id']}?force=1")
    _, body = engine_request("GET", f"/networks?filters={filters}")
    for n in json.loads(body):
        engine_request("DELETE", f"/networks/{n['Id']}")


@pytest.fixture(autouse=True)
def cleanup_engine(tmp_path: Path) -> Iterator[None]:
    """After each test, remove what a daemon rooted in tmp_path left on the engine."""
    yield
    if engine_problem() is None:
        remove_labelled(identity_of(tmp_path))


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    """A bare aiodocker client on the test engine, to look behind the daemon's back."""
    async with aiodocker.Docker(url=resolve_url(None)) as client:
        yield client


def docker_agent(
    agent_id: str,
    cores: list[int],
    port_base: int,
    memory: str = "1GiB",
    extra: str = "",
) -> str:
    """One [[agents]] entry of a docker agent using the test image by default."""
    return f"""
[[agents]]
id = "{agent_id}"
backend = "docker"
port_range = [{port_base}, {port_base + 99}]
resources = {{ cpus = {cores}, memory = "{memory}" }}
kill_grace = 1
docker = {{ default_image = "{IMAGE}", host_ip = "127.0.0.1", stop_timeout = 1{extra} }}
"""


def local_agent(agent_id: str, cores: list[int], port_base: int, memory: str = "1GiB") -> str:
    """One [[agents]] entry of a local agent."""
    return f"""
[[agents]]
id = "{agent_id}"
port_range = [{port_base}, {port_base + 99}]
resources = {{ cpus = {cores}, memory = "{memory}" }}
"""


MIB = 1 << 20
TWO_DOCKER = docker_agent("d0", [0], 42000) + docker_agent("d1", [1], 42100)

# Listens on $LISTEN (else on the kernel's host port $PORT_HTTP) and greets each client.
SERVER = (
    "import os, socket\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(os.environ.get('LISTEN') or os.environ['PORT_HTTP'])))\n"
    "s.listen()\n"
    "while True:\n"
    "    c, _ = s.accept()\n"
    "    c.sendall(b'hello from ' + os.environ['AGENTHOST_KERNEL_ID'].encode())\n"
    "    c.close()\n"
)


@pytest.fixture
async def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with running_daemon(daemon_config(tmp_path, TWO_DOCKER, allocation_mode="manual")) as d:
        yield d


async def create(stub, agent_id: str, *specs: pb.KernelSpec) -> list[pb.Kernel]:  # type: ignore[no-untyped-def]
    reply = await stub.CreateKernels(pb.CreateKernelsRequest(agent_id=agent_id, kernels=specs))
    return list(reply.kernels)


async def get(stub, agent_id: str, kernel_id: str) -> pb.Kernel:  # type: ignore[no-untyped-def]
    reply = await stub.GetKernel(pb.GetKernelRequest(agent_id=agent_id, kernel_id=kernel_id))
    return reply.kernel


async def agent_info(stub, agent_id: str) -> pb.AgentInfo:  # type: ignore[no-untyped-def]
    agents = (await stub.ListAgents(pb.ListAgentsRequest())).agents
    return next(a for a in agents if a.agent_id == agent_id)
