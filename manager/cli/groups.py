"""`agenthost group create|ls|get|topology|watch|rm|crd`: agent groups through the manager."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import click
import yaml

from common.console import print_json
from common.formatting import render_table
from manager.cli.connection import CALL_TIMEOUT, Connection, connection_options, json_option
from manager.cli.render import as_dict
from manager.cli.templates import read_document
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

PHASES = {
    mpb.GROUP_PHASE_PENDING: "Pending",
    mpb.GROUP_PHASE_STARTING: "Starting",
    mpb.GROUP_PHASE_RUNNING: "Running",
    mpb.GROUP_PHASE_DEGRADED: "Degraded",
    mpb.GROUP_PHASE_FAILED: "Failed",
    mpb.GROUP_PHASE_TERMINATING: "Terminating",
    mpb.GROUP_PHASE_TERMINATED: "Terminated",
}
SETTLED = (
    mpb.GROUP_PHASE_RUNNING,
    mpb.GROUP_PHASE_DEGRADED,
    mpb.GROUP_PHASE_FAILED,
    mpb.GROUP_PHASE_TERMINATED,
)
STATES = {
    pb.KERNEL_STATE_PENDING: "pending",
    pb.KERNEL_STATE_RUNNING: "running",
    pb.KERNEL_STATE_TERMINATED: "terminated",
    pb.KERNEL_STATE_UNKNOWN: "unknown",
}
WATCH_DEADLINE = 7 * 24 * 3600.0


@click.group("group")
def group_command() -> None:
    """Create, inspect, watch and remove agent groups (kind AgentGroup documents)."""


def _phase(group: mpb.Group) -> str:
    return PHASES.get(group.status.phase, "?")


def _ready(group: mpb.Group) -> str:
    members = group.status.members
    return f"{sum(m.ready for m in members)}/{len(members)}"


def _age(since: float) -> str:
    seconds = max(0, int(time.time() - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _members_table(members: Iterable[mpb.GroupMember]) -> str:
    rows = [
        [
            m.role,
            str(m.index),
            m.kernel_id or "-",
            m.agent_id or "-",
            m.daemon_address or "-",
            STATES.get(m.state, "-"),
            "yes" if m.ready else "no",
            str(m.restarts),
            ",".join(f"{n}={p}" for n, p in sorted(m.ports.items())) or "-",
            m.message or "",
        ]
        for m in members
    ]
    headers = ["ROLE", "INDEX", "KERNEL_ID", "AGENT_ID", "DAEMON", "STATE", "READY", "RESTARTS"]
    return render_table([*headers, "PORTS", "MESSAGE"], rows)


def _show(group: mpb.Group) -> None:
    status = group.status
    fields = [
        ("name", group.name),
        ("phase", _phase(group)),
        ("reason", status.reason or "-"),
        ("message", status.message or "-"),
        ("topology", group.topology),
        ("startup_policy", group.startup_policy),
        ("owner", group.owner),
        ("wave", f"{status.wave}/{status.waves}"),
        ("ready", _ready(group)),
        ("generation", f"{group.generation} (observed {status.observed_generation})"),
        ("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(group.created_at))),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {value}")
    for d in status.degraded_roles:
        click.echo(f"{'degraded'.ljust(width)}  {d.role}: {d.reason}")
    click.echo()
    click.echo(_members_table(status.members))


def _watch(
    stub: manager_pb2_grpc.ManagerServiceStub, name: str, as_json: bool, until_settled: bool
) -> mpb.Group | None:
    last: mpb.Group | None = None
    call = stub.WatchGroup(mpb.WatchGroupRequest(name=name), timeout=WATCH_DEADLINE)
    try:
        for group in call:
            last = group
            if as_json:
                click.echo(json.dumps(as_dict(group)))
            else:
                stamp = time.strftime("%H:%M:%S")
                status = group.status
                click.echo(
                    f"{stamp}  {_phase(group):<11} ready {_ready(group):<6} wave "
                    f"{status.wave}/{status.waves}  {status.message}"
                )
            sys.stdout.flush()
            if until_settled and group.status.phase in SETTLED:
                break
    except KeyboardInterrupt:
        call.cancel()
        raise SystemExit(130) from None
    finally:
        call.cancel()
    return last


@group_command.command("create")
@click.option(
    "-f", "--file", "path", required=True, type=click.Path(path_type=Path), help="YAML or TOML"
)
@click.option("--wait", is_flag=True, help="follow it until Running, Degraded, Failed or ended")
@connection_options
@json_option
def group_create(path: Path, wait: bool, conn: Connection, as_json: bool) -> None:
    """Create the group FILE describes; it starts at once (with --wait: follow it).

    Exit code 1 with --wait when the group Failed or ended."""
    text, fmt = read_document(path)
    with conn.stub() as stub:
        group = stub.CreateGroup(
            mpb.CreateGroupRequest(document=text, format=fmt), timeout=CALL_TIMEOUT
        ).group
        if not as_json:
            click.echo(f"group {group.name} created ({_phase(group)})")
        if wait:
            final = _watch(stub, group.name, as_json, until_settled=True)
            if final is not None and final.status.phase in (
                mpb.GROUP_PHASE_FAILED,
                mpb.GROUP_PHASE_TERMINATED,
            ):
                raise SystemExit(1)
        elif as_json:
            print_json(as_dict(group))


@group_command.command("ls")
@connection_options
@json_option
def group_ls(conn: Connection, as_json: bool) -> None:
    """List groups (yours; all for an admin)."""
    with conn.stub() as stub:
        response = stub.ListGroups(mpb.ListGroupsRequest(), timeout=CALL_TIMEOUT)
    if as_json:
        print_json([as_dict(g) for g in response.groups])
        return
    rows = [
        [
            g.name,
            _phase(g),
            _ready(g),
            g.topology,
            g.startup_policy,
            g.owner,
            _age(g.created_at),
            g.status.reason or "-",
        ]
        for g in response.groups
    ]
    headers = ["NAME", "PHASE", "READY", "TOPOLOGY", "STARTUP", "OWNER", "AGE", "REASON"]
    click.echo(render_table(headers, rows))


@group_command.command("get")
@click.argument("name")
@connection_options
@json_option
def group_get(name: str, conn: Connection, as_json: bool) -> None:
    """Show a group: phase, reason, degraded roles, and every member."""
    with conn.stub() as stub:
        group = stub.GetGroup(mpb.GetGroupRequest(name=name), timeout=CALL_TIMEOUT).group
    if as_json:
        print_json(as_dict(group))
        return
    _show(group)


@group_command.command("topology")
@click.argument("name")
@connection_options
@json_option
def group_topology(name: str, conn: Connection, as_json: bool) -> None:
    """Where each role's members are now, and the AGENTHOST_PEERS_* values they imply."""
    with conn.stub() as stub:
        topology = stub.GetGroupTopology(
            mpb.GetGroupTopologyRequest(name=name), timeout=CALL_TIMEOUT
        )
    if as_json:
        print_json(as_dict(topology))
        return
    rows = []
    for role in topology.roles:
        for m in role.members:
            ports = ",".join(f"{n}={p}" for n, p in sorted(m.ports.items())) or "-"
            rows.append(
                [role.role, str(m.index), m.kernel_id, m.host, ports, "yes" if m.ready else "no"]
            )
    click.echo(render_table(["ROLE", "INDEX", "KERNEL_ID", "HOST", "PORTS", "READY"], rows))
    for role in topology.roles:
        for key, value in sorted(role.env.items()):
            click.echo(f"{key}={value}")


