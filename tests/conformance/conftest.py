"""Every backend, one parametrized fixture: what the conformance suite runs against.

Each case is one agent ("c0") with one exclusive core, 1 GiB and its own port
range on the backend under test, served by the real daemon (`daemon` from
`tests/conftest.py`). A case also says how to look behind the daemon's back:
`leftovers` lists what the backend still holds for this daemon (processes,
containers, pods) as backend refs, the form `Kernel.backend_ref` takes, and
`remove` ends all of it after the test, whether it passed or not. The docker case
is marked `docker` and skips with the reason when no engine can serve it, or fails
under CI=true, exactly as the tests under `tests/integration/docker/` do.

The kubernetes case talks to the stand-in API server of `tests/kubeapi/` (one for
the session, in a thread of its own): it serves the real REST paths to the
official client and validates every body against the official schemas, and its
simulated kubelet runs each pod's command as a local process (`RunsCommand`), so
exit codes, logs and exec output are real. Each test writes a kubeconfig pointing
at it beside its daemon's config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from daemon.backends.base import LABEL_DAEMON
from daemon.resources import HostCapacity
from tests.dockerd import (
    IMAGE,
    engine_problem,
    labelled_containers,
    remove_labelled,
    require_engine,
)
from tests.kubeapi import RunsCommand, ThreadedStandin, standin_in_thread
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


def standin_pods(api: ThreadedStandin, identity: str) -> list[dict[str, object]]:
    """Every pod on the stand-in labelled as this daemon's."""
    return [
        p for p in api.pods() if (p["metadata"].get("labels") or {}).get(LABEL_DAEMON) == identity
    ]


def pod_refs(api: ThreadedStandin, identity: str) -> set[str]:
    """This daemon's pods on the stand-in, as `pod NAMESPACE/NAME UID[:8]` refs."""
    return {
        f"pod {m['namespace']}/{m['name']} {m['uid'][:8]}"
        for m in (p["metadata"] for p in standin_pods(api, identity))
    }


def remove_pods(api: ThreadedStandin, identity: str) -> None:
    """Delete this daemon's pods from the stand-in at once (their processes end)."""
    for pod in standin_pods(api, identity):
        api.delete_pod_now(pod["metadata"]["namespace"], pod["metadata"]["name"])


@dataclass(frozen=True)
class BackendCase:
    """One backend under test: its agent's config and how to see what it holds."""

    name: str
    agent: str  # the [[agents]] entry of agent c0
    port_range: tuple[int, int]
    leftovers: Callable[[str], set[str]]  # daemon identity -> backend refs still there
    remove: Callable[[str], None]  # daemon identity -> nothing left
    require: Callable[[], None] = lambda: None  # skips (or fails) when it cannot run here
    # What a case needs from the test before it runs (a stand-in, a kubeconfig).
    bind: Callable[[BackendCase, pytest.FixtureRequest, Path], BackendCase] | None = None


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


def bind_standin(case: BackendCase, request: pytest.FixtureRequest, tmp_path: Path) -> BackendCase:
    """The kubernetes case on the session's stand-in, with a kubeconfig beside the config."""
    api: ThreadedStandin = request.getfixturevalue("kube_standin")
    api.kubeconfig(tmp_path / "kubeconfig")
    return dataclasses.replace(
        case,
        leftovers=lambda identity: pod_refs(api, identity),
        remove=lambda identity: remove_pods(api, identity),
    )


KUBERNETES = BackendCase(
    name="kubernetes",
    agent=agent_entry(
        "kubernetes",
        46200,
        'kubernetes = { kubeconfig = "kubeconfig", node_name = "standin-node", '
        'default_image = "agenthost-test-python:latest", run_as = 1000 }\n',
    ),
    port_range=(46200, 46299),
    leftovers=lambda identity: set(),  # bound to the stand-in per test (bind_standin)
    remove=lambda identity: None,
    bind=bind_standin,
)


@pytest.fixture(scope="session")
def kube_standin() -> Iterator[ThreadedStandin]:
    """The session's stand-in API server: every pod runs its command as a local process."""
    with standin_in_thread() as api:
        api.set_behaviour(RunsCommand())
        yield api


@pytest.fixture(
    params=[
        pytest.param(LOCAL, id="local"),
        pytest.param(DOCKER, id="docker", marks=pytest.mark.docker),
        pytest.param(KUBERNETES, id="kubernetes"),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendCase]:
    """The backend under test; whatever a test leaves on it is removed afterwards."""
    case: BackendCase = request.param
    case.require()
    if case.bind is not None:
        case = case.bind(case, request, tmp_path)
    yield case
    case.remove(identity_of(tmp_path))


@pytest.fixture
def daemon_setup(backend: BackendCase) -> DaemonSetup:
    """The shared daemon fixture serves the one agent of the backend under test."""
    return DaemonSetup(backend.agent, allocation_mode="manual")
