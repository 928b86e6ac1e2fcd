"""daemon/backends/local/reconcile.py: one /proc scan for every agent, and what it may kill.

Real processes marked the way the daemon marks kernels (the AGENTHOST_* env,
their own session); the scan is shared by agents that ask at once, and a pid
from a scan is killed only while it still names the same process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest

from common.ids import AgentId, KernelId
from daemon.backends.local import reconcile
from daemon.backends.local.cgroups import Cgroups
from daemon.backends.local.reconcile import Found, ProcessScan, reap_dangling, scan_processes

IDENTITY = f"scan-test-{os.getpid()}"


@pytest.fixture
def kernels() -> Iterator[dict[tuple[str, str], subprocess.Popen[bytes]]]:
    """Three marked group leaders (two agents), one unmarked, one of another daemon."""
    procs: dict[tuple[str, str, str], subprocess.Popen[bytes]] = {}
    for agent, kernel, daemon in (
        ("a0", "k1", IDENTITY),
        ("a0", "k2", IDENTITY),
        ("a1", "k3", IDENTITY),
        ("a0", "k9", "another-daemon"),
    ):
        env = {
            "AGENTHOST_DAEMON": daemon,
            "AGENTHOST_AGENT_ID": agent,
            "AGENTHOST_KERNEL_ID": kernel,
        }
        procs[(daemon, kernel)] = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    yield {(a, k): p for (d, k), p in procs.items() if d == IDENTITY for a in ("a0", "a1")}
    for proc in procs.values():
        proc.kill()
        proc.wait()


class TestScan:
    def test_finds_this_daemons_group_leaders_by_agent_and_kernel(
        self, kernels: dict[tuple[str, str], subprocess.Popen[bytes]]
    ) -> None:
        found = scan_processes(IDENTITY)
        assert sorted(found) == [("a0", "k1"), ("a0", "k2"), ("a1", "k3")]
        assert [f.pid for f in found[("a0", "k1")]] == [kernels[("a0", "k1")].pid]

    async def test_agents_asking_at_once_share_one_scan(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []

        def counting(identity: str) -> reconcile.Scan:
            calls.append(identity)
            return {}

        monkeypatch.setattr(reconcile, "scan_processes", counting)
        scan = ProcessScan(IDENTITY)
        await asyncio.gather(*(scan.result() for _ in range(5)))
        assert calls == [IDENTITY]
        monkeypatch.setattr(reconcile, "SCAN_REUSE", 0.0)
        await scan.result()
        assert calls == [IDENTITY, IDENTITY]


class TestReapDangling:
    async def test_kills_only_unknown_kernels_of_the_agent(
        self, kernels: dict[tuple[str, str], subprocess.Popen[bytes]]
    ) -> None:
        reaped = await reap_dangling(
            ProcessScan(IDENTITY), Cgroups(), AgentId("a0"), {KernelId("k1")}
        )
        assert reaped == ["k2"]
        assert kernels[("a0", "k2")].wait(10) == -9
        assert kernels[("a0", "k1")].poll() is None
        assert kernels[("a1", "k3")].poll() is None

    async def test_a_pid_that_now_names_another_process_is_spared_and_not_reported(
        self, kernels: dict[tuple[str, str], subprocess.Popen[bytes]]
    ) -> None:
        victim = kernels[("a0", "k2")]
        stale = {("a0", "k2"): [Found(victim.pid, start=1)]}  # not its start time
        scan = ProcessScan(IDENTITY)
        scan._last = (float("inf"), stale)  # a scan that would answer, with a recycled pid
        assert await reap_dangling(scan, Cgroups(), AgentId("a0"), set()) == []
        assert victim.poll() is None

    async def test_a_kernel_destroyed_since_the_scan_is_not_reported_dangling(self) -> None:
        gone = await asyncio.create_subprocess_exec("true", start_new_session=True)
        await gone.wait()  # its record removed after its process ended, as a destroy does
        scan = ProcessScan(IDENTITY)
        scan._last = (float("inf"), {("a0", "k4"): [Found(gone.pid, start=1)]})
        assert await reap_dangling(scan, Cgroups(), AgentId("a0"), set()) == []
