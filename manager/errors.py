"""Domain errors of the manager.

Each subclasses the shared error of the same meaning (`common/errors.py`), so the
one mapping in `common/status.py` gives the manager's errors their gRPC codes
too. Nothing here knows gRPC.
"""

from __future__ import annotations

from common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)


class UnknownSession(NotFound):
    """A heartbeat carries a session this manager does not know: the daemon registers again."""


class AgentOwned(PermissionDenied):
    """An agent id belongs to another daemon identity (until an admin removes it)."""


class KernelNotFound(NotFound):
    """No kernel with that id is known to the manager."""


class NoAgentFits(FailedPrecondition):
    """No agent of the scaling group could ever run the request."""


class AllAgentsBusy(ResourceExhausted):
    """Agents that could run the request exist, but none has the room right now."""


class DelegationExhausted(ResourceExhausted):
    """A delegating kernel's children would pass the limits its creator set."""


class AgentLost(Unavailable):
    """The agent's daemon missed its heartbeats; calls to it wait until it is back."""


class DaemonUnreachable(Unavailable):
    """A daemon did not answer (down, or past the call's deadline)."""


class BadRequest(InvalidArgument):
    """A manager request is malformed (a pin that contradicts the scaling group, ...)."""


class StoreError(FailedPrecondition):
    """The manager's database cannot be used; the message says what to do."""
