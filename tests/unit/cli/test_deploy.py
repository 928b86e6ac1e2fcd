"""`agenthost deploy render`: real API objects for a daemon config, or every problem.

Every rendered object is checked against the official OpenAPI schemas at the
Kubernetes version the stand-in pins (`tests/kubeapi/schemas.py`), unknown
fields included, and every pod template also against the apiserver's own pod
rules the stand-in implements (`tests/kubeapi/podrules.py`).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from cli.main import main
from tests.kubeapi import podrules, schemas

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = ROOT / "deploy" / "kubernetes" / "daemon.toml"
RENDERED = ROOT / "deploy" / "kubernetes" / "agenthost.yaml"

TLS = """
[daemon.tls]
ca = "pki/ca.crt"
cert = "/srv/certs/daemon.crt"
key = "daemon.key"
"""


def daemon_toml(tmp_path: Path, agents: str, daemon: str = "", trust: str = TLS) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [daemon]
            listen = "0.0.0.0:6001"
            manager = "agenthost-manager.agenthost.svc:6100"
            {daemon}
            """
        )
        + trust
        + textwrap.dedent(agents)
    )
    return path


KUBE = """
[[agents]]
id = "k0"
backend = "kubernetes"
port_range = [30000, 30099]
resources = { cpus = [0], memory = "1GiB" }
kubernetes = { namespace = "kernels" }

[[agents]]
id = "k1"
backend = "kubernetes"
port_range = [30100, 30199]
resources = { cpus = [63], memory = "1GiB", devices = { cuda = ["7"] } }
kubernetes = { namespace = "batch", kubeconfig = "not/here.yaml" }
"""
LOCAL = """
[[agents]]
id = "l0"
port_range = [30200, 30299]
resources = { cpus = [1], memory = "1GiB" }

[[agents]]
id = "d0"
backend = "docker"
port_range = [30300, 30399]
resources = { cpus = [2], memory = "1GiB" }
"""


def render(*args: str) -> Result:
    return CliRunner().invoke(main, ["deploy", "render", *args])


