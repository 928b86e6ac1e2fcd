"""Manager configuration: the `[manager]` table of a TOML file, validated once.

The pydantic model is the single description of every option (type, default,
meaning); `configs/manager.toml` is checked against it by the tests.
`load_manager_config` returns a `ManagerConfig` or raises `ConfigError` naming the
file and the key. Nothing here starts anything or knows gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, model_validator

from common.addresses import HostPort, same_port_problem
from common.config import describe_errors, read_toml
from common.credentials import LoadedTls, TlsFiles, resolve_tls
from common.errors import ConfigError, InvalidArgument
from common.home import token_file
from common.ids import ID_PATTERN
from common.limits import MAX_DURATION

Policy = Literal["spread", "pack"]
POLICIES: tuple[str, ...] = get_args(Policy)
AUDIT_FILE = "audit.log"  # beside db_path, unless [manager] audit_log says otherwise


class ManagerSection(BaseModel):
    """The `[manager]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: HostPort = Field(
        "127.0.0.1:6000",
        description="host:port of the user API (TLS + bearer tokens; with insecure, daemons too)",
    )
    daemon_listen: HostPort | None = Field(
        None,
        description=(
            "host:port daemons register and heartbeat on, with their certificates (mutual "
            "TLS); default: the listen host, port + 100 (6100 for 6000)"
        ),
    )
    metrics_listen: HostPort | None = Field(
        None,
        description=(
            "host:port of the Prometheus metrics endpoint (GET /metrics, plain HTTP, no "
            "authentication: bind it where only your Prometheus reaches); unset: none"
        ),
    )
    advertise_address: HostPort | None = Field(
        None,
        description=(
            "host:port of the user API as kernels created with delegate reach it (their "
            "AGENTHOST_MANAGER); default: the listen address as bound, a wildcard host "
            "as 127.0.0.1 (set it when kernels run on other hosts or in containers)"
        ),
    )
    insecure: bool = Field(
        False,
        description=(
            "serve plaintext on listen, without [manager.tls]; allowed only on a loopback "
            "address (users still need tokens; daemons are taken at their word)"
        ),
    )
    tls: TlsFiles | None = Field(
        None,
        description="the cluster CA and the manager's certificate (agenthost certs issue "
        "--role manager); paths relative to this file",
    )
    admin_token_file: Path | None = Field(
        None,
        description=(
            "where the bootstrap admin token is kept: made on first start if missing, and "
            "accepted as an admin token; default: $AGENTHOST_HOME/token (~/.agenthost/token), "
            "where client commands look for a token"
        ),
    )
    db_path: Path = Field(
        Path("./var/agenthost-manager/manager.db"),
        description=(
            "SQLite file of agents, kernels and token hashes (relative: to this file's directory)"
        ),
    )
    audit_log: str | None = Field(
        None,
        description=(
            "the audit trail, JSON lines (mode 0600): one line per call (caller, method, "
            "agent_id, kernel_id, status code, duration), refused ones included, and one per "
            "kernel spawned or terminated; never env values, stdin or tokens. Relative: to "
            'this file\'s directory; "": off; default: audit.log beside db_path'
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
    scheduling_policy: Policy = Field(
        "spread",
        description=(
            "spread: the least loaded fitting agent (kernels spread over agents); "
            "pack: the most loaded fitting agent (agents fill one after another)"
        ),
    )
    default_scaling_group: str = Field(
        "default",
        pattern=ID_PATTERN,
        description="scaling group of a CreateKernel that names none and pins no agent",
    )
    missed_heartbeats: int = Field(
        3, ge=1, description="heartbeat intervals a daemon may miss before its agents are LOST"
    )
    heartbeat_timeout: float | None = Field(
        None,
        gt=0,
        description="seconds without a heartbeat before LOST; overrides missed_heartbeats",
    )
    liveness_check_interval: float = Field(
        0.25, gt=0, description="seconds between checks for missed heartbeats"
    )
    call_timeout: float = Field(
        10.0, gt=0, description="deadline in seconds of every call to a daemon"
    )
    create_timeout: float = Field(
        120.0, gt=0, description="deadline in seconds of a CreateKernels call to a daemon"
    )
    execute_timeout: float = Field(
        3600.0,
        gt=0,
        description="deadline (s) of an Execute with no timeout (else its timeout + call_timeout)",
    )
    retries: int = Field(
        2, ge=0, description="extra attempts of an idempotent call when a daemon is UNAVAILABLE"
    )
    kernel_retention: float = Field(
        3600.0,
        ge=0,
        le=MAX_DURATION,
        description=(
            "seconds a terminated kernel stays listed before the manager forgets it "
            "(agenthost kernel prune: now); 0: until destroyed"
        ),
    )
    shutdown_grace: float = Field(
        5.0, ge=0, description="seconds in-flight calls get to finish on shutdown"
    )

    @model_validator(mode="after")
    def _metrics_port_of_its_own(self) -> ManagerSection:
        if self.metrics_listen is not None:
            others = {"listen": self.listen, "daemon_listen": self.daemon_listen}
            problem = same_port_problem("metrics_listen", self.metrics_listen, others)
            if problem is not None:
                raise ValueError(problem)
        return self


@dataclass(frozen=True)
class ManagerConfig:
    """The manager's whole configuration, resolved once before anything starts."""

    manager: ManagerSection
    path: Path | None = None  # None: built in code (tests, `agenthost up` without a file)
    tls: LoadedTls | None = None  # None: plaintext (insecure = true)

    @property
    def db_path(self) -> Path:
        """The absolute path of the SQLite file (a relative one is read beside the file)."""
        return (self._base / self.manager.db_path.expanduser()).resolve()

    @property
    def audit_log(self) -> Path | None:
        """The absolute path of the audit log; None when it is off (`audit_log = ""`)."""
        if self.manager.audit_log is None:
            return self.db_path.parent / AUDIT_FILE
        if not self.manager.audit_log:
            return None
        return (self._base / Path(self.manager.audit_log).expanduser()).resolve()

    @property
    def _base(self) -> Path:
        """Where relative paths start: the config file's directory (else the working one)."""
        return self.path.parent if self.path is not None else Path.cwd()

    def daemon_listen_for(self, listen: str) -> str | None:
        """Where daemons connect with their certificates when users are served on listen
        (None: a plaintext manager serves both on listen)."""
        if self.tls is None:
            return None
        if self.manager.daemon_listen:
            return self.manager.daemon_listen
        host, _, port = listen.rpartition(":")
        number = int(port) + 100 if int(port) else 0
        return f"{host}:{number if number <= 65535 else 0}"

    @property
    def admin_token_file(self) -> Path:
        """The bootstrap admin token's file."""
        return (self.manager.admin_token_file or token_file()).expanduser().resolve()


def load_manager_config(path: str | Path) -> ManagerConfig:
    """Read and validate path; raise ConfigError naming the file and every bad key."""
    path = Path(path)
    return parse_manager_config(read_toml(path), path)


def parse_manager_config(raw: dict[str, Any], path: Path) -> ManagerConfig:
    """Validate an already parsed TOML document (see load_manager_config)."""
    problems = [
        f"{path}: unknown key {key!r}; valid top-level tables: manager"
        for key in raw
        if key != "manager"
    ]
    section = ManagerSection()
    try:
        section = ManagerSection.model_validate(raw.get("manager", {}))
    except ValidationError as exc:
        problems += describe_errors(
            exc,
            f"{path}: manager",
            literals={"scheduling_policy": ("policy", POLICIES)},
            valid_keys=list(ManagerSection.model_fields),
        )
    tls: LoadedTls | None = None
    if not problems:
        try:
            tls = resolve_trust(section, path.parent)
        except InvalidArgument as exc:
            problems.append(f"{path}: {exc}")
    if problems:
        raise ConfigError(problems)
    return ManagerConfig(manager=section, path=path, tls=tls)


def resolve_trust(section: ManagerSection, base: Path) -> LoadedTls | None:
    """The manager's TLS material, or None for an allowed plaintext manager."""
    return resolve_tls(
        section.tls, section.insecure, section.listen, base, role="manager", table="manager"
    )
