"""daemon/config.py: loading, validation messages, slice resolution, write-back.

Every test passes an explicit HostCapacity, so nothing depends on the machine.
"""

from __future__ import annotations

import difflib
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli.main import main
from common import credentials
from common.errors import ConfigError, NotFound
from daemon.config import load_config, parse_config, set_scaling_group
from daemon.resources import HostCapacity
from tests.pki import Pki

ROOT = Path(__file__).resolve().parents[3]
GIB = 1 << 30
MIB = 1 << 20

HOST = HostCapacity(cores=(0, 1), memory=8 * GIB, devices={})
GPU_HOST = HostCapacity(cores=(0, 1, 2, 3), memory=8 * GIB, devices={"cuda": ("0", "1")})


def agent(
    agent_id: str = "a0",
    ports: str = "[30000, 30099]",
    resources: str | None = '{ cpus = [0], memory = "1GiB" }',
    extra: str = "",
    *,
    raw_id: str | None = None,
) -> str:
    """One [[agents]] entry; raw_id is written as is (for ids that are not strings)."""
    lines = ["[[agents]]", f"id = {raw_id}" if raw_id is not None else f'id = "{agent_id}"']
    if ports:
        lines.append(f"port_range = {ports}")
    if resources is not None:
        lines.append(f"resources = {resources}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n\n"


A0 = agent()
A1 = agent("a1", "[30100, 30199]", '{ cpus = [1], memory = "1GiB" }')
AUTO = '[daemon]\nallocation_mode = "auto-split"\n\n'
SHARED = '[daemon]\nallocation_mode = "shared"\n\n'
ID_SYNTAX = "1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"


def with_trust(text: str) -> str:
    """text with `insecure = true` in its [daemon] table, unless it says how to trust
    (or is not TOML at all, so that its own error and line numbers stay as they are)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return text
    daemon = doc.get("daemon")
    if not isinstance(daemon, dict):
        return text if "daemon" in doc else text + "\n[daemon]\ninsecure = true\n"
    if "insecure" in daemon or "tls" in daemon:
        return text
    return text.replace("[daemon]\n", "[daemon]\ninsecure = true\n", 1)


def write(tmp_path: Path, text: str, name: str = "daemon.toml") -> Path:
    path = tmp_path / name
    path.write_text(with_trust(textwrap.dedent(text)))
    return path


def problems_of(path: Path, host: HostCapacity = HOST) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, host)
    return info.value.problems


# ----------------------------------------------------------------- malformed


@dataclass(frozen=True)
class Malformed:
    """A config that must be rejected with exactly these problems ({file} is its path)."""

    name: str
    toml: str
    problems: tuple[str, ...]
    host: HostCapacity = HOST


MALFORMED = [
    # ids
    Malformed(
        "duplicate_id",
        A0 + agent("a0", "[30100, 30199]", '{ cpus = [1], memory = "1GiB" }'),
        ('{file}: agents[1] (id "a0"): id \'a0\' is already used by agents[0] (id "a0")',),
    ),
    Malformed(
        "id_with_a_space",
        agent("a 0"),
        (f"{{file}}: agents[0] (id \"a 0\"): id: 'a 0' is not a valid id: {ID_SYNTAX}",),
    ),
    Malformed(
        "id_starting_with_a_dash",
        agent("-a0"),
        (f"{{file}}: agents[0] (id \"-a0\"): id: '-a0' is not a valid id: {ID_SYNTAX}",),
    ),
    Malformed(
        "id_longer_than_63",
        agent("a" * 64),
        (
            f"{{file}}: agents[0] (id \"{'a' * 64}\"): id: '{'a' * 64}' is not a valid id: "
            + ID_SYNTAX,
        ),
    ),
    Malformed(
        "id_not_a_string",
        agent(raw_id="7"),
        ("{file}: agents[0]: id: Input should be a valid string (got 7)",),
    ),
    Malformed(
        "id_missing",
        '[[agents]]\nport_range = [30000, 30099]\nresources = { cpus = [0], memory = "1GiB" }\n',
        ("{file}: agents[0]: id: required",),
    ),
    # port ranges
    Malformed(
        "overlapping_port_ranges",
        A0 + agent("a1", "[30050, 30150]", '{ cpus = [1], memory = "1GiB" }'),
        ('{file}: agents[1] (id "a1"): port_range 30050-30150 overlaps agent "a0" (30000-30099)',),
    ),
    Malformed(
        "port_range_sharing_one_port",
        A0 + agent("a1", "[30099, 30199]", '{ cpus = [1], memory = "1GiB" }'),
        ('{file}: agents[1] (id "a1"): port_range 30099-30199 overlaps agent "a0" (30000-30099)',),
    ),
    Malformed(
        "inverted_port_range",
        agent(ports="[30099, 30000]"),
        (
            '{file}: agents[0] (id "a0"): port_range: 30099-30000 is inverted: '
            "the first port must not exceed the last",
        ),
    ),
    Malformed(
        "port_below_1024",
        agent(ports="[80, 30099]"),
        ('{file}: agents[0] (id "a0"): port_range: 80-30099 is outside 1024-65535',),
    ),
    Malformed(
        "port_above_65535",
        agent(ports="[65000, 70000]"),
        ('{file}: agents[0] (id "a0"): port_range: 65000-70000 is outside 1024-65535',),
    ),
    Malformed(
        "port_range_of_three_ports",
        agent(ports="[30000, 30099, 30100]"),
        (
            '{file}: agents[0] (id "a0"): port_range: must be two ports [first, last], '
            "e.g. [30000, 30099], not [30000, 30099, 30100]",
        ),
    ),
    Malformed(
        "port_range_as_a_string",
        agent(ports='"30000-30099"'),
        (
            '{file}: agents[0] (id "a0"): port_range: must be two ports [first, last], '
            "e.g. [30000, 30099], not '30000-30099'",
        ),
    ),
    Malformed(
        "port_range_missing",
        agent(ports=""),
        ('{file}: agents[0] (id "a0"): port_range: required',),
    ),
    # cores
    Malformed(
        "core_given_to_two_agents",
        A0 + agent("a1", "[30100, 30199]", '{ cpus = [0], memory = "1GiB" }'),
        ('{file}: agents[1] (id "a1"): resources.cpus: core 0 is already given to agent "a0"',),
    ),
    Malformed(
        "core_the_host_does_not_have",
        agent(resources='{ cpus = [0, 7], memory = "1GiB" }'),
        (
            '{file}: agents[0] (id "a0"): resources.cpus: cores [7] do not exist on this host '
            "(cores 0-1)",
        ),
    ),
    Malformed(
        "core_count_past_the_host",
        agent(resources='{ cpus = 3, memory = "1GiB" }'),
        ('{file}: agents[0] (id "a0"): resources.cpus: 3 cores requested, the host has 2',),
    ),
    Malformed(
        "core_count_and_core_list_past_the_host",
        agent(resources='{ cpus = 2, memory = "1GiB" }') + A1,
        ("{file}: resources.cpus: agents take 3 cores in all (a0 2, a1 1), the host has 2",),
    ),
    Malformed(
        "core_count_zero",
        agent(resources='{ cpus = 0, memory = "1GiB" }'),
        ('{file}: agents[0] (id "a0"): resources.cpus: a core count must be at least 1, not 0',),
    ),
    Malformed(
        "negative_core_id",
        agent(resources='{ cpus = [-1], memory = "1GiB" }'),
        ('{file}: agents[0] (id "a0"): resources.cpus: core ids must not be negative: [-1]',),
    ),
    Malformed(
        "core_named_twice",
        agent(resources='{ cpus = [0, 0], memory = "1GiB" }'),
        ('{file}: agents[0] (id "a0"): resources.cpus: cores [0, 0] name a core twice',),
    ),
    Malformed(
        "cores_as_a_range_string",
        agent(resources='{ cpus = "0-1", memory = "1GiB" }'),
        (
            '{file}: agents[0] (id "a0"): resources.cpus: must be a list of core ids ([0, 1]) '
            "or a number of cores (2), not '0-1'",
        ),
    ),
    Malformed(
        "cores_as_a_boolean",
        agent(resources='{ cpus = true, memory = "1GiB" }'),
        (
            '{file}: agents[0] (id "a0"): resources.cpus: must be a list of core ids ([0, 1]) '
            "or a number of cores (2), not True",
        ),
    ),
    # devices
    Malformed(
        "device_given_to_two_agents",
        agent(resources='{ cpus = [0], memory = "1GiB", devices = { cuda = [0] } }')
        + agent(
            "a1", "[30100, 30199]", '{ cpus = [1], memory = "1GiB", devices = { cuda = ["0"] } }'
        ),
        (
            "{file}: agents[1] (id \"a1\"): resources.devices.cuda: device '0' is already given "
            'to agent "a0"',
        ),
        GPU_HOST,
    ),
    Malformed(
        "device_the_host_does_not_have",
        agent(resources='{ cpus = [0], memory = "1GiB", devices = { cuda = ["7"] } }'),
        (
            "{file}: agents[0] (id \"a0\"): resources.devices.cuda: device '7' does not exist "
            "on this host (cuda: 0, 1)",
        ),
        GPU_HOST,
    ),
    Malformed(
        "device_kind_the_host_does_not_have",
        agent(resources='{ cpus = [0], memory = "1GiB", devices = { cuda = ["0"] } }'),
        (
            "{file}: agents[0] (id \"a0\"): resources.devices.cuda: device '0' does not exist "
            "on this host (cuda: none)",
        ),
    ),
    Malformed(
        "devices_not_a_table",
        agent(resources='{ cpus = [0], memory = "1GiB", devices = 3 }'),
        ('{file}: agents[0] (id "a0"): resources.devices: must be a table, not 3',),
    ),
    # memory
    Malformed(
        "memory_slices_past_the_host",
        agent(resources='{ cpus = [0], memory = "5GiB" }')
        + agent("a1", "[30100, 30199]", '{ cpus = [1], memory = "4GiB" }'),
        (
            "{file}: resources.memory: agents' memory adds up to 9GiB (a0 5GiB, a1 4GiB), "
            "past the host's 8GiB",
        ),
    ),
    Malformed(
        "one_agent_memory_past_the_host_is_reported_once",
        agent(resources='{ cpus = [0], memory = "9GiB" }'),
        ('{file}: agents[0] (id "a0"): resources.memory: 9GiB exceeds the host\'s 8GiB',),
    ),
    Malformed(
        "memory_zero",
        agent(resources="{ cpus = [0], memory = 0 }"),
        ('{file}: agents[0] (id "a0"): resources.memory: must be more than 0',),
    ),
    Malformed(
        "memory_not_a_size",
        agent(resources='{ cpus = [0], memory = "lots" }'),
        (
            "{file}: agents[0] (id \"a0\"): resources.memory: 'lots' is not a memory size "
            '(e.g. "2GiB", "512MiB")',
        ),
    ),
    Malformed(
        "memory_with_an_unknown_unit",
        agent(resources='{ cpus = [0], memory = "2XB" }'),
        (
            "{file}: agents[0] (id \"a0\"): resources.memory: '2XB' is not a memory size "
            '(e.g. "2GiB", "512MiB")',
        ),
    ),
    Malformed(
        "memory_negative",
        agent(resources="{ cpus = [0], memory = -5 }"),
        (
            '{file}: agents[0] (id "a0"): resources.memory: -5 is not a memory size '
            '(e.g. "2GiB", "512MiB")',
        ),
    ),
    Malformed(
        "auto_split_leaves_no_memory",
        AUTO + agent(resources='{ memory = "8GiB" }') + agent("a1", "[30100, 30199]", None),
        (
            "{file}: resources.memory: explicit slices take 8GiB of the host's 8GiB, leaving "
            "less than 1MiB each for agents a1; lower the explicit memory or set theirs",
        ),
    ),
    # unknown keys
    Malformed(
        "unknown_top_level_key",
        "colour = 1\n" + A0,
        ("{file}: unknown key 'colour'; valid top-level tables: daemon, defaults, agents, agent",),
    ),
    Malformed(
        "unknown_daemon_key",
        '[daemon]\nlisten_on = "127.0.0.1:6001"\n\n' + A0,
        ("{file}: daemon: unknown key 'listen_on'",),
    ),
    Malformed(
        "unknown_defaults_key_is_reported_once",
        '[defaults]\nbackendd = "local"\n\n' + A0 + A1,
        (
            "{file}: defaults: unknown key 'backendd'; valid: backend, scaling_group, resources, "
            "kill_grace, log_max_bytes, local, docker, kubernetes",
        ),
    ),
    Malformed(
        "unknown_agent_key",
        agent(extra='color = "red"'),
        ("{file}: agents[0] (id \"a0\"): unknown key 'color'",),
    ),
    Malformed(
        "unknown_resources_key",
        agent(resources='{ cpus = [0], memory = "1GiB", gpus = 1 }'),
        ("{file}: agents[0] (id \"a0\"): resources: unknown key 'gpus'",),
    ),
    Malformed(
        "unknown_key_in_defaults_resources",
        '[defaults]\nresources = { mem = "1GiB" }\n\n' + A0,
        ("{file}: defaults: resources: unknown key 'mem'",),
    ),
    Malformed(
        "unknown_docker_key",
        agent(extra='docker = { hostip = "0.0.0.0" }'),
        ("{file}: agents[0] (id \"a0\"): docker: unknown key 'hostip'",),
    ),
    # names from a fixed set
    Malformed(
        "unknown_backend",
        agent(extra='backend = "podman"'),
        (
            "{file}: agents[0] (id \"a0\"): backend: unknown backend 'podman'; "
            "valid: local, docker, kubernetes",
        ),
    ),
    Malformed(
        "unknown_backend_in_defaults_is_reported_once",
        '[defaults]\nbackend = "podman"\n\n' + A0 + A1,
        ("{file}: defaults: backend: unknown backend 'podman'; valid: local, docker, kubernetes",),
    ),
    Malformed(
        "unknown_allocation_mode",
        '[daemon]\nallocation_mode = "greedy"\n\n' + A0,
        (
            "{file}: daemon: allocation_mode: unknown allocation_mode 'greedy'; "
            "valid: manual, auto-split, shared",
        ),
    ),
    Malformed(
        "scaling_group_with_a_space",
        agent(extra='scaling_group = "no way"'),
        (
            f"{{file}}: agents[0] (id \"a0\"): scaling_group: 'no way' is not a valid id: "
            f"{ID_SYNTAX}",
        ),
    ),
    # TOML itself
    Malformed(
        "toml_value_missing",
        A0 + "kill_grace =\n",
        ("{file}: not valid TOML: Invalid value (at line 6, column 13)",),
    ),
    Malformed(
        "toml_table_header_unclosed",
        '[daemon\nlisten = "127.0.0.1:6001"\n',
        (
            "{file}: not valid TOML: Expected ']' at the end of a table declaration "
            "(at line 1, column 8)",
        ),
    ),
    Malformed(
        "toml_key_given_twice",
        agent(extra='id = "a9"'),
        ("{file}: not valid TOML: Cannot overwrite a value (at line 5, column 10)",),
    ),
    # shape of the document
    Malformed(
        "both_agent_and_agents",
        '[agent]\nid = "a0"\nport_range = [30000, 30099]\n\n' + A1,
        ("{file}: give either [[agents]] entries or one legacy [agent] table, not both",),
    ),
    Malformed(
        "no_agents",
        '[daemon]\nlisten = "127.0.0.1:6001"\n',
        ("{file}: no agents: add at least one [[agents]] entry",),
    ),
    Malformed(
        "empty_agents_array",
        "agents = []\n",
        ("{file}: no agents: add at least one [[agents]] entry",),
    ),
    Malformed(
        "agents_not_an_array",
        "agents = 3\n",
        ("{file}: agents: must be an array of tables ([[agents]])",),
    ),
    Malformed(
        "agents_entry_not_a_table",
        "agents = [1]\n",
        ("{file}: agents[0]: must be a table",),
    ),
    Malformed(
        "daemon_not_a_table",
        "daemon = 3\n" + A0,
        ("{file}: daemon: must be a table, not 3",),
    ),
    Malformed(
        "default_agent_names_a_missing_agent",
        '[daemon]\ndefault_agent = "zz"\n\n' + A0 + A1,
        ("{file}: daemon.default_agent: no agent 'zz'; agents: a0, a1",),
    ),
    Malformed(
        "id_in_defaults",
        '[defaults]\nid = "a9"\n\n' + A0,
        ("{file}: defaults: id cannot be inherited; set it per agent",),
    ),
    Malformed(
        "port_range_in_defaults",
        "[defaults]\nport_range = [30000, 30099]\n\n" + A0,
        ("{file}: defaults: port_range cannot be inherited; set it per agent",),
    ),
    Malformed(
        "manual_mode_without_resources",
        agent(resources=None),
        (
            '{file}: agents[0] (id "a0"): resources: required when allocation_mode is "manual" '
            '(or set [daemon] allocation_mode = "auto-split")',
        ),
    ),
    Malformed(
        "manual_mode_without_memory",
        agent(resources="{ cpus = [0] }"),
        (
            '{file}: agents[0] (id "a0"): resources: memory required when allocation_mode is '
            '"manual"',
        ),
    ),
    Malformed(
        "legacy_agent_with_unknown_backend",
        '[agent]\nid = "a0"\nport_range = [30000, 30099]\nbackend = "podman"\n'
        'resources = { cpus = [0], memory = "1GiB" }\n',
        (
            "{file}: agent (id \"a0\"): backend: unknown backend 'podman'; "
            "valid: local, docker, kubernetes",
        ),
    ),
    Malformed(
        "kill_grace_negative",
        agent(extra="kill_grace = -1"),
        (
            '{file}: agents[0] (id "a0"): kill_grace: Input should be greater than or equal to 0 '
            "(got -1)",
        ),
    ),
    # addresses
    Malformed(
        "listen_without_a_host",
        '[daemon]\nlisten = "6001"\n\n' + A0,
        ("{file}: daemon: listen: '6001' is not host:port (e.g. \"127.0.0.1:6001\")",),
    ),
    Malformed(
        "listen_with_a_named_port",
        '[daemon]\nlisten = "localhost:http"\n\n' + A0,
        ("{file}: daemon: listen: 'localhost:http' is not host:port (e.g. \"127.0.0.1:6001\")",),
    ),
    Malformed(
        "listen_port_past_65535",
        '[daemon]\nlisten = "localhost:70000"\n\n' + A0,
        ("{file}: daemon: listen: 'localhost:70000' is not host:port (e.g. \"127.0.0.1:6001\")",),
    ),
    Malformed(
        "manager_not_host_port",
        '[daemon]\nmanager = "nowhere"\n\n' + A0,
        ("{file}: daemon: manager: 'nowhere' is not host:port (e.g. \"127.0.0.1:6001\")",),
    ),
]


K8S = 'backend = "kubernetes"\nkubernetes = { node_name = "n1"'
MALFORMED += [
    Malformed(
        "kubernetes_namespace_not_a_dns_label",
        agent(extra=K8S + ', namespace = "Team_A" }'),
        (
            "{file}: agents[0] (id \"a0\"): kubernetes.namespace: 'Team_A' is not a DNS label: "
            "at most 63 lowercase letters, digits and '-', starting and ending with a letter "
            "or digit",
        ),
    ),
    Malformed(
        "kubernetes_node_selector_key",
        agent(extra=K8S + ', node_selector = { "a b" = "x" } }'),
        (
            "{file}: agents[0] (id \"a0\"): kubernetes.node_selector: 'a b' is not a label key: "
            "an optional DNS subdomain prefix and '/', then a name: at most 63 letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit",
        ),
    ),
    Malformed(
        "kubernetes_run_as_negative",
        agent(extra=K8S + ", run_as = -1 }"),
        (
            '{file}: agents[0] (id "a0"): kubernetes.run_as: Input should be greater than or '
            "equal to 0 (got -1)",
        ),
    ),
    Malformed(
        "kubernetes_unknown_key",
        agent(extra=K8S + ', context = "prod" }'),
        ("{file}: agents[0] (id \"a0\"): kubernetes: unknown key 'context'",),
    ),
    Malformed(
        "kubernetes_id_not_a_label_value",
        agent("a0-", extra=K8S + " }"),
        (
            '{file}: agents[0] (id "a0-"): id: a kubernetes agent\'s id labels its pods, and '
            "'a0-' is not a label value: at most 63 letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit",
        ),
    ),
    Malformed(
        "kubernetes_daemon_node_not_a_node_name",
        '[daemon]\nnode = "My_Host"\n\n' + agent(extra='backend = "kubernetes"'),
        (
            "{file}: agents[0] (id \"a0\"): kubernetes.node_name: the daemon's node 'my_host' "
            "is not a DNS subdomain: at most 253 lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit; set kubernetes.node_name, or "
            "[daemon] node, to the node's Kubernetes name",
        ),
    ),
    Malformed(
        "metrics_on_the_grpc_port",
        '[daemon]\nlisten = "127.0.0.1:6001"\nmetrics_listen = "0.0.0.0:6001"\n\n' + A0,
        ("{file}: daemon: metrics_listen: port 6001 is listen's too; give each its own port",),
    ),
    Malformed(
        "metrics_not_host_port",
        '[daemon]\nmetrics_listen = "9464"\n\n' + A0,
        ("{file}: daemon: metrics_listen: '9464' is not host:port (e.g. \"127.0.0.1:6001\")",),
    ),
]


class TestMalformedConfigs:
    @pytest.mark.parametrize("case", MALFORMED, ids=[c.name for c in MALFORMED])
    def test_is_rejected_with_the_expected_messages(self, tmp_path: Path, case: Malformed) -> None:
        path = write(tmp_path, case.toml)
        expected = [p.replace("{file}", str(path)) for p in case.problems]
        assert problems_of(path, case.host) == expected

    def test_cases_are_distinct(self) -> None:
        assert len({c.toml for c in MALFORMED}) == len(MALFORMED) >= 20

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[daemon]\nallocation_mode = "greedy"\n\n'
            + agent(extra='backend = "podman"')
            + agent("a1", "[30050, 30150]", '{ cpus = [0], memory = "1GiB" }'),
        )
        assert problems_of(path) == [
            f"{path}: daemon: allocation_mode: unknown allocation_mode 'greedy'; "
            "valid: manual, auto-split, shared",
            f"{path}: agents[0] (id \"a0\"): backend: unknown backend 'podman'; "
            "valid: local, docker, kubernetes",
        ]

    def test_error_text_is_every_problem_on_its_own_line(self, tmp_path: Path) -> None:
        path = write(tmp_path, agent(extra='color = "red"\nshape = "round"'))
        with pytest.raises(ConfigError) as info:
            load_config(path, HOST)
        assert str(info.value) == (
            f"{path}: agents[0] (id \"a0\"): unknown key 'color'\n"
            f"{path}: agents[0] (id \"a0\"): unknown key 'shape'"
        )

    def test_missing_file_is_named(self, tmp_path: Path) -> None:
        assert problems_of(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: no such file"]


class TestPortRangeProperty:
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.integers(1024, 1100), st.integers(0, 30)), min_size=1, max_size=5))
    def test_config_is_rejected_exactly_when_two_ranges_overlap(
        self, ranges: list[tuple[int, int]]
    ) -> None:
        raw = {
            "daemon": {"allocation_mode": "shared", "insecure": True},
            "agents": [
                {"id": f"a{i}", "port_range": [start, start + width]}
                for i, (start, width) in enumerate(ranges)
            ],
        }
        spans = [(s, s + w) for s, w in ranges]
        overlapping = [
            (i, j)
            for i in range(len(spans))
            for j in range(i)
            if spans[i][0] <= spans[j][1] and spans[j][0] <= spans[i][1]
        ]
        path = Path("/etc/agenthost/daemon.toml")
        if not overlapping:
            assert len(parse_config(raw, path, HOST).agents) == len(ranges)
            return
        with pytest.raises(ConfigError) as info:
            parse_config(raw, path, HOST)
        assert info.value.problems == [
            f'{path}: agents[{i}] (id "a{i}"): port_range {spans[i][0]}-{spans[i][1]} '
            f'overlaps agent "a{j}" ({spans[j][0]}-{spans[j][1]})'
            for i, j in overlapping
        ]


# --------------------------------------------------------------------- valid


class TestDefaults:
    def test_agents_inherit_defaults_and_may_override_them(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[defaults]\nbackend = "docker"\nscaling_group = "gpu"\nkill_grace = 2.5\n\n'
            + A0
            + agent("a1", "[30100, 30199]", '{ cpus = [1], memory = "1GiB" }', 'backend = "local"'),
        )
        a0, a1 = load_config(path, HOST).agents
        assert (a0.backend, a0.scaling_group, a0.kill_grace) == ("docker", "gpu", 2.5)
        assert (a1.backend, a1.scaling_group, a1.kill_grace) == ("local", "gpu", 2.5)

    def test_tables_are_deep_merged_key_by_key(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[defaults]\nresources = { memory = "1GiB" }\n'
            'docker = { allow_pull = true, host_ip = "127.0.0.1" }\n\n'
            + agent(resources="{ cpus = [0] }", extra='docker = { host_ip = "0.0.0.0" }')
            + agent("a1", "[30100, 30199]", '{ cpus = [1], memory = "2GiB" }'),
        )
        a0, a1 = load_config(path, HOST).agents
        assert (a0.slice.cores, a0.slice.memory) == ((0,), GIB)
        assert (a1.slice.cores, a1.slice.memory) == ((1,), 2 * GIB)
        assert (a0.docker.allow_pull, a0.docker.host_ip) == (True, "0.0.0.0")
        assert (a1.docker.allow_pull, a1.docker.host_ip) == (True, "127.0.0.1")

    def test_daemon_section_has_defaults(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, A0), HOST)
        assert config.daemon.listen == "127.0.0.1:6001"
        assert config.daemon.allocation_mode == "manual"
        assert config.daemon.manager is None
        assert config.state_dir.is_absolute()


class TestLegacyAgentTable:
    def test_single_agent_table_is_one_agent(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[agent]\nid = "solo"\nport_range = [30000, 30099]\n'
            'resources = { cpus = [0, 1], memory = "2GiB" }\n',
        )
        (solo,) = load_config(path, HOST).agents
        assert (solo.id, solo.backend, solo.scaling_group) == ("solo", "local", "default")
        assert (solo.slice.cores, solo.slice.memory, solo.port_range) == (
            (0, 1),
            2 * GIB,
            (30000, 30099),
        )

    def test_legacy_agent_inherits_defaults(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[defaults]\nscaling_group = "batch"\n\n'
            '[agent]\nid = "solo"\nport_range = [30000, 30099]\n'
            'resources = { cpus = [0], memory = "1GiB" }\n',
        )
        assert load_config(path, HOST).agents[0].scaling_group == "batch"


def three_auto_agents() -> str:
    return AUTO + "".join(
        agent(f"a{i}", f"[{30000 + 100 * i}, {30099 + 100 * i}]", None) for i in range(3)
    )


class TestAutoSplit:
    def test_three_agents_divide_six_cores_and_memory_evenly(self, tmp_path: Path) -> None:
        host = HostCapacity(cores=(0, 1, 2, 3, 4, 5), memory=12 * GIB)
        config = load_config(write(tmp_path, three_auto_agents()), host)
        assert [a.slice.cores for a in config.agents] == [(0, 1), (2, 3), (4, 5)]
        assert [a.slice.memory for a in config.agents] == [4 * GIB] * 3
        assert config.notes == ()

    def test_four_cores_over_three_agents_differ_by_at_most_one(self, tmp_path: Path) -> None:
        host = HostCapacity(cores=(0, 1, 2, 3), memory=8 * GIB)
        config = load_config(write(tmp_path, three_auto_agents()), host)
        assert [a.slice.cores for a in config.agents] == [(0, 1), (2,), (3,)]
        share = 8 * GIB // 3 // MIB * MIB
        assert [a.slice.memory for a in config.agents] == [share] * 3
        assert config.notes == ()

    def test_fewer_cores_than_agents_share_round_robin_with_a_note(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, three_auto_agents()), HOST)
        assert [a.slice.cores for a in config.agents] == [(0,), (1,), (0,)]
        assert config.notes == (
            "auto-split: 3 agents but 2 unclaimed cores; agents a0, a1, a2 share cores 0-1 "
            "round-robin",
        )

    def test_explicit_slices_are_kept_and_the_rest_is_split(self, tmp_path: Path) -> None:
        host = HostCapacity(cores=(0, 1, 2, 3, 4), memory=10 * GIB)
        text = (
            AUTO
            + agent("big", "[30000, 30099]", '{ cpus = [0], memory = "4GiB" }')
            + agent("a1", "[30100, 30199]", None)
            + agent("a2", "[30200, 30299]", None)
        )
        big, a1, a2 = load_config(write(tmp_path, text), host).agents
        assert (big.slice.cores, big.slice.memory) == ((0,), 4 * GIB)
        assert (a1.slice.cores, a1.slice.memory) == ((1, 2), 3 * GIB)
        assert (a2.slice.cores, a2.slice.memory) == ((3, 4), 3 * GIB)

    def test_devices_are_split_among_agents(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, three_auto_agents()), GPU_HOST)
        assert [dict(a.slice.devices) for a in config.agents] == [
            {"cuda": ("0",)},
            {"cuda": ("1",)},
            {},
        ]

    @settings(max_examples=80, deadline=None)
    @given(n_agents=st.integers(1, 8), n_cores=st.integers(1, 16), gib=st.integers(1, 64))
    def test_split_never_gives_more_than_the_host(
        self, n_agents: int, n_cores: int, gib: int
    ) -> None:
        host = HostCapacity(cores=tuple(range(n_cores)), memory=gib * GIB)
        raw = {
            "daemon": {"allocation_mode": "auto-split", "insecure": True},
            "agents": [
                {"id": f"a{i}", "port_range": [30000 + 100 * i, 30099 + 100 * i]}
                for i in range(n_agents)
            ],
        }
        config = parse_config(raw, Path("daemon.toml"), host)
        slices = [a.slice for a in config.agents]
        assert sum(s.memory for s in slices) <= host.memory
        assert all(s.memory > 0 and s.cores for s in slices)
        assert all(set(s.cores) <= set(host.cores) for s in slices)
        if n_cores >= n_agents:
            given_cores = [c for s in slices for c in s.cores]
            assert sorted(given_cores) == list(host.cores)
            assert max(map(len, (s.cores for s in slices))) - min(len(s.cores) for s in slices) <= 1
            assert config.notes == ()
        else:
            assert len(config.notes) == 1


class TestSharedAndManual:
    def test_shared_gives_every_agent_every_core_and_all_memory(self, tmp_path: Path) -> None:
        text = SHARED + agent(resources=None) + agent("a1", "[30100, 30199]", None)
        config = load_config(write(tmp_path, text), GPU_HOST)
        for a in config.agents:
            assert (a.slice.cores, a.slice.memory) == ((0, 1, 2, 3), 8 * GIB)
            assert dict(a.slice.devices) == {"cuda": ("0", "1")}

    def test_shared_allows_two_agents_the_same_cores(self, tmp_path: Path) -> None:
        res = '{ cpus = [0, 1], memory = "8GiB" }'
        text = SHARED + agent(resources=res) + agent("a1", "[30100, 30199]", res)
        config = load_config(write(tmp_path, text), HOST)
        assert [a.slice.cores for a in config.agents] == [(0, 1), (0, 1)]

    def test_core_count_takes_that_many_cores(self, tmp_path: Path) -> None:
        config = load_config(
            write(tmp_path, agent(resources='{ cpus = 2, memory = "1GiB" }')), HOST
        )
        assert config.agents[0].slice.cores == (0, 1)

    def test_core_count_takes_cores_no_list_claims(self, tmp_path: Path) -> None:
        text = agent(resources='{ cpus = [0], memory = "1GiB" }') + agent(
            "a1", "[30100, 30199]", '{ cpus = 2, memory = "1GiB" }'
        )
        a0, a1 = load_config(write(tmp_path, text), GPU_HOST).agents
        assert (a0.slice.cores, a1.slice.cores) == ((0,), (1, 2))

    def test_manual_agent_gets_only_the_devices_it_names(self, tmp_path: Path) -> None:
        text = agent(resources='{ cpus = [0], memory = "1GiB", devices = { cuda = [1] } }') + A1
        a0, a1 = load_config(write(tmp_path, text), GPU_HOST).agents
        assert dict(a0.slice.devices) == {"cuda": ("1",)}
        assert dict(a1.slice.devices) == {}

    def test_default_agent_naming_an_agent_is_kept(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[daemon]\ndefault_agent = "a1"\n\n' + A0 + A1)
        assert load_config(path, HOST).daemon.default_agent == "a1"


# ---------------------------------------------------------------- write-back

COMMENTED = """\
# a daemon with comments everywhere
[daemon]
listen = "127.0.0.1:6001"   # one port
insecure = true

[defaults]
scaling_group = "default"   # inherited

[[agents]]
id = "a0"                   # first
port_range = [30000, 30099]
resources = { cpus = [0], memory = "1GiB" }

[[agents]]
id = "a1"
scaling_group = "batch"     # batch jobs land here
port_range = [30100, 30199]
resources = { cpus = [1], memory = "1GiB" }
# trailing comment
"""


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.ndiff(before.splitlines(), after.splitlines())
        if line.startswith(("- ", "+ "))
    ]


class TestSetScalingGroup:
    @pytest.fixture
    def path(self, tmp_path: Path) -> Path:
        return write(tmp_path, COMMENTED)

    def test_replaces_only_that_agents_value_keeping_its_comment(self, path: Path) -> None:
        set_scaling_group(path, "a1", "gpu")
        assert changed_lines(COMMENTED, path.read_text()) == [
            '- scaling_group = "batch"     # batch jobs land here',
            '+ scaling_group = "gpu"     # batch jobs land here',
        ]

    def test_inherited_group_is_added_to_that_agents_entry_only(self, path: Path) -> None:
        set_scaling_group(path, "a0", "gpu")
        assert changed_lines(COMMENTED, path.read_text()) == ['+ scaling_group = "gpu"']
        a0, a1 = load_config(path, HOST).agents
        assert (a0.scaling_group, a1.scaling_group) == ("gpu", "batch")

    def test_keeps_a_backup_of_the_previous_text(self, path: Path) -> None:
        set_scaling_group(path, "a1", "gpu")
        set_scaling_group(path, "a1", "cpu")
        backup = path.with_name("daemon.toml.bak").read_text()
        assert backup == COMMENTED.replace('"batch"', '"gpu"')
        assert sorted(p.name for p in path.parent.iterdir()) == ["daemon.toml", "daemon.toml.bak"]

    def test_edits_the_legacy_agent_table(self, tmp_path: Path) -> None:
        text = (
            '# one agent\n[daemon]\ninsecure = true\n[agent]\nid = "solo"   # legacy\n'
            'port_range = [30000, 30099]\nresources = { cpus = [0], memory = "1GiB" }\n'
        )
        path = write(tmp_path, text)
        set_scaling_group(path, "solo", "gpu")
        assert changed_lines(text, path.read_text()) == ['+ scaling_group = "gpu"']
        assert load_config(path, HOST).agents[0].scaling_group == "gpu"

    def test_unknown_agent_is_not_found_and_file_untouched(self, path: Path) -> None:
        with pytest.raises(NotFound) as info:
            set_scaling_group(path, "zz", "gpu")
        assert str(info.value) == f"agent 'zz' has no entry in {path}"
        assert path.read_text() == COMMENTED
        assert not path.with_name("daemon.toml.bak").exists()

    @pytest.mark.parametrize("group", ["no way", "gpu\n", ""], ids=["space", "newline", "empty"])
    def test_invalid_group_is_refused_and_file_untouched(self, path: Path, group: str) -> None:
        with pytest.raises(ConfigError) as info:
            set_scaling_group(path, "a0", group)
        assert info.value.problems == [f"scaling_group {group!r} is not valid: {ID_SYNTAX}"]
        assert path.read_text() == COMMENTED


# ------------------------------------------------------- shipped configs + CLI

TWO_CORE_HOST = HostCapacity(cores=(0, 1), memory=4 * GIB)
# Manager configs are validated by the manager's own tests; every other file here
# is a daemon config.
SHIPPED = sorted(p for p in (ROOT / "configs").glob("*.toml") if not p.name.startswith("manager"))


class TestShippedConfigs:
    @pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
    def test_validates_on_a_two_core_host(self, path: Path) -> None:
        assert load_config(path, TWO_CORE_HOST).agents

    def test_multi_agent_example_has_three_agents(self) -> None:
        config = load_config(ROOT / "configs" / "daemon-multi.toml", TWO_CORE_HOST)
        assert [a.id for a in config.agents] == ["a0", "a1", "a2"]


class TestKubernetesAgents:
    def test_a_relative_kubeconfig_is_read_beside_the_file(self, tmp_path: Path) -> None:
        (tmp_path / "kube").mkdir()
        (tmp_path / "kube" / "config").write_text("{}")
        path = write(tmp_path, agent(extra=K8S + ', kubeconfig = "kube/config" }'))
        [a0] = load_config(path, HOST).agents
        assert a0.kubernetes.kubeconfig == tmp_path / "kube" / "config"

    def test_a_missing_kubeconfig_is_named(self, tmp_path: Path) -> None:
        path = write(tmp_path, agent(extra=K8S + ', kubeconfig = "kubeconfig" }'))
        assert problems_of(path) == [
            f'{path}: agents[0] (id "a0"): kubernetes.kubeconfig: no file '
            f"{tmp_path / 'kubeconfig'}; give the path of a kubeconfig (relative: to this "
            "file), or leave it out to use the in-cluster service account"
        ]

    def test_pods_are_bound_to_the_daemons_node_by_default(self, tmp_path: Path) -> None:
        text = '[daemon]\nnode = "Node-7"\n\n' + agent(extra='backend = "kubernetes"')
        path = write(tmp_path, text)
        [a0] = load_config(path, HOST).agents
        assert a0.kubernetes.node_name == "node-7"
        [a0] = load_config(path, HOST, node="node-8").agents
        assert a0.kubernetes.node_name == "node-8"

    def test_a_node_selector_leaves_placement_to_the_scheduler(self, tmp_path: Path) -> None:
        selector = 'kubernetes = { node_selector = { "kubernetes.io/hostname" = "n2" } }'
        path = write(tmp_path, agent(extra='backend = "kubernetes"\n' + selector))
        [a0] = load_config(path, HOST).agents
        assert a0.kubernetes.node_name is None
        assert a0.backend_settings == a0.kubernetes

    def test_tls_files_are_taken_by_their_paths_when_not_read(self, tmp_path: Path) -> None:
        text = (
            '[daemon]\nlisten = "0.0.0.0:6001"\n[daemon.tls]\nca = "pki/ca.crt"\n'
            'cert = "pki/d.crt"\nkey = "pki/d.key"\n\n' + A0
        )
        path = write(tmp_path, text)
        assert load_config(path, HOST, check_files=False).tls is None
        assert len(problems_of(path)) == 1  # read, the missing files are a problem


class TestNodeInIds:
    """One file for every node of a cluster: {node} in an id is the daemon's node."""

    TEXT = (
        '[daemon]\nallocation_mode = "shared"\ndefault_agent = "gpu0-{node}"\n\n'
        + agent("gpu0-{node}", resources=None)
        + agent("batch", "[30100, 30199]", resources=None)
    )

    def test_each_node_gets_agents_of_its_own_from_one_file(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.TEXT)
        on = {node: load_config(path, HOST, node=node) for node in ("node-a", "node-b")}
        assert [a.id for a in on["node-a"].agents] == ["gpu0-node-a", "batch"]
        assert [a.id for a in on["node-b"].agents] == ["gpu0-node-b", "batch"]
        assert on["node-b"].daemon.default_agent == "gpu0-node-b"
        assert on["node-a"].notes == (
            "ids with {node} (gpu0-{node}) are shown for node 'node-a'; on every other node "
            "they carry its own name",
        )

    def test_an_id_too_long_on_its_node_is_refused_naming_the_node(self, tmp_path: Path) -> None:
        path = write(tmp_path, agent("gpu0-{node}"))
        node = "n" * 60
        with pytest.raises(ConfigError) as info:
            load_config(path, HOST, node=node)
        assert info.value.problems == [
            f'{path}: agents[0] (id "gpu0-{{node}}"): id: on node {node!r} it is '
            f"'gpu0-{node}', which is not a valid id: {ID_SYNTAX}; shorten the id around "
            "{node}, or set [daemon] node (agenthost daemon --node)"
        ]

    def test_the_same_id_twice_on_one_node_is_a_duplicate(self, tmp_path: Path) -> None:
        text = agent("w-{node}") + agent(
            "w-n1", "[30100, 30199]", '{ cpus = [1], memory = "1GiB" }'
        )
        path = write(tmp_path, text)
        assert problems_of_node(path, "n1") == [
            f'{path}: agents[1] (id "w-n1"): id \'w-n1\' is already used by agents[0] (id "w-n1")'
        ]
        assert [a.id for a in load_config(path, HOST, node="n2").agents] == ["w-n2", "w-n1"]

    def test_scaling_group_write_back_finds_the_entry_and_keeps_the_placeholder(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path, self.TEXT)
        set_scaling_group(path, "gpu0-node-a", "gpu", node="node-a")
        text = path.read_text()
        assert 'id = "gpu0-{node}"' in text
        on_b = load_config(path, HOST, node="node-b")
        assert [(a.id, a.scaling_group) for a in on_b.agents] == [
            ("gpu0-node-b", "gpu"),
            ("batch", "default"),
        ]

    def test_config_check_shows_the_ids_of_the_node_it_is_given(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.TEXT)
        result = CliRunner().invoke(main, ["config", "check", str(path), "--node", "worker-7"])
        assert result.exit_code == 0, result.output
        ids = [line.split()[0] for line in result.stdout.splitlines()[2:4]]
        assert ids == ["gpu0-worker-7", "batch"]
        assert "shown for node 'worker-7'" in result.stdout.splitlines()[-1]
        from_env = CliRunner().invoke(
            main, ["config", "check", str(path)], env={"AGENTHOST_DAEMON_NODE": "worker-8"}
        )
        assert from_env.stdout.splitlines()[2].startswith("gpu0-worker-8 ")


def problems_of_node(path: Path, node: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, HOST, node=node)
    return info.value.problems


class TestConfigCheckCommand:
    @pytest.fixture(autouse=True)
    def two_core_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(HostCapacity, "detect", classmethod(lambda cls: HOST))

    def test_prints_the_agents_as_a_table(self, tmp_path: Path) -> None:
        path = write(tmp_path, three_auto_agents())
        result = CliRunner().invoke(main, ["config", "check", str(path)])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert result.stdout.splitlines() == [
            f"{path}: ok, 3 agents, allocation_mode auto-split, listen 127.0.0.1:6001, "
            f"state_dir {tmp_path / 'var' / 'agenthost'}",
            "AGENT_ID  BACKEND  SCALING_GROUP  CORES  MEMORY   DEVICES  PORT_RANGE",
            "a0        local    default        0      2730MiB  -        30000-30099",
            "a1        local    default        1      2730MiB  -        30100-30199",
            "a2        local    default        0      2730MiB  -        30200-30299",
            "note: auto-split: 3 agents but 2 unclaimed cores; agents a0, a1, a2 share cores "
            "0-1 round-robin",
        ]

    def test_accepts_kubernetes_agents(self, tmp_path: Path) -> None:
        k1 = agent("k1", "[30100, 30199]", '{ cpus = [1], memory = "2GiB" }', extra=K8S + " }")
        path = write(tmp_path, A0 + k1)
        result = CliRunner().invoke(main, ["config", "check", str(path)])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[2:] == [
            "a0        local       default        0      1GiB    -        30000-30099",
            "k1        kubernetes  default        1      2GiB    -        30100-30199",
        ]

    def test_errors_go_to_stderr_with_exit_code_2(self, tmp_path: Path) -> None:
        path = write(
            tmp_path, A0 + agent("a1", "[30050, 30150]", '{ cpus = [0], memory = "1GiB" }')
        )
        result = CliRunner().invoke(main, ["config", "check", str(path)])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f'error: {path}: agents[1] (id "a1"): port_range 30050-30150 overlaps agent "a0" '
            "(30000-30099)",
            f'error: {path}: agents[1] (id "a1"): resources.cpus: core 0 is already given to '
            'agent "a0"',
        ]


