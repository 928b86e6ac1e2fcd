"""The embedded default backend: a kernel is a local process group.

The same shape as every backend: `backend` (the verbs), `handle` (the persisted,
versioned handle), `execute` (exec in the kernel's context), `reconcile`
(dangling processes and cgroups, one shared /proc scan), `settings` (its
settings model: `uid_range`, `run_as`, `pids_max`, `cpuset`); and what a
process group needs beyond that: `host` (what is detected once per daemon and
shared by its local agents), `cgroups` (memory, cpuset and pids, v1 or v2),
`uids` (the daemon's uid pool and the accounts a config names), `launcher`
(the launch plan and which launcher runs it), `launcher.c` (the native
launcher, built by scripts/setup.sh), `launch` (its Python fallback), `spawn`
(posix_spawn with a status pipe) and `process` (liveness, signals, exits).
Needs nothing beyond psutil, the standard library and a C compiler at set-up.
Nothing here knows agents' slices, routing or gRPC.
"""
