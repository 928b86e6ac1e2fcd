"""Backends: what a kernel is (a process group, a container, a pod).

Backend names resolve to classes through one import table, so an agent only
imports the client library its own backend needs (aiodocker, kubernetes). Each
backend is a package of the same shape (see `local/` and `docker/`) and is built
from its own settings model alone: it never sees the agent's whole config.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pydantic import BaseModel

from common.errors import FailedPrecondition
from common.ids import AgentId

if TYPE_CHECKING:
    from daemon.backends.base import Backend

BACKEND_CLASSES: dict[str, str] = {
    "local": "daemon.backends.local.backend:LocalBackend",
    "docker": "daemon.backends.docker.backend:DockerBackend",
    "kubernetes": "daemon.backends.kubernetes.backend:KubernetesBackend",
}


async def create_backend(
    backend: str, agent_id: AgentId, settings: BaseModel, identity: str
) -> Backend:
    """Build agent_id's backend from its own settings, importing only that backend's module.

    settings must be the model the backend declares (its `settings_model`).
    identity is the daemon's (see daemon.state_dir.daemon_identity): what the
    backend marks its kernels with so another daemon's are never touched.
    """
    target = BACKEND_CLASSES.get(backend)
    if target is None:
        raise FailedPrecondition(
            f"agent {agent_id!r}: backend {backend!r} is not available in this build; "
            f"available: {', '.join(BACKEND_CLASSES)}"
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not isinstance(settings, cls.settings_model):
        raise TypeError(
            f"agent {agent_id!r}: backend {backend!r} takes {cls.settings_model.__name__}, "
            f"not {type(settings).__name__}"
        )
    built: Backend = await cls.create(agent_id, settings, identity)
    return built
