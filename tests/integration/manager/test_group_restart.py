"""Groups survive a manager killed with kill -9: kept, and reconciled on by the new one.

A real `agenthost manager` process and two real `agenthost daemon` processes. One
group is Running (its worker restarts OnFailure), one is Starting (its coordinator
waits for a file). After kill -9 and a restart both are listed at once; the
Starting one goes on to Running when its file appears, and the restarted manager
heals the Running one's worker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import yaml

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import (
    admin_token,
    agents_by_id,
    agents_toml,
    free_port,
    kernels_by_id,
    linked_daemon_config,
    manager_config,
    manager_process,
    pid_of,
    reap,
    user_channel,
)
from tests.servers import daemon_process, eventually, visible_to_kernels

RUNNING, STARTING = mpb.GROUP_PHASE_RUNNING, mpb.GROUP_PHASE_STARTING


def document(name: str, coordinator_readiness: dict[str, Any] | None = None) -> str:
    coordinator: dict[str, Any] = {
        "name": "coordinator",
        "coordinator": True,
        "kernel": {"command": ["sleep", "300"]},
    }
    if coordinator_readiness:
        coordinator["readiness"] = coordinator_readiness
    worker = {
        "name": "worker",
        "dependsOn": ["coordinator"],
        "restartPolicy": "OnFailure",
        "kernel": {"command": ["sleep", "300"]},
    }
    return yaml.safe_dump(
        {
            "apiVersion": "agenthost.io/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": name},
            "spec": {"roles": [coordinator, worker]},
        }
    )


async def group_of(stub: Any, name: str) -> mpb.Group:
    return (await stub.GetGroup(mpb.GetGroupRequest(name=name))).group  # type: ignore[no-any-return]


class TestGroupsAcrossAManagerRestart:
    async def test_kill_9_keeps_every_group_and_reconciling_goes_on(self, tmp_path: Path) -> None:
        address = f"127.0.0.1:{free_port()}"
        config = manager_config(tmp_path, listen=address, missed_heartbeats=10)
        flag = visible_to_kernels(tmp_path) / "go"
        d1 = linked_daemon_config(
            tmp_path, "d1", address, agents_toml(("x0", "default", 48700, ""))
        )
        d2 = linked_daemon_config(
            tmp_path, "d2", address, agents_toml(("x1", "default", 48710, ""))
        )
        seen: list[pb.Kernel] = []
        try:
            with (
                daemon_process(d1, "--destroy-kernels-on-exit"),
                daemon_process(d2, "--destroy-kernels-on-exit"),
            ):
                with manager_process(config) as first:
                    async with user_channel(first.address, admin_token()) as channel:
                        stub = manager_pb2_grpc.ManagerServiceStub(channel)

                        async def registered() -> bool:
                            return len(await agents_by_id(stub)) == 2

                        await eventually(registered, timeout=30)
                        await stub.CreateGroup(mpb.CreateGroupRequest(document=document("run")))
                        waiting = {"exec": ["test", "-e", str(flag)], "timeout": "5m"}
                        await stub.CreateGroup(
                            mpb.CreateGroupRequest(document=document("wait", waiting))
                        )

                        async def settled() -> bool:
                            run = await group_of(stub, "run")
                            wait = await group_of(stub, "wait")
                            coordinator = wait.status.members[0]
                            return run.status.phase == RUNNING and coordinator.message.startswith(
                                "not ready"
                            )

                        await eventually(settled, timeout=30)
                        before = await group_of(stub, "run")
                        seen += [k.kernel for k in (await kernels_by_id(stub)).values()]
                    first.kill9()

                with manager_process(config) as second:
                    async with user_channel(second.address, admin_token()) as channel:
                        stub = manager_pb2_grpc.ManagerServiceStub(channel)
                        groups = (await stub.ListGroups(mpb.ListGroupsRequest())).groups
                        phases = {g.name: g.status.phase for g in groups}
                        assert phases == {"run": RUNNING, "wait": STARTING}
                        after = await group_of(stub, "run")
                        assert [m.kernel_id for m in after.status.members] == [
                            m.kernel_id for m in before.status.members
                        ]

                        flag.touch()

                        async def started() -> bool:
                            return (await group_of(stub, "wait")).status.phase == RUNNING

                        await eventually(started, timeout=30)

                        old = after.status.members[1]
                        kernels = await kernels_by_id(stub)
                        os.killpg(pid_of(kernels[old.kernel_id].kernel), signal.SIGKILL)

                        async def healed() -> mpb.Group | None:
                            group = await group_of(stub, "run")
                            worker = group.status.members[1]
                            ok = (
                                group.status.phase == RUNNING
                                and worker.restarts == 1
                                and worker.ready
                            )
                            return group if ok else None

                        group = await eventually(healed, timeout=30)
                        assert group.status.members[1].kernel_id != old.kernel_id
                        seen += [k.kernel for k in (await kernels_by_id(stub)).values()]
                        for name in ("run", "wait"):
                            await stub.DeleteGroup(mpb.DeleteGroupRequest(name=name))
                        assert await kernels_by_id(stub) == {}
                    assert second.terminate() == 0
        finally:
            reap(seen)
