"""The local backend through the real daemon: what only a process group does.

Core affinity, memory cgroups and OOM kills, exec in the kernel's directory, a
process killed from outside, dangling processes and allocation modes. The verbs
every backend shares (create, exec, exits, restart, logs, destroy, re-adoption)
are tested in tests/conformance/.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from daemon.agent import STARTS_IN_FLIGHT
from daemon.backends.base import LaunchSpec, Started
from daemon.backends.local.backend import LocalBackend
from daemon.config import load_config
from daemon.resources import HostCapacity
from daemon.state_dir import daemon_identity
from protos import agent_pb2 as pb
from tests.servers import (
    Daemon,
    DaemonSetup,
    daemon_config,
    eventually,
    execute,
    get,
    kernels_dir_of,
    running_daemon,
    sleeper,
)

MIB = 1 << 20
HOST = HostCapacity.detect()


def agents(memory: str = "1GiB") -> str:
    return f"""
[[agents]]
id = "a0"
port_range = [44000, 44099]
resources = {{ cpus = [{HOST.cores[0]}], memory = "{memory}" }}

[[agents]]
id = "a1"
port_range = [44100, 44199]
resources = {{ memory = "{memory}" }}
"""


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    return DaemonSetup(agents())


class TestLimits:
    async def test_kernel_is_pinned_to_its_cores_and_exec_shares_them(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0", kernels=[sleeper("k", resources=pb.ResourceRequest(cpu_count=1))]
            )
        )
        kernel = await get(daemon.stub, "a0", "k")
        assert list(kernel.allocated.cores) == [HOST.cores[0]]
        pid = int(kernel.backend_ref.split()[1])
        assert os.sched_getaffinity(pid) == {HOST.cores[0]}
        _, out, _, exit_ = await execute(
            daemon.stub,
            "a0",
            "k",
            ["python3", "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
        )
        assert out.decode().strip() == f"[{HOST.cores[0]}]" and exit_.exit_code == 0

    async def test_a_second_exclusive_core_request_on_a_one_core_slice_waits_for_the_first(
        self,
        daemon: Daemon,
    ) -> None:
        req = pb.ResourceRequest(cpu_count=1)
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("x", resources=req)])
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("y", resources=req)])
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == "1 cores requested, 0 of the agent's 1 are free"

    async def test_memory_limit_is_enforced_and_reported(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[sleeper("m", resources=pb.ResourceRequest(memory_bytes=64 * MIB))],
            )
        )
        kernel = await get(daemon.stub, "a1", "m")
        assert kernel.memory_limit in ("cgroup-v1", "cgroup-v2", "rlimit")
        # Allocating well past the limit inside the kernel's context fails.
        _, _, _, exit_ = await execute(
            daemon.stub,
            "a1",
            "m",
            ["python3", "-c", "b = bytearray(300 * 1024 * 1024); print(len(b))"],
        )
        assert exit_.exit_code != 0
        _, _, _, small = await execute(
            daemon.stub, "a1", "m", ["python3", "-c", "b = bytearray(8 * 1024 * 1024)"]
        )
        assert small.exit_code == 0

    @pytest.mark.skipif(
        not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists(),
        reason="no cgroup memory controller on this host",
    )
    async def test_kernel_over_its_memory_is_oom_killed_and_frees_its_slots(
        self, daemon: Daemon
    ) -> None:
        reply = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[
                    pb.KernelSpec(
                        kernel_id="hog",
                        command=[
                            "python3",
                            "-c",
                            "import time; time.sleep(0.3); "
                            "b = bytearray(400 * 1024 * 1024); time.sleep(30)",
                        ],
                        resources=pb.ResourceRequest(memory_bytes=64 * MIB),
                        ports=[pb.ServicePort(name="p")],
                    )
                ],
            )
        )
        if reply.kernels[0].memory_limit == "rlimit":
            pytest.skip("memory is limited by rlimit here, not by a cgroup")

        async def terminated() -> pb.Kernel | None:
            k = await get(daemon.stub, "a1", "hog")
            return k if k.state == pb.KERNEL_STATE_TERMINATED else None

        kernel = await eventually(terminated)
        assert kernel.status_message == "OOMKilled" and kernel.exit_code == 137
        info = {
            a.agent_id: a for a in (await daemon.stub.ListAgents(pb.ListAgentsRequest())).agents
        }["a1"]
        assert (info.occupied.memory_bytes, info.occupied.ports) == (0, 0)


class TestExecute:
    async def test_runs_in_the_kernels_directory_with_its_env(
        self, daemon: Daemon, tmp_path: Path
    ) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[sleeper("e", env={"GREETING": "hi"}, ports=[pb.ServicePort(name="web")])],
            )
        )
        kernel = await get(daemon.stub, "a1", "e")
        _, out, _, _ = await execute(
            daemon.stub,
            "a1",
            "e",
            ["sh", "-c", "echo $GREETING $AGENTHOST_KERNEL_ID $PORT_WEB; pwd"],
        )
        lines = out.decode().splitlines()
        assert lines[0] == f"hi e {kernel.ports['web']}"
        assert lines[1] == str(kernels_dir_of(tmp_path) / "a1" / "e")


class TestExits:
    async def test_process_killed_from_outside_frees_slots_and_ports_without_any_call(
        self,
        daemon: Daemon,
    ) -> None:
        reply = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[
                    sleeper(
                        "victim",
                        resources=pb.ResourceRequest(cpu_count=1, memory_bytes=100 * MIB),
                        ports=[pb.ServicePort(name="http")],
                    )
                ],
            )
        )
        pid = int(reply.kernels[0].backend_ref.split()[1])
        os.kill(pid, signal.SIGKILL)

        async def freed() -> pb.AgentInfo | None:
            agents = (await daemon.stub.ListAgents(pb.ListAgentsRequest())).agents
            a0 = next(a for a in agents if a.agent_id == "a0")
            return a0 if a0.kernel_count == 0 else None

        a0 = await eventually(freed)
        assert (list(a0.occupied.cores), a0.occupied.memory_bytes, a0.occupied.ports) == ([], 0, 0)
        kernel = await get(daemon.stub, "a0", "victim")
        assert (
            kernel.state == pb.KERNEL_STATE_TERMINATED
            and kernel.status_message == "killed by SIGKILL"
        )
        # Its core is free again for a new kernel.
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0", kernels=[sleeper("next", resources=pb.ResourceRequest(cpu_count=1))]
            )
        )


class TestDanglingKernels:
    async def test_a_process_of_this_agent_that_no_record_owns_is_ended_while_running(
        self,
        daemon: Daemon,
        tmp_path: Path,
    ) -> None:
        identity = daemon_identity(tmp_path / "state")
        env = {
            **os.environ,
            "AGENTHOST_DAEMON": identity,
            "AGENTHOST_AGENT_ID": "a1",
            "AGENTHOST_KERNEL_ID": "ghost",
        }
        ghost = subprocess.Popen(["sleep", "300"], env=env, start_new_session=True)  # noqa: ASYNC220 (instant)
        other_env = {**env, "AGENTHOST_DAEMON": "someone-else"}
        bystander = subprocess.Popen(["sleep", "300"], env=other_env, start_new_session=True)  # noqa: ASYNC220
        try:
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a1", kernels=[sleeper("real")])
            )
            await eventually(lambda: ghost.poll() is not None, timeout=60)
            assert bystander.poll() is None  # another daemon's process is left alone
            assert (await get(daemon.stub, "a1", "real")).state == pb.KERNEL_STATE_RUNNING
        finally:
            for proc in (ghost, bystander):
                proc.kill()
                proc.wait()


class TestAllocationModes:
    async def test_auto_split_over_three_agents_matches_config_check(self, tmp_path: Path) -> None:
        three = "".join(
            f'\n[[agents]]\nid = "s{i}"\nport_range = [{44300 + 100 * i}, {44399 + 100 * i}]\n'
            for i in range(3)
        )
        path = daemon_config(tmp_path, three, allocation_mode="auto-split")
        expected = {a.id: a.slice for a in load_config(path).agents}
        async with running_daemon(path) as d:
            listed = (await d.stub.ListAgents(pb.ListAgentsRequest())).agents
        for a in listed:
            assert tuple(a.capacity.cores) == expected[a.agent_id].cores
            assert a.capacity.memory_bytes == expected[a.agent_id].memory
        mem = {a.capacity.memory_bytes for a in listed}
        assert len(mem) == 1 and 3 * mem.pop() <= HOST.memory
        all_cores = sorted({c for a in listed for c in a.capacity.cores})
        assert all_cores == sorted(HOST.cores)[: max(len(all_cores), 1)]

    async def test_shared_agents_see_every_core_but_an_exclusive_core_has_one_kernel(
        self, tmp_path: Path
    ) -> None:
        path = daemon_config(tmp_path, agents().replace(f"cpus = [{HOST.cores[0]}], ", ""))
        every = len(HOST.cores)
        async with running_daemon(path) as d:
            reply = await d.stub.CreateKernels(
                pb.CreateKernelsRequest(
                    agent_id="a0",
                    kernels=[sleeper("all-a0", resources=pb.ResourceRequest(cpu_count=every))],
                )
            )
            assert sorted(reply.kernels[0].allocated.cores) == sorted(HOST.cores)
            # a1's slice has the same cores, but they are a0's kernel's now.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a1",
                        kernels=[sleeper("all-a1", resources=pb.ResourceRequest(cpu_count=1))],
                    )
                )
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # A kernel asking for no exclusive core still runs there, on every core.
            shared = await d.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a1", kernels=[sleeper("any-a1")])
            )
            pid = int(shared.kernels[0].backend_ref.split()[1])
            assert os.sched_getaffinity(pid) == set(HOST.cores)
            await d.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="all-a0"))
            again = await d.stub.CreateKernels(
                pb.CreateKernelsRequest(
                    agent_id="a1",
                    kernels=[sleeper("all-a1", resources=pb.ResourceRequest(cpu_count=every))],
                )
            )
            assert sorted(again.kernels[0].allocated.cores) == sorted(HOST.cores)


class TestBatchStarts:
    async def test_a_batch_starts_a_few_kernels_at_a_time_and_all_of_them(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A 32-kernel batch: the backend never has more than STARTS_IN_FLIGHT starts of
        the agent at once (the loop is not flooded with every kernel's steps), and every
        kernel runs. The backend's start is wrapped to count, and still starts each."""
        in_flight = 0
        most = 0
        real_start = LocalBackend.start

        async def counting(self: LocalBackend, launch: LaunchSpec) -> Started:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            try:
                await asyncio.sleep(0.01)  # long enough for every start to be under way
                return await real_start(self, launch)
            finally:
                in_flight -= 1

        monkeypatch.setattr(LocalBackend, "start", counting)
        specs = [pb.KernelSpec(kernel_id=f"b{i}", command=["sleep", "300"]) for i in range(32)]
        reply = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a1", kernels=specs), timeout=60
        )
        assert [k.state for k in reply.kernels] == [pb.KERNEL_STATE_RUNNING] * 32
        assert most == STARTS_IN_FLIGHT
