"""Named kernel ports -> the engine's ExposedPorts and PortBindings."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from daemon.backends.docker.ports import (
    PublishedPort,
    exposed_ports,
    port_bindings,
    published_ports,
)


class TestPublishedPorts:
    def test_without_a_container_port_the_kernel_listens_on_its_host_port(self) -> None:
        assert published_ports({"http": 30001}, {}) == [PublishedPort("http", 30001, 30001)]

    def test_a_container_port_maps_onto_the_host_port(self) -> None:
        published = published_ports({"http": 30001, "ssh": 30002}, {"http": 8080, "ssh": 0})
        assert published == [PublishedPort("http", 8080, 30001), PublishedPort("ssh", 30002, 30002)]
        assert exposed_ports(published) == {"8080/tcp": {}, "30002/tcp": {}}
        assert port_bindings(published, "127.0.0.1") == {
            "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30001"}],
            "30002/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30002"}],
        }

    def test_two_names_on_one_container_port_are_refused(self) -> None:
        with pytest.raises(InvalidArgument) as err:
            published_ports({"a": 30001, "b": 30002}, {"a": 80, "b": 80})
        assert str(err.value) == "ports: 'a' and 'b' both use container port 80"

    def test_a_container_port_out_of_range_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as err:
            published_ports({"a": 30001}, {"a": 70000})
        assert str(err.value) == "ports: 'a': container_port 70000 is outside 1-65535"

    def test_no_ports_publish_nothing(self) -> None:
        assert published_ports({}, {}) == []
        assert port_bindings([], "0.0.0.0") == {}
