"""Daemon configuration: load a TOML file, validate it, resolve each agent's slice.

The pydantic models below are the single description of every option (type,
default, description); each backend's own table is declared by that backend
(`daemon/backends/<name>/settings.py`, dependency-free because every daemon
reads them) and only referenced here. `load_config` turns a file into a
`DaemonConfig` holding a tuple of fully resolved `AgentConfig`s, or raises
`ConfigError` listing every problem, each naming the file, the agent and the key;
the lifecycle hooks `[daemon] hooks` names are imported and built here, so a bad one
is a config error like any other (`daemon/hooks.py`).
How the host is divided among agents, and the core, device and memory rules
across agents, are `daemon/slices.py`'s: this module hands it each entry's
`resources` as an `AgentClaim` and knows no allocation policy. `set_scaling_group`
writes one agent's scaling group back, keeping comments and the other agents
untouched. `render_sample` prints every option. Nothing here starts anything.
"""

from __future__ import annotations

import copy
import socket
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
    model_validator,
)

from common.addresses import HostPort, same_port_problem
from common.atomic_file import write_atomically
from common.config import StrictModel, describe_errors, read_toml
from common.credentials import (
    LoadedTls,
    TlsFiles,
    carries_daemon_host,
    daemon_host,
    resolve_tls,
)
from common.errors import ConfigError, InvalidArgument, NotFound
from common.ids import ID_PATTERN, ID_SYNTAX, AgentId, is_valid_id
from common.limits import MAX_BATCH, MAX_DURATION
from daemon.backends.docker.settings import DockerSettings
from daemon.backends.kubernetes.names import dns_subdomain_problem, label_value_problem
from daemon.backends.kubernetes.settings import KubernetesSettings
from daemon.backends.local.settings import LocalSettings
from daemon.hooks import HookError, LoadedHook, load_hook, parse_entry
from daemon.resources import HostCapacity, ResourceSlice
from daemon.slices import (
    ALLOCATION_MODES,
    AgentClaim,
    AllocationMode,
    SliceRequest,
    check_claims,
    divide_host,
)
from daemon.state_dir import default_kernels_dir

BACKENDS = ("local", "docker", "kubernetes")
AUDIT_FILE = "audit.log"  # under state_dir, unless [daemon] audit_log says otherwise
PORT_MIN, PORT_MAX = 1024, 65535
# In an agent's id (and default_agent): the daemon's node, so that one file run on
# every node of a cluster (a DaemonSet's ConfigMap) gives each node agents of its own.
NODE_PLACEHOLDER = "{node}"


def expand_node(agent_id: str, node: str) -> str:
    """agent_id with {node} replaced by the daemon's node name."""
    return agent_id.replace(NODE_PLACEHOLDER, node)


