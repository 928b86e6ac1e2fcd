"""The daemon's Prometheus metrics, scraped over real HTTP from the real daemon.

Kernels are created and destroyed over gRPC on two local agents; each agent's
series must then say what `ListAgents` says, kernel starts and failures must be
counted with their reasons, and every call must be timed by method and code.
"""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from daemon.config import load_config
from daemon.server import DaemonServer
from protos import agent_pb2 as pb
from tests.scrape import Samples, scrape
from tests.servers import (
    Daemon,
    create,
    daemon_config,
    eventually,
    running_daemon,
    sleeper,
)

MIB = 1 << 20
METRICS = 'metrics_listen = "127.0.0.1:0"'


def agents(prefix: str = "a", base: int = 44000) -> str:
    return "".join(
        f"""
[[agents]]
id = "{prefix}{i}"
port_range = [{base + 100 * i}, {base + 100 * i + 99}]
resources = {{ memory = "1GiB" }}
"""
        for i in range(2)
    )


async def list_agents(d: Daemon) -> dict[str, pb.AgentInfo]:
    reply = await d.stub.ListAgents(pb.ListAgentsRequest())
    return {a.agent_id: a for a in reply.agents}


def assert_matches_list_agents(samples: Samples, info: pb.AgentInfo) -> None:
    """The agent's capacity, occupied and free series are what ListAgents reports."""
    a = info.agent_id
    cap, occ = info.capacity, info.occupied
    expected = {
        "cores": (len(cap.cores), len(occ.cores)),
        "memory": (cap.memory_bytes, occ.memory_bytes),
        "ports": (cap.ports, occ.ports),
    }
    for resource, (total, used) in expected.items():
        unit = "_bytes" if resource == "memory" else ""
        got = [
            samples.value(f"agenthost_agent_{resource}_{n}{unit}", agent_id=a)
            for n in ("capacity", "occupied", "free")
        ]
        assert got == [total, used, total - used], (a, resource)
    kinds = set(cap.devices) | set(occ.devices)
    for kind in kinds:
        total, used = len(cap.devices[kind].ids), len(occ.devices[kind].ids)
        got = [
            samples.value(f"agenthost_agent_devices_{n}", agent_id=a, kind=kind)
            for n in ("capacity", "occupied", "free")
        ]
        assert got == [total, used, total - used]
    assert samples.matching("agenthost_agent_devices_capacity", agent_id=a).keys() == {
        frozenset({("agent_id", a), ("kind", k)}) for k in kinds
    }
    running = samples.value("agenthost_agent_kernels", agent_id=a, state="running")
    pending = samples.value("agenthost_agent_kernels", agent_id=a, state="pending")
    assert running + pending == info.kernel_count
    assert samples.value("agenthost_agent_healthy", agent_id=a) == (1.0 if info.healthy else 0.0)


def rpc_count(samples: Samples, method: str, code: str, agent_id: str) -> float:
    return (
        samples.get(
            "agenthost_daemon_rpc_duration_seconds_count",
            method=method,
            code=code,
            agent_id=agent_id,
        )
        or 0.0
    )


class TestAgentSeries:
    async def test_after_creates_and_destroys_on_two_agents_every_series_matches_list_agents(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, agents(), daemon=METRICS)) as d:
            assert d.server.metrics is not None
            address = d.server.metrics.address
            [k1] = await create(
                d.stub,
                "a0",
                sleeper(
                    "k1",
                    resources=pb.ResourceRequest(memory_bytes=256 * MIB),
                    ports=[pb.ServicePort(name="http")],
                ),
            )
            await create(
                d.stub,
                "a0",
                sleeper("k2", resources=pb.ResourceRequest(memory_bytes=128 * MIB, cpu_count=1)),
            )
            await create(
                d.stub,
                "a1",
                sleeper("k3", ports=[pb.ServicePort(name="x"), pb.ServicePort(name="y")]),
                sleeper("k4", resources=pb.ResourceRequest(memory_bytes=64 * MIB)),
            )
            await d.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k1"))
            await d.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a1", kernel_id="k4"))

            listed = await list_agents(d)
            samples = await scrape(address)
            assert listed["a0"].occupied.memory_bytes == 128 * MIB  # what is left is what counts
            assert len(listed["a0"].occupied.cores) == 1 and listed["a1"].occupied.ports == 2
            for info in listed.values():
                assert_matches_list_agents(samples, info)
            assert samples.value("agenthost_agent_kernels", agent_id="a0", state="running") == 1
            assert samples.value("agenthost_agent_kernels", agent_id="a1", state="running") == 1
            starts = "agenthost_agent_kernel_starts_total"
            assert samples.value(starts, agent_id="a0") == 2
            assert samples.value(starts, agent_id="a1") == 2
            assert rpc_count(samples, "CreateKernels", "OK", "a0") == 2
            assert rpc_count(samples, "CreateKernels", "OK", "a1") == 1
            assert rpc_count(samples, "DestroyKernel", "OK", "a0") == 1
            assert rpc_count(samples, "ListAgents", "OK", "") >= 1
            assert k1.kernel_id == "k1"

    async def test_reconcile_passes_and_checkpoint_writes_are_timed_per_agent(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, agents(), daemon=METRICS)) as d:
            assert d.server.metrics is not None
            await create(d.stub, "a1", sleeper("k1"))

            async def timed() -> Samples | None:
                s = await scrape(d.server.metrics.address)  # type: ignore[union-attr]
                reconciles = [
                    s.get("agenthost_agent_reconcile_duration_seconds_count", agent_id=a) or 0
                    for a in ("a0", "a1")
                ]
                return s if min(reconciles) >= 1 else None

            samples = await eventually(timed)
            writes = "agenthost_agent_checkpoint_write_duration_seconds_count"
            assert samples.value(writes, agent_id="a1") >= 1  # the create was written
            inf = "agenthost_agent_reconcile_duration_seconds_bucket"
            assert samples.value(inf, agent_id="a0", le="+Inf") == samples.value(
                "agenthost_agent_reconcile_duration_seconds_count", agent_id="a0"
            )


