"""The Docker engine the tests use: can it serve them, plain calls to it, and cleanup by label.

Docker tests (the ones under `tests/integration/docker/` and the docker cases of
`tests/conformance/`) need an engine and the image `scripts/docker-up.sh` builds.
`require_engine` skips a test with the reason when either is missing, except
under CI=true, where it fails: CI must exercise the real engine. The calls here
are plain blocking HTTP on the engine's socket, so cleanup works with no event
loop and without the daemon's own client code.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from daemon.backends.base import LABEL_DAEMON
from daemon.backends.docker.engine import resolve_url

ROOT = Path(__file__).resolve().parents[1]
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


def require_engine() -> None:
    """Skip the calling test (or, under CI=true, fail it) when no engine can serve it."""
    problem = engine_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the docker tests cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


def run_docker_up() -> None:
    """Bring the engine back (or up) with the same script CI uses."""
    subprocess.run(["bash", str(DOCKER_UP)], check=True, timeout=600, stdin=subprocess.DEVNULL)


def _label_filter(identity: str) -> str:
    return urllib.parse.quote(json.dumps({"label": [f"{LABEL_DAEMON}={identity}"]}))


def labelled_containers(identity: str) -> list[dict[str, Any]]:
    """Every container (running or not) labelled with this daemon identity."""
    _, body = engine_request("GET", f"/containers/json?all=1&filters={_label_filter(identity)}")
    found: list[dict[str, Any]] = json.loads(body)
    return found


def remove_labelled(identity: str) -> None:
    """Remove every container and network labelled with this daemon identity."""
    for c in labelled_containers(identity):
        engine_request("DELETE", f"/containers/{c['Id']}?force=1")
    _, body = engine_request("GET", f"/networks?filters={_label_filter(identity)}")
    for n in json.loads(body):
        engine_request("DELETE", f"/networks/{n['Id']}")