class DaemonSection(StrictModel):
    """The `[daemon]` table: what the process as a whole does."""

    listen: HostPort = Field(
        "127.0.0.1:6001", description="host:port of the one gRPC port serving every agent"
    )
    manager: HostPort | None = Field(
        None, description="host:port of the manager to register with and heartbeat to"
    )
    metrics_listen: HostPort | None = Field(
        None,
        description=(
            "host:port of the Prometheus metrics endpoint (GET /metrics, plain HTTP, no "
            "authentication: bind it where only your Prometheus reaches); unset: none"
        ),
    )
    node: str = Field(
        default_factory=socket.gethostname, description="node name reported to the manager"
    )
    state_dir: Path = Field(
        Path("./var/agenthost"),
        description=(
            "where agents keep their checkpoints (relative: to this file's directory; mode "
            "0700: the daemon's user only); one daemon per state_dir"
        ),
    )
    kernels_dir: Path | None = Field(
        None,
        description=(
            "where kernels' working directories go, <kernels_dir>/<agent_id>/<kernel_id> "
            "(relative: to this file's directory; made mode 0711; each kernel's own is 0700 "
            "and belongs to its uid); "
            "default: <state_dir>-kernels beside state_dir"
        ),
    )
    allocation_mode: AllocationMode = Field(
        "manual",
        description=(
            "manual: each agent's resources as written, cores and devices exclusive; "
            "auto-split: the host divided evenly among agents that give no resources; "
            "shared: every agent sees the whole host"
        ),
    )
    default_agent: str | None = Field(
        None, description="agent used when a request leaves agent_id empty ({node} as in ids)"
    )
    reconcile_interval: float = Field(
        5.0, gt=0, description="seconds between checks that kernels are still alive"
    )
    heartbeat_interval: float = Field(
        5.0, gt=0, description="seconds between heartbeats to the manager"
    )
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="seconds in-flight calls, and then running post hooks, get to finish on "
        "shutdown",
    )
    kernel_retention: float = Field(
        3600.0,
        ge=0,
        le=MAX_DURATION,
        description=(
            "seconds a kernel that ended by itself is kept (record, output) before it is "
            "forgotten; 0: until destroyed"
        ),
    )
    max_batch: int = Field(
        MAX_BATCH,
        ge=1,
        le=4096,
        description="most kernel specs one CreateKernels call may carry",
    )
    hooks: list[str] = Field(
        default_factory=list,
        description=(
            'lifecycle hooks, each "package.module:Factory": the factory is called with no '
            "arguments at load and gives an object with any of pre_create (return None to "
            "allow a kernel or a reason to refuse it), post_create, post_terminate; the "
            "module must be importable by the daemon's Python"
        ),
    )
    audit_log: str | None = Field(
        None,
        description=(
            "the audit trail, JSON lines (mode 0600): one line per call (caller, method, "
            "agent_id, kernel_id, status code, duration), refused ones included, and one per "
            "kernel spawned or terminated; never env values, stdin or tokens. Relative: to "
            'this file\'s directory; "": off; default: <state_dir>/audit.log'
        ),
    )
    audit_max_bytes: ByteSize = Field(
        ByteSize(64 << 20),
        ge=0,
        description=(
            'size at which the audit log is rotated, e.g. "64MiB" (audit.log.1 is the newest '
            "rotated part); 0: never rotated"
        ),
    )
    audit_backups: int = Field(
        5,
        ge=1,
        le=1000,
        description="rotated parts of the audit log kept (audit.log.1 ... audit.log.N)",
    )
    insecure: bool = Field(
        False,
        description=(
            "serve plaintext without [daemon.tls], and talk plaintext to the manager; "
            "allowed only on a loopback listen address, where any local user can call it"
        ),
    )
    tls: TlsFiles | None = Field(
        None,
        description=(
            "the cluster CA and this daemon's certificate (agenthost certs issue --role "
            "daemon --name NODE --san ADDRESS); paths relative to this file. The daemon "
            "requires client certificates (the manager's, or an admin user's) and its "
            "identity at the manager is the certificate's name"
        ),
    )

    @model_validator(mode="after")
    def _metrics_port_of_its_own(self) -> DaemonSection:
        if self.metrics_listen is not None:
            problem = same_port_problem(
                "metrics_listen", self.metrics_listen, {"listen": self.listen}
            )
            if problem is not None:
                raise ValueError(problem)
        return self


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

    id: str = Field(
        ...,
        pattern=ID_PATTERN,
        description=(
            "the agent_id; " + ID_SYNTAX + "; {node} in it stands for the daemon's node "
            '(e.g. "gpu0-{node}": one file for every node, each with agents of its own)'
        ),
    )
    backend: Literal["local", "docker", "kubernetes"] = Field(
        "local", description="what a kernel is: local process group, docker container, pod"
    )
    scaling_group: str = Field("default", pattern=ID_PATTERN, description="scheduling pool")
    port_range: tuple[int, int] = Field(
        ..., description="inclusive host port range for the agent's kernels, e.g. [30000, 30099]"
    )
    resources: ResourcesConfig | None = Field(None, description="the agent's slice")
    kill_grace: float = Field(
        5.0,
        ge=0,
        le=3600,
        description="seconds between SIGTERM and SIGKILL when destroying a kernel",
    )
    log_max_bytes: ByteSize = Field(
        ByteSize(64 << 20),
        description=(
            'output kept per kernel, e.g. "64MiB": past it the log is rotated (the older '
            "half kept as kernel.log.1); 0: no cap"
        ),
    )
    local: LocalSettings = Field(default_factory=LocalSettings)
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
    kernels_dir: Path  # where this agent's kernels' working directories go
    log_max_bytes: int = 64 << 20

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
    tls: LoadedTls | None = None  # None: plaintext (insecure = true)
    hooks: tuple[LoadedHook, ...] = ()  # loaded from [daemon] hooks, in order

    @property
    def state_dir(self) -> Path:
        """The absolute state directory (a relative one is read beside the config file)."""
        return beside(self.path, self.daemon.state_dir)

    @property
    def kernels_dir(self) -> Path:
        """The absolute directory of every agent's kernels' working directories."""
        return kernels_root(self.path, self.daemon)

    @property
    def audit_log(self) -> Path | None:
        """The absolute path of the audit log; None when it is off (`audit_log = ""`)."""
        return audit_log_path(self.path, self.daemon)


