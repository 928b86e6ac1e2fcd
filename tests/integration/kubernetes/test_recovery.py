"""A restarted daemon and the pods it finds: re-adopted, ended meanwhile, or nobody's.

Ownership is by label (daemon identity, agent id) and node: a pod labelled as this
daemon's and agent's that no kernel owns is deleted; a pod of another agent, of
another daemon, or of the same identity on another node (a DaemonSet runs one
configuration on every node) is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID
from protos import agent_pb2 as pb
from tests.integration.kubernetes.conftest import NAMESPACE, NODE, kube_agent, pod_name
from tests.kubeapi import ThreadedStandin
from tests.kubeapi.fixtures import pod_body
from tests.servers import DaemonFactory, agent_info, create, eventually, get, identity_of, sleeper

AGENTS = kube_agent("k0", 44100)


def labelled_pod(
    api: ThreadedStandin, name: str, identity: str, agent_id: str, node: str = NODE
) -> None:
    """A pod carrying ownership labels, created behind the daemon's back."""
    labels = {LABEL_DAEMON: identity, LABEL_AGENT_ID: agent_id, LABEL_KERNEL_ID: name}
    body: dict[str, Any] = pod_body(name, command=["sleep", "300"], labels=labels, node_name=node)
    with client.ApiClient(api.configuration()) as api_client:
        client.CoreV1Api(api_client).create_namespaced_pod(NAMESPACE, body)


class TestRecovery:
    async def test_pods_nobody_owns_are_deleted_and_no_one_elses(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin, tmp_path: Path
    ) -> None:
        identity = identity_of(tmp_path)
        standin.add_node("other-node")
        labelled_pod(standin, "ghost", identity, "k0")
        labelled_pod(standin, "other-agent", identity, "k1")
        labelled_pod(standin, "other-daemon", "0000000000", "k0")
        labelled_pod(standin, "other-node", identity, "k0", node="other-node")
        async with start_daemon(AGENTS):
            assert await eventually(lambda: standin.get_pod(NAMESPACE, "ghost") is None)
            names = {p["metadata"]["name"] for p in standin.pods(NAMESPACE)}
            assert names == {"other-agent", "other-daemon", "other-node"}

    async def test_a_kernel_whose_pod_ended_while_the_daemon_was_down_is_terminated(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        async with start_daemon(AGENTS, destroy_kernels=False) as first:
            [kernel] = await create(first.stub, "k0", sleeper("k"))
        pod = pod_name(kernel.backend_ref)
        standin.exit_pod(NAMESPACE, pod, 0)
        async with start_daemon(AGENTS) as second:
            ended = await get(second.stub, "k0", "k")
            assert ended.state == pb.KERNEL_STATE_TERMINATED
            assert ended.status_message == "ended while the daemon was down"
            assert (await agent_info(second.stub, "k0")).kernel_count == 0
            assert await eventually(lambda: standin.get_pod(NAMESPACE, pod) is None)
