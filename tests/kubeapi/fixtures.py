"""pytest fixtures and a manifest helper for tests that talk to the stand-in.

Use them from a conftest: `from tests.kubeapi.fixtures import core, standin  # noqa: F401`.
`standin` runs the server in its own thread, so a test (or the code under test) may call
the blocking `kubernetes` client directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.kubeapi.threaded import ThreadedStandin, standin_in_thread


@pytest.fixture
def standin() -> Iterator[ThreadedStandin]:
    """A stand-in API server with namespace `default` and node `standin-node`."""
    with standin_in_thread() as api:
        yield api


@pytest.fixture
def core(standin: ThreadedStandin) -> Iterator[client.CoreV1Api]:
    """An official-client `CoreV1Api` pointed at `standin`."""
    with client.ApiClient(standin.configuration()) as api_client:
        yield client.CoreV1Api(api_client)


def pod_body(
    name: str,
    *,
    image: str = "busybox:1.36",
    command: list[str] | None = None,
    labels: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    restart_policy: str | None = None,
    node_name: str | None = None,
    containers: list[dict[str, Any]] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod manifest as a plain dict (one container `main` unless `containers` is given)."""
    container: dict[str, Any] = {"name": "main", "image": image}
    if command is not None:
        container["command"] = command
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    if resources is not None:
        container["resources"] = resources
    spec: dict[str, Any] = {"containers": containers or [container]}
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    if node_name is not None:
        spec["nodeName"] = node_name
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def post_raw(api_client: client.ApiClient, path: str, body: Any, **query: str) -> Any:
    """POST `body` as-is through the client's low-level path; returns the decoded answer.

    The typed methods (`create_namespaced_pod`, ...) validate a dict body with pydantic and
    raise `pydantic.ValidationError` before sending when a required field is missing, a
    type is wrong or a field is unknown; this sends what they would refuse, so the
    server's own answer can be seen. Error answers raise `ApiException` as usual.
    """
    request = api_client.param_serialize(
        "POST",
        path,
        query_params=list(query.items()),
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(*request)
    response.read()  # type: ignore[no-untyped-call]
    return api_client.response_deserialize(response, {"201": "object", "200": "object"}).data
