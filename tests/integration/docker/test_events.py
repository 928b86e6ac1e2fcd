"""Exits from the engine's event stream: exit codes, OOM kills, slots and ports returned."""

from __future__ import annotations

from pathlib import Path

import aiodocker
import pytest

from protos import agent_pb2 as pb
from tests.integration.docker.conftest import MIB, docker_agent
from tests.servers import (
    agent_info,
    create,
    daemon_config,
    eventually,
    get,
    running_daemon,
    sleeper,
)

pytestmark = pytest.mark.docker

# Touches 1 GiB, far past the kernel's 64 MiB limit.
HOG = ["python3", "-c", "x = b'a' * (1 << 30)"]


async def test_oom_killed_kernel_is_reported_as_such_and_its_resources_return(
    tmp_path: Path,
) -> None:
    agents = docker_agent("d0", [0, 1], 42000, memory="512MiB")
    async with running_daemon(daemon_config(tmp_path, agents, allocation_mode="manual")) as d:
        request = pb.ResourceRequest(cpu_count=2, memory_bytes=64 * MIB)
        await create(
            d.stub,
            "d0",
            pb.KernelSpec(
                kernel_id="hog", command=HOG, resources=request, ports=[pb.ServicePort(name="http")]
            ),
        )

        async def ended() -> pb.Kernel | None:
            kernel = await get(d.stub, "d0", "hog")
            return kernel if kernel.state == pb.KERNEL_STATE_TERMINATED else None

        kernel = await eventually(ended, timeout=30)
        assert (kernel.status_message, kernel.exit_code) == ("OOMKilled", 137)
        occupied = (await agent_info(d.stub, "d0")).occupied
        assert (list(occupied.cores), occupied.memory_bytes, occupied.ports) == ([], 0, 0)
        # Everything it held can be had again at once.
        [again] = await create(
            d.stub, "d0", sleeper("again", resources=request, ports=[pb.ServicePort(name="http")])
        )
        assert list(again.allocated.cores) == [0, 1]


async def test_kernel_killed_behind_the_daemons_back_is_terminated_by_its_signal(
    tmp_path: Path, docker: aiodocker.Docker
) -> None:
    agents = docker_agent("d0", [0], 42000)
    async with running_daemon(daemon_config(tmp_path, agents, allocation_mode="manual")) as d:
        [kernel] = await create(
            d.stub, "d0", sleeper("k1", resources=pb.ResourceRequest(cpu_count=1))
        )
        await docker.containers.container(kernel.backend_ref.split()[1]).kill(signal="SIGKILL")

        async def ended() -> pb.Kernel | None:
            k = await get(d.stub, "d0", "k1")
            return k if k.state == pb.KERNEL_STATE_TERMINATED else None

        ended_kernel = await eventually(ended, timeout=20)
        assert (ended_kernel.exit_code, ended_kernel.status_message) == (137, "killed by SIGKILL")
        assert list((await agent_info(d.stub, "d0")).occupied.cores) == []
