"""Spawning a launch plan: `posix_spawn` of the launcher, with stdio in place and a status pipe.

`spawn_kernel` starts a kernel's main process in a session of its own, its
output appended to the kernel log, and waits on the status pipe until the
launcher has exec'd the command (the pipe closes, nothing written) or failed
(the reason arrives, the launcher exits 127 and is reaped here), so a command
that cannot start fails the create with its reason. `spawn_piped` starts an
exec'd command with pipes for stdin, stdout and stderr (a failure then shows
as exit code 127 and the reason on stderr, like a shell's).

`posix_spawn` (vfork and exec) does nothing in the child but the descriptor
moves and `setsid`: every other step is the launcher's. Everything here
blocks (spawning, the status pipe, opening the log): callers run it in a
thread. Knows processes and descriptors; nothing of agents or gRPC.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from daemon.backends.local.launcher import STATUS_FD, Launcher, LaunchPlan

LOG_MODE = 0o640


class SpawnError(Exception):
    """The launcher reported why the command cannot start (already reaped)."""


def open_log(workdir: Path, name: str, uid: int | None, gid: int | None) -> int:
    """Open workdir/name for appending, never through a symlink or into a fifo or device.

    The directory belongs to the kernel's uid, which could put a link there in
    place of its log; the daemon (root) must not follow it. The log is the
    kernel's own (uid and gid, when given), mode 0640.
    """
    dir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            LOG_MODE,
            dir_fd=dir_fd,
        )
    finally:
        os.close(dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{workdir / name} is not a regular file")
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else uid)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def spawn_kernel(launcher: Launcher, plan: LaunchPlan, env: dict[str, str], log_fd: int) -> int:
    """Start plan as a kernel's main process (new session, output to log_fd); its pid.

    Raises SpawnError with the launcher's reason when the command cannot start.
    """
    read_end, write_end = os.pipe()
    try:
        if write_end == STATUS_FD:  # dup2(3, 3) would keep close-on-exec set
            write_end, old = os.dup(write_end), write_end
            os.close(old)
        plan = replace(plan, status_fd=STATUS_FD)
        pid = os.posix_spawn(
            launcher.path,
            launcher.argv(plan),
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
                (os.POSIX_SPAWN_DUP2, write_end, STATUS_FD),
            ],
            setsid=True,
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    failure = _read_to_eof(read_end)
    if failure:
        os.waitpid(pid, 0)
        raise SpawnError(failure)
    return pid


@dataclass(frozen=True)
class Piped:
    """A spawned command and the daemon's ends of its pipes."""

    pid: int
    stdin: int
    stdout: int
    stderr: int


def spawn_piped(launcher: Launcher, plan: LaunchPlan, env: dict[str, str]) -> Piped:
    """Start plan in a new session with pipes for its stdin, stdout and stderr."""
    pipes = [os.pipe() for _ in range(3)]
    child = [pipes[0][0], pipes[1][1], pipes[2][1]]
    ours = [pipes[0][1], pipes[1][0], pipes[2][0]]
    try:
        pid = os.posix_spawn(
            launcher.path,
            launcher.argv(replace(plan, status_fd=None)),
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(child)],
            setsid=True,
        )
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in child:
            os.close(fd)
    return Piped(pid, *ours)


def _read_to_eof(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return b"".join(chunks).decode(errors="replace")
