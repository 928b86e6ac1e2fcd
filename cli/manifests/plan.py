"""What the manifests need from a daemon config, read once and checked for a cluster.

The file is validated as the daemon will validate it on a node, except for what
only the node has: the files it names (its `[daemon.tls]` material comes from a
Secret, kubeconfigs are the operator's to mount) and the node's capacity (a host
large enough for every slice stands in, so a manual slice naming core 63 passes
on a laptop; the daemon checks it on the node at start). Then the rules a
cluster adds: the daemon must serve TLS on an address other pods reach, and its
metrics (if any) on a fixed port Prometheus reaches. Pure but for reading the
file; knows nothing of the manifests' shapes.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from common.addresses import is_loopback, port_of
from common.config import read_toml
from common.errors import ConfigError
from common.metrics import METRICS_PATH
from daemon.backends.kubernetes.names import dns_label_problem
from daemon.config import DaemonConfig, names_node, parse_config
from daemon.resources import HostCapacity

CONFIG_DIR = PurePosixPath("/etc/agenthost")  # where the daemon's TOML is in its pod
CONFIG_FILE = CONFIG_DIR / "daemon.toml"
STATE_HOST_DIR = PurePosixPath("/var/lib/agenthost")  # hostPath: checkpoints survive the pod
DOCKER_SOCKET = "unix:///var/run/docker.sock"
MANAGER_NAME = "agenthost-manager"  # its Deployment and Service
MANAGER_API_PORT = 6000
MANAGER_DAEMON_PORT = 6100
MANAGER_METRICS_PORT = 9465  # the manager's /metrics, rendered when the daemons have theirs
# The roomy host a file is validated against (see the module docstring).
ANY_CORES = tuple(range(4096))
ANY_MEMORY = 1 << 60


@dataclass(frozen=True)
class Options:
    """The operator's choices beyond the daemon config."""

    namespace: str = "agenthost"  # where the daemon and the manager run
    image: str = "agenthost:0.1.0"
    storage: str = "1Gi"  # the manager's PersistentVolumeClaim


@dataclass(frozen=True)
class TlsMount:
    """One file of the daemon's trust material: the Secret key and where the pod reads it."""

    key: str  # in the Secret: ca.crt, tls.crt, tls.key
    path: PurePosixPath


@dataclass(frozen=True)
class DaemonPlan:
    """The daemon config as the manifests use it."""

    config_text: str
    listen_port: int
    manager: str | None
    shutdown_grace: float
    agent_namespaces: tuple[str, ...]  # of kubernetes agents, sorted
    local: bool  # any local agent: host PID, network and cgroups
    docker_sockets: tuple[PurePosixPath, ...]  # host sockets of docker agents
    tls: tuple[TlsMount, ...]
    state_dirs: tuple[PurePosixPath, ...]  # host directories the state lives in
    kubeconfig_agents: tuple[str, ...]  # agents naming a kubeconfig of their own
    metrics_port: int | None = None  # [daemon] metrics_listen's port: Prometheus scrapes it
    ids_per_node: bool = False  # some agent id carries {node}


def in_pod(path: Path) -> PurePosixPath:
    """Where a path of the config file (relative: to the file) is in the daemon's pod."""
    joined = posixpath.normpath(posixpath.join(str(CONFIG_DIR), str(path)))
    return PurePosixPath(joined)


def roomy_host(raw: dict[str, Any]) -> HostCapacity:
    """A host with every core, device and byte the file could name."""
    devices: dict[str, set[str]] = {}
    tables = [raw.get("defaults"), raw.get("agent"), *(raw.get("agents") or [])]
    for table in tables:
        resources = table.get("resources") if isinstance(table, dict) else None
        named = resources.get("devices") if isinstance(resources, dict) else None
        for kind, ids in (named or {}).items() if isinstance(named, dict) else ():
            if isinstance(ids, list):
                devices.setdefault(str(kind), set()).update(str(i) for i in ids)
    return HostCapacity(
        cores=ANY_CORES,
        memory=ANY_MEMORY,
        devices={kind: tuple(sorted(ids)) for kind, ids in devices.items()},
    )


