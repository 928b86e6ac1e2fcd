"""Fixtures of every test that talks to a daemon: the real one, in this process, on port 0.

This session's $AGENTHOST_HOME is a fresh temporary directory (test managers keep
their bootstrap admin token there, client commands read it from there).

`start_daemon` starts daemons rooted in the test's tmp_path (a second one on the
same state_dir re-adopts the first one's kernels). `daemon` is the one daemon most
integration and conformance tests talk to; a test module (or a directory's
conftest) says what it serves by defining `daemon_setup`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pki import Pki
from tests.servers import Daemon, DaemonFactory, DaemonSetup

# Client credentials of this test session (CA, admin token): never the user's own
# ~/.agenthost. Set before any test runs, so processes the tests start inherit it.
os.environ["AGENTHOST_HOME"] = tempfile.mkdtemp(prefix="agenthost-test-home-")


@pytest.fixture
def start_daemon(tmp_path: Path) -> DaemonFactory:
    """Starts in-process daemons whose config and state live in tmp_path."""
    return DaemonFactory(tmp_path)


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    """The agents the `daemon` fixture serves: define this fixture in the test module."""
    raise pytest.UsageError(
        "the daemon fixture needs a daemon_setup fixture in the test module "
        "(return a tests.servers.DaemonSetup naming the agents)"
    )


@pytest.fixture
async def daemon(start_daemon: DaemonFactory, daemon_setup: DaemonSetup) -> AsyncIterator[Daemon]:
    """The real daemon serving daemon_setup's agents; its kernels are destroyed after the test."""
    async with start_daemon(daemon_setup.agents, allocation_mode=daemon_setup.allocation_mode) as d:
        yield d


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's cluster CA; `pki.files(role, name)` issues certificates from it."""
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA: its certificates carry the right names but prove nothing here."""
    return Pki(tmp_path_factory.mktemp("stranger-pki"))
