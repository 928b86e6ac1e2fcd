"""All objects of a deployment, in the order `kubectl apply -f` needs, as YAML documents.

Namespaces first, then who the daemon is (service account, roles), then the
daemon, then the manager. Each object is serialised by the client's own
`ApiClient().sanitize_for_serialization` (what the client would send), then
written as one YAML document; multi-line strings (the embedded TOML files) as
literal blocks, so a ConfigMap reads like the file it holds.
"""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client

from cli.manifests.daemon import daemon_objects
from cli.manifests.manager import manager_objects
from cli.manifests.plan import DaemonPlan, Options
from cli.manifests.rbac import rbac_objects

# Namespaces every cluster has: never rendered (applying them would adopt them).
BUILT_IN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as literal blocks."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def namespace(name: str) -> client.V1Namespace:
    """A namespace the deployment uses."""
    return client.V1Namespace(
        api_version="v1", kind="Namespace", metadata=client.V1ObjectMeta(name=name)
    )


def deployment_objects(plan: DaemonPlan, options: Options) -> list[dict[str, Any]]:
    """Every object, serialised, in apply order."""
    names = dict.fromkeys([options.namespace, *plan.agent_namespaces])
    objects: list[object] = [namespace(n) for n in names if n not in BUILT_IN_NAMESPACES]
    objects += rbac_objects(plan, options)
    objects += daemon_objects(plan, options)
    objects += manager_objects(options, metrics=plan.metrics_port is not None)
    api = client.ApiClient()
    return [api.sanitize_for_serialization(o) for o in objects]


def render(plan: DaemonPlan, options: Options) -> str:
    """The deployment as YAML documents separated by `---`."""
    documents = [
        yaml.dump(o, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
        for o in deployment_objects(plan, options)
    ]
    return "---\n".join(documents)
