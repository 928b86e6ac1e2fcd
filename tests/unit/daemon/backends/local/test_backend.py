"""The local backend's verbs in process, on a LocalHost the test builds: real processes.

What the daemon-level tests cannot choose: a daemon that is not root, a host
without writable cgroups, and the uid pool seen directly across start, stop,
restart and recover. Steps that need root skip without it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.errors import InvalidArgument
from common.ids import AgentId, KernelId
from daemon.backends.base import LaunchSpec
from daemon.backends.local import backend as backend_module
from daemon.backends.local.backend import LocalBackend
from daemon.backends.local.cgroups import Cgroups
from daemon.backends.local.handle import ProcessHandle
from daemon.backends.local.host import LocalHost
from daemon.backends.local.launcher import Launcher
from daemon.backends.local.settings import LocalSettings

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="kernels of their own uid need root")
UIDS = (2_000_500, 2_000_501)


def host(privileged: bool, identity: str = "unit") -> LocalHost:
    """A host without cgroups (none are made), with the best launcher built."""
    return LocalHost(identity, Cgroups(), Launcher.detect(), privileged)


def spec(tmp_path: Path, kernel_id: str, command: tuple[str, ...] = ("sleep", "60")) -> LaunchSpec:
    workdir = tmp_path / kernel_id
    workdir.mkdir(exist_ok=True)
    return LaunchSpec(
        agent_id=AgentId("a0"),
        kernel_id=KernelId(kernel_id),
        image="",
        command=command,
        env={"AGENTHOST_DAEMON": "unit"},
        labels={},
        workdir=workdir,
        cores=tuple(sorted(os.sched_getaffinity(0))),
        memory_limit=1 << 30,
    )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    b = LocalBackend(AgentId("a0"), LocalSettings(uid_range=UIDS, pids_max=64), host(ROOT))
    yield b
    for watch in list(b._watches.values()):  # whatever a failed test left running
        if not watch.exited.done():
            os.killpg(watch.pid, signal.SIGKILL)
    await b.close()


class TestAccounts:
    async def test_a_daemon_that_is_not_root_runs_kernels_as_itself_and_says_so(
        self, tmp_path: Path
    ) -> None:
        b = LocalBackend(AgentId("a0"), LocalSettings(), host(privileged=False))
        started = await b.start(spec(tmp_path, "k"))
        try:
            assert (started.uid, started.gid) == (os.geteuid(), os.getegid())
            assert started.limits == {
                "cpuset": "affinity",
                "memory": "rlimit",
                "pids": "none",  # RLIMIT_NPROC would count the daemon's own processes
                "user": "daemon",
            }
            assert ProcessHandle.parse(started.handle) == ProcessHandle(
                pid=int(started.backend_ref.split()[1]),
                create_time=ProcessHandle.parse(started.handle).create_time,  # type: ignore[union-attr]
            )
        finally:
            await b.stop(started.handle, 0)
            await b.close()

    @needs_root
    async def test_without_a_pids_cgroup_an_own_uid_gets_rlimit_nproc(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        started = await backend.start(spec(tmp_path, "k"))
        assert started.limits["pids"] == "rlimit" and started.limits["user"] == "uid-range"
        events = [
            e
            async for e in backend.execute(
                started.handle,
                spec(tmp_path, "k"),
                ["sh", "-c", "grep 'Max processes' /proc/self/limits; id -u"],
                b"",
                10,
            )
        ]
        out = b"".join(getattr(e, "data", b"") for e in events).decode().split()
        assert out[2:4] == ["64", "64"] and out[-1] == str(started.uid)
        await backend.stop(started.handle, 0)

    @needs_root
    async def test_run_as_puts_every_kernel_under_one_account(self, tmp_path: Path) -> None:
        b = LocalBackend(AgentId("a0"), LocalSettings(run_as="nobody"), host(True))
        first = await b.start(spec(tmp_path, "k1"))
        second = await b.start(spec(tmp_path, "k2"))
        try:
            assert first.uid == second.uid == 65534
            assert first.limits["user"] == "run-as" and first.limits["pids"] == "none"
            assert b.host.uids.held() == {}
            assert os.stat(tmp_path / "k1").st_uid == 65534
        finally:
            for s in (first, second):
                await b.stop(s.handle, 0)
            await b.close()


@needs_root
class TestUidLifecycle:
    async def test_a_uid_is_held_while_its_kernel_runs_and_returned_by_stop(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        started = await backend.start(spec(tmp_path, "k"))
        assert started.uid in UIDS
        assert backend.host.uids.held() == {
            started.uid: ProcessHandle.parse(started.handle).owner  # type: ignore[union-attr]
        }
        st = os.stat(tmp_path / "k")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (started.uid, started.uid, 0o700)
        await backend.stop(started.handle, 0)
        assert backend.host.uids.held() == {}
        await backend.stop(started.handle, 0)  # idempotent

    async def test_a_restarted_kernel_gets_back_the_uid_its_directory_belongs_to(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        first = await backend.start(spec(tmp_path, "k"))
        (tmp_path / "k" / "notes").write_text("mine")
        os.chown(tmp_path / "k" / "notes", first.uid or 0, first.uid or 0)
        await backend.stop(first.handle, 0)
        other = await backend.start(spec(tmp_path, "other"))  # the round-robin's next
        again = await backend.start(spec(tmp_path, "k"))
        assert again.uid == first.uid != other.uid
        for s in (other, again):
            await backend.stop(s.handle, 0)

    async def test_a_directory_left_by_another_uid_is_handed_over(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        launch = spec(tmp_path, "k")
        (launch.workdir / "sub").mkdir()
        (launch.workdir / "sub" / "f").write_text("x")
        (launch.workdir / "link").symlink_to("/etc/passwd")
        for path in (launch.workdir, launch.workdir / "sub", launch.workdir / "sub" / "f"):
            os.chown(path, 3_000_000, 3_000_000)
        started = await backend.start(launch)
        assert {
            os.stat(p).st_uid for p in (launch.workdir / "sub", launch.workdir / "sub" / "f")
        } == {started.uid}
        assert os.stat("/etc/passwd").st_uid == 0  # the link was not followed
        await backend.stop(started.handle, 0)

    async def test_a_full_range_refuses_and_a_failed_start_returns_its_uid(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        with pytest.raises(InvalidArgument) as info:
            await backend.start(spec(tmp_path, "bad", ("/no/such/program",)))
        assert str(info.value) == (
            "kernel 'bad' cannot start: /no/such/program: No such file or directory"
        )
        assert backend.host.uids.held() == {}
        a = await backend.start(spec(tmp_path, "a"))
        b = await backend.start(spec(tmp_path, "b"))
        with pytest.raises(Exception, match="every uid of uid_range 2000500-2000501"):
            await backend.start(spec(tmp_path, "c"))
        for s in (a, b):
            await backend.stop(s.handle, 0)

    async def test_recover_holds_a_readopted_kernels_uid_again(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        started = await backend.start(spec(tmp_path, "k"))
        # A new daemon (a new LocalHost) knows nothing until the agent recovers the kernel.
        fresh = LocalBackend(AgentId("a0"), backend.settings, host(True, "unit-2"))
        await fresh.recover(started.handle)
        await fresh.recover(started.handle)  # idempotent
        assert set(fresh.host.uids.held()) == {started.uid}
        other = await fresh.start(spec(tmp_path, "other"))
        assert other.uid != started.uid
        await fresh.stop(other.handle, 0)
        await fresh.stop(started.handle, 0)
        assert fresh.host.uids.held() == {}
        await fresh.close()

    async def test_a_stale_stop_of_an_old_handle_keeps_the_new_kernels_uid(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        old = await backend.start(spec(tmp_path, "k"))
        await backend.stop(old.handle, 0)
        new = await backend.start(spec(tmp_path, "k"))  # same directory: same uid
        assert new.uid == old.uid
        await backend.stop(old.handle, 0)
        assert set(backend.host.uids.held()) == {new.uid}
        await backend.stop(new.handle, 0)


class TestFailures:
    async def test_a_directory_the_daemon_cannot_use_is_a_failed_precondition(
        self, backend: LocalBackend, tmp_path: Path
    ) -> None:
        launch = replace(spec(tmp_path, "k"), workdir=tmp_path / "absent")
        with pytest.raises(Exception, match="kernel 'k' cannot start: ") as info:
            await backend.start(launch)
        assert type(info.value).__name__ == "FailedPrecondition"
        assert backend.host.uids.held() == {}


class TestLiveness:
    """is_alive answers from the kernel's exit watch (its pidfd) without reading /proc
    while the watch runs, and from /proc once it does not."""

    async def test_a_watched_kernel_is_alive_without_proc_and_dead_once_it_ends(
        self, tmp_path: Path, backend: LocalBackend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        started = await backend.start(spec(tmp_path, "k"))
        asked: list[ProcessHandle] = []
        real = backend_module.is_alive

        def counting(handle: ProcessHandle) -> bool:
            asked.append(handle)
            return real(handle)

        monkeypatch.setattr(backend_module, "is_alive", counting)
        assert await backend.is_alive(started.handle)
        assert asked == []  # the watch answered

        h = ProcessHandle.parse(started.handle)
        assert h is not None
        os.killpg(h.pid, signal.SIGKILL)
        await backend.wait(started.handle)
        assert not await backend.is_alive(started.handle)
        await backend.stop(started.handle, 0)
        assert not await backend.is_alive(started.handle)
        assert asked  # with no watch left, /proc was asked

    async def test_a_watch_of_another_process_on_the_same_pid_does_not_answer(
        self, tmp_path: Path, backend: LocalBackend
    ) -> None:
        started = await backend.start(spec(tmp_path, "k"))
        try:
            other = {**started.handle, "create_time": started.handle["create_time"] - 100}
            assert not await backend.is_alive(other)  # a recycled pid is not the kernel
            assert await backend.is_alive(started.handle)
        finally:
            await backend.stop(started.handle, 0)
