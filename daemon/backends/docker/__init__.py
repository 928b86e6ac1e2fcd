"""The docker backend: kernels are containers on a Docker engine, through aiodocker.

One file per concern: `backend` (the verbs), `handle` (the persisted handle),
`engine` (the client and "engine down" errors), `spec`/`ports`/`resources` (the
pure container config), `images`, `events` (exits from the event stream),
`execute` (docker exec), `reconcile` (ownership by label, dangling containers)
and `networks` (agent-scoped bridge networks).
"""

from daemon.backends.docker.backend import DockerBackend

__all__ = ["DockerBackend"]
