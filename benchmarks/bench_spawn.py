"""Local kernel spawn benchmarks: ratios measured side by side in one run.

1. Create + destroy of one local kernel (`sleep 600`, default resources: the
   agent's slice, one core and 1 GiB) through the daemon (CreateKernels, then
   DestroyKernel) against bare `Popen` + SIGTERM + wait of the same command in
   this process. Target: at most 10x.
2. The same create + destroy through the daemon against the same launch done in
   this process, by the local backend itself with the same limits (its cgroups,
   cpuset, uid, working directory): what the daemon adds (gRPC, the agent, its
   checkpoint writes).
   The floor under both: the steps a create + destroy through the daemon cannot
   do without, done one after another in this process with nothing around them:
   two no-op calls to the same daemon (ListAgents: what a gRPC round trip costs,
   one per verb), the in-process launch of 2., and two checkpoint writes (the
   daemon's own checkpoint file with the kernel in it, written atomically and
   fsynced beside the daemon's, one per verb: what a reply must wait for to
   survive kill -9 and power loss). The daemon's figure against that floor is
   what the daemon adds beyond what it must do; the floor against bare `Popen`
   says how far the required steps alone already are from 10x.
3. 100 concurrent creates on one agent (100 CreateKernels calls at once) against
   100 concurrent bare spawns (asyncio subprocesses) of the same command.
   Target: at most 10x.
4. The cost of isolation: create + destroy through a daemon whose kernels get a
   uid of their own, a cpuset cgroup and a pids limit (the defaults) against a
   daemon whose kernels get none of them (`local = { run_as = "root",
   cpuset = false, pids_max = 0 }`); memory is limited by a cgroup in both.
   Target: at most 1.2x.

Daemons are the real `agenthost daemon --config` command, each in its own process;
the client, the in-process backend and the bare spawns are this process. Blocks of
each kind alternate (A B C D E, B C D E A, ...), so drift cancels; figures are medians
over blocks, each ratio the median of the per-block ratios. Needs root (uids,
cgroups) for the figures to mean what they say.

    .venv/bin/python benchmarks/bench_spawn.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import grpc

from benchmarks.bench_daemon import Row, busy_cpu, own_cpu, print_table
from common.atomic_file import write_atomically
from common.ids import AgentId, KernelId
from daemon.backends.base import LaunchSpec
from daemon.backends.local.backend import LocalBackend
from daemon.backends.local.settings import LocalSettings
from daemon.state_dir import checkpoint_path
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import DaemonProcess, daemon_config

COMMAND = ["sleep", "600"]
# The agents' slice: one core of several, so a kernel's cpuset confines it.
CORE = max(os.sched_getaffinity(0))
CALL_TIMEOUT = 60.0
PLAIN = '\nlocal = { run_as = "root", cpuset = false, pids_max = 0 }\n'


@dataclass(frozen=True)
class Settings:
    """How long each part runs."""

    blocks: int  # interleaved blocks of each kind
    cycles: int  # create + destroy cycles per block
    rounds: int  # rounds of 100 concurrent creates
    concurrency: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(5, 5, 2, 100) if quick else cls(15, 10, 5, 100)


@dataclass
class Kind:
    """One way of creating and destroying a kernel, and its block means (seconds)."""

    name: str
    cycle: Callable[[int], Awaitable[None]]
    seconds: list[float] = field(default_factory=list)


class Daemon:
    """A real daemon process with one local agent, and a stub to it."""

    def __init__(self, tmp: Path, name: str, base_port: int, extra: str = "") -> None:
        directory = tmp / name
        directory.mkdir()
        agents = (
            f'[[agents]]\nid = "a0"\nport_range = [{base_port}, {base_port + 99}]\n'
            f'resources = {{ cpus = [{CORE}], memory = "1GiB" }}\n{extra}'
        )
        self.proc = DaemonProcess(
            daemon_config(directory, agents, reconcile_interval=5.0), "--destroy-kernels-on-exit"
        )
        self.channel = grpc.aio.insecure_channel(self.proc.address)
        self.stub = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.name = name
        self.directory = directory

    async def create(self, kernel_id: str) -> pb.Kernel:
        reply = await self.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0", kernels=[pb.KernelSpec(kernel_id=kernel_id, command=COMMAND)]
            ),
            timeout=CALL_TIMEOUT,
        )
        kernel: pb.Kernel = reply.kernels[0]
        return kernel

    async def destroy(self, kernel_id: str) -> None:
        await self.stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id="a0", kernel_id=kernel_id), timeout=CALL_TIMEOUT
        )

    async def cycle(self, i: int) -> None:
        await self.create(f"k{i}")
        await self.destroy(f"k{i}")

    async def no_op(self) -> None:
        """A call that does nothing but answer: one gRPC round trip."""
        await self.stub.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT)

    def checkpoint(self) -> Path:
        """The agent's checkpoint file (under the state_dir daemon_config gives it)."""
        return checkpoint_path(self.directory / "state", "a0")

    async def close(self) -> None:
        await self.channel.close(None)
        with contextlib.suppress(Exception):
            self.proc.terminate()
        self.proc.close()