class TestTrust:
    """Secure by default: mutual TLS, or an explicit plaintext daemon on loopback."""

    def problems(self, tmp_path: Path, daemon: str) -> list[str]:
        path = tmp_path / "d.toml"
        path.write_text(f"[daemon]\n{daemon}\n" + agent())
        with pytest.raises(ConfigError) as info:
            load_config(path, HOST)
        return [p.removeprefix(f"{path}: ") for p in info.value.problems]

    @pytest.mark.parametrize(
        ("daemon", "problem"),
        [
            (
                "",
                "daemon: [daemon.tls] is required (ca, cert, key: make them with agenthost "
                "certs init and agenthost certs issue --role daemon), or set insecure = true to "
                "serve plaintext on a loopback address",
            ),
            (
                'insecure = true\nlisten = "0.0.0.0:6001"',
                "daemon.insecure: plaintext is allowed only on a loopback address, not on "
                "0.0.0.0:6001; give [daemon.tls] to listen there",
            ),
        ],
        ids=["neither", "plaintext-beyond-loopback"],
    )
    def test_refused(self, tmp_path: Path, daemon: str, problem: str) -> None:
        assert self.problems(tmp_path, daemon) == [problem]

    def test_a_manager_certificate_cannot_serve_as_a_daemon(self, tmp_path: Path, pki: Pki) -> None:
        files = pki.files("manager", "m")
        assert self.problems(tmp_path, f"tls = {files.toml()}") == [
            f"daemon.tls.cert: {files.cert} holds a manager certificate; this process needs a "
            "daemon certificate (agenthost certs issue --role daemon --name NAME)"
        ]

    def test_a_certificate_the_manager_cannot_check_by_name_is_refused_with_a_manager(
        self, tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # As an older agenthost issued it: without <name>.daemon.agenthost.invalid.
        with monkeypatch.context() as m:
            m.setattr(credentials, "daemon_host", lambda name: "node1.example")
            cert, key = credentials.issue(pki.directory, "daemon", "old", ["10.0.0.5"])
        table = f'tls = {{ ca = "{pki.ca}", cert = "{cert}", key = "{key}" }}'
        assert self.problems(tmp_path, f'manager = "10.0.0.2:6100"\n{table}') == [
            f"daemon.tls.cert: {cert} does not name old.daemon.agenthost.invalid, the name "
            "the manager checks a daemon's certificate against (it was issued by an older "
            "agenthost): issue it again with agenthost certs issue --role daemon --name old"
        ]
        # Without a manager nothing checks it by name: the daemon serves with it.
        path = tmp_path / "alone.toml"
        path.write_text(f"[daemon]\n{table}\n" + agent())
        assert load_config(path, HOST).tls is not None

    def test_relative_paths_are_read_beside_the_config_file(self, tmp_path: Path, pki: Pki) -> None:
        files = pki.files("daemon", "node7")
        for source in (files.ca, files.cert, files.key):
            (tmp_path / source.name).write_bytes(source.read_bytes())
        path = tmp_path / "d.toml"
        path.write_text(
            f'[daemon]\ntls = {{ ca = "{files.ca.name}", cert = "{files.cert.name}", '
            f'key = "{files.key.name}" }}\n' + agent()
        )
        config = load_config(path, HOST)
        assert config.tls is not None and config.tls.identity.name == "node7"


class TestHooks:
    """[daemon] hooks: loaded (factories called) at load time; a bad entry is a config error."""

    def test_hooks_are_loaded_in_order(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[daemon]\nhooks = ["tests.hooks_fixture:Recorder", "tests.hooks_fixture:RaisingPre"]'
            "\n\n" + A0,
        )
        config = load_config(path, HOST)
        assert [h.name for h in config.hooks] == [
            "tests.hooks_fixture:Recorder",
            "tests.hooks_fixture:RaisingPre",
        ]
        assert load_config(write(tmp_path, A0, "none.toml"), HOST).hooks == ()

    def test_every_bad_entry_is_a_problem_naming_it(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "[daemon]\nhooks = ["
            '"tests.hooks_fixture:Recorder", "nowhere.policy:Hook", '
            '"tests.hooks_fixture:Missing", "tests.hooks_fixture:Nothing", "no colon"'
            "]\n\n" + A0,
        )
        assert problems_of(path) == [
            f"{path}: daemon.hooks[1] \"nowhere.policy:Hook\": no module 'nowhere.policy' on "
            "the daemon's Python path (install it, or add its directory to PYTHONPATH)",
            f'{path}: daemon.hooks[2] "tests.hooks_fixture:Missing": module '
            "'tests.hooks_fixture' has no attribute 'Missing'",
            f'{path}: daemon.hooks[3] "tests.hooks_fixture:Nothing": Nothing() gave a Nothing '
            "object with none of the hook methods pre_create, post_create, post_terminate",
            f'{path}: daemon.hooks[4] "no colon": not of the form "package.module:Factory" '
            "(an importable module, a colon, a callable in it)",
        ]

    def test_a_hook_problem_is_reported_with_the_others(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            '[daemon]\nhooks = ["nowhere.policy:Hook"]\n\n'
            + A0
            + agent("a1", "[30050, 30150]", '{ cpus = [1], memory = "1GiB" }'),
        )
        problems = problems_of(path)
        assert len(problems) == 2
        assert any("daemon.hooks[0]" in p for p in problems)
        assert any("overlaps agent" in p for p in problems)

    def test_hooks_must_be_a_list_of_strings(self, tmp_path: Path) -> None:
        path = write(tmp_path, '[daemon]\nhooks = "tests.hooks_fixture:Recorder"\n\n' + A0)
        assert problems_of(path) == [
            f"{path}: daemon: hooks: Input should be a valid list "
            "(got 'tests.hooks_fixture:Recorder')"
        ]

    def test_without_check_files_only_the_form_is_checked(self, tmp_path: Path) -> None:
        elsewhere = write(tmp_path, '[daemon]\nhooks = ["site_policy:Hook"]\n\n' + A0)
        assert load_config(elsewhere, HOST, check_files=False).hooks == ()
        malformed = write(tmp_path, '[daemon]\nhooks = ["site_policy"]\n\n' + A0, "bad.toml")
        with pytest.raises(ConfigError) as caught:
            load_config(malformed, HOST, check_files=False)
        assert caught.value.problems == [
            f'{malformed}: daemon.hooks[0] "site_policy": not of the form '
            '"package.module:Factory" (an importable module, a colon, a callable in it)'
        ]

    def test_config_check_reports_a_bad_hook_and_lists_good_ones(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(HostCapacity, "detect", classmethod(lambda cls: HOST))
        bad = write(tmp_path, '[daemon]\nhooks = ["nowhere.policy:Hook"]\n\n' + A0)
        result = CliRunner().invoke(main, ["config", "check", str(bad)])
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            f'error: {bad}: daemon.hooks[0] "nowhere.policy:Hook": no module '
            "'nowhere.policy' on the daemon's Python path (install it, or add its directory "
            "to PYTHONPATH)"
        ]
        good = write(
            tmp_path, '[daemon]\nhooks = ["tests.hooks_fixture:Recorder"]\n\n' + A0, "g.toml"
        )
        result = CliRunner().invoke(main, ["config", "check", str(good)])
        assert result.exit_code == 0, result.output
        assert "hooks: tests.hooks_fixture:Recorder" in result.stdout.splitlines()


class TestAuditLog:
    def test_by_default_under_the_state_dir(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, '[daemon]\nstate_dir = "st"\n\n' + A0), HOST)
        assert config.audit_log == tmp_path / "st" / "audit.log"
        assert (int(config.daemon.audit_max_bytes), config.daemon.audit_backups) == (64 * MIB, 5)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [('""', None), ('"logs/a.jsonl"', "logs/a.jsonl"), ('"/var/log/x.log"', "/var/log/x.log")],
        ids=["empty-is-off", "relative-beside-the-file", "absolute"],
    )
    def test_where_it_goes(self, tmp_path: Path, value: str, expected: str | None) -> None:
        config = load_config(write(tmp_path, f"[daemon]\naudit_log = {value}\n\n" + A0), HOST)
        assert config.audit_log == (None if expected is None else tmp_path / expected)

    def test_rotation_settings(self, tmp_path: Path) -> None:
        text = '[daemon]\naudit_max_bytes = "1KiB"\naudit_backups = 2\n\n' + A0
        config = load_config(write(tmp_path, text), HOST)
        assert (int(config.daemon.audit_max_bytes), config.daemon.audit_backups) == (1024, 2)

    def test_no_backups_is_refused_naming_the_key(self, tmp_path: Path) -> None:
        assert problems_of(write(tmp_path, "[daemon]\naudit_backups = 0\n\n" + A0)) == [
            f"{tmp_path / 'daemon.toml'}: daemon: audit_backups: Input should be greater than "
            "or equal to 1 (got 0)"
        ]
