"""The `kubernetes` table of an agent: the kubernetes backend's settings, and nothing else.

The daemon's config reads it for every agent, whatever the agents' backends, so
this module imports only pydantic, `common/` and the dependency-free name rules
of this package: never the kubernetes client. What depends on the file around
it (a kubeconfig path relative to the config file, the daemon's node as the
default `node_name`) is resolved by `daemon/config.py`; the backend receives this
model alone, already resolved.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from common.config import StrictModel
from daemon.backends.kubernetes.names import (
    dns_label_problem,
    dns_subdomain_problem,
    label_key_problem,
    label_value_problem,
)


class KubernetesSettings(StrictModel):
    """The `kubernetes` table of an agent whose backend is kubernetes."""

    namespace: str = Field("default", description="namespace the agent's pods live in")
    kubeconfig: Path | None = Field(
        None,
        description=(
            "kubeconfig file (relative: to this config file); default: the in-cluster "
            "service account of the daemon's pod"
        ),
    )
    node_name: str | None = Field(
        None,
        description=(
            "node every pod of the agent is bound to (spec.nodeName); default: the daemon's "
            "node ([daemon] node, or agenthost daemon --node), unless node_selector is given"
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "node selector put on every pod of the agent; without node_name the scheduler "
            "places the pods, so it must select this daemon's node only"
        ),
    )
    run_as: int | None = Field(
        None,
        ge=0,
        description="uid the kernels' containers run as (runAsUser); pods run as non-root always",
    )
    default_image: str | None = Field(
        None, description="image of kernels whose spec names none; without it an image is required"
    )
    start_timeout: float = Field(
        300.0,
        gt=0,
        description=(
            "seconds a pod may take to start (image pull included) before its create fails"
        ),
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        problem = dns_label_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str | None) -> str | None:
        problem = None if value is None else dns_subdomain_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("node_selector")
    @classmethod
    def _node_selector(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            problem = label_key_problem(key) or label_value_problem(label)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("default_image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name an image, or be left out")
        return value
