"""Daemon configuration: load a TOML file, validate it, resolve each agent's slice.

The pydantic models below are the single description of every option (type,
default, description); each backend's own table is declared by that backend
(`daemon/backends/<name>/settings.py`, dependency-free because every daemon
reads them) and only referenced here. `load_config` turns a file into a
`DaemonConfig` holding a tuple of fully resolved `AgentConfig`s, or raises
`ConfigError` listing every problem, each naming the file, the agent and the key.
`set_scaling_group` writes one agent's scaling group back, keeping comments and
the other agents untouched. Nothing here starts anything.
"""

from __future__ import annotations

import copy
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomlkit
from pydantic import (
    BaseModel,
    ByteSize,
    Field,
    ValidationError,
    field_validator,
)

from common.addresses import HostPort
from common.atomic_file import write_atomically
from common.config import StrictModel, describe_errors, read_toml
from common.errors import ConfigError, NotFound
from common.formatting import format_bytes, plural
from common.ids import ID_PATTERN, ID_SYNTAX, AgentId, is_valid_id
from daemon.backends.docker.settings import DockerSettings
from daemon.backends.kubernetes.settings import KubernetesSettings
from daemon.backends.local.settings import LocalSettings
from daemon.resources import HostCapacity, ResourceSlice, format_cores

BACKENDS = ("local", "docker", "kubernetes")
ALLOCATION_MODES = ("manual", "auto-split", "shared")
PORT_MIN, PORT_MAX = 1024, 65535


class DaemonSection(StrictModel):
    """The `[daemon]` table: what the process as a whole does."""

    listen: HostPort = Field(
        "127.0.0.1:6001", description="host:port of the one gRPC port serving every agent"
    )
    manager: HostPort | None = Field(
        None, description="host:port of the manager to register with and heartbeat to"
    )
    node: str = Field(
        default_factory=socket.gethostname, description="node name reported to the manager"
    )
    state_dir: Path = Field(
        Path("./var/agenthost"),
        description="where agents keep checkpoints and kernel working directories",
    )
    allocation_mode: Literal["manual", "auto-split", "shared"] = Field(
        "manual",
        description=(
            "manual: each agent's resources as written, cores and devices exclusive; "
            "auto-split: the host divided evenly among agents that give no resources; "
            "shared: every agent sees the whole host"
        ),
    )
    default_agent: str | None = Field(
        None, description="agent used when a request leaves agent_id empty"
    )
    reconcile_interval: float = Field(
        5.0, gt=0, description="seconds between checks that kernels are still alive"
    )
    heartbeat_interval: float = Field(
        5.0, gt=0, description="seconds between heartbeats to the manager"
    )
    shutdown_grace: float = Field(
        10.0, ge=0, description="seconds in-flight calls get to finish on shutdown"
    )


class ResourcesConfig(StrictModel):
    """An agent's `resources`: its slice of the host."""

    cpus: list[int] | int | None = Field(
        None, description="explicit core ids ([0, 1]) or a number of cores (2)"
    )
    memory: ByteSize | None = Field(None, description='memory of the slice, e.g. "2GiB"')
    devices: dict[str, list[str]] = Field(
        default_factory=dict, description='accelerators by kind, e.g. { cuda = ["0"] }'
    )

    @field_validator("cpus", mode="before")
    @classmethod
    def _cpus_shape(cls, value: Any) -> Any:
        # Before pydantic's lax coercion, which would read "2" or true as a core
        # count and "0-1" as -1, and report a bad list once per union member.
        if value is None or type(value) is int:
            return value
        if isinstance(value, list) and all(type(c) is int for c in value):
            return value
        raise ValueError(
            f"must be a list of core ids ([0, 1]) or a number of cores (2), not {value!r}"
        )

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, value: list[int] | int | None) -> list[int] | int | None:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"a core count must be at least 1, not {value}")
        if isinstance(value, list):
            if any(c < 0 for c in value):
                raise ValueError(f"core ids must not be negative: {value}")
            if len(set(value)) != len(value):
                raise ValueError(f"cores {value} name a core twice")
        return value

    @field_validator("devices", mode="before")
    @classmethod
    def _device_ids_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: [str(i) for i in v] if isinstance(v, list) else v for k, v in value.items()}
        return value


