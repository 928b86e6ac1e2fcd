"""Daemon benchmarks: ratios measured side by side in one run.

1. A routed unary call (GetKernel on agent a63 of a 64-agent daemon) against a
   bare grpc.aio echo server that answers the same method with the same
   GetKernelResponse: latency (p50, mean) and throughput ratios, plus the server's
   CPU per call. ListKernels on an agent without kernels (routing, no conversion)
   is compared the same way.
2. Routing cost: GetKernel on a 1-agent daemon and on a 64-agent daemon.
3. Resident memory of one daemon with 16 agents against one with 1 agent.
4-7. Local kernel spawning (as root; `--no-spawn` skips it): the parts of
   `bench_spawn.py`, run from here in the same run: create + destroy through the
   daemon against bare `Popen` + SIGTERM + wait (target 10x) and against the same
   launch in process, the floor of the steps it cannot do without, 100 concurrent
   creates against 100 bare spawns (target 10x), isolation on against off
   (target 1.2x). The 1,000-agent comparisons are `bench_scale.py`'s.

Every server runs in its own process (the real `agenthost daemon --config`
command; the echo server is this script with `--serve-echo`); the client is
this process. Repetitions are interleaved (A, B, C, then B, C, A, ...) so that
drift cancels, and the figures are medians over repetitions; each ratio is the
median of the per-repetition ratios.

    .venv/bin/python benchmarks/bench_daemon.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc
import psutil

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import AGENTHOST, DaemonProcess, daemon_config, local_agents

KERNEL_ID = "k-bench"
CALL_TIMEOUT = 10.0
# Modules a local-only daemon must not load (they cost resident memory).
HEAVY_MODULES = ("aiodocker", "aiohttp", "kubernetes", "yaml", "urllib3", "requests")


@dataclass(frozen=True)
class Settings:
    """How long each part runs."""

    latency_reps: int
    latency_calls: int
    throughput_reps: int
    throughput_seconds: float
    concurrency: int
    memory_reps: int
    getagent_number: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(4, 150, 5, 0.2, 32, 1, 20_000)
        return cls(15, 300, 20, 0.3, 32, 3, 200_000)


# ------------------------------------------------------------------ echo server


def serve_echo(response_file: Path) -> None:
    """A bare grpc.aio server answering GetKernel and ListKernels with fixed responses.

    The GetKernel answer is the daemon's own answer, so both sides send the same bytes;
    the ListKernels answer is empty, as the daemon's is for an agent without kernels.
    """
    kernel = pb.GetKernelResponse.FromString(response_file.read_bytes())
    kernels = pb.ListKernelsResponse()

    async def get_kernel(request: pb.GetKernelRequest, context: Any) -> pb.GetKernelResponse:
        return kernel

    async def list_kernels(request: pb.ListKernelsRequest, context: Any) -> pb.ListKernelsResponse:
        return kernels

    async def main() -> None:
        server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "agenthost.v1.AgentService",
            {
                "GetKernel": grpc.unary_unary_rpc_method_handler(
                    get_kernel,
                    request_deserializer=pb.GetKernelRequest.FromString,
                    response_serializer=pb.GetKernelResponse.SerializeToString,
                ),
                "ListKernels": grpc.unary_unary_rpc_method_handler(
                    list_kernels,
                    request_deserializer=pb.ListKernelsRequest.FromString,
                    response_serializer=pb.ListKernelsResponse.SerializeToString,
                ),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"echo listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop(0.5)

    asyncio.run(main())


class EchoProcess:
    """The echo server in its own process."""

    def __init__(self, response_file: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-echo", str(response_file)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"echo listening on (\S+)", line)
        if not match:
            self.close()
            raise RuntimeError(f"echo server did not start: {line!r}")
        self.address = match.group(1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# ---------------------------------------------------------------- measurement


@dataclass
class Target:
    """One server under test, the method and the request the client sends it."""

    name: str
    address: str
    pid: int
    method: str
    request: Any
    channel: grpc.aio.Channel = field(init=False)
    rpc: Any = field(init=False)
    p50_us: list[float] = field(default_factory=list)
    mean_us: list[float] = field(default_factory=list)
    calls_per_s: list[float] = field(default_factory=list)
    server_cpu_us: list[float] = field(default_factory=list)

    def connect(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)
        self.rpc = getattr(agent_pb2_grpc.AgentServiceStub(self.channel), self.method)

    async def call(self) -> Any:
        return await self.rpc(self.request, timeout=CALL_TIMEOUT)

    def server_cpu(self) -> float:
        t = psutil.Process(self.pid).cpu_times()
        return t.user + t.system


def rotations(targets: list[Target], reps: int) -> Iterator[list[Target]]:
    """A, B, C / B, C, A / C, A, B ...: each target takes each position equally often."""
    for rep in range(reps):
        k = rep % len(targets)
        yield targets[k:] + targets[:k]


async def measure_latency(targets: list[Target], s: Settings) -> None:
    """Sequential calls, one at a time: per block the p50 and the mean."""
    for order in rotations(targets, s.latency_reps):
        for t in order:
            for _ in range(20):
                await t.call()
            samples = []
            for _ in range(s.latency_calls):
                start = time.perf_counter_ns()
                await t.call()
                samples.append((time.perf_counter_ns() - start) / 1000)
            t.p50_us.append(statistics.median(samples))
            t.mean_us.append(statistics.fmean(samples))


async def measure_throughput(targets: list[Target], s: Settings) -> None:
    """`concurrency` calls always in flight for a fixed time: completed calls per second."""
    for order in rotations(targets, s.throughput_reps):
        for t in order:
            await asyncio.gather(*(t.call() for _ in range(s.concurrency)))
            cpu0 = t.server_cpu()
            start = time.perf_counter()
            counts = await asyncio.gather(
                *(keep_calling(t, start + s.throughput_seconds) for _ in range(s.concurrency))
            )
            elapsed = time.perf_counter() - start
            cpu = t.server_cpu() - cpu0
            t.calls_per_s.append(sum(counts) / elapsed)
            t.server_cpu_us.append(cpu / sum(counts) * 1e6)


async def keep_calling(t: Target, deadline: float) -> int:
    """Call t back to back until the deadline; the number of completed calls."""
    done = 0
    while time.perf_counter() < deadline:
        await t.call()
        done += 1
    return done


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over repetitions of a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ reporting


@dataclass
class Row:
    """One line of the result table."""

    figure: str
    a: str
    b: str
    ratio: float
    target: str
    ok: bool | None


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def print_table(title: str, a_name: str, b_name: str, rows: list[Row]) -> None:
    headers = ["figure", a_name, b_name, "ratio", "target", "result"]
    cells = [
        [
            r.figure,
            r.a,
            r.b,
            "-" if r.ratio != r.ratio else f"{r.ratio:.3f}x",
            r.target,
            verdict(r.ok),
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(headers, *cells, strict=False)]
    print(f"\n{title}")
    for line in [headers, ["-" * w for w in widths], *cells]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip())


def latency_rows(a: Target, b: Target, limit: float, what: str = "") -> list[Row]:
    """p50 and mean latency of a against b, both must be within `limit`."""
    p50 = paired_ratio(a.p50_us, b.p50_us)
    mean = paired_ratio(a.mean_us, b.mean_us)
    return [
        Row(
            f"{what}latency p50 (us)",
            f"{statistics.median(a.p50_us):.1f}",
            f"{statistics.median(b.p50_us):.1f}",
            p50,
            f"<= {limit:.2f}x",
            p50 <= limit,
        ),
        Row(
            f"{what}latency mean (us)",
            f"{statistics.median(a.mean_us):.1f}",
            f"{statistics.median(b.mean_us):.1f}",
            mean,
            f"<= {limit:.2f}x",
            mean <= limit,
        ),
    ]


def throughput_rows(a: Target, b: Target, floor: float | None, c: int, what: str = "") -> list[Row]:
    """Throughput of a against b (>= floor when given) and the server CPU per call."""
    tput = paired_ratio(a.calls_per_s, b.calls_per_s)
    cpu = paired_ratio(a.server_cpu_us, b.server_cpu_us)
    return [
        Row(
            f"{what}throughput ({c} in flight, calls/s)",
            f"{statistics.median(a.calls_per_s):.0f}",
            f"{statistics.median(b.calls_per_s):.0f}",
            tput,
            "-" if floor is None else f">= {floor:.3g}x",
            None if floor is None else tput >= floor,
        ),
        Row(
            f"{what}server CPU per call (us)",
            f"{statistics.median(a.server_cpu_us):.1f}",
            f"{statistics.median(b.server_cpu_us):.1f}",
            cpu,
            "-",
            None,
        ),
    ]


# -------------------------------------------------------------------- daemons


def write_config(tmp: Path, name: str, agents: int, base_port: int) -> Path:
    """A local-backend daemon config with `agents` agents in its own state dir."""
    directory = tmp / name
    directory.mkdir()
    return daemon_config(
        directory,
        local_agents(agents, base_port=base_port),
        reconcile_interval=5.0,
    )


@contextlib.contextmanager
def daemon(config: Path) -> Iterator[DaemonProcess]:
    """The real `agenthost daemon --config` command; kernels destroyed on exit."""
    proc = DaemonProcess(config, "--destroy-kernels-on-exit")
    try:
        yield proc
    finally:
        with contextlib.suppress(Exception):
            proc.terminate()
        proc.close()


async def create_kernel(address: str, agent_id: str) -> pb.GetKernelResponse:
    """A sleeping kernel on agent_id; returns GetKernel's answer for it."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        await stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id=agent_id,
                kernels=[pb.KernelSpec(kernel_id=KERNEL_ID, command=["sleep", "3600"])],
            ),
            timeout=CALL_TIMEOUT,
        )
        response: pb.GetKernelResponse = await stub.GetKernel(
            pb.GetKernelRequest(agent_id=agent_id, kernel_id=KERNEL_ID), timeout=CALL_TIMEOUT
        )
        return response


