"""The handle of one local kernel: small, versioned, serialisable.

The agent persists it in its checkpoint and gives it back to every verb. It names
the kernel's process by pid *and* start time, so that a recycled pid is never
mistaken for the kernel; the kernel's cgroups by controller; and the uid and gid
it runs as, with whether that uid came from the daemon's pool (so a restart takes
it back and a destroy returns it). Version 1 handles (a memory cgroup, root
kernels) are still read, so kernels started before an upgrade are re-adopted.
A handle of any other version is not guessed at: `ProcessHandle.parse` returns
None for it, and every verb treats that kernel as gone. Knows nothing of
processes beyond these numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.backends.base import Handle
from daemon.backends.local.cgroups import CONTROLLERS, Controller, KernelGroups

HANDLE_VERSION = 2


@dataclass(frozen=True)
class ProcessHandle:
    """One kernel's process group, led by pid."""

    pid: int
    create_time: float  # the leader's start time (seconds since the epoch, as psutil says)
    groups: KernelGroups = field(default_factory=KernelGroups)
    uid: int | None = None  # None: the daemon's own (a version 1 handle)
    gid: int | None = None
    pooled: bool = False  # uid is the kernel's own, from the daemon's uid pool

    @property
    def owner(self) -> tuple[int, float]:
        """What holds the kernel's uid in the pool: its main process."""
        return (self.pid, self.create_time)

    def to_dict(self) -> Handle:
        """The serialisable form the agent persists."""
        return {
            "version": HANDLE_VERSION,
            "pid": self.pid,
            "create_time": self.create_time,
            "cgroups": {c: str(p) for c, p in self.groups.paths.items()},
            "uid": self.uid,
            "gid": self.gid,
            "pooled": self.pooled,
        }

    @classmethod
    def parse(cls, handle: Mapping[str, Any]) -> ProcessHandle | None:
        """The handle's fields, or None when it is of another version or malformed."""
        version = handle.get("version")
        try:
            pid, create_time = int(handle["pid"]), float(handle["create_time"])
            if version == 1:  # a memory cgroup at most; kernels ran as the daemon's user
                cgroup = handle.get("cgroup")
                groups = KernelGroups({"memory": Path(cgroup)} if cgroup else {})
                return cls(pid=pid, create_time=create_time, groups=groups)
            if version != HANDLE_VERSION:
                return None
            paths: dict[Controller, Path] = {}
            for controller, path in dict(handle["cgroups"]).items():
                if controller not in CONTROLLERS:
                    return None
                paths[controller] = Path(path)
            uid, gid = handle["uid"], handle["gid"]
            return cls(
                pid=pid,
                create_time=create_time,
                groups=KernelGroups(paths),
                uid=None if uid is None else int(uid),
                gid=None if gid is None else int(gid),
                pooled=bool(handle["pooled"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
