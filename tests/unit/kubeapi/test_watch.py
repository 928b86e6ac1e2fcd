"""Watches through `kubernetes.watch.Watch`, as a backend's event loop would run them."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import ThreadedStandin, standin_in_thread
from tests.kubeapi.fixtures import pod_body


def events_until(stream: Any, stop: Any, limit: int = 50) -> list[tuple[str, str, str | None]]:
    """(type, name, phase) of events until `stop(event)` is true."""
    seen: list[tuple[str, str, str | None]] = []
    for event in stream:
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, obj.status.phase if obj.status else None))
        if stop(event) or len(seen) >= limit:
            break
    return seen


class TestWatch:
    def test_from_a_resource_version_sees_added_modified_deleted(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        start = core.list_namespaced_pod("default").metadata.resource_version
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
        w = watch.Watch()
        seen = events_until(
            w.stream(
                core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=30
            ),
            lambda e: e["type"] == "DELETED",
        )
        w.stop()
        types = [t for t, _, _ in seen]
        assert types[0] == "ADDED" and types[-1] == "DELETED"
        assert set(types[1:-1]) == {"MODIFIED"}
        assert ("MODIFIED", "p1", "Running") in seen

    def test_without_resource_version_starts_with_current_pods(
        self, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        core.create_namespaced_pod("default", pod_body("p2"))
        w = watch.Watch()
        seen = events_until(
            w.stream(core.list_namespaced_pod, "default", timeout_seconds=30),
            lambda e: e["object"].metadata.name == "p2" and e["type"] == "ADDED",
        )
        w.stop()
        assert [(t, name) for t, name, _ in seen[:2]] == [("ADDED", "p1"), ("ADDED", "p2")]

    def test_label_selector_filters_events(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        start = core.list_namespaced_pod("default").metadata.resource_version
        core.create_namespaced_pod("default", pod_body("other"))
        core.create_namespaced_pod("default", pod_body("mine", labels={"agent": "a0"}))
        core.delete_namespaced_pod("mine", "default", grace_period_seconds=0)
        w = watch.Watch()
        seen = events_until(
            w.stream(
                core.list_namespaced_pod,
                "default",
                label_selector="agent=a0",
                resource_version=start,
                timeout_seconds=30,
            ),
            lambda e: e["type"] == "DELETED",
        )
        w.stop()
        assert {name for _, name, _ in seen} == {"mine"}

    def test_timeout_ends_the_stream(self, core: client.CoreV1Api) -> None:
        w = watch.Watch()
        seen = list(w.stream(core.list_namespaced_pod, "default", timeout_seconds=1))
        assert seen == []

    def test_expired_resource_version_is_410_after_the_clients_one_retry(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        start = core.list_namespaced_pod("default").metadata.resource_version
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.compact()
        w = watch.Watch()
        with pytest.raises(ApiException) as err:
            next(iter(w.stream(core.list_namespaced_pod, "default", resource_version=start)))
        assert err.value.status == 410
        assert "Expired: too old resource version" in str(err.value.reason)
        watches = [r for r in standin.requests_to("GET", "/pods$") if r.query.get("watch")]
        assert len(watches) == 2  # the client retries once from the same version

    def test_expired_with_a_timeout_is_410_at_once(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        start = core.list_namespaced_pod("default").metadata.resource_version
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.compact()
        with pytest.raises(ApiException) as err:
            list(
                watch.Watch().stream(
                    core.list_namespaced_pod, "default", resource_version=start, timeout_seconds=5
                )
            )
        assert err.value.status == 410

    def test_expired_can_be_an_http_410(self) -> None:
        with (
            standin_in_thread(expired_watch="http") as api,
            client.ApiClient(api.configuration()) as api_client,
        ):
            core = client.CoreV1Api(api_client)
            start = core.list_namespaced_pod("default").metadata.resource_version
            core.create_namespaced_pod("default", pod_body("p1"))
            api.compact()
            with pytest.raises(ApiException) as err:
                list(
                    watch.Watch().stream(
                        core.list_namespaced_pod,
                        "default",
                        resource_version=start,
                        timeout_seconds=5,
                    )
                )
        assert err.value.status == 410

    def test_short_history_expires_old_versions(self) -> None:
        with (
            standin_in_thread(history_limit=3) as api,
            client.ApiClient(api.configuration()) as api_client,
        ):
            core = client.CoreV1Api(api_client)
            start = core.list_namespaced_pod("default").metadata.resource_version
            for i in range(3):
                core.create_namespaced_pod("default", pod_body(f"p{i}"))
            api.wait_for_pod("default", "p2", api.phase_is("Running"))
            with pytest.raises(ApiException) as err:
                list(
                    watch.Watch().stream(
                        core.list_namespaced_pod,
                        "default",
                        resource_version=start,
                        timeout_seconds=5,
                    )
                )
        assert err.value.status == 410
