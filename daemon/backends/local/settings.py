"""The `local` table of an agent: the local backend's settings model, and nothing else.

Who kernels run as (`uid_range` or `run_as`), their process limit (`pids_max`)
and whether a cpuset cgroup confines them to their cores (`cpuset`). A range
holding an account of the host is refused by the daemon's config check for
local agents only (`accounts_in_range`), so a docker-only host is never asked. Every
daemon reads this model (a `local` table may sit in `[defaults]`), whatever the
agents' backends, so it imports only pydantic, `common/` and the standard-library
`uids` module it validates accounts with.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from common.config import StrictModel
from daemon.backends.local.uids import UID_MAX, accounts_in, resolve_account

# A block no real user has: the default range of every local agent of a daemon
# (its kernels share one pool, so agents never hand out the same uid).
DEFAULT_UID_RANGE = (2_000_000, 2_099_999)
DEFAULT_PIDS_MAX = 4096


class LocalSettings(StrictModel):
    """The `local` table of an agent whose backend is local."""

    uid_range: tuple[int, int] = Field(
        DEFAULT_UID_RANGE,
        description=(
            "inclusive uids [first, last] kernels run as, one of its own per kernel (gid "
            "the same number) when the daemon is root; no user or group of the host may "
            "have an id in it; give every daemon of a host its own range"
        ),
    )
    run_as: str | int | None = Field(
        None,
        description=(
            "run every kernel of the agent as this one account instead (a user name such "
            'as "nobody", or a uid): kernels of the agent then share it'
        ),
    )
    pids_max: int = Field(
        DEFAULT_PIDS_MAX,
        ge=0,
        description=(
            "most processes and threads one kernel may have (pids cgroup; else "
            "RLIMIT_NPROC of its own uid); 0: no limit"
        ),
    )
    cpuset: bool = Field(
        True,
        description=(
            "confine each kernel to its cores with a cpuset cgroup where one is writable, "
            "so it cannot widen its CPU affinity; false: affinity only"
        ),
    )

    @field_validator("uid_range", mode="before")
    @classmethod
    def _uid_range_shape(cls, value: Any) -> Any:
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(type(u) is int for u in value)
        ):
            return tuple(value)
        raise ValueError(f"must be two uids [first, last], e.g. [2000000, 2099999], not {value!r}")

    @field_validator("uid_range")
    @classmethod
    def _uid_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        first, last = value
        if first > last:
            raise ValueError(f"{first}-{last} is inverted: the first uid must not exceed the last")
        if first < 1 or last > UID_MAX:
            raise ValueError(f"{first}-{last} is outside 1-{UID_MAX}")
        return value

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            resolve_account(value)  # raises ValueError naming the account
        return value

    @model_validator(mode="after")
    def _run_as_outside_range(self) -> LocalSettings:
        if self.run_as is not None:
            uid, _ = resolve_account(self.run_as)
            first, last = self.uid_range
            if first <= uid <= last:
                raise ValueError(
                    f"run_as uid {uid} lies in uid_range {first}-{last}, whose uids go to "
                    "kernels of their own; choose an account outside it"
                )
        return self

    def accounts_in_range(self) -> str | None:
        """The host's users and groups inside uid_range, said in a few words; None if none."""
        taken = accounts_in(*self.uid_range)
        if not taken:
            return None
        return ", ".join(taken[:3]) + (f" and {len(taken) - 3} more" if len(taken) > 3 else "")

    def account(self) -> tuple[int, int] | None:
        """The uid and gid of run_as, or None when kernels get their own."""
        return None if self.run_as is None else resolve_account(self.run_as)
