"""The handle of one local kernel: small, versioned, serialisable.

The agent persists it in its checkpoint and gives it back to every verb. It names
the kernel's process by pid *and* start time, so that a recycled pid is never
mistaken for the kernel, and the kernel's memory cgroup when it has one. A handle
of another version is not guessed at: `ProcessHandle.parse` returns None for it,
and every verb treats that kernel as gone. Knows nothing of processes beyond these
numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.backends.base import Handle

HANDLE_VERSION = 1


@dataclass(frozen=True)
class ProcessHandle:
    """One kernel's process group, led by pid."""

    pid: int
    create_time: float  # the leader's start time (seconds since the epoch, as psutil says)
    cgroup: Path | None = None  # the kernel's memory cgroup, if one was writable

    def to_dict(self) -> Handle:
        """The serialisable form the agent persists."""
        return {
            "version": HANDLE_VERSION,
            "pid": self.pid,
            "create_time": self.create_time,
            "cgroup": str(self.cgroup) if self.cgroup else None,
        }

    @classmethod
    def parse(cls, handle: Mapping[str, Any]) -> ProcessHandle | None:
        """The handle's fields, or None when it is of another version or malformed."""
        if handle.get("version") != HANDLE_VERSION:
            return None
        try:
            cgroup = handle.get("cgroup")
            return cls(
                pid=int(handle["pid"]),
                create_time=float(handle["create_time"]),
                cgroup=Path(cgroup) if cgroup else None,
            )
        except (KeyError, TypeError, ValueError):
            return None
