"""Who the daemon is to the API server, and the least it may do there.

One ServiceAccount for the daemon's pods, and in every namespace its kubernetes
agents use a Role with exactly the verbs the kubernetes backend calls (pods:
create, get, list, watch, delete; pods/log: get; pods/exec: create and get, the
websocket upgrade being a GET) bound to that account. Nothing cluster-wide, no
secrets, no other resources. The manager needs no API access and gets no account.
"""

from __future__ import annotations

from kubernetes import client

from cli.manifests.plan import DaemonPlan, Options

DAEMON_ACCOUNT = "agenthost-daemon"
RULES = (
    ("pods", ("create", "delete", "get", "list", "watch")),
    ("pods/log", ("get",)),
    ("pods/exec", ("create", "get")),
)


def labels(component: str) -> dict[str, str]:
    """The labels of every object of one component (daemon, manager)."""
    return {"app.kubernetes.io/name": "agenthost", "app.kubernetes.io/component": component}


def service_account(options: Options) -> client.V1ServiceAccount:
    """The daemon's service account (its pods use its token in-cluster)."""
    return client.V1ServiceAccount(
        api_version="v1",
        kind="ServiceAccount",
        metadata=client.V1ObjectMeta(
            name=DAEMON_ACCOUNT, namespace=options.namespace, labels=labels("daemon")
        ),
    )


def role(namespace: str) -> client.V1Role:
    """What the daemon may do in one agent namespace."""
    return client.V1Role(
        api_version="rbac.authorization.k8s.io/v1",
        kind="Role",
        metadata=client.V1ObjectMeta(
            name=DAEMON_ACCOUNT, namespace=namespace, labels=labels("daemon")
        ),
        rules=[
            client.V1PolicyRule(api_groups=[""], resources=[resource], verbs=list(verbs))
            for resource, verbs in RULES
        ],
    )


def role_binding(namespace: str, options: Options) -> client.V1RoleBinding:
    """The Role of one agent namespace, given to the daemon's service account."""
    return client.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1",
        kind="RoleBinding",
        metadata=client.V1ObjectMeta(
            name=DAEMON_ACCOUNT, namespace=namespace, labels=labels("daemon")
        ),
        role_ref=client.V1RoleRef(
            api_group="rbac.authorization.k8s.io", kind="Role", name=DAEMON_ACCOUNT
        ),
        subjects=[
            client.RbacV1Subject(
                kind="ServiceAccount", name=DAEMON_ACCOUNT, namespace=options.namespace
            )
        ],
    )


def rbac_objects(plan: DaemonPlan, options: Options) -> list[object]:
    """The service account, then a Role and RoleBinding per agent namespace."""
    objects: list[object] = [service_account(options)]
    for namespace in plan.agent_namespaces:
        objects += [role(namespace), role_binding(namespace, options)]
    return objects