def beside(config_path: Path, path: Path) -> Path:
    """path made absolute: a relative one is read beside the config file."""
    return (config_path.parent / path.expanduser()).resolve()


def audit_log_path(config_path: Path, daemon: DaemonSection) -> Path | None:
    """The absolute audit log of the daemon configured at config_path (None: off): as
    given (relative: beside the config file), else audit.log in the state directory."""
    if daemon.audit_log is None:
        return beside(config_path, daemon.state_dir) / AUDIT_FILE
    if not daemon.audit_log:
        return None
    return beside(config_path, Path(daemon.audit_log))


def kernels_root(config_path: Path, daemon: DaemonSection) -> Path:
    """The absolute kernels_dir: as given (relative: beside the config file), else
    beside the state directory."""
    if daemon.kernels_dir is not None:
        return beside(config_path, daemon.kernels_dir)
    return default_kernels_dir(beside(config_path, daemon.state_dir))


# --------------------------------------------------------------------- loading


def load_config(
    path: str | Path,
    host: HostCapacity | None = None,
    node: str | None = None,
    *,
    check_files: bool = True,
) -> DaemonConfig:
    """Read, validate and resolve path; raise ConfigError listing every problem.

    node, when given, replaces `[daemon] node` (agenthost daemon --node: a
    DaemonSet gives each pod its node's name). With check_files False the file
    describes a daemon elsewhere (deploy render): the files it names (the
    `[daemon.tls]` material, kubeconfigs) are neither read nor required here, so
    the config's `tls` is None whatever the table says; likewise the hooks are
    checked for their form only, not imported, and `hooks` is empty.
    """
    path = Path(path)
    raw = read_toml(path)
    if node is not None and isinstance(raw.get("daemon", {}), dict):
        raw["daemon"] = {**raw.get("daemon", {}), "node": node}
    return parse_config(raw, path, host or HostCapacity.detect(), check_files=check_files)


def parse_config(
    raw: Mapping[str, Any], path: Path, host: HostCapacity, *, check_files: bool = True
) -> DaemonConfig:
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
    daemon_valid = False
    try:
        daemon = DaemonSection.model_validate(raw.get("daemon", {}))
        daemon_valid = True
    except ValidationError as exc:
        problems += describe_errors(exc, f"{where_file}: daemon", DAEMON_LITERALS)
    if daemon.default_agent is not None:
        daemon = daemon.model_copy(
            update={"default_agent": expand_node(daemon.default_agent, daemon.node)}
        )

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
    per_node = [e["id"] for _, e in entries if isinstance(e, dict) and names_node(e.get("id"))]
    for label, entry in entries:
        if not isinstance(entry, dict):
            problems.append(f"{where_file}: {label}: must be a table")
            continue
        agent_id = entry.get("id")
        if isinstance(agent_id, str) and names_node(agent_id):
            expanded = expand_node(agent_id, daemon.node)
            if not is_valid_id(expanded):
                problems.append(
                    f'{where_file}: {label} (id "{agent_id}"): id: on node {daemon.node!r} it '
                    f"is {expanded!r}, which is not a valid id: {ID_SYNTAX}; shorten the id "
                    "around {node}, or set [daemon] node (agenthost daemon --node)"
                )
                continue
            entry = {**entry, "id": expanded}
            agent_id = expanded
        where = f"{where_file}: {label}" + (
            f' (id "{agent_id}")' if isinstance(agent_id, str) else ""
        )
        try:
            valid.append((where, AgentEntry.model_validate(_merge(defaults, entry))))
        except ValidationError as exc:
            problems += describe_errors(exc, where, DAEMON_LITERALS)

    problems += _check_agents(valid, daemon, host)
    kubernetes: list[KubernetesSettings] = []
    for where, e in valid:
        settings, found = _resolve_kubernetes(e, daemon, path.parent, where, check_files)
        kubernetes.append(settings)
        problems += found
    tls: LoadedTls | None = None
    # How to trust is unknown while the table itself is wrong; without check_files a
    # tls table is taken by its paths, its files being elsewhere.
    if daemon_valid and daemon.tls is not None and daemon.insecure and not check_files:
        problems.append(
            f"{where_file}: daemon: give either [daemon.tls] or insecure = true, not both"
        )
    elif daemon_valid and (check_files or daemon.tls is None):
        try:
            tls = resolve_tls(
                daemon.tls,
                daemon.insecure,
                daemon.listen,
                path.parent,
                role="daemon",
                table="daemon",
            )
        except InvalidArgument as exc:
            problems.append(f"{where_file}: {exc}")
    if tls is not None and daemon.manager and not carries_daemon_host(tls.cert):
        problems.append(
            f"{where_file}: daemon.tls.cert: {daemon.tls.cert if daemon.tls else ''} does not "
            f"name {daemon_host(tls.identity.name)}, the name the manager checks a daemon's "
            "certificate against (it was issued by an older agenthost): issue it again with "
            f"agenthost certs issue --role daemon --name {tls.identity.name}"
        )
    hooks: list[LoadedHook] = []
    if daemon_valid:
        hooks, found = _load_hooks(daemon.hooks, f"{where_file}: daemon.hooks", check_files)
        problems += found
    if problems:
        raise ConfigError(problems)
    division = divide_host(_claims(valid), daemon.allocation_mode, host)
    kernels_dir = kernels_root(path, daemon)
    agents = tuple(
        AgentConfig(
            id=AgentId(e.id),
            backend=e.backend,
            scaling_group=e.scaling_group,
            port_range=e.port_range,
            slice=s,
            kill_grace=e.kill_grace,
            log_max_bytes=int(e.log_max_bytes),
            docker=e.docker,
            kubernetes=k,
            local=e.local,
            kernels_dir=kernels_dir / e.id,
        )
        for (_, e), s, k in zip(valid, division.slices, kubernetes, strict=True)
    )
    notes = division.notes
    if per_node:
        notes += (
            f"ids with {NODE_PLACEHOLDER} ({', '.join(per_node)}) are shown for node "
            f"{daemon.node!r}; on every other node they carry its own name",
        )
    return DaemonConfig(
        path=path,
        daemon=daemon,
        agents=agents,
        host=host,
        notes=notes,
        tls=tls,
        hooks=tuple(hooks),
    )


