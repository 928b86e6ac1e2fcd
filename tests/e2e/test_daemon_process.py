"""The real `agenthost` command: restarts without loss, graceful shutdown, config check."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import grpc
import psutil
import pytest

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import AGENTHOST, daemon_config, daemon_process, eventually, execute, sleeper

MIB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]

AGENTS = """
[[agents]]
id = "a0"
port_range = [45000, 45099]
resources = { memory = "1GiB" }

[[agents]]
id = "a1"
port_range = [45100, 45199]
resources = { memory = "1GiB" }
"""


def pid_of(kernel: pb.Kernel) -> int:
    return int(kernel.backend_ref.split()[1])


async def snapshot(address: str) -> dict[str, tuple[str, dict[str, int], int, int]]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        kernels = (await stub.ListKernels(pb.ListKernelsRequest())).kernels
    return {
        k.kernel_id: (k.agent_id, dict(k.ports), k.allocated.memory_bytes, k.state) for k in kernels
    }


class TestRestartWithoutLoss:
    async def test_kill_9_then_restart_readopts_kernels_on_two_agents(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, AGENTS)
        with daemon_process(path) as first:
            async with grpc.aio.insecure_channel(first.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                for agent_id in ("a0", "a1"):
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id=agent_id,
                            kernels=[
                                sleeper(
                                    f"{agent_id}-k",
                                    resources=pb.ResourceRequest(memory_bytes=100 * MIB),
                                    ports=[pb.ServicePort(name="http"), pb.ServicePort(name="ssh")],
                                ),
                            ],
                        )
                    )
                doomed = (
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id="a1",
                            kernels=[
                                sleeper(
                                    "doomed", resources=pb.ResourceRequest(memory_bytes=200 * MIB)
                                ),
                            ],
                        )
                    )
                ).kernels[0]
            before = await snapshot(first.address)
            first.kill9()
        # While the daemon is down one kernel dies; the others keep running.
        os.kill(pid_of(doomed), signal.SIGKILL)

        with daemon_process(path) as second:
            after = await snapshot(second.address)
            for kernel_id in ("a0-k", "a1-k"):
                assert after[kernel_id] == before[kernel_id]
            assert after["doomed"][3] == pb.KERNEL_STATE_TERMINATED
            async with grpc.aio.insecure_channel(second.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                agents = {
                    a.agent_id: a for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents
                }
                assert agents["a0"].occupied.memory_bytes == 100 * MIB
                assert agents["a1"].occupied.memory_bytes == 100 * MIB  # doomed's 200MiB came back
                assert agents["a1"].occupied.ports == 2
                _, out, _, exit_ = await execute(
                    stub, "a1", "a1-k", ["sh", "-c", "echo $AGENTHOST_AGENT_ID"]
                )
                assert out == b"a1\n" and exit_.exit_code == 0
                # A new kernel never gets a re-adopted kernel's ports.
                fresh = (
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id="a0",
                            kernels=[sleeper("fresh", ports=[pb.ServicePort(name="http")])],
                        )
                    )
                ).kernels[0]
                assert fresh.ports["http"] not in before["a0-k"][1].values()
                for agent_id, kernel_id in (("a0", "a0-k"), ("a1", "a1-k"), ("a0", "fresh")):
                    pid = pid_of(
                        (
                            await stub.GetKernel(
                                pb.GetKernelRequest(agent_id=agent_id, kernel_id=kernel_id)
                            )
                        ).kernel
                    )
                    await stub.DestroyKernel(
                        pb.DestroyKernelRequest(agent_id=agent_id, kernel_id=kernel_id)
                    )
                    await eventually(lambda pid=pid: not psutil.pid_exists(pid))
                agents = {
                    a.agent_id: a for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents
                }
                assert agents["a0"].occupied.memory_bytes == agents["a0"].occupied.ports == 0
                assert agents["a1"].occupied.memory_bytes == agents["a1"].occupied.ports == 0
            assert second.terminate() == 0

    async def test_readopted_kernel_that_dies_later_frees_its_slots(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, AGENTS)
        with daemon_process(path) as first:
            async with grpc.aio.insecure_channel(first.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                k = (
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id="a0",
                            kernels=[
                                sleeper("k", resources=pb.ResourceRequest(memory_bytes=100 * MIB))
                            ],
                        )
                    )
                ).kernels[0]
            first.kill9()
        with daemon_process(path) as second:
            async with grpc.aio.insecure_channel(second.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                os.kill(pid_of(k), signal.SIGKILL)

                async def gone() -> bool:
                    got = (
                        await stub.GetKernel(pb.GetKernelRequest(agent_id="a0", kernel_id="k"))
                    ).kernel
                    return got.state == pb.KERNEL_STATE_TERMINATED

                await eventually(gone)
                a0 = (await stub.ListAgents(pb.ListAgentsRequest())).agents[0]
                assert a0.occupied.memory_bytes == 0 and a0.kernel_count == 0
            second.terminate()


class TestShutdown:
    async def test_sigterm_leaves_kernels_running(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, AGENTS)
        with daemon_process(path) as proc:
            async with grpc.aio.insecure_channel(proc.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                k = (
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("stay")])
                    )
                ).kernels[0]
            assert proc.terminate() == 0
            assert "SIGTERM received: shutting down" in proc.log()
        try:
            assert psutil.Process(pid_of(k)).status() != psutil.STATUS_ZOMBIE
        finally:
            os.killpg(pid_of(k), signal.SIGKILL)

    async def test_destroy_kernels_on_exit_ends_them(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, AGENTS)
        with daemon_process(path, "--destroy-kernels-on-exit") as proc:
            async with grpc.aio.insecure_channel(proc.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                k = (
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(agent_id="a1", kernels=[sleeper("go")])
                    )
                ).kernels[0]
            assert proc.terminate() == 0
        assert (
            not psutil.pid_exists(pid_of(k))
            or psutil.Process(pid_of(k)).status() == psutil.STATUS_ZOMBIE
        )

    def test_daemon_logs_which_agents_serve_where(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, AGENTS)
        with daemon_process(path) as proc:
            log = proc.log()
            for agent_id in ("a0", "a1"):
                assert f"agent {agent_id} (backend local, scaling group default, " in log
                assert f"serving on {proc.address}" in log
            proc.terminate()


class TestConfigCheckCommand:
    @pytest.mark.parametrize("name", ["daemon-single.toml", "daemon-multi.toml"])
    def test_shipped_configs_pass(self, name: str) -> None:
        result = subprocess.run(
            [AGENTHOST, "config", "check", str(ROOT / "configs" / name)],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        assert "AGENT_ID" in result.stdout and "a0" in result.stdout

    def test_generated_sample_documents_every_option_and_passes_check(self, tmp_path: Path) -> None:
        from daemon.config import AgentEntry, DaemonSection

        sample = subprocess.run([AGENTHOST, "config", "sample"], capture_output=True, text=True)
        assert sample.returncode == 0
        for field in [*DaemonSection.model_fields, *AgentEntry.model_fields]:
            assert f"{field} = " in sample.stdout or f"[daemon.{field}]" in sample.stdout, field
        path = tmp_path / "sample.toml"
        path.write_text(sample.stdout)
        check = subprocess.run(
            [AGENTHOST, "config", "check", str(path)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr

    def test_bad_config_exits_2_naming_file_agent_and_key(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text(
            '[[agents]]\nid = "a0"\nport_range = [30000, 30099]\nbackend = "dockr"\n'
            'resources = { cpus = [0], memory = "1GiB" }\n'
        )
        result = subprocess.run(
            [AGENTHOST, "config", "check", str(bad)], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"error: {bad}: agents[0] (id \"a0\"): backend: unknown backend 'dockr'; "
            "valid: local, docker, kubernetes",
            f"error: {bad}: daemon: [daemon.tls] is required (ca, cert, key: make them with "
            "agenthost certs init and agenthost certs issue --role daemon), or set insecure = "
            "true to serve plaintext on a loopback address",
        ]

    def test_daemon_with_bad_config_starts_nothing(self, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text(f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[[agents]]\nid = "a0"\n')
        result = subprocess.run(
            [AGENTHOST, "daemon", "--config", str(bad)], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2
        assert "port_range: required" in result.stderr
        assert not (tmp_path / "state").exists()
