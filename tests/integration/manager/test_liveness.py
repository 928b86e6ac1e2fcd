"""Liveness: a daemon killed with kill -9 is LOST; restarted, ALIVE and reconciled.

The daemons are real `agenthost daemon` processes heartbeating every 0.2 s to a
real manager (in this process) that allows three missed heartbeats. Waits poll
for the outcome; no test asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.managers import (
    agents_by_id,
    agents_toml,
    create,
    daemon_process_off_loop,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    pid_of,
    reap,
    run,
    running_manager,
)
from tests.servers import eventually, sleeper

ALIVE, LOST = mpb.AGENT_STATUS_ALIVE, mpb.AGENT_STATUS_LOST


class TestDaemonLoss:
    async def test_killed_daemon_is_lost_then_alive_again_with_kernels_reconciled(
        self, tmp_path: Path
    ) -> None:
        created: list[pb.Kernel] = []
        async with running_manager(manager_config(tmp_path, missed_heartbeats=3)) as manager:
            stub = manager.stub
            doomed_cfg = linked_daemon_config(
                tmp_path,
                "doomed",
                manager.address,
                agents_toml(("l0", "default", 47300, ""), ("l1", "batch", 47310, "")),
            )
            steady_cfg = linked_daemon_config(
                tmp_path, "steady", manager.address, agents_toml(("s0", "default", 47320, ""))
            )
            try:
                async with (
                    daemon_process_off_loop(doomed_cfg) as doomed,
                    daemon_process_off_loop(steady_cfg, "--destroy-kernels-on-exit"),
                ):

                    async def all_alive() -> bool:
                        agents = await agents_by_id(stub)
                        return len(agents) == 3 and {a.status for a in agents.values()} == {ALIVE}

                    await eventually(all_alive)
                    for spec, agent_id in (
                        (sleeper("keep"), "l0"),
                        (sleeper("dies"), "l0"),
                        (sleeper("batch"), "l1"),
                        (sleeper("elsewhere"), "s0"),
                    ):
                        created.append((await create(stub, spec, agent_id=agent_id)).kernel)

                    await asyncio.to_thread(doomed.kill9)

                    async def lost() -> dict[str, mpb.ManagedAgent] | None:
                        agents = await agents_by_id(stub)
                        return agents if agents["l0"].status == LOST else None

                    agents = await eventually(lost)
                    assert agents["l1"].status == LOST
                    assert agents["s0"].status == ALIVE
                    kernels = await kernels_by_id(stub)
                    states = {k: v.kernel.state for k, v in kernels.items()}
                    assert states == {
                        "keep": pb.KERNEL_STATE_UNKNOWN,
                        "dies": pb.KERNEL_STATE_UNKNOWN,
                        "batch": pb.KERNEL_STATE_UNKNOWN,
                        "elsewhere": pb.KERNEL_STATE_RUNNING,
                    }

                    # A LOST agent takes no calls and no kernels; the others go on.
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await run(stub, "keep", ["true"])
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    assert "agent 'l0' is LOST" in (err.value.details() or "")
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await create(stub, sleeper(), agent_id="l0")
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await create(stub, sleeper(), "batch")
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                    fresh = await create(stub, sleeper("fresh"))
                    created.append(fresh.kernel)
                    assert fresh.kernel.agent_id == "s0"

                    # While the daemon is down one of its kernels dies.
                    os.killpg(pid_of(created[1]), signal.SIGKILL)

                    async with daemon_process_off_loop(
                        doomed_cfg, "--destroy-kernels-on-exit"
                    ) as again:

                        async def back() -> dict[str, mpb.ManagedAgent] | None:
                            agents = await agents_by_id(stub)
                            alive = all(agents[a].status == ALIVE for a in ("l0", "l1"))
                            return agents if alive else None

                        agents = await eventually(back)
                        assert agents["l0"].daemon_address == again.address
                        kernels = await kernels_by_id(stub)
                        assert {k: v.kernel.state for k, v in kernels.items()} == {
                            "keep": pb.KERNEL_STATE_RUNNING,
                            "dies": pb.KERNEL_STATE_TERMINATED,
                            "batch": pb.KERNEL_STATE_RUNNING,
                            "elsewhere": pb.KERNEL_STATE_RUNNING,
                            "fresh": pb.KERNEL_STATE_RUNNING,
                        }
                        assert kernels["keep"].daemon_address == again.address
                        out, _, code = await run(stub, "keep", ["sh", "-c", "echo back"])
                        assert (out, code) == (b"back\n", 0)
                        # The agent takes kernels again.
                        created.append((await create(stub, sleeper(), "batch")).kernel)
                        assert await asyncio.to_thread(again.terminate) == 0
            finally:
                reap(created)
