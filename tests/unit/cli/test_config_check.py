"""`agenthost config check FILE` on both kinds of config: a manager's (only a [manager]
table) is checked by the manager's rules, anything else by the daemon's."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from cli.main import main
from tests.pki import Pki

ROOT = Path(__file__).resolve().parents[3]


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    return result.exit_code, result.output


class TestManagerConfig:
    def test_the_example_is_ok_and_says_where_it_serves_and_keeps_state(self) -> None:
        code, output = check(ROOT / "configs" / "manager.toml")
        assert code == 0, output
        first, policy, audit, token = output.splitlines()
        assert first == (
            f"{ROOT / 'configs' / 'manager.toml'}: ok, manager listen 127.0.0.1:6000 "
            "(plaintext, insecure = true; daemons there too)"
        )
        assert policy.startswith("scheduling_policy spread, db /")
        assert audit.startswith("audit log /") and audit.endswith("audit.log")
        assert token.startswith("admin token file /")

    def test_tls_names_the_daemons_port(self, tmp_path: Path, pki: Pki) -> None:
        files = pki.files("manager", "m1")
        path = tmp_path / "m.toml"
        path.write_text(
            f'[manager]\nlisten = "0.0.0.0:7000"\naudit_log = ""\n'
            f'[manager.tls]\nca = "{files.ca}"\ncert = "{files.cert}"\nkey = "{files.key}"\n'
        )
        code, output = check(path)
        assert code == 0, output
        assert output.splitlines()[0].endswith(
            "manager listen 0.0.0.0:7000 (TLS, bearer tokens), daemons on 0.0.0.0:7100 (mutual TLS)"
        )
        assert "audit log off" in output.splitlines()

    def test_every_problem_is_reported_with_exit_2(self, tmp_path: Path) -> None:
        path = tmp_path / "m.toml"
        path.write_text('[manager]\ninsecure = true\nscheduling_policy = "nope"\nbogus = 1\n')
        code, output = check(path)
        assert code == 2
        problems = output.splitlines()
        assert len(problems) == 2, output
        assert "scheduling_policy: unknown policy 'nope'; valid: spread, pack" in problems[0]
        assert "unknown key 'bogus'" in problems[1]


class TestDaemonConfig:
    def test_a_daemon_config_is_still_checked_as_one(self) -> None:
        code, output = check(ROOT / "configs" / "daemon-multi.toml")
        assert code == 0, output
        assert "3 agents" in output.splitlines()[0]

    def test_a_file_with_both_tables_is_a_daemon_config_with_a_stray_table(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "both.toml"
        text = (ROOT / "configs" / "daemon-single.toml").read_text()
        path.write_text(text + '\n[manager]\nlisten = "127.0.0.1:6000"\n')
        code, output = check(path)
        assert code == 2
        assert "unknown key 'manager'" in output