def documents(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def find(objects: list[dict[str, Any]], kind: str, name: str, namespace: str = "agenthost") -> Any:
    [found] = [
        o
        for o in objects
        if o["kind"] == kind
        and o["metadata"]["name"] == name
        and o["metadata"].get("namespace", namespace) == namespace
    ]
    return found


def container(
    objects: list[dict[str, Any]], kind: str, name: str, namespace: str = "agenthost"
) -> dict[str, Any]:
    [first] = find(objects, kind, name, namespace)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = first
    return result


class TestObjects:
    @pytest.fixture
    def objects(self, tmp_path: Path) -> list[dict[str, Any]]:
        return documents(render("--config", str(daemon_toml(tmp_path, KUBE + LOCAL))))

    def test_every_object_is_valid_against_the_official_schemas(
        self, objects: list[dict[str, Any]]
    ) -> None:
        assert [(o["kind"], o["metadata"].get("namespace")) for o in objects] == [
            ("Namespace", None),
            ("Namespace", None),
            ("Namespace", None),
            ("ServiceAccount", "agenthost"),
            ("Role", "batch"),
            ("RoleBinding", "batch"),
            ("Role", "kernels"),
            ("RoleBinding", "kernels"),
            ("ConfigMap", "agenthost"),
            ("DaemonSet", "agenthost"),
            ("ConfigMap", "agenthost"),
            ("PersistentVolumeClaim", "agenthost"),
            ("Deployment", "agenthost"),
            ("Service", "agenthost"),
        ]
        for o in objects:
            report = schemas.validate(o, o["kind"], o["apiVersion"])
            assert (report.decode_errors, report.causes, report.unknown_fields) == ([], [], []), o
            if "template" in o.get("spec", {}):
                template = o["spec"]["template"]
                pod = {"metadata": {"name": "x", **template["metadata"]}, "spec": template["spec"]}
                assert podrules.validate_pod(pod) == [], o["kind"]

    def test_the_daemon_may_only_run_pods_in_its_agents_namespaces(
        self, objects: list[dict[str, Any]]
    ) -> None:
        for namespace in ("kernels", "batch"):
            assert find(objects, "Role", "agenthost-daemon", namespace)["rules"] == [
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["create", "delete", "get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
            ]
            binding = find(objects, "RoleBinding", "agenthost-daemon", namespace)
            assert binding["subjects"] == [
                {"kind": "ServiceAccount", "name": "agenthost-daemon", "namespace": "agenthost"}
            ]
        assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]

    def test_the_config_map_holds_the_file_as_it_is(
        self, objects: list[dict[str, Any]], tmp_path: Path
    ) -> None:
        config_map = find(objects, "ConfigMap", "agenthost-daemon")
        assert config_map["data"] == {"daemon.toml": (tmp_path / "daemon.toml").read_text()}

    def test_the_daemon_set_runs_the_file_on_every_node_with_its_name(
        self, objects: list[dict[str, Any]]
    ) -> None:
        daemon = container(objects, "DaemonSet", "agenthost-daemon")
        assert daemon["args"] == ["daemon", "--config", "/etc/agenthost/daemon.toml"]
        assert daemon["env"] == [
            {
                "name": "AGENTHOST_DAEMON_NODE",
                "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
            }
        ]
        mounts = {m["mountPath"]: m.get("subPath") for m in daemon["volumeMounts"]}
        # The Secret's files land where the TOML's [daemon.tls] paths point.
        assert mounts == {
            "/etc/agenthost/daemon.toml": "daemon.toml",
            "/etc/agenthost/pki/ca.crt": "ca.crt",
            "/srv/certs/daemon.crt": "tls.crt",
            "/etc/agenthost/daemon.key": "tls.key",
            "/var/lib/agenthost": None,
            "/sys/fs/cgroup": None,
            "/var/run/docker.sock": None,
        }
        assert daemon["ports"] == [
            {"containerPort": 6001, "hostPort": 6001, "name": "grpc", "protocol": "TCP"}
        ]

    def test_host_access_only_for_the_local_and_docker_agents_that_need_it(
        self, tmp_path: Path
    ) -> None:
        mixed = documents(render("--config", str(daemon_toml(tmp_path, KUBE + LOCAL))))
        pod = find(mixed, "DaemonSet", "agenthost-daemon")["spec"]["template"]["spec"]
        assert (pod["hostPID"], pod["hostNetwork"]) == (True, True)
        assert pod["automountServiceAccountToken"] is True
        only_kube = documents(render("--config", str(daemon_toml(tmp_path, KUBE))))
        pod = find(only_kube, "DaemonSet", "agenthost-daemon")["spec"]["template"]["spec"]
        assert "hostPID" not in pod and "hostNetwork" not in pod
        assert {v["name"] for v in pod["volumes"]} == {"config", "tls", "state"}
        only_local = documents(render("--config", str(daemon_toml(tmp_path, LOCAL))))
        pod = find(only_local, "DaemonSet", "agenthost-daemon")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert not [o for o in only_local if o["kind"] in ("Role", "RoleBinding")]

    def test_the_manager_keeps_its_store_on_a_claim_behind_a_service(
        self, objects: list[dict[str, Any]]
    ) -> None:
        manager = find(objects, "Deployment", "agenthost-manager")
        assert (manager["spec"]["replicas"], manager["spec"]["strategy"]) == (
            1,
            {"type": "Recreate"},
        )
        volumes = manager["spec"]["template"]["spec"]["volumes"]
        assert {
            "name": "data",
            "persistentVolumeClaim": {"claimName": "agenthost-manager-data"},
        } in (volumes)
        claim = find(objects, "PersistentVolumeClaim", "agenthost-manager-data")
        assert claim["spec"]["resources"] == {"requests": {"storage": "1Gi"}}
        service = find(objects, "Service", "agenthost-manager")
        assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [
            ("api", 6000),
            ("daemons", 6100),
        ]
        assert container(objects, "Deployment", "agenthost-manager")["args"] == [
            "manager",
            "--config",
            "/etc/agenthost-manager/manager.toml",
        ]

    def test_the_options_name_namespace_image_and_storage(self, tmp_path: Path) -> None:
        path = daemon_toml(tmp_path, KUBE)
        options = ["--namespace", "ah", "--image", "reg/ah:1", "--storage", "5Gi"]
        objects = documents(render("--config", str(path), *options))
        assert container(objects, "Deployment", "agenthost-manager", "ah")["image"] == "reg/ah:1"
        claim = find(objects, "PersistentVolumeClaim", "agenthost-manager-data", "ah")
        assert claim["spec"]["resources"] == {"requests": {"storage": "5Gi"}}
        assert {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"} == {
            "ah",
            "kernels",
            "batch",
        }


class TestCommand:
    def test_notes_go_to_stderr(self, tmp_path: Path) -> None:
        result = render("--config", str(daemon_toml(tmp_path, KUBE)), "--namespace", "ah")
        assert result.exit_code == 0
        assert result.stderr.splitlines() == [
            "note: [daemon] manager is agenthost-manager.agenthost.svc:6100; the rendered "
            "manager's daemon port is agenthost-manager.ah.svc:6100: set it there for the "
            "daemons to register",
            "note: no agent id carries {node}: every node would register the same agent ids, "
            "and the manager keeps one agent per id; with more than one node, name them per "
            'node (e.g. id = "gpu0-{node}")',
            "note: agent 'k1' names a kubeconfig: mount it into the daemon's pod yourself, or "
            "leave it out to use the DaemonSet's service account",
        ]

    def test_ids_named_per_node_need_no_note_and_the_file_keeps_the_placeholder(
        self, tmp_path: Path
    ) -> None:
        path = daemon_toml(tmp_path, KUBE.replace('id = "k0"', 'id = "k0-{node}"'))
        result = render("--config", str(path))
        assert result.exit_code == 0
        assert not [line for line in result.stderr.splitlines() if "{node}" in line]
        config_map = find(documents(result), "ConfigMap", "agenthost-daemon")
        assert 'id = "k0-{node}"' in config_map["data"]["daemon.toml"]

    def test_a_plaintext_daemon_is_refused(self, tmp_path: Path) -> None:
        path = daemon_toml(tmp_path, KUBE, trust="insecure = true\n").with_name("daemon.toml")
        path.write_text(path.read_text().replace('"0.0.0.0:6001"', '"127.0.0.1:6001"'))
        result = render("--config", str(path))
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"error: {path}: daemon: in a cluster the daemon serves TLS to the manager's pod: "
            "give [daemon.tls] (ca, cert, key: the pod reads them from the Secret "
            "agenthost-daemon-tls) instead of insecure = true"
        ]

    def test_a_loopback_listen_address_is_refused(self, tmp_path: Path) -> None:
        path = daemon_toml(tmp_path, KUBE)
        path.write_text(path.read_text().replace('"0.0.0.0:6001"', '"127.0.0.1:6001"'))
        result = render("--config", str(path))
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: {path}: daemon.listen: 127.0.0.1:6001 is a loopback address no other "
            "pod reaches; listen on 0.0.0.0:6001\n"
        )

    def test_a_config_that_does_not_validate_lists_its_problems(self, tmp_path: Path) -> None:
        path = daemon_toml(tmp_path, KUBE.replace('namespace = "kernels"', 'namespace = "K"'))
        result = render("--config", str(path))
        assert result.exit_code == 2
        assert result.stderr.startswith(
            f"error: {path}: agents[0] (id \"k0\"): kubernetes.namespace: 'K' is not a DNS label"
        )

    def test_bad_options_are_named(self, tmp_path: Path) -> None:
        path = daemon_toml(tmp_path, KUBE)
        result = render("--config", str(path), "--namespace", "A_B", "--storage", "lots")
        assert result.exit_code == 2
        assert result.stderr.splitlines() == [
            "error: --namespace: 'A_B' is not a DNS label: at most 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or digit",
            'error: --storage: \'lots\' is not a size (e.g. "1Gi", "500Mi")',
        ]


