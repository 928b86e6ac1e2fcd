"""The registry: registration, sessions, heartbeats, expiry to LOST, take-over rules."""

from __future__ import annotations

import time

import pytest

from common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from common.ids import AgentId
from manager.errors import AgentOwned, UnknownSession
from manager.registry import AgentRecord, Liveness, Registry
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb


def registration(
    *agent_ids: str,
    address: str = "127.0.0.1:7001",
    daemon_id: str = "n1/d1",
    interval: float = 1,
    node: str = "n1",
) -> mpb.RegisterAgentsRequest:
    return mpb.RegisterAgentsRequest(
        daemon_address=address,
        node=node,
        daemon_id=daemon_id,
        heartbeat_interval=interval,
        agents=[pb.AgentInfo(agent_id=a, scaling_group="default", healthy=True) for a in agent_ids],
    )


def beat(session_id: str, address: str = "127.0.0.1:7001", **groups: str) -> mpb.HeartbeatRequest:
    return mpb.HeartbeatRequest(
        daemon_address=address,
        session_id=session_id,
        agents=[
            mpb.AgentHeartbeat(agent_id=a, scaling_group=g, healthy=True, kernel_count=2)
            for a, g in groups.items()
        ],
    )


class TestRegistration:
    def test_agents_are_alive_and_routed_to_their_daemon(self) -> None:
        registry = Registry()
        result = registry.register(registration("a0", "a1"))
        assert result.session_id and not result.dropped
        assert registry.get("a1").daemon_address == "127.0.0.1:7001"
        assert [r.status for r in registry.list()] == [Liveness.ALIVE, Liveness.ALIVE]

    def test_registering_again_drops_agents_the_daemon_no_longer_has(self) -> None:
        registry = Registry()
        registry.register(registration("a0", "a1"))
        result = registry.register(registration("a0", address="127.0.0.1:7002"))
        assert result.dropped == ("a1",)
        assert [r.agent_id for r in registry.list()] == ["a0"]
        assert registry.get("a0").daemon_address == "127.0.0.1:7002"

    def test_an_agent_of_another_daemon_identity_is_refused_naming_its_owner(self) -> None:
        registry = Registry()
        registry.register(registration("a0"))
        with pytest.raises(AgentOwned) as err:
            registry.register(registration("a0", address="10.0.0.9:7001", daemon_id="n2/x"))
        assert str(err.value) == (
            "agent 'a0' belongs to daemon 'n1/d1' (at 127.0.0.1:7001, node 'n1', alive); "
            "daemon 'n2/x' may not take it over: agent ids are unique across daemons "
            "(an admin can remove a LOST agent: agenthost agents rm a0)"
        )

    def test_a_lost_agent_stays_its_daemons_until_an_admin_removes_it(self) -> None:
        registry = Registry(heartbeat_timeout=0.01)
        registry.register(registration("a0"))
        registry.expire(time.monotonic() + 1)
        with pytest.raises(AgentOwned):
            registry.register(registration("a0", address="10.0.0.9:7001", daemon_id="n2/x"))
        registry.remove("a0")
        registry.register(registration("a0", address="10.0.0.9:7001", daemon_id="n2/x"))
        assert registry.get("a0").status is Liveness.ALIVE
        assert registry.get("a0").daemon_id == "n2/x"

    def test_an_alive_agent_cannot_be_removed(self) -> None:
        registry = Registry()
        registry.register(registration("a0"))
        with pytest.raises(FailedPrecondition, match="is ALIVE"):
            registry.remove("a0")

    def test_a_certificate_identity_replaces_the_claimed_id_and_must_match_it(self) -> None:
        registry = Registry()
        result = registry.register(registration("a0", daemon_id=""), identity="node-1")
        assert result.agents[0].daemon_id == "node-1"
        with pytest.raises(PermissionDenied, match="'node-2' may not register as daemon 'node-1'"):
            registry.register(registration("a1", daemon_id="node-1"), identity="node-2")

    def test_a_heartbeat_under_another_identity_is_refused(self) -> None:
        registry = Registry()
        session = registry.register(registration("a0", daemon_id=""), identity="node-1").session_id
        beat = mpb.HeartbeatRequest(daemon_address="127.0.0.1:7001", session_id=session)
        with pytest.raises(PermissionDenied, match="'node-2' may not heartbeat"):
            registry.heartbeat(beat, identity="node-2")
        registry.heartbeat(beat, identity="node-1")

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            (mpb.RegisterAgentsRequest(node="n"), "daemon_address is required"),
            (mpb.RegisterAgentsRequest(daemon_address="h:1"), "agents: a daemon registers"),
            (registration("bad id"), "agent_id 'bad id' is not valid"),
            (registration("a0", "a0"), "agent ids repeat within the registration"),
        ],
        ids=["no address", "no agents", "bad agent id", "repeated agent id"],
    )
    def test_bad_registrations_are_invalid(
        self, request_: mpb.RegisterAgentsRequest, message: str
    ) -> None:
        with pytest.raises(InvalidArgument) as err:
            Registry().register(request_)
        assert str(err.value).startswith(message)


