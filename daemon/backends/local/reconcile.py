"""Finding and ending the processes and cgroups of local kernels nobody owns.

Ownership is the environment the daemon gives every kernel (`AGENTHOST_DAEMON`,
`AGENTHOST_AGENT_ID`, `AGENTHOST_KERNEL_ID`) and the cgroup names
(`agenthost-<daemon>/<agent_id>/<kernel_id>`): a process or group of another
agent or another daemon is never touched.

Finding dangling processes means reading every process's environment, so one
scan serves every agent of the daemon (`ProcessScan`): agents that ask while a
scan runs, or shortly after, share it. A pid from a scan is killed only while
it is still the same process (start time), so sharing never reaches a
recycled pid. Knows processes and cgroups; nothing of the agent's checkpoint
beyond the set of kernel ids it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Container
from dataclasses import dataclass

from common.ids import AgentId, KernelId
from daemon.backends.local.cgroups import Cgroups, KernelGroups
from daemon.backends.local.process import kill_remaining

SCAN_REUSE = 2.0  # seconds a finished scan still answers other agents
PROC = "/proc"


@dataclass(frozen=True)
class Found:
    """A kernel's group leader found by a scan: pid and its start (clock ticks since boot)."""

    pid: int
    start: int


Scan = dict[tuple[str, str], list[Found]]  # (agent_id, kernel_id) -> leaders


def scan_processes(identity: str) -> Scan:
    """Every group leader whose environment marks it as one of this daemon's kernels.

    Blocking (reads /proc): run it in a thread. Reads a process's environment only
    when it leads its process group, as every kernel's main process does.
    """
    marker = f"AGENTHOST_DAEMON={identity}".encode()
    found: Scan = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        stat = _stat(int(name))
        if stat is None or stat[0] != int(name):  # not a group leader
            continue
        try:
            with open(f"{PROC}/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if marker not in environ:
            continue
        env = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        agent_id = env.get(b"AGENTHOST_AGENT_ID")
        kernel_id = env.get(b"AGENTHOST_KERNEL_ID")
        if env.get(b"AGENTHOST_DAEMON") == identity.encode() and agent_id and kernel_id:
            key = (agent_id.decode(errors="replace"), kernel_id.decode(errors="replace"))
            found.setdefault(key, []).append(Found(int(name), stat[1]))
    return found


class ProcessScan:
    """One /proc scan at a time for the whole daemon, shared by the agents that ask for it."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self._running: asyncio.Task[Scan] | None = None
        self._last: tuple[float, Scan] | None = None

    async def result(self) -> Scan:
        """A scan started at most SCAN_REUSE seconds ago, or a new one (in a thread)."""
        if self._last is not None and time.monotonic() - self._last[0] < SCAN_REUSE:
            return self._last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._scan())
        return await asyncio.shield(self._running)

    async def _scan(self) -> Scan:
        started = time.monotonic()
        found = await asyncio.to_thread(scan_processes, self.identity)
        self._last = (started, found)
        return found


async def reap_dangling(
    scan: ProcessScan,
    groups: Cgroups,
    agent_id: AgentId,
    known: Container[KernelId],
) -> list[KernelId]:
    """Kill processes and cgroups this daemon made for agent_id whose kernel is not in known;
    the kernels something was ended for.

    The scan may be older than known: a kernel destroyed since is in neither, and its
    leader is gone (or its pid is another process's), so nothing is ended for it and it
    is not reported.
    """
    found = await scan.result()
    dangling = {
        KernelId(kernel_id): leaders
        for (agent, kernel_id), leaders in found.items()
        if agent == agent_id and KernelId(kernel_id) not in known
    }
    reaped = await asyncio.to_thread(_kill_leaders, dangling) if dangling else set()
    leftover = await asyncio.to_thread(groups.agent_groups, agent_id)
    unowned = {k: g for k, g in leftover.items() if KernelId(k) not in known}
    if unowned:
        await asyncio.to_thread(_remove_groups, list(unowned.values()))
        reaped.update(KernelId(k) for k in unowned)
    return sorted(reaped)


def _kill_leaders(dangling: dict[KernelId, list[Found]]) -> set[KernelId]:
    """Kill the leaders that still are the processes scanned; the kernels they led."""
    ended: set[KernelId] = set()
    for kernel_id, leaders in dangling.items():
        for leader in leaders:
            stat = _stat(leader.pid)
            if stat is None or stat[1] != leader.start:
                continue  # gone, or its pid now names another process
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(leader.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(leader.pid, signal.SIGKILL)
            ended.add(kernel_id)
    return ended


def _remove_groups(groups: list[KernelGroups]) -> None:
    for group in groups:
        kill_remaining(group)


def _stat(pid: int) -> tuple[int, int] | None:
    """(process group id, start time in clock ticks) of pid, or None when it is gone or
    has ended (a zombie: a kernel destroyed meanwhile whose exit is not reaped yet)."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # After the command: state(0) ppid(1) pgrp(2) ... starttime(19)
    try:
        if fields[0] in (b"Z", b"X"):
            return None
        return int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None