@group_command.command("watch")
@click.argument("name")
@connection_options
@json_option
def group_watch(name: str, conn: Connection, as_json: bool) -> None:
    """Print the group's status at every change until it is Terminated (Ctrl-C stops)."""
    with conn.stub() as stub:
        _watch(stub, name, as_json, until_settled=False)


@group_command.command("rm")
@click.argument("names", nargs=-1, required=True)
@connection_options
@json_option
def group_rm(names: tuple[str, ...], conn: Connection, as_json: bool) -> None:
    """End groups (every member, in reverse start order) and forget them."""
    removed = []
    with conn.stub() as stub:
        for name in names:
            group = stub.DeleteGroup(
                mpb.DeleteGroupRequest(name=name), timeout=CALL_TIMEOUT + 120
            ).group
            removed.append(group)
            if not as_json:
                click.echo(f"group {name} removed ({len(group.status.members)} members ended)")
    if as_json:
        print_json([as_dict(g) for g in removed])


@group_command.command("crd")
@json_option
def group_crd(as_json: bool) -> None:
    """Print the CustomResourceDefinition of AgentGroup (apiextensions.k8s.io/v1)."""
    from manager.groups.crd import agent_group_crd

    crd = agent_group_crd()
    if as_json:
        print_json(crd)
        return
    click.echo(yaml.safe_dump(crd, sort_keys=False), nl=False)
