"""The manager's user API over real gRPC, with one real daemon behind it.

Execute streamed through, logs, get/destroy, bad input with the right codes and
no half-made state, health and reflection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    create,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    run,
    running_manager,
)
from tests.servers import Daemon, eventually, kernels_dir_of, running_daemon, sleeper


@dataclass
class Setup:
    manager: Manager
    daemon: Daemon
    tmp_path: Path


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_manager(manager_config(tmp_path, missed_heartbeats=50)) as manager:
        agents = agents_toml(
            ("e0", "default", 47200, 'resources = { memory = "1GiB" }'),
            ("e1", "default", 47210, 'resources = { memory = "1GiB" }'),
        )
        path = linked_daemon_config(tmp_path, "d", manager.address, agents)
        async with running_daemon(path) as daemon:

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 2

            await eventually(registered)
            yield Setup(manager, daemon, tmp_path)


def code_of(err: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> grpc.StatusCode:
    return err.value.code()


class TestExecute:
    async def test_output_streams_through_as_produced_then_the_exit_code(
        self, setup: Setup
    ) -> None:
        stub = setup.manager.stub
        await create(stub, sleeper("k1"))
        # Where the kernel (a uid of its own, which cannot search tmp_path) can see it.
        go = kernels_dir_of(setup.tmp_path / "d") / "go"
        # The command waits for a file the test creates only after it has received
        # the first line through the manager: a buffered relay would never finish.
        script = f"echo one; while [ ! -e {go} ]; do sleep 0.02; done; echo two >&2; exit 3"
        call = stub.Execute(pb.ExecuteRequest(kernel_id="k1", argv=["sh", "-c", script]))
        first = await call.read()
        assert first.stdout == b"one\n"
        go.touch()
        rest = []
        while (message := await call.read()) is not grpc.aio.EOF:
            rest.append(message)
        assert b"".join(m.stderr for m in rest) == b"two\n"
        assert rest[-1].HasField("exit") and rest[-1].exit.exit_code == 3

    async def test_execute_with_stdin_and_the_kernels_environment(self, setup: Setup) -> None:
        stub = setup.manager.stub
        k = await create(stub, sleeper("k1"), agent_id="e1")
        out, _, code = await run(stub, "k1", ["sh", "-c", "echo $AGENTHOST_AGENT_ID"])
        assert (out, code) == (b"e1\n", 0)
        messages = [
            m
            async for m in stub.Execute(
                pb.ExecuteRequest(kernel_id="k1", argv=["cat"], stdin=b"through the manager")
            )
        ]
        assert b"".join(m.stdout for m in messages) == b"through the manager"
        assert k.kernel.agent_id == "e1"

    async def test_execute_with_the_wrong_agent_id_is_not_found(self, setup: Setup) -> None:
        await create(setup.manager.stub, sleeper("k1"), agent_id="e0")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run_with_agent(setup, "k1", "e1")
        assert code_of(err) == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "kernel 'k1' is on agent 'e0', not 'e1'"

    async def test_execute_in_an_unknown_kernel_is_not_found(self, setup: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await run(setup.manager.stub, "nope", ["true"])
        assert code_of(err) == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "kernel 'nope' is not known to the manager"


async def run_with_agent(setup: Setup, kernel_id: str, agent_id: str) -> None:
    async for _ in setup.manager.stub.Execute(
        pb.ExecuteRequest(kernel_id=kernel_id, agent_id=agent_id, argv=["true"])
    ):
        pass


class TestKernels:
    async def test_logs_get_and_destroy_go_to_the_kernels_daemon(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(
            stub, pb.KernelSpec(kernel_id="k1", command=["sh", "-c", "echo hello; exec sleep 300"])
        )

        async def logged() -> bool:
            logs = await stub.GetKernelLogs(pb.GetKernelLogsRequest(kernel_id="k1"))
            return logs.logs == b"hello\n"

        await eventually(logged)
        got = (await stub.GetKernel(pb.GetKernelRequest(kernel_id="k1"))).kernel
        assert got.kernel.state == pb.KERNEL_STATE_RUNNING
        assert got.daemon_address == setup.daemon.server.address
        destroyed = (await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k1"))).kernel
        assert destroyed.kernel.state == pb.KERNEL_STATE_TERMINATED
        assert await kernels_by_id(stub) == {}
        assert setup.daemon.server.runtime.list_kernels("") == []
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetKernel(pb.GetKernelRequest(kernel_id="k1"))
        assert code_of(err) == grpc.StatusCode.NOT_FOUND

    async def test_a_kernel_that_exits_is_seen_terminated_with_its_code(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(stub, pb.KernelSpec(kernel_id="k1", command=["sh", "-c", "exit 4"]))

        async def ended() -> mpb.ManagedKernel | None:
            k = (await kernels_by_id(stub))["k1"]
            return k if k.kernel.state == pb.KERNEL_STATE_TERMINATED else None

        k = await eventually(ended)
        assert k.kernel.exit_code == 4

    async def test_a_kernel_created_on_the_daemon_directly_is_adopted(self, setup: Setup) -> None:
        await setup.daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="e0", kernels=[sleeper("direct")])
        )

        async def adopted() -> bool:
            return "direct" in await kernels_by_id(setup.manager.stub)

        await eventually(adopted)
        k = (await kernels_by_id(setup.manager.stub))["direct"]
        assert (k.kernel.agent_id, k.daemon_address) == ("e0", setup.daemon.server.address)

    async def test_a_kernel_destroyed_on_the_daemon_directly_becomes_terminated(
        self, setup: Setup
    ) -> None:
        await create(setup.manager.stub, sleeper("k1"), agent_id="e0")
        await setup.daemon.stub.DestroyKernel(
            pb.DestroyKernelRequest(agent_id="e0", kernel_id="k1")
        )

        async def terminated() -> bool:
            k = (await kernels_by_id(setup.manager.stub))["k1"]
            return k.kernel.state == pb.KERNEL_STATE_TERMINATED

        await eventually(terminated)
        # Forgetting it is then a manager-only matter.
        await setup.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k1"))
        assert await kernels_by_id(setup.manager.stub) == {}


class TestBadInput:
    async def test_a_failed_create_on_the_daemon_releases_the_reservation(
        self, setup: Setup
    ) -> None:
        stub = setup.manager.stub
        big = pb.ResourceRequest(memory_bytes=1 << 30)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(
                stub,
                pb.KernelSpec(kernel_id="bad", command=["/no/such"], resources=big),
                agent_id="e0",
            )
        assert code_of(err) == grpc.StatusCode.INVALID_ARGUMENT
        assert "/no/such" in (err.value.details() or "")
        assert await kernels_by_id(stub) == {}
        # The whole agent is still free: a kernel taking all of it lands there.
        ok = await create(stub, sleeper("good", resources=big), agent_id="e0")
        assert ok.kernel.agent_id == "e0"

    @pytest.mark.parametrize(
        ("request_", "code", "message"),
        [
            (
                mpb.CreateKernelRequest(spec=sleeper("bad id")),
                grpc.StatusCode.INVALID_ARGUMENT,
                "kernel_id 'bad id' is not valid: 1-63 characters of letters, digits, '_', "
                "'.', '-', starting with a letter or digit",
            ),
            (
                mpb.CreateKernelRequest(spec=sleeper(), agent_id="zz"),
                grpc.StatusCode.NOT_FOUND,
                "agent 'zz' is not registered with the manager; known: e0, e1",
            ),
            (
                mpb.CreateKernelRequest(spec=sleeper(), agent_id="e0", scaling_group="batch"),
                grpc.StatusCode.INVALID_ARGUMENT,
                "agent 'e0' is in scaling group 'default', not 'batch'; give one or the other",
            ),
            (
                mpb.CreateKernelRequest(spec=sleeper(), scaling_group="gpu"),
                grpc.StatusCode.FAILED_PRECONDITION,
                "no agent is in scaling group 'gpu'; groups: default (2 agents)",
            ),
            (
                mpb.CreateKernelRequest(
                    spec=sleeper(resources=pb.ResourceRequest(cpu_count=1, cores=[0]))
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                "resources: give cpu_count or cores, not both",
            ),
        ],
        ids=[
            "bad kernel id",
            "unknown agent",
            "pin contradicts group",
            "unknown group",
            "bad shape",
        ],
    )
    async def test_bad_create_is_refused_and_changes_nothing(
        self, setup: Setup, request_: mpb.CreateKernelRequest, code: grpc.StatusCode, message: str
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await setup.manager.stub.CreateKernel(request_)
        assert (code_of(err), err.value.details()) == (code, message)
        assert await kernels_by_id(setup.manager.stub) == {}
        assert setup.daemon.server.runtime.list_kernels("") == []

    async def test_duplicate_kernel_id_already_exists(self, setup: Setup) -> None:
        await create(setup.manager.stub, sleeper("k1"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(setup.manager.stub, sleeper("k1"))
        assert code_of(err) == grpc.StatusCode.ALREADY_EXISTS
        assert len(await kernels_by_id(setup.manager.stub)) == 1

    async def test_an_agent_id_of_another_daemon_is_permission_denied_naming_it(
        self, setup: Setup
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await setup.manager.stub.RegisterAgents(
                mpb.RegisterAgentsRequest(
                    daemon_address="127.0.0.1:1",
                    node="other",
                    daemon_id="other/x",
                    agents=[pb.AgentInfo(agent_id="e0")],
                )
            )
        assert code_of(err) == grpc.StatusCode.PERMISSION_DENIED
        assert "agent 'e0' belongs to daemon" in (err.value.details() or "")

    async def test_heartbeat_without_a_session_is_not_found(self, setup: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await setup.manager.stub.Heartbeat(
                mpb.HeartbeatRequest(daemon_address="127.0.0.1:1", session_id="x")
            )
        assert code_of(err) == grpc.StatusCode.NOT_FOUND

    async def test_list_kernels_of_an_unknown_agent_is_not_found(self, setup: Setup) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await setup.manager.stub.ListKernels(mpb.ManagerListKernelsRequest(agent_id="zz"))
        assert code_of(err) == grpc.StatusCode.NOT_FOUND


class TestServing:
    async def test_health_and_reflection(self, setup: Setup) -> None:
        channel = setup.manager.channel
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agenthost.v1.ManagerService"):
            response = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for r in responses for s in r.list_services_response.service}
        assert "agenthost.v1.ManagerService" in names

    async def test_list_filters_by_agent_and_scaling_group(self, setup: Setup) -> None:
        stub = setup.manager.stub
        await create(stub, sleeper("k0"), agent_id="e0")
        await create(stub, sleeper("k1"), agent_id="e1")
        only_e1 = await stub.ListKernels(mpb.ManagerListKernelsRequest(agent_id="e1"))
        assert [k.kernel.kernel_id for k in only_e1.kernels] == ["k1"]
        in_batch = await stub.ListKernels(mpb.ManagerListKernelsRequest(scaling_group="batch"))
        assert list(in_batch.kernels) == []
        agents = await stub.ListAgents(mpb.ManagerListAgentsRequest(scaling_group="default"))
        assert [a.info.agent_id for a in agents.agents] == ["e0", "e1"]
