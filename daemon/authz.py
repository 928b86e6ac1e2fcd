"""Who may call the daemon: the authorization policy of its gRPC server.

Deny by default. With TLS every peer has a certificate of the cluster CA (the
server requires one); `AgentService` is for the manager and for admin user
certificates only, so a daemon or an ordinary user certificate cannot drive
another node's agents. Health and reflection answer any certificate holder. A
plaintext daemon (`insecure = true`, loopback only) cannot tell who calls.
Knows certificates and method names; nothing of agents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.credentials import identity_of
from common.errors import PermissionDenied, Unauthenticated
from common.interceptors import Policy
from common.principal import INSECURE_CALLER, Principal

if TYPE_CHECKING:
    import grpc

AGENT_SERVICE = "/agenthost.v1.AgentService/"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def daemon_policy(insecure: bool) -> Policy:
    """The policy of a daemon serving plaintext (insecure) or mutual TLS."""

    def policy(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        if insecure:
            return INSECURE_CALLER
        identity = identity_of(context.auth_context())
        if identity is None:
            raise Unauthenticated(
                "a client certificate of the cluster CA carrying an agenthost identity is required"
            )
        principal = Principal(
            kind="certificate",
            role=identity.role,
            name=identity.name,
            admin=identity.admin or identity.role == "manager",
        )
        if method.startswith(OPEN_PREFIXES):
            return principal
        if method.startswith(AGENT_SERVICE) and principal.admin:
            return principal
        raise PermissionDenied(
            f"{identity} may not call {method}: the daemon's AgentService answers only the "
            "manager and admin user certificates",
            caller=str(principal),
        )

    return policy
