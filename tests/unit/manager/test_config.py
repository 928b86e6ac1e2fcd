"""Manager configuration: the example file, every option documented, errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from common.errors import ConfigError
from manager.config import ManagerConfig, ManagerSection, load_manager_config
from tests.pki import Pki

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "configs" / "manager.toml"


class TestExample:
    def test_configs_manager_toml_loads_with_the_defaults(self) -> None:
        config = load_manager_config(EXAMPLE)
        assert config.manager == ManagerSection(
            insecure=True, db_path=Path("../var/agenthost-manager/manager.db")
        )
        assert config.db_path == ROOT / "var" / "agenthost-manager" / "manager.db"
        assert config.db_path.is_absolute()

    def test_every_option_appears_in_the_example(self) -> None:
        text = EXAMPLE.read_text()
        missing = [
            name
            for name in ManagerSection.model_fields
            if f"{name} =" not in text and f"[manager.{name}]" not in text
        ]
        assert missing == []

    def test_every_option_has_a_description(self) -> None:
        assert [n for n, f in ManagerSection.model_fields.items() if not f.description] == []

    def test_example_sets_only_known_keys(self) -> None:
        raw = tomllib.loads(EXAMPLE.read_text())
        assert set(raw) == {"manager"}
        assert set(raw["manager"]) <= set(ManagerSection.model_fields)


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "[manager]\nlisten = 'nowhere'\n",
                "manager: listen: 'nowhere' is not host:port (e.g. \"127.0.0.1:6001\")",
            ),
            (
                "[manager]\nscheduling_policy = 'random'\n",
                "manager: scheduling_policy: unknown policy 'random'; valid: spread, pack",
            ),
            (
                "[manager]\nmissed_heartbeats = 0\n",
                "manager: missed_heartbeats: Input should be greater than or equal to 1 (got 0)",
            ),
            (
                "[manager]\ndefault_scaling_group = 'a b'\n",
                "manager: default_scaling_group: 'a b' is not a valid id: 1-63 characters of "
                "letters, digits, '_', '.', '-', starting with a letter or digit",
            ),
            ("[daemon]\n", "unknown key 'daemon'; valid top-level tables: manager"),
            (
                "[manager]\ndaemon_listen = '0.0.0.0:6100'\nmetrics_listen = '0.0.0.0:6100'\n",
                "manager: metrics_listen: port 6100 is daemon_listen's too; give each its own port",
            ),
        ],
        ids=[
            "bad listen",
            "unknown policy",
            "zero missed heartbeats",
            "bad group",
            "wrong table",
            "metrics on the daemons' port",
        ],
    )
    def test_error_names_file_and_key(self, tmp_path: Path, text: str, problem: str) -> None:
        path = tmp_path / "m.toml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_manager_config(path)
        assert err.value.problems == [f"{path}: {problem}"]

    def test_unknown_key_lists_valid_ones(self, tmp_path: Path) -> None:
        path = tmp_path / "m.toml"
        path.write_text("[manager]\nlisen = '127.0.0.1:1'\n")
        with pytest.raises(ConfigError) as err:
            load_manager_config(path)
        assert err.value.problems[0].startswith(
            f"{path}: manager: unknown key 'lisen'; valid: listen, "
        )

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as err:
            load_manager_config(tmp_path / "none.toml")
        assert err.value.problems == [f"{tmp_path / 'none.toml'}: no such file"]


class TestTrust:
    """Secure by default: TLS, or an explicit plaintext manager on loopback."""

    def load(self, tmp_path: Path, text: str) -> ManagerConfig:
        path = tmp_path / "m.toml"
        path.write_text(text)
        return load_manager_config(path)

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            (
                "[manager]\n",
                "manager: [manager.tls] is required (ca, cert, key: make them with agenthost "
                "certs init and agenthost certs issue --role manager), or set insecure = true to "
                "serve plaintext on a loopback address",
            ),
            (
                "[manager]\ninsecure = true\nlisten = '0.0.0.0:6000'\n",
                "manager.insecure: plaintext is allowed only on a loopback address, not on "
                "0.0.0.0:6000; give [manager.tls] to listen there",
            ),
            (
                "[manager]\ninsecure = true\n[manager.tls]\nca = 'a'\ncert = 'b'\nkey = 'c'\n",
                "manager: give either [manager.tls] or insecure = true, not both",
            ),
        ],
        ids=["neither", "plaintext-beyond-loopback", "both"],
    )
    def test_refused(self, tmp_path: Path, text: str, problem: str) -> None:
        with pytest.raises(ConfigError) as err:
            self.load(tmp_path, text)
        assert err.value.problems == [f"{tmp_path / 'm.toml'}: {problem}"]

    def test_a_daemon_certificate_cannot_serve_as_the_manager(
        self, tmp_path: Path, pki: Pki
    ) -> None:
        files = pki.files("daemon", "n1")
        with pytest.raises(ConfigError) as err:
            self.load(tmp_path, f"[manager]\ntls = {files.toml()}\n")
        assert err.value.problems == [
            f"{tmp_path / 'm.toml'}: manager.tls.cert: {files.cert} holds a daemon certificate; "
            "this process needs a manager certificate (agenthost certs issue --role manager "
            "--name NAME)"
        ]

    def test_tls_loads_with_the_daemons_port_next_to_listen(self, tmp_path: Path, pki: Pki) -> None:
        config = self.load(tmp_path, f"[manager]\ntls = {pki.files('manager', 'm').toml()}\n")
        assert config.tls is not None and config.tls.identity.name == "m"
        assert config.daemon_listen_for(config.manager.listen) == "127.0.0.1:6100"
        assert config.daemon_listen_for("127.0.0.1:0") == "127.0.0.1:0"
        assert config.admin_token_file.name == "token"


class TestAuditLog:
    def load(self, tmp_path: Path, text: str) -> ManagerConfig:
        path = tmp_path / "m.toml"
        path.write_text("[manager]\ninsecure = true\ndb_path = 'db/m.db'\n" + text)
        return load_manager_config(path)

    def test_by_default_beside_the_database(self, tmp_path: Path) -> None:
        config = self.load(tmp_path, "")
        assert config.audit_log == tmp_path / "db" / "audit.log"
        assert (int(config.manager.audit_max_bytes), config.manager.audit_backups) == (64 << 20, 5)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [('""', None), ('"logs/a.jsonl"', "logs/a.jsonl"), ('"/var/log/x.log"', "/var/log/x.log")],
        ids=["empty-is-off", "relative-beside-the-file", "absolute"],
    )
    def test_where_it_goes(self, tmp_path: Path, value: str, expected: str | None) -> None:
        config = self.load(tmp_path, f"audit_log = {value}\n")
        assert config.audit_log == (None if expected is None else tmp_path / expected)

    def test_rotation_settings(self, tmp_path: Path) -> None:
        config = self.load(tmp_path, "audit_max_bytes = '2KiB'\naudit_backups = 3\n")
        assert (int(config.manager.audit_max_bytes), config.manager.audit_backups) == (2048, 3)
