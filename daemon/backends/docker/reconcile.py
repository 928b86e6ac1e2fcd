"""Ownership by label, liveness, and reaping the containers nobody owns.

Every kernel container carries `agenthost.daemon` (the daemon identity),
`agenthost.agent_id` and `agenthost.kernel_id`. A container is this agent's only
when the first two match exactly; containers of other agents or other daemons on
the same engine are never touched, and a handle whose container is no longer this
agent's is not alive. Knows labels and the engine; nothing of the agent's
checkpoint beyond the handle and the set of kernel ids it is given.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping
from typing import Any

from aiodocker.exceptions import DockerError

from common.errors import AgentHostError
from common.ids import KernelId
from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID
from daemon.backends.docker.engine import Engine, is_not_found
from daemon.backends.docker.handle import ContainerHandle


def ownership_labels(identity: str, agent_id: str) -> list[str]:
    """The label filters (`key=value`) that select this agent's containers."""
    return [f"{LABEL_DAEMON}={identity}", f"{LABEL_AGENT_ID}={agent_id}"]


def owned_by(labels: Mapping[str, str] | None, identity: str, agent_id: str) -> bool:
    """True when labels mark a container as this daemon's and this agent's."""
    labels = labels or {}
    return labels.get(LABEL_DAEMON) == identity and labels.get(LABEL_AGENT_ID) == agent_id


async def inspect(engine: Engine, container: str) -> dict[str, Any] | None:
    """The engine's inspection of a container (by id or name); None when it does not exist."""
    try:
        with engine.call("inspect container"):
            info: dict[str, Any] = await engine.get_json(f"containers/{container}/json")
            return info
    except DockerError as exc:
        if is_not_found(exc):
            return None
        raise AgentHostError(
            f"docker engine at {engine.url}: cannot inspect {container}: {exc.message}"
        ) from None


async def is_alive(engine: Engine, handle: ContainerHandle, identity: str, agent_id: str) -> bool:
    """True when the handle's container exists, is this daemon's and agent's, and runs."""
    info = await inspect(engine, handle.container_id)
    if info is None:
        return False
    if not owned_by(info.get("Config", {}).get("Labels"), identity, agent_id):
        return False
    return bool(info.get("State", {}).get("Running"))


async def owned_containers(engine: Engine, identity: str, agent_id: str) -> list[dict[str, Any]]:
    """Every container (running or not) labelled as this agent's."""
    filters = {"label": ownership_labels(identity, agent_id)}
    try:
        with engine.call("list containers"):
            found: list[dict[str, Any]] = await engine.get_json(
                "containers/json", {"all": True, "filters": json.dumps(filters)}
            )
    except DockerError as exc:
        raise AgentHostError(
            f"docker engine at {engine.url}: cannot list containers: {exc.message}"
        ) from None
    # The engine filtered already; checking again costs nothing and guards the rule.
    return [c for c in found if owned_by(c.get("Labels"), identity, agent_id)]


async def reap_dangling(
    engine: Engine, identity: str, agent_id: str, known: Container[KernelId]
) -> list[KernelId]:
    """Remove this agent's containers whose kernel id is not in known; return those ids."""
    reaped: set[KernelId] = set()
    for container in await owned_containers(engine, identity, agent_id):
        kernel_id = KernelId(container["Labels"].get(LABEL_KERNEL_ID, ""))
        if kernel_id in known:
            continue
        try:
            with engine.call("remove container"):
                await engine.client.containers.container(container["Id"]).delete(force=True)
        except DockerError as exc:
            if not is_not_found(exc):
                raise AgentHostError(
                    f"docker engine at {engine.url}: cannot remove dangling container "
                    f"{container['Id'][:12]}: {exc.message}"
                ) from None
        reaped.add(kernel_id)
    return sorted(reaped)
