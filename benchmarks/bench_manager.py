"""Manager benchmarks: figures measured side by side in one run.

1. Routing overhead: GetKernel made directly to a daemon (`agent_id` given)
   against the same GetKernel made through the manager (which looks the kernel
   up, routes by agent_id over its shared channel and returns the daemon's
   answer). Latency per sequential call and throughput with concurrent callers;
   the ratio routed / direct. Target: within 2.2x.
2. Scheduling decision time with 1,000 and 10,000 registered agents: one
   `Scheduler.reserve` (filter by scaling group, status and free cores, memory,
   devices, ports; pick by policy; record the hold) plus its `release`, on agents
   with mixed capacities and about half of them partly occupied. Also the
   refusal path (every fitting agent busy: RESOURCE_EXHAUSTED with its reasons).
   Target: under 1 ms at 10,000.
3. Resident memory of a real manager process with 10,000 registered agents
   (100 daemons x 100 agents registered over gRPC), against the same process
   before any registration. Target: under 200 MB.

The manager and the daemon run as real processes (`agenthost manager`,
`agenthost daemon`); the client is this process. Repetitions interleave direct
and routed so drift cancels; figures are medians over repetitions, and each
ratio is the median of the per-repetition ratios.

    .venv/bin/python benchmarks/bench_manager.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc
import psutil

from benchmarks.measure import compare
from common.ids import AgentId, KernelId
from manager.errors import AllAgentsBusy
from manager.scheduler import Demand, Scheduler
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    ManagerProcess,
    admin_token,
    agents_toml,
    linked_daemon_config,
    manager_config,
    user_channel,
)
from tests.servers import DaemonProcess

GIB = 1 << 30
TIMEOUT = 10.0


@dataclass(frozen=True)
class Settings:
    """How long each part runs."""

    reps: int
    calls: int
    throughput_seconds: float
    concurrency: int
    decisions: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(reps=4, calls=150, throughput_seconds=0.5, concurrency=16, decisions=500)
        return cls(reps=12, calls=400, throughput_seconds=1.5, concurrency=16, decisions=3000)


# -------------------------------------------------------------- 1. routing


async def bench_routing(settings: Settings, work: Path) -> dict[str, float]:
    config = manager_config(work, missed_heartbeats=10)
    manager = ManagerProcess(config)
    daemon = None
    try:
        daemon_cfg = linked_daemon_config(
            work,
            "d",
            manager.address,
            agents_toml(("b0", "default", 48000, ""), ("b1", "default", 48010, "")),
            heartbeat=1.0,
        )
        daemon = DaemonProcess(daemon_cfg, "--destroy-kernels-on-exit")
        async with (
            user_channel(manager.address, admin_token()) as m_channel,
            grpc.aio.insecure_channel(daemon.address) as d_channel,
        ):
            m_stub = manager_pb2_grpc.ManagerServiceStub(m_channel)
            d_stub = agent_pb2_grpc.AgentServiceStub(d_channel)
            for _ in range(200):
                agents = await m_stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=TIMEOUT)
                if len(agents.agents) == 2:
                    break
                await asyncio.sleep(0.05)
            created = await m_stub.CreateKernel(
                mpb.CreateKernelRequest(
                    spec=pb.KernelSpec(kernel_id="k-bench", command=["sleep", "3600"]),
                    agent_id="b1",
                ),
                timeout=TIMEOUT,
            )
            agent_id = created.kernel.kernel.agent_id
            direct_req = pb.GetKernelRequest(agent_id=agent_id, kernel_id="k-bench")
            routed_req = pb.GetKernelRequest(kernel_id="k-bench")

            async def direct() -> object:
                return await d_stub.GetKernel(direct_req, timeout=TIMEOUT)

            async def routed() -> object:
                return await m_stub.GetKernel(routed_req, timeout=TIMEOUT)

            result = await compare(
                ("direct", direct),
                ("routed", routed),
                settings.reps,
                settings.calls,
                settings.throughput_seconds,
                settings.concurrency,
            )
            await m_stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k-bench"))
        return {
            "direct_us": result.latency_us["direct"],
            "routed_us": result.latency_us["routed"],
            "latency_ratio": result.latency_ratio,
            "direct_rps": result.rps["direct"],
            "routed_rps": result.rps["routed"],
            "throughput_ratio": result.throughput_ratio,
        }
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.close()
        manager.terminate()
        manager.close()


# ----------------------------------------------------------- 2. scheduling


def populated_scheduler(n: int, seed: int = 7) -> Scheduler:
    """n agents in 4 scaling groups with mixed shapes; about half partly occupied."""
    rng = random.Random(seed)
    s = Scheduler("spread")
    groups = ["default", "default", "batch", "gpu"]
    for i in range(n):
        group = groups[i % len(groups)]
        capacity = Demand(
            cores=rng.choice([4, 8, 16]),
            memory=rng.choice([8, 16, 32]) * GIB,
            ports=100,
            devices={"cuda": rng.choice([1, 2])} if group == "gpu" else {},
        )
        agent_id = AgentId(f"agent-{i}")
        s.upsert_agent(agent_id, group, capacity, schedulable=rng.random() > 0.02)
        if rng.random() < 0.5:
            s.hold(
                KernelId(f"pre-{i}"),
                agent_id,
                Demand(cores=rng.randint(1, 4), memory=rng.randint(1, 8) * GIB, ports=2),
            )
    return s


def bench_scheduling(n: int, decisions: int) -> dict[str, float]:
    s = populated_scheduler(n)
    demands = [
        (Demand(cores=2, memory=4 * GIB, ports=1), "default"),
        (Demand(cores=1, memory=GIB), "batch"),
        (Demand(cores=4, memory=8 * GIB, devices={"cuda": 1}), "gpu"),
        (Demand(), "default"),
    ]
    times = []
    for i in range(decisions):
        demand, group = demands[i % len(demands)]
        kernel_id = KernelId(f"k{i}")
        start = time.perf_counter()
        s.reserve(kernel_id, demand, group)
        s.release(kernel_id)
        times.append(time.perf_counter() - start)
    # The refusal path: a request that fits capacity somewhere but every fitting agent is full.
    full = Scheduler("spread")
    for i in range(n):
        full.upsert_agent(AgentId(f"a{i}"), "default", Demand(cores=4, memory=8 * GIB), True)
        full.hold(KernelId(f"h{i}"), AgentId(f"a{i}"), Demand(cores=4))
    refusals = []
    for i in range(max(decisions // 10, 50)):
        start = time.perf_counter()
        with contextlib.suppress(AllAgentsBusy):
            full.reserve(KernelId(f"r{i}"), Demand(cores=1), "default")
        refusals.append(time.perf_counter() - start)
    times.sort()
    refusals.sort()
    return {
        "median_us": statistics.median(times) * 1e6,
        "p99_us": times[int(len(times) * 0.99) - 1] * 1e6,
        "refusal_median_us": statistics.median(refusals) * 1e6,
    }


# ---------------------------------------------------------------- 3. memory


async def bench_memory(work: Path, daemons: int = 100, per_daemon: int = 100) -> dict[str, float]:
    config = manager_config(work, missed_heartbeats=10)
    manager = ManagerProcess(config)
    try:
        process = psutil.Process(manager.proc.pid)
        async with user_channel(manager.address, admin_token()) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            await stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=TIMEOUT)
            before = process.memory_info().rss
            for d in range(daemons):
                agents = [
                    pb.AgentInfo(
                        agent_id=f"n{d}-a{a}",
                        backend="local",
                        scaling_group=("default", "batch")[a % 2],
                        port_range=pb.PortRange(start=30000 + 100 * a, end=30099 + 100 * a),
                        capacity=pb.Resources(
                            cores=[2 * a % 64, (2 * a + 1) % 64],
                            memory_bytes=8 * GIB,
                            ports=100,
                        ),
                        occupied=pb.Resources(),
                        healthy=True,
                    )
                    for a in range(per_daemon)
                ]
                await stub.RegisterAgents(
                    mpb.RegisterAgentsRequest(
                        daemon_address=f"10.0.{d // 250}.{d % 250}:6001",
                        node=f"node-{d}",
                        daemon_id=f"node-{d}/bench",
                        agents=agents,
                        heartbeat_interval=3600,
                    ),
                    timeout=60,
                )
            listed = await stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=60)
            assert len(listed.agents) == daemons * per_daemon
            await asyncio.sleep(0.5)
            after = process.memory_info().rss
        return {
            "agents": len(listed.agents),
            "before_mb": before / 2**20,
            "after_mb": after / 2**20,
        }
    finally:
        manager.terminate()
        manager.close()


# ------------------------------------------------------------------ main


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    settings = Settings.of(parser.parse_args().quick)
    with tempfile.TemporaryDirectory(prefix="bench-manager-") as tmp:
        work = Path(tmp)
        # The managers' bootstrap admin token lives here, not in the user's ~/.agenthost.
        os.environ["AGENTHOST_HOME"] = str(work / "home")
        (work / "routing").mkdir()
        (work / "memory").mkdir()
        print("1. routing: GetKernel direct to the daemon vs through the manager")
        r = await bench_routing(settings, work / "routing")
        print(f"   latency     direct {r['direct_us']:8.0f} us   routed {r['routed_us']:8.0f} us")
        print(f"   throughput  direct {r['direct_rps']:8.0f} /s   routed {r['routed_rps']:8.0f} /s")
        verdict = "ok" if r["latency_ratio"] <= 2.2 else "MISSED"
        print(
            f"   ratio routed/direct: latency {r['latency_ratio']:.2f}x, "
            f"throughput {r['throughput_ratio']:.2f}x   (target <= 2.2x: {verdict})"
        )
        print("2. scheduling decision (reserve + release)")
        for n in (1_000, 10_000):
            s = bench_scheduling(n, settings.decisions)
            verdict = "ok" if s["median_us"] < 1000 else "MISSED"
            print(
                f"   {n:6d} agents: median {s['median_us']:6.0f} us, p99 {s['p99_us']:6.0f} us, "
                f"all-busy refusal {s['refusal_median_us']:6.0f} us   (target < 1000 us: {verdict})"
            )
        print("3. manager memory (RSS of the real manager process)")
        m = await bench_memory(work / "memory")
        verdict = "ok" if m["after_mb"] < 200 else "MISSED"
        print(
            f"   {m['agents']:.0f} agents registered: {m['after_mb']:.0f} MB "
            f"(before registration {m['before_mb']:.0f} MB)   (target < 200 MB: {verdict})"
        )


if __name__ == "__main__":
    asyncio.run(main())
