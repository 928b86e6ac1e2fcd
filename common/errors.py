"""Domain errors shared by the daemon and the manager.

Each class says what kind of failure it is; `common/status.py` maps the kinds to
gRPC status codes in one place. Nothing here knows gRPC. Errors that belong to
one side only subclass these in `daemon/errors.py` or `manager/errors.py`.
"""

from __future__ import annotations


class AgentHostError(Exception):
    """Base of every domain error; its message is shown to the caller as is."""


class InvalidArgument(AgentHostError):
    """The request itself is malformed (bad id, empty command, impossible shape)."""


class NotFound(AgentHostError):
    """A named agent, kernel or network does not exist here."""


class AlreadyExists(AgentHostError):
    """A kernel or network with that id already exists."""


class ResourceExhausted(AgentHostError):
    """The request would fit but the slots or ports it needs are taken right now."""


class FailedPrecondition(AgentHostError):
    """The request can never succeed in the current set-up (too big, missing image)."""


class Unavailable(AgentHostError):
    """A backend or a peer (container engine, API server, daemon) does not answer."""


class Unsupported(AgentHostError):
    """The operation is not implemented here (e.g. by the agent's backend)."""


class Unauthenticated(AgentHostError):
    """The call carries no valid credential (no client certificate, no or a bad token)."""


class PermissionDenied(AgentHostError):
    """The caller is known but may not do this (wrong role, scope or owner)."""

    def __init__(self, message: str, caller: str = "") -> None:
        super().__init__(message)
        self.caller = caller  # whom an authorization policy refused, for the audit trail


class Aborted(AgentHostError):
    """Another operation ended this one midway (e.g. a destroy ended a running exec)."""


class ConfigError(InvalidArgument):
    """A configuration file does not validate; `problems` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))