class AgentEntry(StrictModel):
    """One `[[agents]]` entry (after `[defaults]` is merged under it)."""

    id: str = Field(..., pattern=ID_PATTERN, description="the agent_id; " + ID_SYNTAX)
    backend: Literal["local", "docker", "kubernetes"] = Field(
        "local", description="what a kernel is: local process group, docker container, pod"
    )
    scaling_group: str = Field("default", pattern=ID_PATTERN, description="scheduling pool")
    port_range: tuple[int, int] = Field(
        ..., description="inclusive host port range for the agent's kernels, e.g. [30000, 30099]"
    )
    resources: ResourcesConfig | None = Field(None, description="the agent's slice")
    kill_grace: float = Field(
        5.0, ge=0, description="seconds between SIGTERM and SIGKILL when destroying a kernel"
    )
    docker: DockerSettings = Field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)

    @field_validator("port_range", mode="before")
    @classmethod
    def _port_range_shape(cls, value: Any) -> Any:
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(type(p) is int for p in value)
        ):
            return value
        raise ValueError(f"must be two ports [first, last], e.g. [30000, 30099], not {value!r}")

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if start > end:
            raise ValueError(f"{start}-{end} is inverted: the first port must not exceed the last")
        if start < PORT_MIN or end > PORT_MAX:
            raise ValueError(f"{start}-{end} is outside {PORT_MIN}-{PORT_MAX}")
        return value


@dataclass(frozen=True)
class AgentConfig:
    """One agent, fully resolved: its slice is final."""

    id: AgentId
    backend: str
    scaling_group: str
    port_range: tuple[int, int]
    slice: ResourceSlice
    kill_grace: float
    docker: DockerSettings
    kubernetes: KubernetesSettings
    local: LocalSettings

    @property
    def backend_settings(self) -> LocalSettings | DockerSettings | KubernetesSettings:
        """The settings of the agent's own backend: all its backend is given."""
        settings: dict[str, LocalSettings | DockerSettings | KubernetesSettings] = {
            "local": self.local,
            "docker": self.docker,
            "kubernetes": self.kubernetes,
        }
        return settings[self.backend]


@dataclass(frozen=True)
class DaemonConfig:
    """The whole daemon, resolved once before anything starts."""

    path: Path
    daemon: DaemonSection
    agents: tuple[AgentConfig, ...]
    host: HostCapacity
    notes: tuple[str, ...] = ()

    @property
    def state_dir(self) -> Path:
        """The absolute state directory."""
        return self.daemon.state_dir.resolve()


# --------------------------------------------------------------------- loading


def load_config(path: str | Path, host: HostCapacity | None = None) -> DaemonConfig:
    """Read, validate and resolve path; raise ConfigError listing every problem."""
    path = Path(path)
    return parse_config(read_toml(path), path, host or HostCapacity.detect())


