"""Cgroups of local kernels: memory, cpuset and pids, on cgroup v1 or v2, wherever writable.

`Cgroups.detect` looks once per daemon for a writable hierarchy of each
controller: a v1 hierarchy of its own (e.g. `/sys/fs/cgroup/pids`) or the v2
unified one (e.g. `/sys/fs/cgroup`, the controller enabled down to our groups).
Each kernel gets one group per hierarchy, named
`agenthost-<daemon>/<agent_id>/<kernel_id>` so that daemons and agents never
share one (on v2 one group carries every controller). `create` makes a kernel's
groups with its limits (memory bytes, cores, pids) and returns the
`KernelGroups`; its processes join them through the launcher (`cgroup.procs`).
The rest reads and removes groups: `procs`, `oom_killed`, `remove`,
`agent_groups`, and `tidy` (the daemon's own groups that hold no kernel).

Blocking file I/O on /sys: callers run these in a thread. Knows cgroup files;
nothing of agents beyond the names, nor of processes beyond pids.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# Agent groups made whole by this process (see Cgroups._group).
_ready: set[Path] = set()
_ready_lock = threading.Lock()

MOUNTS = Path("/proc/self/mounts")
Controller = Literal["memory", "cpuset", "pids"]
CONTROLLERS: tuple[Controller, ...] = ("memory", "cpuset", "pids")
# The file each controller's probe writes (v1, v2).
LIMIT_FILES: dict[Controller, tuple[str, str]] = {
    "memory": ("memory.limit_in_bytes", "memory.max"),
    "cpuset": ("cpuset.cpus", "cpuset.cpus"),
    "pids": ("pids.max", "pids.max"),
}


@dataclass(frozen=True)
class Hierarchy:
    """A writable place for one controller: where this daemon's groups go."""

    controller: Controller
    version: int
    base: Path  # <root>/agenthost-<daemon>

    @property
    def mode(self) -> str:
        """How GetKernel names the limit: cgroup-v1 or cgroup-v2."""
        return f"cgroup-v{self.version}"

    def limit_file(self) -> str:
        """The file this controller's limit is written to."""
        return LIMIT_FILES[self.controller][self.version - 1]


@dataclass(frozen=True)
class KernelGroups:
    """The cgroups of one kernel, by controller (on v2 they share one path)."""

    paths: dict[Controller, Path] = field(default_factory=dict)

    def distinct(self) -> list[Path]:
        """Each group once (v2 puts every controller in the same one)."""
        return list(dict.fromkeys(self.paths.values()))

    def procs_files(self) -> list[str]:
        """What a process writes its pid to, to join every group."""
        return [str(p / "cgroup.procs") for p in self.distinct()]


