"""The daemon's side of the manager (daemon/manager_link.py) against a real manager.

A daemon never waits for its manager; it registers once the manager is up, again
after the manager forgets it, and its heartbeats carry scaling-group changes.
"""

from __future__ import annotations

import time
from pathlib import Path

from daemon.manager_link import advertised_address
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    agents_by_id,
    agents_toml,
    create,
    free_port,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.servers import eventually, running_daemon, sleeper


class TestRegistration:
    async def test_daemon_serves_without_its_manager_and_registers_once_it_is_up(
        self, tmp_path: Path
    ) -> None:
        address = f"127.0.0.1:{free_port()}"
        path = linked_daemon_config(
            tmp_path, "d", address, agents_toml(("w0", "default", 47500, ""))
        )
        async with running_daemon(path) as daemon:
            agents = await daemon.stub.ListAgents(pb.ListAgentsRequest())
            assert [a.agent_id for a in agents.agents] == ["w0"]
            async with running_manager(manager_config(tmp_path), listen=address) as manager:

                async def registered() -> bool:
                    return "w0" in await agents_by_id(manager.stub)

                await eventually(registered)
                agent = (await agents_by_id(manager.stub))["w0"]
                assert agent.daemon_address == daemon.server.address
                assert agent.node == "d"

    async def test_daemon_registers_again_when_the_manager_forgets_it(self, tmp_path: Path) -> None:
        # A generous timeout: the daemon heartbeats every 0.2 s, so only a
        # manager that forgets its session (below) makes it register again.
        async with running_manager(manager_config(tmp_path, heartbeat_timeout=30.0)) as manager:
            path = linked_daemon_config(
                tmp_path, "d", manager.address, agents_toml(("w0", "default", 47510, ""))
            )
            async with running_daemon(path) as daemon:
                link = daemon.server.manager_link
                assert link is not None

                async def has_session() -> str:
                    return link.session_id

                first = await eventually(has_session)
                # The manager drops the daemon's session, as a restarted one would.
                manager.server.manager.registry.expire(time.monotonic() + 60)

                async def new_session() -> bool:
                    return link.session_id not in ("", first)

                await eventually(new_session)
                assert (await agents_by_id(manager.stub))["w0"].status == mpb.AGENT_STATUS_ALIVE

    async def test_scaling_group_change_on_the_daemon_reaches_the_scheduler(
        self, tmp_path: Path
    ) -> None:
        async with running_manager(manager_config(tmp_path, missed_heartbeats=25)) as manager:
            path = linked_daemon_config(
                tmp_path,
                "d",
                manager.address,
                agents_toml(("w0", "default", 47520, ""), ("w1", "default", 47530, "")),
            )
            async with running_daemon(path) as daemon:

                async def registered() -> bool:
                    return len(await agents_by_id(manager.stub)) == 2

                await eventually(registered)
                await daemon.stub.UpdateScalingGroup(
                    pb.UpdateScalingGroupRequest(agent_id="w1", scaling_group="gpu")
                )

                async def moved() -> bool:
                    agents = await agents_by_id(manager.stub)
                    return agents["w1"].info.scaling_group == "gpu"

                await eventually(moved)
                k = await create(manager.stub, sleeper(), "gpu")
                assert k.kernel.agent_id == "w1"


class TestAdvertisedAddress:
    def test_a_concrete_listen_address_is_reported_as_is(self) -> None:
        assert advertised_address("127.0.0.1:6001", "10.1.2.3:6000") == "127.0.0.1:6001"

    def test_a_wildcard_is_replaced_by_the_address_towards_the_manager(self) -> None:
        assert advertised_address("0.0.0.0:6001", "127.0.0.1:6000") == "127.0.0.1:6001"
        host = advertised_address("[::]:6001", "localhost:6000").rpartition(":")[0]
        assert host and host not in ("0.0.0.0", "[::]")
