"""The container create request of a kernel, built from its LaunchSpec."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.ids import AgentId, KernelId
from daemon.backends.base import LaunchSpec
from daemon.backends.docker.spec import container_config, container_name, numeric_user

MIB = 1 << 20


def launch(**fields: object) -> LaunchSpec:
    values: dict[str, object] = {
        "agent_id": AgentId("d0"),
        "kernel_id": KernelId("k1"),
        "image": "img:1",
        "command": ("sleep", "5"),
        "env": {"B": "2", "A": "1"},
        "labels": {"agenthost.agent_id": "d0", "team": "ml"},
        "workdir": Path("/tmp/k1"),
        "cores": (1,),
        "memory_limit": 64 * MIB,
        "ports": {"http": 30001},
        "container_ports": {"http": 8080},
    }
    values.update(fields)
    return LaunchSpec(**values)  # type: ignore[arg-type]


class TestContainerConfig:
    def test_a_kernel_becomes_one_create_request(self) -> None:
        config = container_config(launch(), "img:1", "127.0.0.1", init=False, stop_timeout=2.5)
        assert config == {
            "Image": "img:1",
            "Cmd": ["sleep", "5"],
            "Env": ["A=1", "B=2"],
            "Labels": {"agenthost.agent_id": "d0", "team": "ml"},
            "Hostname": "k1",
            "ExposedPorts": {"8080/tcp": {}},
            "StopTimeout": 3,
            "HostConfig": {
                "CpusetCpus": "1",
                "Memory": 64 * MIB,
                "MemorySwap": 64 * MIB,
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30001"}]},
                "Init": False,
                "RestartPolicy": {"Name": "no"},
            },
        }

    def test_no_command_keeps_the_images_own(self) -> None:
        config = container_config(launch(command=()), "img:1", "0.0.0.0", init=True, stop_timeout=1)
        assert "Cmd" not in config
        assert config["HostConfig"]["Init"] is True

    def test_the_first_network_is_joined_at_create_with_the_kernel_id_as_alias(self) -> None:
        config = container_config(
            launch(), "img:1", "0.0.0.0", init=False, stop_timeout=1, networks=["net-a", "net-b"]
        )
        assert config["HostConfig"]["NetworkMode"] == "net-a"
        assert config["NetworkingConfig"] == {"EndpointsConfig": {"net-a": {"Aliases": ["k1"]}}}

    def test_container_names_are_namespaced_by_daemon_and_agent(self) -> None:
        assert container_name("abc", "d0", "k1") == "agenthost-abc-d0-k1"
        assert container_name("abc", "d0", "k1") != container_name("abd", "d0", "k1")
        assert container_name("abc", "d0", "k1") != container_name("abc", "d1", "k1")

    def test_run_as_becomes_the_containers_user(self) -> None:
        config = container_config(
            launch(), "img:1", "0.0.0.0", init=False, stop_timeout=1, user="1000:1000"
        )
        assert config["User"] == "1000:1000"
        assert "User" not in container_config(launch(), "img:1", "0.0.0.0", False, 1)


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        (None, (None, None)),
        ("1000", (1000, 1000)),
        ("1000:50", (1000, 50)),
        ("nobody", (None, None)),
        ("1000:staff", (1000, None)),
    ],
    ids=["image-default", "uid", "uid-gid", "name", "uid-group-name"],
)
def test_a_numeric_user_is_reported_as_uid_and_gid(
    user: str | None, ids: tuple[int | None, int | None]
) -> None:
    assert numeric_user(user) == ids
