"""The local kernel handle: round trip, the persisted form, version 1 read, others refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.backends.local.cgroups import KernelGroups
from daemon.backends.local.handle import HANDLE_VERSION, ProcessHandle
from daemon.backends.local.process import is_alive


class TestHandle:
    def test_round_trip_with_and_without_cgroups_and_uid(self) -> None:
        for handle in (
            ProcessHandle(
                pid=42,
                create_time=1700000000.25,
                groups=KernelGroups(
                    {"memory": Path("/sys/fs/cgroup/memory/x/k"), "pids": Path("/p/x/k")}
                ),
                uid=2000001,
                gid=2000001,
                pooled=True,
            ),
            ProcessHandle(pid=42, create_time=1700000000.25, uid=65534, gid=65534),
            ProcessHandle(pid=42, create_time=1700000000.25),
        ):
            assert ProcessHandle.parse(handle.to_dict()) == handle

    def test_persisted_form(self) -> None:
        handle = ProcessHandle(
            pid=42,
            create_time=1.5,
            groups=KernelGroups({"cpuset": Path("/cg/a0/k")}),
            uid=2000000,
            gid=2000000,
            pooled=True,
        )
        assert handle.to_dict() == {
            "version": HANDLE_VERSION,
            "pid": 42,
            "create_time": 1.5,
            "cgroups": {"cpuset": "/cg/a0/k"},
            "uid": 2000000,
            "gid": 2000000,
            "pooled": True,
        }

    def test_a_version_1_handle_of_an_earlier_daemon_is_still_read(self) -> None:
        legacy = {"version": 1, "pid": 42, "create_time": 1.5, "cgroup": "/cg/a0/k"}
        assert ProcessHandle.parse(legacy) == ProcessHandle(
            pid=42, create_time=1.5, groups=KernelGroups({"memory": Path("/cg/a0/k")})
        )
        without = {"version": 1, "pid": 42, "create_time": 1.5, "cgroup": None}
        assert ProcessHandle.parse(without) == ProcessHandle(pid=42, create_time=1.5)

    @pytest.mark.parametrize(
        "raw",
        [
            {"version": HANDLE_VERSION + 1, "pid": 42, "create_time": 1.5},
            {"version": HANDLE_VERSION, "create_time": 1.5},
            {"version": HANDLE_VERSION, "pid": "not a pid", "create_time": 1.5},
            {"version": HANDLE_VERSION, "pid": 42, "create_time": None},
            {"version": HANDLE_VERSION, "pid": 42, "create_time": 1.5, "cgroups": {}},
            {
                "version": HANDLE_VERSION,
                "pid": 42,
                "create_time": 1.5,
                "cgroups": {"freezer": "/x"},
                "uid": None,
                "gid": None,
                "pooled": False,
            },
            {},
        ],
        ids=[
            "other-version",
            "no-pid",
            "bad-pid",
            "no-start-time",
            "no-uid",
            "unknown-controller",
            "empty",
        ],
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
