"""The backend conformance suite: the same verbs, through the real daemon, on every backend.

Each test runs once per backend (`backend` in conftest.py): create, exec with
streamed output, stdin and a timeout, a kernel that ends by itself, restart,
logs, destroy, and re-adoption by a daemon started again on the same state_dir.
What differs between backends (cores pinned by affinity or by cpuset, a process
group or a container, OOM kills, labels, networks) is tested beside each backend
under tests/integration/; what is here must hold for all of them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from tests.conformance.conftest import AGENT_ID, CORE, BackendCase
from tests.servers import (
    Daemon,
    DaemonFactory,
    agent_info,
    create,
    eventually,
    execute,
    get,
    identity_of,
    logs,
    sleeper,
)

MIB = 1 << 20
# Prints the command line of every process it can see but itself.
COMMAND_LINES = (
    "import os\n"
    "for p in filter(str.isdigit, os.listdir('/proc')):\n"
    "    if int(p) != os.getpid():\n"
    "        try:\n"
    "            print(open(f'/proc/{p}/cmdline', 'rb').read().replace(b'\\0', b' ').decode())\n"
    "        except OSError:\n"
    "            pass\n"
)


def holding(kernel_id: str, command: list[str] | None = None) -> pb.KernelSpec:
    """A kernel holding one exclusive core, 64 MiB and one named port."""
    return pb.KernelSpec(
        kernel_id=kernel_id,
        command=command or ["sleep", "300"],
        resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
        ports=[pb.ServicePort(name="http")],
    )


def held(kernel: pb.Kernel) -> tuple[object, ...]:
    """What a kernel holds and how the backend knows it."""
    return (
        kernel.state,
        dict(kernel.ports),
        list(kernel.allocated.cores),
        kernel.allocated.memory_bytes,
        kernel.backend_ref,
    )


def occupancy(info: pb.AgentInfo) -> tuple[list[int], int, int, int]:
    """An agent's occupied cores, memory and ports, and its live kernel count."""
    return (
        list(info.occupied.cores),
        info.occupied.memory_bytes,
        info.occupied.ports,
        info.kernel_count,
    )


async def terminated(daemon: Daemon, kernel_id: str) -> pb.Kernel:
    """The kernel once it is TERMINATED."""

    async def check() -> pb.Kernel | None:
        kernel = await get(daemon.stub, AGENT_ID, kernel_id)
        return kernel if kernel.state == pb.KERNEL_STATE_TERMINATED else None

    return await eventually(check, timeout=30)