class InProcess:
    """The local backend in this process, with the agent's steps around it: no gRPC, no
    checkpoint."""

    def __init__(self, backend: LocalBackend, workdirs: Path) -> None:
        self.backend = backend
        self.workdirs = workdirs

    @classmethod
    async def create(cls, tmp: Path) -> InProcess:
        workdirs = tmp / "inproc-kernels"
        workdirs.mkdir(mode=0o711)
        settings = LocalSettings(uid_range=(2_090_000, 2_099_999))
        backend = await LocalBackend.create(AgentId("a0"), settings, f"bench-{os.getpid()}")
        return cls(backend, workdirs)

    async def cycle(self, i: int) -> None:
        workdir = self.workdirs / f"k{i}"
        await asyncio.to_thread(workdir.mkdir)
        launch = LaunchSpec(
            agent_id=AgentId("a0"),
            kernel_id=KernelId(f"k{i}"),
            image="",
            command=tuple(COMMAND),
            env={"AGENTHOST_DAEMON": self.backend.identity, "AGENTHOST_AGENT_ID": "a0"},
            labels={},
            workdir=workdir,
            cores=(CORE,),
            memory_limit=1 << 30,
        )
        started = await self.backend.start(launch)
        await self.backend.stop(started.handle, 5.0)
        await asyncio.to_thread(shutil.rmtree, workdir)

    async def close(self) -> None:
        await self.backend.close()


@dataclass
class Floor:
    """The steps a create + destroy through the daemon cannot do without, one after
    another: a no-op call and a checkpoint write per verb around the in-process launch."""

    daemon: Daemon
    inproc: InProcess
    content: bytes  # the daemon's checkpoint with one kernel in it
    path: Path

    async def cycle(self, i: int) -> None:
        await self.daemon.no_op()
        await self.inproc.cycle(i)
        await asyncio.to_thread(write_atomically, self.path, self.content)
        await self.daemon.no_op()
        await asyncio.to_thread(write_atomically, self.path, self.content)


async def bare_cycle(i: int) -> None:
    """Popen, SIGTERM, wait: the same command with nothing around it."""
    proc = subprocess.Popen(COMMAND)  # noqa: ASYNC220 -- the baseline: what a caller would do
    proc.send_signal(signal.SIGTERM)
    proc.wait()


def rotations(kinds: list[Kind], blocks: int) -> Iterator[list[Kind]]:
    for block in range(blocks):
        k = block % len(kinds)
        yield kinds[k:] + kinds[:k]


async def measure_cycles(kinds: list[Kind], s: Settings) -> None:
    """Blocks of `cycles` create + destroy cycles per kind, interleaved; the mean per cycle."""
    n = 0
    for kind in kinds:  # warm up: first kernels, first cgroups, first threads
        for _ in range(3):
            await kind.cycle(n)
            n += 1
    for order in rotations(kinds, s.blocks):
        for kind in order:
            start = time.perf_counter()
            for _ in range(s.cycles):
                await kind.cycle(n)
                n += 1
            kind.seconds.append((time.perf_counter() - start) / s.cycles)


async def measure_concurrent(daemon: Daemon, s: Settings) -> tuple[list[float], list[float]]:
    """Rounds of `concurrency` creates at once through the daemon, and as bare spawns."""
    through: list[float] = []
    bare: list[float] = []
    for round_ in range(s.rounds):
        ids = [f"c{round_}-{i}" for i in range(s.concurrency)]
        parts = [daemon_round(daemon, ids, through), bare_round(len(ids), bare)]
        for part in parts if round_ % 2 == 0 else reversed(parts):
            await part
    return through, bare


async def daemon_round(daemon: Daemon, ids: list[str], out: list[float]) -> None:
    """Create every kernel of ids at once (timed), then destroy them."""
    start = time.perf_counter()
    await asyncio.gather(*(daemon.create(k) for k in ids))
    out.append(time.perf_counter() - start)
    await asyncio.gather(*(daemon.destroy(k) for k in ids))


async def bare_round(n: int, out: list[float]) -> None:
    """Spawn n processes at once (timed), then SIGTERM and wait for them."""
    start = time.perf_counter()
    procs = await asyncio.gather(*(asyncio.create_subprocess_exec(*COMMAND) for _ in range(n)))
    out.append(time.perf_counter() - start)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        await p.wait()


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def describe(kernel: pb.Kernel) -> str:
    return f"uid {kernel.uid}, limits {dict(sorted(kernel.limits.items()))}"


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.2f}"


