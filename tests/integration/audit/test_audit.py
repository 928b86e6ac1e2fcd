"""The audit trail of a real manager and a real daemon, over gRPC.

Who called, what, about which agent and kernel, and how it ended: one line per
call on each server, refusals included (over TLS with certificates and tokens,
tests/clusters.py); each kernel's spawn and end; nothing secret; rotation by size;
and `agenthost audit tail` reading it all back as a separate process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.clusters import Cluster, trusted_cluster
from tests.managers import (
    Manager,
    admin_token,
    agents_by_id,
    agents_toml,
    create,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.pki import Pki
from tests.servers import (
    AGENTHOST,
    Daemon,
    DaemonFactory,
    eventually,
    execute,
    local_agents,
    running_daemon,
    sleeper,
)

Entry = dict[str, Any]


def entries(path: Path) -> list[Entry]:
    """Every entry of a log file as written so far (whole lines only)."""
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def matching(found: list[Entry], **fields: Any) -> list[Entry]:
    return [e for e in found if all(e.get(k) == v for k, v in fields.items())]


async def one_line(path: Path, **fields: Any) -> Entry:
    """The line of path with those fields, once written; exactly one such line."""

    def written() -> list[Entry]:
        return matching(entries(path), **fields)

    (line,) = await eventually(written)
    await asyncio.sleep(0.2)  # a second one would have come by now
    assert len(written()) == 1, written()
    return line


def code_of(error: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> grpc.StatusCode:
    return error.value.code()


MANAGER = "/agenthost.v1.ManagerService/"
AGENT = "/agenthost.v1.AgentService/"


# --------------------------------------------------------- who, what, how it ended


@pytest.fixture
async def cluster(pki: Pki, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with trusted_cluster(pki, tmp_path) as running:
        yield running


def manager_log(c: Cluster) -> Path:
    return c.tmp_path / "audit.log"  # beside the manager's db_path


def daemon_log(c: Cluster, name: str) -> Path:
    return c.tmp_path / name / "state" / "audit.log"


class TestCalls:
    async def test_a_success_is_one_line_on_each_server_with_its_caller(
        self, cluster: Cluster
    ) -> None:
        alice = await cluster.token("alice", scaling_groups=["g1"])
        async with cluster.channel(alice) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            made = await create(stub, sleeper("k-ok"), scaling_group="g1")
            await stub.GetKernel(pb.GetKernelRequest(kernel_id="k-ok"))
        line = await one_line(manager_log(cluster), method=MANAGER + "GetKernel", kernel_id="k-ok")
        assert (line["server"], line["caller"], line["code"]) == ("manager", "token:alice", "OK")
        assert line["duration"] >= 0 and line["time"].endswith("Z")
        created = await one_line(manager_log(cluster), method=MANAGER + "CreateKernel")
        assert (created["caller"], created["kernel_id"], created["code"]) == (
            "token:alice",
            "k-ok",
            "OK",
        )
        # The daemon saw the manager, by its certificate, create the kernel on its agent.
        node = {"w1": "n1", "w2": "n2"}[made.kernel.agent_id]
        routed = await one_line(
            daemon_log(cluster, node), method=AGENT + "CreateKernels", kernel_ids=["k-ok"]
        )
        assert (routed["server"], routed["caller"], routed["code"]) == (
            "daemon",
            "manager/m1",
            "OK",
        )
        assert routed["agent_id"] == made.kernel.agent_id

    async def test_a_not_found_is_written_with_the_kernel_asked_for(self, cluster: Cluster) -> None:
        alice = await cluster.token("alice", scaling_groups=["g1"])
        async with cluster.channel(alice) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await manager_pb2_grpc.ManagerServiceStub(channel).GetKernel(
                    pb.GetKernelRequest(kernel_id="k-missing")
                )
        assert code_of(err) == grpc.StatusCode.NOT_FOUND
        line = await one_line(manager_log(cluster), kernel_id="k-missing")
        assert (line["method"], line["caller"], line["code"]) == (
            MANAGER + "GetKernel",
            "token:alice",
            "NOT_FOUND",
        )

    async def test_a_refusal_names_whom_the_policy_refused(self, cluster: Cluster) -> None:
        alice = await cluster.token("alice", scaling_groups=["g1"])
        async with cluster.channel(alice) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await manager_pb2_grpc.ManagerServiceStub(channel).CreateToken(
                    mpb.CreateTokenRequest(name="mine")
                )
        assert code_of(err) == grpc.StatusCode.PERMISSION_DENIED
        line = await one_line(
            manager_log(cluster), method=MANAGER + "CreateToken", caller="token:alice"
        )
        assert line["code"] == "PERMISSION_DENIED"

    async def test_a_certificate_the_daemon_refuses_is_written_by_its_name(
        self, cluster: Cluster
    ) -> None:
        bob = cluster.pki.files("user", "bob")  # not an admin: no business with daemons
        address = cluster.daemons["n2"].server.address
        async with grpc.aio.secure_channel(address, bob.channel_credentials()) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await agent_pb2_grpc.AgentServiceStub(channel).GetKernel(
                    pb.GetKernelRequest(agent_id="w2", kernel_id="k-theirs"), timeout=5
                )
        assert code_of(err) == grpc.StatusCode.PERMISSION_DENIED
        line = await one_line(daemon_log(cluster, "n2"), kernel_id="k-theirs")
        assert {k: line[k] for k in ("caller", "method", "agent_id", "code")} == {
            "caller": "user/bob",
            "method": AGENT + "GetKernel",
            "agent_id": "w2",
            "code": "PERMISSION_DENIED",
        }

    async def test_an_unauthenticated_call_is_written_with_no_caller(
        self, cluster: Cluster
    ) -> None:
        async with cluster.channel(None) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await manager_pb2_grpc.ManagerServiceStub(channel).GetKernel(
                    pb.GetKernelRequest(kernel_id="k-anon")
                )
        assert code_of(err) == grpc.StatusCode.UNAUTHENTICATED
        line = await one_line(manager_log(cluster), kernel_id="k-anon")
        assert (line["caller"], line["code"]) == (None, "UNAUTHENTICATED")

    async def test_no_token_reaches_a_log(self, cluster: Cluster) -> None:
        alice = await cluster.token("alice", scaling_groups=["g1"])
        async with cluster.channel(alice) as channel:
            await manager_pb2_grpc.ManagerServiceStub(channel).ListKernels(
                mpb.ManagerListKernelsRequest()
            )
        await one_line(manager_log(cluster), method=MANAGER + "ListKernels", caller="token:alice")
        logs = [manager_log(cluster), daemon_log(cluster, "n1"), daemon_log(cluster, "n2")]
        for secret in (alice, admin_token(), alice.split("_", 2)[2]):
            for path in logs:
                assert secret not in path.read_text(), path


# ------------------------------------------------------------- kernels' lives


@dataclass
class Setup:
    manager: Manager
    daemon: Daemon
    tmp_path: Path

    @property
    def manager_log(self) -> Path:
        return self.tmp_path / "audit.log"

    @property
    def daemon_log(self) -> Path:
        return self.tmp_path / "d" / "state" / "audit.log"

    @property
    def daemon_config(self) -> Path:
        return self.tmp_path / "d" / "daemon.toml"

    @property
    def manager_config(self) -> Path:
        return self.tmp_path / "manager.toml"


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """A plaintext manager and a daemon with one agent (w0), registered."""
    async with running_manager(manager_config(tmp_path, missed_heartbeats=50)) as manager:
        path = linked_daemon_config(
            tmp_path, "d", manager.address, agents_toml(("w0", "default", 47600, ""))
        )
        async with running_daemon(path) as daemon:

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 1

            await eventually(registered)
            yield Setup(manager, daemon, tmp_path)


class TestLifecycle:
    async def test_spawn_and_end_on_both_sides(self, setup: Setup) -> None:
        spec = sleeper("k-life", ports=[pb.ServicePort(name="http")])
        made = await create(setup.manager.stub, spec)
        await setup.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k-life"))
        creator = await one_line(setup.manager_log, method=MANAGER + "CreateKernel")
        assert creator["caller"].startswith("token:")  # the session's admin token
        callers = {"daemon": "insecure:loopback", "manager": creator["caller"]}
        for path, server in ((setup.daemon_log, "daemon"), (setup.manager_log, "manager")):
            spawned = await one_line(path, event="spawned", kernel_id="k-life")
            assert {k: v for k, v in spawned.items() if k != "time"} == {
                "server": server,
                "event": "spawned",
                "caller": callers[server],
                "agent_id": "w0",
                "kernel_id": "k-life",
                "uid": made.kernel.uid if made.kernel.HasField("uid") else None,
                "cores": list(made.kernel.allocated.cores),
                "ports": dict(made.kernel.ports),
            }
            assert set(spawned["ports"]) == {"http"}
            ended = await one_line(path, event="terminated", kernel_id="k-life")
            assert (ended["agent_id"], ended["end_reason"], ended["reason"]) == (
                "w0",
                "destroyed",
                "destroyed",
            )
        assert made.kernel.HasField("uid") or os.geteuid() != 0

    async def test_a_kernel_that_exits_by_itself_is_terminated_with_its_code(
        self, setup: Setup
    ) -> None:
        await create(
            setup.manager.stub, pb.KernelSpec(kernel_id="k-exit", command=["sh", "-c", "exit 3"])
        )
        for path in (setup.daemon_log, setup.manager_log):
            ended = await one_line(path, event="terminated", kernel_id="k-exit")
            assert (ended["exit_code"], ended["end_reason"]) == (3, "exited")


class TestNothingSecret:
    async def test_env_argv_stdin_and_tokens_never_reach_either_log(self, setup: Setup) -> None:
        env_value = "env-value-6f1d9c"
        argv_value = "argv-value-2b7e44"
        stdin_value = b"stdin-value-93aa01"
        spec = pb.KernelSpec(
            kernel_id="k-secret",
            command=["sh", "-c", f"sleep 300 # {argv_value}"],
            env={"API_KEY": env_value},
            labels={"team": "ops"},
        )
        await create(setup.manager.stub, spec)
        stub = agent_pb2_grpc.AgentServiceStub(setup.daemon.channel)
        _, out, _, exit_ = await execute(
            stub, "w0", "k-secret", ["sh", "-c", f"cat; echo $API_KEY # {argv_value}"], stdin_value
        )
        assert exit_.exit_code == 0 and env_value.encode() in out and stdin_value in out
        await setup.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k-secret"))
        for path in (setup.daemon_log, setup.manager_log):
            await one_line(path, event="terminated", kernel_id="k-secret")
        await one_line(setup.daemon_log, method=AGENT + "Execute", kernel_id="k-secret")
        for path in (setup.daemon_log, setup.manager_log):
            text = path.read_text()
            assert "k-secret" in text
            for secret in (env_value, argv_value, stdin_value.decode(), admin_token()):
                assert secret not in text, (path, secret)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# ------------------------------------------------------------------ rotation


class TestRotation:
    async def test_the_log_rotates_by_size_and_tail_reads_across_parts(
        self, start_daemon: DaemonFactory, tmp_path: Path
    ) -> None:
        daemon_settings = 'audit_max_bytes = "2KiB"\naudit_backups = 2\n'
        async with start_daemon(local_agents(1), daemon=daemon_settings) as daemon:
            for i in range(60):
                with pytest.raises(grpc.aio.AioRpcError):
                    await daemon.stub.GetKernel(
                        pb.GetKernelRequest(agent_id="a0", kernel_id=f"n{i}")
                    )
        path = tmp_path / "state" / "audit.log"
        parts = [path, path.with_name("audit.log.1"), path.with_name("audit.log.2")]
        assert all(p.exists() and p.stat().st_size <= 2048 for p in parts)
        assert not path.with_name("audit.log.3").exists()
        kept = [e["kernel_id"] for p in reversed(parts) for e in entries(p)]
        assert kept == [f"n{i}" for i in range(60 - len(kept), 60)]
        tail = await tail_command("--file", str(path), "-n", str(len(kept)), "--json")
        assert [json.loads(line)["kernel_id"] for line in tail.splitlines()] == kept


# ---------------------------------------------------------------- the command


async def tail_command(*args: str) -> str:
    """`agenthost audit tail ARGS` as a process; its stdout (exit code 0 required)."""
    result = await asyncio.to_thread(
        subprocess.run,
        [AGENTHOST, "audit", "tail", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class TestTailCommand:
    async def test_kernel_picks_every_line_about_it_from_a_daemon_config(
        self, setup: Setup
    ) -> None:
        await create(setup.manager.stub, sleeper("k-one"))
        await create(setup.manager.stub, sleeper("k-two"))
        await setup.manager.stub.GetKernel(pb.GetKernelRequest(kernel_id="k-one"))
        await setup.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k-one"))
        await one_line(setup.daemon_log, event="terminated", kernel_id="k-one")
        await one_line(setup.daemon_log, method=AGENT + "DestroyKernel", kernel_id="k-one")
        out = await tail_command("--config", str(setup.daemon_config), "--kernel", "k-one")
        lines = out.splitlines()
        assert all(line.split()[1] == "daemon" for line in lines)
        assert all(" kernel=k-one " in line or " kernels=k-one " in line for line in lines)
        kinds = [" ".join(line.split()[2:4]) for line in lines]
        spawned, created, get, ended, destroy = (
            "spawned caller=insecure:loopback",
            "call AgentService/CreateKernels",
            "call AgentService/GetKernel",
            "terminated agent=w0",
            "call AgentService/DestroyKernel",
        )
        # The manager may fetch the kernel on its own too (it adopts a kernel a
        # heartbeat names before it has recorded the create): GetKernel lines may repeat.
        assert sorted(set(kinds)) == sorted({spawned, created, get, ended, destroy}), kinds
        assert [kinds.count(k) for k in (spawned, created, ended, destroy)] == [1, 1, 1, 1], kinds
        order = [kinds.index(k) for k in (spawned, created, ended, destroy)]
        assert order == sorted(order), kinds
        assert get in kinds[order[1] : order[2]], kinds  # the test's own, between
        assert "code=OK" in lines[order[1]] and "agent=w0" in lines[order[1]]
        assert "exit_code=" in lines[order[2]] and "end_reason=destroyed" in lines[order[2]]
        assert "k-two" not in out

    async def test_n_gives_the_last_entries(self, setup: Setup) -> None:
        for kernel_id in ("k-a", "k-b", "k-c"):
            with pytest.raises(grpc.aio.AioRpcError):
                await setup.daemon.stub.GetKernel(
                    pb.GetKernelRequest(agent_id="w0", kernel_id=kernel_id)
                )
        await one_line(setup.daemon_log, kernel_id="k-c")
        out = await tail_command("--config", str(setup.daemon_config), "-n", "2", "--json")
        last = [json.loads(line) for line in out.splitlines()]
        assert last == entries(setup.daemon_log)[-2:]
        assert [e["kernel_id"] for e in last] == ["k-b", "k-c"]

    async def test_a_manager_config_reads_the_managers_log(self, setup: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError):
            await setup.manager.stub.GetKernel(pb.GetKernelRequest(kernel_id="k-m"))
        await one_line(setup.manager_log, kernel_id="k-m")
        config = str(setup.manager_config)
        human = await tail_command("--config", config, "--kernel", "k-m", "-n", "1")
        assert human.split()[1:4] == ["manager", "call", "ManagerService/GetKernel"]
        assert "kernel=k-m" in human and "code=NOT_FOUND" in human
        assert "caller=token:" in human and human.count("\n") == 1

    async def test_follow_prints_what_is_written_after_it_started(self, setup: Setup) -> None:
        process = await asyncio.create_subprocess_exec(
            *[AGENTHOST, "audit", "tail", "--file", str(setup.daemon_log), "-n", "0"],
            *["--follow", "--kernel", "k-later"],
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        printed = asyncio.ensure_future(process.stdout.readline())
        try:
            # Calls until one lands after the command has read to the end of the log.
            while not printed.done():
                with pytest.raises(grpc.aio.AioRpcError):
                    await setup.daemon.stub.GetKernel(
                        pb.GetKernelRequest(agent_id="w0", kernel_id="k-later")
                    )
                await asyncio.wait([printed], timeout=0.5)
            line = printed.result().decode()
            assert line.split()[1:4] == ["daemon", "call", "AgentService/GetKernel"]
            assert "kernel=k-later" in line and "code=NOT_FOUND" in line
        finally:
            process.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(process.wait(), 30)
        assert code == 0

    async def test_an_audit_log_turned_off_is_said_so(self, tmp_path: Path) -> None:
        path = tmp_path / "m.toml"
        path.write_text('[manager]\ninsecure = true\naudit_log = ""\n')
        result = await asyncio.to_thread(
            subprocess.run,
            [AGENTHOST, "audit", "tail", "--config", str(path)],
            capture_output=True,
            text=True,
        )
        assert (result.returncode, result.stderr) == (
            2,
            f'error: {path}: audit_log = "": this server keeps no audit log\n',
        )