class TestKernelFailures:
    async def test_a_failed_create_counts_its_kernels_under_the_status_code_it_got(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, agents(), daemon=METRICS)) as d:
            assert d.server.metrics is not None
            too_big = sleeper("big", resources=pb.ResourceRequest(memory_bytes=4096 * MIB))
            with pytest.raises(grpc.aio.AioRpcError) as never_fits:
                await create(d.stub, "a0", too_big)
            assert never_fits.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            cannot_run = pb.KernelSpec(kernel_id="bad", command=["/nonexistent/agenthost-test"])
            with pytest.raises(grpc.aio.AioRpcError) as bad_command:
                await create(d.stub, "a1", cannot_run, sleeper("fine"))
            assert bad_command.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await create(d.stub, "nosuch", sleeper("k9"))
            assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

            samples = await scrape(d.server.metrics.address)
            failures = "agenthost_agent_kernel_failures_total"
            assert samples.value(failures, agent_id="a0", reason="FAILED_PRECONDITION") == 1
            # All or nothing: both kernels of the batch failed with it.
            assert samples.value(failures, agent_id="a1", reason="INVALID_ARGUMENT") == 2
            # An agent id the daemon does not have never becomes a label value.
            assert samples.value(failures, agent_id="", reason="NOT_FOUND") == 1
            assert samples.matching(failures, agent_id="nosuch") == {}
            starts = "agenthost_agent_kernel_starts_total"
            assert samples.value(starts, agent_id="a0") == samples.value(starts, agent_id="a1") == 0
            assert rpc_count(samples, "CreateKernels", "FAILED_PRECONDITION", "a0") == 1
            assert rpc_count(samples, "CreateKernels", "NOT_FOUND", "") == 1
            info = await list_agents(d)
            assert info["a0"].kernel_count == info["a1"].kernel_count == 0


class TestEndpointLifecycle:
    async def test_without_metrics_listen_there_is_no_endpoint(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, agents())) as d:
            assert d.server.metrics is None

    async def test_two_daemons_in_one_process_each_export_only_their_own_agents(
        self, tmp_path: Path
    ) -> None:
        (tmp_path / "one").mkdir()
        (tmp_path / "two").mkdir()
        one = daemon_config(tmp_path / "one", agents("a"), daemon=METRICS)
        two = daemon_config(tmp_path / "two", agents("b", base=44400), daemon=METRICS)
        async with running_daemon(one) as d1, running_daemon(two) as d2:
            assert d1.server.metrics is not None and d2.server.metrics is not None
            await create(d1.stub, "a0", sleeper("k1"))
            s1 = await scrape(d1.server.metrics.address)
            s2 = await scrape(d2.server.metrics.address)
        ids = {dict(labels)["agent_id"] for labels in s1.matching("agenthost_agent_cores_capacity")}
        assert ids == {"a0", "a1"}
        assert s2.matching("agenthost_agent_cores_capacity", agent_id="a0") == {}
        assert s1.value("agenthost_agent_kernel_starts_total", agent_id="a0") == 1
        assert s2.value("agenthost_agent_kernel_starts_total", agent_id="b0") == 0

    async def test_a_busy_metrics_port_is_a_startup_error_that_leaves_nothing_started(
        self, tmp_path: Path
    ) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            busy = f'metrics_listen = "127.0.0.1:{port}"'
            config = load_config(daemon_config(tmp_path, agents(), daemon=busy))
            with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
                await DaemonServer.start(config)
        # Nothing kept: the state directory is free for the next daemon.
        async with running_daemon(daemon_config(tmp_path, agents(), daemon=METRICS)) as d:
            assert d.server.metrics is not None
