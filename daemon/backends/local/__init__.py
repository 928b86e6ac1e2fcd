"""The embedded default backend: a kernel is a local process group.

The same shape as every backend: `backend` (the verbs), `handle` (the persisted,
versioned handle), `execute` (exec in the kernel's context), `reconcile`
(liveness by pid and start time, dangling processes and cgroups), `settings` (its
settings model, empty so far); and what a process group needs beyond that:
`process` (launch plans, spawning, the exit watch), `launch` (the launcher script
every kernel process starts through) and `cgroups` (memory cgroups, v1 or v2).
Needs nothing beyond psutil and the standard library. Nothing here knows agents'
slices, routing or gRPC.
"""