async def destroy_kernel(address: str, agent_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        await stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id=agent_id, kernel_id=KERNEL_ID, grace_seconds=0.5),
            timeout=CALL_TIMEOUT,
        )


def get_agent_ns(config1: Path, config64: Path, number: int) -> tuple[float, float]:
    """In-process cost of `AgentRuntime.get_agent` alone (ns per call), 1 vs 64 agents."""
    from common.ids import AgentId
    from daemon.config import load_config
    from daemon.kernels import AggregateKernelRegistry
    from daemon.runtime import AgentRuntime

    def runtime(path: Path) -> AgentRuntime:
        cfg = load_config(path)
        agents: Any = {AgentId(a.id): object() for a in cfg.agents}
        return AgentRuntime(cfg, agents, AggregateKernelRegistry(), "bench")

    r1, r64 = runtime(config1), runtime(config64)
    one: list[float] = []
    many: list[float] = []
    for _ in range(5):
        one.append(timeit.timeit(lambda: r1.get_agent("a0"), number=number) / number * 1e9)
        many.append(timeit.timeit(lambda: r64.get_agent("a63"), number=number) / number * 1e9)
    return statistics.median(one), statistics.median(many)


# ---------------------------------------------------------------------- memory


def rss_after_start(config: Path) -> int:
    """RSS (bytes) of `agenthost daemon` right after it logs "daemon listening on"."""
    with daemon(config) as proc:
        time.sleep(0.3)  # let the first health publication and reconcile task settle
        return int(psutil.Process(proc.proc.pid).memory_info().rss)