class TestCreate:
    async def test_kernel_runs_with_its_slots_ports_and_env(
        self, daemon: Daemon, backend: BackendCase, tmp_path: Path
    ) -> None:
        spec = holding("k")
        spec.env["GREETING"] = "hi"
        [kernel] = await create(daemon.stub, AGENT_ID, spec)
        assert (kernel.agent_id, kernel.state) == (AGENT_ID, pb.KERNEL_STATE_RUNNING)
        assert list(kernel.allocated.cores) == [CORE]
        assert kernel.allocated.memory_bytes == 64 * MIB
        first, last = backend.port_range
        port = kernel.ports["http"]
        assert first <= port <= last
        assert occupancy(await agent_info(daemon.stub, AGENT_ID)) == ([CORE], 64 * MIB, 1, 1)
        _, out, _, exit_ = await execute(
            daemon.stub,
            AGENT_ID,
            "k",
            ["sh", "-c", "echo $GREETING $AGENTHOST_AGENT_ID $AGENTHOST_KERNEL_ID $PORT_HTTP"],
        )
        assert (out, exit_.exit_code) == (f"hi {AGENT_ID} k {port}\n".encode(), 0)
        assert kernel.backend_ref in backend.leftovers(identity_of(tmp_path))

    async def test_command_that_cannot_run_is_invalid_argument_and_takes_nothing(
        self, daemon: Daemon, backend: BackendCase, tmp_path: Path
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(
                daemon.stub,
                AGENT_ID,
                holding("ok"),
                pb.KernelSpec(kernel_id="bad", command=["/no/such/program"]),
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (err.value.details() or "").startswith("kernel 'bad' cannot start: ")
        assert occupancy(await agent_info(daemon.stub, AGENT_ID)) == ([], 0, 0, 0)
        listed = await daemon.stub.ListKernels(pb.ListKernelsRequest(agent_id=AGENT_ID))
        assert list(listed.kernels) == []
        identity = identity_of(tmp_path)
        assert await eventually(lambda: not backend.leftovers(identity))


class TestExecute:
    async def test_output_is_streamed_as_produced_with_stderr_apart_and_the_exit_code(
        self, daemon: Daemon
    ) -> None:
        await create(daemon.stub, AGENT_ID, sleeper("e"))
        script = "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2; exit 7"
        messages, out, err, exit_ = await execute(daemon.stub, AGENT_ID, "e", ["sh", "-c", script])
        assert len([m for m in messages if m.HasField("stdout")]) >= 3
        assert (out, err) == (b"line1\nline2\nline3\n", b"oops\n")
        assert (exit_.exit_code, exit_.timed_out) == (7, False)

    async def test_stdin_reaches_the_command(self, daemon: Daemon) -> None:
        await create(daemon.stub, AGENT_ID, sleeper("e"))
        _, out, _, exit_ = await execute(
            daemon.stub, AGENT_ID, "e", ["cat"], stdin=b"hello\nworld\n"
        )
        assert (out, exit_.exit_code) == (b"hello\nworld\n", 0)

    async def test_timeout_kills_the_command_and_says_so(self, daemon: Daemon) -> None:
        await create(daemon.stub, AGENT_ID, sleeper("e"))
        marker = f"timed-out-{uuid.uuid4().hex}"
        program = "import time; print('started', flush=True); time.sleep(60)"
        _, out, _, exit_ = await execute(
            daemon.stub, AGENT_ID, "e", ["python3", "-c", program, marker], timeout=1
        )
        assert out == b"started\n"
        assert (exit_.exit_code, exit_.timed_out) == (137, True)

        async def gone() -> bool:
            _, seen, _, _ = await execute(
                daemon.stub, AGENT_ID, "e", ["python3", "-c", COMMAND_LINES]
            )
            return b"sleep 300" in seen and marker.encode() not in seen

        assert await eventually(gone)  # the timed-out process is gone; the kernel is not


class TestExits:
    async def test_kernel_that_exits_is_terminated_with_its_code_and_frees_its_slots(
        self, daemon: Daemon, backend: BackendCase, tmp_path: Path
    ) -> None:
        await create(daemon.stub, AGENT_ID, holding("x", ["sh", "-c", "echo bye; exit 7"]))
        kernel = await terminated(daemon, "x")
        assert (kernel.exit_code, kernel.status_message) == (7, "exited")
        assert (list(kernel.allocated.cores), kernel.allocated.memory_bytes) == ([], 0)
        assert dict(kernel.ports) == {}
        assert occupancy(await agent_info(daemon.stub, AGENT_ID)) == ([], 0, 0, 0)
        # What it wrote stays readable; nothing of it is left on the backend.
        assert await logs(daemon.stub, AGENT_ID, "x") == b"bye\n"
        identity = identity_of(tmp_path)
        assert await eventually(lambda: not backend.leftovers(identity))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await execute(daemon.stub, AGENT_ID, "x", ["true"])
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == (
            "kernel 'x' is terminated; only a running kernel can execute"
        )
        # Its core, memory and port can be had again at once.
        [again] = await create(daemon.stub, AGENT_ID, holding("again"))
        assert list(again.allocated.cores) == [CORE]


class TestRestart:
    async def test_restart_keeps_ports_and_slots_in_a_new_process(
        self, daemon: Daemon, backend: BackendCase, tmp_path: Path
    ) -> None:
        [before] = await create(daemon.stub, AGENT_ID, holding("r"))
        reply = await daemon.stub.RestartKernel(
            pb.RestartKernelRequest(agent_id=AGENT_ID, kernel_id="r")
        )
        after = reply.kernel
        assert (after.state, after.status_message) == (pb.KERNEL_STATE_RUNNING, "restarted")
        assert held(after)[:4] == held(before)[:4]
        assert after.backend_ref != before.backend_ref
        assert occupancy(await agent_info(daemon.stub, AGENT_ID)) == ([CORE], 64 * MIB, 1, 1)
        _, out, _, _ = await execute(daemon.stub, AGENT_ID, "r", ["sh", "-c", "echo $PORT_HTTP"])
        assert out == f"{before.ports['http']}\n".encode()
        identity = identity_of(tmp_path)

        def only_the_new_one() -> bool:
            refs = backend.leftovers(identity)
            return after.backend_ref in refs and before.backend_ref not in refs

        assert await eventually(only_the_new_one)


class TestLogs:
    async def test_logs_give_all_output_or_the_last_lines(self, daemon: Daemon) -> None:
        script = "echo one; echo two; echo three >&2; exec sleep 300"
        spec = pb.KernelSpec(kernel_id="l", command=["sh", "-c", script])
        await create(daemon.stub, AGENT_ID, spec)

        async def all_three() -> bytes:
            written = await logs(daemon.stub, AGENT_ID, "l")
            return written if len(written.splitlines()) == 3 else b""

        lines = (await eventually(all_three)).splitlines()
        assert sorted(lines) == [b"one", b"three", b"two"]
        last = (await logs(daemon.stub, AGENT_ID, "l", tail_lines=1)).splitlines()
        assert len(last) == 1 and last[0] in lines
        last_two = (await logs(daemon.stub, AGENT_ID, "l", tail_lines=2)).splitlines()
        assert len(last_two) == 2 and set(last_two) <= set(lines)


class TestDestroy:
    async def test_destroy_ends_every_process_and_returns_slots_and_ports(
        self, daemon: Daemon, backend: BackendCase, tmp_path: Path
    ) -> None:
        tree = ["sh", "-c", "sleep 300 & sleep 300 & echo ready; wait"]
        [kernel] = await create(daemon.stub, AGENT_ID, holding("t", tree))
        assert await eventually(lambda: logs(daemon.stub, AGENT_ID, "t"), timeout=20) == (
            b"ready\n"
        )
        reply = await daemon.stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id=AGENT_ID, kernel_id="t")
        )
        assert reply.kernel.state == pb.KERNEL_STATE_TERMINATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await get(daemon.stub, AGENT_ID, "t")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert occupancy(await agent_info(daemon.stub, AGENT_ID)) == ([], 0, 0, 0)
        identity = identity_of(tmp_path)
        assert await eventually(lambda: not backend.leftovers(identity))
        assert kernel.backend_ref not in backend.leftovers(identity)


