"""Docker kernels through the real daemon and a real engine: limits, ports, operations."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import aiodocker
import grpc
import pytest

from daemon.backends.docker.spec import container_name
from protos import agent_pb2 as pb
from tests.integration.docker.conftest import MIB, SERVER, docker_agent
from tests.servers import (
    Daemon,
    agent_info,
    create,
    daemon_config,
    eventually,
    execute,
    get,
    identity_of,
    running_daemon,
    sleeper,
)

pytestmark = pytest.mark.docker

COMMAND_LINES = (
    "import os\n"
    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
    "    print(open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
)
CGROUP_LIMITS = (
    "grep Cpus_allowed_list /proc/self/status; "
    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
)


async def containers_of(docker: aiodocker.Docker, identity: str) -> list[dict]:  # type: ignore[type-arg]
    filters = {"label": [f"agenthost.daemon={identity}"]}
    return list(
        await docker._query_json(
            "containers/json", params={"all": True, "filters": json.dumps(filters)}
        )
    )


def greeting(port: int) -> bytes:
    """What a kernel's server says on 127.0.0.1:port (b'' while it is not listening yet)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            return conn.recv(100)
    except OSError:
        return b""


class TestLimits:
    async def test_cpuset_and_memory_limit_are_visible_inside_the_container(
        self, daemon: Daemon
    ) -> None:
        [kernel] = await create(
            daemon.stub,
            "d1",
            sleeper("k1", resources=pb.ResourceRequest(cpu_count=1, memory_bytes=256 * MIB)),
        )
        assert list(kernel.allocated.cores) == [1]
        assert kernel.memory_limit == "docker"
        _, out, _, exit_ = await execute(daemon.stub, "d1", "k1", ["sh", "-c", CGROUP_LIMITS])
        assert exit_.exit_code == 0
        assert out.decode().split() == ["Cpus_allowed_list:", "1", str(256 * MIB)]

    async def test_two_docker_agents_kernels_never_share_a_core(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        await create(
            daemon.stub, "d0", sleeper("a"), sleeper("b", resources=pb.ResourceRequest(cpu_count=1))
        )
        await create(
            daemon.stub, "d1", sleeper("c"), sleeper("d", resources=pb.ResourceRequest(cpu_count=1))
        )
        seen: dict[str, set[int]] = {"d0": set(), "d1": set()}
        for agent_id, kernel_id in (("d0", "a"), ("d0", "b"), ("d1", "c"), ("d1", "d")):
            _, out, _, _ = await execute(
                daemon.stub, agent_id, kernel_id, ["grep", "Cpus_allowed_list", "/proc/self/status"]
            )
            seen[agent_id] |= {int(c) for c in out.decode().split()[1].split(",")}
            info = await docker.containers.container(
                (await get(daemon.stub, agent_id, kernel_id)).backend_ref.split()[1]
            ).show()
            assert info["HostConfig"]["CpusetCpus"] == out.decode().split()[1]
        assert seen == {"d0": {0}, "d1": {1}}

    async def test_fractional_cpu_becomes_a_nano_cpu_limit(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        [kernel] = await create(
            daemon.stub, "d0", sleeper("q", resources=pb.ResourceRequest(cpu_quota=0.5))
        )
        info = await docker.containers.container(kernel.backend_ref.split()[1]).show()
        assert info["HostConfig"]["NanoCpus"] == 500_000_000


class TestPorts:
    async def test_published_port_from_the_agent_range_is_reachable_from_the_host(
        self, daemon: Daemon
    ) -> None:
        [kernel] = await create(
            daemon.stub,
            "d0",
            pb.KernelSpec(
                kernel_id="web",
                command=["python3", "-c", SERVER],
                ports=[pb.ServicePort(name="http")],
            ),
        )
        port = kernel.ports["http"]
        assert 42000 <= port <= 42099
        assert await eventually(lambda: greeting(port), timeout=20) == b"hello from web"

    async def test_container_port_is_published_on_the_host_port(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        [kernel] = await create(
            daemon.stub,
            "d1",
            pb.KernelSpec(
                kernel_id="web2",
                command=["python3", "-c", SERVER],
                env={"LISTEN": "8080"},
                ports=[pb.ServicePort(name="http", container_port=8080)],
            ),
        )
        port = kernel.ports["http"]
        assert 42100 <= port <= 42199
        info = await docker.containers.container(kernel.backend_ref.split()[1]).show()
        assert info["HostConfig"]["PortBindings"] == {
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        }
        assert await eventually(lambda: greeting(port), timeout=20) == b"hello from web2"


class TestOperations:
    async def test_env_and_labels_name_the_agent_and_kernel(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        [kernel] = await create(
            daemon.stub, "d0", sleeper("k1", env={"FOO": "bar"}, labels={"team": "ml"})
        )
        _, out, _, _ = await execute(
            daemon.stub,
            "d0",
            "k1",
            ["sh", "-c", "echo $AGENTHOST_AGENT_ID $AGENTHOST_KERNEL_ID $FOO"],
        )
        assert out == b"d0 k1 bar\n"
        info = await docker.containers.container(kernel.backend_ref.split()[1]).show()
        identity = identity_of(tmp_path)
        assert info["Name"] == "/" + container_name(identity, "d0", "k1")
        assert {
            k: v
            for k, v in info["Config"]["Labels"].items()
            if k.startswith("agenthost.") or k == "team"
        } == {
            "agenthost.agent_id": "d0",
            "agenthost.kernel_id": "k1",
            "agenthost.daemon": identity,
            "team": "ml",
        }

    async def test_execute_streams_stdout_stderr_and_the_exit_code(self, daemon: Daemon) -> None:
        await create(daemon.stub, "d0", sleeper("k1"))
        messages, out, err, exit_ = await execute(
            daemon.stub, "d0", "k1", ["sh", "-c", "echo out; echo err >&2; exit 3"]
        )
        assert (out, err, exit_.exit_code, exit_.timed_out) == (b"out\n", b"err\n", 3, False)
        assert len(messages) >= 3

    async def test_execute_feeds_stdin(self, daemon: Daemon) -> None:
        await create(daemon.stub, "d0", sleeper("k1"))
        _, out, _, exit_ = await execute(daemon.stub, "d0", "k1", ["cat"], stdin=b"hello\nworld\n")
        assert (out, exit_.exit_code) == (b"hello\nworld\n", 0)

    async def test_execute_past_its_timeout_is_killed_and_says_so(self, daemon: Daemon) -> None:
        await create(daemon.stub, "d0", sleeper("k1"))
        _, out, _, exit_ = await execute(
            daemon.stub, "d0", "k1", ["sh", "-c", "echo started; exec sleep 60"], timeout=1
        )
        assert out == b"started\n"
        assert exit_.timed_out and exit_.exit_code == 137
        _, out, _, _ = await execute(daemon.stub, "d0", "k1", ["python3", "-c", COMMAND_LINES])
        assert b"sleep 300" in out and b"sleep 60" not in out  # the timed-out process is gone

    async def test_logs_show_the_kernel_output(self, daemon: Daemon) -> None:
        await create(
            daemon.stub,
            "d0",
            pb.KernelSpec(
                kernel_id="k1", command=["sh", "-c", "echo one; echo two >&2; exec sleep 300"]
            ),
        )

        async def logs(tail: int = 0) -> bytes:
            reply = await daemon.stub.GetKernelLogs(
                pb.GetKernelLogsRequest(agent_id="d0", kernel_id="k1", tail_lines=tail)
            )
            return reply.logs

        assert await eventually(lambda: logs(), timeout=10) in (b"one\ntwo\n", b"two\none\n")
        assert len((await logs(1)).splitlines()) == 1

    async def test_restart_keeps_slots_and_ports_in_a_new_container(
        self, daemon: Daemon, docker: aiodocker.Docker
    ) -> None:
        [before] = await create(
            daemon.stub,
            "d0",
            sleeper(
                "k1",
                resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
                ports=[pb.ServicePort(name="http")],
            ),
        )
        after = (
            await daemon.stub.RestartKernel(pb.RestartKernelRequest(agent_id="d0", kernel_id="k1"))
        ).kernel
        assert after.state == pb.KERNEL_STATE_RUNNING
        assert dict(after.ports) == dict(before.ports)
        assert list(after.allocated.cores) == list(before.allocated.cores)
        assert after.backend_ref != before.backend_ref
        with pytest.raises(aiodocker.DockerError) as gone:
            await docker.containers.container(before.backend_ref.split()[1]).show()
        assert gone.value.status == 404
        _, out, _, _ = await execute(daemon.stub, "d0", "k1", ["sh", "-c", "echo $PORT_HTTP"])
        assert out == f"{before.ports['http']}\n".encode()

    async def test_destroy_removes_the_container_and_returns_everything(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        await create(
            daemon.stub,
            "d0",
            sleeper(
                "k1",
                resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
                ports=[pb.ServicePort(name="http")],
            ),
        )
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="d0", kernel_id="k1"))
        assert await containers_of(docker, identity_of(tmp_path)) == []
        occupied = (await agent_info(daemon.stub, "d0")).occupied
        assert (list(occupied.cores), occupied.memory_bytes, occupied.ports) == ([], 0, 0)

    async def test_kernel_that_exits_is_terminated_with_its_code_and_keeps_its_output(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        await create(
            daemon.stub,
            "d0",
            pb.KernelSpec(
                kernel_id="k1",
                command=["sh", "-c", "echo bye; exit 7"],
                resources=pb.ResourceRequest(cpu_count=1),
                ports=[pb.ServicePort(name="http")],
            ),
        )

        async def terminated() -> pb.Kernel | None:
            kernel = await get(daemon.stub, "d0", "k1")
            return kernel if kernel.state == pb.KERNEL_STATE_TERMINATED else None

        kernel = await eventually(terminated, timeout=20)
        assert (kernel.exit_code, kernel.status_message) == (7, "exited")
        occupied = (await agent_info(daemon.stub, "d0")).occupied
        assert (list(occupied.cores), occupied.ports) == ([], 0)

        async def removed() -> bool:
            return await containers_of(docker, identity_of(tmp_path)) == []

        assert await eventually(removed, timeout=10)
        logs = await daemon.stub.GetKernelLogs(
            pb.GetKernelLogsRequest(agent_id="d0", kernel_id="k1")
        )
        assert logs.logs == b"bye\n"


class TestBadInput:
    async def test_missing_image_is_failed_precondition_naming_it_and_leaves_nothing(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(
                daemon.stub,
                "d0",
                sleeper("ok", resources=pb.ResourceRequest(cpu_count=1)),
                sleeper("bad", image="agenthost-no-such-image:1"),
            )
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "image 'agenthost-no-such-image:1' is not present on the docker engine" in (
            err.value.details()
        )
        assert "docker.allow_pull" in err.value.details()
        assert await containers_of(docker, identity_of(tmp_path)) == []
        info = await agent_info(daemon.stub, "d0")
        assert (list(info.occupied.cores), info.kernel_count) == ([], 0)

    async def test_command_that_cannot_run_is_invalid_argument_and_leaves_nothing(
        self, daemon: Daemon, docker: aiodocker.Docker, tmp_path: Path
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(
                daemon.stub,
                "d0",
                pb.KernelSpec(
                    kernel_id="bad", command=["/no/such/program"], ports=[pb.ServicePort(name="x")]
                ),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "kernel 'bad' cannot start" in err.value.details()
        assert await containers_of(docker, identity_of(tmp_path)) == []
        assert (await agent_info(daemon.stub, "d0")).occupied.ports == 0


async def test_failed_pull_is_reported_cleanly(tmp_path: Path, docker: aiodocker.Docker) -> None:
    agents = docker_agent("p0", [0], 42200, extra=", allow_pull = true")
    async with running_daemon(daemon_config(tmp_path, agents, allocation_mode="manual")) as d:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(d.stub, "p0", sleeper("k1", image="agenthost-no-such-image:1"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details().startswith(
            "image 'agenthost-no-such-image:1' could not be pulled by the docker engine at "
        )
        assert await containers_of(docker, identity_of(tmp_path)) == []
