"""The Kubernetes manifests of an agenthost deployment, built from a daemon config.

`plan` reads the daemon's TOML file into what the manifests need (and refuses a
config no cluster could run); `rbac` (the daemon's service account and a
least-privilege Role per agent namespace), `daemon` (its ConfigMap and
DaemonSet) and `manager` (its ConfigMap, PersistentVolumeClaim, Deployment and
Service) build the objects with the `kubernetes` client's models, so each is a
real API object; `render` serialises them as YAML documents. Imported only by
`agenthost deploy render` (cli/deploy.py): a daemon never loads it, nor the
client it needs.
"""
