"""The daemon's side of a local kernel's processes: launching them and seeing them end.

Every process of a kernel (its main process, and each exec'd command) starts
through `launch.py`, given a plan (cores, cgroup or rlimit, working directory,
argv) and an environment built here. `spawn` starts a kernel's main process in
its own session and reports a command that cannot run as `InvalidArgument`.
`ExitWatch` resolves when a kernel's main process ends, reaps it when it is the
daemon's child and ends the rest of its group. Knows processes, signals and the
launcher; nothing of agents' slices, ports, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from common.errors import InvalidArgument
from daemon.backends.base import KERNEL_LOG, Exit, LaunchSpec
from daemon.backends.local import cgroups, reconcile
from daemon.backends.local.handle import ProcessHandle

LAUNCHER = str(Path(__file__).with_name("launch.py"))
# Environment a kernel inherits from the daemon; everything else comes from its spec.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
# The launcher's status descriptor in the kernel's main process.
STATUS_FD = 3


def launcher_argv(plan: dict[str, Any]) -> list[str]:
    """The command line that runs plan through the launcher (argv[0] is what is spawned)."""
    return [sys.executable, "-I", "-S", LAUNCHER, json.dumps(plan)]


def launch_plan(launch: LaunchSpec, group: Path | None, argv: list[str]) -> dict[str, Any]:
    """What the launcher does before it execs argv: the kernel's limits and directory."""
    return {
        "cores": list(launch.cores),
        "cgroup": str(group) if group else None,
        "rlimit_as": launch.memory_limit if group is None and launch.memory_limit else None,
        "cwd": str(launch.workdir),
        "argv": argv,
        "status_fd": None,
    }


def kernel_env(launch: LaunchSpec) -> dict[str, str]:
    """A few variables inherited from the daemon, HOME, then the kernel's own env."""
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = str(launch.workdir)
    env.update(launch.env)
    return env


async def spawn(launch: LaunchSpec, group: Path | None) -> int:
    """Start the kernel's main process in its own session; return its pid.

    Output goes to the kernel's log file. The launcher reports a failed exec on a
    status pipe, so a command that cannot run is an InvalidArgument here rather
    than a kernel that exits 127 at once.
    """
    plan = launch_plan(launch, group, list(launch.command))
    read_end, write_end = os.pipe()
    if write_end == STATUS_FD:  # dup2(3, 3) would keep close-on-exec set
        write_end, old = os.dup(write_end), write_end
        os.close(old)
    plan["status_fd"] = STATUS_FD
    argv = launcher_argv(plan)
    try:
        pid = os.posix_spawn(  # noqa: ASYNC221 -- returns as soon as the child is spawned
            argv[0],
            argv,
            kernel_env(launch),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (
                    os.POSIX_SPAWN_OPEN,
                    1,
                    str(launch.workdir / KERNEL_LOG),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                    0o644,
                ),
                (os.POSIX_SPAWN_DUP2, 1, 2),
                (os.POSIX_SPAWN_DUP2, write_end, STATUS_FD),
            ],
            setsid=True,
        )
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    failure = await asyncio.to_thread(_read_to_eof, read_end)
    if failure:
        await asyncio.to_thread(os.waitpid, pid, 0)
        raise InvalidArgument(f"kernel {launch.kernel_id!r} cannot start: {failure}")
    return pid


def killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group that may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_all(pid: int, group: Path | None, sig: signal.Signals) -> None:
    """Signal the kernel's process group and every process left in its cgroup."""
    killpg(pid, sig)
    for p in cgroups.procs(group) if group else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


class ExitWatch:
    """Resolves `exited` when one kernel's main process ends; reaps it when it is our child."""

    def __init__(self, handle: ProcessHandle) -> None:
        self.pid = handle.pid
        self.cgroup = handle.cgroup
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[Exit] = loop.create_future()
        try:
            self._fd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            self._fd = -1
            self._finish()
            return
        if not reconcile.is_alive(handle):
            os.close(self._fd)
            self._fd = -1
            self._finish()
            return
        loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Stop watching (the process keeps running); a pending wait is cancelled."""
        if not self.exited.done() and self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self.exited.cancel()

    def _on_readable(self) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)
        self._fd = -1
        self._finish()

    def _finish(self) -> None:
        # The group outlives its leader only as long as we let it: end the rest
        # (as a container's processes end with its PID 1). While the leader is an
        # unreaped zombie its pid, and so the group id, cannot be reused.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        code: int | None
        try:
            reaped, status = os.waitpid(self.pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if reaped else None
        except ChildProcessError:
            code = None  # adopted after a daemon restart: not our child, code unknown
        if self.cgroup is not None and cgroups.oom_killed(self.cgroup):
            exit_ = Exit(exit_code=137 if code is None or code < 0 else code, reason="OOMKilled")
        elif code is None:
            exit_ = Exit(
                exit_code=None, reason="exited (exit code unknown: not a child of this daemon)"
            )
        elif code < 0:
            sig = signal.Signals(-code).name
            exit_ = Exit(exit_code=128 - code, reason=f"killed by {sig}")
        else:
            exit_ = Exit(exit_code=code, reason="exited")
        if not self.exited.done():
            self.exited.set_result(exit_)


def _read_to_eof(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")