HEAVY_CHECK = textwrap.dedent(
    """
    import asyncio, sys
    from daemon.config import load_config
    from daemon.server import DaemonServer

    async def main():
        server = await DaemonServer.start(load_config(sys.argv[1]))
        await server.stop(grace=0)

    asyncio.run(main())
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
    print(",".join(heavy))
    """
)


def heavy_modules(config: Path) -> list[str]:
    """Heavy client libraries a daemon with this (local-only) config imports."""
    out = subprocess.run(
        [sys.executable, "-c", HEAVY_CHECK, str(config), ",".join(HEAVY_MODULES)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout.strip()
    return [m for m in out.split(",") if m]


# ------------------------------------------------------------------------ main


def busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all CPUs)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def own_cpu() -> float:
    """CPU seconds of this process plus its finished (waited-for) children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


async def run_calls(tmp: Path, s: Settings) -> tuple[list[Row], list[Row], tuple[float, float]]:
    config1 = write_config(tmp, "d1", 1, base_port=41000)
    config64 = write_config(tmp, "d64", 64, base_port=42000)
    with daemon(config1) as d1, daemon(config64) as d64:
        response1 = await create_kernel(d1.address, "a0")
        response64 = await create_kernel(d64.address, "a63")
        response_file = tmp / "echo-response.bin"
        response_file.write_bytes(response64.SerializeToString())
        echo = EchoProcess(response_file)
        try:
            get = pb.GetKernelRequest(agent_id="a63", kernel_id=KERNEL_ID)
            empty = pb.ListKernelsRequest(agent_id="a62")
            targets = [
                Target("echo", echo.address, echo.proc.pid, "GetKernel", get),
                Target("daemon-64", d64.address, d64.proc.pid, "GetKernel", get),
                Target(
                    "daemon-1",
                    d1.address,
                    d1.proc.pid,
                    "GetKernel",
                    pb.GetKernelRequest(agent_id="a0", kernel_id=KERNEL_ID),
                ),
                Target("echo-list", echo.address, echo.proc.pid, "ListKernels", empty),
                Target("daemon-64-list", d64.address, d64.proc.pid, "ListKernels", empty),
            ]
            for t in targets:
                t.connect()
            echo_t, d64_t, d1_t, echo_list, d64_list = targets
            answer = await echo_t.call()
            assert answer.ByteSize() == response64.ByteSize()
            assert (await d64_list.call()).ByteSize() == (await echo_list.call()).ByteSize() == 0
            print(
                f"  GetKernel: request {get.ByteSize()} B, response {response64.ByteSize()} B "
                f"(daemon-1: {response1.ByteSize()} B); ListKernels: request "
                f"{empty.ByteSize()} B, response 0 B",
                flush=True,
            )
            print("  measuring latency ...", flush=True)
            await measure_latency(targets, s)
            print("  measuring throughput ...", flush=True)
            await measure_throughput(targets, s)
            for t in targets:
                await t.channel.close(None)
        finally:
            echo.close()
        await destroy_kernel(d1.address, "a0")
        await destroy_kernel(d64.address, "a63")
    c = s.concurrency
    routed = [
        *latency_rows(d64_t, echo_t, 1.10, "GetKernel: "),
        *throughput_rows(d64_t, echo_t, 0.90, c, "GetKernel: "),
        *latency_rows(d64_list, echo_list, 1.10, "ListKernels (empty): "),
        *throughput_rows(d64_list, echo_list, 0.90, c, "ListKernels (empty): "),
    ]
    routing = latency_rows(d64_t, d1_t, 1.05) + throughput_rows(d64_t, d1_t, 1 / 1.05, c)
    return routed, routing, get_agent_ns(config1, config64, s.getagent_number)


def run_memory(tmp: Path, s: Settings) -> tuple[list[Row], list[str]]:
    config1 = write_config(tmp, "m1", 1, base_port=50000)
    config16 = write_config(tmp, "m16", 16, base_port=51000)
    one: list[int] = []
    sixteen: list[int] = []
    for rep in range(s.memory_reps):
        pair = [(config1, one), (config16, sixteen)]
        for config, out in pair if rep % 2 == 0 else reversed(pair):
            out.append(rss_after_start(config))
    ratio = paired_ratio([float(x) for x in sixteen], [float(x) for x in one])
    mib = 1024 * 1024
    rows = [
        Row(
            "RSS after start (MiB)",
            f"{statistics.median(sixteen) / mib:.1f}",
            f"{statistics.median(one) / mib:.1f}",
            ratio,
            "<= 1.30x",
            ratio <= 1.30,
        ),
        Row(
            "RSS per extra agent (KiB)",
            f"{(statistics.median(sixteen) - statistics.median(one)) / 15 / 1024:.0f}",
            "-",
            float("nan"),
            "-",
            None,
        ),
        Row(
            "16 separate 1-agent daemons (MiB, 16 x)",
            f"{16 * statistics.median(one) / mib:.1f}",
            f"{statistics.median(one) / mib:.1f}",
            16.0,
            "-",
            None,
        ),
    ]
    return rows, heavy_modules(config16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a short run (about 30 s with parts 4-7)"
    )
    parser.add_argument(
        "--no-spawn", action="store_true", help="skip parts 4-7 (local kernel spawning)"
    )
    parser.add_argument("--serve-echo", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    s = Settings.of(args.quick)
    started = time.monotonic()
    print(
        f"agenthost daemon benchmark ({'quick' if args.quick else 'full'}): "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
        f"daemon = {AGENTHOST}"
    )
    print(
        f"  latency: {s.latency_reps} interleaved reps x {s.latency_calls} sequential calls; "
        f"throughput: {s.throughput_reps} reps x {s.throughput_seconds:g} s with "
        f"{s.concurrency} calls in flight; memory: {s.memory_reps} reps"
    )
    load_before = os.getloadavg()[0]
    busy_before, own_before, wall_before = busy_cpu(), own_cpu(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp_name:
        tmp = Path(tmp_name)
        routed, routing, (ns1, ns64) = asyncio.run(run_calls(tmp, s))
        memory, heavy = run_memory(tmp, s)
    other = (busy_cpu() - busy_before) - (own_cpu() - own_before)
    available = (time.monotonic() - wall_before) * (os.cpu_count() or 1)
    print_table(
        "1. A routed call through the daemon (64 agents; GetKernel on a63, ListKernels on the"
        " empty a62)\n   vs a bare grpc.aio echo server answering the same method with the same"
        " bytes",
        "daemon-64",
        "echo",
        routed,
    )
    print_table(
        "2. Routing cost: GetKernel on a 64-agent daemon (a63) vs a 1-agent daemon (a0)",
        "daemon-64",
        "daemon-1",
        [
            *routing,
            Row(
                "get_agent alone, in process (ns)",
                f"{ns64:.0f}",
                f"{ns1:.0f}",
                ns64 / ns1,
                "-",
                None,
            ),
        ],
    )
    print_table(
        "3. Resident memory: one daemon with 16 agents vs one with 1 agent (local backend)",
        "16 agents",
        "1 agent",
        memory,
    )
    print(
        "\n  heavy client modules imported by a local-only daemon: "
        + (", ".join(heavy) if heavy else "none")
        + f" (checked: {', '.join(HEAVY_MODULES)})"
    )
    print(
        "\n  figures: medians over repetitions; ratio: median of the per-repetition ratios"
        "\n  (so it can differ a little from the ratio of the two medians shown)."
        f"\n  load average (1 min) at start {load_before:.2f}; CPU used by other work on the"
        f" machine during the run: {max(other, 0.0):.1f} s of {available:.0f} CPU-s"
        f" ({max(other, 0.0) / available:.0%}); other work widens the spread."
        f"\n  total time {time.monotonic() - started:.1f} s"
    )
    if args.no_spawn:
        return
    if os.geteuid() != 0:
        print("\n4-7. Local kernel spawning: skipped, it needs root (uids and cgroups)")
        return
    from benchmarks.bench_spawn import spawn_report  # it imports this module's helpers

    spawn_report(args.quick, first=4)


if __name__ == "__main__":
    main()