class TestReadoption:
    async def test_a_daemon_started_again_readopts_the_kernel_with_its_ports_and_slots(
        self, start_daemon: DaemonFactory, backend: BackendCase
    ) -> None:
        # Runs until a file named "stop" appears in its working directory.
        waiter = ["sh", "-c", "while [ ! -e stop ]; do sleep 0.1; done; exit 3"]
        async with start_daemon(
            backend.agent, allocation_mode="manual", destroy_kernels=False
        ) as first:
            await create(first.stub, AGENT_ID, holding("w", waiter))
            before = await get(first.stub, AGENT_ID, "w")
            occupied_before = occupancy(await agent_info(first.stub, AGENT_ID))

        async with start_daemon(backend.agent, allocation_mode="manual") as second:
            after = await get(second.stub, AGENT_ID, "w")
            assert after.state == pb.KERNEL_STATE_RUNNING
            assert held(after) == held(before)
            assert occupancy(await agent_info(second.stub, AGENT_ID)) == occupied_before
            _, out, _, _ = await execute(
                second.stub, AGENT_ID, "w", ["sh", "-c", "echo $PORT_HTTP"]
            )
            assert out == f"{before.ports['http']}\n".encode()
            # It still holds its core: the agent's only one.
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await create(second.stub, AGENT_ID, holding("other"))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # And it is watched again: when it ends, its slots come back.
            await execute(second.stub, AGENT_ID, "w", ["touch", "stop"])
            await terminated(second, "w")
            assert occupancy(await agent_info(second.stub, AGENT_ID)) == ([], 0, 0, 0)
