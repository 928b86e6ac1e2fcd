"""The docker kernel handle: round trip, and other versions refused."""

from __future__ import annotations

from pathlib import Path

from daemon.backends.docker.handle import HANDLE_VERSION, ContainerHandle
from daemon.backends.docker.reconcile import owned_by, ownership_labels


class TestHandle:
    def test_round_trip(self) -> None:
        handle = ContainerHandle("c0ffee", "agenthost-abc-d0-k1", Path("/state/k1"))
        assert ContainerHandle.parse(handle.to_dict()) == handle
        assert handle.to_dict()["version"] == HANDLE_VERSION
        assert handle.log_path == Path("/state/k1/kernel.log")

    def test_another_version_or_a_malformed_handle_is_not_guessed_at(self) -> None:
        assert ContainerHandle.parse({"version": HANDLE_VERSION + 1, "container_id": "x"}) is None
        assert ContainerHandle.parse({"version": HANDLE_VERSION}) is None
        assert ContainerHandle.parse({}) is None
        assert (
            ContainerHandle.parse(
                {"version": HANDLE_VERSION, "container_id": "x", "name": "n", "workdir": None}
            )
            is None
        )


class TestOwnership:
    def test_only_this_daemons_and_this_agents_labels_own_a_container(self) -> None:
        mine = {"agenthost.daemon": "abc", "agenthost.agent_id": "d0", "agenthost.kernel_id": "k"}
        assert owned_by(mine, "abc", "d0")
        assert not owned_by(mine, "abc", "d1")
        assert not owned_by(mine, "xyz", "d0")
        assert not owned_by(None, "abc", "d0")
        assert ownership_labels("abc", "d0") == ["agenthost.daemon=abc", "agenthost.agent_id=d0"]
