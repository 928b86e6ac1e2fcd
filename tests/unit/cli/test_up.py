"""agenthost up's own certificates: made once, re-issued only when out of date."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.up import DAEMON_EXAMPLE, EXAMPLES, MANAGER_EXAMPLE, _certificate, example_config
from common import credentials
from common.credentials import carries_daemon_host, init_ca, issue
from daemon.config import load_config
from manager.config import load_manager_config


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path)
    return tmp_path


def test_certificates_are_made_once(pki: Path) -> None:
    first = {role: _certificate(pki, role, "x", ["127.0.0.1"]) for role in ("manager", "daemon")}
    pem = {role: files.cert.read_bytes() for role, files in first.items()}
    again = {role: _certificate(pki, role, "x", ["127.0.0.1"]) for role in ("manager", "daemon")}
    assert {role: files.cert.read_bytes() for role, files in again.items()} == pem
    assert carries_daemon_host(pem["daemon"])


def test_a_daemon_certificate_the_manager_cannot_check_by_name_is_issued_again(
    pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:  # as an older agenthost issued it
        m.setattr(credentials, "daemon_host", lambda name: "localhost")
        cert, _ = issue(pki, "daemon", "x", ["127.0.0.1"])
    assert not carries_daemon_host(cert.read_bytes())
    assert carries_daemon_host(_certificate(pki, "daemon", "x", ["127.0.0.1"]).cert.read_bytes())


class TestExampleConfigs:
    """Given no --config, up runs configs/ of the working directory, else of its checkout."""

    def test_the_working_directorys_configs_come_first(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / DAEMON_EXAMPLE).write_text("[daemon]\n")
        monkeypatch.chdir(tmp_path)
        assert example_config(DAEMON_EXAMPLE).resolve() == tmp_path / "configs" / DAEMON_EXAMPLE
        # the manager's file is not here: the checkout's
        assert example_config(MANAGER_EXAMPLE) == EXAMPLES / MANAGER_EXAMPLE

    def test_elsewhere_the_checkouts_examples_load(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        daemon = load_config(example_config(DAEMON_EXAMPLE))
        manager = load_manager_config(example_config(MANAGER_EXAMPLE))
        assert [agent.id for agent in daemon.agents] == ["a0", "a1", "a2"]
        # relative paths in them are the checkout's, not the working directory's
        assert EXAMPLES.parent in daemon.state_dir.resolve().parents
        assert EXAMPLES.parent in manager.db_path.resolve().parents
