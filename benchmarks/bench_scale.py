"""Big-node benchmarks: a daemon with 1,000 agents against one with 1, side by side.

1. Start to serving: from `agenthost daemon --config` being started to its first
   answered `ListAgents` call, 1,000 local agents against 1. Target: at most 5x.
2. Resident memory of the serving daemon, 1,000 agents against 1. Target: at most 2x.
3. Routing: GetKernel on the last agent of the 1,000-agent daemon against the only
   agent of the 1-agent daemon (each holding one kernel), latency and throughput.
   Target: at most 1.05x.

Every daemon is the real command in its own process, agents sharing the host
(`allocation_mode = "shared"`, 10 ports each); the client is this process. Starts
alternate (1, 1000, 1000, 1, ...) so drift cancels; figures are medians over
repetitions, each ratio the median of the per-repetition ratios. The spawn figures
of the same issue (create + destroy against bare Popen, 100 concurrent creates)
are `benchmarks/bench_spawn.py`'s.

    .venv/bin/python benchmarks/bench_scale.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc
import psutil

from benchmarks.bench_daemon import Row, print_table
from benchmarks.measure import compare
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import AGENTHOST, DaemonProcess, daemon_config

BIG = 1000
PORTS_PER_AGENT = 10
BASE_PORT = 20000


@dataclass(frozen=True)
class Settings:
    start_reps: int
    reps: int
    calls: int
    seconds: float
    concurrency: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(start_reps=2, reps=2, calls=300, seconds=0.5, concurrency=8)
        return cls(start_reps=5, reps=5, calls=2000, seconds=2.0, concurrency=16)


def agents(count: int) -> str:
    """`count` local agents a0..a{count-1}, 10 ports each, sharing the host."""
    return "".join(
        f"""
[[agents]]
id = "a{i}"
port_range = [{BASE_PORT + PORTS_PER_AGENT * i}, {BASE_PORT + PORTS_PER_AGENT * i + 9}]
resources = {{ memory = "256MiB" }}
"""
        for i in range(count)
    )


def write_config(tmp: Path, count: int) -> Path:
    directory = tmp / f"d{count}"
    directory.mkdir()
    return daemon_config(directory, agents(count), reconcile_interval=5.0)


@contextlib.contextmanager
def daemon(config: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(config, "--destroy-kernels-on-exit")
    try:
        yield proc
    finally:
        with contextlib.suppress(Exception):
            proc.terminate(60)
        proc.close()


async def first_answer(address: str) -> int:
    """Call ListAgents until it answers; the number of agents it lists."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        while True:
            try:
                reply = await stub.ListAgents(pb.ListAgentsRequest(), timeout=5)
                return len(reply.agents)
            except grpc.aio.AioRpcError as exc:
                waiting = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if exc.code() not in waiting:
                    raise
                await asyncio.sleep(0.01)


def start_once(config: Path, expected: int) -> tuple[float, int]:
    """Seconds from starting the daemon to its first answered call, and its RSS then."""
    started = time.perf_counter()
    with daemon(config) as proc:
        listed = asyncio.run(first_answer(proc.address))
        elapsed = time.perf_counter() - started
        assert listed == expected, f"daemon listed {listed} agents, expected {expected}"
        rss = int(psutil.Process(proc.proc.pid).memory_info().rss)
    return elapsed, rss


def run_start(small: Path, big: Path, s: Settings) -> list[Row]:
    times: dict[int, list[float]] = {1: [], BIG: []}
    rss: dict[int, list[float]] = {1: [], BIG: []}
    for rep in range(s.start_reps):
        order = [(1, small), (BIG, big)]
        if rep % 2:
            order.reverse()
        for count, config in order:
            t, r = start_once(config, count)
            times[count].append(t)
            rss[count].append(r)
    start_ratio = statistics.median(b / a for a, b in zip(times[1], times[BIG], strict=True))
    rss_ratio = statistics.median(b / a for a, b in zip(rss[1], rss[BIG], strict=True))
    return [
        Row(
            "start to serving (s)",
            f"{statistics.median(times[BIG]):.2f}",
            f"{statistics.median(times[1]):.2f}",
            start_ratio,
            "<= 5.00x",
            start_ratio <= 5.0,
        ),
        Row(
            "resident memory (MiB)",
            f"{statistics.median(rss[BIG]) / 2**20:.1f}",
            f"{statistics.median(rss[1]) / 2**20:.1f}",
            rss_ratio,
            "<= 2.00x",
            rss_ratio <= 2.0,
        ),
    ]


async def create_sleeper(stub: agent_pb2_grpc.AgentServiceStub, agent_id: str) -> str:
    await stub.CreateKernels(
        pb.CreateKernelsRequest(
            agent_id=agent_id, kernels=[pb.KernelSpec(kernel_id="k1", command=["sleep", "600"])]
        ),
        timeout=60,
    )
    return "k1"


async def run_routing(small: Path, big: Path, s: Settings) -> list[Row]:
    with daemon(small) as d1, daemon(big) as d1000:
        async with (
            grpc.aio.insecure_channel(d1.address) as c1,
            grpc.aio.insecure_channel(d1000.address) as c1000,
        ):
            stub1 = agent_pb2_grpc.AgentServiceStub(c1)
            stub1000 = agent_pb2_grpc.AgentServiceStub(c1000)
            last = f"a{BIG - 1}"
            k1 = await create_sleeper(stub1, "a0")
            k1000 = await create_sleeper(stub1000, last)
            get1 = pb.GetKernelRequest(agent_id="a0", kernel_id=k1)
            get1000 = pb.GetKernelRequest(agent_id=last, kernel_id=k1000)
            result = await compare(
                ("1 agent", lambda: stub1.GetKernel(get1)),
                (f"{BIG} agents", lambda: stub1000.GetKernel(get1000)),
                reps=s.reps,
                calls=s.calls,
                seconds=s.seconds,
                concurrency=s.concurrency,
            )
    lat, tput = result.latency_ratio, result.throughput_ratio
    return [
        Row(
            "GetKernel latency (us)",
            f"{result.latency_us[f'{BIG} agents']:.1f}",
            f"{result.latency_us['1 agent']:.1f}",
            lat,
            "<= 1.05x",
            lat <= 1.05,
        ),
        Row(
            "GetKernel throughput (calls/s; ratio 1/1000)",
            f"{result.rps[f'{BIG} agents']:.0f}",
            f"{result.rps['1 agent']:.0f}",
            tput,
            "<= 1.05x",
            tput <= 1.05,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    args = parser.parse_args()
    s = Settings.of(args.quick)
    started = time.monotonic()
    print(
        f"agenthost scale benchmark ({'quick' if args.quick else 'full'}): "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
        f"daemon = {AGENTHOST}"
    )
    print(
        f"  start: {s.start_reps} alternating starts of each; routing: {s.reps} interleaved"
        f" reps x {s.calls} sequential calls and {s.seconds:g} s with {s.concurrency} in flight"
    )
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        small, big = write_config(tmp, 1), write_config(tmp, BIG)
        start_rows = run_start(small, big, s)
        routing_rows = asyncio.run(run_routing(small, big, s))
    print_table(
        f"1-2. Start to serving and resident memory: {BIG} agents vs 1 agent (local backend)",
        f"{BIG} agents",
        "1 agent",
        start_rows,
    )
    print_table(
        f"3. Routing: GetKernel on a{BIG - 1} of {BIG} agents vs a0 of 1 agent",
        f"{BIG} agents",
        "1 agent",
        routing_rows,
    )
    print(
        "\n  figures: medians over repetitions; ratio: median of the per-repetition ratios."
        f"\n  total time {time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
