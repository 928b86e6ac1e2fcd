"""The handle of one kubernetes kernel: small, versioned, serialisable.

The agent persists it in its checkpoint and gives it back to every verb; it
holds the pod's namespace, name and uid (a pod recreated under the same name is
another pod: its uid differs, and no verb touches it for this handle) and the
kernel's working directory on the daemon's host (where the output of a kernel
that ended is kept once its pod is deleted). A handle of another version is not
guessed at: `PodHandle.parse` returns None for it, and every verb treats that
kernel as gone. Knows nothing of the API server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.backends.base import KERNEL_LOG, Handle

HANDLE_VERSION = 1


def pod_ref(namespace: str, name: str, uid: str) -> str:
    """How a kernel's pod is shown (`Kernel.backend_ref`): one instance of the pod."""
    return f"pod {namespace}/{name} {uid[:8]}"


@dataclass(frozen=True)
class PodHandle:
    """One kernel's pod."""

    namespace: str
    name: str
    uid: str
    workdir: Path

    @property
    def log_path(self) -> Path:
        """Where the output of the ended pod is kept."""
        return self.workdir / KERNEL_LOG

    @property
    def ref(self) -> str:
        """The backend ref shown for this pod."""
        return pod_ref(self.namespace, self.name, self.uid)

    def to_dict(self) -> Handle:
        """The serialisable form the agent persists."""
        return {
            "version": HANDLE_VERSION,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "workdir": str(self.workdir),
        }

    @classmethod
    def parse(cls, handle: Mapping[str, Any]) -> PodHandle | None:
        """The handle's fields, or None when it is of another version or malformed."""
        if handle.get("version") != HANDLE_VERSION:
            return None
        try:
            return cls(
                namespace=str(handle["namespace"]),
                name=str(handle["name"]),
                uid=str(handle["uid"]),
                workdir=Path(handle["workdir"]),
            )
        except (KeyError, TypeError):
            return None
