"""daemon/backends/local/settings.py: the local table, as the daemon's config reads it."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.errors import ConfigError
from daemon.backends.local.settings import DEFAULT_PIDS_MAX, DEFAULT_UID_RANGE, LocalSettings
from daemon.config import load_config
from daemon.resources import HostCapacity

HOST = HostCapacity(cores=(0, 1), memory=8 << 30)


def config(tmp_path: Path, agents: str) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [daemon]
            insecure = true
            state_dir = "{tmp_path / "state"}"
            allocation_mode = "shared"
            """
        )
        + textwrap.dedent(agents)
    )
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, HOST)
    return [p.replace(str(path), "{file}") for p in info.value.problems]


class TestDefaults:
    def test_every_kernel_gets_its_own_uid_from_a_high_range_with_4096_pids(self) -> None:
        s = LocalSettings()
        assert (s.uid_range, s.run_as, s.pids_max, s.cpuset) == (
            DEFAULT_UID_RANGE,
            None,
            DEFAULT_PIDS_MAX,
            True,
        )
        assert s.account() is None

    def test_agents_take_the_local_table_and_kernels_dir_beside_state_dir(
        self, tmp_path: Path
    ) -> None:
        path = config(
            tmp_path,
            """
            [defaults]
            local = { pids_max = 64 }

            [[agents]]
            id = "a0"
            port_range = [30000, 30099]

            [[agents]]
            id = "a1"
            port_range = [30100, 30199]
            local = { run_as = "nobody", cpuset = false }
            """,
        )
        loaded = load_config(path, HOST)
        a0, a1 = loaded.agents
        assert (a0.local.pids_max, a0.local.uid_range) == (64, DEFAULT_UID_RANGE)
        assert (a1.local.pids_max, a1.local.run_as, a1.local.cpuset) == (64, "nobody", False)
        assert loaded.kernels_dir == tmp_path / "state-kernels"
        assert a1.kernels_dir == tmp_path / "state-kernels" / "a1"


@dataclass(frozen=True)
class Bad:
    name: str
    local: str
    problem: str


BAD = [
    Bad(
        "inverted-range",
        "uid_range = [2000010, 2000000]",
        '{file}: agents[0] (id "a0"): local.uid_range: 2000010-2000000 is inverted: '
        "the first uid must not exceed the last",
    ),
    Bad(
        "range-with-root",
        "uid_range = [0, 10]",
        '{file}: agents[0] (id "a0"): local.uid_range: 0-10 is outside 1-4294967294',
    ),
    Bad(
        "range-holding-an-account",
        "uid_range = [1, 10]",
        '{file}: agents[0] (id "a0"): local.uid_range 1-10 holds ',
    ),
    Bad(
        "unknown-user",
        'run_as = "no-such-user-here"',
        "{file}: agents[0] (id \"a0\"): local.run_as: no user 'no-such-user-here' on this "
        "host; give a user name from /etc/passwd or a uid",
    ),
    Bad(
        "run-as-inside-the-range",
        "run_as = 2000005",
        '{file}: agents[0] (id "a0"): local: run_as uid 2000005 lies in uid_range '
        "2000000-2099999, whose uids go to kernels of their own; choose an account outside it",
    ),
    Bad(
        "negative-pids",
        "pids_max = -1",
        '{file}: agents[0] (id "a0"): local.pids_max: ',
    ),
    Bad(
        "unknown-key",
        "uids = [1, 2]",
        "{file}: agents[0] (id \"a0\"): local: unknown key 'uids'",
    ),
]


class TestValidation:
    @pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
    def test_a_bad_local_table_is_refused_naming_agent_and_key(
        self, tmp_path: Path, case: Bad
    ) -> None:
        path = config(
            tmp_path,
            f"""
            [[agents]]
            id = "a0"
            port_range = [30000, 30099]
            local = {{ {case.local} }}
            """,
        )
        found = problems(path)
        assert len(found) == 1 and found[0].startswith(case.problem), found

    def test_a_run_as_uid_inside_another_agents_range_is_refused(self, tmp_path: Path) -> None:
        path = config(
            tmp_path,
            """
            [[agents]]
            id = "a0"
            port_range = [30000, 30099]
            local = { uid_range = [3000000, 3000099] }

            [[agents]]
            id = "a1"
            port_range = [30100, 30199]
            local = { run_as = 3000005 }
            """,
        )
        assert problems(path) == [
            '{file}: agents[1] (id "a1"): local.run_as uid 3000005 lies in agent "a0"\'s '
            "local.uid_range 3000000-3000099, whose uids go to kernels of their own; "
            "choose an account outside it"
        ]

    def test_a_docker_agent_is_not_asked_about_local_uids(self, tmp_path: Path) -> None:
        path = config(
            tmp_path,
            """
            [[agents]]
            id = "d0"
            backend = "docker"
            port_range = [30000, 30099]
            local = { uid_range = [1, 10] }
            """,
        )
        assert load_config(path, HOST).agents[0].backend == "docker"

    def test_the_model_alone_checks_shapes(self) -> None:
        with pytest.raises(ValidationError):
            LocalSettings.model_validate({"uid_range": [1]})
        with pytest.raises(ValidationError):
            LocalSettings.model_validate({"uid_range": ["1", "2"]})
