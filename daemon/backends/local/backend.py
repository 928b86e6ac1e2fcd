"""The local backend's verbs: a kernel is a process group the daemon starts in its own session.

start allocates the kernel's uid (its own from the agent's `uid_range`, or the
agent's `run_as` account, or the daemon's own user when the daemon is not
root), hands it the working directory (owner, mode 0700), makes its cgroups
(memory, cpuset, pids; whichever are writable) and spawns its main process
through the launcher, which joins them, pins it to its cores, sets the rlimits
that stand in for missing controllers, drops to its uid and execs the command.
All of that runs in a thread, off the event loop. wait resolves when the main
process ends; stop sends SIGTERM to the group and to everything in its
cgroups, waits its grace period, then SIGKILL, removes the cgroups and
returns the uid. `recover` takes back the uid of a kernel re-adopted after a
restart. Kernels outlive the daemon; after a restart liveness is pid *and*
start time (see process.py). One instance serves one agent; what is the same
for all agents of the daemon (cgroups, launcher, uid pool, /proc scan) is its
`LocalHost`. Knows processes only: nothing of agents' slices, ports, routing
or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Container, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psutil

from common.errors import FailedPrecondition, InvalidArgument, NotFound
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.backends import logfiles
from daemon.backends.base import (
    KERNEL_LOG,
    ExecEvent,
    Exit,
    Handle,
    LaunchSpec,
    Started,
)
from daemon.backends.local import cgroups, execute, host, reconcile
from daemon.backends.local.cgroups import KernelGroups
from daemon.backends.local.handle import ProcessHandle
from daemon.backends.local.host import LocalHost
from daemon.backends.local.launcher import LaunchPlan, kernel_env
from daemon.backends.local.process import (
    ExitWatch,
    end_remaining,
    is_alive,
    kill_remaining,
    signal_all,
)
from daemon.backends.local.settings import LocalSettings
from daemon.backends.local.spawn import SpawnError, open_log, spawn_kernel
from daemon.backends.logfiles import LogTail

WORKDIR_MODE = 0o700


@dataclass(frozen=True)
class Account:
    """Whom a kernel runs as, and how GetKernel names that (limits["user"])."""

    uid: int | None  # None: the daemon's own user, unchanged
    gid: int | None
    mode: str  # "uid-range", "run-as" or "daemon"


class LocalBackend:
    """Kernels as local process groups."""

    name = "local"
    settings_model: ClassVar[type[LocalSettings]] = LocalSettings

    def __init__(self, agent_id: AgentId, settings: LocalSettings, local: LocalHost) -> None:
        self.agent_id = agent_id
        self.settings = settings
        self.host = local
        self.identity = local.identity
        self._run_as = settings.account()
        self._watches: dict[int, ExitWatch] = {}
        self._closed = False

    @classmethod
    async def create(
        cls, agent_id: AgentId, settings: LocalSettings, identity: str
    ) -> LocalBackend:
        """Build the backend for one agent, on the daemon's LocalHost (detected once)."""
        return cls(agent_id, settings, await host.acquire(identity))

    # ------------------------------------------------------------------ verbs

    async def start(self, launch: LaunchSpec) -> Started:
        """Spawn the kernel through the launcher; fail cleanly, leaving nothing, when it cannot."""
        if not launch.command:
            raise InvalidArgument("command: a local kernel needs a command (argv)")
        try:
            h = await self.host.offload(lambda: self._start(launch))
        except SpawnError as exc:
            raise InvalidArgument(f"kernel {launch.kernel_id!r} cannot start: {exc}") from None
        except OSError as exc:  # its directory or cgroups: the host's problem, not the request's
            raise FailedPrecondition(
                f"kernel {launch.kernel_id!r} cannot start: {exc.strerror or exc}"
                + (f": {exc.filename}" if exc.filename else "")
            ) from None
        self._watch(h, spawned=True)
        limits = self._limits(h, launch)
        return Started(
            handle=h.to_dict(),
            memory_limit=limits["memory"],
            backend_ref=f"pid {h.pid}",
            limits=limits,
            uid=h.uid if h.uid is not None else os.geteuid(),
            gid=h.gid if h.gid is not None else os.getegid(),
        )

    async def wait(self, handle: Handle) -> Exit:
        """Return when the kernel's main process has ended."""
        h = ProcessHandle.parse(handle)
        if h is None:
            return Exit(exit_code=None, reason="unknown handle version", end=EndReason.LOST)
        return await asyncio.shield(self._watch(h).exited)

    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM the kernel, give it grace seconds, SIGKILL what is left; drop cgroups and uid."""
        h = ProcessHandle.parse(handle)
        if h is None:
            return
        watch = self._watch(h)
        if not watch.exited.done():
            signal_all(h.pid, h.groups, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=grace)
        if not watch.exited.done():
            signal_all(h.pid, h.groups, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=10)
        if h.groups.paths:
            await end_remaining(h.groups, self.host.offload)
        if h.pooled and h.uid is not None:
            self.host.uids.release(h.uid, h.owner)
        self._watches.pop(h.pid, None)

    async def is_alive(self, handle: Handle) -> bool:
        """True when the same process (pid and start time) still runs: known at once
        while its exit watch's pidfd has not signalled, else asked of /proc."""
        watch = self._watches.get(handle.get("pid"))  # type: ignore[arg-type]
        if watch is not None and watch.watching(handle.get("create_time")):
            return True
        h = ProcessHandle.parse(handle)
        return h is not None and is_alive(h)

    async def recover(self, handle: Handle) -> None:
        """Hold the uid of a kernel re-adopted after a restart again, so no other kernel gets it."""
        h = ProcessHandle.parse(handle)
        if h is not None and h.pooled and h.uid is not None:
            self.host.uids.adopt(h.uid, h.owner)

    async def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv as the kernel's uid, in its cgroups, on its cores, in its directory."""
        h = ProcessHandle.parse(handle)
        if h is None:
            raise NotFound(f"kernel {launch.kernel_id!r} has no process handle this daemon reads")
        plan = self._plan(launch, argv, h.groups, _account_of(h))
        env = kernel_env(launch, launch.workdir)
        async for event in execute.run(self.host.launcher, plan, env, stdin, timeout):
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

    async def trim_logs(self, workdirs: Sequence[Path], max_bytes: int) -> None:
        """Rotate each kernel's log file once it is past max_bytes (the process writes it
        directly, so nobody else would); one thread for all of them."""

        def rotate_all() -> None:
            for workdir in workdirs:
                logfiles.rotate(workdir / KERNEL_LOG, max_bytes)

        await asyncio.to_thread(rotate_all)

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """Kill processes and cgroups this daemon made for agent_id that no record owns."""
        return await reconcile.reap_dangling(self.host.scan, self.host.cgroups, agent_id, known)

    async def check(self) -> None:
        """The local backend is always available."""

    async def close(self) -> None:
        """Stop watching processes; the kernels themselves keep running."""
        for watch in self._watches.values():
            watch.close()
        self._watches.clear()
        if not self._closed:
            self._closed = True
            if host.release(self.identity):  # the daemon's last local agent
                await asyncio.to_thread(self.host.cgroups.tidy)

    # ---------------------------------------------------------------- details

    def _start(self, launch: LaunchSpec) -> ProcessHandle:
        """Account, directory, cgroups, log, spawn: everything blocking of a start (a thread)."""
        placeholder = object()
        account = self._account(launch, placeholder)
        groups: KernelGroups | None = None
        log_fd = -1
        try:
            if account.uid is not None:
                os.chown(launch.workdir, account.uid, account.gid or account.uid)
            os.chmod(launch.workdir, WORKDIR_MODE)
            groups = self.host.cgroups.create(
                launch.agent_id,
                launch.kernel_id,
                memory=launch.memory_limit,
                cores=launch.cores
                if self.settings.cpuset and self.host.cgroups.confines(launch.cores)
                else None,
                pids_max=self.settings.pids_max or None,
            )
            log_fd = open_log(launch.workdir, KERNEL_LOG, account.uid, account.gid)
            plan = self._plan(launch, list(launch.command), groups, account)
            pid = spawn_kernel(self.host.launcher, plan, kernel_env(launch, launch.workdir), log_fd)
        except BaseException:
            if groups is not None:
                kill_remaining(groups)
            if account.mode == "uid-range" and account.uid is not None:
                self.host.uids.release(account.uid, placeholder)
            raise
        finally:
            if log_fd >= 0:
                os.close(log_fd)
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = time.time()
        h = ProcessHandle(
            pid=pid,
            create_time=create_time,
            groups=groups,
            uid=account.uid,
            gid=account.gid,
            pooled=account.mode == "uid-range",
        )
        if h.pooled and h.uid is not None:
            self.host.uids.bind(h.uid, placeholder, h.owner)
        return h

    def _account(self, launch: LaunchSpec, owner: object) -> Account:
        """Whom the kernel runs as; a uid of its own is taken from the pool for owner."""
        if not self.host.privileged:
            return Account(None, None, "daemon")
        if self._run_as is not None:
            return Account(*self._run_as, "run-as")
        # A restarted kernel gets back the uid its directory belongs to, when free.
        prefer = os.stat(launch.workdir).st_uid
        uid = self.host.uids.allocate(self.settings.uid_range, owner, prefer=prefer)
        if prefer not in (uid, 0):
            _hand_over(launch, uid)
        return Account(uid, uid, "uid-range")

    def _plan(
        self, launch: LaunchSpec, argv: list[str], groups: KernelGroups, account: Account
    ) -> LaunchPlan:
        own_uid = account.mode == "uid-range"
        pids_limited = self.settings.pids_max and "pids" not in groups.paths
        return LaunchPlan(
            argv=argv,
            cwd=launch.workdir,
            cgroup_procs=groups.procs_files(),
            cores=launch.cores,
            rlimit_as=launch.memory_limit
            if launch.memory_limit and "memory" not in groups.paths
            else None,
            # RLIMIT_NPROC counts a uid's processes: a pids limit only where the uid is its own.
            rlimit_nproc=self.settings.pids_max if pids_limited and own_uid else None,
            uid=account.uid,
            gid=account.gid,
        )

    def _limits(self, h: ProcessHandle, launch: LaunchSpec) -> dict[str, str]:
        """Which limits are in force for this kernel, and how (GetKernel's limits)."""
        cg = self.host.cgroups

        def by_cgroup(controller: cgroups.Controller, fallback: str) -> str:
            hierarchy = cg.hierarchy(controller)
            if controller in h.groups.paths and hierarchy is not None:
                return hierarchy.mode
            return fallback

        own_uid = h.pooled
        every_core = not cg.confines(launch.cores) and cg.cpuset is not None
        return {  # keys and values are documented in README.md (The local backend)
            "cpuset": "none" if every_core else by_cgroup("cpuset", "affinity"),
            "memory": by_cgroup("memory", "rlimit" if launch.memory_limit else "none")
            if launch.memory_limit
            else "none",
            "pids": by_cgroup("pids", "rlimit" if own_uid else "none")
            if self.settings.pids_max
            else "none",
            "user": "uid-range" if own_uid else ("run-as" if h.uid is not None else "daemon"),
        }

    def _watch(self, handle: ProcessHandle, spawned: bool = False) -> ExitWatch:
        watch = self._watches.get(handle.pid)
        if watch is None:
            watch = ExitWatch(handle, spawned)
            self._watches[handle.pid] = watch
        return watch


def _account_of(h: ProcessHandle) -> Account:
    """Whom a running kernel runs as, from its handle."""
    mode = "uid-range" if h.pooled else ("run-as" if h.uid is not None else "daemon")
    return Account(h.uid, h.gid, mode)


def _hand_over(launch: LaunchSpec, uid: int) -> None:
    """Give a kernel directory left by an earlier uid (and all in it) to uid; links not followed."""
    for root, dirs, files in os.walk(launch.workdir):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), uid, uid, follow_symlinks=False)
