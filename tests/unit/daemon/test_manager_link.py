"""The daemon's side of the manager (daemon/manager_link.py) against a scripted fake manager.

`ScriptedManager` is a fake: a real in-process grpc.aio server implementing
`ManagerServiceServicer` that records every registration and heartbeat, hands out
session ids, refuses a heartbeat whose session it does not know with NOT_FOUND
(as a restarted manager does) and can answer UNAVAILABLE on cue. It is not the
manager (daemon/ never imports manager/; the real pair is exercised in
tests/integration/manager). The daemon is real: its runtime runs in this process
with two local agents, and the link under test is started on it by hand.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from daemon.manager_link import ManagerLink
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.servers import Daemon, daemon_config, eventually, local_agents, running_daemon, sleeper

INTERVAL = 0.1
MIB = 1 << 20
LOGGER = "daemon.manager_link"


class ScriptedManager(manager_pb2_grpc.ManagerServiceServicer):
    """A fake manager: records calls, knows the sessions it handed out, fails on cue."""

    def __init__(self, name: str = "m") -> None:
        self.name = name  # prefix of the session ids it hands out
        self.registrations: list[mpb.RegisterAgentsRequest] = []
        self.kernel_chunks: list[mpb.RegisterKernelsRequest] = []
        self.heartbeats: list[mpb.HeartbeatRequest] = []
        self.refused: list[str] = []  # session ids of heartbeats refused with NOT_FOUND
        self.sessions: set[str] = set()
        self.unavailable = 0  # answer this many next calls with UNAVAILABLE
        self.failed = 0

    async def _maybe_fail(self, context: Any) -> None:
        if self.unavailable:
            self.unavailable -= 1
            self.failed += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted: not ready")

    async def RegisterAgents(
        self, request: mpb.RegisterAgentsRequest, context: Any
    ) -> mpb.RegisterAgentsResponse:
        await self._maybe_fail(context)
        self.registrations.append(request)
        session_id = f"{self.name}-{len(self.registrations)}"
        self.sessions.add(session_id)
        return mpb.RegisterAgentsResponse(session_id=session_id)

    async def RegisterKernels(
        self, request: mpb.RegisterKernelsRequest, context: Any
    ) -> mpb.RegisterKernelsResponse:
        await self._maybe_fail(context)
        self.kernel_chunks.append(request)
        return mpb.RegisterKernelsResponse()

    async def Heartbeat(self, request: mpb.HeartbeatRequest, context: Any) -> mpb.HeartbeatResponse:
        await self._maybe_fail(context)
        if request.session_id not in self.sessions:
            self.refused.append(request.session_id)
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such session: register again")
        self.heartbeats.append(request)
        return mpb.HeartbeatResponse()

    def forget_sessions(self) -> None:
        """Forget every session, as a restarted manager would."""
        self.sessions.clear()

    def heartbeats_after(self, count: int) -> list[mpb.HeartbeatRequest]:
        """Heartbeats received after the first count."""
        return self.heartbeats[count:]


def free_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


@contextlib.asynccontextmanager
async def serving(fake: ScriptedManager, address: str) -> AsyncIterator[None]:
    """Serve fake on address until the block ends."""
    server = grpc.aio.server()
    manager_pb2_grpc.add_ManagerServiceServicer_to_server(fake, server)
    server.add_insecure_port(address)
    await server.start()
    try:
        yield
    finally:
        await server.stop(0)


@contextlib.asynccontextmanager
async def linked(daemon: Daemon, manager_address: str) -> AsyncIterator[ManagerLink]:
    """The link under test, from daemon to manager_address, closed after the block."""
    link = ManagerLink(daemon.server.runtime, daemon.server.address, manager_address)
    try:
        yield link
    finally:
        await link.close()


@dataclass
class Setup:
    daemon: Daemon
    fake: ScriptedManager
    address: str


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A real daemon (not linked by its config) with k1 running on a0 and k2 exited on a1."""
    path = daemon_config(
        tmp_path,
        local_agents(2, base_port=47600),
        daemon=f'heartbeat_interval = {INTERVAL}\nnode = "n1"\n',
        reconcile_interval=0.2,
    )
    async with running_daemon(path) as d:
        await d.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[
                    sleeper(
                        "k1",
                        resources=pb.ResourceRequest(memory_bytes=64 * MIB),
                        ports=[pb.ServicePort(name="http")],
                    )
                ],
            )
        )
        await d.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[pb.KernelSpec(kernel_id="k2", command=["sh", "-c", "exit 3"])],
            )
        )

        async def k2_exited() -> bool:
            reply = await d.stub.GetKernel(pb.GetKernelRequest(agent_id="a1", kernel_id="k2"))
            return reply.kernel.state == pb.KERNEL_STATE_TERMINATED

        await eventually(k2_exited)
        yield d


