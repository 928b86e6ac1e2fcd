"""The docker backend: a kernel is one container on the agent's Docker engine.

The same shape as every backend: `backend` (the verbs), `handle` (the persisted,
versioned handle), `execute` (docker exec), `reconcile` (ownership by label,
liveness, dangling containers), `settings` (the agent's `docker` table); and one
file per concern of its own: `engine` (the client, the one place that calls
aiodocker's private query API, and "engine down" errors), `spec`/`ports`/
`resources` (the pure container config), `images`, `events` (exits from the event
stream) and `networks` (agent-scoped bridge networks).

Importing this package imports nothing else: `settings` is read by the daemon's
config whatever the agents' backends, so aiodocker is imported only by the
modules an agent with `backend = "docker"` loads. Nothing here knows agents'
slices, routing or gRPC.
"""
