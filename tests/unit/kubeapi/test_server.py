"""The server itself: going down and up, auth, kubeconfig, async use, recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from tests.kubeapi import StandinApiServer, ThreadedStandin, standin_in_thread
from tests.kubeapi.fixtures import pod_body


class TestDownAndUp:
    def test_down_refuses_connections_and_up_keeps_state_and_port(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1"))
        port = standin.port
        standin.go_down()
        with pytest.raises(urllib3.exceptions.MaxRetryError) as err:
            core.read_namespaced_pod("p1", "default")
        assert isinstance(err.value.reason, urllib3.exceptions.NewConnectionError)
        standin.come_up()
        assert standin.port == port
        assert core.read_namespaced_pod("p1", "default").metadata.name == "p1"

    def test_up_without_state_is_an_empty_cluster(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        old_rv = core.create_namespaced_pod("default", pod_body("p1")).metadata.resource_version
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        standin.go_down()
        standin.come_up(keep_state=False)
        assert core.list_namespaced_pod("default").items == []
        assert core.read_namespace("default").metadata.name == "default"
        with pytest.raises(ApiException) as err:
            list(
                watch.Watch().stream(
                    core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=5
                )
            )
        assert err.value.status == 504  # "Too large resource version" from a rebuilt cluster

    def test_going_down_cuts_an_open_watch(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        start = core.list_namespaced_pod("default").metadata.resource_version
        core.create_namespaced_pod("default", pod_body("p1"))
        events = watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=start, _request_timeout=30
        )
        assert next(events)["type"] == "ADDED"
        standin.go_down()
        with pytest.raises((urllib3.exceptions.HTTPError, ApiException)):
            for _ in events:
                pass

    def test_pods_live_on_while_the_server_is_down(
        self, standin: ThreadedStandin, core: client.CoreV1Api
    ) -> None:
        core.create_namespaced_pod("default", pod_body("p1", restart_policy="Never"))
        standin.wait_for_pod("default", "p1", standin.phase_is("Running"))
        standin.go_down()
        standin.exit_pod("default", "p1", 0)
        standin.come_up()
        assert core.read_namespaced_pod("p1", "default").status.phase == "Succeeded"


class TestAuthAndKubeconfig:
    def test_kubeconfig_with_token_is_accepted(self, tmp_path: Path) -> None:
        with standin_in_thread(token="s3cret") as api:
            configuration = client.Configuration()
            config.load_kube_config(
                config_file=str(api.kubeconfig(tmp_path / "kubeconfig")),
                client_configuration=configuration,
            )
            with client.ApiClient(configuration) as api_client:
                core = client.CoreV1Api(api_client)
                assert core.read_namespace("default").metadata.name == "default"
                assert api.requests[-1].headers["Authorization"] == "Bearer s3cret"

    def test_missing_token_is_unauthorized(self) -> None:
        with standin_in_thread(token="s3cret") as api:
            configuration = client.Configuration()
            configuration.host = api.url
            with client.ApiClient(configuration) as api_client, pytest.raises(ApiException) as err:
                client.CoreV1Api(api_client).list_namespaced_pod("default")
            assert api.requests[-1].path == "/api/v1/namespaces/default/pods"  # refused, recorded
        assert err.value.status == 401

    def test_exec_carries_the_token(self) -> None:
        with (
            standin_in_thread(token="s3cret") as api,
            client.ApiClient(api.configuration()) as api_client,
        ):
            core = client.CoreV1Api(api_client)
            core.create_namespaced_pod("default", pod_body("p1"))
            api.wait_for_pod("default", "p1", api.phase_is("Running"))
            out = stream(
                core.connect_get_namespaced_pod_exec,
                "p1",
                "default",
                command=["echo", "ok"],
                stdout=True,
                stderr=False,
                stdin=False,
                tty=False,
            )
        assert out == "ok\n"


class TestAsyncUse:
    async def test_async_context_manager_with_the_client_in_a_thread(self) -> None:
        async with StandinApiServer(namespaces=("default", "agents")) as api:
            with client.ApiClient(api.configuration()) as api_client:
                core = client.CoreV1Api(api_client)
                await asyncio.to_thread(core.create_namespaced_pod, "agents", pod_body("p1"))
                await api.wait_for_pod("agents", "p1", api.phase_is("Running"))
                api.write_log("agents", "p1", "hello\n")
                log = await asyncio.to_thread(core.read_namespaced_pod_log, "p1", "agents")
                assert log == "hello\n"
                await api.go_down()
                await api.come_up()
                pod = await asyncio.to_thread(core.read_namespaced_pod, "p1", "agents")
                assert pod.status.phase == "Running"
