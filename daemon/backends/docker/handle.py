"""The handle of one docker kernel: small, versioned, serialisable.

The agent persists it in its checkpoint and gives it back to every verb; it
holds the container's id and name and the kernel's working directory on the host
(where the output of a kernel that ended is kept once its container is removed).
A handle of another version is not guessed at: `ContainerHandle.parse` returns
None for it, and every verb treats that kernel as gone. Knows nothing of the
engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.backends.base import KERNEL_LOG, Handle

HANDLE_VERSION = 1


@dataclass(frozen=True)
class ContainerHandle:
    """One kernel's container."""

    container_id: str
    name: str
    workdir: Path

    @property
    def log_path(self) -> Path:
        """Where the output of the ended container is kept."""
        return self.workdir / KERNEL_LOG

    def to_dict(self) -> Handle:
        """The serialisable form the agent persists."""
        return {
            "version": HANDLE_VERSION,
            "container_id": self.container_id,
            "name": self.name,
            "workdir": str(self.workdir),
        }

    @classmethod
    def parse(cls, handle: Mapping[str, Any]) -> ContainerHandle | None:
        """The handle's fields, or None when it is of another version or malformed."""
        if handle.get("version") != HANDLE_VERSION:
            return None
        try:
            return cls(
                container_id=str(handle["container_id"]),
                name=str(handle["name"]),
                workdir=Path(handle["workdir"]),
            )
        except (KeyError, TypeError):
            return None
