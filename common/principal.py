"""Who is calling: the principal of a call, and how it travels with the call.

A server's authorization policy resolves every call to a `Principal` (from the
peer's certificate or from a bearer token) before the handler runs; `caller()`
gives it to the handler and `CallerLogFilter` puts it on every log line of the
call. Knows nothing of gRPC, certificates or token storage.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass
from typing import Any, Literal

PrincipalKind = Literal["certificate", "token", "insecure"]


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and what it may do."""

    kind: PrincipalKind
    role: str  # manager, daemon or user
    name: str  # certificate name or token name
    admin: bool = False
    scaling_groups: tuple[str, ...] = ()  # where a non-admin may create (a viewer: look)
    token_id: str = ""
    viewer: bool = False  # read-only: sees kernels of its scaling groups (all if none)
    parent_kernel_id: str = ""  # a kernel's delegated token: the kernel that holds it

    @property
    def delegated(self) -> bool:
        """A kernel's delegated token (it acts only on kernels it created, within limits)."""
        return bool(self.parent_kernel_id)

    def __str__(self) -> str:
        if self.kind == "token":
            return f"token:{self.name}"
        if self.kind == "insecure":
            return f"insecure:{self.name}"
        return f"{self.role}/{self.name}"

    def may_use_scaling_group(self, scaling_group: str) -> bool:
        """Admins use every scaling group; others the ones their token names."""
        return self.admin or scaling_group in self.scaling_groups

    def may_view_scaling_group(self, scaling_group: str) -> bool:
        """Whether a viewer sees kernels of scaling_group (every group if it names none)."""
        return self.viewer and (not self.scaling_groups or scaling_group in self.scaling_groups)


# A plaintext (insecure = true, loopback only) server cannot tell who calls.
INSECURE_CALLER = Principal(kind="insecure", role="user", name="loopback", admin=True)

CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "agenthost_caller", default=None
)


class CallerNote:
    """Whom authorization resolved a call to, or refused: kept for the hooks around it.

    The audit hook wraps authorization (so that it sees refusals too) and writes its
    line after authorization has unbound the caller; it puts a note in
    `CALLER_NOTE` before the call and reads it after.
    """

    __slots__ = ("caller",)

    def __init__(self) -> None:
        self.caller = ""  # str(principal); "" while unknown (e.g. unauthenticated)


CALLER_NOTE: contextvars.ContextVar[CallerNote | None] = contextvars.ContextVar(
    "agenthost_caller_note", default=None
)


def caller() -> Principal:
    """The principal of the call being served, as the server's policy resolved it."""
    principal = CALLER.get()
    if principal is None:  # a handler reached without the authorization interceptor
        raise RuntimeError("no caller bound: the server runs without its authorization policy")
    return principal


def bind_caller_to_log_records() -> None:
    """Give every log record a `caller` attribute (' [token:alice]' or '') for formats.

    Done in the record factory, so every handler sees it; installing twice is harmless.
    """
    previous = logging.getLogRecordFactory()
    if getattr(previous, "binds_caller", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        principal = CALLER.get()
        record.caller = f" [{principal}]" if principal is not None else ""
        return record

    factory.binds_caller = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