class TestHeartbeats:
    def test_heartbeat_updates_occupancy_and_scaling_group(self) -> None:
        registry = Registry()
        session = registry.register(registration("a0", "a1")).session_id
        _, regrouped = registry.heartbeat(beat(session, a0="default", a1="batch"))
        assert [r.agent_id for r in regrouped] == ["a1"]
        assert registry.get("a1").scaling_group == "batch"
        assert registry.get("a0").info.kernel_count == 2

    def test_unknown_session_must_register_again(self) -> None:
        registry = Registry()
        with pytest.raises(UnknownSession) as err:
            registry.heartbeat(beat("nope", a0="default"))
        assert str(err.value) == (
            "daemon at 127.0.0.1:7001 has no session with this manager "
            "(manager restarted, or the daemon was LOST): register again"
        )

    def test_a_new_registration_ends_the_old_session(self) -> None:
        registry = Registry()
        old = registry.register(registration("a0")).session_id
        registry.register(registration("a0"))
        with pytest.raises(UnknownSession):
            registry.heartbeat(beat(old, a0="default"))


class TestOneIdentityOnManyNodes:
    """The pods of a DaemonSet share one daemon certificate: one identity, many nodes."""

    def register_node(
        self, registry: Registry, node: str, address: str, *agent_ids: str, interval: float = 1
    ) -> str:
        request = registration(
            *agent_ids, address=address, daemon_id="", node=node, interval=interval
        )
        return registry.register(request, identity="nodes").session_id

    def test_each_node_keeps_its_own_session_and_agents(self) -> None:
        registry = Registry()
        a = self.register_node(registry, "node-a", "10.0.0.1:6001", "w-node-a")
        b = self.register_node(registry, "node-b", "10.0.0.2:6001", "w-node-b")
        assert [r.agent_id for r in registry.list()] == ["w-node-a", "w-node-b"]
        # Neither registration ended the other's session.
        registry.heartbeat(
            beat(a, address="10.0.0.1:6001", **{"w-node-a": "default"}), identity="nodes"
        )
        registry.heartbeat(
            beat(b, address="10.0.0.2:6001", **{"w-node-b": "default"}), identity="nodes"
        )
        assert {r.daemon_id for r in registry.list()} == {"nodes"}

    def test_a_silent_node_loses_only_its_own_agents(self) -> None:
        registry = Registry(missed_heartbeats=3)
        self.register_node(registry, "node-a", "10.0.0.1:6001", "w-node-a", interval=1)
        b = self.register_node(registry, "node-b", "10.0.0.2:6001", "w-node-b", interval=100)
        expired = registry.expire(time.monotonic() + 10)
        assert [d.node for d in expired] == ["node-a"]
        assert registry.get("w-node-a").status is Liveness.LOST
        assert registry.get("w-node-b").status is Liveness.ALIVE
        registry.heartbeat(
            beat(b, address="10.0.0.2:6001", **{"w-node-b": "default"}), identity="nodes"
        )

    def test_a_renamed_node_takes_its_agents_with_it(self) -> None:
        registry = Registry(missed_heartbeats=3)
        self.register_node(registry, "old", "10.0.0.1:6001", "a0", interval=1)
        self.register_node(registry, "new", "10.0.0.1:6001", "a0", interval=100)
        assert registry.get("a0").node == "new"
        [stale] = registry.expire(time.monotonic() + 10)
        assert (stale.node, stale.agent_ids) == ("old", ())  # a0 moved: nothing goes LOST
        assert registry.get("a0").status is Liveness.ALIVE


class TestExpiry:
    def test_missed_heartbeats_mark_agents_lost_and_drop_the_session(self) -> None:
        registry = Registry(missed_heartbeats=3)
        session = registry.register(registration("a0", "a1", interval=1)).session_id
        now = time.monotonic()
        assert registry.expire(now + 2.5) == []
        expired = registry.expire(now + 3.5)
        assert [d.agent_ids for d in expired] == [("a0", "a1")]
        assert {r.status for r in registry.list()} == {Liveness.LOST}
        with pytest.raises(UnknownSession):
            registry.heartbeat(beat(session, a0="default"))

    def test_heartbeat_timeout_overrides_missed_heartbeats(self) -> None:
        registry = Registry(missed_heartbeats=100, heartbeat_timeout=0.5)
        registry.register(registration("a0", interval=10))
        assert len(registry.expire(time.monotonic() + 1)) == 1

    def test_restored_alive_agent_is_expired_unless_its_daemon_registers(self) -> None:
        registry = Registry(missed_heartbeats=2)
        record = AgentRecord(
            agent_id=AgentId("a0"),
            daemon_id="n1/d1",
            daemon_address="127.0.0.1:7001",
            node="n1",
            info=pb.AgentInfo(agent_id="a0", healthy=True),
            status=Liveness.ALIVE,
            last_heartbeat=0,
        )
        registry.restore(record, heartbeat_interval=1)
        assert registry.get("a0").schedulable
        assert [d.agent_ids for d in registry.expire(time.monotonic() + 3)] == [("a0",)]
        assert registry.get("a0").status is Liveness.LOST


class TestLookup:
    def test_unknown_agent_is_not_found_and_names_known_ones(self) -> None:
        registry = Registry()
        registry.register(registration(*(f"a{i}" for i in range(12))))
        with pytest.raises(NotFound) as err:
            registry.get("zz")
        assert str(err.value) == (
            "agent 'zz' is not registered with the manager; known: "
            "a0, a1, a2, a3, a4, a5, a6, a7, a8, a9 and 2 more"
        )

    def test_bad_agent_id_is_invalid(self) -> None:
        with pytest.raises(InvalidArgument):
            Registry().get("no spaces")


class TestStalls:
    def test_time_the_manager_was_stalled_is_forgiven(self) -> None:
        registry = Registry(heartbeat_timeout=1.0)
        registry.register(registration("a0"))
        registry.forgive(5.0)
        assert registry.expire(time.monotonic() + 4.0) == []
        assert len(registry.expire(time.monotonic() + 6.5)) == 1
