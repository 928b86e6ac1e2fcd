"""The daemon's side of a local kernel's running processes: liveness, signals, seeing them end.

A kernel is alive while the process its handle names runs: same pid *and* same
start time, and not a zombie (`is_alive`). `ExitWatch` resolves when a kernel's
main process ends (a pidfd on the event loop, no thread), reaps it when it is
the daemon's child, ends the rest of its group and says how it ended
(OOMKilled from its memory cgroup). `wait_child` does the same for an exec'd
command. `signal_all` and `kill_remaining` reach every process of a kernel: its
group, and whatever sits in its cgroups (a process that left the group with
setsid cannot leave its cgroups). Knows processes, signals and cgroup
membership; nothing of agents, ports or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable

import psutil

from common.kernel_events import EndReason
from daemon.backends.base import Exit
from daemon.backends.local import cgroups
from daemon.backends.local.cgroups import KernelGroups
from daemon.backends.local.handle import ProcessHandle

START_TIME_TOLERANCE = 0.05  # seconds: psutil's start times are rounded
# How long kill_remaining keeps killing what is left in a kernel's cgroups.
KILL_PATIENCE = 5.0


def same_process(pid: int, create_time: float) -> bool:
    """True when pid runs, started at create_time, and is not a zombie."""
    try:
        proc = psutil.Process(pid)
        return (
            abs(proc.create_time() - create_time) < START_TIME_TOLERANCE
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def is_alive(handle: ProcessHandle) -> bool:
    """True when the kernel's own process (not a recycled pid) still runs: pid and start time."""
    return same_process(handle.pid, handle.create_time)


def killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group that may be gone already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_all(pid: int, groups: KernelGroups, sig: signal.Signals) -> None:
    """Signal the kernel's process group and every process in its cgroups (blocking I/O)."""
    killpg(pid, sig)
    for p in cgroups.procs(groups):
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, sig)


def kill_pass(groups: KernelGroups) -> int | None:
    """One pass over the groups: remove them once empty (None: gone), else SIGKILL what
    is left and say how many (0: empty, but not removable yet). Blocking I/O."""
    left = cgroups.procs(groups)
    if not left and cgroups.remove(groups):
        return None
    for p in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return len(left)


def _pause(left: int) -> float:
    """How long to wait before the next pass: the kernel reaps killed processes, an
    emptied group becomes removable a moment after its last exit."""
    return 0.005 if not left else 0.02


def kill_remaining(groups: KernelGroups) -> bool:
    """SIGKILL whatever is left in the groups until they are empty, then remove them.

    Blocking (run it in a thread); True when the groups are gone. Forks racing
    the kills end too: the pids limit bounds them and each pass kills anew.
    """
    deadline = time.monotonic() + KILL_PATIENCE
    while True:
        left = kill_pass(groups)
        if left is None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_pause(left))


async def end_remaining(
    groups: KernelGroups, offload: Callable[[Callable[[], int | None]], Awaitable[int | None]]
) -> bool:
    """kill_remaining from the event loop: each pass in a thread (offload), the waits
    between passes on the loop, so a kernel whose processes take long to die (stuck in
    the kernel, a hung filesystem) holds no thread while it is waited for."""
    deadline = time.monotonic() + KILL_PATIENCE
    while True:
        left = await offload(lambda: kill_pass(groups))
        if left is None:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_pause(left))


def exit_status(code: int | None, oom: bool) -> Exit:
    """How a process ended, from its wait status code (None: not our child)."""
    if oom:
        return Exit(
            exit_code=137 if code is None or code < 0 else code,
            reason="OOMKilled",
            end=EndReason.OOM_KILLED,
        )
    if code is None:
        return Exit(exit_code=None, reason="exited (exit code unknown: not a child of this daemon)")
    if code < 0:
        return Exit(exit_code=128 - code, reason=f"killed by {signal.Signals(-code).name}")
    return Exit(exit_code=code, reason="exited")


async def wait_child(pid: int) -> int:
    """Wait (on the loop, through a pidfd) for our child pid to end; its wait status code."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        fd = -1
    if fd >= 0:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, ended)
        try:
            await ended
        finally:
            loop.remove_reader(fd)
            os.close(fd)
    _, status = os.waitpid(pid, 0)  # noqa: ASYNC222 -- it has ended: this only reaps it
    return os.waitstatus_to_exitcode(status)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ExitWatch:
    """Resolves `exited` when one kernel's main process ends; reaps it when it is our child."""

    def __init__(self, handle: ProcessHandle, spawned: bool = False) -> None:
        """Watch handle's process; spawned: our own child, just started (so surely it)."""
        self.pid = handle.pid
        self.create_time = handle.create_time
        self.groups = handle.groups
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[Exit] = loop.create_future()
        try:
            self._fd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            self._fd = -1
            self._finish()
            return
        # A child we have not reaped keeps its pid; anything else may be a recycled one.
        if not spawned and not is_alive(handle):
            os.close(self._fd)
            self._fd = -1
            self._finish()
            return
        loop.add_reader(self._fd, self._on_readable)

    def watching(self, create_time: object) -> bool:
        """True while this watch's pidfd (of the process started at create_time) has not
        signalled the process's end: it still runs, or its end is about to be handled."""
        return self._fd >= 0 and not self.exited.done() and create_time == self.create_time

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
        killpg(self.pid, signal.SIGKILL)
        code: int | None
        try:
            reaped, status = os.waitpid(self.pid, os.WNOHANG)
            code = os.waitstatus_to_exitcode(status) if reaped else None
        except ChildProcessError:
            code = None  # adopted after a daemon restart: not our child, code unknown
        exit_ = exit_status(code, cgroups.oom_killed(self.groups))
        if not self.exited.done():
            self.exited.set_result(exit_)
