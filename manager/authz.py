"""Who may call the manager: the authorization policy of its gRPC server.

Deny by default, decided here for every method:
- daemon-facing calls (`RegisterAgents`, `Heartbeat`) need a daemon certificate
  (the manager's daemon port requires client certificates); the daemon's identity
  is the certificate's name;
- user calls need a bearer token (`authorization: Bearer aht_...` metadata), or an
  admin user certificate; admin-only calls (tokens, removing agents) need an admin;
- a kernel's delegated token may only make the kernel calls of `DELEGATED_METHODS`
  (create, list, get, wait, watch, exec, logs, destroy; the core then holds it to
  its own kernels, its scaling group and its limits);
- health and reflection answer anyone who reached the port.
What a principal may do with a particular kernel or scaling group is decided by
the core, which receives the principal. A plaintext manager (`insecure = true`,
loopback only) still requires tokens from users; daemons are then taken at their
word. Knows metadata, certificates and the token table; nothing of kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from common.credentials import identity_of
from common.errors import PermissionDenied, Unauthenticated
from common.interceptors import Policy
from common.principal import Principal
from manager.tokens import TokenTable

if TYPE_CHECKING:
    import grpc

SERVICE = "/agenthost.v1.ManagerService/"
DAEMON_METHODS = frozenset(SERVICE + m for m in ("RegisterAgents", "RegisterKernels", "Heartbeat"))
ADMIN_METHODS = frozenset(
    SERVICE + m for m in ("RemoveAgent", "CreateToken", "ListTokens", "RevokeToken", "PruneKernels")
)
DELEGATED_METHODS = frozenset(
    SERVICE + m
    for m in (
        "ListAgents",
        "CreateKernel",
        "ListKernels",
        "GetKernel",
        "DestroyKernel",
        "Execute",
        "GetKernelLogs",
        "StreamKernelLogs",
        "WaitKernel",
        "WatchKernels",
    )
)
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
TOKEN_HINT = (
    "give a bearer token (metadata 'authorization: Bearer aht_...'; the agenthost CLI "
    "reads --token, AGENTHOST_TOKEN or $AGENTHOST_HOME/token)"
)
ANONYMOUS = Principal(kind="insecure", role="user", name="anonymous")


def bearer_token(metadata: Any) -> str | None:
    """The token of an `authorization: Bearer <token>` metadata entry, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
            raise Unauthenticated("the authorization metadata is not 'Bearer <token>'")
    return None


def manager_policy(tokens: TokenTable, insecure: bool) -> Policy:
    """The manager's policy over tokens (TLS or plaintext on loopback)."""

    def policy(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        if method.startswith(OPEN_PREFIXES):
            return ANONYMOUS
        if method in DAEMON_METHODS:
            identity = None if insecure else identity_of(context.auth_context())
            if insecure:
                return Principal(kind="insecure", role="daemon", name="loopback")
            if identity is None or identity.role != "daemon":
                who = str(identity) if identity else "a caller without a client certificate"
                raise PermissionDenied(
                    f"{who} may not call {method}: only daemons, with their daemon certificate "
                    "on the manager's daemon port (daemon_listen), register and heartbeat",
                    caller=f"{identity.role}/{identity.name}" if identity else "",
                )
            return Principal(kind="certificate", role="daemon", name=identity.name)
        token = bearer_token(context.invocation_metadata())
        if token is None:
            identity = None if insecure else identity_of(context.auth_context())
            if identity is not None and identity.role == "user" and identity.admin:
                return Principal(kind="certificate", role="user", name=identity.name, admin=True)
            raise Unauthenticated(f"{method} needs a user: {TOKEN_HINT}")
        principal = tokens.authenticate(token).principal()
        if method in ADMIN_METHODS and not principal.admin:
            raise PermissionDenied(
                f"{principal} may not call {method}: it needs an admin token", caller=str(principal)
            )
        if principal.delegated and method not in DELEGATED_METHODS:
            raise PermissionDenied(
                f"{principal} is the delegated token of kernel {principal.parent_kernel_id!r}: "
                f"it may not call {method}, only create, list, get, wait for, watch, exec in, "
                "read the logs of and destroy kernels",
                caller=str(principal),
            )
        return principal

    return policy
