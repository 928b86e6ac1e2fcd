"""Every backend, one parametrized fixture: what the conformance suite runs against.

Each case is one agent ("c0") with one exclusive core, 1 GiB and its own port
range on the backend under test, served by the real daemon (`daemon` from
`tests/conftest.py`). A case also says how to look behind the daemon's back:
`leftovers` lists what the backend still holds for this daemon (processes,
containers) as backend refs, the form `Kernel.backend_ref` takes, and `remove`
ends all of it after the test, whether it passed or not. The docker case is
marked `docker` and skips with the reason when no engine can serve it, or fails
under CI=true, exactly as the tests under `tests/integration/docker/` do.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from daemon.resources import HostCapacity
from tests.dockerd import (
    IMAGE,
    engine_problem,
    labelled_containers,
    remove_labelled,
    require_engine,
)
from tests.servers import DaemonSetup, identity_of

AGENT_ID = "c0"
CORE = HostCapacity.detect().cores[0]


def local_processes(identity: str) -> set[str]:
    """Every live process this daemon started (found by the environment kernels carry)."""
    found: set[str] = set()
    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error):
            if proc.environ().get("AGENTHOST_DAEMON") == identity:
                found.add(f"pid {proc.pid}")
    return found


def kill_local_processes(identity: str) -> None:
    """SIGKILL every process this daemon started."""
    for ref in local_processes(identity):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(ref.split()[1]), signal.SIGKILL)


def docker_containers(identity: str) -> set[str]:
    """Every container (running or not) labelled as this daemon's."""
    return {f"container {c['Id'][:12]}" for c in labelled_containers(identity)}


def remove_docker_containers(identity: str) -> None:
    """Remove this daemon's containers and networks, when the engine answers."""
    if engine_problem() is None:
        remove_labelled(identity)


@dataclass(frozen=True)
class BackendCase:
    """One backend under test: its agent's config and how to see what it holds."""

    name: str
    agent: str  # the [[agents]] entry of agent c0
    port_range: tuple[int, int]
    leftovers: Callable[[str], set[str]]  # daemon identity -> backend refs still there
    remove: Callable[[str], None]  # daemon identity -> nothing left
    require: Callable[[], None] = lambda: None  # skips (or fails) when it cannot run here


def agent_entry(backend: str, first_port: int, extra: str = "") -> str:
    return f"""
[[agents]]
id = "{AGENT_ID}"
backend = "{backend}"
port_range = [{first_port}, {first_port + 99}]
resources = {{ cpus = [{CORE}], memory = "1GiB" }}
kill_grace = 1
{extra}"""


LOCAL = BackendCase(
    name="local",
    agent=agent_entry("local", 46000),
    port_range=(46000, 46099),
    leftovers=local_processes,
    remove=kill_local_processes,
)
DOCKER = BackendCase(
    name="docker",
    agent=agent_entry(
        "docker",
        46100,
        f'docker = {{ default_image = "{IMAGE}", host_ip = "127.0.0.1", stop_timeout = 1 }}\n',
    ),
    port_range=(46100, 46199),
    leftovers=docker_containers,
    remove=remove_docker_containers,
    require=require_engine,
)


@pytest.fixture(
    params=[
        pytest.param(LOCAL, id="local"),
        pytest.param(DOCKER, id="docker", marks=pytest.mark.docker),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendCase]:
    """The backend under test; whatever a test leaves on it is removed afterwards."""
    case: BackendCase = request.param
    case.require()
    yield case
    case.remove(identity_of(tmp_path))


@pytest.fixture
def daemon_setup(backend: BackendCase) -> DaemonSetup:
    """The shared daemon fixture serves the one agent of the backend under test."""
    return DaemonSetup(backend.agent, allocation_mode="manual")