class TestMetrics:
    METRICS = 'metrics_listen = "0.0.0.0:9464"'

    def test_with_metrics_the_daemon_and_manager_pods_name_the_port_and_ask_to_be_scraped(
        self, tmp_path: Path
    ) -> None:
        path = daemon_toml(tmp_path, KUBE + LOCAL, daemon=self.METRICS)
        objects = documents(render("--config", str(path)))
        for o in objects:
            report = schemas.validate(o, o["kind"], o["apiVersion"])
            assert (report.decode_errors, report.causes, report.unknown_fields) == ([], [], []), o
        daemon_pod = find(objects, "DaemonSet", "agenthost-daemon")["spec"]["template"]
        assert daemon_pod["metadata"]["annotations"] == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9464",
            "prometheus.io/path": "/metrics",
        }
        assert container(objects, "DaemonSet", "agenthost-daemon")["ports"] == [
            {"containerPort": 6001, "hostPort": 6001, "name": "grpc", "protocol": "TCP"},
            {"containerPort": 9464, "hostPort": 9464, "name": "metrics", "protocol": "TCP"},
        ]
        manager_pod = find(objects, "Deployment", "agenthost-manager")["spec"]["template"]
        assert manager_pod["metadata"]["annotations"]["prometheus.io/port"] == "9465"
        manager_ports = container(objects, "Deployment", "agenthost-manager")["ports"]
        assert {"containerPort": 9465, "name": "metrics", "protocol": "TCP"} in manager_ports
        manager_toml = find(objects, "ConfigMap", "agenthost-manager")["data"]["manager.toml"]
        assert 'metrics_listen = "0.0.0.0:9465"' in manager_toml

    def test_without_metrics_nothing_is_annotated_and_the_manager_serves_none(
        self, tmp_path: Path
    ) -> None:
        objects = documents(render("--config", str(daemon_toml(tmp_path, KUBE))))
        for kind, name in (("DaemonSet", "agenthost-daemon"), ("Deployment", "agenthost-manager")):
            assert "annotations" not in find(objects, kind, name)["spec"]["template"]["metadata"]
            assert "metrics" not in {p["name"] for p in container(objects, kind, name)["ports"]}
        manager_toml = find(objects, "ConfigMap", "agenthost-manager")["data"]["manager.toml"]
        assert "metrics_listen" not in manager_toml

    @pytest.mark.parametrize(
        ("listen", "problem"),
        [
            (
                "127.0.0.1:9464",
                "daemon.metrics_listen: 127.0.0.1:9464 is a loopback address Prometheus cannot "
                "scrape from its pod; listen on 0.0.0.0:9464",
            ),
            (
                "0.0.0.0:0",
                "daemon.metrics_listen: port 0 is any free port, which the pods' scrape "
                'annotation cannot name; give a fixed port (e.g. "0.0.0.0:9464")',
            ),
        ],
        ids=["loopback", "any_port"],
    )
    def test_metrics_no_scrape_could_reach_are_refused(
        self, tmp_path: Path, listen: str, problem: str
    ) -> None:
        path = daemon_toml(tmp_path, KUBE, daemon=f'metrics_listen = "{listen}"')
        result = render("--config", str(path))
        assert result.exit_code == 2
        assert result.stderr == f"error: {path}: {problem}\n"


class TestShippedManifests:
    def test_deploy_kubernetes_holds_what_render_prints_for_its_daemon_toml(self) -> None:
        result = render("--config", str(SAMPLE.relative_to(ROOT)))
        assert result.exit_code == 0, result.output
        assert RENDERED.read_text() == result.stdout, (
            "deploy/kubernetes/agenthost.yaml is stale: regenerate it with "
            "agenthost deploy render --config deploy/kubernetes/daemon.toml "
            "> deploy/kubernetes/agenthost.yaml"
        )
