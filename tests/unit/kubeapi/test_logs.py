"""Pod logs through `read_namespaced_pod_log`: tail, limits, containers, follow."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import StaysPending, ThreadedStandin
from tests.kubeapi.fixtures import pod_body


@pytest.fixture
def running(standin: ThreadedStandin, core: client.CoreV1Api) -> str:
    core.create_namespaced_pod("default", pod_body("p1"))
    standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
    standin.write_log("default", "p1", "one\ntwo\nthree\n")
    return "p1"


class TestLogs:
    def test_whole_log(self, core: client.CoreV1Api, running: str) -> None:
        assert core.read_namespaced_pod_log(running, "default") == "one\ntwo\nthree\n"

    def test_tail_lines(self, core: client.CoreV1Api, running: str) -> None:
        assert core.read_namespaced_pod_log(running, "default", tail_lines=2) == "two\nthree\n"

    def test_limit_bytes(self, core: client.CoreV1Api, running: str) -> None:
        assert core.read_namespaced_pod_log(running, "default", limit_bytes=6) == "one\ntw"

    def test_timestamps_prefix_each_line(self, core: client.CoreV1Api, running: str) -> None:
        lines = core.read_namespaced_pod_log(running, "default", timestamps=True).splitlines()
        assert [line.split(" ", 1)[1] for line in lines] == ["one", "two", "three"]
        assert all(line.split(" ", 1)[0].endswith("Z") for line in lines)

    def test_container_must_be_named_when_there_are_several(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        containers = [{"name": "a", "image": "x:1"}, {"name": "b", "image": "x:1"}]
        core.create_namespaced_pod("default", pod_body("p2", containers=containers))
        standin.wait_for_pod("default", "p2", standin.phase_is("Running"))
        standin.write_log("default", "p2", "from b\n", container="b")
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod_log("p2", "default")
        assert err.value.status == 400
        assert json.loads(err.value.body)["message"] == (
            "a container name must be specified for pod p2, choose one of: [a b]"
        )
        assert core.read_namespaced_pod_log("p2", "default", container="b") == "from b\n"

    def test_waiting_container_has_no_log_yet(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        standin.set_behaviour(StaysPending("ContainerCreating"))
        core.create_namespaced_pod("default", pod_body("p2"))
        standin.wait_for_pod("default", "p2", lambda p: bool(p and p["spec"].get("nodeName")))
        with pytest.raises(ApiException) as err:
            core.read_namespaced_pod_log("p2", "default")
        assert err.value.status == 400
        assert "is waiting to start: ContainerCreating" in json.loads(err.value.body)["message"]

    def test_previous_instance_after_a_restart(
        self, standin: ThreadedStandin, core: client.CoreV1Api, running: str
    ) -> None:
        standin.exit_pod("default", running, 1)
        assert core.read_namespaced_pod_log(running, "default", previous=True) == (
            "one\ntwo\nthree\n"
        )

    def test_follow_streams_until_the_container_exits(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p3", restart_policy="Never"))
        standin.wait_for_pod("default", "p3", standin.phase_is("Running"))
        standin.write_log("default", "p3", "first\n")
        lines = watch.Watch().stream(
            core.read_namespaced_pod_log, "p3", "default", _request_timeout=30
        )
        assert next(lines) == "first"
        standin.write_log("default", "p3", "second\n")
        assert next(lines) == "second"
        standin.exit_pod("default", "p3", 0)
        assert list(lines) == []

    def test_follow_with_raw_response(
        self, standin: ThreadedStandin, core: client.CoreV1Api, running: str
    ) -> None:
        response = core.read_namespaced_pod_log(
            running, "default", follow=True, tail_lines=1, _preload_content=False
        )
        standin.exit_pod("default", running, 0)
        assert response.read() == b"three\n"