@dataclass(frozen=True)
class Cgroups:
    """The controllers this daemon may use, each in its own writable hierarchy (or None)."""

    memory: Hierarchy | None = None
    cpuset: Hierarchy | None = None
    pids: Hierarchy | None = None
    mems: str = "0"  # cpuset.mems every v1 cpuset group needs
    cpus: frozenset[int] = frozenset()  # every core a cpuset group could have

    @classmethod
    def detect(cls, daemon_identity: str, mounts: Path = MOUNTS) -> Cgroups:
        """Probe every controller once: make this daemon's base group, a test group, a limit.

        A controller's hierarchy is the cgroup v1 mount that carries it, else a
        cgroup2 mount that offers it (`cgroup.controllers`), as /proc/self/mounts says.
        """
        found: dict[Controller, Hierarchy] = {}
        mems = "0"
        cpus: frozenset[int] = frozenset()
        v1, v2 = _cgroup_mounts(mounts)
        for controller in CONTROLLERS:
            candidates = [(where, 1) for where in v1.get(controller, [])]
            candidates += [(where, 2) for where in v2 if controller in _unified_controllers(where)]
            for where, version in candidates:
                hierarchy = Hierarchy(controller, version, where / f"agenthost-{daemon_identity}")
                try:
                    if controller == "cpuset":
                        mems = (
                            where / "cpuset.mems.effective"
                            if version == 2
                            else where / "cpuset.mems"
                        ).read_text().strip() or mems
                        cpus = parse_cpus(
                            (
                                where / "cpuset.cpus.effective"
                                if version == 2
                                else where / "cpuset.cpus"
                            ).read_text()
                        )
                    _probe(hierarchy, where, mems)
                except OSError as exc:
                    log.info(
                        "cgroup %s (v%d) at %s is not usable: %s", controller, version, where, exc
                    )
                    continue
                found[controller] = hierarchy
                break
        return cls(mems=mems, cpus=cpus, **found)

    def confines(self, cores: tuple[int, ...]) -> bool:
        """True when a cpuset of cores keeps a kernel from some core it could otherwise use.

        Cores that are every core there is confine nothing: no cpuset group then, and
        the kernel is spared joining one.
        """
        return self.cpuset is not None and bool(cores) and not self.cpus <= set(cores)

    def hierarchy(self, controller: Controller) -> Hierarchy | None:
        """The controller's hierarchy, or None when it is not writable here."""
        found: Hierarchy | None = getattr(self, controller)
        return found

    def create(
        self,
        agent_id: str,
        kernel_id: str,
        memory: int | None,
        cores: tuple[int, ...] | None,
        pids_max: int | None,
    ) -> KernelGroups:
        """Make the kernel's groups with their limits; a controller given None is skipped.

        memory: bytes (0: no limit); cores: the cpuset; pids_max (0: no limit). On
        failure every group made so far is removed and the OSError names the file.
        """
        wanted: dict[Controller, str | None] = {
            "memory": None if memory is None else (str(memory) if memory else None),
            "cpuset": None if cores is None else ",".join(map(str, cores)),
            "pids": None if pids_max is None else (str(pids_max) if pids_max else "max"),
        }
        skip = {"memory": memory is None, "cpuset": cores is None, "pids": pids_max is None}
        made: dict[Controller, Path] = {}
        try:
            for controller in CONTROLLERS:
                hierarchy = self.hierarchy(controller)
                if hierarchy is None or skip[controller]:
                    continue
                group = made.get(controller) or self._group(hierarchy, agent_id, kernel_id)
                made[controller] = group
                value = wanted[controller]
                if value is not None:
                    _write(group / hierarchy.limit_file(), value)
        except OSError:
            remove(KernelGroups(made))
            raise
        return KernelGroups(made)

    def agent_groups(self, agent_id: str) -> dict[str, KernelGroups]:
        """Every kernel group of agent_id, by kernel id."""
        found: dict[str, dict[Controller, Path]] = {}
        for controller in CONTROLLERS:
            hierarchy = self.hierarchy(controller)
            if hierarchy is None:
                continue
            agent_dir = hierarchy.base / agent_id
            with contextlib.suppress(OSError):
                for group in agent_dir.iterdir():
                    if group.is_dir():
                        found.setdefault(group.name, {})[controller] = group
        return {kernel_id: KernelGroups(paths) for kernel_id, paths in found.items()}

    def tidy(self) -> None:
        """Remove this daemon's agent groups, and its base groups, that hold no kernel group.

        For when the daemon's last local agent closes: groups of kernels that keep
        running (they outlive the daemon) stay, and so do their parents.
        """
        for hierarchy in (self.memory, self.cpuset, self.pids):
            if hierarchy is None:
                continue
            with contextlib.suppress(OSError):
                for agent_dir in hierarchy.base.iterdir():
                    if agent_dir.is_dir():
                        with contextlib.suppress(OSError):
                            agent_dir.rmdir()
                            _ready.discard(agent_dir)
            with contextlib.suppress(OSError):
                hierarchy.base.rmdir()

    def _group(self, hierarchy: Hierarchy, agent_id: str, kernel_id: str) -> Path:
        agent_dir = hierarchy.base / agent_id
        if agent_dir not in _ready:
            # Kernels of one agent start in parallel threads: the first makes the agent's
            # group whole (a v1 cpuset needs its cpus and mems) before any kernel's.
            with _ready_lock:
                if agent_dir not in _ready:
                    _mkdir_group(hierarchy, agent_dir, self.mems, cpus_from=hierarchy.base)
                    if hierarchy.version == 2:
                        _enable(agent_dir, hierarchy.controller)
                    _ready.add(agent_dir)
        group = agent_dir / kernel_id
        _mkdir_group(hierarchy, group, self.mems, cpus_from=None)
        return group


