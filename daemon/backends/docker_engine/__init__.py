"""The pieces of the docker backend (`daemon/backends/docker.py` holds its verbs).

One file per concern: `handle` (the persisted handle), `engine` (the client and
"engine down" errors), `spec`/`ports`/`resources` (the pure container config),
`images`, `events` (exits from the event stream), `execute` (docker exec),
`reconcile` (ownership by label, dangling containers) and `networks`
(agent-scoped bridge networks). Nothing here knows agents' slices or gRPC.
"""
