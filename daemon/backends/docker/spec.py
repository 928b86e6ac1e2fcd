"""The container create request of one kernel, built from its `LaunchSpec`.

Pure: image, command, environment, labels (the agenthost.* ownership labels come
in the launch spec), the resource fields, published ports, an init process, the
user it runs as, and the first agent network (with the kernel id as its DNS alias). Also the names
the engine knows a kernel's container by. No I/O, no engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from daemon.backends.base import LaunchSpec
from daemon.backends.docker.ports import exposed_ports, port_bindings, published_ports
from daemon.backends.docker.resources import host_resources

PREFIX = "agenthost"


def container_name(identity: str, agent_id: str, kernel_id: str) -> str:
    """The container's name: unique per daemon, agent and kernel."""
    return f"{PREFIX}-{identity}-{agent_id}-{kernel_id}"


def endpoint(kernel_id: str) -> dict[str, Any]:
    """How a kernel joins a network: reachable there by its kernel id."""
    return {"Aliases": [kernel_id]}


def container_config(
    launch: LaunchSpec,
    image: str,
    host_ip: str,
    init: bool,
    stop_timeout: float,
    networks: Sequence[str] = (),
    user: str | None = None,
) -> dict[str, Any]:
    """The body of the engine's container create call for this kernel.

    networks are the engine's names of the agent networks to join; the first is
    joined at create, the others must be connected before start (the engine's
    API before 1.44 takes one network at create). user, when given, is the
    container's User (the agent's docker.run_as).
    """
    published = published_ports(launch.ports, launch.container_ports)
    host_config: dict[str, Any] = {
        **host_resources(launch.cores, launch.memory_limit, launch.cpu_quota, launch.devices),
        "PortBindings": port_bindings(published, host_ip),
        "Init": init,
        "RestartPolicy": {"Name": "no"},
        # The engine caps the kernel's output itself (two files of log_max_bytes).
        **(
            {
                "LogConfig": {
                    "Type": "json-file",
                    "Config": {"max-size": str(launch.log_max_bytes), "max-file": "2"},
                }
            }
            if launch.log_max_bytes
            else {}
        ),
    }
    config: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in sorted(launch.env.items())],
        "Labels": dict(launch.labels),
        "Hostname": launch.kernel_id,
        "ExposedPorts": exposed_ports(published),
        "StopTimeout": math.ceil(stop_timeout),
        "HostConfig": host_config,
    }
    if launch.command:
        config["Cmd"] = list(launch.command)
    if user:
        config["User"] = user
    if networks:
        host_config["NetworkMode"] = networks[0]
        config["NetworkingConfig"] = {"EndpointsConfig": {networks[0]: endpoint(launch.kernel_id)}}
    return config


def numeric_user(user: str | None) -> tuple[int | None, int | None]:
    """The uid and gid a User of "uid" or "uid:gid" names (None where a name or nothing is)."""
    if not user:
        return None, None
    uid, _, gid = user.partition(":")
    return (
        int(uid) if uid.isdigit() else None,
        int(gid) if gid.isdigit() else (int(uid) if uid.isdigit() and not gid else None),
    )
