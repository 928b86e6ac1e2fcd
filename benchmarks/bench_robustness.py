"""Robustness benchmark: how long other calls wait while heavy work is in flight.

A probe makes a `ListAgents` call every 5 ms against a real `agenthost daemon`
(local backend, two agents) and records each call's latency from when it was due
(open loop: a stall shows in every call due during it), in four kinds of window,
interleaved over repetitions (the order rotates, so drift cancels):

- idle: nothing else runs (the baseline);
- batch: a 128-kernel `CreateKernels` on agent a0 is in flight;
- log: a `StreamKernelLogs` of a 100 MB kernel log on agent a1 is in flight;
- both at once.

Each load runs in a process of its own (this script with `--load`), so its client
work never shares the probe's event loop; it says when its call starts and ends,
and the window is exactly that span. Figures are medians over repetitions; each
ratio against idle is the median of the per-repetition ratios. Target: the p99 of
the concurrent `ListAgents` under 50 ms in every window.

    .venv/bin/python benchmarks/bench_robustness.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import (
    AGENTHOST,
    clean_up_after,
    daemon_config,
    daemon_process,
    eventually,
    identity_of,
    kernels_dir_of,
)

BATCH = 128
LOG_BYTES = 100 * 10**6
LOG_KERNEL = "big-log"
P99_TARGET_MS = 50.0
PROBE_INTERVAL = 0.005  # seconds between the probe's ListAgents calls
CALL_TIMEOUT = 120.0
KINDS = ("idle", "batch", "log", "both")
# A local-backend daemon: a0 takes the batches, a1 keeps one kernel with a 100 MB log.
AGENTS = """
[[agents]]
id = "a0"
port_range = [43000, 43199]

[[agents]]
id = "a1"
port_range = [43200, 43299]
log_max_bytes = "256MiB"
"""


@dataclass(frozen=True)
class Settings:
    """How long it runs."""

    reps: int
    idle_seconds: float

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(2, 2.0) if quick else cls(5, 3.0)


# ----------------------------------------------------------------------- loads


async def load_batch(stub: agent_pb2_grpc.AgentServiceStub) -> str:
    """One CreateKernels of BATCH sleeping kernels (destroyed after the window)."""
    specs = [pb.KernelSpec(kernel_id=f"batch-{i}", command=["sleep", "3600"]) for i in range(BATCH)]
    reply = await stub.CreateKernels(
        pb.CreateKernelsRequest(agent_id="a0", kernels=specs), timeout=CALL_TIMEOUT
    )
    return f"{len(reply.kernels)} kernels"


async def load_log(stub: agent_pb2_grpc.AgentServiceStub) -> str:
    """The whole 100 MB log of LOG_KERNEL, streamed."""
    size = 0
    async for chunk in stub.StreamKernelLogs(
        pb.StreamKernelLogsRequest(agent_id="a1", kernel_id=LOG_KERNEL), timeout=CALL_TIMEOUT
    ):
        size += len(chunk.data)
    return f"{size / 1e6:.0f} MB"


LOADS: dict[str, Callable[[agent_pb2_grpc.AgentServiceStub], Awaitable[str]]] = {
    "batch": load_batch,
    "log": load_log,
}


def run_load(kind: str, address: str) -> None:
    """The --load side: connect, say "start", make the call, say "done <what>"."""

    async def main() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            await stub.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT)  # connected
            print("start", flush=True)
            started = time.perf_counter()
            what = await LOADS[kind](stub)
            print(f"done {what} in {time.perf_counter() - started:.2f} s", flush=True)

    asyncio.run(main())


class Load:
    """A --load process; `started` and `finished` are set as it reports them."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process) -> None:
        self.kind = kind
        self.proc = proc
        self.started = asyncio.Event()
        self.report = ""
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, kind: str, address: str) -> Load:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--load", kind, "--address", address,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(kind, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line == "start":
                self.started.set()
            elif line.startswith("done "):
                self.report = line.removeprefix("done ")
        await self.proc.wait()
        self.started.set()  # a load that failed before starting ends its window too

    async def finished(self) -> None:
        await self._reader
        if self.proc.returncode or not self.report:
            raise RuntimeError(f"load {self.kind} failed (exit {self.proc.returncode})")


