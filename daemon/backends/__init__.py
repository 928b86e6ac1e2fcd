"""Backends: what a kernel is (a process group, a container, a pod).

Backend names resolve to classes through one import table, so an agent only
imports the client library its own backend needs (aiodocker, kubernetes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from common.errors import FailedPrecondition

if TYPE_CHECKING:
    from daemon.backends.base import Backend
    from daemon.config import AgentConfig

BACKEND_CLASSES: dict[str, str] = {
    "local": "daemon.backends.local.backend:LocalBackend",
    "docker": "daemon.backends.docker.backend:DockerBackend",
}


async def create_backend(agent: AgentConfig, identity: str) -> Backend:
    """Build the backend an agent's config names, importing only its module.

    identity is the daemon's (see daemon.ids.daemon_identity): what the backend
    marks its kernels with so another daemon's are never touched.
    """
    target = BACKEND_CLASSES.get(agent.backend)
    if target is None:
        raise FailedPrecondition(
            f"agent {agent.id!r}: backend {agent.backend!r} is not available in this build; "
            f"available: {', '.join(BACKEND_CLASSES)}"
        )
    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = await cls.create(agent, identity)
    return backend
