"""The kubernetes backend: a kernel is one pod in the agent's namespace, bound to this node.

The same shape as every backend: `backend` (the verbs), `handle` (the persisted,
versioned handle), `execute` (the exec subresource), `reconcile` (ownership by
label, liveness, dangling pods), `settings` (the agent's `kubernetes` table);
and one file per concern of its own: `connection` (in-cluster service account
or kubeconfig), `api` (the official client run in threads, the one place that
knows its transport, and "API server down" errors), `spec`/`ports`/`resources`
(the pure pod manifest), `podstatus` (what a pod's status says about its
kernel), `watch` (the pod watch thread and waiters on it) and `names`
(Kubernetes name syntax).

Importing this package imports nothing else: `settings` (and `names`) are read
by the daemon's config whatever the agents' backends, so the kubernetes client
is imported only by the modules an agent with `backend = "kubernetes"` loads.
Nothing here knows agents' slices, routing or gRPC.
"""
