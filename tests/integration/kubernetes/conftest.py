"""Fixtures of the kubernetes tests: a stand-in API server per test, and agent entries.

Each test gets its own stand-in (`tests/kubeapi/`: not a real API server, but the
real REST paths, Status objects and schema validation, driven by the official
client) with a kubeconfig pointing at it beside the daemon's config; its pods run
their commands as local processes (`RunsCommand`) unless a test says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.backends.base import LABEL_DAEMON
from daemon.resources import HostCapacity
from tests.kubeapi import RunsCommand, ThreadedStandin, standin_in_thread
from tests.servers import identity_of

CORE = HostCapacity.detect().cores[0]
NAMESPACE = "default"
NODE = "standin-node"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ThreadedStandin]:
    """A stand-in whose pods run their commands; its kubeconfig is tmp_path/kubeconfig."""
    with standin_in_thread() as api:
        api.set_behaviour(RunsCommand())
        api.kubeconfig(tmp_path / "kubeconfig")
        yield api


def kube_agent(agent_id: str, port_base: int, extra: str = "", memory: str = "1GiB") -> str:
    """One [[agents]] entry of a kubernetes agent on the stand-in's node."""
    table = (
        'kubeconfig = "kubeconfig", node_name = "standin-node", '
        'default_image = "agenthost-test-python:latest"' + extra
    )
    return f"""
[[agents]]
id = "{agent_id}"
backend = "kubernetes"
port_range = [{port_base}, {port_base + 99}]
resources = {{ cpus = [{CORE}], memory = "{memory}" }}
kill_grace = 1
kubernetes = {{ {table} }}
"""


def local_agent(agent_id: str, port_base: int) -> str:
    """One [[agents]] entry of a local agent."""
    return f"""
[[agents]]
id = "{agent_id}"
port_range = [{port_base}, {port_base + 99}]
resources = {{ cpus = [{CORE}], memory = "1GiB" }}
kill_grace = 1
"""


def pods_of(api: ThreadedStandin, tmp_path: Path) -> list[dict[str, Any]]:
    """The pods on the stand-in labelled as the daemon's whose state is in tmp_path."""
    identity = identity_of(tmp_path)
    return [p for p in api.pods() if p["metadata"].get("labels", {}).get(LABEL_DAEMON) == identity]


def pod_name(backend_ref: str) -> str:
    """The pod name in a kernel's backend ref (`pod NAMESPACE/NAME UID`)."""
    return backend_ref.split()[1].split("/")[1]
