"""Bodies the real apiserver refuses are refused here, with the same Status."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kubernetes_validate.utils as kv
import pydantic
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import KUBERNETES_VERSION, ThreadedStandin
from tests.kubeapi.fixtures import pod_body, post_raw


def refusal(core: client.CoreV1Api, body: dict[str, Any], **query: str) -> ApiException:
    """The server's answer to `body`, sent raw: the typed method would refuse some of them
    client-side (pydantic) before any request."""
    with pytest.raises(ApiException) as err:
        post_raw(core.api_client, "/api/v1/namespaces/default/pods", body, **query)
    return err.value


def container(**fields: Any) -> dict[str, Any]:
    return {"name": "main", "image": "busybox:1.36", **fields}


@dataclass(frozen=True)
class InvalidCase:
    name: str
    body: dict[str, Any]
    field: str
    reason: str
    message: str


INVALID_CASES = [
    InvalidCase(
        "container without name",
        pod_body("p", containers=[{"image": "busybox:1.36"}]),
        "spec.containers[0].name",
        "FieldValueRequired",
        "Required value",
    ),
    InvalidCase(
        "negative hostPort",
        pod_body("p", containers=[container(ports=[{"containerPort": 80, "hostPort": -1}])]),
        "spec.containers[0].ports[0].hostPort",
        "FieldValueInvalid",
        "Invalid value: -1: must be between 1 and 65535, inclusive",
    ),
    InvalidCase(
        "containerPort zero",
        pod_body("p", containers=[container(ports=[{"containerPort": 0}])]),
        "spec.containers[0].ports[0].containerPort",
        "FieldValueInvalid",
        "Invalid value: 0: must be between 1 and 65535, inclusive",
    ),
    InvalidCase(
        "unsupported restartPolicy",
        {**pod_body("p"), "spec": {**pod_body("p")["spec"], "restartPolicy": "Sometimes"}},
        "spec.restartPolicy",
        "FieldValueNotSupported",
        'Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure"',
    ),
    InvalidCase(
        "upper-case pod name",
        pod_body("Kernel_1"),
        "metadata.name",
        "FieldValueInvalid",
        'Invalid value: "Kernel_1": a lowercase RFC 1123 subdomain must consist of lower case '
        "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ),
    InvalidCase(
        "requests above limits",
        pod_body("p", resources={"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
        "spec.containers[0].resources.requests",
        "FieldValueInvalid",
        'Invalid value: "2": must be less than or equal to cpu limit of 1',
    ),
    InvalidCase(
        "duplicate container names",
        pod_body("p", containers=[container(), container()]),
        "spec.containers[1].name",
        "FieldValueDuplicate",
        'Duplicate value: "main"',
    ),
    InvalidCase(
        "container without image",
        pod_body("p", containers=[{"name": "main"}]),
        "spec.containers[0].image",
        "FieldValueRequired",
        "Required value",
    ),
]


class TestInvalidBodies:
    @pytest.mark.parametrize("case", INVALID_CASES, ids=[c.name for c in INVALID_CASES])
    def test_is_invalid_with_the_cause(
        self, standin: ThreadedStandin, core: client.CoreV1Api, case: InvalidCase
    ) -> None:
        error = refusal(core, case.body)
        assert error.status == 422
        status = json.loads(error.body)
        assert status["reason"] == "Invalid"
        assert status["details"]["kind"] == "Pod"
        assert {"field": case.field, "reason": case.reason, "message": case.message} in status[
            "details"
        ]["causes"]
        assert status["message"].startswith(f'Pod "{case.body["metadata"]["name"]}" is invalid: ')
        assert standin.pods() == []

    def test_one_cause_reads_like_the_apiserver(self, core: client.CoreV1Api) -> None:
        error = refusal(core, pod_body("p", containers=[{"image": "busybox:1.36"}]))
        assert json.loads(error.body)["message"] == (
            'Pod "p" is invalid: spec.containers[0].name: Required value'
        )

    def test_wrong_json_type_is_bad_request(self, core: client.CoreV1Api) -> None:
        body = pod_body("p", containers=[container(ports=[{"containerPort": "http"}])])
        error = refusal(core, body)
        assert error.status == 400
        status = json.loads(error.body)
        assert status["reason"] == "BadRequest"
        assert status["message"].startswith('Pod in version "v1" cannot be handled as a Pod:')

    def test_malformed_quantity_is_bad_request(self, core: client.CoreV1Api) -> None:
        error = refusal(core, pod_body("p", resources={"limits": {"memory": "2GB"}}))
        assert error.status == 400
        assert "quantities must match the regular expression" in json.loads(error.body)["message"]

    def test_unknown_field_is_refused_under_strict_validation(self, core: client.CoreV1Api) -> None:
        error = refusal(core, pod_body("p", containers=[container(imagePullPolice="Always")]))
        assert error.status == 400
        assert json.loads(error.body)["message"].endswith(
            'strict decoding error: unknown field "spec.containers[0].imagePullPolice"'
        )

    def test_unknown_field_is_dropped_when_the_client_asks_to_warn(
        self, core: client.CoreV1Api
    ) -> None:
        body = pod_body("p", containers=[container(imagePullPolice="Always")])
        path = "/api/v1/namespaces/default/pods"
        pod = post_raw(core.api_client, path, body, fieldValidation="Warn")
        assert pod["metadata"]["name"] == "p"
        assert "imagePullPolice" not in pod["spec"]["containers"][0]

    def test_the_typed_client_refuses_a_nameless_container_itself(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        with pytest.raises(pydantic.ValidationError):
            core.create_namespaced_pod("default", pod_body("p", containers=[{"image": "x:1"}]))
        assert standin.requests_to("POST", "/pods$") == []

    def test_resource_version_on_create_is_refused(self, core: client.CoreV1Api) -> None:
        body = pod_body("p")
        body["metadata"]["resourceVersion"] = "7"
        error = refusal(core, body)
        assert error.status == 500
        assert json.loads(error.body)["message"] == (
            "Internal error occurred: resourceVersion should not be set on objects to be created"
        )


class TestSchemaVersion:
    def test_pinned_version_ships_with_kubernetes_validate(self) -> None:
        assert KUBERNETES_VERSION in {kv.major_minor(v) for v in kv.all_versions()}
