"""Who is calling: the principal of a call, and how it travels with the call.

A server's authorization policy resolves every call to a `Principal` (from the
peer's certificate or from a bearer token) before the handler runs; `caller()`
gives it to the handler and `CallerLogFilter` puts it on every log line of the
call. Knows nothing of gRPC, certificates or token storage.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["certificate", "token", "insecure"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and what it may do."""

    kind: PrincipalKind
    role: str  # manager, daemon or user
    name: str  # certificate name or token name
    admin: bool = False
    scaling_groups: tuple[str, ...] = ()  # where a non-admin may create kernels
    token_id: str = ""
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        if self.kind == "token":
            return f"token:{self.name}"
        if self.kind == "insecure":
            return f"insecure:{self.name}"
        return f"{self.role}/{self.name}"

    def may_use_scaling_group(self, scaling_group: str) -> bool:
        """Admins use every scaling group; others the ones their token names."""
        return self.admin or scaling_group in self.scaling_groups


# A plaintext (insecure = true, loopback only) server cannot tell who calls.
INSECURE_CALLER = Principal(kind="insecure", role="user", name="loopback", admin=True)

CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "agenthost_caller", default=None
)


def caller() -> Principal | None:
    """The principal of the call being served (None outside a call)."""
    return CALLER.get()


class CallerLogFilter(logging.Filter):
    """Adds `caller` (' [token:alice]' or '') to every record, for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        principal = CALLER.get()
        record.caller = f" [{principal}]" if principal is not None else ""
        return True
