"""The manager killed with kill -9 and restarted: nothing is lost and work goes on.

A real `agenthost manager` process and two real `agenthost daemon` processes. The
daemons keep serving while the manager is down, and register again when it is
back; the manager reconciles with what changed on them meanwhile.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    admin_token,
    agents_by_id,
    agents_toml,
    create,
    free_port,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    manager_process,
    reap,
    run,
    user_channel,
)
from tests.servers import daemon_process, eventually, sleeper

ALIVE = mpb.AGENT_STATUS_ALIVE


class TestManagerRestart:
    async def test_kill_9_and_restart_keeps_every_agent_and_kernel(self, tmp_path: Path) -> None:
        address = f"127.0.0.1:{free_port()}"
        config = manager_config(tmp_path, listen=address, missed_heartbeats=3)
        d1 = linked_daemon_config(
            tmp_path,
            "d1",
            address,
            agents_toml(("r0", "default", 47400, ""), ("r1", "default", 47410, "")),
        )
        d2 = linked_daemon_config(
            tmp_path,
            "d2",
            address,
            agents_toml(("r2", "default", 47420, ""), ("r3", "batch", 47430, "")),
        )
        created: list[pb.Kernel] = []
        try:
            with (
                daemon_process(d1, "--destroy-kernels-on-exit") as one,
                daemon_process(d2, "--destroy-kernels-on-exit") as two,
            ):
                with manager_process(config) as first:
                    async with user_channel(first.address, admin_token()) as channel:
                        stub = manager_pb2_grpc.ManagerServiceStub(channel)

                        async def all_alive() -> bool:
                            agents = await agents_by_id(stub)
                            return len(agents) == 4 and all(
                                a.status == ALIVE for a in agents.values()
                            )

                        await eventually(all_alive)
                        for i in range(6):
                            created.append((await create(stub, sleeper(f"k{i}"))).kernel)
                        before_agents = await agents_by_id(stub)
                        before_kernels = await kernels_by_id(stub)
                    first.kill9()

                # While the manager is down the daemons serve on: one kernel is
                # destroyed and one created directly on a daemon.
                victim = before_kernels["k0"]
                owner = one if victim.daemon_address == one.address else two
                async with grpc.aio.insecure_channel(owner.address) as channel:
                    await agent_pb2_grpc.AgentServiceStub(channel).DestroyKernel(
                        pb.DestroyKernelRequest(agent_id=victim.kernel.agent_id, kernel_id="k0")
                    )
                async with grpc.aio.insecure_channel(two.address) as channel:
                    direct = await agent_pb2_grpc.AgentServiceStub(channel).CreateKernels(
                        pb.CreateKernelsRequest(agent_id="r3", kernels=[sleeper("direct")])
                    )
                    created += direct.kernels

                with manager_process(config) as second:
                    assert second.address == address
                    async with user_channel(second.address, admin_token()) as channel:
                        stub = manager_pb2_grpc.ManagerServiceStub(channel)
                        # Everything is listed at once, from the manager's own store.
                        agents = await agents_by_id(stub)
                        assert set(agents) == set(before_agents)
                        for agent_id, agent in agents.items():
                            assert agent.daemon_address == before_agents[agent_id].daemon_address
                        assert set(before_kernels) <= set(await kernels_by_id(stub))

                        async def reconciled() -> dict[str, mpb.ManagedKernel] | None:
                            kernels = await kernels_by_id(stub)
                            agents = await agents_by_id(stub)
                            done = (
                                all(a.status == ALIVE for a in agents.values())
                                and "direct" in kernels
                                and kernels["k0"].kernel.state == pb.KERNEL_STATE_TERMINATED
                            )
                            return kernels if done else None

                        kernels = await eventually(reconciled)
                        for kernel_id in ("k1", "k2", "k3", "k4", "k5"):
                            assert kernels[kernel_id].kernel.state == pb.KERNEL_STATE_RUNNING
                            assert (
                                kernels[kernel_id].kernel.agent_id
                                == before_kernels[kernel_id].kernel.agent_id
                            )
                        assert kernels["direct"].kernel.agent_id == "r3"

                        # Operations go on.
                        out, _, code = await run(stub, "k1", ["sh", "-c", "echo still here"])
                        assert (out, code) == (b"still here\n", 0)
                        created.append((await create(stub, sleeper("after"), "batch")).kernel)
                        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k2"))
                        await stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="k0"))
                        remaining = await kernels_by_id(stub)
                        assert set(remaining) == {"k1", "k3", "k4", "k5", "direct", "after"}
                    assert second.terminate() == 0
                    assert "manager stopped" in second.log()
                assert one.terminate() == 0
                assert two.terminate() == 0
        finally:
            reap(created)

    def test_a_bad_config_starts_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "m.toml"
        path.write_text("[manager]\nscheduling_policy = 'random'\n")
        with pytest.raises(AssertionError) as err, manager_process(path):
            pass
        assert "unknown policy 'random'; valid: spread, pack" in str(err.value)
