"""The daemon's state directory: the identity derived from it.

`agent_id` is a namespace under it (`agents/<agent_id>/`: checkpoint and kernel
working directories); the identity names what the daemon creates outside it
(container labels, cgroup names) so two daemons on one host never touch each
other's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def daemon_identity(state_dir: Path) -> str:
    """A short stable name for the daemon that owns state_dir (labels, cgroup names)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
