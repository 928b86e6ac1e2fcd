"""Published ports: each named kernel port on its host port from the agent's range.

Pure functions from a kernel's named ports to the engine's `ExposedPorts` and
`PortBindings`. A port without a container port listens inside on the same
number as its host port, so `PORT_<NAME>` is right on both sides. The agent
already chose the host ports; this module never picks one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.errors import InvalidArgument


@dataclass(frozen=True)
class PublishedPort:
    """One named port: where it listens inside the container and on the host."""

    name: str
    container_port: int
    host_port: int

    @property
    def key(self) -> str:
        """The engine's name for the container side, e.g. '8080/tcp'."""
        return f"{self.container_port}/tcp"


def published_ports(
    ports: Mapping[str, int], container_ports: Mapping[str, int]
) -> list[PublishedPort]:
    """Pair every named host port with its container port (default: the same number)."""
    published: list[PublishedPort] = []
    owner: dict[int, str] = {}
    for name, host_port in sorted(ports.items()):
        inside = container_ports.get(name) or host_port
        if not 1 <= inside <= 65535:
            raise InvalidArgument(f"ports: {name!r}: container_port {inside} is outside 1-65535")
        if inside in owner:
            raise InvalidArgument(
                f"ports: {owner[inside]!r} and {name!r} both use container port {inside}"
            )
        owner[inside] = name
        published.append(PublishedPort(name=name, container_port=inside, host_port=host_port))
    return published


def exposed_ports(published: list[PublishedPort]) -> dict[str, dict[str, str]]:
    """`ExposedPorts` of the container config."""
    return {p.key: {} for p in published}


def port_bindings(published: list[PublishedPort], host_ip: str) -> dict[str, list[dict[str, str]]]:
    """`HostConfig.PortBindings`: each container port on its host port at host_ip."""
    return {p.key: [{"HostIp": host_ip, "HostPort": str(p.host_port)}] for p in published}
