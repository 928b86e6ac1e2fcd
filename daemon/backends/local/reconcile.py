"""Liveness of local kernels, and reaping the processes and cgroups nobody owns.

A kernel is alive while the process its handle names runs: same pid *and* same
start time, and not a zombie. Ownership is the environment the daemon gives
every kernel (`AGENTHOST_DAEMON`, `AGENTHOST_AGENT_ID`, `AGENTHOST_KERNEL_ID`)
and the cgroup names (`agenthost-<daemon>/<agent_id>/<kernel_id>`): a process or
group of another agent or another daemon is never touched. Knows processes and
cgroups; nothing of the agent's checkpoint beyond the handle and the set of
kernel ids it is given.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
from collections.abc import Container

import psutil

from common.ids import AgentId, KernelId
from daemon.backends.local import cgroups
from daemon.backends.local.cgroups import MemoryCgroups
from daemon.backends.local.handle import ProcessHandle

START_TIME_TOLERANCE = 0.05  # seconds: psutil's start times are rounded


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
    """True when the kernel's own process (not a recycled pid) still runs."""
    return same_process(handle.pid, handle.create_time)


async def reap_dangling(
    identity: str,
    memory_cgroups: MemoryCgroups | None,
    agent_id: AgentId,
    known: Container[KernelId],
) -> list[KernelId]:
    """Kill processes and cgroups this daemon made for agent_id whose kernel is not in known.

    The scan is a snapshot: a kernel destroyed since is no longer in known, but its
    process is gone too (and its pid may be another process's by now), so only a
    process that is still the one scanned, and a group that still exists, is ended.
    """
    found = await asyncio.to_thread(find_processes, identity, agent_id)
    reaped: set[KernelId] = set()
    for kernel_id, processes in found.items():
        if kernel_id in known:
            continue
        for pid, create_time in processes:
            if not same_process(pid, create_time):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            reaped.add(kernel_id)
    if memory_cgroups is not None:
        for group in memory_cgroups.agent_groups(agent_id):
            if group.name in known or not group.is_dir():
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


def find_processes(identity: str, agent_id: AgentId) -> dict[KernelId, list[tuple[int, float]]]:
    """Group leaders (pid, start time) whose environment marks them as this daemon's
    kernels of agent_id."""
    found: dict[KernelId, list[tuple[int, float]]] = collections.defaultdict(list)
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            create_time = proc.create_time()
        except psutil.Error:
            continue
        if env.get("AGENTHOST_DAEMON") == identity and env.get("AGENTHOST_AGENT_ID") == agent_id:
            kernel_id = env.get("AGENTHOST_KERNEL_ID")
            with contextlib.suppress(OSError):
                if kernel_id and proc.pid == os.getpgid(proc.pid):
                    found[KernelId(kernel_id)].append((proc.pid, create_time))
    return found
