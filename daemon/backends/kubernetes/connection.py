"""Where an agent's API server is and how the daemon proves who it is to it.

A kubeconfig named in the agent's table wins (its current context: server,
certificates, token); without one the daemon runs in a pod and uses the pod's
service account (the in-cluster configuration: the API server from the
`KUBERNETES_SERVICE_*` environment, the token and CA from the mounted secret,
the token re-read when it rotates). Either failing is a set-up problem the
operator has to fix, said once when the agent is built. Knows the client's
configuration loaders; nothing of pods or of the agent.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from common.errors import FailedPrecondition

# Extra attempts of a request whose connection failed (connect errors only for
# non-idempotent requests): one, so that a reset connection does not fail a call,
# while a server that is down is reported at once.
RETRIES = 1


def load_configuration(agent_id: str, kubeconfig: Path | None) -> client.Configuration:
    """The client configuration of agent_id's API server (blocking: reads files)."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(
                config_file=str(kubeconfig),
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        source = (
            f"kubeconfig {kubeconfig}"
            if kubeconfig is not None
            else "the in-cluster service account (is the daemon running in a pod?)"
        )
        raise FailedPrecondition(
            f"agent {agent_id!r}: kubernetes: cannot load {source}: {exc}; give "
            "kubernetes.kubeconfig, or run the daemon in a pod with a service account"
        ) from None
    configuration.retries = RETRIES
    return configuration
