"""The inputs and faults that used to break the daemon and the manager, one test each,
named after how they broke; through the real servers."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import psutil
import pytest

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    agents_by_id,
    agents_toml,
    create,
    linked_daemon_config,
    manager_config,
    running_manager,
)
from tests.servers import (
    AGENTHOST,
    Daemon,
    DaemonSetup,
    agent_info,
    daemon_config,
    eventually,
    local_agents,
    running_daemon,
    sleeper,
)

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    return DaemonSetup(local_agents(2, memory="2GiB", base_port=45600))


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    return err.value


class TestBoundedInputs:
    async def test_a_request_with_thousands_of_port_names_is_refused_at_once(
        self, daemon: Daemon
    ) -> None:
        spec = sleeper("k", ports=[pb.ServicePort(name=f"p{i}") for i in range(3000)])
        call = daemon.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=[spec]))
        other = daemon.stub.ListAgents(pb.ListAgentsRequest())
        err, agents = await asyncio.gather(refused(call), other)
        assert err.code() == INVALID
        assert err.details() == "kernel 'k': ports: 3000 given, at most 64 allowed"
        assert len(agents.agents) == 2

    async def test_a_batch_of_1000_specs_is_refused_by_max_batch(self, daemon: Daemon) -> None:
        specs = [sleeper(f"k{i}") for i in range(1000)]
        err = await refused(
            daemon.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=specs))
        )
        assert err.code() == INVALID
        assert err.details() == "kernels: 1000 specs in one batch, at most 128 allowed (max_batch)"
        assert (await agent_info(daemon.stub, "a0")).kernel_count == 0

    async def test_a_long_argv_or_env_is_invalid_argument_not_internal(
        self, daemon: Daemon
    ) -> None:
        long_argv = sleeper("argv", command=["sleep", "300", "x" * (200 << 10)])
        long_env = sleeper("env", env={"BIG": "y" * (200 << 10)})
        for spec in (long_argv, long_env):
            err = await refused(
                daemon.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=[spec]))
            )
            assert err.code() == INVALID and "at most 131072 (128KiB) allowed" in err.details()
        # Within the limits, the kernel really starts with all of it.
        fits = sleeper(
            "fits", command=["sleep", "300", "x" * (60 << 10)], env={"E": "z" * (60 << 10)}
        )
        reply = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[fits])
        )
        assert reply.kernels[0].state == pb.KERNEL_STATE_RUNNING

    async def test_infinite_grace_is_invalid_argument(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k")])
        )
        for grace in (float("inf"), float("nan"), -1.0):
            err = await refused(
                daemon.stub.DestroyKernel(
                    pb.DestroyKernelRequest(agent_id="a0", kernel_id="k", grace_seconds=grace)
                )
            )
            assert (
                err.code() == INVALID and "grace_seconds must be a finite number" in err.details()
            )
        assert (await agent_info(daemon.stub, "a0")).kernel_count == 1

    async def test_an_empty_argv0_is_refused(self, daemon: Daemon) -> None:
        err = await refused(
            daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k", command=["", "x"])])
            )
        )
        assert err.code() == INVALID
        assert err.details() == "kernel 'k': command[0]: the program to run must not be empty"
        exec_err = await refused(
            _drain(daemon.stub.Execute(pb.ExecuteRequest(agent_id="a0", kernel_id="k", argv=[""])))
        )
        assert exec_err.code() == INVALID


async def _drain(call: object) -> None:
    async for _ in call:  # type: ignore[attr-defined]
        pass


def processes_of(kernel_id: str) -> list[psutil.Process]:
    """Live processes started for kernel_id (by its environment)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except psutil.Error:
            continue
        if env.get("AGENTHOST_KERNEL_ID") == kernel_id and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


class TestOneLifecycleAtATime:
    async def test_five_concurrent_restarts_leave_one_copy_of_the_kernel(
        self, daemon: Daemon
    ) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0", kernels=[sleeper("k", ports=[pb.ServicePort(name="http")])]
            )
        )
        restarts = [
            daemon.stub.RestartKernel(pb.RestartKernelRequest(agent_id="a0", kernel_id="k"))
            for _ in range(5)
        ]
        replies = await asyncio.gather(*restarts)
        assert {r.kernel.state for r in replies} == {pb.KERNEL_STATE_RUNNING}
        assert len(processes_of("k")) == 1
        info = await agent_info(daemon.stub, "a0")
        assert (info.kernel_count, info.occupied.ports) == (1, 1)

    async def test_fifty_concurrent_restarts_and_destroys_end_destroyed_with_nothing_left(
        self, daemon: Daemon
    ) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[
                    sleeper(
                        "k",
                        ports=[pb.ServicePort(name="http")],
                        resources=pb.ResourceRequest(memory_bytes=64 << 20),
                    )
                ],
            )
        )
        calls = []
        for i in range(50):
            if i % 2:
                calls.append(
                    daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
                )
            else:
                calls.append(
                    daemon.stub.RestartKernel(pb.RestartKernelRequest(agent_id="a0", kernel_id="k"))
                )
        results = await asyncio.gather(*calls, return_exceptions=True)
        codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
        assert codes <= {grpc.StatusCode.NOT_FOUND}
        assert any(not isinstance(r, BaseException) for r in results)
        await eventually(lambda: not processes_of("k"))
        info = await agent_info(daemon.stub, "a0")
        assert (info.kernel_count, info.occupied.ports, info.occupied.memory_bytes) == (0, 0, 0)

    async def test_an_exec_ends_with_its_kernel(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k")])
        )
        call = daemon.stub.Execute(
            pb.ExecuteRequest(agent_id="a0", kernel_id="k", argv=["sleep", "300"])
        )
        running = asyncio.create_task(_drain(call))
        await eventually(lambda: len(processes_of("k")) >= 2)
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running
        assert err.value.code() == grpc.StatusCode.ABORTED
        assert err.value.details() == "kernel 'k' was destroyed while the command ran"
        await eventually(lambda: not processes_of("k"))


