"""The manager: its ConfigMap, its store's PersistentVolumeClaim, its Deployment and Service.

One replica (its store is one SQLite file: the Deployment recreates rather than
rolls, so two managers never open it at once) on a ReadWriteOnce claim, its
certificate from the Secret `agenthost-manager-tls`, its bootstrap admin token
kept on the claim beside the store. Its configuration is generated here and
checked against the manager's own model: users reach it on the Service's `api`
port, daemons on its `daemons` port; when the daemons serve metrics, so does the
manager (its `metrics` port, with the `prometheus.io/*` scrape annotations). It
runs as a non-root user with nothing to escalate to and no API access.
"""

from __future__ import annotations

import tomllib

from kubernetes import client

from cli.manifests.plan import (
    MANAGER_API_PORT,
    MANAGER_DAEMON_PORT,
    MANAGER_METRICS_PORT,
    MANAGER_NAME,
    Options,
    scrape_annotations,
)
from cli.manifests.rbac import labels
from manager.config import ManagerSection

CONFIG_DIR = "/etc/agenthost-manager"
DATA_DIR = "/var/lib/agenthost-manager"
TLS_SECRET = "agenthost-manager-tls"
DATA_CLAIM = "agenthost-manager-data"
USER = 10001  # the manager's uid and gid; fsGroup makes the claim its own

MANAGER_TOML = f"""\
# The manager of an agenthost deployment (rendered by agenthost deploy render).
[manager]
listen = "0.0.0.0:{MANAGER_API_PORT}"  # users: TLS and bearer tokens
daemon_listen = "0.0.0.0:{MANAGER_DAEMON_PORT}"  # daemons: mutual TLS
db_path = "{DATA_DIR}/manager.db"
# The bootstrap admin token, made on first start (kubectl exec ... cat it):
admin_token_file = "{DATA_DIR}/token"
"""
METRICS_TOML = f"""\
metrics_listen = "0.0.0.0:{MANAGER_METRICS_PORT}"  # Prometheus scrapes /metrics here
"""
TLS_TOML = f"""\

[manager.tls]  # from the Secret {TLS_SECRET}
ca = "tls/ca.crt"
cert = "tls/tls.crt"
key = "tls/tls.key"
"""


def manager_toml(metrics: bool) -> str:
    """The manager's TOML file (with metrics when the daemons serve theirs)."""
    return MANAGER_TOML + (METRICS_TOML if metrics else "") + TLS_TOML


def manager_section(metrics: bool) -> ManagerSection:
    """The rendered configuration, read by the manager's own model (it must validate)."""
    return ManagerSection.model_validate(tomllib.loads(manager_toml(metrics))["manager"])


def config_map(options: Options, metrics: bool) -> client.V1ConfigMap:
    """The manager's TOML file."""
    manager_section(metrics)
    return client.V1ConfigMap(
        api_version="v1",
        kind="ConfigMap",
        metadata=client.V1ObjectMeta(
            name=MANAGER_NAME, namespace=options.namespace, labels=labels("manager")
        ),
        data={"manager.toml": manager_toml(metrics)},
    )


def claim(options: Options) -> client.V1PersistentVolumeClaim:
    """Where the manager's store and admin token live."""
    return client.V1PersistentVolumeClaim(
        api_version="v1",
        kind="PersistentVolumeClaim",
        metadata=client.V1ObjectMeta(
            name=DATA_CLAIM, namespace=options.namespace, labels=labels("manager")
        ),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=client.V1VolumeResourceRequirements(requests={"storage": options.storage}),
        ),
    )


def deployment(options: Options, metrics: bool) -> client.V1Deployment:
    """One manager."""
    files = [("ca.crt", "ca.crt"), ("tls.crt", "tls.crt"), ("tls.key", "tls.key")]
    mounts = [
        client.V1VolumeMount(
            name="config",
            mount_path=f"{CONFIG_DIR}/manager.toml",
            sub_path="manager.toml",
            read_only=True,
        ),
        *(
            client.V1VolumeMount(
                name="tls", mount_path=f"{CONFIG_DIR}/tls/{path}", sub_path=key, read_only=True
            )
            for key, path in files
        ),
        client.V1VolumeMount(name="data", mount_path=DATA_DIR),
        client.V1VolumeMount(name="tmp", mount_path="/tmp"),  # the root filesystem is read-only
    ]
    probe = client.V1Probe(
        tcp_socket=client.V1TCPSocketAction(port="api"), period_seconds=10, failure_threshold=3
    )
    container = client.V1Container(
        name="manager",
        image=options.image,
        image_pull_policy="IfNotPresent",
        args=["manager", "--config", f"{CONFIG_DIR}/manager.toml"],
        env=[client.V1EnvVar(name="AGENTHOST_HOME", value=DATA_DIR)],
        ports=[
            client.V1ContainerPort(name="api", container_port=MANAGER_API_PORT, protocol="TCP"),
            client.V1ContainerPort(
                name="daemons", container_port=MANAGER_DAEMON_PORT, protocol="TCP"
            ),
            *(
                [
                    client.V1ContainerPort(
                        name="metrics", container_port=MANAGER_METRICS_PORT, protocol="TCP"
                    )
                ]
                if metrics
                else []
            ),
        ],
        readiness_probe=probe,
        liveness_probe=probe,
        volume_mounts=mounts,
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    pod = client.V1PodSpec(
        automount_service_account_token=False,
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=USER,
            run_as_group=USER,
            fs_group=USER,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[container],
        volumes=[
            client.V1Volume(
                name="config", config_map=client.V1ConfigMapVolumeSource(name=MANAGER_NAME)
            ),
            client.V1Volume(
                name="tls",
                # Group-readable: the files' group is fsGroup, the manager's own.
                secret=client.V1SecretVolumeSource(secret_name=TLS_SECRET, default_mode=0o440),
            ),
            client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
            client.V1Volume(
                name="data",
                persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                    claim_name=DATA_CLAIM
                ),
            ),
        ],
    )
    return client.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=client.V1ObjectMeta(
            name=MANAGER_NAME, namespace=options.namespace, labels=labels("manager")
        ),
        spec=client.V1DeploymentSpec(
            replicas=1,
            strategy=client.V1DeploymentStrategy(type="Recreate"),
            selector=client.V1LabelSelector(match_labels=labels("manager")),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(
                    labels=labels("manager"),
                    annotations=scrape_annotations(MANAGER_METRICS_PORT if metrics else None),
                ),
                spec=pod,
            ),
        ),
    )


def service(options: Options) -> client.V1Service:
    """The manager's address in the cluster: `agenthost-manager.<namespace>.svc`."""
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(
            name=MANAGER_NAME, namespace=options.namespace, labels=labels("manager")
        ),
        spec=client.V1ServiceSpec(
            type="ClusterIP",
            selector=labels("manager"),
            ports=[
                client.V1ServicePort(
                    name="api", port=MANAGER_API_PORT, target_port="api", protocol="TCP"
                ),
                client.V1ServicePort(
                    name="daemons", port=MANAGER_DAEMON_PORT, target_port="daemons", protocol="TCP"
                ),
            ],
        ),
    )


def manager_objects(options: Options, metrics: bool) -> list[object]:
    """The manager's ConfigMap, claim, Deployment and Service (metrics: serve /metrics)."""
    return [
        config_map(options, metrics),
        claim(options),
        deployment(options, metrics),
        service(options),
    ]
