"""How members find each other: the env and labels each gets, and the topology.

Every member gets `AGENTHOST_GROUP`, `AGENTHOST_ROLE`, `AGENTHOST_REPLICA`, and for
each role it depends on (every other role under Peer) `AGENTHOST_PEERS_<ROLE>`:
the comma-separated `host:port` of that role's members, with the node's address
and the host port of the role's first named port (only the host for a role
without ports), plus `AGENTHOST_PEERS_<ROLE>_<PORT>` for each named port when the
role has several. Role and port names are upper-cased, `-` becomes `_`. Members
carry the labels below; `agenthost.io/group-uid` tells a member of this group
from one of an earlier group of the same name.

Pure: knows endpoints as (host, ports); nothing of kernels, agents or gRPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

LABEL_GROUP = "agenthost.io/group"
LABEL_ROLE = "agenthost.io/role"
LABEL_REPLICA = "agenthost.io/replica"
LABEL_UID = "agenthost.io/group-uid"

ENV_GROUP = "AGENTHOST_GROUP"
ENV_ROLE = "AGENTHOST_ROLE"
ENV_REPLICA = "AGENTHOST_REPLICA"
ENV_PEERS = "AGENTHOST_PEERS_"


@dataclass(frozen=True)
class Endpoint:
    """Where one member is: its node's address and its host ports by name."""

    host: str
    ports: Mapping[str, int]


def env_key(name: str) -> str:
    """A role or port name as it appears in a variable name: 'data-loader' -> 'DATA_LOADER'."""
    return name.upper().replace("-", "_")


def peers_env(
    role: str, port_names: Sequence[str], endpoints: Iterable[Endpoint]
) -> dict[str, str]:
    """The AGENTHOST_PEERS_<ROLE>[_<PORT>] variables describing one role's members."""
    endpoints = list(endpoints)
    key = ENV_PEERS + env_key(role)
    if not port_names:
        return {key: ",".join(e.host for e in endpoints)}
    first = port_names[0]
    out = {key: ",".join(f"{e.host}:{e.ports.get(first, 0)}" for e in endpoints)}
    if len(port_names) > 1:
        for name in port_names:
            out[f"{key}_{env_key(name)}"] = ",".join(
                f"{e.host}:{e.ports.get(name, 0)}" for e in endpoints
            )
    return out


def identity_env(group: str, role: str, index: int) -> dict[str, str]:
    """Which group, role and replica a member is."""
    return {ENV_GROUP: group, ENV_ROLE: role, ENV_REPLICA: str(index)}


def member_labels(group: str, uid: str, role: str, index: int) -> dict[str, str]:
    """The labels of a member's kernel."""
    return {LABEL_GROUP: group, LABEL_UID: uid, LABEL_ROLE: role, LABEL_REPLICA: str(index)}


def host_of(address: str) -> str:
    """The host of a host:port address ('[::1]:6001' -> '::1')."""
    host = address.rpartition(":")[0] if ":" in address else address
    return host.strip("[]")
