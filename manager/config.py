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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.addresses import HostPort
from common.config import describe_errors, read_toml
from common.errors import ConfigError
from common.ids import ID_PATTERN

Policy = Literal["spread", "pack"]
POLICIES: tuple[str, ...] = get_args(Policy)


class ManagerSection(BaseModel):
    """The `[manager]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: HostPort = Field(
        "127.0.0.1:6000", description="host:port the manager serves users and daemons on"
    )
    db_path: Path = Field(
        Path("./var/agenthost-manager/manager.db"),
        description="SQLite file of agents and kernels (relative: to the current directory)",
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
    shutdown_grace: float = Field(
        5.0, ge=0, description="seconds in-flight calls get to finish on shutdown"
    )


@dataclass(frozen=True)
class ManagerConfig:
    """The manager's whole configuration, resolved once before anything starts."""

    manager: ManagerSection
    path: Path | None = None  # None: built in code (tests, `agenthost up` without a file)

    @property
    def db_path(self) -> Path:
        """The absolute path of the SQLite file."""
        return self.manager.db_path.resolve()


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
    if problems:
        raise ConfigError(problems)
    return ManagerConfig(manager=section, path=path)
