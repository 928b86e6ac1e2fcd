"""The daemon's state directory: its identity, the lock that makes it one daemon's,
and where kernels work.

`agent_id` is a namespace under it (`agents/<agent_id>/`: the checkpoint); the
identity names what the daemon creates outside it (container labels, cgroup
names) so two daemons on one host never touch each other's. `StateDirLock` is an
exclusive lock (flock) on `daemon.lock` inside it, holding the owner's pid: a
second daemon on the same directory (say `agenthost up` run twice) would adopt and
then kill the first one's kernels as dangling, so it is refused at start, naming
the holder. Kernels' working directories are not under it: the state directory is
the daemon's user's alone (0700), and a kernel running as a uid of its own must
reach its directory by path, so they go to a kernels directory (by default beside
it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
from pathlib import Path

from common.errors import FailedPrecondition, Unavailable

LOCK_FILE = "daemon.lock"


def daemon_identity(state_dir: Path) -> str:
    """A short stable name for the daemon that owns state_dir (labels, cgroup names)."""
    return hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]


def prepare(state_dir: Path) -> None:
    """Create state_dir private to the daemon's user (0700), or make it so."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)


class StateDirLock:
    """This process's exclusive hold on a state directory, until release()."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateDirLock:
        """Take the lock, or FailedPrecondition naming the daemon that holds it."""
        prepare(state_dir)
        path = state_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise Unavailable(
                f"state_dir {state_dir}: cannot open {path}: {exc.strerror} (errno {exc.errno})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Unavailable(
                    f"state_dir {state_dir}: cannot lock {path}: {exc.strerror}"
                ) from None
            raise FailedPrecondition(
                f"state_dir {state_dir} is in use by another daemon (pid {holder or 'unknown'}): "
                "one daemon per state_dir; stop that daemon or give this one another state_dir"
            ) from None
        # Best effort: the pid is only for the message above; a full disk must not
        # keep the daemon from starting.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Let another daemon have the directory; releasing twice is harmless."""
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or "0") or None
    return None


def checkpoint_path(state_dir: Path, agent_id: str) -> Path:
    """Where agent_id's checkpoint lives: `agents/<agent_id>/state.json`."""
    return state_dir / "agents" / agent_id / "state.json"


def default_kernels_dir(state_dir: Path) -> Path:
    """Where kernels' working directories go when the config names no kernels_dir."""
    return state_dir.with_name(state_dir.name + "-kernels")
