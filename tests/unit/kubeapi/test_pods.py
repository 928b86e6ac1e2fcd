"""Pods through the official client: create, read, list with selectors, delete, life."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import Exits, Fault, Runs, RunsCommand, StaysPending, ThreadedStandin, gone
from tests.kubeapi.fixtures import pod_body


def status_of(exc: ApiException) -> dict[str, object]:
    """The Status object an error carried."""
    body: dict[str, object] = json.loads(exc.body)
    return body


class TestCreateAndRead:
    def test_created_pod_is_pending_with_the_apiservers_defaults(
        self, core: client.CoreV1Api
    ) -> None:
        body = pod_body(
            "p1",
            image="busybox",
            resources={"limits": {"cpu": "1000m", "memory": "2048Mi"}},
        )
        pod = core.create_namespaced_pod("default", body)
        assert pod.status.phase == "Pending"
        assert pod.metadata.uid and pod.metadata.resource_version
        assert pod.spec.restart_policy == "Always"
        assert pod.spec.termination_grace_period_seconds == 30
        main = pod.spec.containers[0]
        assert main.image_pull_policy == "Always"  # no tag means :latest
        assert main.resources.limits == {"cpu": "1", "memory": "2Gi"}
        assert main.resources.requests == {"cpu": "1", "memory": "2Gi"}
        assert pod.status.qos_class == "Guaranteed"

    def test_pod_becomes_running_with_ips_and_running_containers(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        pod = core.read_namespaced_pod("p1", "default")
        assert pod.spec.node_name == "standin-node"
        assert pod.status.pod_ip.startswith("127.244.")
        assert pod.status.host_ip == "127.0.0.1"
        assert pod.status.start_time is not None
        (main,) = pod.status.container_statuses
        assert main.ready and main.state.running is not None
        assert main.container_id.startswith("containerd://")
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == "True"

    def test_duplicate_name_is_already_exists(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod("default", pod_body("p1"))
        assert err.value.status == 409
        status = status_of(err.value)
        assert status["reason"] == "AlreadyExists"
        assert status["message"] == 'pods "p1" already exists'

    def test_generate_name_gets_a_suffix(self, core: client.CoreV1Api) -> None:
        body = pod_body("ignored")
        body["metadata"] = {"generateName": "kernel-"}
        pod = core.create_namespaced_pod("default", body)
        assert pod.metadata.name.startswith("kernel-") and len(pod.metadata.name) == 12

    def test_unknown_namespace_is_not_found_until_declared(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod("agents", pod_body("p1"))
        assert err.value.status == 404
        assert status_of(err.value)["message"] == 'namespaces "agents" not found'
        with pytest.raises(ApiException):
            core.read_namespace("agents")
        standin.add_namespace("agents")
        assert core.read_namespace("agents").status.phase == "Active"
        assert core.create_namespaced_pod("agents", pod_body("p1")).metadata.namespace == "agents"

    def test_missing_pod_is_not_found(self, core: client.CoreV1Api) -> None:
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod("nope", "default")
        assert err.value.status == 404
        assert status_of(err.value) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": 'pods "nope" not found',
            "reason": "NotFound",
            "details": {"name": "nope", "kind": "pods"},
            "code": 404,
        }

    def test_node_version_and_discovery_answer(self, core: client.CoreV1Api) -> None:
        node = core.read_node("standin-node")
        assert node.status.node_info.kubelet_version == "v1.37.0"
        assert {r.name for r in core.get_api_resources().resources} >= {"pods", "pods/exec"}
        version = client.VersionApi(core.api_client).get_code()
        assert (version.major, version.minor) == ("1", "37")


@dataclass(frozen=True)
class SelectorCase:
    name: str
    label_selector: str
    expected: tuple[str, ...]


SELECTOR_CASES = [
    SelectorCase("equality", "app=kernel", ("a", "b")),
    SelectorCase("double equals", "app==kernel", ("a", "b")),
    SelectorCase("two requirements", "app=kernel,agent=a0", ("a",)),
    SelectorCase("inequality includes unlabelled", "agent!=a0", ("b", "c")),
    SelectorCase("set membership", "agent in (a0, a1)", ("a", "b")),
    SelectorCase("set exclusion", "agent notin (a0)", ("b", "c")),
    SelectorCase("existence", "agent", ("a", "b")),
    SelectorCase("absence", "!agent", ("c",)),
]


class TestList:
    @pytest.fixture
    def three_pods(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_pod(
            "default", pod_body("a", labels={"app": "kernel", "agent": "a0"})
        )
        core.create_namespaced_pod(
            "default", pod_body("b", labels={"app": "kernel", "agent": "a1"})
        )
        core.create_namespaced_pod("default", pod_body("c", labels={"app": "other"}))

    @pytest.mark.parametrize("case", SELECTOR_CASES, ids=[c.name for c in SELECTOR_CASES])
    def test_label_selector(
        self, core: client.CoreV1Api, three_pods: None, case: SelectorCase
    ) -> None:
        pods = core.list_namespaced_pod("default", label_selector=case.label_selector)
        assert tuple(p.metadata.name for p in pods.items) == case.expected

    def test_field_selectors_on_name_and_node(
        self, core: client.CoreV1Api, three_pods: None
    ) -> None:
        by_name = core.list_namespaced_pod("default", field_selector="metadata.name=b")
        assert [p.metadata.name for p in by_name.items] == ["b"]
        core.create_namespaced_pod("default", pod_body("d", node_name="elsewhere"))
        elsewhere = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=elsewhere")
        assert [p.metadata.name for p in elsewhere.items] == ["d"]

    def test_list_carries_a_resource_version_to_watch_from(
        self, core: client.CoreV1Api, three_pods: None
    ) -> None:
        pods = core.list_namespaced_pod("default")
        newest = max(int(p.metadata.resource_version) for p in pods.items)
        assert int(pods.metadata.resource_version) >= newest

    def test_unparsable_selector_is_bad_request(self, core: client.CoreV1Api) -> None:
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod("default", label_selector="app in (a")
        assert err.value.status == 400
        assert status_of(err.value)["reason"] == "BadRequest"

    def test_unsupported_field_is_bad_request(self, core: client.CoreV1Api) -> None:
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod("default", field_selector="spec.image=busybox")
        assert err.value.status == 400
        assert status_of(err.value)["message"] == "field label not supported: spec.image"

    def test_limit_and_continue_page_through(
        self, core: client.CoreV1Api, three_pods: None
    ) -> None:
        first = core.list_namespaced_pod("default", limit=2)
        assert [p.metadata.name for p in first.items] == ["a", "b"]
        assert first.metadata.remaining_item_count == 1
        rest = core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
        assert [p.metadata.name for p in rest.items] == ["c"]


class TestDelete:
    def test_grace_zero_removes_at_once(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod("p1", "default")
        assert err.value.status == 404

    def test_graceful_delete_marks_then_removes(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        deleted = core.delete_namespaced_pod("p1", "default")
        assert deleted.metadata.deletion_timestamp is not None
        assert deleted.metadata.deletion_grace_period_seconds == 30
        standin.wait_for_pod("default", "p1", gone)

    def test_grace_in_the_body_is_honoured(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(Runs(ignore_sigterm=True))
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        options = client.V1DeleteOptions(grace_period_seconds=600)
        deleted = core.delete_namespaced_pod("p1", "default", body=options)
        assert deleted.metadata.deletion_grace_period_seconds == 600
        # Still terminating: the container ignores SIGTERM and the grace is long.
        assert core.read_namespaced_pod("p1", "default").metadata.deletion_timestamp
        core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
        with pytest.raises(ApiException):
            core.read_namespaced_pod("p1", "default")

    def test_missing_pod_is_not_found(self, core: client.CoreV1Api) -> None:
        with pytest.raises(ApiException) as err:
            core.delete_namespaced_pod("nope", "default")
        assert err.value.status == 404
        assert status_of(err.value)["reason"] == "NotFound"

    def test_uid_precondition_protects_a_recreated_pod(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="old-uid"))
        with pytest.raises(ApiException) as err:
            core.delete_namespaced_pod("p1", "default", body=options)
        assert err.value.status == 409
        assert status_of(err.value)["reason"] == "Conflict"

    def test_unscheduled_pod_is_deleted_at_once(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(StaysPending("Unschedulable"))
        core.create_namespaced_pod("default", pod_body("p1"))
        core.delete_namespaced_pod("p1", "default")
        assert standin.get_pod("default", "p1") is None

    def test_pod_on_an_undeclared_node_needs_a_forced_delete(self, core: client.CoreV1Api) -> None:
        core.create_namespaced_pod("default", pod_body("p1", node_name="elsewhere"))
        core.delete_namespaced_pod("p1", "default")
        pod = core.read_namespaced_pod("p1", "default")
        assert pod.metadata.deletion_timestamp is not None
        assert pod.status.phase == "Pending"
        core.delete_namespaced_pod("p1", "default", grace_period_seconds=0)
        with pytest.raises(ApiException):
            core.read_namespaced_pod("p1", "default")

    def test_delete_behind_the_clients_back(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        assert standin.delete_pod_now("default", "p1")
        with pytest.raises(ApiException):
            core.read_namespaced_pod("p1", "default")


@dataclass(frozen=True)
class ExitCase:
    name: str
    exit_code: int
    reason: str | None
    phase: str
    shown_reason: str


EXIT_CASES = [
    ExitCase("success", 0, None, "Succeeded", "Completed"),
    ExitCase("failure", 3, None, "Failed", "Error"),
    ExitCase("oom", 137, "OOMKilled", "Failed", "OOMKilled"),
]


class TestPodLife:
    @pytest.mark.parametrize("case", EXIT_CASES, ids=[c.name for c in EXIT_CASES])
    def test_exit_hook_ends_a_never_restarting_pod(
        self, standin: ThreadedStandin, core: client.CoreV1Api, case: ExitCase
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1", restart_policy="Never"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        standin.exit_pod("default", "p1", case.exit_code, reason=case.reason)
        pod = core.read_namespaced_pod("p1", "default")
        assert pod.status.phase == case.phase
        terminated = pod.status.container_statuses[0].state.terminated
        assert (terminated.exit_code, terminated.reason) == (case.exit_code, case.shown_reason)

    def test_always_restarts_with_count_and_last_state(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        standin.exit_pod("default", "p1", 1)

        def running_again(pod: dict[str, object] | None) -> bool:
            statuses = pod["status"]["containerStatuses"] if pod else []  # type: ignore[index]
            return bool(statuses) and "running" in statuses[0]["state"]

        standin.wait_for_pod("default", "p1", running_again)
        main = core.read_namespaced_pod("p1", "default").status.container_statuses[0]
        assert main.restart_count == 1
        assert main.last_state.terminated.exit_code == 1

    def test_exits_behaviour(self, standin: ThreadedStandin, core: client.CoreV1Api) -> None:
        standin.set_behaviour(Exits(2, logs="boom\n"), name="job-.*")
        core.create_namespaced_pod("default", pod_body("job-1", restart_policy="Never"))
        core.create_namespaced_pod("default", pod_body("svc-1", restart_policy="Never"))
        standin.wait_for_pod("default", "job-1", standin.phase_is("Failed"))
        standin.wait_for_pod("default", "svc-1", standin.phase_is("Running"))
        assert core.read_namespaced_pod_log("job-1", "default") == "boom\n"

    def test_unschedulable_pod_says_why(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(StaysPending("Unschedulable"), labels={"big": "yes"})
        core.create_namespaced_pod("default", pod_body("p1", labels={"big": "yes"}))

        def unschedulable(pod: dict[str, object] | None) -> bool:
            return pod is not None and bool(pod["status"].get("conditions"))  # type: ignore[attr-defined]

        pod = standin.wait_for_pod("default", "p1", unschedulable)
        assert pod is not None
        (cond,) = pod["status"]["conditions"]
        assert (cond["type"], cond["status"], cond["reason"]) == (
            "PodScheduled",
            "False",
            "Unschedulable",
        )
        assert "nodeName" not in pod["spec"]

    def test_image_pull_backoff_waits(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(StaysPending("ImagePullBackOff"))
        core.create_namespaced_pod("default", pod_body("p1", image="nope:1"))

        def backing_off(pod: dict[str, object] | None) -> bool:
            text = json.dumps(pod)
            return "ImagePullBackOff" in text

        standin.wait_for_pod("default", "p1", backing_off)
        main = core.read_namespaced_pod("p1", "default").status.container_statuses[0]
        assert main.state.waiting.reason == "ImagePullBackOff"
        assert main.state.waiting.message == 'Back-off pulling image "nope:1"'

    def test_missing_configmap_keeps_the_container_waiting(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        body = pod_body("p1")
        ref = {"configMapKeyRef": {"name": "settings", "key": "level"}}
        body["spec"]["containers"][0]["env"] = [{"name": "LEVEL", "valueFrom": ref}]
        core.create_namespaced_pod("default", body)

        def config_error(pod: dict[str, object] | None) -> bool:
            return "CreateContainerConfigError" in json.dumps(pod)

        standin.wait_for_pod("default", "p1", config_error)
        waiting = core.read_namespaced_pod("p1", "default").status.container_statuses[0]
        assert waiting.state.waiting.message == 'configmap "settings" not found'

    def test_runs_command_locally_with_env(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(RunsCommand())
        body = pod_body(
            "p1",
            command=["sh", "-c", "echo hello $(GREETING) $HOSTNAME; exit 4"],
            env={"GREETING": "world"},
            restart_policy="Never",
        )
        core.create_namespaced_pod("default", body)
        standin.wait_for_pod("default", "p1", standin.phase_is("Failed"))
        assert core.read_namespaced_pod_log("p1", "default") == "hello world p1\n"
        pod = core.read_namespaced_pod("p1", "default")
        assert pod.status.container_statuses[0].state.terminated.exit_code == 4


class TestFaultsAndRecording:
    def test_failed_creation_stores_nothing(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.fail(Fault("POST", r"/pods$", 403, "Forbidden", 'pods "p1" is forbidden: quota'))
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod("default", pod_body("p1"))
        assert err.value.status == 403
        assert status_of(err.value)["reason"] == "Forbidden"
        assert standin.pods() == []
        assert core.create_namespaced_pod("default", pod_body("p1")).metadata.name == "p1"

    def test_requests_are_recorded_with_query_and_body(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1", labels={"a": "b"}))
        core.list_namespaced_pod("default", label_selector="a=b")
        (create,) = standin.requests_to("POST", r"/namespaces/default/pods$")
        assert create.body["metadata"]["labels"] == {"a": "b"}
        (listing,) = standin.requests_to("GET", r"/namespaces/default/pods$")
        assert listing.query["labelSelector"] == ["a=b"]
