"""The local backend: a kernel is a process group the daemon starts in its own session.

Each kernel runs under `launch.py`, which pins it to its cores, puts it in a
memory cgroup (or under an address-space rlimit when no cgroup is writable) and
execs the command. Kernels outlive the daemon; after a restart `is_alive` checks
pid *and* start time, so a recycled pid is never mistaken for a kernel.
Knows processes only: nothing of agents' slices, ports, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Container
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from common.errors import InvalidArgument
from common.ids import AgentId, KernelId
from daemon.backends.base import (
    KERNEL_LOG,
    ExecEvent,
    ExecExit,
    ExecOutput,
    Exit,
    Handle,
    LaunchSpec,
    Started,
    read_log_tail,
)
from daemon.backends.local import cgroups
from daemon.backends.local.cgroups import MemoryCgroups

if TYPE_CHECKING:
    from daemon.config import AgentConfig

HANDLE_VERSION = 1
LAUNCHER = str(Path(__file__).with_name("launch.py"))
# Environment a kernel inherits from the daemon; everything else comes from its spec.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")


class _ExitWatch:
    """Resolves `exited` when one process ends; reaps it when it is our child."""

    def __init__(self, pid: int, create_time: float, cgroup: Path | None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[Exit] = loop.create_future()
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = -1
            self._finish()
            return
        if not _same_process(pid, create_time):
            os.close(self._fd)
            self._fd = -1
            self._finish()
            return
        loop.add_reader(self._fd, self._on_readable)

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


def _same_process(pid: int, create_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return (
            abs(proc.create_time() - create_time) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


class LocalBackend:
    """Kernels as local process groups."""

    name = "local"

    def __init__(self, identity: str, memory_cgroups: MemoryCgroups | None) -> None:
        self.identity = identity
        self.cgroups = memory_cgroups
        self._watches: dict[int, _ExitWatch] = {}

    @classmethod
    async def create(cls, agent: AgentConfig, identity: str) -> LocalBackend:
        """Build the backend for one agent; detects a writable memory cgroup."""
        return cls(identity, MemoryCgroups.detect(identity))

    # ------------------------------------------------------------------ verbs

    async def start(self, launch: LaunchSpec) -> Started:
        """Spawn the kernel through the launcher; fail cleanly when it cannot exec."""
        if not launch.command:
            raise InvalidArgument("command: a local kernel needs a command (argv)")
        group = (
            self.cgroups.create(launch.agent_id, launch.kernel_id, launch.memory_limit)
            if self.cgroups
            else None
        )
        plan = self._plan(launch, group, list(launch.command))
        read_end, write_end = os.pipe()
        if write_end == 3:  # dup2(3, 3) would keep close-on-exec set
            write_end, old = os.dup(write_end), write_end
            os.close(old)
        plan["status_fd"] = 3
        try:
            pid = os.posix_spawn(  # noqa: ASYNC221 -- returns as soon as the child is spawned
                sys.executable,
                [sys.executable, "-I", "-S", LAUNCHER, json.dumps(plan)],
                self._env(launch),
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
                    (os.POSIX_SPAWN_DUP2, write_end, 3),
                ],
                setsid=True,
            )
        except OSError:
            os.close(read_end)
            if group is not None:
                cgroups.remove(group)
            raise
        finally:
            os.close(write_end)
        failure = await asyncio.to_thread(_read_to_eof, read_end)
        if failure:
            await asyncio.to_thread(os.waitpid, pid, 0)
            if group is not None:
                cgroups.remove(group)
            raise InvalidArgument(f"kernel {launch.kernel_id!r} cannot start: {failure}")
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.Error:
            create_time = time.time()
        handle: Handle = {
            "version": HANDLE_VERSION,
            "pid": pid,
            "create_time": create_time,
            "cgroup": str(group) if group else None,
        }
        self._watch(handle)
        if group is not None and launch.memory_limit:
            mode = f"cgroup-v{self.cgroups.version}" if self.cgroups else "cgroup"
        elif launch.memory_limit:
            mode = "rlimit"
        else:
            mode = "none"
        return Started(handle=handle, memory_limit=mode, backend_ref=f"pid {pid}")

    async def wait(self, handle: Handle) -> Exit:
        """Return when the kernel's main process has ended."""
        return await asyncio.shield(self._watch(handle).exited)

    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM the group, give it grace seconds, SIGKILL what is left, drop the cgroup."""
        pid = int(handle["pid"])
        group = Path(handle["cgroup"]) if handle.get("cgroup") else None
        watch = self._watch(handle)
        if not watch.exited.done():
            self._signal_all(pid, group, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=grace)
        if not watch.exited.done():
            self._signal_all(pid, group, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(watch.exited), timeout=10)
        if group is not None:
            for _ in range(100):
                left = cgroups.procs(group)
                if not left:
                    break
                for p in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
                await asyncio.sleep(0.02)
            cgroups.remove(group)
        self._watches.pop(pid, None)

    async def is_alive(self, handle: Handle) -> bool:
        """True when the same process (pid and start time) still runs."""
        if handle.get("version") != HANDLE_VERSION:
            return False
        return _same_process(int(handle["pid"]), float(handle["create_time"]))

    async def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv with the kernel's cores, memory limit, cwd and env; stream its output."""
        group = Path(handle["cgroup"]) if handle.get("cgroup") else None
        plan = self._plan(launch, group, argv)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            LAUNCHER,
            json.dumps(plan),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self._env(launch),
            start_new_session=True,
        )
        queue: asyncio.Queue[ExecOutput | None] = asyncio.Queue()

        async def pump(stream: asyncio.StreamReader | None, name: str) -> None:
            assert stream is not None
            while chunk := await stream.read(65536):
                queue.put_nowait(ExecOutput(name, chunk))  # type: ignore[arg-type]
            queue.put_nowait(None)

        async def feed() -> None:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if stdin:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

        tasks = [
            asyncio.create_task(pump(proc.stdout, "stdout")),
            asyncio.create_task(pump(proc.stderr, "stderr")),
            asyncio.create_task(feed()),
        ]
        deadline = time.monotonic() + timeout if timeout > 0 else None
        timed_out = False
        try:
            open_streams = 2
            while open_streams:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    timed_out = True
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=remaining)
                except TimeoutError:
                    timed_out = True
                    break
                if item is None:
                    open_streams -= 1
                else:
                    yield item
            if timed_out:
                _killpg(proc.pid, signal.SIGKILL)
            code = await proc.wait()
            yield ExecExit(exit_code=128 - code if code < 0 else code, timed_out=timed_out)
        finally:
            if proc.returncode is None:
                _killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            for task in tasks:
                task.cancel()

    async def logs(self, handle: Handle, launch: LaunchSpec, tail_lines: int) -> bytes:
        """The kernel's combined stdout/stderr from its log file."""
        return await asyncio.to_thread(read_log_tail, launch.workdir / KERNEL_LOG, tail_lines)

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """Kill processes and cgroups this daemon made for agent_id that no record owns."""
        found = await asyncio.to_thread(self._find_processes, agent_id)
        reaped: set[KernelId] = set()
        for kernel_id, pids in found.items():
            if kernel_id in known:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            reaped.add(kernel_id)
        if self.cgroups is not None:
            for group in self.cgroups.agent_groups(agent_id):
                if group.name in known:
                    continue
                for pid in cgroups.procs(group):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                for _ in range(50):
                    if not cgroups.procs(group):
                        break
                    await asyncio.sleep(0.02)
                cgroups.remove(group)
                reaped.add(KernelId(group.name))
        return sorted(reaped)

    async def check(self) -> None:
        """The local backend is always available."""

    async def close(self) -> None:
        """Stop watching processes; the kernels themselves keep running."""
        for watch in self._watches.values():
            if not watch.exited.done() and watch._fd >= 0:
                asyncio.get_running_loop().remove_reader(watch._fd)
                os.close(watch._fd)
                watch._fd = -1
                watch.exited.cancel()
        self._watches.clear()

    # ---------------------------------------------------------------- details

    def _watch(self, handle: Handle) -> _ExitWatch:
        pid = int(handle["pid"])
        watch = self._watches.get(pid)
        if watch is None:
            group = Path(handle["cgroup"]) if handle.get("cgroup") else None
            watch = _ExitWatch(pid, float(handle["create_time"]), group)
            self._watches[pid] = watch
        return watch

    def _plan(self, launch: LaunchSpec, group: Path | None, argv: list[str]) -> dict[str, Any]:
        return {
            "cores": list(launch.cores),
            "cgroup": str(group) if group else None,
            "rlimit_as": launch.memory_limit if group is None and launch.memory_limit else None,
            "cwd": str(launch.workdir),
            "argv": argv,
            "status_fd": None,
        }

    def _env(self, launch: LaunchSpec) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOME"] = str(launch.workdir)
        env.update(launch.env)
        return env

    @staticmethod
    def _signal_all(pid: int, group: Path | None, sig: signal.Signals) -> None:
        _killpg(pid, sig)
        for p in cgroups.procs(group) if group else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)

    def _find_processes(self, agent_id: AgentId) -> dict[KernelId, list[int]]:
        found: dict[KernelId, list[int]] = collections.defaultdict(list)
        for proc in psutil.process_iter(["pid"]):
            try:
                env = proc.environ()
            except psutil.Error:
                continue
            if (
                env.get("AGENTHOST_DAEMON") == self.identity
                and env.get("AGENTHOST_AGENT_ID") == agent_id
            ):
                kernel_id = env.get("AGENTHOST_KERNEL_ID")
                with contextlib.suppress(OSError):
                    if kernel_id and proc.pid == os.getpgid(proc.pid):
                        found[KernelId(kernel_id)].append(proc.pid)
        return found


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _read_to_eof(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")
