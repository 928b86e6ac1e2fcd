"""What this host offers local kernels, found once per daemon and shared by its local agents.

`LocalHost` holds what is the same for every local agent of one daemon: the
writable cgroup controllers (`cgroups.py`), the launcher (`launcher.py`),
whether the daemon can give kernels uids of their own (it runs as root), the
daemon-wide uid pool (`uids.py`), the shared /proc scan (`reconcile.py`) and
the few threads that start and stop kernels' processes (`offload`).
`acquire(identity)` detects it on the first local agent's start (in a thread)
and hands every later agent of that daemon the same one; `release` drops it
with the last agent, so a daemon started again in the same process (tests)
detects anew and rebuilds its uid pool from what it re-adopts. Knows nothing
of agents' settings, slices or gRPC.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from daemon.backends.local.cgroups import Cgroups
from daemon.backends.local.launcher import Launcher
from daemon.backends.local.reconcile import ProcessScan
from daemon.backends.local.uids import UidPool

T = TypeVar("T")

# The thread that starts and stops kernels' processes, per daemon. A start is
# mostly system calls (mkdir, cgroup writes, posix_spawn, a pipe read) that keep a
# core busy in the kernel and need the interpreter lock only between them. One
# thread makes a 128-kernel batch no slower than two or six (the kernel's own work
# is the bottleneck: 0.9-1.1 s here) and leaves the other core to the event loop:
# with a thread per start (the default executor's six) the p99 of a concurrent
# ListAgents was 60-300 ms, with two 60-120 ms, with one 17-47 ms
# (bench_robustness.py --quick, 2-core machine).
PROCESS_THREADS = 1


@dataclass
class LocalHost:
    """One daemon's view of the host for local kernels."""

    identity: str
    cgroups: Cgroups
    launcher: Launcher
    privileged: bool  # euid 0: kernels can run as uids of their own
    uids: UidPool = field(default_factory=UidPool)
    scan: ProcessScan = field(init=False)
    workers: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.scan = ProcessScan(self.identity)
        self.workers = ThreadPoolExecutor(PROCESS_THREADS, thread_name_prefix="kernel-process")

    async def offload(self, fn: Callable[[], T]) -> T:
        """fn() in the daemon's thread for kernel processes (starts; the kill passes and
        cgroup removals of stops), in the caller's context."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.workers, context.run, fn)

    @classmethod
    def detect(cls, identity: str) -> LocalHost:
        """Probe cgroups and the launcher (blocking: run it in a thread)."""
        return cls(
            identity=identity,
            cgroups=Cgroups.detect(identity),
            launcher=Launcher.detect(),
            privileged=os.geteuid() == 0,
        )


@dataclass
class _Shared:
    detecting: asyncio.Task[LocalHost]
    loop: asyncio.AbstractEventLoop
    users: int = 0


_hosts: dict[str, _Shared] = {}


async def acquire(identity: str) -> LocalHost:
    """The daemon's LocalHost, detected by the first caller; pair every call with release."""
    loop = asyncio.get_running_loop()
    shared = _hosts.get(identity)
    if shared is None or shared.loop is not loop:
        task = loop.create_task(asyncio.to_thread(LocalHost.detect, identity))
        shared = _hosts[identity] = _Shared(task, loop)
    shared.users += 1
    try:
        return await asyncio.shield(shared.detecting)
    except BaseException:
        release(identity)
        raise


def release(identity: str) -> bool:
    """One local agent of the daemon is done with its LocalHost; True for the last one."""
    shared = _hosts.get(identity)
    if shared is None:
        return False
    shared.users -= 1
    if shared.users > 0:
        return False
    del _hosts[identity]
    detecting = shared.detecting
    if detecting.done() and not detecting.cancelled() and detecting.exception() is None:
        detecting.result().workers.shutdown(wait=False)
    return True
