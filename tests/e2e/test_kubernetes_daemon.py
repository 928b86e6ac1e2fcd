"""The real `agenthost daemon` with a kubernetes agent, run as a DaemonSet runs it.

The node's name comes from the environment (`AGENTHOST_DAEMON_NODE`, which the
DaemonSet fills from the downward API), not from the file; the agent binds its
pods to that node. Killed with -9 and started again, the daemon re-adopts the pod.
The API server is the stand-in of `tests/kubeapi/`, in a thread of this process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.kubeapi import RunsCommand, ThreadedStandin, standin_in_thread
from tests.servers import daemon_config, daemon_process, execute, sleeper

AGENTS = """
[[agents]]
id = "k0"
backend = "kubernetes"
port_range = [45200, 45299]
resources = { memory = "1GiB" }
kubernetes = { kubeconfig = "kubeconfig", default_image = "agenthost-test-python:latest" }
"""


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[ThreadedStandin]:
    with standin_in_thread(nodes=("node-a",)) as api:
        api.set_behaviour(RunsCommand())
        api.kubeconfig(tmp_path / "kubeconfig")
        yield api


async def test_the_node_from_the_environment_binds_the_pods_and_survives_kill_9(
    tmp_path: Path, standin: ThreadedStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTHOST_DAEMON_NODE", "node-a")
    path = daemon_config(tmp_path, AGENTS)
    with daemon_process(path) as first:
        async with grpc.aio.insecure_channel(first.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            reply = await stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="k0", kernels=[sleeper("k")])
            )
        [kernel] = reply.kernels
        first.kill9()
    [pod] = standin.pods("default")
    assert pod["spec"]["nodeName"] == "node-a"
    assert kernel.backend_ref.startswith(f"pod default/{pod['metadata']['name']} ")

    with daemon_process(path) as second:
        async with grpc.aio.insecure_channel(second.address) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            got = await stub.GetKernel(pb.GetKernelRequest(agent_id="k0", kernel_id="k"))
            assert (got.kernel.state, got.kernel.backend_ref) == (
                pb.KERNEL_STATE_RUNNING,
                kernel.backend_ref,
            )
            _, out, _, exit_ = await execute(
                stub, "k0", "k", ["sh", "-c", "echo $AGENTHOST_KERNEL_ID"]
            )
            assert (out, exit_.exit_code) == (b"k\n", 0)
            await stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="k0", kernel_id="k"))
        assert second.terminate() == 0
    assert standin.pods("default") == []