def procs(groups: KernelGroups) -> set[int]:
    """Pids in the kernel's groups (empty when they are gone).

    Every process of a kernel is in all of its groups (its processes join them all
    before anything else, children inherit them, and only root may move them), so
    one group answers: pids (what counts forks), else memory, else cpuset.
    """
    for controller in ("pids", "memory", "cpuset"):
        group = groups.paths.get(controller)
        if group is None:
            continue
        try:
            fd = os.open(f"{group}/cgroup.procs", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        except OSError:
            continue
        finally:
            os.close(fd)
        return {int(pid) for pid in b"".join(chunks).split()}
    return set()


def oom_killed(groups: KernelGroups) -> bool:
    """True when the kernel's memory limit made the OOM killer act in its group."""
    group = groups.paths.get("memory")
    if group is None:
        return False
    for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
        try:
            for line in (group / name).read_text().splitlines():
                field_, _, value = line.partition(" ")
                if field_ == key and int(value) > 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


def remove(groups: KernelGroups) -> bool:
    """Remove the kernel's groups; True when none is left (a group holding processes stays)."""
    left = False
    for group in groups.distinct():
        try:
            os.rmdir(group)
        except FileNotFoundError:
            continue
        except OSError:
            left = True
    return not left


def parse_cpus(text: str) -> frozenset[int]:
    """A cpu list ("0-3,6") as a set of core ids."""
    cores: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return frozenset(cores)


# ----------------------------------------------------------------- details


def _cgroup_mounts(mounts: Path) -> tuple[dict[str, list[Path]], list[Path]]:
    """Where cgroup hierarchies are mounted: v1 by controller, and the cgroup2 mounts."""
    v1: dict[str, list[Path]] = {}
    v2: list[Path] = []
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return v1, v2
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        where = Path(fields[1].replace("\\040", " "))
        if fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in CONTROLLERS:
                    v1.setdefault(option, []).append(where)
        elif fields[2] == "cgroup2":
            v2.append(where)
    return v1, v2


def _unified_controllers(root: Path) -> set[str]:
    try:
        return set((root / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def _probe(hierarchy: Hierarchy, root: Path, mems: str) -> None:
    """Make the daemon's base group and a probe group in it with a limit; raise OSError if not."""
    base = hierarchy.base
    if not base.is_dir():
        _mkdir_group(hierarchy, base, mems, cpus_from=root)
    if hierarchy.version == 2:
        _enable(root, hierarchy.controller)
        _enable(base, hierarchy.controller)
    probe = base / ".probe"
    with contextlib.suppress(FileNotFoundError):
        probe.rmdir()
    _mkdir_group(hierarchy, probe, mems, cpus_from=base)
    try:
        if hierarchy.controller == "memory":
            _write(probe / hierarchy.limit_file(), str(64 << 20))
        elif hierarchy.controller == "pids":
            _write(probe / hierarchy.limit_file(), "64")
    finally:
        probe.rmdir()


def _enable(group: Path, controller: str) -> None:
    """Let group's children use controller (v2); already enabled is fine."""
    control = group / "cgroup.subtree_control"
    if controller not in control.read_text().split():
        _write(control, f"+{controller}")


def _mkdir_group(hierarchy: Hierarchy, group: Path, mems: str, cpus_from: Path | None) -> None:
    """mkdir a group; a v1 cpuset group also needs cpus and mems before it can hold tasks."""
    with contextlib.suppress(FileExistsError):
        group.mkdir()
    if hierarchy.controller == "cpuset" and hierarchy.version == 1:
        if cpus_from is not None:
            _write(group / "cpuset.cpus", (cpus_from / "cpuset.cpus").read_text().strip())
        _write(group / "cpuset.mems", mems)


def _write(path: Path, value: str) -> None:
    """Write a cgroup file; an OSError names the file and the value (cgroupfs refuses at write)."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise OSError(exc.errno, f"{path}: cannot write {value!r}: {exc.strerror}") from None
