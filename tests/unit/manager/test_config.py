"""Manager configuration: the example file, every option documented, errors that name the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from common.errors import ConfigError
from manager.config import ManagerSection, load_manager_config

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "configs" / "manager.toml"


class TestExample:
    def test_configs_manager_toml_loads_with_the_defaults(self) -> None:
        config = load_manager_config(EXAMPLE)
        assert config.manager == ManagerSection()
        assert config.db_path.is_absolute()

    def test_every_option_appears_in_the_example(self) -> None:
        text = EXAMPLE.read_text()
        missing = [name for name in ManagerSection.model_fields if f"{name} =" not in text]
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
        ],
        ids=["bad listen", "unknown policy", "zero missed heartbeats", "bad group", "wrong table"],
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
