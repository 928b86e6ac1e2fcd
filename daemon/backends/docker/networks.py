"""Agent-scoped bridge networks: create, destroy, and resolve the ones a kernel joins.

A network's engine name is namespaced by the daemon identity and the agent id,
and it carries the same ownership labels as containers, so two agents (or two
daemons on one engine) may each have a network called "session1" and never see
each other's. Kernels join at create with their kernel id as DNS alias.
Knows networks and the engine; nothing of slots, ports or gRPC.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiodocker.exceptions import DockerError
from aiodocker.networks import DockerNetwork

from common.errors import AgentHostError, AlreadyExists, FailedPrecondition, NotFound
from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON
from daemon.backends.docker.engine import Engine, is_not_found
from daemon.backends.docker.spec import PREFIX, endpoint

LABEL_NETWORK = "agenthost.network"


def network_name(identity: str, agent_id: str, name: str) -> str:
    """The engine's name of an agent's network."""
    return f"{PREFIX}-{identity}-{agent_id}-{name}"


def network_labels(identity: str, agent_id: str, name: str) -> dict[str, str]:
    """The labels that mark a network as this daemon's and this agent's."""
    return {LABEL_DAEMON: identity, LABEL_AGENT_ID: agent_id, LABEL_NETWORK: name}


class AgentNetworks:
    """The networks of one agent on one engine."""

    def __init__(self, engine: Engine, identity: str) -> None:
        self.engine = engine
        self.identity = identity

    async def create(self, agent_id: str, name: str) -> str:
        """Create the bridge network; return the engine's id for it."""
        full = network_name(self.identity, agent_id, name)
        config = {
            "Name": full,
            "Driver": "bridge",
            "CheckDuplicate": True,
            "Labels": network_labels(self.identity, agent_id, name),
        }
        try:
            with self.engine.call("create network"):
                network = await self.engine.client.networks.create(config)
        except DockerError as exc:
            if exc.status == 409:
                raise AlreadyExists(
                    f"network {name!r} already exists on agent {agent_id!r}"
                ) from None
            raise AgentHostError(
                f"docker engine at {self.engine.url}: cannot create network {name!r}: {exc.message}"
            ) from None
        network_id: str = network.id
        return network_id

    async def destroy(self, agent_id: str, name: str) -> None:
        """Remove the network; it must exist and have no kernel attached."""
        info = await self._inspect(agent_id, name)
        try:
            with self.engine.call("remove network"):
                await DockerNetwork(self.engine.client, info["Id"]).delete()
        except DockerError as exc:
            if is_not_found(exc):
                return
            if exc.status == 403:
                raise FailedPrecondition(
                    f"network {name!r} of agent {agent_id!r} still has kernels attached "
                    f"({', '.join(_attached(info)) or 'unknown'}); destroy them first"
                ) from None
            raise AgentHostError(
                f"docker engine at {self.engine.url}: cannot remove network {name!r}: {exc.message}"
            ) from None

    async def resolve(self, agent_id: str, names: Sequence[str]) -> list[str]:
        """The engine names of the networks a kernel joins; NotFound for a missing one."""
        return [(await self._inspect(agent_id, name))["Name"] for name in names]

    async def connect(self, network: str, container_id: str, kernel_id: str) -> None:
        """Attach a created (not yet started) container to one more network."""
        with self.engine.call("connect network"):
            await self.engine.post_json(
                f"networks/{network}/connect",
                {"Container": container_id, "EndpointConfig": endpoint(kernel_id)},
            )

    async def _inspect(self, agent_id: str, name: str) -> dict[str, Any]:
        full = network_name(self.identity, agent_id, name)
        try:
            with self.engine.call("inspect network"):
                info: dict[str, Any] = await self.engine.get_json(f"networks/{full}")
        except DockerError as exc:
            if not is_not_found(exc):
                raise AgentHostError(
                    f"docker engine at {self.engine.url}: cannot inspect network {name!r}: "
                    f"{exc.message}"
                ) from None
            info = {}
        labels = info.get("Labels") or {}
        if info.get("Name") != full or labels.get(LABEL_DAEMON) != self.identity:
            raise NotFound(
                f"network {name!r} not found on agent {agent_id!r}; create it with CreateNetwork"
            )
        return info


def _attached(info: dict[str, Any]) -> list[str]:
    return sorted(c.get("Name", "?") for c in (info.get("Containers") or {}).values())
