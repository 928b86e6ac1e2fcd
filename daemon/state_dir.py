"""The daemon's state directory: the identity derived from it, and where kernels work.

`agent_id` is a namespace under it (`agents/<agent_id>/`: the checkpoint); the
identity names what the daemon creates outside it (container labels, cgroup
names) so two daemons on one host never touch each other's. Kernels' working
directories are not under it: the state directory is the daemon's user's alone
(0700), and a kernel running as a uid of its own must reach its directory by
path, so they go to a kernels directory (by default beside it).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def daemon_identity(state_dir: Path) -> str:
    """A short stable name for the daemon that owns state_dir (labels, cgroup names)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]


def default_kernels_dir(state_dir: Path) -> Path:
    """Where kernels' working directories go when the config names no kernels_dir."""
    return state_dir.with_name(state_dir.name + "-kernels")