def parse_config(raw: Mapping[str, Any], path: Path, host: HostCapacity) -> DaemonConfig:
    """Validate an already parsed TOML document (see load_config)."""
    problems: list[str] = []
    where_file = str(path)

    for key in raw:
        if key not in ("daemon", "defaults", "agents", "agent"):
            hint = (
                " (this looks like a manager config: run it with agenthost manager --config)"
                if key == "manager"
                else ""
            )
            problems.append(
                f"{where_file}: unknown key {key!r}; valid top-level tables: "
                f"daemon, defaults, agents, agent{hint}"
            )

    daemon = DaemonSection()
    try:
        daemon = DaemonSection.model_validate(raw.get("daemon", {}))
    except ValidationError as exc:
        problems += describe_errors(exc, f"{where_file}: daemon", DAEMON_LITERALS)

    defaults: dict[str, Any] = {}
    if not isinstance(raw.get("defaults", {}), dict):
        problems.append(f"{where_file}: defaults: must be a table")
    else:
        defaults, found = _check_defaults(raw.get("defaults", {}), f"{where_file}: defaults")
        problems += found

    entries: list[tuple[str, Any]] = []
    if "agents" in raw and "agent" in raw:
        problems.append(
            f"{where_file}: give either [[agents]] entries or one legacy [agent] table, not both"
        )
    elif "agent" in raw:
        entries = [("agent", raw["agent"])]
    elif "agents" in raw:
        if not isinstance(raw["agents"], list):
            problems.append(f"{where_file}: agents: must be an array of tables ([[agents]])")
        else:
            entries = [(f"agents[{i}]", e) for i, e in enumerate(raw["agents"])]
    if not entries and not problems:
        problems.append(f"{where_file}: no agents: add at least one [[agents]] entry")

    valid: list[tuple[str, AgentEntry]] = []
    for label, entry in entries:
        if not isinstance(entry, dict):
            problems.append(f"{where_file}: {label}: must be a table")
            continue
        agent_id = entry.get("id")
        where = f"{where_file}: {label}" + (
            f' (id "{agent_id}")' if isinstance(agent_id, str) else ""
        )
        try:
            valid.append((where, AgentEntry.model_validate(_merge(defaults, entry))))
        except ValidationError as exc:
            problems += describe_errors(exc, where, DAEMON_LITERALS)

    problems += _check_agents(valid, daemon, host)
    if problems:
        raise ConfigError(problems)
    slices, notes = _resolve_slices(valid, daemon.allocation_mode, host)
    agents = tuple(
        AgentConfig(
            id=AgentId(e.id),
            backend=e.backend,
            scaling_group=e.scaling_group,
            port_range=e.port_range,
            slice=s,
            kill_grace=e.kill_grace,
            docker=e.docker,
            kubernetes=e.kubernetes,
            local=LocalSettings(),  # no `local` table yet (see daemon/backends/local/settings.py)
        )
        for (_, e), s in zip(valid, slices, strict=True)
    )
    return DaemonConfig(path=path, daemon=daemon, agents=agents, host=host, notes=tuple(notes))


