"""Exec through `kubernetes.stream.stream`, reading channels and the exit code."""

from __future__ import annotations

import json

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, V4_CHANNEL_PROTOCOL, WSClient

from tests.kubeapi import ThreadedStandin, standin_in_thread
from tests.kubeapi.fixtures import pod_body


def start_pod(standin: ThreadedStandin, core: client.CoreV1Api, name: str = "p1") -> str:
    core.create_namespaced_pod("default", pod_body(name, env={"AGENT": "a0"}))
    standin.wait_for_pod("default", name, standin.phase_is("Running"))
    return name


def open_exec(core: client.CoreV1Api, pod: str, command: list[str], **kw: bool) -> WSClient:
    options = {"stdin": False, "stdout": True, "stderr": True, "tty": False, **kw}
    session: WSClient = stream(
        core.connect_get_namespaced_pod_exec,
        pod,
        "default",
        command=command,
        _preload_content=False,
        **options,
    )
    return session


class TestExec:
    def test_stdout_and_success(self, standin: ThreadedStandin, core: client.CoreV1Api) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["echo", "hi"])
        session.run_forever(timeout=30)
        assert session.read_stdout() == "hi\n"
        assert session.returncode == 0

    def test_exit_code_and_stderr(self, standin: ThreadedStandin, core: client.CoreV1Api) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["sh", "-c", "echo oops >&2; exit 3"])
        session.run_forever(timeout=30)
        assert session.read_stderr() == "oops\n"
        assert session.returncode == 3

    def test_error_channel_carries_the_kubelets_status(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["sh", "-c", "exit 3"])
        session.run_forever(timeout=30)
        status = json.loads(session.read_channel(ERROR_CHANNEL))
        assert status["status"] == "Failure"
        assert status["reason"] == "NonZeroExitCode"
        assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

    def test_stdin_closed_with_v5(self, standin: ThreadedStandin, core: client.CoreV1Api) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["sh", "-c", "cat; echo done"], stdin=True)
        assert session.subprotocol == "v5.channel.k8s.io"
        session.write_stdin("hello\n")
        session.close_channel(0)
        session.run_forever(timeout=30)
        assert session.read_stdout() == "hello\ndone\n"
        assert session.returncode == 0

    def test_v4_when_the_server_offers_only_v4(self) -> None:
        with (
            standin_in_thread(exec_protocols=(V4_CHANNEL_PROTOCOL,)) as api,
            client.ApiClient(api.configuration()) as api_client,
        ):
            core = client.CoreV1Api(api_client)
            pod = start_pod(api, core)
            session = open_exec(core, pod, ["head", "-n", "1"], stdin=True)
            assert session.subprotocol == V4_CHANNEL_PROTOCOL
            session.write_stdin("line\nignored\n")
            session.run_forever(timeout=30)
            assert session.read_stdout() == "line\n"
            assert session.returncode == 0

    def test_runs_with_the_containers_env(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        pod = start_pod(standin, core)
        output = stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            "default",
            command=["sh", "-c", "echo $AGENT $HOSTNAME"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
        )
        assert output == "a0 p1\n"

    def test_tty_gives_a_terminal(self, standin: ThreadedStandin, core: client.CoreV1Api) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["sh", "-c", "test -t 1 && echo terminal"], tty=True)
        session.run_forever(timeout=30)
        assert session.read_stdout() == "terminal\r\n"
        assert session.returncode == 0

    def test_missing_binary_is_an_internal_error_status(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        pod = start_pod(standin, core)
        session = open_exec(core, pod, ["no-such-binary"])
        session.run_forever(timeout=30)
        status = json.loads(session.read_channel(ERROR_CHANNEL))
        assert status["reason"] == "InternalError"
        assert 'exec: "no-such-binary": executable file not found in $PATH' in status["message"]

    def test_completed_pod_refuses_the_upgrade(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1", restart_policy="Never"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        standin.exit_pod("default", "p1", 0)
        with pytest.raises(ApiException) as err:
            open_exec(core, "p1", ["true"])
        assert "400" in str(err.value.reason)

    def test_plain_http_exec_is_refused(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        pod = start_pod(standin, core)
        with pytest.raises(ApiException) as err:
            core.connect_get_namespaced_pod_exec(pod, "default", command=["true"], stdout=True)
        assert err.value.status == 400
        assert json.loads(err.value.body)["message"] == "Upgrade request required"
