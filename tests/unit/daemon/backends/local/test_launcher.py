"""The launchers (launcher.c and its Python fallback launch.py) and spawning through them.

Both launchers read the same command line and must do the same steps, so every
behaviour is checked on both: the kernel's uid, gid and no supplementary
groups, its directory, affinity, rlimits, cgroups, default signal dispositions,
no inherited descriptor, and every failure reported on the status pipe with its
reason, the launcher reaped. Real processes; steps that need root skip without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.backends.local import launcher as launcher_module
from daemon.backends.local.launcher import (
    NATIVE,
    PROTOCOL,
    SOURCE,
    Launcher,
    LaunchPlan,
    native_problem,
)
from daemon.backends.local.spawn import SpawnError, open_log, spawn_kernel, spawn_piped

ROOT = os.geteuid() == 0
UID = 2_000_777  # a uid no account has (the default uid_range's block)
needs_root = pytest.mark.skipif(not ROOT, reason="changing uid needs root")
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}

LAUNCHERS = [
    pytest.param(
        "native",
        marks=pytest.mark.skipif(
            native_problem() is not None, reason=f"native launcher: {native_problem()}"
        ),
    ),
    pytest.param("fallback"),
]


@pytest.fixture(params=LAUNCHERS)
def launcher(request: pytest.FixtureRequest) -> Launcher:
    return Launcher.native_launcher() if request.param == "native" else Launcher.fallback()


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "k"
    directory.mkdir(mode=0o700)
    if ROOT:
        os.chown(directory, UID, UID)
    yield directory


def run(launcher: Launcher, plan: LaunchPlan, workdir: Path) -> tuple[int, str]:
    """Start plan as a kernel (status pipe, output to a log); its exit code and output."""
    log_fd = open_log(workdir, "kernel.log", plan.uid, plan.gid)
    try:
        pid = spawn_kernel(launcher, plan, ENV, log_fd)
    finally:
        os.close(log_fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), (workdir / "kernel.log").read_text()


def reap_ended_children() -> None:
    """Reap every child of this process that has ended."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def no_zombie_child() -> bool:
    """True when no child of this process has ended unreaped (children of other tests
    may still run: the suite's servers)."""
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True  # no child at all
    return pid == 0


class TestPlan:
    def test_the_command_line_both_launchers_read(self) -> None:
        plan = LaunchPlan(
            argv=["sleep", "5"],
            cwd=Path("/k"),
            cgroup_procs=["/cg/m/cgroup.procs", "/cg/p/cgroup.procs"],
            cores=[0, 2],
            rlimit_as=1 << 30,
            rlimit_nproc=64,
            uid=2000000,
            gid=2000001,
            status_fd=3,
        )
        assert plan.options() == [
            "-s", "3",
            "-j", "/cg/m/cgroup.procs",
            "-j", "/cg/p/cgroup.procs",
            "-c", "0,2",
            "-m", str(1 << 30),
            "-n", "64",
            "-d", "/k",
            "-u", "2000000", "-g", "2000001",
            "--", "sleep", "5",
        ]  # fmt: skip
        assert LaunchPlan(argv=["-x"], cwd=Path("/k")).options() == ["-d", "/k", "--", "-x"]


class TestSteps:
    @needs_root
    def test_the_command_runs_as_its_uid_with_no_groups_in_its_directory(
        self, launcher: Launcher, workdir: Path
    ) -> None:
        plan = LaunchPlan(
            argv=["sh", "-c", "id -u; id -g; id -G; pwd"], cwd=workdir, uid=UID, gid=UID
        )
        code, out = run(launcher, plan, workdir)
        assert code == 0
        assert out.split("\n")[:4] == [str(UID), str(UID), str(UID), str(workdir)]

    def test_affinity_rlimits_signals_and_descriptors(
        self, launcher: Launcher, workdir: Path
    ) -> None:
        core = sorted(os.sched_getaffinity(0))[0]
        leak = os.open("/dev/null", os.O_RDONLY)  # inheritable: the launcher must close it
        os.set_inheritable(leak, True)
        try:
            plan = LaunchPlan(
                argv=[
                    "sh",
                    "-c",
                    "grep -E '^(Cpus_allowed_list|SigIgn|SigBlk)' /proc/self/status; "
                    "grep -E '^Max (address space|processes)' /proc/self/limits; "
                    "ls /proc/self/fd",
                ],
                cwd=workdir,
                cores=[core],
                rlimit_as=1 << 40,
                rlimit_nproc=512,
                uid=UID if ROOT else None,
                gid=UID if ROOT else None,
            )
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a daemon's ignored signal
            code, out = run(launcher, plan, workdir)
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            os.close(leak)
        assert code == 0, out
        lines = out.splitlines()
        assert f"Cpus_allowed_list:\t{core}" in lines
        ignored = int(next(x for x in lines if x.startswith("SigIgn:")).split()[1], 16)
        # The Python fallback cannot reach the two signals the C library reserves (32, 33).
        assert ignored & (0x7FFFFFFF if not launcher.native else ~0) == 0, hex(ignored)
        assert "SigBlk:\t0000000000000000" in lines
        assert any(line.split()[3:5] == [str(1 << 40), str(1 << 40)] for line in lines), lines
        assert any(line.split()[2:4] == ["512", "512"] for line in lines), lines
        # 0-2, and the descriptor ls opens for /proc/self/fd: nothing of ours.
        assert sorted(int(fd) for fd in lines[-4:]) == [0, 1, 2, 3]

    @needs_root
    def test_it_joins_the_cgroups_it_is_given_before_anything_else(
        self, launcher: Launcher, workdir: Path
    ) -> None:
        pids = Path("/sys/fs/cgroup/pids")
        if not (pids / "cgroup.procs").exists():
            pytest.skip("no cgroup v1 pids hierarchy here")
        group = pids / f"agenthost-test-launcher-{os.getpid()}"
        group.mkdir()
        try:
            plan = LaunchPlan(
                argv=["cat", "/proc/self/cgroup"],
                cwd=workdir,
                cgroup_procs=[str(group / "cgroup.procs")],
                uid=UID,
                gid=UID,
            )
            code, out = run(launcher, plan, workdir)
        finally:
            group.rmdir()
        assert code == 0
        assert f":pids:/{group.name}" in out


