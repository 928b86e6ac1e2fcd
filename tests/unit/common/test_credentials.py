"""The cluster CA and certificates: identities live in the certificate, files are private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from common.credentials import (
    Identity,
    TlsFiles,
    carries_daemon_host,
    certificate_identity,
    identity_of,
    init_ca,
    issue,
    load_tls,
    parse_identity,
)
from common.errors import InvalidArgument


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    init_ca(directory)
    return directory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestCA:
    def test_init_writes_a_private_key_and_a_public_certificate(self, tmp_path: Path) -> None:
        cert, key = init_ca(tmp_path / "ca")
        assert mode(key) == 0o600 and mode(cert) == 0o644
        assert mode(tmp_path / "ca") == 0o700
        ca = x509.load_pem_x509_certificate(cert.read_bytes())
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    def test_init_refuses_to_replace_a_ca(self, tmp_path: Path) -> None:
        init_ca(tmp_path)
        before = (tmp_path / "ca.key").read_bytes()
        with pytest.raises(InvalidArgument, match="already holds a CA"):
            init_ca(tmp_path)
        assert (tmp_path / "ca.key").read_bytes() == before

    def test_issue_without_a_ca_says_how_to_make_one(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidArgument, match=r"agenthost certs init"):
            issue(tmp_path, "daemon", "n1")


class TestIssue:
    @pytest.mark.parametrize(
        ("role", "name", "admin", "uri"),
        [
            ("daemon", "n1", False, "agenthost://daemon/n1"),
            ("manager", "m", False, "agenthost://manager/m"),
            ("user", "alice", False, "agenthost://user/alice"),
            ("user", "root", True, "agenthost://user/root?scope=admin"),
        ],
        ids=["daemon", "manager", "user", "admin-user"],
    )
    def test_role_and_name_are_in_the_certificate(
        self, pki: Path, role: str, name: str, admin: bool, uri: str
    ) -> None:
        cert_path, key_path = issue(pki, role, name, ["127.0.0.1", "node1.example"], admin=admin)
        assert mode(key_path) == 0o600
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
        # A daemon also names its identity as a host: the manager checks it by that name
        # wherever it listens.
        by_name = [f"{name}.daemon.agenthost.invalid"] if role == "daemon" else []
        assert sans.get_values_for_type(x509.DNSName) == ["node1.example", *by_name]
        assert certificate_identity(cert) == Identity(role, name, admin)
        assert carries_daemon_host(cert_path.read_bytes()) is (role == "daemon")

    def test_the_longest_valid_name_is_issued_whole_in_its_identity(self, pki: Path) -> None:
        name = "n" * 63
        cert_path, _ = issue(pki, "daemon", name)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        assert certificate_identity(cert) == Identity("daemon", name, False)
        assert carries_daemon_host(cert_path.read_bytes())

    @pytest.mark.parametrize(
        ("role", "name", "admin", "message"),
        [
            ("root", "x", False, "role 'root' is not one of manager, daemon, user"),
            ("daemon", "bad name", False, "name 'bad name' is not valid"),
            ("daemon", "n1", True, "only a user certificate can carry the admin scope"),
        ],
        ids=["unknown-role", "bad-name", "admin-daemon"],
    )
    def test_bad_requests_are_refused(
        self, pki: Path, role: str, name: str, admin: bool, message: str
    ) -> None:
        with pytest.raises(InvalidArgument, match=message):
            issue(pki, role, name, admin=admin)


class TestLoadTls:
    def files(self, pki: Path, role: str, name: str) -> TlsFiles:
        issue(pki, role, name)
        return TlsFiles(
            ca=pki / "ca.crt", cert=pki / f"{role}-{name}.crt", key=pki / f"{role}-{name}.key"
        )

    def test_a_matching_set_loads_with_its_identity(self, pki: Path) -> None:
        loaded = load_tls(self.files(pki, "daemon", "d1"), pki, "daemon", "daemon.tls")
        assert loaded.identity == Identity("daemon", "d1")

    def test_a_certificate_of_the_wrong_role_is_refused(self, pki: Path) -> None:
        with pytest.raises(
            InvalidArgument, match=r"holds a user certificate; this process needs a daemon"
        ):
            load_tls(self.files(pki, "user", "u1"), pki, "daemon", "daemon.tls")

    def test_a_certificate_of_another_ca_is_refused(self, pki: Path, tmp_path: Path) -> None:
        init_ca(tmp_path)
        issue(tmp_path, "daemon", "d2")
        files = TlsFiles(
            ca=pki / "ca.crt", cert=tmp_path / "daemon-d2.crt", key=tmp_path / "daemon-d2.key"
        )
        with pytest.raises(InvalidArgument, match=r"daemon.tls.cert: .* is not signed by the CA"):
            load_tls(files, pki, "daemon", "daemon.tls")

    def test_a_key_of_another_certificate_is_refused(self, pki: Path) -> None:
        issue(pki, "daemon", "d3")
        issue(pki, "daemon", "d4")
        files = TlsFiles(ca=pki / "ca.crt", cert=pki / "daemon-d3.crt", key=pki / "daemon-d4.key")
        with pytest.raises(InvalidArgument, match=r"daemon.tls.key: .* is not the key of"):
            load_tls(files, pki, "daemon", "daemon.tls")

    def test_a_missing_file_names_the_key(self, pki: Path) -> None:
        files = TlsFiles(ca=pki / "ca.crt", cert=pki / "nope.crt", key=pki / "nope.key")
        with pytest.raises(InvalidArgument, match=r"manager.tls.cert: cannot read .*nope.crt"):
            load_tls(files, pki, "manager", "manager.tls")

    def test_relative_paths_are_read_from_the_base(self, pki: Path) -> None:
        issue(pki, "manager", "m9")
        files = TlsFiles(ca=Path("ca.crt"), cert=Path("manager-m9.crt"), key=Path("manager-m9.key"))
        assert load_tls(files, pki, "manager", "manager.tls").identity.name == "m9"


class TestIdentity:
    @pytest.mark.parametrize(
        ("uri", "expected"),
        [
            ("agenthost://daemon/n1", Identity("daemon", "n1")),
            ("agenthost://user/a?scope=admin", Identity("user", "a", True)),
            ("agenthost://daemon/n1?scope=admin", Identity("daemon", "n1", False)),
            ("agenthost://root/x", None),
            ("https://daemon/n1", None),
            ("agenthost://daemon/", None),
            ("agenthost://daemon/a b", None),
        ],
        ids=[
            "daemon",
            "admin-user",
            "admin-only-for-users",
            "unknown-role",
            "other-scheme",
            "no-name",
            "bad-name",
        ],
    )
    def test_parse(self, uri: str, expected: Identity | None) -> None:
        assert parse_identity(uri) == expected

    def test_identity_of_an_auth_context_takes_the_uri_among_other_names(self) -> None:
        context = {"x509_subject_alternative_name": [b"127.0.0.1", b"agenthost://manager/m1"]}
        assert identity_of(context) == Identity("manager", "m1")
        assert identity_of({}) is None
