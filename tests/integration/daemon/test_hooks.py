"""Lifecycle hooks on the real daemon over loopback gRPC, with real processes.

The hooks are `tests/hooks_fixture.py`'s, named in the daemon's config as an operator
would; the daemon runs in this process, so what they hear is read from its `CALLS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from protos import agent_pb2 as pb
from tests import hooks_fixture
from tests.hooks_fixture import DENY_REASON, Call, calls
from tests.servers import (
    Daemon,
    DaemonFactory,
    Stub,
    agent_info,
    create,
    eventually,
    get,
    kernels_dir_of,
    local_agents,
    sleeper,
)

MIB = 1 << 20
AGENTS = local_agents(2, base_port=43400)
RECORDER = 'hooks = ["tests.hooks_fixture:Recorder"]'
CALLER = "insecure:loopback"  # who calls a plaintext test daemon
RECORDER_NAME = "tests.hooks_fixture:Recorder"


@pytest.fixture(autouse=True)
def no_calls() -> Iterator[None]:
    hooks_fixture.CALLS.clear()
    yield
    hooks_fixture.CALLS.clear()


@pytest.fixture
async def hooked(start_daemon: DaemonFactory) -> AsyncIterator[Daemon]:
    """A daemon whose one hook refuses deny=1 kernels and records every call."""
    async with start_daemon(AGENTS, daemon=RECORDER) as d:
        yield d


def holding(kernel_id: str = "", port: int = 43410, **fields: Any) -> pb.KernelSpec:
    """A sleeper holding a core, memory and a chosen port."""
    return sleeper(
        kernel_id,
        resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
        ports=[pb.ServicePort(name="http", host_port=port)],
        **fields,
    )


def denied(kernel_id: str = "") -> pb.KernelSpec:
    """A spec the recorder refuses, asking for a core, memory and a port."""
    return holding(kernel_id, labels={"deny": "1"})


def occupancy(info: pb.AgentInfo) -> tuple[list[int], int, int, int]:
    o = info.occupied
    return sorted(o.cores), o.memory_bytes, o.ports, info.kernel_count


async def kernel_ids(stub: Stub, agent_id: str) -> list[str]:
    reply = await stub.ListKernels(pb.ListKernelsRequest(agent_id=agent_id))
    return [k.kernel_id for k in reply.kernels]


async def ended(kernel_id: str) -> Call:
    """The one post_terminate the recorder heard for kernel_id (waiting for it)."""
    (call,) = await eventually(lambda: calls("post_terminate", kernel_id), timeout=60)
    return call


def pid_of(kernel: pb.Kernel) -> int:
    return int(kernel.backend_ref.split()[1])


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class TestPreCreate:
    async def test_a_refused_create_is_permission_denied_and_takes_nothing(
        self, hooked: Daemon, tmp_path: Path
    ) -> None:
        stub = hooked.stub
        before = occupancy(await agent_info(stub, "a0"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(stub, "a0", denied())
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == (
            f"kernels[0]: refused by hook {RECORDER_NAME!r}: {DENY_REASON}"
        )
        # Asked before anything was allocated: not even an id.
        (asked,) = calls("pre_create")
        assert (asked.agent_id, asked.kernel_id, asked.caller) == ("a0", None, CALLER)
        assert asked.labels == {"deny": "1"}
        assert occupancy(await agent_info(stub, "a0")) == before
        assert await kernel_ids(stub, "a0") == []
        assert not any((kernels_dir_of(tmp_path) / "a0").iterdir())  # no working directory
        assert calls("post_create") == []

    async def test_one_refused_spec_refuses_the_whole_batch(self, hooked: Daemon) -> None:
        stub = hooked.stub
        before = occupancy(await agent_info(stub, "a0"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await create(stub, "a0", holding("fine"), denied("bad"))
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert caught.value.details() == (
            f"kernel 'bad': refused by hook {RECORDER_NAME!r}: {DENY_REASON}"
        )
        assert occupancy(await agent_info(stub, "a0")) == before
        assert await kernel_ids(stub, "a0") == []
        # The core and the port the allowed spec asked for were never taken.
        (kernel,) = await create(stub, "a0", holding("fine"))
        assert kernel.ports["http"] == 43410
        assert [c.kernel_id for c in await eventually(lambda: calls("post_create"))] == ["fine"]

    async def test_a_sync_pre_create_that_raises_fails_closed(
        self, start_daemon: DaemonFactory
    ) -> None:
        async with start_daemon(AGENTS, daemon='hooks = ["tests.hooks_fixture:RaisingPre"]') as d:
            before = occupancy(await agent_info(d.stub, "a0"))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create(d.stub, "a0", holding("k"))
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
            assert caught.value.details() == (
                "kernel 'k': refused: hook 'tests.hooks_fixture:RaisingPre' failed "
                "(the daemon's log has why)"
            )
            assert occupancy(await agent_info(d.stub, "a0")) == before
            assert await kernel_ids(d.stub, "a0") == []


class TestPostTerminate:
    async def test_hears_a_destroy_from_its_caller(self, hooked: Daemon) -> None:
        await create(hooked.stub, "a0", sleeper("k", labels={"team": "x"}))
        await hooked.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
        end = await ended("k")
        assert (end.state, end.end_reason, end.exit_code, end.caller) == (
            "terminated",
            "destroyed",
            128 + signal.SIGTERM,
            CALLER,
        )
        assert end.labels == {"team": "x"}
        (start,) = calls("post_create", "k")
        assert (start.state, start.caller) == ("running", CALLER)
        assert hooks_fixture.CALLS.index(start) < hooks_fixture.CALLS.index(end)

    async def test_hears_a_kernel_exit_by_itself_with_its_code(self, hooked: Daemon) -> None:
        await create(hooked.stub, "a0", sleeper("k", command=["sh", "-c", "exit 7"]))
        end = await ended("k")
        # Nobody ended it: no caller, though a call created it.
        assert (end.end_reason, end.exit_code, end.caller) == ("exited", 7, None)
        (start,) = calls("post_create", "k")
        assert hooks_fixture.CALLS.index(start) < hooks_fixture.CALLS.index(end)

    @pytest.mark.skipif(
        not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        reason="no cgroup memory controller on this host",
    )
    async def test_hears_an_oom_kill(self, hooked: Daemon) -> None:
        hog = pb.KernelSpec(
            kernel_id="hog",
            command=["python3", "-c", "import time; b = bytearray(400 << 20); time.sleep(30)"],
            resources=pb.ResourceRequest(memory_bytes=64 * MIB),
        )
        (kernel,) = await create(hooked.stub, "a1", hog)
        if kernel.memory_limit == "rlimit":
            pytest.skip("memory is limited by rlimit here, not by a cgroup")
        end = await ended("hog")
        assert (end.agent_id, end.end_reason, end.exit_code) == ("a1", "OOMKilled", 137)

    async def test_hears_a_kernel_reconcile_found_gone(
        self, hooked: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A backend that never reports the exit (as when its event stream is missed):
        # the reconcile loop is what finds the kernel gone.
        agent = hooked.server.runtime.agents["a0"]

        async def never(handle: object) -> Any:
            await asyncio.Event().wait()

        monkeypatch.setattr(agent.backend, "wait", never)
        (kernel,) = await create(hooked.stub, "a0", sleeper("k"))
        os.kill(pid_of(kernel), signal.SIGKILL)
        end = await ended("k")
        assert (end.end_reason, end.status_message, end.caller) == ("lost", "vanished", None)
        assert (await get(hooked.stub, "a0", "k")).end_reason == "lost"

    async def test_hears_a_kernel_that_ended_while_the_daemon_was_down(
        self, start_daemon: DaemonFactory
    ) -> None:
        async with start_daemon(AGENTS, daemon=RECORDER, destroy_kernels=False) as first:
            (kernel,) = await create(first.stub, "a0", sleeper("k"))
        assert calls("post_terminate") == []
        pid = pid_of(kernel)
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: not running(pid))
        async with start_daemon(AGENTS, daemon=RECORDER) as second:
            end = await ended("k")
            assert (end.end_reason, end.status_message, end.exit_code, end.caller) == (
                "lost",
                "ended while the daemon was down",
                None,
                None,
            )
            after = await get(second.stub, "a0", "k")
            assert (after.state, after.end_reason) == (pb.KERNEL_STATE_TERMINATED, "lost")
            assert occupancy(await agent_info(second.stub, "a0")) == ([], 0, 0, 0)

    async def test_a_kernel_alive_after_a_restart_is_not_heard_as_ended(
        self, start_daemon: DaemonFactory
    ) -> None:
        async with start_daemon(AGENTS, daemon=RECORDER, destroy_kernels=False) as first:
            await create(first.stub, "a0", sleeper("k"))
        async with start_daemon(AGENTS, daemon=RECORDER) as second:
            assert (await get(second.stub, "a0", "k")).state == pb.KERNEL_STATE_RUNNING
            await second.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
            end = await ended("k")  # once: by the destroy
            assert end.end_reason == "destroyed"


class TestFailingPostHooks:
    async def test_a_raising_post_hook_fails_no_call_and_the_next_hook_still_runs(
        self, start_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
    ) -> None:
        hooks = 'hooks = ["tests.hooks_fixture:RaisingPost", "tests.hooks_fixture:Recorder"]'
        with caplog.at_level(logging.ERROR, logger="daemon.hooks"):
            async with start_daemon(AGENTS, daemon=hooks) as d:
                (kernel,) = await create(d.stub, "a0", sleeper("k"))
                assert kernel.state == pb.KERNEL_STATE_RUNNING
                reply = await d.stub.DestroyKernel(
                    pb.DestroyKernelRequest(agent_id="a0", kernel_id="k")
                )
                assert reply.kernel.state == pb.KERNEL_STATE_TERMINATED
                await ended("k")
                assert [c.method for c in hooks_fixture.CALLS if c.hook == "RaisingPost"] == [
                    "post_create",
                    "post_terminate",
                ]
                # The daemon still serves.
                await create(d.stub, "a0", sleeper("after"))
        assert "hook tests.hooks_fixture:RaisingPost: post_create failed for kernel k" in (
            caplog.text
        )
        assert "hook tests.hooks_fixture:RaisingPost: post_terminate failed for kernel k" in (
            caplog.text
        )
