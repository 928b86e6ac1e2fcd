"""The real `agenthost` commands end to end: `agenthost up`, then the client commands.

`agenthost up` runs on the repository's own configs/daemon-multi.toml and
configs/manager.toml (the README walkthrough), in a temporary working directory
so its state stays there, on a free manager port.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import free_port, reap
from tests.servers import AGENTHOST, visible_to_kernels

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log_path: Path
    manager: str
    cwd: Path
    home: Path  # its $AGENTHOST_HOME: the CA, certificates and admin token up made

    def log(self) -> str:
        return self.log_path.read_text()

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """An `agenthost` client command against this manager (via AGENTHOST_MANAGER)."""
        return subprocess.run(
            [AGENTHOST, *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env={
                **os.environ,
                "AGENTHOST_HOME": str(self.home),
                "AGENTHOST_MANAGER": self.manager,
                **(env or {}),
            },
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    manager = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "up.log"
    home = tmp_path / "home"
    # The repository's own example files, copied so that the paths they give relative
    # to themselves (state_dir, db_path) land in this test's directory.
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("daemon-multi.toml", "manager.toml"):
        (configs / name).write_text((ROOT / "configs" / name).read_text())
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                AGENTHOST,
                "up",
                "--config",
                str(configs / "daemon-multi.toml"),
                "--manager-config",
                str(configs / "manager.toml"),
                "--manager-listen",
                manager,
                "--manager-daemon-listen",
                "127.0.0.1:0",
                "--daemon-listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "AGENTHOST_HOME": str(home)},
        )
    session = Up(proc, log_path, manager, tmp_path, home)
    try:
        deadline = time.monotonic() + 30
        while "registered agents a0, a1, a2" not in session.log():
            assert proc.poll() is None, session.log()
            assert time.monotonic() < deadline, session.log()
            time.sleep(0.05)
        yield session
    finally:
        if proc.poll() is None:
            listed = session.run("kernel", "ls", "--json")
            if listed.returncode == 0:
                reap([_kernel(k["kernel"]) for k in json.loads(listed.stdout)])
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _kernel(data: dict[str, object]) -> pb.Kernel:
    return pb.Kernel(backend_ref=str(data.get("backend_ref", "")))


def kernel_ids(table: str) -> list[str]:
    return re.findall(r"^(k-[0-9a-f]+)\s", table, re.MULTILINE)


class TestWalkthrough:
    def test_kernels_land_on_different_agents_exec_and_remove(self, up: Up) -> None:
        agents = up.ok("agents")
        assert agents.splitlines()[0].split() == [
            "AGENT_ID",
            "STATUS",
            "DAEMON",
            "NODE",
            "SCALING_GROUP",
            "BACKEND",
            "CORES",
            "MEMORY",
            "PORTS",
            "KERNELS",
        ]
        rows = {line.split()[0]: line.split() for line in agents.splitlines()[1:]}
        assert set(rows) == {"a0", "a1", "a2"}
        assert {r[1] for r in rows.values()} == {"ALIVE"}
        assert rows["a1"][4] == "batch"

        first = kernel_ids(up.ok("kernel", "create", "--", "sleep", "600"))
        second = kernel_ids(up.ok("kernel", "create", "--port", "http", "--", "sleep", "600"))
        batch = kernel_ids(
            up.ok(
                "kernel", "create", "--scaling-group", "batch", "--env", "A=1", "--", "sleep", "600"
            )
        )
        created = first + second + batch
        assert len(created) == 3

        listing = json.loads(up.ok("kernel", "ls", "--json"))
        where = {k["kernel"]["kernel_id"]: k["kernel"]["agent_id"] for k in listing}
        assert where == {first[0]: "a0", second[0]: "a2", batch[0]: "a1"}
        table = up.ok("kernel", "ls")
        assert sorted(kernel_ids(table)) == sorted(created)
        assert "http=302" in table  # a2's port range is 30200-30299

        agents = up.ok("agents")
        kernels_column = {line.split()[0]: line.split()[-1] for line in agents.splitlines()[1:]}
        assert kernels_column == {"a0": "1", "a1": "1", "a2": "1"}

        result = up.run(
            "kernel",
            "exec",
            batch[0],
            "--",
            "sh",
            "-c",
            "echo $AGENTHOST_AGENT_ID $A; echo oops >&2; exit 5",
        )
        assert (result.returncode, result.stdout, result.stderr) == (5, "a1 1\n", "oops\n")

        got = json.loads(up.ok("kernel", "get", second[0], "--json"))
        assert got["kernel"]["agent_id"] == "a2"
        assert got["kernel"]["state"] == "KERNEL_STATE_RUNNING"
        assert "http" in got["kernel"]["ports"]
        details = up.ok("kernel", "get", second[0])
        assert re.search(r"^agent_id\s+a2$", details, re.MULTILINE)

        removed = up.ok("kernel", "rm", *created)
        assert removed.splitlines() == [
            f"removed {first[0]} (agent a0)",
            f"removed {second[0]} (agent a2)",
            f"removed {batch[0]} (agent a1)",
        ]
        assert kernel_ids(up.ok("kernel", "ls")) == []

    def test_logs_show_what_the_kernel_wrote(self, up: Up) -> None:
        kernel_id = kernel_ids(
            up.ok("kernel", "create", "--", "sh", "-c", "echo first; echo second; exec sleep 600")
        )[0]
        deadline = time.monotonic() + 10
        while up.ok("kernel", "logs", kernel_id) != "first\nsecond\n":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert up.ok("kernel", "logs", kernel_id, "--tail", "1") == "second\n"
        up.ok("kernel", "rm", kernel_id)

    def test_wait_exits_with_the_kernels_code_and_watch_prints_its_end(self, up: Up) -> None:
        watch = subprocess.Popen(
            [AGENTHOST, "kernel", "watch"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "AGENTHOST_HOME": str(up.home), "AGENTHOST_MANAGER": up.manager},
        )
        try:
            assert watch.stdout is not None
            assert watch.stdout.readline().split()[1:] == ["synced"]  # nothing there yet
            go = visible_to_kernels(up.cwd) / "go"
            script = f"while [ ! -e {go} ]; do sleep 0.05; done; exit 3"
            kernel_id = kernel_ids(up.ok("kernel", "create", "--", "sh", "-c", script))[0]
            still = up.run("kernel", "wait", kernel_id, "--timeout", "0.1")
            assert still.returncode == 124 and "still running" in still.stdout
            go.touch()
            waited = up.run("kernel", "wait", kernel_id)
            assert waited.returncode == 3
            assert waited.stdout == f"{kernel_id}: exited with exit code 3\n"
            lines = []
            while not any(" terminated " in line for line in lines):
                lines.append(watch.stdout.readline())
            assert lines[-1].split()[1:] == [
                "terminated",
                kernel_id,
                "(agent",
                lines[-1].split()[4],
                "exit",
                "3,",
                "exited",
            ]
            assert any(line.split()[1:3] == ["created", kernel_id] for line in lines)
        finally:
            watch.send_signal(signal.SIGINT)
            assert watch.wait(10) == 130

    def test_ctrl_c_stops_manager_and_daemon_cleanly(self, up: Up) -> None:
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(20) == 0
        log = up.log()
        assert "SIGINT received: shutting down" in log
        assert "daemon stopped" in log and "manager stopped" in log


class TestSecureByDefault:
    def test_up_serves_tls_the_cli_needs_no_flags_and_plaintext_is_refused(self, up: Up) -> None:
        created = up.ok("kernel", "create", "--", "sleep", "60")
        assert len(kernel_ids(created)) == 1
        pki = up.home / "pki"
        assert stat.S_IMODE((pki / "ca.key").stat().st_mode) == 0o600
        assert stat.S_IMODE((up.home / "token").stat().st_mode) == 0o600
        assert {p.name for p in pki.iterdir()} >= {"ca.crt", "ca.key", "manager-manager.crt"}
        daemon = re.search(r"daemon on (\S+) \(mutual TLS\)", up.log())
        assert daemon is not None, up.log()
        for address in (up.manager, daemon.group(1)):
            with grpc.insecure_channel(address) as channel:
                stub = manager_pb2_grpc.ManagerServiceStub(channel)
                with pytest.raises(grpc.RpcError) as err:
                    stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]

    def test_a_client_without_a_token_is_unauthenticated(self, up: Up) -> None:
        (up.home / "token").rename(up.home / "token.kept")
        result = up.run("agents")
        assert result.returncode == 1
        assert "(UNAUTHENTICATED)" in result.stderr
        assert "hint: give a token with --token or AGENTHOST_TOKEN" in result.stderr
        token = (up.home / "token.kept").read_text().strip()
        assert up.run("agents", env={"AGENTHOST_TOKEN": token}).returncode == 0


class TestTokenCommands:
    def test_an_admin_makes_a_scoped_token_that_works_only_in_its_group_until_revoked(
        self, up: Up
    ) -> None:
        created = up.run("token", "create", "--name", "ci", "--scaling-group", "default")
        assert created.returncode == 0, created.stderr
        token = created.stdout.strip()
        assert token.startswith("aht_") and "not shown again" in created.stderr
        listed = up.ok("token", "ls")
        assert re.search(r"^ci\s+\S+\s+default\s+.*active", listed, re.MULTILINE), listed
        assert token not in listed
        as_ci = {"AGENTHOST_TOKEN": token}
        kernel = up.run("kernel", "create", "--", "sleep", "60", env=as_ci)
        assert kernel.returncode == 0, kernel.stderr
        batch = up.run(
            "kernel", "create", "--scaling-group", "batch", "--", "sleep", "1", env=as_ci
        )
        assert batch.returncode == 1 and "(PERMISSION_DENIED)" in batch.stderr
        assert "token:ci may not create kernels in scaling group 'batch'" in batch.stderr
        refused = up.run("token", "create", "--name", "x", "--admin", env=as_ci)
        assert refused.returncode == 1 and "(PERMISSION_DENIED)" in refused.stderr
        assert up.ok("token", "revoke", "ci").strip().startswith("revoked token ci")
        after = up.run("kernel", "ls", env=as_ci)
        assert after.returncode == 1 and "token 'ci' was revoked (UNAUTHENTICATED)" in after.stderr

    def test_removing_an_unknown_agent_is_not_found(self, up: Up) -> None:
        result = up.run("agents", "rm", "zz")
        assert result.returncode == 1
        assert "agent 'zz' is not registered with the manager" in result.stderr
        alive = up.run("agents", "rm", "a0")
        assert alive.returncode == 1 and "(FAILED_PRECONDITION)" in alive.stderr


class TestErrors:
    @pytest.mark.parametrize(
        ("args", "code", "stderr"),
        [
            (
                ("kernel", "get", "nope"),
                1,
                "error: kernel 'nope' is not known to the manager (NOT_FOUND)\n",
            ),
            (
                ("kernel", "create", "--cpus", "64", "--", "sleep", "1"),
                1,
                "error: no agent of scaling group 'default' (2 agents) could ever fit 64 cores; ",
            ),
            (
                ("kernel", "create", "--agent", "zz", "--", "sleep", "1"),
                1,
                "error: agent 'zz' is not registered with the manager; known: a0, a1, a2 "
                "(NOT_FOUND)\n",
            ),
            (("kernel", "create", "--memory", "lots", "--", "sleep", "1"), 2, "Usage:"),
            (("kernel", "create", "--env", "NOEQUALS", "--", "sleep", "1"), 2, "Usage:"),
        ],
        ids=["unknown kernel", "impossible", "unknown agent", "bad memory", "bad env"],
    )
    def test_errors_are_clear_and_exit_non_zero(
        self, up: Up, args: tuple[str, ...], code: int, stderr: str
    ) -> None:
        result = up.run(*args)
        assert result.returncode == code
        assert result.stderr.startswith(stderr), result.stderr
        assert kernel_ids(up.ok("kernel", "ls")) == []

    def test_exec_exit_code_of_a_missing_kernel(self, up: Up) -> None:
        result = up.run("kernel", "exec", "nope", "--", "true")
        assert result.returncode == 1
        assert "NOT_FOUND" in result.stderr

    def test_manager_flag_beats_the_environment(self, up: Up) -> None:
        result = up.run("agents", "--manager", "127.0.0.1:1")
        assert result.returncode == 1
        assert "UNAVAILABLE" in result.stderr
        assert "hint: is a manager running at 127.0.0.1:1?" in result.stderr
        assert up.run("agents", env={"AGENTHOST_MANAGER": "127.0.0.1:1"}).returncode == 1
        assert up.run("agents", "--manager", up.manager).returncode == 0


class TestManagerCommand:
    def test_manager_with_a_bad_config_exits_2_naming_the_key(self, tmp_path: Path) -> None:
        path = tmp_path / "m.toml"
        path.write_text("[manager]\nmissed_heartbeats = 0\n")
        result = subprocess.run(
            [AGENTHOST, "manager", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2
        assert result.stderr == (
            f"error: {path}: manager: missed_heartbeats: Input should be greater than or equal "
            "to 1 (got 0)\n"
        )

    def test_help_lists_the_manager_commands(self) -> None:
        result = subprocess.run([AGENTHOST, "--help"], capture_output=True, text=True, timeout=30)
        for command in ("manager", "up", "agents", "kernel", "daemon", "config"):
            assert re.search(rf"^\s+{command}\s", result.stdout, re.MULTILINE), command
        kernel = subprocess.run(
            [AGENTHOST, "kernel", "--help"], capture_output=True, text=True, timeout=30
        )
        for command in ("create", "ls", "get", "exec", "logs", "rm"):
            assert re.search(rf"^\s+{command}\s", kernel.stdout, re.MULTILINE), command
