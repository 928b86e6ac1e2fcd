"""The local backend's verbs: a kernel is a process group the daemon starts in its own session.

start makes the kernel's memory cgroup (when one is writable) and spawns its main
process through the launcher, which pins it to its cores, puts it in the cgroup
(or under an address-space rlimit) and execs the command; wait resolves when the
main process ends; stop sends SIGTERM to the group, waits its grace period, then
SIGKILL, and removes the cgroup. Kernels outlive the daemon; after a restart
liveness is pid *and* start time (see reconcile.py). One instance serves one agent.
Knows processes only: nothing of agents' slices, ports, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Container
from typing import ClassVar

import psutil

from common.errors import InvalidArgument, NotFound
from common.ids import AgentId, KernelId
from daemon.backends import logfiles
from daemon.backends.base import (
    KERNEL_LOG,
    ExecEvent,
    Exit,
    Handle,
    LaunchSpec,
    Started,
)
from daemon.backends.local import cgroups, execute, process, reconcile
from daemon.backends.local.cgroups import MemoryCgroups
from daemon.backends.local.handle import ProcessHandle
from daemon.backends.local.process import ExitWatch
from daemon.backends.local.settings import LocalSettings
from daemon.backends.logfiles import LogTail


class LocalBackend:
    """Kernels as local process groups."""

    name = "local"
    settings_model: ClassVar[type[LocalSettings]] = LocalSettings

    def __init__(
        self, agent_id: AgentId, identity: str, memory_cgroups: MemoryCgroups | None
    ) -> None:
        self.agent_id = agent_id
        self.identity = identity
        self.cgroups = memory_cgroups
        self._watches: dict[int, ExitWatch] = {}

    @classmethod
    async def create(
        cls, agent_id: AgentId, settings: LocalSettings, identity: str
    ) -> LocalBackend:
        """Build the backend for one agent; detects a writable memory cgroup."""
        return cls(agent_id, identity, MemoryCgroups.detect(identity))

    # ------------------------------------------------------------------ verbs

    async def start(self, launch: LaunchSpec) -> Started:
        """Spawn the kernel through the launcher; fail cleanly when it cannot exec."""
        if not launch.command:
            raise InvalidArgument("command: a local kernel needs a command (argv)")
        group = (
            await asyncio.to_thread(
                self.cgroups.create, launch.agent_id, launch.kernel_id, launch.memory_limit
            )
            if self.cgroups
            else None
        )
        try:
            pid = await process.spawn(launch, group)
        except BaseException:
            if group is not None:
                cgroups.remove(group)
            raise
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = time.time()
        handle = ProcessHandle(pid=pid, create_time=create_time, cgroup=group)
        self._watch(handle)
        if group is not None and launch.memory_limit:
            mode = f"cgroup-v{self.cgroups.version}" if self.cgroups else "cgroup"
        elif launch.memory_limit:
            mode = "rlimit"
        else:
            mode = "none"
        return Started(handle=handle.to_dict(), memory_limit=mode, backend_ref=f"pid {pid}")

    async def wait(self, handle: Handle) -> Exit:
        """Return when the kernel's main process has ended."""
        h = ProcessHandle.parse(handle)
        if h is None:
            return Exit(exit_code=None, reason="unknown handle version")
        return await asyncio.shield(self._watch(h).exited)

    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM the group, give it grace seconds, SIGKILL what is left, drop the cgroup."""
        h = ProcessHandle.parse(handle)
        if h is None:
            return
        watch = self._watch(h)
        if not watch.exited.done():
            process.signal_all(h.pid, h.cgroup, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=grace)
        if not watch.exited.done():
            process.signal_all(h.pid, h.cgroup, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=10)
        if h.cgroup is not None:
            for _ in range(100):
                left = cgroups.procs(h.cgroup)
                if not left:
                    break
                for p in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                await asyncio.sleep(0.02)
            await asyncio.to_thread(cgroups.remove, h.cgroup)
        self._watches.pop(h.pid, None)

    async def is_alive(self, handle: Handle) -> bool:
        """True when the same process (pid and start time) still runs."""
        h = ProcessHandle.parse(handle)
        return h is not None and reconcile.is_alive(h)

    async def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv with the kernel's cores, memory limit, cwd and env; stream its output."""
        h = ProcessHandle.parse(handle)
        if h is None:
            raise NotFound(f"kernel {launch.kernel_id!r} has no process handle this daemon reads")
        async for event in execute.run(h, launch, argv, stdin, timeout):
            yield event

    async def logs(
        self, handle: Handle, launch: LaunchSpec, tail_lines: int, max_bytes: int
    ) -> LogTail:
        """The end of the kernel's combined stdout/stderr, from its log file."""
        return await asyncio.to_thread(
            logfiles.read_tail, launch.workdir / KERNEL_LOG, tail_lines, max_bytes
        )

    def stream_logs(
        self,
        handle: Handle,
        launch: LaunchSpec,
        tail_lines: int,
        follow: bool,
        alive: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """The kernel's log file in chunks (following it while the kernel lives)."""
        return logfiles.stream(launch.workdir / KERNEL_LOG, tail_lines, follow, alive)

    async def trim_logs(self, launch: LaunchSpec, max_bytes: int) -> None:
        """Rotate the kernel's log file once it is past max_bytes (the process writes it
        directly, so nobody else would)."""
        await asyncio.to_thread(logfiles.rotate, launch.workdir / KERNEL_LOG, max_bytes)

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """Kill processes and cgroups this daemon made for agent_id that no record owns."""
        return await reconcile.reap_dangling(self.identity, self.cgroups, agent_id, known)

    async def check(self) -> None:
        """The local backend is always available."""

    async def close(self) -> None:
        """Stop watching processes; the kernels themselves keep running. The agent's
        memory cgroup (and the daemon's) goes once no kernel group is left in it."""
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_agent, self.agent_id)

    # ---------------------------------------------------------------- details

    def _watch(self, handle: ProcessHandle) -> ExitWatch:
        watch = self._watches.get(handle.pid)
        if watch is None:
            watch = ExitWatch(handle)
            self._watches[handle.pid] = watch
        return watch
