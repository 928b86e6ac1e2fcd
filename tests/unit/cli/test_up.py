"""agenthost up: its own certificates (made once, re-issued only when out of date) and the
example files it runs when given none."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import up
from cli.up import DAEMON_EXAMPLE, EXAMPLES, MANAGER_EXAMPLE, _certificate, example_configs
from common import credentials
from common.credentials import carries_daemon_host, init_ca, issue
from common.errors import ConfigError
from daemon.config import DaemonConfig
from manager.config import ManagerConfig


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
    """Given no --config, up runs the example files of configs/ of the working directory
    when it has both, else both of the checkout's."""

    def test_the_working_directorys_pair_comes_first(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "configs").mkdir()
        for name in (DAEMON_EXAMPLE, MANAGER_EXAMPLE):
            (tmp_path / "configs" / name).write_text("")
        monkeypatch.chdir(tmp_path)
        daemon, manager = example_configs()
        assert daemon.resolve() == tmp_path / "configs" / DAEMON_EXAMPLE
        assert manager.resolve() == tmp_path / "configs" / MANAGER_EXAMPLE

    def test_half_a_pair_is_not_mixed_with_the_checkouts(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        (tmp_path / "configs").mkdir()
        (tmp_path / "configs" / DAEMON_EXAMPLE).write_text("")
        monkeypatch.chdir(tmp_path)
        assert example_configs() == (EXAMPLES / DAEMON_EXAMPLE, EXAMPLES / MANAGER_EXAMPLE)

    def test_with_neither_the_error_names_the_options(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(up, "EXAMPLES", tmp_path / "site-packages" / "configs")
        with pytest.raises(ConfigError) as missing:
            example_configs()
        assert "--config DAEMON.toml and --manager-config MANAGER.toml" in str(missing.value)

    def test_up_from_elsewhere_runs_the_checkouts_files(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The command itself, from an empty directory, with the servers stubbed out."""
        started: list[tuple[ManagerConfig, DaemonConfig]] = []

        async def run_up(manager: ManagerConfig, daemon: DaemonConfig, *rest: object) -> None:
            started.append((manager, daemon))

        monkeypatch.setattr(up, "run_up", run_up)
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("AGENTHOST_UP_CONFIG", raising=False)
        result = CliRunner().invoke(up.up_command, [])
        assert result.exit_code == 0, result.output
        [(manager, daemon)] = started
        assert manager.path == EXAMPLES / MANAGER_EXAMPLE
        assert daemon.path == EXAMPLES / DAEMON_EXAMPLE
        # relative paths in them are the checkout's, not the working directory's
        assert EXAMPLES.parent in daemon.state_dir.resolve().parents
        assert EXAMPLES.parent in manager.db_path.resolve().parents

    def test_up_with_no_files_anywhere_says_which_options_to_give(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(up, "EXAMPLES", tmp_path / "nowhere")
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("AGENTHOST_UP_CONFIG", raising=False)
        result = CliRunner().invoke(up.up_command, [])
        assert result.exit_code == 2
        assert "give --config DAEMON.toml" in result.output
