"""Host ports: each named kernel port as a container port with its agent-range `hostPort`.

Pure: pairs every named host port with the port the kernel listens on inside the
pod (its `container_port`, or the host port number itself when none is given,
so that `PORT_<NAME>` is right on both sides). The agent already chose the host
ports; this module never picks one. A port's name becomes the container port's
name when Kubernetes' syntax allows it (see `names.port_name`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.errors import InvalidArgument
from daemon.backends.kubernetes.names import port_name


@dataclass(frozen=True)
class HostPort:
    """One named port of a kernel: its name in the pod, inside port and host port."""

    name: str | None
    container_port: int
    host_port: int


def host_ports(ports: Mapping[str, int], container_ports: Mapping[str, int]) -> list[HostPort]:
    """Pair every named host port with its container port (default: the same number)."""
    paired: list[HostPort] = []
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
        paired.append(HostPort(port_name(name), inside, host_port))
    return paired