def _check_defaults(defaults: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The keys of [defaults] agents may inherit, and the problems with the others.

    Each key is checked once here, so a bad default is reported once, under
    "defaults", instead of once per agent that inherits it.
    """
    usable: dict[str, Any] = {}
    problems: list[str] = []
    inheritable = [k for k in AgentEntry.model_fields if k not in ("id", "port_range")]
    for key, value in defaults.items():
        if key in ("id", "port_range"):
            problems.append(f"{where}: {key} cannot be inherited; set it per agent")
        elif key not in inheritable:
            problems.append(f"{where}: unknown key {key!r}; valid: {', '.join(inheritable)}")
        else:
            try:
                AgentEntry.model_validate(
                    {"id": "defaults", "port_range": (PORT_MIN, PORT_MIN), key: value}
                )
            except ValidationError as exc:
                problems += describe_errors(exc, where, DAEMON_LITERALS)
            else:
                usable[key] = value
    return usable, problems


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge override over base (tables merge, everything else replaces)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


DAEMON_LITERALS = {
    "backend": ("backend", BACKENDS),
    "allocation_mode": ("allocation_mode", ALLOCATION_MODES),
}


def _check_agents(
    entries: Sequence[tuple[str, AgentEntry]], daemon: DaemonSection, host: HostCapacity
) -> list[str]:
    """Rules that look across agents or at the host."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for where, e in entries:
        if e.id in seen:
            problems.append(f"{where}: id {e.id!r} is already used by {seen[e.id]}")
        else:
            seen[e.id] = where.split(": ", 1)[1]

    for i, (where, e) in enumerate(entries):
        for _, other in entries[:i]:
            a0, a1 = e.port_range
            b0, b1 = other.port_range
            if a0 <= b1 and b0 <= a1:
                problems.append(
                    f'{where}: port_range {a0}-{a1} overlaps agent "{other.id}" ({b0}-{b1})'
                )

    mode = daemon.allocation_mode
    core_owner: dict[int, str] = {}
    core_counts: dict[str, int] = {}
    device_owner: dict[tuple[str, str], str] = {}
    memory_of: dict[str, int] = {}
    for where, e in entries:
        r = e.resources
        if r is None:
            if mode == "manual":
                problems.append(
                    f'{where}: resources: required when allocation_mode is "manual" '
                    '(or set [daemon] allocation_mode = "auto-split")'
                )
            continue
        if mode == "manual" and (r.cpus is None or r.memory is None):
            missing = " and ".join(k for k in ("cpus", "memory") if getattr(r, k) is None)
            problems.append(
                f'{where}: resources: {missing} required when allocation_mode is "manual"'
            )
        if isinstance(r.cpus, list):
            unknown = sorted(set(r.cpus) - set(host.cores))
            if unknown:
                problems.append(
                    f"{where}: resources.cpus: cores {unknown} do not exist on this host "
                    f"(cores {format_cores(host.cores)})"
                )
            if mode != "shared":
                for core in r.cpus:
                    if core in unknown:
                        continue
                    if core in core_owner:
                        problems.append(
                            f"{where}: resources.cpus: core {core} is already given to "
                            f'agent "{core_owner[core]}"'
                        )
                    else:
                        core_owner[core] = e.id
        elif isinstance(r.cpus, int):
            if r.cpus > len(host.cores):
                problems.append(
                    f"{where}: resources.cpus: {r.cpus} cores requested, "
                    f"the host has {len(host.cores)}"
                )
            else:
                core_counts[e.id] = r.cpus
        for kind, ids in r.devices.items():
            have = host.devices.get(kind, ())
            for dev in ids:
                if dev not in have:
                    problems.append(
                        f"{where}: resources.devices.{kind}: device {dev!r} does not exist on "
                        f"this host ({kind}: {', '.join(have) or 'none'})"
                    )
                elif mode != "shared" and (kind, dev) in device_owner:
                    problems.append(
                        f"{where}: resources.devices.{kind}: device {dev!r} is already given to "
                        f'agent "{device_owner[(kind, dev)]}"'
                    )
                device_owner.setdefault((kind, dev), e.id)
        if r.memory is not None:
            if r.memory > host.memory:
                problems.append(
                    f"{where}: resources.memory: {format_bytes(r.memory)} exceeds the host's "
                    f"{format_bytes(host.memory)}"
                )
            elif r.memory == 0:
                problems.append(f"{where}: resources.memory: must be more than 0")
            else:
                memory_of[e.id] = r.memory

    # Totals only count what passed the per-agent checks, so one oversized agent
    # is reported once, at its own entry.
    file = where_file(entries)
    memory_total = sum(memory_of.values())
    if mode != "shared":
        cores_total = len(core_owner) + sum(core_counts.values())
        if core_counts and cores_total > len(host.cores):
            owned = Counter(core_owner.values())
            takes = ", ".join(
                f"{e.id} {owned[e.id] + core_counts.get(e.id, 0)}"
                for _, e in entries
                if owned[e.id] + core_counts.get(e.id, 0)
            )
            problems.append(
                f"{file}: resources.cpus: agents take {cores_total} cores in all ({takes}), "
                f"the host has {len(host.cores)}"
            )
        if memory_total > host.memory:
            takes = ", ".join(f"{a} {format_bytes(m)}" for a, m in memory_of.items())
            problems.append(
                f"{file}: resources.memory: agents' memory adds up to "
                f"{format_bytes(memory_total)} ({takes}), past the host's "
                f"{format_bytes(host.memory)}"
            )
        auto_memory = [
            e.id for _, e in entries if e.resources is None or e.resources.memory is None
        ]
        left = host.memory - memory_total
        if mode == "auto-split" and auto_memory and 0 <= left < len(auto_memory) << 20:
            problems.append(
                f"{file}: resources.memory: explicit slices take {format_bytes(memory_total)} "
                f"of the host's {format_bytes(host.memory)}, leaving less than 1MiB each for "
                f"agents {', '.join(auto_memory)}; lower the explicit memory or set theirs"
            )

    if daemon.default_agent is not None and entries and daemon.default_agent not in seen:
        problems.append(
            f"{file}: daemon.default_agent: no agent {daemon.default_agent!r}; "
            f"agents: {', '.join(seen)}"
        )
    return problems


def where_file(entries: Sequence[tuple[str, AgentEntry]]) -> str:
    """The file part of an entry's location."""
    return entries[0][0].split(": ", 1)[0] if entries else ""


def _resolve_slices(
    entries: Sequence[tuple[str, AgentEntry]], mode: str, host: HostCapacity
) -> tuple[list[ResourceSlice], list[str]]:
    """Give every agent its final slice according to the allocation mode."""
    notes: list[str] = []
    whole = ResourceSlice(cores=host.cores, memory=host.memory, devices=dict(host.devices))
    if mode == "shared":
        slices = []
        for _, e in entries:
            r = e.resources
            slices.append(
                ResourceSlice(
                    cores=tuple(r.cpus)
                    if r and isinstance(r.cpus, list)
                    else host.cores[: r.cpus]
                    if r and isinstance(r.cpus, int)
                    else host.cores,
                    memory=int(r.memory) if r and r.memory else host.memory,
                    devices={k: tuple(v) for k, v in r.devices.items()}
                    if r and r.devices
                    else dict(host.devices),
                )
            )
        return slices, notes

    claimed_cores = {
        c
        for _, e in entries
        if e.resources and isinstance(e.resources.cpus, list)
        for c in e.resources.cpus
    }
    free_cores = [c for c in host.cores if c not in claimed_cores]
    claimed_memory = sum(
        int(e.resources.memory) for _, e in entries if e.resources and e.resources.memory
    )
    claimed_devices = {
        (k, d)
        for _, e in entries
        if e.resources
        for k, ids in e.resources.devices.items()
        for d in ids
    }

    # Agents that give a core count take theirs from the free cores first, in file order.
    counted: dict[str, tuple[int, ...]] = {}
    for _, e in entries:
        if e.resources and isinstance(e.resources.cpus, int):
            counted[e.id] = tuple(free_cores[: e.resources.cpus])
            free_cores = free_cores[e.resources.cpus :]

    auto = [e.id for _, e in entries if e.resources is None or e.resources.cpus is None]
    auto_cores = _split(free_cores, len(auto))
    if auto and len(free_cores) < len(auto):
        pool = free_cores or list(host.cores)
        auto_cores = [(pool[i % len(pool)],) for i in range(len(auto))]
        if free_cores:
            notes.append(
                f"auto-split: {plural(len(auto), 'agent')} but "
                f"{plural(len(free_cores), 'unclaimed core')}; "
                f"agents {', '.join(auto)} share cores {format_cores(pool)} round-robin"
            )
        else:
            notes.append(
                f"auto-split: every core is claimed by an agent's resources; "
                f"{', '.join(auto)} run on cores {format_cores(pool)} round-robin, "
                "shared with the agents that claimed them"
            )
    auto_mem = [e.id for _, e in entries if e.resources is None or e.resources.memory is None]
    mem_share = (host.memory - claimed_memory) // max(len(auto_mem), 1) // (1 << 20) * (1 << 20)
    dev_free = {
        k: [d for d in ids if (k, d) not in claimed_devices] for k, ids in whole.devices.items()
    }
    # Manual mode gives an agent only the devices its entry names.
    auto_dev = [
        e.id
        for _, e in entries
        if mode == "auto-split" and (e.resources is None or not e.resources.devices)
    ]
    dev_split = {k: _split(ids, len(auto_dev)) for k, ids in dev_free.items()}

    slices = []
    for _, e in entries:
        r = e.resources
        if r is not None and isinstance(r.cpus, list):
            cores = tuple(r.cpus)
        elif e.id in counted:
            cores = counted[e.id]
        else:
            cores = auto_cores[auto.index(e.id)]
        memory = int(r.memory) if r is not None and r.memory is not None else mem_share
        if r is not None and r.devices:
            devices = {k: tuple(v) for k, v in r.devices.items()}
        elif e.id in auto_dev:
            devices = {
                k: parts[auto_dev.index(e.id)]
                for k, parts in dev_split.items()
                if parts[auto_dev.index(e.id)]
            }
        else:
            devices = {}
        slices.append(ResourceSlice(cores=cores, memory=memory, devices=devices))
    return slices, notes


def _split(items: Sequence[Any], n: int) -> list[tuple[Any, ...]]:
    """Divide items into n contiguous parts whose sizes differ by at most one."""
    if n <= 0:
        return []
    size, extra = divmod(len(items), n)
    parts, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        parts.append(tuple(items[start:end]))
        start = end
    return parts


# ------------------------------------------------------------------ write-back


def set_scaling_group(path: Path, agent_id: str, scaling_group: str) -> None:
    """Persist agent_id's scaling group into path, touching nothing else.

    Edits only that agent's entry (comments kept, via tomlkit), writes a temporary
    file, fsyncs it and renames it over the original, keeping a `.bak` copy.
    """
    if not is_valid_id(scaling_group):
        raise ConfigError([f"scaling_group {scaling_group!r} is not valid: {ID_SYNTAX}"])
    text = path.read_text()
    doc = tomlkit.parse(text)
    entry: Any = None
    if "agent" in doc and doc["agent"].get("id") == agent_id:
        entry = doc["agent"]
    for candidate in doc.get("agents", []):
        if candidate.get("id") == agent_id:
            entry = candidate
    if entry is None:
        raise NotFound(f"agent {agent_id!r} has no entry in {path}")
    entry["scaling_group"] = scaling_group
    path.with_name(path.name + ".bak").write_text(text)
    write_atomically(path, tomlkit.dumps(doc))


# ---------------------------------------------------------------------- sample


def render_sample() -> str:
    """An annotated sample TOML generated from the models' descriptions and defaults."""
    lines = [
        "# agenthost daemon configuration: every option, generated from its model.",
        "# Validate a file with: agenthost config check FILE",
        "",
        "[daemon]",
    ]
    lines += _sample_fields(DaemonSection, skip={"node"})
    lines += [
        '# node = "<hostname>"  # ' + (DaemonSection.model_fields["node"].description or ""),
        "",
        "[defaults]  # any agent key except id and port_range, inherited by every agent",
        'backend = "local"',
        "",
        "[[agents]]",
    ]
    lines += _sample_fields(AgentEntry, skip={"resources", "docker", "kubernetes"})
    lines += [
        'resources = { cpus = [0], memory = "2GiB" }  # '
        + (AgentEntry.model_fields["resources"].description or "")
    ]
    for key, model in (
        ("resources", ResourcesConfig),
        ("docker", DockerSettings),
        ("kubernetes", KubernetesSettings),
    ):
        lines += ["", f"# [agents.{key}] (or inline {key} = {{ ... }}):"]
        lines += [
            line if line.startswith("#") else "# " + line
            for line in _sample_fields(model, skip=set())
        ]
    return "\n".join(lines) + "\n"


def _sample_fields(model: type[BaseModel], skip: set[str]) -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        example: Any
        if info.is_required():
            example = {"id": "a0", "port_range": [30000, 30099]}.get(name, "")
        else:
            example = info.get_default(call_default_factory=True)
        if example is None:
            rendered = None
        elif isinstance(example, dict):
            table = tomlkit.inline_table()
            table.update(example)
            rendered = table.as_string()
        else:
            rendered = tomlkit.item(
                str(example) if isinstance(example, Path) else example
            ).as_string()
        doc = info.description or ""
        out.append(
            f"{name} = {rendered}  # {doc}" if rendered is not None else f"# {name} = ...  # {doc}"
        )
    return out
