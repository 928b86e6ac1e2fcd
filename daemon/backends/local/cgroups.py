"""Memory cgroups for local kernels (cgroup v1 or v2, whichever is writable).

One group per kernel, named `agenthost-<daemon>/<agent_id>/<kernel_id>` so that
daemons and agents never share one. Knows nothing of agents beyond the names.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

V1_ROOT = Path("/sys/fs/cgroup/memory")
V2_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class MemoryCgroups:
    """A writable memory cgroup hierarchy, with the file names its version uses."""

    base: Path
    version: int

    @classmethod
    def detect(cls, daemon_identity: str) -> MemoryCgroups | None:
        """The hierarchy this daemon may create groups in, or None when none is writable."""
        candidates: list[tuple[Path, int]] = []
        if (V1_ROOT / "memory.limit_in_bytes").exists():
            candidates.append((V1_ROOT, 1))
        controllers = V2_ROOT / "cgroup.controllers"
        if controllers.exists() and "memory" in controllers.read_text().split():
            candidates.append((V2_ROOT, 2))
        for root, version in candidates:
            base = root / f"agenthost-{daemon_identity}"
            try:
                base.mkdir(exist_ok=True)
                if version == 2:
                    (base / "cgroup.subtree_control").write_text("+memory")
                probe = base / ".probe"
                probe.mkdir(exist_ok=True)
                limit = "memory.limit_in_bytes" if version == 1 else "memory.max"
                (probe / limit).write_text(str(64 << 20))
                probe.rmdir()
                return cls(base=base, version=version)
            except OSError:
                continue
        return None

    def path(self, agent_id: str, kernel_id: str) -> Path:
        """Where kernel_id's group lives."""
        return self.base / agent_id / kernel_id

    def create(self, agent_id: str, kernel_id: str, limit: int) -> Path:
        """Make the kernel's group with limit bytes (0: no limit) and return its path."""
        agent_dir = self.base / agent_id
        agent_dir.mkdir(exist_ok=True)
        if self.version == 2:
            with contextlib.suppress(OSError):
                (agent_dir / "cgroup.subtree_control").write_text("+memory")
        group = agent_dir / kernel_id
        group.mkdir(exist_ok=True)
        if limit:
            name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (group / name).write_text(str(limit))
        return group

    def remove_agent(self, agent_id: str) -> None:
        """Remove agent_id's group, and the daemon's once no agent has one; groups that
        still hold kernels (left running past the daemon) stay."""
        remove(self.base / agent_id)
        remove(self.base)

    def agent_groups(self, agent_id: str) -> list[Path]:
        """Every kernel group of agent_id."""
        agent_dir = self.base / agent_id
        return [p for p in agent_dir.iterdir() if p.is_dir()] if agent_dir.is_dir() else []


def procs(group: Path) -> list[int]:
    """Pids in the group (empty when it is gone)."""
    try:
        return [int(line) for line in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def oom_killed(group: Path) -> bool:
    """True when the kernel's memory limit made the OOM killer act in this group."""
    for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
        try:
            for line in (group / name).read_text().splitlines():
                field, _, value = line.partition(" ")
                if field == key and int(value) > 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


def remove(group: Path) -> None:
    """Remove an empty group; a group that still holds processes stays."""
    with contextlib.suppress(OSError):
        os.rmdir(group)
