"""The env every member gets: who it is, and where the roles it depends on are."""

from __future__ import annotations

from manager.groups.discovery import Endpoint, host_of, identity_env, member_labels, peers_env


class TestPeersEnv:
    def test_one_port_gives_host_and_that_port_per_member(self) -> None:
        env = peers_env(
            "coordinator",
            ["http"],
            [Endpoint("10.0.0.1", {"http": 30001}), Endpoint("10.0.0.2", {"http": 30100})],
        )
        assert env == {"AGENTHOST_PEERS_COORDINATOR": "10.0.0.1:30001,10.0.0.2:30100"}

    def test_several_ports_add_one_variable_per_port_and_names_are_upper_cased(self) -> None:
        env = peers_env(
            "data-loader", ["grpc", "metrics"], [Endpoint("h", {"grpc": 1, "metrics": 2})]
        )
        assert env == {
            "AGENTHOST_PEERS_DATA_LOADER": "h:1",
            "AGENTHOST_PEERS_DATA_LOADER_GRPC": "h:1",
            "AGENTHOST_PEERS_DATA_LOADER_METRICS": "h:2",
        }

    def test_a_role_without_ports_lists_hosts(self) -> None:
        assert peers_env("w", [], [Endpoint("a", {}), Endpoint("b", {})]) == {
            "AGENTHOST_PEERS_W": "a,b"
        }


class TestIdentity:
    def test_identity_and_labels(self) -> None:
        assert identity_env("g", "worker", 2) == {
            "AGENTHOST_GROUP": "g",
            "AGENTHOST_ROLE": "worker",
            "AGENTHOST_REPLICA": "2",
        }
        assert member_labels("g", "u1", "worker", 2) == {
            "agenthost.io/group": "g",
            "agenthost.io/group-uid": "u1",
            "agenthost.io/role": "worker",
            "agenthost.io/replica": "2",
        }

    def test_host_of_an_address(self) -> None:
        assert [host_of(a) for a in ("127.0.0.1:6001", "[::1]:6001", "node")] == [
            "127.0.0.1",
            "::1",
            "node",
        ]