# ------------------------------------------------------------------- measuring


@dataclass
class Window:
    """The probe's latencies (ms) during one window of one kind."""

    kind: str
    latencies: list[float] = field(default_factory=list)
    failed: dict[str, int] = field(default_factory=dict)  # status code name: calls
    loads: list[str] = field(default_factory=list)

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(stub: agent_pb2_grpc.AgentServiceStub, window: Window, stop: asyncio.Event) -> None:
    """A ListAgents call every PROBE_INTERVAL until stop is set, each timed from when it was
    due: open loop, so a stall delays every call due meanwhile (and shows in the p99)
    instead of only the one call that was waiting."""

    async def one(due: float) -> None:
        try:
            await stub.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            window.failed[exc.code().name] = window.failed.get(exc.code().name, 0) + 1
            return
        window.latencies.append((time.perf_counter() - due) * 1e3)

    calls = []
    due = time.perf_counter()
    while not stop.is_set():
        calls.append(asyncio.create_task(one(due)))
        due += PROBE_INTERVAL
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
    await asyncio.gather(*calls)


async def measure(
    stub: agent_pb2_grpc.AgentServiceStub, address: str, kind: str, s: Settings
) -> Window:
    """One window of kind: its loads are spawned, the probe runs while they are in flight."""
    window = Window(kind)
    loads = [
        await Load.spawn(k, address) for k in (("batch", "log") if kind == "both" else (kind,))
    ] if kind != "idle" else []  # fmt: skip
    for load in loads:
        await load.started.wait()
    stop = asyncio.Event()
    # The probe's own collector must not pause it mid-window: a full collection of
    # this process took 40-60 ms, which would show as the daemon's latency.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        probing = asyncio.create_task(probe(stub, window, stop))
        if loads:
            await asyncio.gather(*(load.finished() for load in loads))
        else:
            await asyncio.sleep(s.idle_seconds)
        stop.set()
        await probing
    finally:
        gc.enable()
    window.loads = [f"{load.kind}: {load.report}" for load in loads]
    if kind in ("batch", "both"):  # back to an empty a0, outside the window
        await asyncio.gather(
            *(
                stub.DestroyKernel(
                    pb.DestroyKernelRequest(agent_id="a0", kernel_id=f"batch-{i}", grace_seconds=0),
                    timeout=CALL_TIMEOUT,
                )
                for i in range(BATCH)
            )
        )
    return window


async def write_log(stub: agent_pb2_grpc.AgentServiceStub, kernels: Path) -> None:
    """Start LOG_KERNEL, which writes LOG_BYTES of lines and then sleeps; wait for all of it."""
    line = "agenthost robustness benchmark: one line of a large kernel log, 100 B." + "." * 28
    await stub.CreateKernels(
        pb.CreateKernelsRequest(
            agent_id="a1",
            kernels=[
                pb.KernelSpec(
                    kernel_id=LOG_KERNEL,
                    command=["sh", "-c", f"yes '{line}' | head -c {LOG_BYTES}; exec sleep 3600"],
                )
            ],
        ),
        timeout=CALL_TIMEOUT,
    )
    log = kernels / "a1" / LOG_KERNEL / "kernel.log"
    await eventually(
        lambda: log.exists() and log.stat().st_size >= LOG_BYTES, timeout=120, interval=0.1
    )


@dataclass(frozen=True)
class Row:
    kind: str
    p50: float
    p99: float
    worst: float
    calls: int
    p99_ratio: float
    failed: int
    loads: str


