"""Docker backend benchmarks: the daemon against bare aiodocker, side by side in one run.

1. Kernel create plus destroy through the daemon (CreateKernels, then
   DestroyKernel, over gRPC to the real `agenthost daemon` process) against bare
   aiodocker create/start/remove of the same container config from this process.
   Target: within 1.15x.
2. 20 concurrent creates across two docker agents (20 CreateKernels calls, 10
   per agent) against 20 concurrent bare aiodocker create+start. Target: within
   1.2x.

Both sides use the same engine, image and container config (cpuset, memory limit,
labels, command); the daemon destroys with kill_grace = 0, the bare side removes
with force, so both end the container the same way. Repetitions alternate which
side goes first so that drift cancels; figures are medians, and each ratio is the
median of the per-repetition ratios. Needs a Docker engine and the test image
(`bash scripts/docker-up.sh`).

    .venv/bin/python benchmarks/bench_docker.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiodocker
import grpc

from common.ids import AgentId, KernelId
from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID, LaunchSpec
from daemon.backends.docker.engine import resolve_url
from daemon.backends.docker.spec import container_config
from daemon.state_dir import daemon_identity
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import DaemonProcess

IMAGE = "agenthost-test-python:latest"
MEMORY = 2 << 30
BARE_IDENTITY = "bench-bare"
COMMAND = ("sleep", "300")


def config_text(state_dir: Path) -> str:
    agents = "".join(
        f"""
        [[agents]]
        id = "d{i}"
        backend = "docker"
        port_range = [{43000 + 100 * i}, {43099 + 100 * i}]
        resources = {{ cpus = [{i}], memory = "2GiB" }}
        kill_grace = 0
        docker = {{ default_image = "{IMAGE}" }}
        """
        for i in range(2)
    )
    return textwrap.dedent(
        f"""\
        [daemon]
        listen = "127.0.0.1:0"
        state_dir = "{state_dir}"
        allocation_mode = "manual"
        reconcile_interval = 5
        """
    ) + textwrap.dedent(agents)


def bare_config(agent_id: str, core: int, kernel_id: str) -> dict[str, Any]:
    """The config the daemon sends for the same kernel, under another daemon identity."""
    launch = LaunchSpec(
        agent_id=AgentId(agent_id),
        kernel_id=KernelId(kernel_id),
        image=IMAGE,
        command=COMMAND,
        env={
            "AGENTHOST_AGENT_ID": agent_id,
            "AGENTHOST_KERNEL_ID": kernel_id,
            "AGENTHOST_DAEMON": BARE_IDENTITY,
        },
        labels={
            LABEL_AGENT_ID: agent_id,
            LABEL_KERNEL_ID: kernel_id,
            LABEL_DAEMON: BARE_IDENTITY,
        },
        workdir=Path("/nonexistent"),
        cores=(core,),
        memory_limit=MEMORY,
    )
    return container_config(launch, IMAGE, "0.0.0.0", init=False, stop_timeout=10)


async def timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def remove_labelled(docker: aiodocker.Docker, identity: str) -> None:
    filters = json.dumps({"label": [f"{LABEL_DAEMON}={identity}"]})
    for c in await docker._query_json("containers/json", params={"all": True, "filters": filters}):
        await docker.containers.container(c["Id"]).delete(force=True)


async def main(quick: bool) -> int:
    pairs = 6 if quick else 20
    rounds = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        state = Path(tmp) / "state"
        config = Path(tmp) / "daemon.toml"
        config.write_text(config_text(state))
        daemon_id = daemon_identity(state)
        daemon = DaemonProcess(config)
        docker = aiodocker.Docker(url=resolve_url(None))
        channel = grpc.aio.insecure_channel(daemon.address)
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        counter = 0

        def next_id() -> str:
            nonlocal counter
            counter += 1
            return f"b{counter}"

        async def through_daemon(agent: str) -> None:
            kernel_id = next_id()
            spec = pb.KernelSpec(kernel_id=kernel_id, command=list(COMMAND))
            await stub.CreateKernels(pb.CreateKernelsRequest(agent_id=agent, kernels=[spec]))
            await stub.DestroyKernel(pb.DestroyKernelRequest(agent_id=agent, kernel_id=kernel_id))

        async def bare_create(agent: str, core: int) -> aiodocker.containers.DockerContainer:
            kernel_id = next_id()
            container = await docker.containers.create(
                bare_config(agent, core, kernel_id), name=f"bench-bare-{agent}-{kernel_id}"
            )
            await container.start()
            return container

        async def bare() -> None:
            container = await bare_create("d0", 0)
            await container.delete(force=True)

        async def daemon_batch() -> None:
            replies = await asyncio.gather(
                *(
                    stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id=f"d{i % 2}",
                            kernels=[pb.KernelSpec(kernel_id=next_id(), command=list(COMMAND))],
                        )
                    )
                    for i in range(20)
                )
            )
            created.extend((r.kernels[0].agent_id, r.kernels[0].kernel_id) for r in replies)

        async def bare_batch() -> None:
            bare_created.extend(
                await asyncio.gather(*(bare_create(f"d{i % 2}", i % 2) for i in range(20)))
            )

        created: list[tuple[str, str]] = []
        bare_created: list[aiodocker.containers.DockerContainer] = []
        try:
            # Warm up both paths (image layers, connections, the daemon's event streams).
            for _ in range(2):
                await through_daemon("d0")
                await bare()

            daemon_times, bare_times, ratios = [], [], []
            for i in range(pairs):
                if i % 2:
                    b = await timed(bare)
                    d = await timed(lambda: through_daemon("d0"))
                else:
                    d = await timed(lambda: through_daemon("d0"))
                    b = await timed(bare)
                daemon_times.append(d)
                bare_times.append(b)
                ratios.append(d / b)
            one = statistics.median(ratios)

            batch_daemon, batch_bare, batch_ratios = [], [], []
            for i in range(rounds):
                order = [("daemon", daemon_batch), ("bare", bare_batch)]
                if i % 2:
                    order.reverse()
                took: dict[str, float] = {}
                for label, action in order:
                    took[label] = await timed(action)
                    await asyncio.gather(
                        *(
                            stub.DestroyKernel(pb.DestroyKernelRequest(agent_id=a, kernel_id=k))
                            for a, k in created
                        ),
                        *(c.delete(force=True) for c in bare_created),
                    )
                    created.clear()
                    bare_created.clear()
                batch_daemon.append(took["daemon"])
                batch_bare.append(took["bare"])
                batch_ratios.append(took["daemon"] / took["bare"])
            many = statistics.median(batch_ratios)
        finally:
            await channel.close(None)
            daemon.terminate(30)
            daemon.close()
            await remove_labelled(docker, BARE_IDENTITY)
            await remove_labelled(docker, daemon_id)
            await docker.close()

    ms = 1000
    print("docker backend benchmarks (one engine, same image and container config)")
    print(
        f"1. create+destroy, {pairs} pairs: daemon median "
        f"{statistics.median(daemon_times) * ms:.1f} ms, bare aiodocker median "
        f"{statistics.median(bare_times) * ms:.1f} ms"
    )
    print(f"   ratio daemon/bare: {one:.3f}x (target <= 1.15x) {'ok' if one <= 1.15 else 'MISSED'}")
    print(
        f"2. 20 concurrent creates over 2 agents, {rounds} rounds: daemon median "
        f"{statistics.median(batch_daemon) * ms:.0f} ms, bare aiodocker median "
        f"{statistics.median(batch_bare) * ms:.0f} ms"
    )
    print(f"   ratio daemon/bare: {many:.3f}x (target <= 1.2x) {'ok' if many <= 1.2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
