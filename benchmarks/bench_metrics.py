"""Metrics benchmark: what Prometheus metrics cost a routed call, measured side by side.

Two clusters run as real processes (`agenthost manager` + `agenthost daemon`,
plaintext on loopback, four local agents with a sleeping kernel each): one without
metrics, one with `metrics_listen` on the manager and on the daemon. While both are
measured, a scraper thread in this process GETs both of the second cluster's
`/metrics` endpoints every `--scrape-interval` seconds (default 1 s, fifteen times
Prometheus' usual rate), so the figure includes what scrapes cost the servers, not
only the per-call hooks. The client is this process; repetitions interleave the two
sides (benchmarks/measure.py); figures are medians, ratios medians of per-repetition
ratios.

1. Routed GetKernel through the manager (the manager's RPC hook, its routed-call
   timing, then the daemon's RPC hook): metrics on against off. Target: latency at
   most 1.05x.
2. Direct GetKernel on the daemon (its RPC hook alone): on against off.
3. Scrapes: how long one GET /metrics of each endpoint took and its size.

    .venv/bin/python benchmarks/bench_metrics.py [--quick] [--scrape-interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc

from benchmarks.measure import Call, Comparison, compare
from common.home import token_file
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    ManagerProcess,
    agents_toml,
    free_port,
    linked_daemon_config,
    wait_for_agents,
)
from tests.managers import manager_config as write_manager_config
from tests.servers import DaemonProcess

TIMEOUT = 10.0
AGENTS = 4


@dataclass(frozen=True)
class Settings:
    reps: int
    calls: int
    seconds: float
    concurrency: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(reps=4, calls=150, seconds=0.5, concurrency=16)
        return cls(reps=12, calls=400, seconds=1.5, concurrency=16)


@dataclass
class Cluster:
    """One manager and one daemon, and where their metrics are (if on)."""

    manager: ManagerProcess
    daemon: DaemonProcess
    endpoints: dict[str, str]  # "manager"/"daemon" -> host:port of /metrics


@contextmanager
def cluster(work: Path, metrics: bool, port: int) -> Iterator[Cluster]:
    """Start a manager and a daemon (with metrics when asked) and stop them after."""
    work.mkdir(parents=True)
    endpoints: dict[str, str] = {}
    with ExitStack() as stack:
        settings: dict[str, Any] = {"missed_heartbeats": 20}
        if metrics:
            endpoints["manager"] = f"127.0.0.1:{free_port()}"
            settings["metrics_listen"] = endpoints["manager"]
        manager = ManagerProcess(write_manager_config(work, **settings))
        stack.callback(manager.close)
        agents = agents_toml(*((f"b{i}", "default", port + 10 * i, "") for i in range(AGENTS)))
        path = linked_daemon_config(
            work, "d", manager.address, agents, heartbeat=2.0, reconcile_interval=5.0
        )
        if metrics:
            endpoints["daemon"] = f"127.0.0.1:{free_port()}"
            text = path.read_text().replace(
                "[daemon]\n", f'[daemon]\nmetrics_listen = "{endpoints["daemon"]}"\n', 1
            )
            path.write_text(text)
        daemon = DaemonProcess(path, "--destroy-kernels-on-exit")
        stack.callback(daemon.close)
        stack.callback(daemon.terminate)
        yield Cluster(manager, daemon, endpoints)


@dataclass
class Scraper:
    """GETs every endpoint every interval seconds in a thread; keeps durations and sizes."""

    endpoints: dict[str, str]
    interval: float
    seconds: dict[str, list[float]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for name, address in self.endpoints.items():
                start = time.perf_counter()
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
                    body = reply.read()
                self.seconds.setdefault(name, []).append(time.perf_counter() - start)
                self.sizes[name] = len(body)


async def calls(c: Cluster, token: str) -> tuple[Call, Call, list[grpc.aio.Channel]]:
    """The routed and the direct GetKernel of a kernel on the last agent, ready to call."""
    metadata = (("authorization", f"Bearer {token}"),)
    m_channel = grpc.aio.insecure_channel(c.manager.address)
    d_channel = grpc.aio.insecure_channel(c.daemon.address)
    m_stub = manager_pb2_grpc.ManagerServiceStub(m_channel)
    d_stub = agent_pb2_grpc.AgentServiceStub(d_channel)
    await wait_for_agents(m_stub, AGENTS, metadata)
    for i in range(AGENTS):
        await m_stub.CreateKernel(
            mpb.CreateKernelRequest(
                spec=pb.KernelSpec(kernel_id=f"k-bench{i}", command=["sleep", "3600"]),
                agent_id=f"b{i}",
            ),
            timeout=TIMEOUT,
            metadata=metadata,
        )
    last = AGENTS - 1
    routed_request = pb.GetKernelRequest(kernel_id=f"k-bench{last}")
    direct_request = pb.GetKernelRequest(agent_id=f"b{last}", kernel_id=f"k-bench{last}")

    async def routed() -> object:
        return await m_stub.GetKernel(routed_request, timeout=TIMEOUT, metadata=metadata)

    async def direct() -> object:
        return await d_stub.GetKernel(direct_request, timeout=TIMEOUT)

    return routed, direct, [m_channel, d_channel]


def report(title: str, r: Comparison, target: float | None) -> None:
    base, candidate = "off", "on"
    print(title)
    print(f"   latency     off {r.latency_us[base]:8.0f} us   on {r.latency_us[candidate]:8.0f} us")
    print(f"   throughput  off {r.rps[base]:8.0f} /s   on {r.rps[candidate]:8.0f} /s")
    verdict = ""
    if target is not None:
        verdict = f"   (target <= {target}x: {'ok' if r.latency_ratio <= target else 'MISSED'})"
    print(
        f"   ratio on/off: latency {r.latency_ratio:.3f}x, "
        f"throughput {r.throughput_ratio:.3f}x{verdict}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    parser.add_argument(
        "--scrape-interval", type=float, default=1.0, help="seconds between scrapes (default 1)"
    )
    args = parser.parse_args()
    s = Settings.of(args.quick)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        work = Path(tmp)
        os.environ["AGENTHOST_HOME"] = str(work / "home")  # the managers' admin token
        with (
            cluster(work / "off", False, 48400) as off,
            cluster(work / "on", True, 48450) as on,
        ):
            token = token_file().read_text().strip()
            off_routed, off_direct, off_channels = await calls(off, token)
            on_routed, on_direct, on_channels = await calls(on, token)
            scraper = Scraper(on.endpoints, args.scrape_interval)
            scraper.start()
            try:
                routed = await compare(
                    ("off", off_routed),
                    ("on", on_routed),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
                direct = await compare(
                    ("off", off_direct),
                    ("on", on_direct),
                    s.reps,
                    s.calls,
                    s.seconds,
                    s.concurrency,
                )
            finally:
                scraper.stop()
                for channel in (*off_channels, *on_channels):
                    await channel.close(None)
    report("1. routed GetKernel through the manager: metrics on vs off", routed, 1.05)
    report("2. direct GetKernel on the daemon: metrics on vs off", direct, None)
    print(f"3. scrapes every {args.scrape_interval:g} s during the run")
    for name, durations in sorted(scraper.seconds.items()):
        print(
            f"   {name:8s} {len(durations):4d} scrapes, median "
            f"{statistics.median(durations) * 1e3:6.2f} ms, {scraper.sizes[name] / 1024:6.1f} KiB"
        )


if __name__ == "__main__":
    asyncio.run(main())
