"""Fixtures of the docker tests: a real engine, the test image, and cleanup by label.

Every test here needs a Docker engine and the image `scripts/docker-up.sh`
builds; without them the tests skip with the reason, or fail under CI=true (see
`tests/dockerd.py`). After every test, whatever it left on the engine under its
daemon identity (containers, networks) is removed, whether it passed or not. The
shared `daemon` fixture serves two docker agents here (`daemon_setup`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import pytest

from daemon.backends.docker.engine import resolve_url
from tests.dockerd import IMAGE, engine_problem, remove_labelled, require_engine
from tests.servers import DaemonSetup, identity_of


@pytest.fixture(scope="session", autouse=True)
def docker_engine() -> None:
    """Skip (or, under CI=true, fail) the docker tests when no engine answers."""
    require_engine()


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
def daemon_setup() -> DaemonSetup:
    """The shared daemon fixture serves two docker agents, one exclusive core each."""
    return DaemonSetup(TWO_DOCKER, allocation_mode="manual")
