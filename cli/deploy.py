"""`agenthost deploy render`: the Kubernetes manifests of a deployment, for a daemon config.

A thin command: it maps flags to `cli.manifests.plan.Options`, reads the daemon
config into a plan (every problem printed, exit code 2) and prints the rendered
YAML on stdout, notes for the operator on stderr. The manifests' code and the
kubernetes client it builds them with are imported only when the command runs,
so no other command (the daemon above all) loads them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from common.console import fail
from common.errors import ConfigError


def default_image() -> str:
    """The image of this build: agenthost:<version>."""
    try:
        return f"agenthost:{version('agenthost')}"
    except PackageNotFoundError:
        return "agenthost:latest"


@click.group("deploy")
def deploy() -> None:
    """Run agenthost on a Kubernetes cluster."""


@deploy.command("render")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="the daemon TOML every node runs (its kubernetes agents name the namespaces)",
)
@click.option(
    "--namespace",
    default="agenthost",
    show_default=True,
    help="namespace of the daemon's DaemonSet and the manager",
)
@click.option(
    "--image", default=None, help="agenthost container image  [default: agenthost:<version>]"
)
@click.option(
    "--storage",
    default="1Gi",
    show_default=True,
    help="size of the manager's PersistentVolumeClaim (a Kubernetes quantity)",
)
def render_command(config_path: Path, namespace: str, image: str | None, storage: str) -> None:
    """Print the manifests (YAML, `---` separated) that run FILE's daemon on every node.

    \b
    Objects: the namespaces, the daemon's ServiceAccount with a Role and
    RoleBinding (pods, pods/exec, pods/log) in each kubernetes agent's namespace,
    the daemon's ConfigMap (the file as it is) and DaemonSet, and the manager's
    ConfigMap, PersistentVolumeClaim, Deployment and Service. Certificates come
    from the Secrets agenthost-daemon-tls and agenthost-manager-tls (keys ca.crt,
    tls.crt, tls.key). Apply with: agenthost deploy render --config FILE | kubectl apply -f -
    """
    from cli.manifests.plan import Options, notes, option_problems, plan_daemon
    from cli.manifests.render import render

    options = Options(namespace=namespace, image=image or default_image(), storage=storage)
    problems = option_problems(options)
    if problems:
        fail(problems, 2)
    try:
        plan = plan_daemon(config_path)
    except ConfigError as exc:
        fail(exc.problems, 2)
    click.echo(render(plan, options), nl=False)
    for note in notes(plan, options):
        click.echo(f"note: {note}", err=True)


COMMANDS = (deploy,)
