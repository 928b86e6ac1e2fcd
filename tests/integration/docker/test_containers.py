"""Docker kernels through the real daemon and a real engine: what only a container does.

cpuset, memory and NanoCpus limits, published ports, names and labels, missing
images and failed pulls. The verbs every backend shares (create, exec, exits,
restart, logs, destroy, re-adoption) are tested in tests/conformance/.
"""

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


class TestNamesAndLabels:
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
