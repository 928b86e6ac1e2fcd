"""The pod of one kernel, built from its `LaunchSpec` with the client's models.

Pure (no I/O, no API server): name, labels (the agenthost.* ownership labels
come in the launch spec), one container `kernel` with the image, command and
environment, its resources (requests = limits, see `resources`), its named
ports as `hostPort`s, the node binding (`nodeName`, or a node selector for the
scheduler), `restartPolicy: Never` (a kernel that ends is terminated, the agent
restarts it if asked), `runAsNonRoot` and the agent's `run_as` uid, and no
service account token or service links: a kernel gets nothing from the cluster
it did not ask for. The models make a misspelt field a TypeError here rather
than a 400 from the API server.
"""

from __future__ import annotations

from kubernetes import client

from common.errors import InvalidArgument
from daemon.backends.base import LaunchSpec
from daemon.backends.kubernetes.names import (
    dns_label_problem,
    label_key_problem,
    label_value_problem,
    object_name,
)
from daemon.backends.kubernetes.podstatus import CONTAINER
from daemon.backends.kubernetes.ports import host_ports
from daemon.backends.kubernetes.resources import pod_resources
from daemon.backends.kubernetes.settings import KubernetesSettings

PREFIX = "agenthost"


def pod_name(identity: str, kernel_id: str) -> str:
    """The pod's name: one per daemon and kernel (kernel ids are unique within a daemon)."""
    return object_name(PREFIX, identity, kernel_id)


def escape(text: str) -> str:
    """text as Kubernetes passes it on: `$(VAR)` in a command or env value is not expanded."""
    return text.replace("$", "$$")


def pod_labels(launch: LaunchSpec) -> dict[str, str]:
    """The pod's labels, each checked so that a bad one is named before the API server sees it."""
    for key, value in sorted(launch.labels.items()):
        problem = label_key_problem(key) or label_value_problem(value)
        if problem is not None:
            raise InvalidArgument(f"kernel {launch.kernel_id!r}: labels: {problem}")
    return dict(launch.labels)


def pod_manifest(
    launch: LaunchSpec, image: str, identity: str, settings: KubernetesSettings
) -> client.V1Pod:
    """The pod that runs this kernel."""
    amounts = pod_resources(launch.cores, launch.memory_limit, launch.cpu_quota, launch.devices)
    ports = [
        client.V1ContainerPort(
            name=p.name, container_port=p.container_port, host_port=p.host_port, protocol="TCP"
        )
        for p in host_ports(launch.ports, launch.container_ports)
    ]
    container = client.V1Container(
        name=CONTAINER,
        image=image,
        command=[escape(arg) for arg in launch.command] or None,
        env=[
            client.V1EnvVar(name=key, value=escape(value))
            for key, value in sorted(launch.env.items())
        ],
        ports=ports or None,
        resources=client.V1ResourceRequirements(requests=amounts, limits=dict(amounts))
        if amounts
        else None,
    )
    spec = client.V1PodSpec(
        containers=[container],
        restart_policy="Never",
        node_name=settings.node_name,
        node_selector=dict(settings.node_selector) or None,
        hostname=launch.kernel_id if dns_label_problem(launch.kernel_id) is None else None,
        automount_service_account_token=False,
        enable_service_links=False,
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=settings.run_as
        ),
    )
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=pod_name(identity, launch.kernel_id),
            namespace=settings.namespace,
            labels=pod_labels(launch),
        ),
        spec=spec,
    )
