"""The `docker` table of an agent: the docker backend's settings, and nothing else.

The daemon's config reads it for every agent (a table may sit in `[defaults]`),
whatever the agents' backends, so this module imports only pydantic and
`common/`: never aiodocker. The backend receives this model alone, not the
agent's whole config.
"""

from __future__ import annotations

from pydantic import Field

from common.config import StrictModel


class DockerSettings(StrictModel):
    """The `docker` table of an agent whose backend is docker."""

    url: str | None = Field(
        None, description="Docker Engine API address; default: DOCKER_HOST or the local socket"
    )
    host_ip: str = Field("0.0.0.0", description="host address published ports bind to")
    allow_pull: bool = Field(False, description="pull a missing image instead of failing")
    stop_timeout: float = Field(
        10.0,
        ge=0,
        description="seconds between SIGTERM and SIGKILL when the engine itself stops a kernel "
        "(destroy uses kill_grace)",
    )
    default_image: str | None = Field(
        None, description="image of kernels whose spec names none; without it an image is required"
    )
    init: bool = Field(
        False,
        description=(
            "run docker-init as PID 1 (signals reach the kernel, zombies are reaped); "
            "a command that cannot run then exits 127 instead of failing the create"
        ),
    )
    run_as: str | None = Field(
        None,
        description=(
            'the container\'s user (its User: "name", "uid" or "uid:gid", resolved in the '
            "image); default: the image's own"
        ),
    )
