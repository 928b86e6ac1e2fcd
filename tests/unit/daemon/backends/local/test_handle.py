"""The local kernel handle: round trip, the persisted form, other versions refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.backends.local.handle import HANDLE_VERSION, ProcessHandle
from daemon.backends.local.reconcile import is_alive


class TestHandle:
    def test_round_trip_with_and_without_a_cgroup(self) -> None:
        for handle in (
            ProcessHandle(pid=42, create_time=1700000000.25, cgroup=Path("/sys/fs/cgroup/x/k")),
            ProcessHandle(pid=42, create_time=1700000000.25),
        ):
            assert ProcessHandle.parse(handle.to_dict()) == handle

    def test_persisted_form_is_what_earlier_checkpoints_hold(self) -> None:
        handle = ProcessHandle(pid=42, create_time=1.5, cgroup=Path("/cg/a0/k"))
        assert handle.to_dict() == {
            "version": HANDLE_VERSION,
            "pid": 42,
            "create_time": 1.5,
            "cgroup": "/cg/a0/k",
        }
        assert ProcessHandle(pid=42, create_time=1.5).to_dict()["cgroup"] is None

    @pytest.mark.parametrize(
        "raw",
        [
            {"version": HANDLE_VERSION + 1, "pid": 42, "create_time": 1.5},
            {"version": HANDLE_VERSION, "create_time": 1.5},
            {"version": HANDLE_VERSION, "pid": "not a pid", "create_time": 1.5},
            {"version": HANDLE_VERSION, "pid": 42, "create_time": None},
            {},
        ],
        ids=["other-version", "no-pid", "bad-pid", "no-start-time", "empty"],
    )
    def test_another_version_or_a_malformed_handle_is_not_guessed_at(
        self, raw: dict[str, Any]
    ) -> None:
        assert ProcessHandle.parse(raw) is None


class TestLiveness:
    def test_a_running_process_is_alive_only_with_its_own_start_time(self) -> None:
        started = psutil.Process(os.getpid()).create_time()
        assert is_alive(ProcessHandle(pid=os.getpid(), create_time=started))
        assert not is_alive(ProcessHandle(pid=os.getpid(), create_time=started - 10))
