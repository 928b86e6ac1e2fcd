"""The launcher every local kernel process starts through, and the plan it is given.

Why a launcher at all: the steps between fork and exec (join the kernel's
cgroups, pin its cores, set rlimits, enter its directory, drop to its uid and
gid, reset signals, keep no descriptor but 0-2) must run in the child, before
the kernel's own code, and Python cannot run code there safely in a threaded
daemon (`preexec_fn` is unsafe with threads and slow). Why a native one:
starting `python launch.py` per kernel cost 15-50 ms, most of a create. The
native launcher (`launcher.c`, built by `scripts/setup.sh` with the system `cc`
into `agenthost-launch` beside it) does the same steps in well under a
millisecond and then execs the kernel's command, so the kernel process *is*
the launched process and nothing stays in between. Why not
`clone3(CLONE_INTO_CGROUP)`: it needs cgroup v2, and uid, rlimits and
affinity would still need code in the child. Why not moving a prepared
thread into the cgroups (v1 allows per-thread membership) and `posix_spawn`ing
from it: rlimits are per process and `posix_spawn` cannot change uid, so the
child would still need a step of its own.

When the native launcher is missing (no compiler at set-up) or stale (built
from another `launcher.c`), `Launcher.detect` says so once in the log and kernels
start through `launch.py`, a Python launcher that takes the same command line
and does the same steps, only slower.

This module holds the plan (`LaunchPlan`: the command line both launchers
read), which launcher to use, and a kernel's environment. It spawns nothing
(`spawn.py` does) and knows nothing of agents, slices or gRPC.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.backends.base import LaunchSpec

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
NATIVE = HERE / "agenthost-launch"
SOURCE = HERE / "launcher.c"
FALLBACK = HERE / "launch.py"
PROTOCOL = 1  # the command line both launchers read; launcher.c's PROTOCOL
# Environment a kernel inherits from the daemon; everything else comes from its spec.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# The status descriptor in a kernel's main process (launcher.c's -s).
STATUS_FD = 3


@dataclass(frozen=True)
class LaunchPlan:
    """What the launcher does before it execs argv: the kernel's limits, directory and user."""

    argv: Sequence[str]
    cwd: Path
    cgroup_procs: Sequence[str] = ()  # cgroup.procs files to join
    cores: Sequence[int] = ()  # CPU affinity
    rlimit_as: int | None = None  # bytes, when no memory cgroup holds the kernel
    rlimit_nproc: int | None = None  # when no pids cgroup holds it
    uid: int | None = None  # None: stay the daemon's user
    gid: int | None = None
    status_fd: int | None = None  # where a failure is reported (else stderr)

    def options(self) -> list[str]:
        """The launcher's command line after its own name (see launcher.c)."""
        args: list[str] = []
        if self.status_fd is not None:
            args += ["-s", str(self.status_fd)]
        for procs in self.cgroup_procs:
            args += ["-j", procs]
        if self.cores:
            args += ["-c", ",".join(map(str, self.cores))]
        if self.rlimit_as is not None:
            args += ["-m", str(self.rlimit_as)]
        if self.rlimit_nproc is not None:
            args += ["-n", str(self.rlimit_nproc)]
        args += ["-d", str(self.cwd)]
        if self.uid is not None:
            args += ["-u", str(self.uid), "-g", str(self.gid if self.gid is not None else self.uid)]
        return [*args, "--", *self.argv]


@dataclass(frozen=True)
class Launcher:
    """The launcher program: the native one, or the Python fallback."""

    path: str  # what posix_spawn executes
    prefix: tuple[str, ...]  # argv before the plan's options
    native: bool

    @classmethod
    def detect(cls) -> Launcher:
        """The native launcher when it is built from this launcher.c, else the fallback (logged)."""
        problem = native_problem()
        if problem is None:
            return cls.native_launcher()
        log.warning(
            "local backend: %s; kernels start through the Python launcher (launch.py), "
            "15-50 ms slower each. Build it with: bash scripts/setup.sh (needs a C compiler, cc)",
            problem,
        )
        return cls.fallback()

    @classmethod
    def native_launcher(cls) -> Launcher:
        """The native launcher, built or not."""
        return cls(str(NATIVE), (str(NATIVE),), True)

    @classmethod
    def fallback(cls) -> Launcher:
        """The Python launcher in an isolated interpreter without site packages."""
        return cls(sys.executable, (sys.executable, "-I", "-S", str(FALLBACK)), False)

    def argv(self, plan: LaunchPlan) -> list[str]:
        """The command line that runs plan."""
        return [*self.prefix, *plan.options()]


def native_problem() -> str | None:
    """Why the native launcher cannot be used, or None when it can."""
    if not os.access(NATIVE, os.X_OK):
        return f"the native launcher {NATIVE} is not built"
    try:
        out = subprocess.run(
            [str(NATIVE), "-V"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the native launcher {NATIVE} does not run ({exc})"
    if len(out) != 3 or out[0] != "agenthost-launch" or out[1] != str(PROTOCOL):
        return f"the native launcher {NATIVE} speaks another protocol ({' '.join(out)!r})"
    if SOURCE.exists() and out[2] != hashlib.sha256(SOURCE.read_bytes()).hexdigest():
        return f"the native launcher {NATIVE} is stale (built from another {SOURCE.name})"
    return None


def kernel_env(launch: LaunchSpec, home: Path) -> dict[str, str]:
    """A few variables inherited from the daemon, HOME and TMPDIR, then the kernel's own env."""
    env: Mapping[str, str] = os.environ
    out = {k: env[k] for k in INHERITED_ENV if k in env}
    out.setdefault("PATH", DEFAULT_PATH)
    out["HOME"] = str(home)
    out["TMPDIR"] = str(home)
    out.update(launch.env)
    return out
