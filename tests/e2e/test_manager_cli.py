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
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protos import agent_pb2 as pb
from tests.managers import free_port, reap
from tests.servers import AGENTHOST

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    log_path: Path
    manager: str
    cwd: Path

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
            env={**os.environ, "AGENTHOST_MANAGER": self.manager, **(env or {})},
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    manager = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "up.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                AGENTHOST,
                "up",
                "--config",
                str(ROOT / "configs" / "daemon-multi.toml"),
                "--manager-config",
                str(ROOT / "configs" / "manager.toml"),
                "--manager-listen",
                manager,
                "--daemon-listen",
                "127.0.0.1:0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    session = Up(proc, log_path, manager, tmp_path)
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

    def test_ctrl_c_stops_manager_and_daemon_cleanly(self, up: Up) -> None:
        up.proc.send_signal(signal.SIGINT)
        assert up.proc.wait(20) == 0
        log = up.log()
        assert "SIGINT received: shutting down" in log
        assert "daemon stopped" in log and "manager stopped" in log


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
