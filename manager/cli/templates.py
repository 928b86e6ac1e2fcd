"""`agenthost template apply|ls|get|rm`: named kernel specs kept by the manager."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import yaml

from common.console import print_json
from common.formatting import render_table
from manager.cli.connection import CALL_TIMEOUT, Connection, connection_options, json_option
from manager.cli.render import as_dict
from protos import manager_pb2 as mpb


def read_document(path: Path) -> tuple[str, str]:
    """The text of a document file and its format (by extension: .toml, else YAML)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise click.BadParameter(f"{path}: {exc.strerror}", param_hint="-f") from None
    return text, "toml" if path.suffix == ".toml" else "yaml"


@click.group("template")
def template_group() -> None:
    """Apply, list, show and remove templates (named kernel specs).

    A template is a document of kind KernelTemplate (YAML or TOML). Use one with
    `agenthost kernel create --template NAME` or as a group role's `template`.
    """


@template_group.command("apply")
@click.option(
    "-f", "--file", "path", required=True, type=click.Path(path_type=Path), help="YAML or TOML"
)
@connection_options
@json_option
def template_apply(path: Path, conn: Connection, as_json: bool) -> None:
    """Create or replace the templates in FILE (YAML may hold several, `---` apart)."""
    text, fmt = read_document(path)
    with conn.stub() as stub:
        response = stub.ApplyTemplate(
            mpb.ApplyTemplateRequest(document=text, format=fmt), timeout=CALL_TIMEOUT
        )
    if as_json:
        print_json([as_dict(t) for t in response.templates])
        return
    for t in response.templates:
        click.echo(f"template {t.name} applied")


@template_group.command("ls")
@connection_options
@json_option
def template_ls(conn: Connection, as_json: bool) -> None:
    """List templates."""
    with conn.stub() as stub:
        response = stub.ListTemplates(mpb.ListTemplatesRequest(), timeout=CALL_TIMEOUT)
    if as_json:
        print_json([as_dict(t) for t in response.templates])
        return
    rows = []
    for t in response.templates:
        command = " ".join(t.kernel.command)
        rows.append(
            [
                t.name,
                t.backend or "-",
                t.scaling_group or "-",
                t.kernel.image or "-",
                ",".join(p.name for p in t.kernel.ports) or "-",
                "yes" if t.readiness_json else "-",
                t.owner,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(t.updated_at)),
                command if len(command) <= 32 else command[:29] + "...",
            ]
        )
    headers = ["NAME", "BACKEND", "SCALING_GROUP", "IMAGE", "PORTS", "READINESS", "OWNER"]
    click.echo(render_table([*headers, "UPDATED", "COMMAND"], rows))


@template_group.command("get")
@click.argument("name")
@connection_options
@json_option
def template_get(name: str, conn: Connection, as_json: bool) -> None:
    """Print a template as the YAML document it was applied with (normalised)."""
    with conn.stub() as stub:
        response = stub.GetTemplate(mpb.GetTemplateRequest(name=name), timeout=CALL_TIMEOUT)
    if as_json:
        print_json(as_dict(response.template))
        return
    click.echo(yaml.safe_dump(json.loads(response.template.document_json), sort_keys=False))


@template_group.command("rm")
@click.argument("names", nargs=-1, required=True)
@connection_options
def template_rm(names: tuple[str, ...], conn: Connection) -> None:
    """Remove templates (groups made from them keep their own copy)."""
    with conn.stub() as stub:
        for name in names:
            stub.DeleteTemplate(mpb.DeleteTemplateRequest(name=name), timeout=CALL_TIMEOUT)
            click.echo(f"template {name} removed")