@pytest.fixture
async def setup(daemon: Daemon) -> AsyncIterator[Setup]:
    """The daemon linked to a fake manager that is up, once it has registered."""
    fake, address = ScriptedManager(), free_address()
    async with serving(fake, address), linked(daemon, address):
        await eventually(lambda: fake.heartbeats)
        yield Setup(daemon, fake, address)


async def daemon_view(daemon: Daemon) -> tuple[list[pb.AgentInfo], list[pb.Kernel]]:
    """Every agent and kernel as the daemon itself reports them."""
    agents = await daemon.stub.ListAgents(pb.ListAgentsRequest())
    kernels = await daemon.stub.ListKernels(pb.ListKernelsRequest())
    return list(agents.agents), list(kernels.kernels)


def by_id(kernel: pb.Kernel) -> str:
    return kernel.kernel_id


class TestRegistration:
    async def test_registers_every_agent_with_every_kernel(self, setup: Setup) -> None:
        [registration] = setup.fake.registrations
        agents, kernels = await daemon_view(setup.daemon)
        assert list(registration.agents) == agents
        assert sorted(registration.kernels, key=by_id) == sorted(kernels, key=by_id)
        assert sorted((k.agent_id, k.kernel_id) for k in kernels) == [("a0", "k1"), ("a1", "k2")]

    async def test_says_who_and_where_the_daemon_is(self, setup: Setup) -> None:
        [registration] = setup.fake.registrations
        runtime = setup.daemon.server.runtime
        assert registration.daemon_address == setup.daemon.server.address
        assert (registration.node, registration.daemon_id) == ("n1", f"n1/{runtime.identity}")
        assert registration.heartbeat_interval == INTERVAL
        assert registration.taken_at > 0


class TestHeartbeats:
    async def test_each_heartbeat_carries_the_session(self, setup: Setup) -> None:
        await eventually(lambda: len(setup.fake.heartbeats) >= 3)
        assert {h.session_id for h in setup.fake.heartbeats} == {"m-1"}
        assert {h.daemon_address for h in setup.fake.heartbeats} == {setup.daemon.server.address}
        assert setup.fake.refused == []

    async def test_per_agent_occupancy_and_health_match_the_daemon(self, setup: Setup) -> None:
        await eventually(lambda: len(setup.fake.heartbeats) >= 2)
        beat = setup.fake.heartbeats[-1]
        agents, _ = await daemon_view(setup.daemon)
        assert [b.agent_id for b in beat.agents] == ["a0", "a1"]
        for info, reported in zip(agents, beat.agents, strict=True):
            assert reported.occupied == info.occupied
            assert reported.kernel_count == info.kernel_count
            assert (reported.scaling_group, reported.healthy) == (info.scaling_group, True)
        assert beat.agents[0].occupied.memory_bytes == 64 * MIB
        assert beat.agents[0].occupied.ports == 1

    async def test_heartbeats_carry_only_kernels_that_changed_since_the_last_heard(
        self, setup: Setup
    ) -> None:
        # The registration told k1 and k2; nothing changed since: deltas are empty.
        await eventually(lambda: len(setup.fake.heartbeats) >= 2)
        assert all(h.delta for h in setup.fake.heartbeats)
        assert [k for h in setup.fake.heartbeats for a in h.agents for k in a.kernels] == []
        await setup.daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[pb.KernelSpec(kernel_id="k3", command=["sh", "-c", "exit 4"])],
            )
        )

        def told() -> list[tuple[str, int, int]]:
            return [
                (k.kernel_id, k.state, k.exit_code)
                for h in setup.fake.heartbeats
                for a in h.agents
                for k in a.kernels
                if k.kernel_id == "k3"
            ]

        await eventually(lambda: ("k3", pb.KERNEL_STATE_TERMINATED, 4) in told())
        seen = len(setup.fake.heartbeats)
        await eventually(lambda: len(setup.fake.heartbeats_after(seen)) >= 2)
        # Once the manager has heard a state, it is not told it again.
        assert told().count(("k3", pb.KERNEL_STATE_TERMINATED, 4)) == 1

    async def test_a_kernel_destroyed_on_the_daemon_is_reported_removed_once(
        self, setup: Setup
    ) -> None:
        await setup.daemon.stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id="a0", kernel_id="k1")
        )

        def removals() -> list[str]:
            return [
                k for h in setup.fake.heartbeats for a in h.agents for k in a.removed_kernel_ids
            ]

        await eventually(lambda: "k1" in removals())
        seen = len(setup.fake.heartbeats)
        await eventually(lambda: len(setup.fake.heartbeats_after(seen)) >= 2)
        assert removals() == ["k1"]
        beat = setup.fake.heartbeats[-1]
        assert (beat.agents[0].kernel_count, beat.agents[0].occupied.memory_bytes) == (0, 0)

    async def test_changes_a_manager_did_not_acknowledge_are_sent_again(self, setup: Setup) -> None:
        setup.fake.unavailable = 1
        await setup.daemon.stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id="a0", kernel_id="k1")
        )
        await eventually(lambda: setup.fake.failed >= 1)
        await eventually(
            lambda: any(
                "k1" in a.removed_kernel_ids for h in setup.fake.heartbeats for a in h.agents
            )
        )