class TestFailures:
    @pytest.mark.parametrize(
        ("argv", "cwd", "reason"),
        [
            (["/no/such/program"], None, "/no/such/program: No such file or directory"),
            (["no-such-program-anywhere"], None, "no-such-program-anywhere: No such file or "),
            (["/etc/passwd"], None, "/etc/passwd: Permission denied"),
            (["true"], "/no/such/dir", "entering /no/such/dir: No such file or directory"),
        ],
        ids=["missing", "not-on-path", "not-executable", "no-directory"],
    )
    def test_a_command_that_cannot_start_reports_why_and_is_reaped(
        self, launcher: Launcher, workdir: Path, argv: list[str], cwd: str | None, reason: str
    ) -> None:
        plan = LaunchPlan(argv=argv, cwd=Path(cwd) if cwd else workdir)
        reap_ended_children()  # what earlier tests' processes left, not this test's
        with pytest.raises(SpawnError) as info:
            run(launcher, plan, workdir)
        assert str(info.value).startswith(reason)
        assert no_zombie_child()

    def test_a_cgroup_it_cannot_join_fails_the_start(
        self, launcher: Launcher, workdir: Path
    ) -> None:
        plan = LaunchPlan(argv=["true"], cwd=workdir, cgroup_procs=["/no/such/cgroup.procs"])
        with pytest.raises(SpawnError) as info:
            run(launcher, plan, workdir)
        assert str(info.value) == (
            "joining cgroup /no/such/cgroup.procs: No such file or directory"
        )

    def test_without_a_status_pipe_the_reason_goes_to_stderr_and_exit_127(
        self, launcher: Launcher, workdir: Path
    ) -> None:
        piped = spawn_piped(launcher, LaunchPlan(argv=["/no/such/program"], cwd=workdir), ENV)
        os.close(piped.stdin)
        with os.fdopen(piped.stdout, "rb") as out, os.fdopen(piped.stderr, "rb") as err:
            assert out.read() == b""
            assert err.read() == b"/no/such/program: No such file or directory\n"
        _, status = os.waitpid(piped.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 127


class TestLog:
    def test_a_link_in_place_of_the_log_is_never_followed(self, workdir: Path) -> None:
        target = workdir.parent / "secret"
        target.write_text("x")
        (workdir / "kernel.log").symlink_to(target)
        with pytest.raises(OSError):
            open_log(workdir, "kernel.log", None, None)
        os.mkfifo(workdir / "fifo")
        with pytest.raises(OSError):
            open_log(workdir, "fifo", None, None)
        assert target.read_text() == "x"


class TestBuild:
    def test_the_built_native_launcher_is_current(self) -> None:
        if shutil.which("cc") is None and not NATIVE.exists():
            pytest.skip("no C compiler here: kernels start through the Python launcher")
        assert native_problem() is None, "run: bash scripts/setup.sh"

    def test_launcher_c_builds_warning_free_and_reports_its_protocol_and_source(
        self, tmp_path: Path
    ) -> None:
        if shutil.which("cc") is None:
            pytest.skip("no C compiler here")
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
        binary = tmp_path / "agenthost-launch"
        subprocess.run(
            ["cc", "-O2", "-Wall", "-Wextra", "-Werror",
             f'-DAGENTHOST_LAUNCHER_SOURCE="{digest}"', "-o", str(binary), str(SOURCE)],
            check=True,
        )  # fmt: skip
        version = subprocess.run([str(binary), "-V"], capture_output=True, text=True, check=True)
        assert version.stdout == f"agenthost-launch {PROTOCOL} {digest}\n"

    def test_a_missing_or_stale_native_launcher_falls_back_saying_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setattr(launcher_module, "NATIVE", tmp_path / "absent")
        assert native_problem() == f"the native launcher {tmp_path / 'absent'} is not built"
        assert Launcher.detect() == Launcher.fallback()
        assert "kernels start through the Python launcher" in caplog.text
        if NATIVE.exists():
            other = tmp_path / "launcher.c"
            other.write_text("/* another version */\n")
            monkeypatch.setattr(launcher_module, "NATIVE", NATIVE)
            monkeypatch.setattr(launcher_module, "SOURCE", other)
            assert native_problem() == (
                f"the native launcher {NATIVE} is stale (built from another launcher.c)"
            )
