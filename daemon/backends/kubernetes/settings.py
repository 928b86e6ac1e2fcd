"""The `kubernetes` table of an agent: the kubernetes backend's settings, and nothing else.

The daemon's config reads it for every agent, whatever the agents' backends, so
this module imports only pydantic and `common/`: never the kubernetes client.
"""

from __future__ import annotations

from pydantic import Field

from common.config import StrictModel


class KubernetesSettings(StrictModel):
    """The `kubernetes` table of an agent whose backend is kubernetes."""

    namespace: str = Field("default", description="namespace the agent's pods live in")
    kubeconfig: str | None = Field(None, description="kubeconfig path; default: in-cluster")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="node selector put on every pod of the agent"
    )
