"""Audit benchmark: what the audit trail costs routed calls, on against off in one run.

Two clusters run as real processes (`agenthost manager` + `agenthost daemon`, one
local agent with one sleeping kernel each, plaintext on loopback), alike but for
the audit trail: on (the default: `audit.log` beside the manager's database and in
the daemon's state_dir) in one, `audit_log = ""` in both servers of the other. The
client is this process; every manager call carries the admin bearer token.

1. Routed GetKernel through the manager: the manager's call and its call to the
   daemon are each written (two lines per call). Target: latency at most 1.05x.
2. ListKernels through the manager (answered from the manager's table: one line).
   Target: latency at most 1.05x.

For each: paired latency (the audited and the unaudited call alternating one by
one, the medians of single calls: the figure the target is for, as load on the
machine that moves from one second to the next hits both alike), sequential
latency and throughput with 16 callers in interleaved blocks, and the CPU time the
two server processes (all threads: the writer thread's too; from the scheduler's
per-thread run times) spent per call during a block of sequential calls, the
figure other load on the machine moves least.
Repetitions interleave the two sides of each comparison; figures are medians,
ratios the medians of per-repetition ratios. At the end the lines each log of the
audited cluster holds show that it really wrote them.

    .venv/bin/python benchmarks/bench_audit.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc
import psutil

from benchmarks.measure import Call, Comparison, Paired, compare, paired
from common.home import token_file
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import ManagerProcess, agents_toml, linked_daemon_config, wait_for_agents
from tests.managers import manager_config as write_manager_config
from tests.servers import DaemonProcess

TIMEOUT = 10.0
TARGET = 1.05


@dataclass(frozen=True)
class Settings:
    reps: int
    calls: int
    seconds: float
    concurrency: int
    pairs: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(reps=4, calls=150, seconds=0.5, concurrency=16, pairs=1500)
        return cls(reps=12, calls=400, seconds=1.5, concurrency=16, pairs=6000)


@dataclass
class Cluster:
    """One manager and one daemon, and where their audit logs are (if on)."""

    manager: ManagerProcess
    daemon: DaemonProcess
    logs: tuple[Path, ...]

    def server_cpu(self) -> float:
        """CPU seconds the manager and the daemon (every thread) have run so far."""
        return sum(_cpu_seconds(p.proc.pid) for p in (self.manager, self.daemon))


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process: its threads' run time from /proc/PID/task/*/schedstat
    (nanoseconds; psutil's times tick at 10 ms, coarse for blocks of a second)."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
    except OSError:
        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    return total / 1e9


@contextmanager
def cluster(work: Path, audit: bool, port: int) -> Iterator[Cluster]:
    """Start a plaintext manager and daemon, with the audit trail on or off."""
    work.mkdir(parents=True)
    off = {} if audit else {"audit_log": ""}
    with ExitStack() as stack:
        manager = ManagerProcess(write_manager_config(work, missed_heartbeats=20, **off))
        stack.callback(manager.close)
        path = linked_daemon_config(
            work,
            "d",
            manager.address,
            agents_toml(("t0", "default", port, "")),
            heartbeat=2.0,
            reconcile_interval=5.0,
        )
        if not audit:
            path.write_text(path.read_text().replace("[daemon]\n", '[daemon]\naudit_log = ""\n', 1))
        daemon = DaemonProcess(path, "--destroy-kernels-on-exit")
        stack.callback(daemon.close)
        stack.callback(daemon.terminate)
        logs = (work / "audit.log", work / "d" / "state" / "audit.log") if audit else ()
        yield Cluster(manager, daemon, logs)


async def calls(c: Cluster, token: str) -> tuple[Call, Call, grpc.aio.Channel]:
    """The routed GetKernel and the ListKernels of the cluster, ready to call."""
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.aio.insecure_channel(c.manager.address)
    stub = manager_pb2_grpc.ManagerServiceStub(channel)
    await wait_for_agents(stub, 1, metadata)
    await stub.CreateKernel(
        mpb.CreateKernelRequest(spec=pb.KernelSpec(kernel_id="k-bench", command=["sleep", "3600"])),
        timeout=TIMEOUT,
        metadata=metadata,
    )
    get_request = pb.GetKernelRequest(kernel_id="k-bench")
    list_request = mpb.ManagerListKernelsRequest()

    async def get() -> object:
        return await stub.GetKernel(get_request, timeout=TIMEOUT, metadata=metadata)

    async def list_() -> object:
        return await stub.ListKernels(list_request, timeout=TIMEOUT, metadata=metadata)

    return get, list_, channel


@dataclass(frozen=True)
class Cpu:
    """Server CPU per call of each side (medians) and the median per-repetition ratio."""

    us: dict[str, float]
    ratio: float  # on / off


async def cpu_per_call(sides: dict[str, tuple[Cluster, Call]], reps: int, calls: int) -> Cpu:
    """Server CPU time per sequential call, the sides interleaved (order flips each rep)."""
    per_call: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(reps):
        order = list(sides.items())
        if rep % 2:
            order.reverse()
        for name, (c, call) in order:
            before = c.server_cpu()
            for _ in range(calls):
                await call()
            per_call[name].append((c.server_cpu() - before) / calls)
    return Cpu(
        us={name: statistics.median(v) * 1e6 for name, v in per_call.items()},
        ratio=statistics.median(
            on / off for on, off in zip(per_call["on"], per_call["off"], strict=True)
        ),
    )


def report(title: str, pair: Paired, r: Comparison, cpu: Cpu) -> None:
    print(title)
    verdict = "ok" if pair.ratio <= TARGET else "MISSED"
    print(
        f"   paired latency  off {pair.median_us['off']:8.0f} us   on "
        f"{pair.median_us['on']:8.0f} us   ratio {pair.ratio:.3f}x"
        f"   (target <= {TARGET}x: {verdict})"
    )
    print(
        f"   block latency   off {r.latency_us['off']:8.0f} us   on {r.latency_us['on']:8.0f} us"
        f"   ratio {r.latency_ratio:.3f}x"
    )
    print(
        f"   throughput      off {r.rps['off']:8.0f} /s   on {r.rps['on']:8.0f} /s"
        f"   ratio {r.throughput_ratio:.3f}x"
    )
    print(
        f"   server CPU      off {cpu.us['off']:8.0f} us   on {cpu.us['on']:8.0f} us per call"
        f"   ratio {cpu.ratio:.3f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier figures)")
    s = Settings.of(parser.parse_args().quick)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = Path(tmp)
        os.environ["AGENTHOST_HOME"] = str(work / "home")  # the managers' admin token
        with cluster(work / "off", False, 48400) as off, cluster(work / "on", True, 48410) as on:
            token = token_file().read_text().strip()
            off_get, off_list, off_channel = await calls(off, token)
            on_get, on_list, on_channel = await calls(on, token)
            try:
                get_pair = await paired(("off", off_get), ("on", on_get), s.pairs)
                list_pair = await paired(("off", off_list), ("on", on_list), s.pairs)
                get = await compare(
                    ("off", off_get), ("on", on_get), s.reps, s.calls, s.seconds, s.concurrency
                )
                listed = await compare(
                    ("off", off_list), ("on", on_list), s.reps, s.calls, s.seconds, s.concurrency
                )
                get_cpu = await cpu_per_call(
                    {"off": (off, off_get), "on": (on, on_get)}, s.reps, 2 * s.calls
                )
                list_cpu = await cpu_per_call(
                    {"off": (off, off_list), "on": (on, on_list)}, s.reps, 2 * s.calls
                )
            finally:
                await off_channel.close(None)
                await on_channel.close(None)
            written = {path: _lines(path) for path in on.logs}
        report(
            "1. routed GetKernel (a line on the manager and one on the daemon)",
            get_pair,
            get,
            get_cpu,
        )
        report(
            "2. ListKernels through the manager (a line on the manager)",
            list_pair,
            listed,
            list_cpu,
        )
        for path, count in written.items():
            print(f"   audited cluster: {count} lines in {path.relative_to(work)}")
        load = os.getloadavg()
        print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)")


def _lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


if __name__ == "__main__":
    asyncio.run(main())
