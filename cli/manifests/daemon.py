"""The daemon on every node: its ConfigMap (the TOML file as it is) and its DaemonSet.

The pod runs `agenthost daemon --config /etc/agenthost/daemon.toml` with the
node's name from the downward API (`AGENTHOST_DAEMON_NODE`: its kubernetes agents
bind their pods to it), its trust material from the Secret
`agenthost-daemon-tls` mounted file by file where the TOML's `[daemon.tls]`
paths point, and its state directory on the host (checkpoints outlive the pod).
Host access is granted only as far as the agents need it: a local agent's
kernels are processes of the daemon's pod, so it gets the host's PID and network
namespaces (kernels' ports are host ports) and the cgroup tree (memory limits);
a docker agent gets its engine's socket; a daemon of kubernetes agents only
needs its service account token. No capabilities beyond the defaults' removal.
With `[daemon] metrics_listen` the pod also names its `metrics` port and carries
the `prometheus.io/*` scrape annotations.
"""

from __future__ import annotations

import math
from pathlib import PurePosixPath

from kubernetes import client

from cli.manifests.plan import (
    CONFIG_FILE,
    STATE_HOST_DIR,
    DaemonPlan,
    Options,
    scrape_annotations,
)
from cli.manifests.rbac import DAEMON_ACCOUNT, labels

NAME = "agenthost-daemon"
TLS_SECRET = "agenthost-daemon-tls"
CGROUP_ROOT = "/sys/fs/cgroup"
SHUTDOWN_MARGIN = 10  # seconds the pod gets beyond the daemon's shutdown_grace


def config_map(plan: DaemonPlan, options: Options) -> client.V1ConfigMap:
    """The daemon's TOML file, as the operator wrote it."""
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(
            name=NAME, namespace=options.namespace, labels=labels("daemon")
        ),
        data={CONFIG_FILE.name: plan.config_text},
    )


def _host_path(name: str, path: PurePosixPath, kind: str) -> client.V1Volume:
    return client.V1Volume(
        name=name, host_path=client.V1HostPathVolumeSource(path=str(path), type=kind)
    )


def _volumes(plan: DaemonPlan) -> tuple[list[client.V1Volume], list[client.V1VolumeMount]]:
    volumes = [
        client.V1Volume(name="config", config_map=client.V1ConfigMapVolumeSource(name=NAME)),
        client.V1Volume(
            name="tls",
            secret=client.V1SecretVolumeSource(secret_name=TLS_SECRET, default_mode=0o400),
        ),
    ]
    # Files one by one (subPath): the TOML's own directory stays a plain directory
    # of the image, so its tls paths can point anywhere, beside it included.
    mounts = [
        client.V1VolumeMount(
            name="config", mount_path=str(CONFIG_FILE), sub_path=CONFIG_FILE.name, read_only=True
        )
    ]
    mounts += [
        client.V1VolumeMount(name="tls", mount_path=str(t.path), sub_path=t.key, read_only=True)
        for t in plan.tls
    ]
    for i, directory in enumerate(plan.state_dirs):
        name = "state" if i == 0 else f"state-{i}"
        volumes.append(_host_path(name, directory, "DirectoryOrCreate"))
        mounts.append(client.V1VolumeMount(name=name, mount_path=str(directory)))
    if plan.local:
        volumes.append(_host_path("cgroup", PurePosixPath(CGROUP_ROOT), "Directory"))
        mounts.append(client.V1VolumeMount(name="cgroup", mount_path=CGROUP_ROOT))
    for i, socket in enumerate(plan.docker_sockets):
        name = f"docker-{i}"
        volumes.append(_host_path(name, socket, "Socket"))
        mounts.append(client.V1VolumeMount(name=name, mount_path=str(socket)))
    return volumes, mounts


def daemon_set(plan: DaemonPlan, options: Options) -> client.V1DaemonSet:
    """One daemon per node."""
    volumes, mounts = _volumes(plan)
    probe = client.V1Probe(
        tcp_socket=client.V1TCPSocketAction(port="grpc"), period_seconds=10, failure_threshold=3
    )
    container = client.V1Container(
        name="daemon",
        image=options.image,
        image_pull_policy="IfNotPresent",
        args=["daemon", "--config", str(CONFIG_FILE)],
        working_dir=str(STATE_HOST_DIR),  # a relative state_dir lands on the host path
        env=[
            client.V1EnvVar(
                name="AGENTHOST_DAEMON_NODE",
                value_from=client.V1EnvVarSource(
                    field_ref=client.V1ObjectFieldSelector(field_path="spec.nodeName")
                ),
            )
        ],
        ports=[
            client.V1ContainerPort(
                name=name,
                container_port=port,
                host_port=port if plan.local else None,
                protocol="TCP",
            )
            for name, port in (("grpc", plan.listen_port), ("metrics", plan.metrics_port))
            if port is not None
        ],
        readiness_probe=probe,
        liveness_probe=probe,
        volume_mounts=mounts,
        security_context=client.V1SecurityContext(
            # Root for the host state directory (and a local agent's cgroups), with
            # no capability: it owns what it writes, and needs nothing more.
            run_as_user=0,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    pod = client.V1PodSpec(
        service_account_name=DAEMON_ACCOUNT,
        automount_service_account_token=bool(plan.agent_namespaces),
        host_pid=plan.local or None,
        host_network=plan.local or None,
        dns_policy="ClusterFirstWithHostNet" if plan.local else None,
        termination_grace_period_seconds=math.ceil(plan.shutdown_grace) + SHUTDOWN_MARGIN,
        containers=[container],
        volumes=volumes,
    )
    return client.V1DaemonSet(
        api_version="apps/v1",
        kind="DaemonSet",
        metadata=client.V1ObjectMeta(
            name=NAME, namespace=options.namespace, labels=labels("daemon")
        ),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels("daemon")),
            update_strategy=client.V1DaemonSetUpdateStrategy(type="RollingUpdate"),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels=labels("daemon"), annotations=scrape_annotations(plan.metrics_port)
                ),
                spec=pod,
            ),
        ),
    )


def daemon_objects(plan: DaemonPlan, options: Options) -> list[object]:
    """The daemon's ConfigMap and DaemonSet."""
    return [config_map(plan, options), daemon_set(plan, options)]