def plan_daemon(path: Path) -> DaemonPlan:
    """The plan of path's daemon; ConfigError listing what keeps it from a cluster."""
    raw = read_toml(path)
    config: DaemonConfig = parse_config(raw, path, roomy_host(raw), check_files=False)
    section = config.daemon
    problems: list[str] = []
    if section.tls is None:
        problems.append(
            f"{path}: daemon: in a cluster the daemon serves TLS to the manager's pod: give "
            "[daemon.tls] (ca, cert, key: the pod reads them from the Secret "
            "agenthost-daemon-tls) instead of insecure = true"
        )
    elif is_loopback(section.listen):
        problems.append(
            f"{path}: daemon.listen: {section.listen} is a loopback address no other pod "
            f"reaches; listen on 0.0.0.0:{port_of(section.listen)}"
        )
    metrics = section.metrics_listen
    metrics_port = port_of(metrics) if metrics else None
    if metrics and is_loopback(metrics):
        problems.append(
            f"{path}: daemon.metrics_listen: {metrics} is a loopback address Prometheus "
            f"cannot scrape from its pod; listen on 0.0.0.0:{metrics_port}"
        )
    elif metrics_port == 0:
        problems.append(
            f"{path}: daemon.metrics_listen: port 0 is any free port, which the pods' scrape "
            'annotation cannot name; give a fixed port (e.g. "0.0.0.0:9464")'
        )
    if problems:
        raise ConfigError(problems)
    assert section.tls is not None
    tls = (
        TlsMount("ca.crt", in_pod(section.tls.ca)),
        TlsMount("tls.crt", in_pod(section.tls.cert)),
        TlsMount("tls.key", in_pod(section.tls.key)),
    )
    state = in_pod_state(section.state_dir)
    state_dirs: tuple[PurePosixPath, ...] = (STATE_HOST_DIR,)
    if not state.is_relative_to(STATE_HOST_DIR):
        state_dirs += (state,)
    sockets = sorted(
        {
            PurePosixPath((a.docker.url or DOCKER_SOCKET).removeprefix("unix://"))
            for a in config.agents
            if a.backend == "docker" and (a.docker.url or DOCKER_SOCKET).startswith("unix://")
        }
    )
    return DaemonPlan(
        config_text=path.read_text(),
        listen_port=port_of(section.listen),
        manager=section.manager,
        shutdown_grace=section.shutdown_grace,
        agent_namespaces=tuple(
            sorted({a.kubernetes.namespace for a in config.agents if a.backend == "kubernetes"})
        ),
        local=any(a.backend == "local" for a in config.agents),
        docker_sockets=tuple(sockets),
        tls=tls,
        state_dirs=state_dirs,
        kubeconfig_agents=tuple(
            a.id
            for a in config.agents
            if a.backend == "kubernetes" and a.kubernetes.kubeconfig is not None
        ),
        metrics_port=metrics_port,
        ids_per_node=any(
            isinstance(entry, dict) and names_node(entry.get("id"))
            for entry in (raw.get("agent"), *(raw.get("agents") or []))
        ),
    )


def scrape_annotations(port: int | None) -> dict[str, str] | None:
    """The prometheus.io annotations of a pod serving /metrics on port (None: no metrics)."""
    if port is None:
        return None
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": METRICS_PATH,
    }


def option_problems(options: Options) -> list[str]:
    """What is wrong with the operator's choices, each naming its flag."""
    problems = []
    if (problem := dns_label_problem(options.namespace)) is not None:
        problems.append(f"--namespace: {problem}")
    if not options.image.strip():
        problems.append("--image: name the agenthost image the nodes can pull")
    try:
        if parse_quantity(options.storage) <= 0:
            raise ValueError
    except (ValueError, TypeError, ArithmeticError):
        problems.append(f'--storage: {options.storage!r} is not a size (e.g. "1Gi", "500Mi")')
    return problems


def manager_address(options: Options) -> str:
    """Where daemons reach the rendered manager: its Service's daemon port."""
    return f"{MANAGER_NAME}.{options.namespace}.svc:{MANAGER_DAEMON_PORT}"


def notes(plan: DaemonPlan, options: Options) -> list[str]:
    """What the operator should know about the rendered manifests (not errors)."""
    found = []
    expected = manager_address(options)
    if plan.manager != expected:
        found.append(
            f"[daemon] manager is {plan.manager or 'not set'}; the rendered manager's daemon "
            f"port is {expected}: set it there for the daemons to register"
        )
    if not plan.ids_per_node:
        found.append(
            "no agent id carries {node}: every node would register the same agent ids, and "
            "the manager keeps one agent per id; with more than one node, name them per node "
            '(e.g. id = "gpu0-{node}")'
        )
    for agent_id in plan.kubeconfig_agents:
        found.append(
            f"agent {agent_id!r} names a kubeconfig: mount it into the daemon's pod yourself, "
            "or leave it out to use the DaemonSet's service account"
        )
    return found


def in_pod_state(state_dir: Path) -> PurePosixPath:
    """Where the daemon's state directory is in its pod (it runs in STATE_HOST_DIR)."""
    return PurePosixPath(posixpath.normpath(posixpath.join(str(STATE_HOST_DIR), str(state_dir))))
