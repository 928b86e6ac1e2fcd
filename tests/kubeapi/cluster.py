"""The simulated cluster: the apiserver's pod, namespace and node semantics over the store.

Create (validate, default, admit to the kubelet), delete (grace, preconditions, immediate
removal of unbound or finished pods), and the objects for namespaces and nodes. The REST
handlers translate HTTP to these calls and the test hooks call them directly. No HTTP
here: errors are raised as `ApiError`s carrying the apiserver's Status.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from tests.kubeapi import podrules, schemas
from tests.kubeapi.defaulting import apply_pod_defaults, qos_class
from tests.kubeapi.kubelet import Behaviour, Kubelet, Runs, now_rfc3339
from tests.kubeapi.status import (
    ApiError,
    Cause,
    already_exists,
    bad_request,
    conflict,
    internal_error,
    invalid,
    not_found,
    undecodable,
)
from tests.kubeapi.store import JsonObject, ObjectStore

FIELD_VALIDATION = ("Strict", "Warn", "Ignore")


@dataclass(frozen=True)
class BehaviourRule:
    """Pods whose name matches `name` (regex, whole name) and carry `labels` get `behaviour`."""

    behaviour: Behaviour
    name: str | None = None
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, pod: JsonObject) -> bool:
        """Whether this rule applies to a created pod."""
        meta = pod["metadata"]
        if self.name is not None and not re.fullmatch(self.name, meta["name"]):
            return False
        have = meta.get("labels") or {}
        return all(have.get(k) == v for k, v in self.labels)


def _drop_path(obj: Any, path: str) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    current = obj
    for part in parts[:-1]:
        current = current[int(part[1:-1])] if part.startswith("[") else current.get(part)
        if current is None:
            return
    last = parts[-1]
    if isinstance(current, dict):
        current.pop(last, None)


def _generated_name(prefix: str) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(5))


class Cluster:
    """Store, kubelet, namespaces, nodes and behaviour rules of one stand-in."""

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...],
        nodes: tuple[str, ...],
        root: Path,
        history_limit: int,
        startup_delay: float,
        restart_backoff: float,
        first_revision: int = 1,
    ) -> None:
        self.store = ObjectStore(history_limit=history_limit, first_revision=first_revision)
        self.rules: list[BehaviourRule] = []
        self.kubelet = Kubelet(
            self.store,
            self.node_objects,
            default_node=nodes[0] if nodes else "",
            root=root,
            startup_delay=startup_delay,
            restart_backoff=restart_backoff,
        )
        for name in namespaces:
            self.add_namespace(name)
        for name in nodes:
            self.add_node(name)

    # namespaces and nodes -------------------------------------------------------

    def add_namespace(self, name: str) -> JsonObject:
        """Declare a namespace (idempotent); returns it."""
        existing = self.store.get("namespaces", "", name)
        if existing is not None:
            return existing
        return self.store.create(
            "namespaces",
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": now_rfc3339(),
                    "labels": {"kubernetes.io/metadata.name": name},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            },
        )

    def create_namespace(self, body: JsonObject) -> JsonObject:
        """POST /api/v1/namespaces: validated like any body; 409 when it exists."""
        name = (body.get("metadata") or {}).get("name", "")
        report = schemas.validate(body, "Namespace")
        if report.decode_errors:
            raise undecodable("Namespace", "; ".join(report.decode_errors))
        causes = list(report.causes)
        if not name:
            causes.append(
                Cause(
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                    "metadata.name",
                )
            )
        elif (problem := podrules.dns_label_problem(name)) is not None:
            causes.append(
                Cause("FieldValueInvalid", f'Invalid value: "{name}": {problem}', "metadata.name")
            )
        if causes:
            raise invalid("Namespace", name, causes)
        if self.store.get("namespaces", "", name) is not None:
            raise already_exists("namespaces", name)
        return self.add_namespace(name)

    def add_node(
        self,
        name: str,
        capacity: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        address: str = "127.0.0.1",
    ) -> JsonObject:
        """Declare a node with a kubelet (idempotent); capacity defaults to this host's."""
        existing = self.store.get("nodes", "", name)
        if existing is not None:
            return existing
        cap = capacity or {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{psutil.virtual_memory().total // 1024}Ki",
            "pods": "110",
            "ephemeral-storage": "10Gi",
        }
        version = f"v{schemas.KUBERNETES_VERSION}.0"
        return self.store.create(
            "nodes",
            {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "uid": str(uuid.uuid4()),
                    "creationTimestamp": now_rfc3339(),
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        **(labels or {}),
                    },
                },
                "spec": {},
                "status": {
                    "capacity": dict(cap),
                    "allocatable": dict(cap),
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": now_rfc3339(),
                            "lastTransitionTime": now_rfc3339(),
                        }
                    ],
                    "addresses": [
                        {"type": "InternalIP", "address": address},
                        {"type": "Hostname", "address": name},
                    ],
                    "nodeInfo": {
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                        "kernelVersion": platform.release(),
                        "osImage": "agenthost kube stand-in",
                        "containerRuntimeVersion": "containerd://2.0.0",
                        "kubeletVersion": version,
                        "kubeProxyVersion": "",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                    },
                },
            },
        )

    def node_objects(self) -> dict[str, JsonObject]:
        """The declared nodes by name."""
        return {n["metadata"]["name"]: n for n in self.store.items("nodes")}

    # pods -----------------------------------------------------------------------

    def behaviour_for(self, pod: JsonObject) -> Behaviour:
        """The most recently set rule that matches, else `Runs()`."""
        for rule in reversed(self.rules):
            if rule.matches(pod):
                return rule.behaviour
        return Runs()

    async def create_pod(
        self, namespace: str, body: Any, field_validation: str, dry_run: bool
    ) -> tuple[JsonObject, list[str]]:
        """Validate, default, store and admit a pod; returns it and any warnings."""
        if not isinstance(body, dict):
            raise bad_request(
                "the body of the request was in an unknown format - accepted media types "
                "include: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            )
        meta = body.get("metadata")
        if isinstance(meta, dict) and meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        report = await asyncio.to_thread(schemas.validate, body, "Pod")
        if report.decode_errors:
            raise undecodable("Pod", "; ".join(report.decode_errors))
        warnings: list[str] = []
        if report.unknown_fields:
            if field_validation == "Strict":
                listed = ", ".join(f'unknown field "{f}"' for f in report.unknown_fields)
                raise undecodable("Pod", f"strict decoding error: {listed}")
            if field_validation == "Warn":
                warnings = [f'unknown field "{f}"' for f in report.unknown_fields]
        quantity = podrules.quantity_problems(body.get("spec") or {}, "spec")
        if quantity:
            raise undecodable("Pod", quantity[0])
        pod = {k: v for k, v in body.items() if k != "status"}
        for path in report.unknown_fields:
            _drop_path(pod, path)
        causes = report.causes + podrules.validate_pod(pod)
        meta = pod.setdefault("metadata", {})
        if causes:
            raise invalid("Pod", meta.get("name") or meta.get("generateName", ""), causes)
        if meta.get("resourceVersion"):
            raise ApiError(
                internal_error("resourceVersion should not be set on objects to be created")
            )
        if self.store.get("namespaces", "", namespace) is None:
            raise not_found("namespaces", namespace)
        name = meta.get("name") or _generated_name(meta["generateName"])
        if self.store.get("pods", namespace, name) is not None:
            raise already_exists("pods", name)
        pod["kind"], pod["apiVersion"] = "Pod", "v1"
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "uid", "creationTimestamp"):
            meta.pop(key, None)
        meta.update(
            name=name, namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339()
        )
        apply_pod_defaults(pod)
        pod["status"] = {"phase": "Pending", "qosClass": qos_class(pod["spec"])}
        if dry_run:
            return pod, warnings
        created = self.store.create("pods", pod)
        self.kubelet.admit(created, self.behaviour_for(created))
        return created, warnings

    def get_pod(self, namespace: str, name: str) -> JsonObject:
        """The pod, or 404."""
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        return pod

    def remove_pod(self, namespace: str, name: str, uid: str | None = None) -> JsonObject | None:
        """Take a pod out of the store now (DELETED) and stop what it ran."""
        pod = self.store.get("pods", namespace, name)
        if pod is None or (uid is not None and pod["metadata"]["uid"] != uid):
            return None
        final = self.store.remove("pods", namespace, name)
        self.kubelet.forget(namespace, name)
        return final

    def delete_pod(
        self, namespace: str, name: str, grace: int | None, preconditions: JsonObject
    ) -> JsonObject:
        """DELETE semantics: preconditions, then graceful or immediate deletion."""
        pod = self.get_pod(namespace, name)
        meta = pod["metadata"]
        want_uid = preconditions.get("uid")
        if want_uid and want_uid != meta["uid"]:
            raise conflict(
                "pods",
                name,
                f"Precondition failed: UID in precondition: {want_uid}, "
                f"UID in object meta: {meta['uid']}",
            )
        want_rv = preconditions.get("resourceVersion")
        if want_rv and want_rv != meta["resourceVersion"]:
            raise conflict(
                "pods",
                name,
                f"Precondition failed: ResourceVersion in precondition: {want_rv}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        period = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
        period = max(period, 0)
        phase = pod.get("status", {}).get("phase")
        # The apiserver deletes at once what no kubelet runs: unbound or finished pods.
        if not pod["spec"].get("nodeName") or phase in ("Succeeded", "Failed"):
            period = 0
        if period == 0:
            final = self.remove_pod(namespace, name)
            assert final is not None
            return final
        if meta.get("deletionTimestamp"):
            return pod
        meta["deletionTimestamp"] = _in_seconds(period)
        meta["deletionGracePeriodSeconds"] = period
        updated = self.store.update("pods", pod)
        uid = meta["uid"]
        self.kubelet.terminate(
            namespace, name, period, lambda: self._finish_deletion(namespace, name, uid)
        )
        return updated

    def _finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        self.remove_pod(namespace, name, uid)

    async def close(self) -> None:
        """Stop every simulated pod."""
        await self.kubelet.close()


def _in_seconds(seconds: int) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
