"""How kubernetes kernels end, as the pod watch reports it.

An OOM kill, a signal, a pod deleted behind the daemon's back: each turns the
kernel TERMINATED with what is known and frees its slots and ports at once. The
watch outlives the API server ending it and an expired history (it lists again).
"""

from __future__ import annotations

import asyncio

import pytest

from daemon.backends.kubernetes import api as kube_api
from protos import agent_pb2 as pb
from tests.integration.kubernetes.conftest import NAMESPACE, kube_agent, pod_name
from tests.kubeapi import ThreadedStandin
from tests.servers import Daemon, DaemonFactory, agent_info, create, eventually, get, sleeper

AGENTS = kube_agent("k0", 44000)


async def terminated(daemon: Daemon, kernel_id: str) -> pb.Kernel:
    async def check() -> pb.Kernel | None:
        kernel = await get(daemon.stub, "k0", kernel_id)
        return kernel if kernel.state == pb.KERNEL_STATE_TERMINATED else None

    return await eventually(check, timeout=20)


async def running(daemon: Daemon, kernel_id: str) -> str:
    """Create a sleeping kernel; its pod's name."""
    [kernel] = await create(
        daemon.stub, "k0", sleeper(kernel_id, ports=[pb.ServicePort(name="http")])
    )
    return pod_name(kernel.backend_ref)


class TestExits:
    async def test_an_oom_kill_is_terminated_as_oomkilled(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        async with start_daemon(AGENTS) as d:
            pod = await running(d, "k")
            standin.exit_pod(NAMESPACE, pod, 137, reason="OOMKilled")
            kernel = await terminated(d, "k")
            assert (kernel.exit_code, kernel.status_message) == (137, "OOMKilled")
            info = await agent_info(d.stub, "k0")
            assert (info.occupied.ports, info.kernel_count) == (0, 0)
            assert await eventually(lambda: standin.get_pod(NAMESPACE, pod) is None)

    async def test_a_pod_deleted_behind_the_daemons_back_ends_its_kernel(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        async with start_daemon(AGENTS) as d:
            pod = await running(d, "k")
            assert standin.delete_pod_now(NAMESPACE, pod)
            kernel = await terminated(d, "k")
            assert (kernel.exit_code, kernel.status_message) == (0, "pod deleted")
            assert (await agent_info(d.stub, "k0")).kernel_count == 0

    async def test_the_watch_lists_again_when_its_history_expired(
        self,
        start_daemon: DaemonFactory,
        standin: ThreadedStandin,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        monkeypatch.setattr(kube_api, "WATCH_SECONDS", 1)  # the server ends each watch soon
        async with start_daemon(AGENTS) as d:
            pod = await running(d, "k")
            lists = len(standin.requests_to("GET", "/pods$"))
            standin.compact()
            # The watch is resumed from a version the server forgot: it lists again.
            assert await eventually(
                lambda: len(standin.requests_to("GET", "/pods$")) > lists + 1, timeout=20
            )
            await asyncio.sleep(0.2)
            standin.exit_pod(NAMESPACE, pod, 3)
            kernel = await terminated(d, "k")
            assert (kernel.exit_code, kernel.status_message) == (3, "exited")