async def run(tmp: Path, s: Settings) -> list[Row]:
    path = daemon_config(tmp, AGENTS, reconcile_interval=5.0)
    try:
        with daemon_process(path, "--destroy-kernels-on-exit") as daemon:
            async with grpc.aio.insecure_channel(daemon.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                print("  writing the 100 MB kernel log ...", flush=True)
                await write_log(stub, kernels_dir_of(tmp))
                for _ in range(200):  # warm up
                    await stub.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT)
                windows: dict[str, list[Window]] = {k: [] for k in KINDS}
                for rep in range(s.reps):
                    order = KINDS[rep % len(KINDS) :] + KINDS[: rep % len(KINDS)]
                    for kind in order:
                        window = await measure(stub, daemon.address, kind, s)
                        windows[kind].append(window)
                        print(
                            f"  rep {rep + 1}/{s.reps} {kind:5}: {len(window.latencies):5} calls, "
                            f"p99 {window.quantile(0.99):6.1f} ms"
                            + (f", failed {window.failed}" if window.failed else "")
                            + (f" ({'; '.join(window.loads)})" if window.loads else ""),
                            flush=True,
                        )
            daemon.terminate()
    finally:
        clean_up_after(identity_of(tmp))
        shutil.rmtree(kernels_dir_of(tmp), ignore_errors=True)
    idle = windows["idle"]
    rows = []
    for kind in KINDS:
        ws = windows[kind]
        rows.append(
            Row(
                kind,
                statistics.median(w.quantile(0.5) for w in ws),
                statistics.median(w.quantile(0.99) for w in ws),
                max(max(w.latencies) for w in ws),
                sum(len(w.latencies) for w in ws),
                statistics.median(
                    w.quantile(0.99) / i.quantile(0.99) for w, i in zip(ws, idle, strict=True)
                ),
                sum(sum(w.failed.values()) for w in ws),
                "; ".join(ws[-1].loads),
            )
        )
    return rows


def print_rows(rows: list[Row]) -> None:
    headers = [
        "window",
        "calls",
        "failed",
        "p50 (ms)",
        "p99 (ms)",
        "max (ms)",
        "p99 vs idle",
        "p99 target",
    ]
    cells = [
        [
            r.kind,
            str(r.calls),
            str(r.failed),
            f"{r.p50:.2f}",
            f"{r.p99:.2f}",
            f"{r.worst:.1f}",
            f"{r.p99_ratio:.2f}x",
            f"< {P99_TARGET_MS:.0f} ms: " + ("PASS" if r.p99 < P99_TARGET_MS else "MISS"),
        ]
        for r in rows
    ]
    widths = [max(len(c) for c in col) for col in zip(headers, *cells, strict=True)]
    print(
        "\nListAgents latency while other work is in flight (medians over repetitions;"
        " failed: probe calls that got an error, left out of the latencies)"
    )
    for line in [headers, ["-" * w for w in widths], *cells]:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r.loads:
            print(f"  {r.kind}: last window's loads: {r.loads}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 30 s)")
    parser.add_argument("--load", choices=sorted(LOADS), help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        run_load(args.load, args.address)
        return
    s = Settings.of(args.quick)
    started = time.monotonic()
    print(
        f"agenthost robustness benchmark ({'quick' if args.quick else 'full'}): "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
        f"daemon = {AGENTHOST}"
    )
    print(
        f"  {s.reps} reps of {', '.join(KINDS)} windows (rotated); batch = {BATCH} kernels in "
        f"one CreateKernels, log = StreamKernelLogs of {LOG_BYTES / 1e6:.0f} MB; idle = "
        f"{s.idle_seconds:g} s"
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-robustness-") as tmp_name:
        rows = asyncio.run(run(Path(tmp_name), s))
    print_rows(rows)
    print(
        "\n  p99 vs idle: median over repetitions of the window's p99 / the idle window's p99."
        f"\n  load average (1 min) at start {load_before:.2f}; the machine's other work"
        " moves the figures."
        f"\n  total time {time.monotonic() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