async def run(tmp: Path, s: Settings) -> tuple[list[Row], list[Row], dict[str, str]]:
    isolated = Daemon(tmp, "isolated", 47000)
    plain = Daemon(tmp, "plain", 47200, PLAIN)
    inproc = await InProcess.create(tmp)
    try:
        probe = await isolated.create("probe")
        plain_probe = await plain.create("probe")
        floor = Floor(
            isolated,
            inproc,
            await asyncio.to_thread(isolated.checkpoint().read_bytes),
            tmp / "floor" / "state.json",
        )
        facts = {
            "isolated daemon's kernel": describe(probe),
            "plain daemon's kernel": describe(plain_probe),
            "launcher": "native (agenthost-launch)"
            if inproc.backend.host.launcher.native
            else "Python fallback (launch.py)",
        }
        await isolated.destroy("probe")
        await plain.destroy("probe")
        kinds = [
            Kind("daemon", isolated.cycle),
            Kind("in-process", inproc.cycle),
            Kind("bare", bare_cycle),
            Kind("plain daemon", plain.cycle),
            Kind("floor", floor.cycle),
        ]
        print("  measuring create + destroy ...", flush=True)
        await measure_cycles(kinds, s)
        print(f"  measuring {s.concurrency} concurrent creates ...", flush=True)
        through, bare = await measure_concurrent(isolated, s)
    finally:
        await inproc.close()
        await isolated.close()
        await plain.close()
    d, ip, b, p, f = (k.seconds for k in kinds)
    r_bare, r_inproc, r_iso = ratio(d, b), ratio(d, ip), ratio(d, p)
    r_conc = ratio(through, bare)
    rows = [
        Row("create + destroy vs bare Popen (ms)", ms(d), ms(b), r_bare, "<= 10x", r_bare <= 10),
        Row("create + destroy vs same launch in process (ms)", ms(d), ms(ip), r_inproc, "-", None),
        Row("in-process launch vs bare Popen (ms)", ms(ip), ms(b), ratio(ip, b), "-", None),
        Row("floor (required steps) vs bare Popen (ms)", ms(f), ms(b), ratio(f, b), "-", None),
        Row("create + destroy vs the floor (ms)", ms(d), ms(f), ratio(d, f), "-", None),
        Row(
            f"{s.concurrency} concurrent creates vs {s.concurrency} bare spawns (ms)",
            ms(through),
            ms(bare),
            r_conc,
            "<= 10x",
            r_conc <= 10,
        ),
    ]
    isolation = [
        Row(
            "create + destroy: isolated vs plain daemon (ms)",
            ms(d),
            ms(p),
            r_iso,
            "<= 1.2x",
            r_iso <= 1.2,
        ),
    ]
    return rows, isolation, facts


def spawn_report(quick: bool, first: int = 1) -> None:
    """Run every part and print its tables, numbered from first (bench_daemon.py runs
    them as its parts 4-7). Needs root."""
    s = Settings.of(quick)
    started = time.monotonic()
    print(
        f"\nagenthost spawn benchmark ({'quick' if quick else 'full'}): {os.cpu_count()} CPUs, "
        f"Python {sys.version.split()[0]}; {s.blocks} interleaved blocks x {s.cycles} cycles, "
        f"{s.rounds} rounds of {s.concurrency} concurrent creates"
    )
    load_before = os.getloadavg()[0]
    busy_before, own_before, wall_before = busy_cpu(), own_cpu(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-spawn-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o711)
        rows, isolation, facts = asyncio.run(run(tmp, s))
    other = (busy_cpu() - busy_before) - (own_cpu() - own_before)
    available = (time.monotonic() - wall_before) * (os.cpu_count() or 1)
    for name, fact in facts.items():
        print(f"  {name}: {fact}")
    print_table(
        f"{first}-{first + 2}. One local kernel (sleep 600, default resources) through the daemon",
        "daemon",
        "baseline",
        rows,
    )
    print_table(
        f"{first + 3}. The cost of isolation: own uid + cpuset cgroup + pids limit, against none"
        " of them",
        "isolated",
        "plain",
        isolation,
    )
    print(
        "\n  figures: medians over blocks; ratio: median of the per-block ratios."
        f"\n  load average (1 min) at start {load_before:.2f}; CPU used by other work on the"
        f" machine during the run: {max(other, 0.0):.1f} s of {available:.0f} CPU-s"
        f" ({max(other, 0.0) / available:.0%}); other work widens the spread."
        f"\n  total time {time.monotonic() - started:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_spawn needs root: kernels of their own uid and cgroups")
    spawn_report(args.quick)


if __name__ == "__main__":
    main()
