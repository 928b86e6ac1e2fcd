"""The fault suite: the daemon killed (-9) in the middle of a batch, a caller that gives
up half-way, a full state_dir, a corrupt checkpoint, ten thousand create/destroy
cycles. Each ends with nothing lost (what a reply reported exists after a restart)
and nothing leaked: no slots, ports, processes, kernel directories or memory cgroups
beyond what the records hold.

Two daemons on one state_dir, a second server on a busy port and fifty concurrent
restarts and destroys of one kernel are in test_examples.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from daemon.backends.local.launcher import native_problem
from daemon.checkpoint import Checkpoint
from daemon.config import load_config
from daemon.errors import CheckpointError
from daemon.kernels import KernelSpec, KernelState, ServicePort
from daemon.resources import Allocation, ResourceRequest
from daemon.runtime import AgentRuntime
from protos import agent_pb2 as pb
from tests.servers import (
    Stub,
    agent_info,
    clean_up_after,
    create,
    daemon_cgroups,
    daemon_config,
    daemon_process,
    eventually,
    get,
    identity_of,
    kernel_processes,
    kernels_dir_of,
    local_agents,
    running_daemon,
    sleeper,
    visible_to_kernels,
)

MIB = 1 << 20
HTTP = pb.ServicePort(name="http")


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


def kernels_running(identity: str) -> set[str]:
    """The kernel ids of the processes the daemon with this identity started."""
    ids = set()
    for proc in kernel_processes(identity):
        try:
            ids.add(proc.environ()["AGENTHOST_KERNEL_ID"])
        except (KeyError, psutil.Error):  # gone meanwhile
            continue
    return ids


def kernel_dirs(state: Path, agent_id: str) -> set[str]:
    """The kernel working directories an agent of the daemon whose state_dir is state
    (daemon_config's tmp_path/state) has."""
    kernels = kernels_dir_of(state.parent) / agent_id
    return {p.name for p in kernels.iterdir()} if kernels.is_dir() else set()


def kernel_marks(tmp_path: Path) -> Path:
    """A directory every kernel, whatever its uid, may leave a mark in."""
    marks = visible_to_kernels(tmp_path) / "marks"
    marks.mkdir()
    marks.chmod(0o1777)
    return marks


def on_file(checkpoint: Path) -> set[str]:
    """The kernels a checkpoint holds as running."""
    try:
        kernels = Checkpoint(checkpoint, checkpoint.parent.name).load()
    except CheckpointError:
        return set()
    return {k.kernel_id for k in kernels if k.state is KernelState.RUNNING}


def kernel_cgroups(identity: str, agent_id: str) -> set[str]:
    """The kernel memory cgroups an agent of the daemon has."""
    return {g.name for g in daemon_cgroups(identity) if g.parent.name == agent_id}


@pytest.fixture
def identity(tmp_path: Path) -> Iterator[str]:
    """The identity of the daemon whose config daemon_config writes into tmp_path; what
    its kernels leave behind (after a kill -9, or a failure half-way) is cleaned up."""
    name = identity_of(tmp_path)
    try:
        yield name
    finally:
        clean_up_after(name)


# ------------------------------------------------------------ kill -9 in a batch

BATCH = 16
KERNEL_MEMORY = 32 * MIB


@dataclass(frozen=True)
class Moment:
    """When the daemon is frozen (SIGSTOP), to be killed (-9) right after."""

    name: str
    running: int = 0  # kernels of the batch whose command runs by then
    written: bool = False  # and the agent's checkpoint holds the batch
    replied: bool = False  # and the batch's reply has come back


MOMENTS = [
    Moment("as-the-batch-is-sent"),
    Moment("first-kernel-running", running=1),
    Moment("half-the-batch-running", running=BATCH // 2),
    Moment("whole-batch-running", running=BATCH),
    Moment("batch-on-file", running=BATCH, written=True),
    Moment("after-the-reply", running=BATCH, replied=True),
]


def batch(marks: Path) -> pb.CreateKernelsRequest:
    """BATCH kernels that each leave a mark once their command runs, a port and memory each."""
    command = f'touch {shlex.quote(str(marks))}/"$AGENTHOST_KERNEL_ID"; exec sleep 300'
    return pb.CreateKernelsRequest(
        agent_id="a0",
        kernels=[
            pb.KernelSpec(
                kernel_id=f"b{i}",
                command=["sh", "-c", command],
                ports=[HTTP],
                resources=pb.ResourceRequest(memory_bytes=KERNEL_MEMORY),
            )
            for i in range(BATCH)
        ],
    )


class TestKillNineDuringABatch:
    @pytest.mark.parametrize("moment", MOMENTS, ids=[m.name for m in MOMENTS])
    async def test_a_restart_holds_the_whole_batch_or_none_of_it_and_nothing_else(
        self, tmp_path: Path, identity: str, moment: Moment
    ) -> None:
        marks = kernel_marks(tmp_path)
        path = daemon_config(tmp_path, local_agents(1, memory="2GiB", base_port=49000))
        request = batch(marks)
        every = {k.kernel_id for k in request.kernels}
        checkpoint = tmp_path / "state" / "agents" / "a0" / "state.json"

        with daemon_process(path) as first:
            async with grpc.aio.insecure_channel(first.address) as channel:
                reply = asyncio.ensure_future(Stub(channel).CreateKernels(request, timeout=60))

                def reached() -> bool:
                    return (
                        len(os.listdir(marks)) >= moment.running
                        and (not moment.written or on_file(checkpoint) == every)
                        and (not moment.replied or reply.done())
                    )

                await eventually(reached, timeout=30, interval=0.002)
                first.proc.send_signal(signal.SIGSTOP)
                await asyncio.to_thread(first.kill9)
                try:
                    await reply
                    replied = True
                except grpc.aio.AioRpcError:
                    replied = False
        assert replied or not moment.replied

        with daemon_process(path) as second:
            async with grpc.aio.insecure_channel(second.address) as channel:
                stub = Stub(channel)
                listed = await stub.ListKernels(pb.ListKernelsRequest(agent_id="a0"))
                kept = {k.kernel_id for k in listed.kernels}
                # The batch was written whole or not at all; a reply means it was.
                assert kept == every if replied or moment.written else kept in (set(), every)
                assert {k.state for k in listed.kernels} <= {pb.KERNEL_STATE_RUNNING}
                # Kernels the record does not hold were ended, their leftovers removed.
                await eventually(lambda: kernels_running(identity) == kept)
                assert kernel_dirs(tmp_path / "state", "a0") == kept
                assert kernel_cgroups(identity, "a0") == kept
                info = await agent_info(stub, "a0")
                n = len(kept)
                assert (info.kernel_count, info.occupied.ports, info.occupied.memory_bytes) == (
                    n,
                    n,
                    n * KERNEL_MEMORY,
                )
                # Nothing was held for the kernels that were lost: the batch fits again.
                if not kept:
                    again = await stub.CreateKernels(request)
                    assert {k.state for k in again.kernels} == {pb.KERNEL_STATE_RUNNING}
                else:
                    err = await refused(stub.CreateKernels(request))
                    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
                await eventually(lambda: kernels_running(identity) == every)
                for kernel_id in sorted(every):
                    await stub.DestroyKernel(
                        pb.DestroyKernelRequest(agent_id="a0", kernel_id=kernel_id)
                    )
                info = await agent_info(stub, "a0")
                assert (info.kernel_count, info.occupied.ports, info.occupied.memory_bytes) == (
                    0,
                    0,
                    0,
                )
                assert kernels_running(identity) == set()
                assert kernel_dirs(tmp_path / "state", "a0") == set()
            assert second.terminate() == 0
        assert daemon_cgroups(identity) == []


# ---------------------------------------------------------- the caller gives up


class TestCallerGivesUp:
    @pytest.mark.parametrize("deadline", [0.02, 0.1, 0.3])
    async def test_a_batch_whose_caller_gives_up_is_made_whole_never_half(
        self, tmp_path: Path, identity: str, deadline: float
    ) -> None:
        marks = kernel_marks(tmp_path)
        request = batch(marks)
        every = {k.kernel_id for k in request.kernels}
        async with running_daemon(daemon_config(tmp_path, local_agents(1, base_port=49900))) as d:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await d.stub.CreateKernels(request, timeout=deadline)

            async def settled() -> set[str] | None:
                listed = await d.stub.ListKernels(pb.ListKernelsRequest(agent_id="a0"))
                if {k.state for k in listed.kernels} <= {pb.KERNEL_STATE_RUNNING}:
                    return {k.kernel_id for k in listed.kernels} or {""}
                return None

            kept = await eventually(settled) - {""}
            assert kept in (set(), every)
            await eventually(lambda: kernels_running(identity) == kept)
            info = await agent_info(d.stub, "a0")
            n = len(kept)
            assert (info.kernel_count, info.occupied.ports, info.occupied.memory_bytes) == (
                n,
                n,
                n * KERNEL_MEMORY,
            )
            assert kernel_dirs(tmp_path / "state", "a0") == kept
            assert kernel_cgroups(identity, "a0") == kept

    async def test_a_restart_whose_caller_gives_up_leaves_one_running_copy(
        self, tmp_path: Path, identity: str
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, local_agents(1, base_port=49900))) as d:
            await create(d.stub, "a0", sleeper("k", ports=[HTTP]))
            for deadline in (0.01, 0.05, 0.2):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await d.stub.RestartKernel(
                        pb.RestartKernelRequest(agent_id="a0", kernel_id="k"), timeout=deadline
                    )

                async def running() -> bool:
                    kernel = await get(d.stub, "a0", "k")
                    return kernel.state == pb.KERNEL_STATE_RUNNING

                await eventually(running)
                await eventually(lambda: len(kernel_processes(identity)) == 1)
                info = await agent_info(d.stub, "a0")
                assert (info.kernel_count, info.occupied.ports) == (1, 1)


# -------------------------------------------------------------------- full disk


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/state (the test daemon's state_dir) on a 1 MiB tmpfs of its own."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "--lazy", str(state)], check=False)


def fill(directory: Path) -> Path:
    """Write a file into directory until its file system is full; the file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


class TestFullDisk:
    async def test_a_full_state_dir_undoes_creates_still_destroys_and_lets_the_daemon_start(
        self, tmp_path: Path, small_state_dir: Path, identity: str
    ) -> None:
        path = daemon_config(tmp_path, local_agents(2, base_port=49200))
        checkpoint = small_state_dir / "agents" / "a0" / "state.json"
        async with running_daemon(path, destroy_kernels=False) as d:
            await create(d.stub, "a0", sleeper("before", ports=[HTTP]))
            filler = await asyncio.to_thread(fill, small_state_dir)

            err = await refused(
                d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a0",
                        kernels=[
                            sleeper(
                                "k",
                                ports=[HTTP],
                                resources=pb.ResourceRequest(memory_bytes=64 * MIB),
                            )
                        ],
                    )
                )
            )
            assert err.code() == grpc.StatusCode.UNAVAILABLE
            assert err.details() == (
                f"agent 'a0': cannot write its checkpoint {checkpoint}: "
                "No space left on device (errno 28); the create was undone"
            )
            # Undone: its process, slots, port, directory and cgroup are gone.
            info = await agent_info(d.stub, "a0")
            assert (info.kernel_count, info.occupied.ports, info.occupied.memory_bytes) == (
                1,
                1,
                0,
            )
            await eventually(lambda: kernels_running(identity) == {"before"})
            assert kernel_dirs(small_state_dir, "a0") == {"before"}
            assert kernel_cgroups(identity, "a0") == {"before"}

            # A destroy still ends the kernel; the file catches up later.
            await d.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="before"))
            await eventually(lambda: kernels_running(identity) == set())
            info = await agent_info(d.stub, "a0")
            assert (info.kernel_count, info.occupied.ports) == (0, 0)

        # The daemon stopped on a full disk, and starts on one: the record of the
        # destroyed kernel is still on file, but nothing runs for it any more.
        async with running_daemon(path) as d:
            for agent in (await d.stub.ListAgents(pb.ListAgentsRequest())).agents:
                assert agent.healthy, agent.status_message
                assert (agent.kernel_count, agent.occupied.ports) == (0, 0)
            assert kernel_dirs(small_state_dir, "a0") == set()

            # Room again: the file catches up without any call, and creates work.
            await asyncio.to_thread(filler.unlink)

            await eventually(lambda: on_file(checkpoint) == set())
            [after] = await create(d.stub, "a0", sleeper("after", ports=[HTTP]))
            assert after.state == pb.KERNEL_STATE_RUNNING
            assert on_file(checkpoint) == {"after"}
        assert kernels_running(identity) == set()
        assert daemon_cgroups(identity) == []


# ------------------------------------------------------------ corrupt checkpoint


class TestCorruptCheckpoint:
    async def test_one_corrupt_checkpoint_of_three_takes_down_only_its_agent_until_moved_aside(
        self, tmp_path: Path, identity: str
    ) -> None:
        path = daemon_config(tmp_path, local_agents(3, base_port=49400))
        async with running_daemon(path, destroy_kernels=False) as d:
            for agent_id in ("a0", "a1", "a2"):
                await create(d.stub, agent_id, sleeper(f"k-{agent_id}", ports=[HTTP]))
        checkpoint = tmp_path / "state" / "agents" / "a1" / "state.json"
        text = checkpoint.read_bytes()
        checkpoint.write_bytes(text[: len(text) // 2])  # a torn write

        async with running_daemon(path) as d:
            agents = {
                a.agent_id: a for a in (await d.stub.ListAgents(pb.ListAgentsRequest())).agents
            }
            assert (agents["a0"].healthy, agents["a1"].healthy, agents["a2"].healthy) == (
                True,
                False,
                True,
            )
            advice = (
                f"move it aside (mv {checkpoint} {checkpoint}.broken) to start agent 'a1' "
                "afresh; its kernels will then be ended"
            )
            assert agents["a1"].status_message.startswith(f"{checkpoint}: not valid JSON")
            assert agents["a1"].status_message.endswith(advice)
            health = health_pb2_grpc.HealthStub(d.channel)
            for agent_id, status in (
                ("a0", health_pb2.HealthCheckResponse.SERVING),
                ("a1", health_pb2.HealthCheckResponse.NOT_SERVING),
                ("a2", health_pb2.HealthCheckResponse.SERVING),
            ):
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=f"agenthost.v1.AgentService/{agent_id}")
                )
                assert reply.status == status, agent_id

            # The broken agent serves nothing and ends nothing.
            err = await refused(
                d.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a1", kernels=[sleeper()]))
            )
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.details() == agents["a1"].status_message
            # The others serve on: their kernels were re-adopted, new ones start.
            assert (agents["a0"].kernel_count, agents["a2"].kernel_count) == (1, 1)
            assert (await get(d.stub, "a0", "k-a0")).state == pb.KERNEL_STATE_RUNNING
            await create(d.stub, "a2", sleeper("k2-a2", ports=[HTTP]))
            assert kernels_running(identity) == {"k-a0", "k-a1", "k-a2", "k2-a2"}

            # The one thing the message says to do brings the agent back, afresh.
            checkpoint.rename(checkpoint.with_name("state.json.broken"))

            async def a1_healthy() -> bool:
                return (await agent_info(d.stub, "a1")).healthy

            await eventually(a1_healthy)
            await eventually(lambda: kernels_running(identity) == {"k-a0", "k-a2", "k2-a2"})
            info = await agent_info(d.stub, "a1")
            assert (info.kernel_count, info.occupied.ports) == (0, 0)
            assert kernel_dirs(tmp_path / "state", "a1") == set()
            assert kernel_cgroups(identity, "a1") == set()
            [again] = await create(d.stub, "a1", sleeper("k-a1", ports=[HTTP]))
            assert again.state == pb.KERNEL_STATE_RUNNING
        assert kernels_running(identity) == set()
        assert daemon_cgroups(identity) == []


# ---------------------------------------------------- ten thousand create/destroy

CYCLES = 10_000
WORKERS = 16  # cycles under way at once


def kernel_fds() -> int:
    """How many of this process's file descriptors are process handles or pipes (what
    the local backend opens per kernel; gRPC's sockets and event fds come and go)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            count += target == "anon_inode:[pidfd]" or target.startswith("pipe:")
    return count


@pytest.fixture
async def runtime(tmp_path: Path, identity: str) -> AsyncIterator[AgentRuntime]:
    """One local agent's runtime, in this process, its kernels started by the native
    launcher (ten thousand starts of the Python one would take minutes)."""
    problem = native_problem()
    if problem is not None:
        pytest.skip(f"{problem}: build it with scripts/build-launcher.sh")
    config = load_config(daemon_config(tmp_path, local_agents(1, memory="2GiB", base_port=49700)))
    runtime = await AgentRuntime.create(config)
    try:
        yield runtime
    finally:
        await runtime.close(destroy_kernels=True)


class TestTenThousandCycles:
    async def test_ten_thousand_creates_and_destroys_leak_no_slot_port_process_dir_or_cgroup(
        self, runtime: AgentRuntime, identity: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        agent = runtime.get_agent("a0")

        async def cycles(worker: int, first: int, last: int) -> None:
            # Worker 0 holds an exclusive core; every fourth kernel ends by itself,
            # racing its destroy.
            resources = ResourceRequest(memory=16 * MIB, cpu_count=1 if worker == 0 else 0)
            for i in range(first + worker, last, WORKERS):
                spec = KernelSpec(
                    kernel_id=f"c{i}",
                    command=("true",) if i % 4 == 0 else ("sleep", "300"),
                    ports=(ServicePort(name="http"),),
                    resources=resources,
                )
                [kernel] = await agent.create_kernels([spec])
                assert kernel.ports["http"] in range(49700, 49800)
                await agent.destroy_kernel(kernel.kernel_id)

        async def run(first: int, last: int) -> None:
            await asyncio.gather(*(cycles(w, first, last) for w in range(WORKERS)))

        await run(0, 200)  # warm up: threads and watchers made once
        fds, tasks = kernel_fds(), len(asyncio.all_tasks())
        await run(200, CYCLES)

        status = agent.status()
        assert (status.kernel_count, status.ports_used, status.occupied) == (0, 0, Allocation())
        assert agent.list_kernels() == []
        assert await asyncio.to_thread(Checkpoint(agent.dir / "state.json", "a0").load) == []
        assert kernel_dirs(agent.dir.parent.parent, "a0") == set()
        await eventually(lambda: kernels_running(identity) == set())
        assert kernel_cgroups(identity, "a0") == set()
        # What one cycle leaked would show 9,800 times; a scan or a checkpoint write
        # under way at either moment is one task more or less.
        assert kernel_fds() <= fds + 2 and len(asyncio.all_tasks()) <= tasks + 2
        # A reconcile pass racing a destroy may report the destroyed kernel's leftovers
        # as dangling (its record gone a moment before its last cgroup); it never
        # signals a pid that is no longer the scanned process (start time and zombie
        # checks in daemon/backends/local/reconcile.py), and nothing leaked (above).
        # Every slot and port is there to take again.
        whole = [
            KernelSpec(kernel_id=f"w{i}", command=("sleep", "300"), ports=(ServicePort(name="p"),))
            for i in range(100)
        ]
        taken = await agent.create_kernels(whole)
        assert sorted(k.ports["p"] for k in taken) == list(range(49700, 49800))
        await asyncio.gather(*(agent.destroy_kernel(k.kernel_id) for k in taken))

    async def test_a_closed_runtime_leaves_no_cgroup_behind(
        self, tmp_path: Path, identity: str
    ) -> None:
        config = load_config(daemon_config(tmp_path, local_agents(2, base_port=49800)))
        runtime = await AgentRuntime.create(config)
        try:
            for agent_id in ("a0", "a1"):
                await runtime.get_agent(agent_id).create_kernels(
                    [KernelSpec(kernel_id=f"k-{agent_id}", command=("sleep", "300"))]
                )
            assert {g.name for g in daemon_cgroups(identity)} >= {"k-a0", "k-a1", "a0", "a1"}
        finally:
            await runtime.close(destroy_kernels=True)
        assert daemon_cgroups(identity) == []
