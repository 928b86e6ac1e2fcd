"""The pods a kubernetes agent creates, and the creates that cannot succeed.

What the daemon sends is what the stand-in stored (it refuses bodies that fail the
official schemas); each test looks at it, or at what is left, behind the daemon's back.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID
from protos import agent_pb2 as pb
from tests.integration.kubernetes.conftest import (
    CORE,
    NAMESPACE,
    NODE,
    kube_agent,
    pod_name,
    pods_of,
)
from tests.kubeapi import StaysPending, ThreadedStandin, schemas
from tests.kubeapi.kubeconfig import write_kubeconfig
from tests.servers import (
    DaemonFactory,
    agent_info,
    create,
    eventually,
    identity_of,
    sleeper,
)

MIB = 1 << 20


async def refused(factory: DaemonFactory, agents: str, spec: pb.KernelSpec) -> grpc.aio.AioRpcError:
    """The error a create of spec on agent k0 ends with; nothing may be left held."""
    async with factory(agents) as d:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await create(d.stub, "k0", spec)
        info = await agent_info(d.stub, "k0")
        assert (list(info.occupied.cores), info.occupied.ports, info.kernel_count) == ([], 0, 0)
    return err.value


class TestThePod:
    async def test_carries_the_kernels_share_ports_env_labels_and_node(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin, tmp_path: Path
    ) -> None:
        spec = pb.KernelSpec(
            kernel_id="k",
            command=["sleep", "300"],
            env={"GREETING": "hi $(HOME)"},
            labels={"team": "ml"},
            resources=pb.ResourceRequest(cpu_count=1, memory_bytes=64 * MIB),
            ports=[pb.ServicePort(name="http", container_port=8080)],
        )
        agents = kube_agent("k0", 43200, extra=", run_as = 1000")
        async with start_daemon(agents) as d:
            [kernel] = await create(d.stub, "k0", spec)
            pod = standin.get_pod(NAMESPACE, pod_name(kernel.backend_ref))
        assert pod is not None
        report = schemas.validate(pod, "Pod")
        assert (report.decode_errors, report.causes, report.unknown_fields) == ([], [], [])
        assert pod["metadata"]["labels"] == {
            "team": "ml",
            LABEL_AGENT_ID: "k0",
            LABEL_KERNEL_ID: "k",
            LABEL_DAEMON: identity_of(tmp_path),
        }
        assert pod["spec"]["nodeName"] == NODE
        assert pod["spec"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000}
        assert pod["status"]["qosClass"] == "Guaranteed"
        [container] = pod["spec"]["containers"]
        amounts = {"cpu": "1", "memory": "64Mi"}
        assert container["resources"] == {"requests": amounts, "limits": amounts}
        port = kernel.ports["http"]
        assert container["ports"] == [
            {"name": "http", "containerPort": 8080, "hostPort": port, "protocol": "TCP"}
        ]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["GREETING"] == "hi $$(HOME)"  # reaches the kernel as written
        assert env["PORT_HTTP"] == str(port)
        assert env["AGENTHOST_KERNEL_ID"] == "k"
        assert list(kernel.allocated.cores) == [CORE]
        assert kernel.memory_limit == "kubernetes"


class TestRefusedCreates:
    async def test_an_image_that_cannot_be_pulled_is_failed_precondition(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin, tmp_path: Path
    ) -> None:
        standin.set_behaviour(
            StaysPending("ErrImagePull", "pull access denied"), labels={LABEL_KERNEL_ID: "bad"}
        )
        error = await refused(start_daemon, kube_agent("k0", 43300), sleeper("bad", image="x:9"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == (
            "kernel 'bad': image 'x:9' cannot be pulled on node 'standin-node': "
            "ErrImagePull: pull access denied"
        )
        assert await eventually(lambda: not pods_of(standin, tmp_path))

    async def test_a_pod_that_does_not_start_in_time_is_failed_precondition(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin, tmp_path: Path
    ) -> None:
        standin.set_behaviour(StaysPending("ContainerCreating"))
        agents = kube_agent("k0", 43400, extra=", start_timeout = 0.5")
        error = await refused(start_daemon, agents, sleeper("slow"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == (
            "kernel 'slow': its pod did not start within 0.5s (ContainerCreating); "
            "kubernetes.start_timeout sets how long a start may take"
        )
        assert await eventually(lambda: not pods_of(standin, tmp_path))

    async def test_a_kernel_without_an_image_is_invalid_argument(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        agents = kube_agent("k0", 43500).replace(
            ', default_image = "agenthost-test-python:latest"', ""
        )
        error = await refused(start_daemon, agents, sleeper("k"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "image: a kubernetes kernel needs an image (or set kubernetes.default_image for "
            "agent 'k0')"
        )

    async def test_a_namespace_that_does_not_exist_is_failed_precondition(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        agents = kube_agent("k0", 43600, extra=', namespace = "nowhere"')
        error = await refused(start_daemon, agents, sleeper("k"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == (
            f"agent 'k0': namespace 'nowhere' of the API server at {standin.url} does not "
            'exist (namespaces "nowhere" not found); create it, or set kubernetes.namespace'
        )

    async def test_a_label_kubernetes_refuses_is_invalid_argument(
        self, start_daemon: DaemonFactory, standin: ThreadedStandin
    ) -> None:
        error = await refused(
            start_daemon, kube_agent("k0", 43700), sleeper("k", labels={"team": "a b"})
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (error.details() or "").startswith("kernel 'k': labels: 'a b' is not a label value")


class TestCredentials:
    async def test_a_token_in_the_kubeconfig_is_sent(
        self, start_daemon: DaemonFactory, tmp_path: Path
    ) -> None:
        from tests.kubeapi import RunsCommand, standin_in_thread

        with standin_in_thread(token="s3cret") as api:
            api.set_behaviour(RunsCommand())
            api.kubeconfig(tmp_path / "kubeconfig")
            async with start_daemon(kube_agent("k0", 43800)) as d:
                [kernel] = await create(d.stub, "k0", sleeper("k"))
                assert kernel.state == pb.KERNEL_STATE_RUNNING
                assert (await agent_info(d.stub, "k0")).healthy
            assert api.requests_to("GET", "/exec$") == []  # nothing else was needed

    async def test_credentials_the_api_server_refuses_make_the_agent_unhealthy(
        self, start_daemon: DaemonFactory, tmp_path: Path
    ) -> None:
        from tests.kubeapi import standin_in_thread

        with standin_in_thread(token="s3cret") as api:
            write_kubeconfig(tmp_path / "kubeconfig", api.url, "wrong")
            async with start_daemon(kube_agent("k0", 43900)) as d:
                info = await agent_info(d.stub, "k0")
                assert not info.healthy
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await create(d.stub, "k0", sleeper("k"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert err.value.details() == (
            f"agent 'k0': kubernetes API server at {api.url} refuses the daemon's "
            "credentials: Unauthorized"
        )