def names_node(agent_id: Any) -> bool:
    """Whether an id as written carries {node}."""
    return isinstance(agent_id, str) and NODE_PLACEHOLDER in agent_id


def _load_hooks(
    entries: Sequence[str], where: str, check_files: bool
) -> tuple[list[LoadedHook], list[str]]:
    """Every [daemon] hooks entry loaded (their factories called), and the problems.

    Without check_files the hooks run elsewhere: only their form is checked.
    """
    hooks: list[LoadedHook] = []
    problems: list[str] = []
    for i, entry in enumerate(entries):
        try:
            if check_files:
                hooks.append(load_hook(entry))
            else:
                parse_entry(entry)
        except HookError as exc:
            problems.append(f'{where}[{i}] "{entry}": {exc}')
    return hooks, problems


def _resolve_kubernetes(
    entry: AgentEntry, daemon: DaemonSection, base: Path, where: str, check_files: bool
) -> tuple[KubernetesSettings, list[str]]:
    """The agent's kubernetes table with what depends on the file around it resolved.

    A relative kubeconfig is read beside the config file; node_name defaults to
    the daemon's node (lowercased, as the kubelet names a node after its host)
    unless a node selector places the pods. For a kubernetes
    agent the kubeconfig must exist and the agent id must be a label value (its
    pods are labelled with it).
    """
    settings = entry.kubernetes
    update: dict[str, Any] = {}
    if settings.kubeconfig is not None:
        update["kubeconfig"] = (base / settings.kubeconfig.expanduser()).resolve()
    if settings.node_name is None and not settings.node_selector:
        update["node_name"] = daemon.node.lower()  # as the kubelet names its node
    resolved = settings.model_copy(update=update)
    problems: list[str] = []
    if entry.backend != "kubernetes":
        return resolved, problems
    if check_files and resolved.kubeconfig is not None and not resolved.kubeconfig.is_file():
        problems.append(
            f"{where}: kubernetes.kubeconfig: no file {resolved.kubeconfig}; give the path of "
            "a kubeconfig (relative: to this file), or leave it out to use the in-cluster "
            "service account"
        )
    if resolved.node_name is not None and (problem := dns_subdomain_problem(resolved.node_name)):
        problems.append(
            f"{where}: kubernetes.node_name: the daemon's node {problem}; set "
            "kubernetes.node_name, or [daemon] node, to the node's Kubernetes name"
        )
    if (problem := label_value_problem(entry.id)) is not None:
        problems.append(f"{where}: id: a kubernetes agent's id labels its pods, and {problem}")
    return resolved, problems


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
    """Rules that look across agents or at the host (the resource ones are in slices)."""
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

    local = [(where, e) for where, e in entries if e.backend == "local"]
    for where, e in local:
        taken = e.local.accounts_in_range()
        if taken is not None:
            first, last = e.local.uid_range
            problems.append(
                f"{where}: local.uid_range {first}-{last} holds {taken} of this host; "
                "choose a range no account uses"
            )
        account = e.local.account()
        for _, other in local:
            first, last = other.local.uid_range
            if account is not None and other.id != e.id and first <= account[0] <= last:
                problems.append(
                    f'{where}: local.run_as uid {account[0]} lies in agent "{other.id}"\'s '
                    f"local.uid_range {first}-{last}, whose uids go to kernels of their own; "
                    "choose an account outside it"
                )

    file = where_file(entries)
    problems += check_claims(_claims(entries), daemon.allocation_mode, host, file)

    if daemon.default_agent is not None and entries and daemon.default_agent not in seen:
        problems.append(
            f"{file}: daemon.default_agent: no agent {daemon.default_agent!r}; "
            f"agents: {', '.join(seen)}"
        )
    return problems


