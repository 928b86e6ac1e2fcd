"""Agent groups benchmark: 100 groups of 3 roles against the same 300 kernels made one by one.

A real `agenthost manager` and two real `agenthost daemon` processes (two local
agents each) run as processes; the client is this process.

- Kernels: 300 `sleep` kernels created one by one through the manager (sequential
  `CreateKernel` calls), timed until the last call returned.
- Groups: 100 `AgentGroup`s of 3 roles (coordinator <- worker <- tester: three
  waves, one member each, no readiness check) created with `CreateGroup` one by one,
  timed until every group is Running (polled with `ListGroups`). The manager's CPU
  time (all threads, psutil) during that phase, divided by the groups, is its CPU per
  group.

The two phases alternate which goes first over the repetitions; everything is
removed between phases. The ratio is groups / kernels (target: at most 1.3).

    .venv/bin/python benchmarks/bench_groups.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil
import yaml

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import (
    ManagerProcess,
    admin_token,
    agents_toml,
    linked_daemon_config,
    manager_config,
    user_channel,
)
from tests.servers import DaemonProcess

TIMEOUT = 60.0
Stub = manager_pb2_grpc.ManagerServiceStub


def group_document(name: str) -> str:
    def role(role_name: str, **fields: object) -> dict[str, object]:
        return {"name": role_name, "kernel": {"command": ["sleep", "3600"]}, **fields}

    return yaml.safe_dump(
        {
            "apiVersion": "agenthost.io/v1alpha1",
            "kind": "AgentGroup",
            "metadata": {"name": name},
            "spec": {
                "roles": [
                    role("coordinator", coordinator=True),
                    role("worker", dependsOn=["coordinator"]),
                    role("tester", dependsOn=["worker"]),
                ]
            },
        }
    )


async def kernels_one_by_one(stub: Stub, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        await stub.CreateKernel(
            mpb.CreateKernelRequest(
                spec=pb.KernelSpec(kernel_id=f"k{i}", command=["sleep", "3600"])
            ),
            timeout=TIMEOUT,
        )
    elapsed = time.perf_counter() - start
    listed = await stub.ListKernels(mpb.ManagerListKernelsRequest(), timeout=TIMEOUT)
    await asyncio.gather(
        *(
            stub.DestroyKernel(
                pb.DestroyKernelRequest(kernel_id=k.kernel.kernel_id), timeout=TIMEOUT
            )
            for k in listed.kernels
        )
    )
    return elapsed


async def groups_until_running(
    stub: Stub, count: int, manager: psutil.Process
) -> tuple[float, float]:
    cpu_before = sum(manager.cpu_times()[:2])
    start = time.perf_counter()
    for i in range(count):
        await stub.CreateGroup(
            mpb.CreateGroupRequest(document=group_document(f"bench{i}")), timeout=TIMEOUT
        )
    while True:
        groups = (await stub.ListGroups(mpb.ListGroupsRequest(), timeout=TIMEOUT)).groups
        phases = [g.status.phase for g in groups]
        if all(p == mpb.GROUP_PHASE_RUNNING for p in phases):
            break
        bad = [
            g.name
            for g in groups
            if g.status.phase in (mpb.GROUP_PHASE_FAILED, mpb.GROUP_PHASE_DEGRADED)
        ]
        if bad:
            raise SystemExit(f"groups failed: {bad[:5]}: {groups[0].status.message}")
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - start
    cpu = sum(manager.cpu_times()[:2]) - cpu_before
    await asyncio.gather(
        *(
            stub.DeleteGroup(mpb.DeleteGroupRequest(name=f"bench{i}"), timeout=TIMEOUT)
            for i in range(count)
        )
    )
    return elapsed, cpu / count


async def main(quick: bool) -> None:
    groups = 30 if quick else 100
    reps = 1 if quick else 2
    work = Path(tempfile.mkdtemp(prefix="bench-groups-"))
    config = manager_config(work, missed_heartbeats=20)
    manager = ManagerProcess(config)
    daemons = []
    try:
        for name, base in (("d1", 49000), ("d2", 49100)):
            path = linked_daemon_config(
                work,
                name,
                manager.address,
                agents_toml(
                    (f"{name}a", "default", base, ""), (f"{name}b", "default", base + 50, "")
                ),
                heartbeat=1.0,
            )
            daemons.append(DaemonProcess(path, "--destroy-kernels-on-exit"))
        proc = psutil.Process(manager.proc.pid)
        async with user_channel(manager.address, admin_token()) as channel:
            stub = manager_pb2_grpc.ManagerServiceStub(channel)
            for _ in range(200):
                agents = await stub.ListAgents(mpb.ManagerListAgentsRequest(), timeout=TIMEOUT)
                if len(agents.agents) == 4:
                    break
                await asyncio.sleep(0.05)
            kernel_times, group_times, cpu_per_group = [], [], []
            for rep in range(reps):
                order = ["kernels", "groups"] if rep % 2 == 0 else ["groups", "kernels"]
                for phase in order:
                    if phase == "kernels":
                        kernel_times.append(await kernels_one_by_one(stub, 3 * groups))
                    else:
                        elapsed, cpu = await groups_until_running(stub, groups, proc)
                        group_times.append(elapsed)
                        cpu_per_group.append(cpu)
                    print(f"  rep {rep + 1} {phase}: done", flush=True)
    finally:
        for daemon in daemons:
            daemon.terminate()
            daemon.close()
        manager.terminate()
        manager.close()
    ratio = statistics.median(g / k for g, k in zip(group_times, kernel_times, strict=True))
    print()
    print("| figure | value |")
    print("|---|---|")
    kernels_s = statistics.median(kernel_times)
    print(f"| {3 * groups} kernels one by one through the manager | {kernels_s:.2f} s |")
    print(
        f"| {groups} groups x 3 roles until all Running | {statistics.median(group_times):.2f} s |"
    )
    print(f"| ratio groups / kernels (target <= 1.3) | **{ratio:.3f}x** |")
    cpu_ms = statistics.median(cpu_per_group) * 1000
    print(f"| manager CPU per group (create, 3 waves, status writes) | {cpu_ms:.1f} ms |")
    print(f"| load average (1 min) | {psutil.getloadavg()[0]:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 groups, one repetition")
    asyncio.run(main(parser.parse_args().quick))