class TestOneDaemonPerStateDir:
    def test_two_daemons_on_one_state_dir_refuse_the_second(self, tmp_path: Path) -> None:
        path = daemon_config(tmp_path, local_agents(1, base_port=45800))
        first = subprocess.Popen(
            [AGENTHOST, "daemon", "--config", str(path)],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert first.stderr is not None
            for line in first.stderr:
                if "daemon listening on" in line:
                    break
            second = subprocess.run(
                [AGENTHOST, "daemon", "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert second.returncode == 1
            assert (
                f"state_dir {tmp_path / 'state'} is in use by another daemon (pid {first.pid})"
                in second.stderr
            )
            assert first.poll() is None
        finally:
            first.terminate()
            first.wait(30)

    def test_a_second_server_on_a_busy_port_fails_clearly(self, tmp_path: Path) -> None:
        import socket

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            path = daemon_config(tmp_path, local_agents(1, base_port=45900))
            result = subprocess.run(
                [AGENTHOST, "daemon", "--config", str(path), "--listen", f"127.0.0.1:{port}"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert result.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr


class TestNothingGrowsWithoutBound:
    async def test_a_daemon_with_records_past_4mib_registers_and_lists_in_pages(
        self, tmp_path: Path
    ) -> None:
        big_env = {"BLOB": "b" * (100 << 10)}  # about 100 KiB per kernel record
        async with running_manager(manager_config(tmp_path, missed_heartbeats=50)) as manager:
            path = linked_daemon_config(
                tmp_path,
                "big",
                manager.server.daemon_address,
                agents_toml(("g0", "default", 46000, "")),
                heartbeat=0.3,
            )
            text = path.read_text().replace(
                "port_range = [46000, 46009]", "port_range = [46000, 46199]"
            )
            path.write_text(text)
            # Kernels made before the daemon registers: its first registration holds them all.
            async with running_daemon(path) as d:
                for start in range(0, 60, 20):
                    await d.stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id="g0",
                            kernels=[
                                sleeper(f"b{i}", env=big_env) for i in range(start, start + 20)
                            ],
                        )
                    )

                async def all_listed() -> bool:
                    seen, token = [], ""
                    while True:
                        reply = await manager.stub.ListKernels(
                            mpb.ManagerListKernelsRequest(page_size=7, page_token=token)
                        )
                        seen += [k.kernel.kernel_id for k in reply.kernels]
                        token = reply.next_page_token
                        if not token:
                            return sorted(seen) == sorted(f"b{i}" for i in range(60))

                await eventually(all_listed, timeout=30)
                # More than one gRPC message's worth of records went across; the
                # daemon's own listing pages by bytes as well as by count.
                sizes, token = [], ""
                while True:
                    reply = await d.stub.ListKernels(pb.ListKernelsRequest(page_token=token))
                    sizes.append(sum(k.ByteSize() for k in reply.kernels))
                    token = reply.next_page_token
                    if not token:
                        break
                assert sum(sizes) > 4 << 20 and len(sizes) > 1
                assert all(size <= 3 << 20 for size in sizes)

    async def test_terminated_kernels_are_pruned_so_listings_stay_bounded(
        self, tmp_path: Path
    ) -> None:
        async with running_manager(manager_config(tmp_path, kernel_retention=0.5)) as manager:
            path = linked_daemon_config(
                tmp_path,
                "d",
                manager.server.daemon_address,
                agents_toml(("p0", "default", 46300, "")),
            )
            async with running_daemon(path):
                await eventually(lambda: agents_by_id(manager.stub))
                k = await create(manager.stub, pb.KernelSpec(kernel_id="short", command=["true"]))
                assert k.kernel.kernel_id == "short"

                async def gone() -> bool:
                    reply = await manager.stub.ListKernels(mpb.ManagerListKernelsRequest())
                    return not reply.kernels

                await eventually(gone, timeout=30)
