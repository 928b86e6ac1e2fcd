"""agenthost up's own certificates: made once, re-issued only when out of date."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.up import _certificate
from common import credentials
from common.credentials import carries_daemon_host, init_ca, issue


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
