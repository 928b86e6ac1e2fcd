"""WaitKernel and WatchKernels on the real daemon over loopback gRPC, with real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from tests.servers import Daemon, DaemonSetup, Stub, create, local_agents, sleeper

MIB = 1 << 20
TERMINATED = pb.KERNEL_EVENT_TYPE_TERMINATED


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    return DaemonSetup(local_agents(2, base_port=43000))


def exiting(kernel_id: str, code: int, after: float = 0.3) -> pb.KernelSpec:
    return pb.KernelSpec(kernel_id=kernel_id, command=["sh", "-c", f"sleep {after}; exit {code}"])


async def wait(
    stub: Stub, agent_id: str, kernel_id: str, timeout: float = 0
) -> pb.WaitKernelResponse:
    reply: pb.WaitKernelResponse = await stub.WaitKernel(
        pb.WaitKernelRequest(agent_id=agent_id, kernel_id=kernel_id, timeout=timeout)
    )
    return reply


class TestWaitKernel:
    async def test_returns_the_exit_code_of_a_kernel_that_exits_by_itself(
        self, daemon: Daemon
    ) -> None:
        await create(daemon.stub, "a0", exiting("k", 7))
        reply = await wait(daemon.stub, "a0", "k")
        assert reply.terminated
        assert (reply.exit_code, reply.reason) == (7, "exited")
        assert reply.kernel.state == pb.KERNEL_STATE_TERMINATED
        assert reply.kernel.end_reason == "exited"

    async def test_returns_how_a_destroyed_kernel_ended(self, daemon: Daemon) -> None:
        await create(daemon.stub, "a0", sleeper("k"))
        waiting = asyncio.ensure_future(wait(daemon.stub, "a0", "k"))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
        reply = await waiting
        assert reply.terminated and reply.reason == "destroyed"
        assert reply.exit_code == 128 + 15  # sleep ended by the destroy's SIGTERM
        # A wait that comes just after the destroy still learns how it ended.
        late = await wait(daemon.stub, "a0", "k")
        assert (late.terminated, late.reason, late.exit_code) == (True, "destroyed", 143)

    @pytest.mark.skipif(
        not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        reason="no cgroup memory controller on this host",
    )
    async def test_returns_oomkilled_for_a_kernel_over_its_memory(self, daemon: Daemon) -> None:
        hog = pb.KernelSpec(
            kernel_id="hog",
            command=["python3", "-c", "import time; b = bytearray(400 << 20); time.sleep(30)"],
            resources=pb.ResourceRequest(memory_bytes=64 * MIB),
        )
        (kernel,) = await create(daemon.stub, "a1", hog)
        if kernel.memory_limit == "rlimit":
            pytest.skip("memory is limited by rlimit here, not by a cgroup")
        reply = await wait(daemon.stub, "a1", "hog", timeout=60)
        assert reply.terminated
        assert (reply.reason, reply.exit_code) == ("OOMKilled", 137)

    async def test_the_timeout_returns_the_running_kernel(self, daemon: Daemon) -> None:
        await create(daemon.stub, "a0", sleeper("k"))
        reply = await wait(daemon.stub, "a0", "k", timeout=0.2)
        assert not reply.terminated and not reply.HasField("exit_code") and reply.reason == ""
        assert reply.kernel.state == pb.KERNEL_STATE_RUNNING

    async def test_a_kernel_ended_before_the_wait_answers_at_once(self, daemon: Daemon) -> None:
        await create(daemon.stub, "a0", exiting("k", 3, after=0))
        await wait(daemon.stub, "a0", "k")
        again = await wait(daemon.stub, "a0", "k", timeout=0.01)
        assert (again.terminated, again.exit_code) == (True, 3)

    async def test_unknown_kernels_and_agents_are_not_found(self, daemon: Daemon) -> None:
        await create(daemon.stub, "a1", sleeper("theirs"))
        for agent_id, kernel_id, says in (
            ("a0", "nope", "kernel 'nope' not found on agent 'a0'"),
            ("a0", "theirs", "it belongs to agent 'a1'"),
            ("a9", "theirs", "agent 'a9' not found"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await wait(daemon.stub, agent_id, kernel_id, timeout=1)
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            assert says in (caught.value.details() or "")

    async def test_a_timeout_that_is_not_a_finite_number_is_invalid(self, daemon: Daemon) -> None:
        await create(daemon.stub, "a0", sleeper("k"))
        for bad in (float("inf"), float("nan"), -1.0):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await wait(daemon.stub, "a0", "k", timeout=bad)
            assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def collect(
    stub: Stub, agent_id: str, until: int, count: int = 1
) -> tuple[list[pb.KernelEvent], grpc.aio.UnaryStreamCall[pb.WatchKernelsRequest, pb.KernelEvent]]:
    """Start a watch; return once `count` events of type `until` after SYNCED arrived."""
    call = stub.WatchKernels(pb.WatchKernelsRequest(agent_id=agent_id))
    events: list[pb.KernelEvent] = []
    async for event in call:
        events.append(event)
        synced = any(e.type == pb.KERNEL_EVENT_TYPE_SYNCED for e in events)
        later = [e for e in events if e.type == until and not e.initial]
        if synced and len(later) >= count:
            break
    return events, call


class TestWatchKernels:
    async def test_a_watch_started_after_a_kernel_exists_still_reports_its_end(
        self, daemon: Daemon
    ) -> None:
        await create(daemon.stub, "a0", exiting("k", 5, after=1.0))
        events, call = await asyncio.wait_for(collect(daemon.stub, "a0", TERMINATED), 30)
        call.cancel()
        first, synced = events[0], events[1]
        assert (first.type, first.initial, first.kernel.kernel_id) == (
            pb.KERNEL_EVENT_TYPE_RUNNING,
            True,
            "k",
        )
        assert synced.type == pb.KERNEL_EVENT_TYPE_SYNCED and not synced.HasField("kernel")
        end = events[-1]
        assert (end.kernel.kernel_id, end.exit_code, end.reason) == ("k", 5, "exited")
        assert not end.initial

    async def test_events_follow_a_kernel_through_its_life_in_order(self, daemon: Daemon) -> None:
        call = daemon.stub.WatchKernels(pb.WatchKernelsRequest(agent_id="a0"))
        seen: list[int] = []

        async def read() -> None:
            async for event in call:
                seen.append(event.type)
                if event.type == pb.KERNEL_EVENT_TYPE_REMOVED:
                    return

        reading = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)
        await create(daemon.stub, "a0", sleeper("k"))
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
        await asyncio.wait_for(reading, 30)
        assert seen == [
            pb.KERNEL_EVENT_TYPE_SYNCED,
            pb.KERNEL_EVENT_TYPE_CREATED,
            pb.KERNEL_EVENT_TYPE_RUNNING,
            pb.KERNEL_EVENT_TYPE_TERMINATED,
            pb.KERNEL_EVENT_TYPE_REMOVED,
        ]

    async def test_an_agents_watch_hears_only_that_agent_and_an_empty_id_hears_all(
        self, daemon: Daemon
    ) -> None:
        await create(daemon.stub, "a0", exiting("on-a0", 1, after=0.5))
        await create(daemon.stub, "a1", exiting("on-a1", 2, after=0.5))
        only_a1, call = await asyncio.wait_for(collect(daemon.stub, "a1", TERMINATED), 30)
        call.cancel()
        assert {e.kernel.agent_id for e in only_a1 if e.HasField("kernel")} == {"a1"}
        await create(daemon.stub, "a0", exiting("again-a0", 0, after=0.5))
        await create(daemon.stub, "a1", exiting("again-a1", 0, after=0.5))
        every, call = await asyncio.wait_for(collect(daemon.stub, "", TERMINATED, count=2), 30)
        call.cancel()
        ended = {e.kernel.kernel_id for e in every if e.type == TERMINATED and not e.initial}
        assert ended == {"again-a0", "again-a1"}
        initial = {e.kernel.kernel_id for e in every if e.initial}
        assert {"on-a0", "on-a1"} <= initial  # the ended ones are in the snapshot too

    async def test_an_unknown_agent_is_not_found(self, daemon: Daemon) -> None:
        call = daemon.stub.WatchKernels(pb.WatchKernelsRequest(agent_id="a9"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
