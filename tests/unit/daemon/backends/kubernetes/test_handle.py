"""The kubernetes handle: a round trip, and refusal of other versions."""

from __future__ import annotations

from pathlib import Path

from daemon.backends.kubernetes.handle import PodHandle


class TestPodHandle:
    def test_round_trips(self) -> None:
        handle = PodHandle("ns", "agenthost-x-k", "0123456789abcdef", Path("/var/k"))
        assert PodHandle.parse(handle.to_dict()) == handle
        assert handle.ref == "pod ns/agenthost-x-k 01234567"
        assert handle.log_path == Path("/var/k/kernel.log")

    def test_another_version_or_a_malformed_one_is_not_guessed_at(self) -> None:
        good = PodHandle("ns", "p", "u", Path("/w")).to_dict()
        assert PodHandle.parse({**good, "version": 2}) is None
        assert PodHandle.parse({k: v for k, v in good.items() if k != "uid"}) is None
        assert PodHandle.parse({"container_id": "abc"}) is None
