"""daemon/backends/local/cgroups.py: finding the controllers, and a kernel's groups.

Parsing is checked on its own; making and removing groups runs against this
host's real cgroup hierarchies and skips where none is writable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.backends.local.cgroups import (
    Cgroups,
    Hierarchy,
    KernelGroups,
    _cgroup_mounts,
    parse_cpus,
    procs,
    remove,
)

MOUNTS = """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""


class TestParsing:
    def test_v1_hierarchies_by_controller_and_the_cgroup2_mounts(self, tmp_path: Path) -> None:
        mounts = tmp_path / "mounts"
        mounts.write_text(MOUNTS)
        v1, v2 = _cgroup_mounts(mounts)
        assert v1 == {
            "cpuset": [Path("/sys/fs/cgroup/cpuset")],
            "memory": [Path("/sys/fs/cgroup/memory")],
            "pids": [Path("/sys/fs/cgroup/pids")],
        }
        assert v2 == [Path("/sys/fs/cgroup/unified")]

    def test_no_writable_controller_means_no_groups(self, tmp_path: Path) -> None:
        mounts = tmp_path / "mounts"
        mounts.write_text("proc /proc proc rw 0 0\n")
        assert Cgroups.detect("nothing-here", mounts) == Cgroups()

    @pytest.mark.parametrize(
        ("text", "cores"),
        [("0", {0}), ("0-3\n", {0, 1, 2, 3}), ("0-1,4,6-7", {0, 1, 4, 6, 7}), ("", set())],
        ids=["one", "range", "mixed", "empty"],
    )
    def test_cpu_lists(self, text: str, cores: set[int]) -> None:
        assert parse_cpus(text) == cores

    def test_a_cpuset_of_every_core_confines_nothing(self) -> None:
        cg = Cgroups(cpuset=Hierarchy("cpuset", 1, Path("/x")), cpus=frozenset({0, 1}))
        assert cg.confines((0,)) and not cg.confines((0, 1)) and not cg.confines(())
        assert not Cgroups(cpus=frozenset({0, 1})).confines((0,))  # no cpuset controller

    def test_v2_puts_every_controller_in_one_group(self) -> None:
        group = Path("/sys/fs/cgroup/agenthost-x/a0/k")
        groups = KernelGroups({"memory": group, "pids": group, "cpuset": group})
        assert groups.distinct() == [group]
        assert groups.procs_files() == [f"{group}/cgroup.procs"]


@pytest.fixture(scope="module")
def cgroups() -> Iterator[Cgroups]:
    if os.geteuid() != 0:
        pytest.skip("making cgroups needs root")
    identity = f"unit-{os.getpid()}"
    found = Cgroups.detect(identity)
    if found == Cgroups(mems=found.mems, cpus=found.cpus):
        pytest.skip("no writable cgroup controller here")
    yield found
    for hierarchy in (found.memory, found.cpuset, found.pids):
        if hierarchy is not None:
            for directory in (hierarchy.base / "a0", hierarchy.base):
                if directory.exists():
                    os.rmdir(directory)


class TestGroups:
    def test_a_kernels_groups_carry_its_limits_and_go_when_empty(self, cgroups: Cgroups) -> None:
        core = min(cgroups.cpus) if cgroups.cpus else 0
        groups = cgroups.create("a0", "k1", memory=64 << 20, cores=(core,), pids_max=32)
        try:
            for controller, path in groups.paths.items():
                hierarchy = cgroups.hierarchy(controller)
                assert hierarchy is not None and path == hierarchy.base / "a0" / "k1"
                value = (path / hierarchy.limit_file()).read_text().strip()
                assert (
                    value
                    == {"memory": str(64 << 20), "cpuset": str(core), "pids": "32"}[controller]
                )
            assert procs(groups) == set()
            assert set(cgroups.agent_groups("a0")) == {"k1"}
        finally:
            assert remove(groups)
        assert all(not p.exists() for p in groups.paths.values())
        assert remove(groups)  # already gone: fine

    def test_a_limit_the_controller_refuses_names_the_file_and_leaves_nothing(
        self, cgroups: Cgroups
    ) -> None:
        if cgroups.cpuset is None:
            pytest.skip("no writable cpuset controller here")
        with pytest.raises(OSError) as info:
            cgroups.create("a0", "bad", memory=64 << 20, cores=(4095,), pids_max=32)
        assert "cpuset.cpus: cannot write '4095'" in str(info.value)
        assert "bad" not in cgroups.agent_groups("a0")

    def test_a_controller_given_none_is_skipped(self, cgroups: Cgroups) -> None:
        groups = cgroups.create("a0", "k2", memory=None, cores=None, pids_max=None)
        assert groups.paths == {}
        groups = cgroups.create("a0", "k3", memory=0, cores=None, pids_max=0)
        try:
            if cgroups.pids is not None:
                pids_max = groups.paths["pids"] / cgroups.pids.limit_file()
                assert pids_max.read_text().strip() == "max"
            assert "cpuset" not in groups.paths
        finally:
            remove(groups)

    def test_tidy_keeps_the_groups_of_running_kernels_and_removes_the_rest(
        self, cgroups: Cgroups
    ) -> None:
        own = Cgroups.detect(f"unit-tidy-{os.getpid()}")
        kept = own.create("a0", "running", memory=64 << 20, cores=None, pids_max=8)
        gone = own.create("a1", "ended", memory=64 << 20, cores=None, pids_max=8)
        remove(gone)
        own.tidy()
        assert all(p.exists() for p in kept.paths.values())
        assert all(not p.parent.exists() for p in gone.paths.values())
        remove(kept)
        own.tidy()
        assert all(not p.parent.parent.exists() for p in kept.paths.values())
