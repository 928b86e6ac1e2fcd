"""The pod of a kernel: built from its launch spec, valid against the official schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client

from common.errors import FailedPrecondition, InvalidArgument
from common.ids import ID_PATTERN, AgentId, KernelId
from daemon.backends.base import LaunchSpec
from daemon.backends.kubernetes.api import delete_options
from daemon.backends.kubernetes.names import dns_subdomain_problem
from daemon.backends.kubernetes.settings import KubernetesSettings
from daemon.backends.kubernetes.spec import escape, pod_manifest, pod_name
from tests.kubeapi import podrules, schemas

IDENTITY = "0123456789"
MIB = 1 << 20
SETTINGS = KubernetesSettings(namespace="kernels", node_name="node-1", run_as=1000)


def launch(**fields: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "agent_id": AgentId("a0"),
        "kernel_id": KernelId("k-1"),
        "image": "python:3.12",
        "command": ("sleep", "300"),
        "env": {"AGENTHOST_AGENT_ID": "a0", "PORT_HTTP": "30001"},
        "labels": {"agenthost.agent_id": "a0", "agenthost.kernel_id": "k-1", "team": "ml"},
        "workdir": Path("/tmp/k-1"),
        "cores": (2, 3),
        "memory_limit": 512 * MIB,
        "ports": {"http": 30001},
    }
    values.update(fields)
    return LaunchSpec(**values)


def as_json(pod: client.V1Pod) -> dict[str, Any]:
    body: dict[str, Any] = client.ApiClient().sanitize_for_serialization(pod)
    return body


def valid_pod(spec: LaunchSpec, settings: KubernetesSettings = SETTINGS) -> dict[str, Any]:
    """The pod as JSON, asserted valid by the official schemas and the apiserver's rules."""
    body = as_json(pod_manifest(spec, spec.image or "python:3.12", IDENTITY, settings))
    report = schemas.validate(body, "Pod")
    assert (report.decode_errors, report.causes, report.unknown_fields) == ([], [], [])
    assert podrules.validate_pod(body) == []
    return body


class TestPod:
    def test_is_valid_and_bound_to_the_node_with_its_labels(self) -> None:
        pod = valid_pod(launch())
        assert pod["metadata"] == {
            "name": "agenthost-0123456789-k-1",
            "namespace": "kernels",
            "labels": {"agenthost.agent_id": "a0", "agenthost.kernel_id": "k-1", "team": "ml"},
        }
        spec = pod["spec"]
        assert spec["nodeName"] == "node-1"
        assert "nodeSelector" not in spec
        assert spec["restartPolicy"] == "Never"
        assert spec["hostname"] == "k-1"
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000}

    def test_requests_equal_limits_from_the_kernels_share(self) -> None:
        [container] = valid_pod(launch(devices={"cuda": ("0", "1")}))["spec"]["containers"]
        amounts = {"cpu": "2", "memory": "512Mi", "nvidia.com/gpu": "2"}
        assert container["resources"] == {"requests": amounts, "limits": amounts}

    def test_a_fractional_quota_is_millicores(self) -> None:
        [container] = valid_pod(launch(cpu_quota=0.25, memory_limit=0))["spec"]["containers"]
        assert container["resources"] == {"requests": {"cpu": "250m"}, "limits": {"cpu": "250m"}}

    def test_nothing_to_account_gives_no_resources(self) -> None:
        [container] = valid_pod(launch(cores=(), memory_limit=0))["spec"]["containers"]
        assert "resources" not in container

    def test_named_ports_are_host_ports_from_the_agents_range(self) -> None:
        spec = launch(
            ports={"http": 30001, "Admin_UI": 30002, "x1234567890123456": 30003},
            container_ports={"http": 8080},
        )
        [container] = valid_pod(spec)["spec"]["containers"]
        assert container["ports"] == [
            {"containerPort": 30002, "hostPort": 30002, "name": "admin-ui", "protocol": "TCP"},
            {"containerPort": 8080, "hostPort": 30001, "name": "http", "protocol": "TCP"},
            # Too long for a port name: unnamed, the host port is what counts.
            {"containerPort": 30003, "hostPort": 30003, "protocol": "TCP"},
        ]

    def test_command_and_env_are_passed_on_without_expansion(self) -> None:
        spec = launch(command=("sh", "-c", "echo $(HOME) $$"), env={"A": "$(B)", "B": "x"})
        [container] = valid_pod(spec)["spec"]["containers"]
        assert container["command"] == ["sh", "-c", "echo $$(HOME) $$$$"]
        assert container["env"] == [{"name": "A", "value": "$$(B)"}, {"name": "B", "value": "x"}]
        assert container["image"] == "python:3.12"

    def test_an_empty_command_runs_the_images_own(self) -> None:
        [container] = valid_pod(launch(command=()))["spec"]["containers"]
        assert "command" not in container

    def test_a_node_selector_leaves_placement_to_the_scheduler(self) -> None:
        settings = KubernetesSettings(node_selector={"kubernetes.io/hostname": "node-1"})
        pod = valid_pod(launch(), settings)
        assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
        assert "nodeName" not in pod["spec"]
        assert pod["spec"]["securityContext"] == {"runAsNonRoot": True}

    def test_a_kernel_id_that_is_no_dns_label_gets_no_hostname(self) -> None:
        pod = valid_pod(launch(kernel_id=KernelId("K_1")))
        assert "hostname" not in pod["spec"]
        assert pod["metadata"]["name"].startswith("agenthost-0123456789-k-1-")


class TestRefused:
    def test_a_device_kind_pods_cannot_have(self) -> None:
        with pytest.raises(FailedPrecondition) as err:
            pod_manifest(launch(devices={"tpu": ("0",)}), "img", IDENTITY, SETTINGS)
        assert str(err.value) == "devices: 'tpu' devices cannot be given to a pod; supported: cuda"

    def test_a_label_kubernetes_refuses_is_named(self) -> None:
        with pytest.raises(InvalidArgument) as err:
            pod_manifest(launch(labels={"team": "a b"}), "img", IDENTITY, SETTINGS)
        assert str(err.value) == (
            "kernel 'k-1': labels: 'a b' is not a label value: at most 63 letters, digits, "
            "'-', '_' and '.', starting and ending with a letter or digit"
        )


class TestNames:
    @given(st.from_regex(ID_PATTERN, fullmatch=True), st.from_regex(ID_PATTERN, fullmatch=True))
    def test_pod_names_are_valid_and_distinct_for_distinct_kernels(self, a: str, b: str) -> None:
        assert dns_subdomain_problem(pod_name(IDENTITY, a)) is None
        assert (pod_name(IDENTITY, a) == pod_name(IDENTITY, b)) == (a == b)

    def test_escape_keeps_every_dollar(self) -> None:
        assert escape("$(X) $$ $") == "$$(X) $$$$ $$"


class TestDeleteOptions:
    @pytest.mark.parametrize(("grace", "uid"), [(0, None), (5, "0123-abcd")])
    def test_are_valid_against_the_official_schema(self, grace: int, uid: str | None) -> None:
        body = client.ApiClient().sanitize_for_serialization(delete_options(grace, uid))
        report = schemas.validate(body, "DeleteOptions", schema_version="meta/v1")
        assert (report.decode_errors, report.causes, report.unknown_fields) == ([], [], [])
        assert body["gracePeriodSeconds"] == grace
        assert body.get("preconditions") == ({"uid": uid} if uid else None)
