"""Domain errors of the daemon.

Each class says what kind of failure it is; `daemon/service.py` maps the kinds to
gRPC status codes in one place. Nothing here knows gRPC.
"""

from __future__ import annotations


class AgentHostError(Exception):
    """Base of every domain error; its message is shown to the caller as is."""


class InvalidArgument(AgentHostError):
    """The request itself is malformed (bad id, empty command, impossible shape)."""


class NotFound(AgentHostError):
    """A named agent, kernel or network does not exist here."""


class AlreadyExists(AgentHostError):
    """A kernel or network with that id already exists on this daemon."""


class ResourceExhausted(AgentHostError):
    """The request would fit the agent but its slots or ports are taken right now."""


class FailedPrecondition(AgentHostError):
    """The request can never succeed in the current set-up (too big, missing image)."""


class Unavailable(AgentHostError):
    """A backend (container engine, API server) does not answer; retry later."""


class Unsupported(AgentHostError):
    """The agent's backend does not implement this operation."""


class ConfigError(AgentHostError):
    """A configuration file does not validate; `problems` lists every finding."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class CheckpointError(AgentHostError):
    """An agent's state file cannot be used; the message says what to do."""
