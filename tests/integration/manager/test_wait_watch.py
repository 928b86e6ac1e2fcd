"""WaitKernel and WatchKernels through the real manager, with a real daemon behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    create,
    linked_daemon_config,
    manager_config,
    running_manager,
    user_channel,
)
from tests.servers import Daemon, eventually, running_daemon, sleeper

TERMINATED = pb.KERNEL_EVENT_TYPE_TERMINATED
Stub = manager_pb2_grpc.ManagerServiceStub


@dataclass
class Setup:
    manager: Manager
    daemon: Daemon


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_manager(manager_config(tmp_path, missed_heartbeats=50)) as manager:
        agents = agents_toml(("w0", "default", 47400, ""), ("w1", "other", 47410, ""))
        path = linked_daemon_config(tmp_path, "d", manager.address, agents)
        async with running_daemon(path) as daemon:

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 2

            await eventually(registered)
            yield Setup(manager, daemon)


def exiting(kernel_id: str, code: int, after: float) -> pb.KernelSpec:
    return pb.KernelSpec(kernel_id=kernel_id, command=["sh", "-c", f"sleep {after}; exit {code}"])


async def wait(stub: Stub, kernel_id: str, timeout: float = 0) -> pb.WaitKernelResponse:
    reply: pb.WaitKernelResponse = await stub.WaitKernel(
        pb.WaitKernelRequest(kernel_id=kernel_id, timeout=timeout), timeout=60
    )
    return reply


async def watch_until(stub: Stub, agent_id: str, kernel_id: str, kind: int) -> list[pb.KernelEvent]:
    """Every event of a watch until one of `kind` for kernel_id after SYNCED."""
    call = stub.WatchKernels(pb.WatchKernelsRequest(agent_id=agent_id))
    events: list[pb.KernelEvent] = []
    try:
        async for event in call:
            events.append(event)
            if event.type == kind and event.kernel.kernel_id == kernel_id and not event.initial:
                return events
    finally:
        call.cancel()
    raise AssertionError(f"the watch ended before {kernel_id}'s event: {events}")


class TestWaitThroughTheManager:
    async def test_the_exit_code_arrives_and_the_manager_knows_the_end_at_once(
        self, setup: Setup
    ) -> None:
        stub = setup.manager.stub
        await create(stub, exiting("k", 9, after=0.5))
        reply = await wait(stub, "k")
        assert (reply.terminated, reply.exit_code, reply.reason) == (True, 9, "exited")
        got = await stub.GetKernel(pb.GetKernelRequest(kernel_id="k"))
        assert got.kernel.kernel.state == pb.KERNEL_STATE_TERMINATED

    async def test_a_kernel_destroyed_while_waited_for_is_destroyed(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(stub, sleeper("k"))
        waiting = asyncio.ensure_future(wait(stub, "k"))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k"))
        reply = await asyncio.wait_for(waiting, 30)
        assert (reply.terminated, reply.reason, reply.exit_code) == (True, "destroyed", 143)

    async def test_the_timeout_passes_with_the_kernel_still_running(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(stub, sleeper("k"))
        reply = await wait(stub, "k", timeout=0.3)
        assert not reply.terminated and reply.kernel.state == pb.KERNEL_STATE_RUNNING

    async def test_an_unknown_kernel_is_not_found(self, setup: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await wait(setup.manager.stub, "nope", timeout=1)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


class TestWatchThroughTheManager:
    async def test_a_watch_started_after_a_kernel_exists_reports_its_end(
        self, setup: Setup
    ) -> None:
        stub = setup.manager.stub
        await create(stub, exiting("k", 4, after=1.0))
        events = await asyncio.wait_for(watch_until(stub, "", "k", TERMINATED), 30)
        assert events[0].initial and events[0].kernel.kernel_id == "k"
        assert any(e.type == pb.KERNEL_EVENT_TYPE_SYNCED for e in events)
        end = events[-1]
        assert (end.exit_code, end.reason) == (4, "exited")

    async def test_a_kernels_life_is_told_in_order_as_the_daemon_tells_it(
        self, setup: Setup
    ) -> None:
        stub = setup.manager.stub
        call = stub.WatchKernels(pb.WatchKernelsRequest())
        seen: list[int] = []

        async def read() -> None:
            async for event in call:
                seen.append(event.type)
                if event.type == pb.KERNEL_EVENT_TYPE_REMOVED:
                    return

        reading = asyncio.ensure_future(read())
        await asyncio.sleep(0.2)
        await create(stub, sleeper("k"))
        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k"))
        await asyncio.wait_for(reading, 30)
        assert seen == [
            pb.KERNEL_EVENT_TYPE_SYNCED,
            pb.KERNEL_EVENT_TYPE_CREATED,
            pb.KERNEL_EVENT_TYPE_RUNNING,
            pb.KERNEL_EVENT_TYPE_TERMINATED,
            pb.KERNEL_EVENT_TYPE_REMOVED,
        ]

    async def test_an_agents_watch_hears_only_that_agent(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(stub, exiting("elsewhere", 0, after=0.3), agent_id="w1")
        await create(stub, exiting("here", 0, after=0.6), agent_id="w0")
        events = await asyncio.wait_for(watch_until(stub, "w0", "here", TERMINATED), 30)
        assert {e.kernel.agent_id for e in events if e.HasField("kernel")} == {"w0"}

    async def test_users_watch_only_what_they_may_see_and_never_others_env(
        self, setup: Setup
    ) -> None:
        admin = setup.manager.stub
        tokens = {}
        for name in ("alice", "bob"):
            made = await admin.CreateToken(
                mpb.CreateTokenRequest(name=name, scaling_groups=["default"])
            )
            tokens[name] = made.token
        viewer = await admin.CreateToken(mpb.CreateTokenRequest(name="eve", viewer=True))
        async with (
            user_channel(setup.manager.address, tokens["alice"]) as alice_channel,
            user_channel(setup.manager.address, viewer.token) as eve_channel,
        ):
            alice, eve = Stub(alice_channel), Stub(eve_channel)
            await create(alice, sleeper("alices", env={"SECRET": "s3"}))
            await create(admin, sleeper("admins"))
            call = alice.WatchKernels(pb.WatchKernelsRequest())
            seen = []
            async for event in call:
                if event.type == pb.KERNEL_EVENT_TYPE_SYNCED:
                    break
                seen.append(event.kernel.kernel_id)
            call.cancel()
            assert seen == ["alices"]
            # A viewer sees both, with alice's env values hidden.
            call = eve.WatchKernels(pb.WatchKernelsRequest())
            env = {}
            async for event in call:
                if event.type == pb.KERNEL_EVENT_TYPE_SYNCED:
                    break
                env[event.kernel.kernel_id] = dict(event.kernel.spec.env)
            call.cancel()
            assert env["alices"] == {"SECRET": "<redacted>"}
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await alice.WaitKernel(pb.WaitKernelRequest(kernel_id="admins", timeout=1))
            assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
