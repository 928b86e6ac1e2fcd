"""The API server goes away and comes back while the daemon runs.

Meanwhile the kubernetes agent answers UNAVAILABLE naming the API server, the
local agent of the same daemon keeps serving, a daemon started meanwhile starts
and serves its local agent, and once the API server is back the kubernetes agent
recovers: its kernel (its pod kept running) is watched again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from tests.integration.kubernetes.conftest import NAMESPACE, kube_agent, local_agent, pod_name
from tests.kubeapi import ThreadedStandin
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

MIXED = local_agent("l0", 43000) + kube_agent("k0", 43100)


async def test_api_server_down_is_unavailable_for_kubernetes_agents_only_and_recovers(
    tmp_path: Path, standin: ThreadedStandin
) -> None:
    down = f"kubernetes API server at {standin.url} does not answer"
    async with running_daemon(daemon_config(tmp_path, MIXED)) as d:
        [kernel] = await create(d.stub, "k0", sleeper("kk"))
        await create(d.stub, "l0", sleeper("kl"))
        await asyncio.to_thread(standin.go_down)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await create(d.stub, "k0", sleeper("kk2"))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert down in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await execute(d.stub, "k0", "kk", ["true"])
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

            async def unhealthy() -> bool:
                info = await agent_info(d.stub, "k0")
                return not info.healthy and down in info.status_message

            assert await eventually(unhealthy, timeout=20)
            # The kubernetes kernel is still known; the local agent serves as ever.
            assert (await get(d.stub, "k0", "kk")).state == pb.KERNEL_STATE_RUNNING
            await create(d.stub, "l0", sleeper("kl2"))
            _, out, _, exit_ = await execute(d.stub, "l0", "kl", ["echo", "local"])
            assert (out, exit_.exit_code) == (b"local\n", 0)
            assert (await agent_info(d.stub, "l0")).healthy

            # A daemon started while the API server is down starts, and serves its local agent.
            second = tmp_path / "second"
            second.mkdir()
            (second / "kubeconfig").write_bytes((tmp_path / "kubeconfig").read_bytes())
            async with running_daemon(daemon_config(second, MIXED)) as d2:
                info = await agent_info(d2.stub, "k0")
                assert not info.healthy and down in info.status_message
                await create(d2.stub, "l0", sleeper("kl3"))
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await create(d2.stub, "k0", sleeper("kk3"))
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            await asyncio.to_thread(standin.come_up)

        async def healthy() -> bool:
            return (await agent_info(d.stub, "k0")).healthy

        assert await eventually(healthy, timeout=20)
        _, out, _, exit_ = await execute(d.stub, "k0", "kk", ["echo", "back"])
        assert (out, exit_.exit_code) == (b"back\n", 0)
        await create(d.stub, "k0", sleeper("kk2"))

        # kk is watched again: when its container ends, the daemon sees it.
        await asyncio.to_thread(standin.exit_pod, NAMESPACE, pod_name(kernel.backend_ref), 137)

        async def ended() -> pb.Kernel | None:
            found = await get(d.stub, "k0", "kk")
            return found if found.state == pb.KERNEL_STATE_TERMINATED else None

        ended_kernel = await eventually(ended, timeout=20)
        assert (ended_kernel.exit_code, ended_kernel.status_message) == (137, "killed by SIGKILL")