def where_file(entries: Sequence[tuple[str, AgentEntry]]) -> str:
    """The file part of an entry's location."""
    return entries[0][0].split(": ", 1)[0] if entries else ""


def _claims(entries: Sequence[tuple[str, AgentEntry]]) -> list[AgentClaim]:
    """What each validated entry asks of the host, in the form daemon/slices.py divides."""
    return [AgentClaim(e.id, where, _slice_request(e.resources)) for where, e in entries]


def _slice_request(r: ResourcesConfig | None) -> SliceRequest | None:
    if r is None:
        return None
    return SliceRequest(
        cpus=tuple(r.cpus) if isinstance(r.cpus, list) else r.cpus,
        memory=None if r.memory is None else int(r.memory),
        devices={kind: tuple(ids) for kind, ids in r.devices.items()},
    )


# ------------------------------------------------------------------ write-back


def set_scaling_group(path: Path, agent_id: str, scaling_group: str, node: str = "") -> None:
    """Persist agent_id's scaling group into path, touching nothing else.

    Edits only that agent's entry (comments kept, via tomlkit), writes a temporary
    file, fsyncs it and renames it over the original, keeping a `.bak` copy. An
    entry whose id carries {node} is found by its id on node, and is every node's:
    the change reaches every node that runs this file.
    """
    if not is_valid_id(scaling_group):
        raise ConfigError([f"scaling_group {scaling_group!r} is not valid: {ID_SYNTAX}"])
    text = path.read_text()
    doc = tomlkit.parse(text)

    def is_it(candidate: Any) -> bool:
        entry_id = candidate.get("id")
        return isinstance(entry_id, str) and expand_node(entry_id, node) == agent_id

    entry: Any = None
    if "agent" in doc and is_it(doc["agent"]):
        entry = doc["agent"]
    for candidate in doc.get("agents", []):
        if is_it(candidate):
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
    lines += _sample_fields(DaemonSection, skip={"node", "tls", "insecure"})
    lines += [
        "insecure = true  # (default false) "
        + (DaemonSection.model_fields["insecure"].description or "")
        + "; on a shared network remove it and give [daemon.tls]",
        '# node = "<hostname>"  # ' + (DaemonSection.model_fields["node"].description or ""),
        "",
        "# [daemon.tls]  # " + (DaemonSection.model_fields["tls"].description or ""),
        '# ca = "pki/ca.crt"  # ' + (TlsFiles.model_fields["ca"].description or ""),
        '# cert = "pki/daemon-node1.crt"  # ' + (TlsFiles.model_fields["cert"].description or ""),
        '# key = "pki/daemon-node1.key"  # ' + (TlsFiles.model_fields["key"].description or ""),
        "",
        "[defaults]  # any agent key except id and port_range, inherited by every agent",
        'backend = "local"',
        "",
        "[[agents]]",
    ]
    lines += _sample_fields(AgentEntry, skip={"resources", "local", "docker", "kubernetes"})
    lines += [
        'resources = { cpus = [0], memory = "2GiB" }  # '
        + (AgentEntry.model_fields["resources"].description or "")
    ]
    for key, model in (
        ("resources", ResourcesConfig),
        ("local", LocalSettings),
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
