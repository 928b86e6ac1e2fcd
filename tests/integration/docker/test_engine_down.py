"""The engine goes away and comes back while the daemon runs.

dockerd is stopped for real (only the one `scripts/docker-up.sh` started, never an
engine someone else runs) and started again with the same script. Meanwhile the
docker agent answers UNAVAILABLE naming the engine, the local agent of the same
daemon keeps serving, and once the engine is back the docker agent recovers:
its kernel (kept alive by dockerd's live-restore) is watched again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiodocker
import grpc
import pytest

from daemon.backends.docker.engine import resolve_url
from protos import agent_pb2 as pb
from tests.dockerd import DOCKERD_PIDFILE, OUR_DOCKERD_PIDFILE, engine_problem, run_docker_up
from tests.integration.docker.conftest import docker_agent, local_agent
from tests.servers import (
    agent_info,
    create,
    daemon_config,
    eventually,
    execute,
    get,
    running_daemon,
    sleeper,
)

pytestmark = pytest.mark.docker

MIXED = local_agent("l0", [0], 42300) + docker_agent("d0", [1], 42000)


def our_dockerd() -> int | None:
    """The pid of the dockerd docker-up.sh started, if that is the engine running now."""
    try:
        ours = int(OUR_DOCKERD_PIDFILE.read_text())
        current = int(DOCKERD_PIDFILE.read_text())
    except (OSError, ValueError):
        return None
    return ours if ours == current and _running(ours) else None


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def stop_dockerd(pid: int) -> None:
    """SIGTERM dockerd and wait until it is gone (bounded)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _running(pid) or engine_problem() is None:
        if time.monotonic() > deadline:
            raise AssertionError("dockerd did not stop within 60s")
        time.sleep(0.2)


@pytest.fixture
def dockerd() -> int:
    pid = our_dockerd()
    if pid is None:
        pytest.skip("dockerd was not started by scripts/docker-up.sh; not stopping someone else's")
    return pid


async def test_engine_down_is_unavailable_for_docker_agents_only_and_recovers(
    tmp_path: Path, dockerd: int, docker: aiodocker.Docker
) -> None:
    async with running_daemon(daemon_config(tmp_path, MIXED, allocation_mode="manual")) as d:
        await create(d.stub, "d0", sleeper("kd"))
        await create(d.stub, "l0", sleeper("kl"))
        try:
            await asyncio.to_thread(stop_dockerd, dockerd)

            engine = resolve_url(None)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await create(d.stub, "d0", sleeper("kd2"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert f"docker engine at {engine} does not answer" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await execute(d.stub, "d0", "kd", ["true"])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            async def unhealthy() -> bool:
                info = await agent_info(d.stub, "d0")
                return not info.healthy and engine in info.status_message

            assert await eventually(unhealthy, timeout=20)
            # The docker kernel is still known; the local agent serves as ever.
            assert (await get(d.stub, "d0", "kd")).state == pb.KERNEL_STATE_RUNNING
            await create(d.stub, "l0", sleeper("kl2"))
            _, out, _, exit_ = await execute(d.stub, "l0", "kl", ["echo", "local"])
            assert (out, exit_.exit_code) == (b"local\n", 0)
            assert (await agent_info(d.stub, "l0")).healthy

            # A daemon started while the engine is down starts, and serves its local agent.
            second = tmp_path / "second"
            second.mkdir()
            async with running_daemon(daemon_config(second, MIXED, allocation_mode="manual")) as d2:
                info = await agent_info(d2.stub, "d0")
                assert not info.healthy and engine in info.status_message
                await create(d2.stub, "l0", sleeper("kl3"))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await create(d2.stub, "d0", sleeper("kd3"))
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await asyncio.to_thread(run_docker_up)

        async def healthy() -> bool:
            return (await agent_info(d.stub, "d0")).healthy

        assert await eventually(healthy, timeout=30)
        _, out, _, exit_ = await execute(d.stub, "d0", "kd", ["echo", "back"])
        assert (out, exit_.exit_code) == (b"back\n", 0)
        await create(d.stub, "d0", sleeper("kd2"))

        # kd is watched again: when its container ends, the daemon sees it.
        container = (await get(d.stub, "d0", "kd")).backend_ref.split()[1]
        await docker.containers.container(container).kill(signal="SIGKILL")

        async def ended() -> pb.Kernel | None:
            kernel = await get(d.stub, "d0", "kd")
            return kernel if kernel.state == pb.KERNEL_STATE_TERMINATED else None

        kernel = await eventually(ended, timeout=20)
        assert kernel.exit_code == 137