class TestChunks:
    async def test_a_registration_past_one_message_comes_in_chunks(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper(f"m{i}") for i in range(12)])
        )
        monkeypatch.setattr("daemon.manager_link.CHUNK_BYTES", 150)  # two or so kernels each
        fake, address = ScriptedManager(), free_address()
        async with serving(fake, address), linked(daemon, address):
            await eventually(lambda: fake.heartbeats)
        [registration] = fake.registrations
        assert registration.more_kernels and fake.kernel_chunks[-1].last
        assert [c.last for c in fake.kernel_chunks[:-1]] == [False] * (len(fake.kernel_chunks) - 1)
        sent = [k.kernel_id for k in registration.kernels]
        sent += [k.kernel_id for c in fake.kernel_chunks for k in c.kernels]
        _, kernels = await daemon_view(daemon)
        assert sorted(sent) == sorted(k.kernel_id for k in kernels)
        assert len(fake.kernel_chunks) >= 2


class TestRegisteringAgain:
    async def test_a_heartbeat_refused_with_not_found_makes_it_register_again(
        self, setup: Setup, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER)
        setup.fake.forget_sessions()
        await eventually(lambda: len(setup.fake.registrations) == 2)
        seen = len(setup.fake.heartbeats)
        await eventually(lambda: setup.fake.heartbeats_after(seen))
        assert setup.fake.refused[:1] == ["m-1"]
        assert {h.session_id for h in setup.fake.heartbeats_after(seen)} == {"m-2"}
        assert list(setup.fake.registrations[1].kernels) == list(
            setup.fake.registrations[0].kernels
        )
        assert f"manager {setup.address}: no such session: register again" in caplog.messages


class TestManagerDown:
    async def test_keeps_trying_until_the_manager_is_up_then_registers(
        self, daemon: Daemon, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER)
        fake, address = ScriptedManager(), free_address()
        async with linked(daemon, address):
            await eventually(lambda: any("UNAVAILABLE" in m for m in caplog.messages))
            async with serving(fake, address):
                await eventually(lambda: fake.heartbeats)
                assert [a.agent_id for a in fake.registrations[0].agents] == ["a0", "a1"]
        assert f"manager {address} answers again" in caplog.messages

    async def test_failures_are_retried_every_interval_and_logged_once(
        self, daemon: Daemon, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER)
        fake, address = ScriptedManager(), free_address()
        fake.unavailable = 3
        async with serving(fake, address), linked(daemon, address):
            await eventually(lambda: fake.heartbeats)
        assert fake.failed == 3
        assert len(fake.registrations) == 1
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name == LOGGER and r.levelno == logging.WARNING
        ]
        assert warnings == [
            f"manager {address}: UNAVAILABLE: scripted: not ready (retrying every {INTERVAL:.1f}s)"
        ]

    async def test_a_manager_that_goes_away_and_comes_back_empty_gets_a_new_registration(
        self, daemon: Daemon, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger=LOGGER)
        address = free_address()
        first, second = ScriptedManager("first"), ScriptedManager("second")
        async with linked(daemon, address):
            async with serving(first, address):
                await eventually(lambda: first.heartbeats)
            # Down: heartbeats fail, and the link keeps its session and tries again.
            await eventually(lambda: any("UNAVAILABLE" in m for m in caplog.messages))
            async with serving(second, address):
                await eventually(lambda: second.heartbeats)
        assert second.refused[:1] == ["first-1"]
        assert [r.agent_id for r in second.registrations[0].agents] == ["a0", "a1"]
        assert {h.session_id for h in second.heartbeats} == {"second-1"}
