"""`agenthost agents [ls]` and `agenthost agents rm ID`: the agents the manager knows."""

from __future__ import annotations

import click

from common.console import print_json
from common.formatting import render_table
from manager.cli.connection import CALL_TIMEOUT, Connection, connection_options, json_option
from manager.cli.render import AGENT_STATUS, as_dict, fraction
from protos import manager_pb2 as mpb


@click.group("agents", invoke_without_command=True)
@click.option("--scaling-group", default="", help="only agents of this scaling group")
@connection_options
@json_option
@click.pass_context
def agents_command(ctx: click.Context, scaling_group: str, conn: Connection, as_json: bool) -> None:
    """List every agent the manager knows (also: agents ls), or remove one (agents rm ID).

    Each agent: status (ALIVE/LOST), daemon, node, scaling group, backend, and
    used/total cores, memory and ports, and its kernels.
    """
    if ctx.invoked_subcommand is None:
        list_agents(scaling_group, conn, as_json)


@agents_command.command("ls")
@click.option("--scaling-group", default="", help="only agents of this scaling group")
@connection_options
@json_option
def agents_ls(scaling_group: str, conn: Connection, as_json: bool) -> None:
    """List every agent the manager knows: status, daemon, scaling group, usage."""
    list_agents(scaling_group, conn, as_json)


@agents_command.command("rm")
@click.argument("agent_ids", nargs=-1, required=True)
@connection_options
@json_option
def agents_rm(agent_ids: tuple[str, ...], conn: Connection, as_json: bool) -> None:
    """Remove LOST agents (admin): forget them and their kernel records, so that another
    daemon identity may register the same agent id."""
    removed = []
    with conn.stub() as stub:
        for agent_id in agent_ids:
            response = stub.RemoveAgent(
                mpb.RemoveAgentRequest(agent_id=agent_id), timeout=CALL_TIMEOUT
            )
            removed.append(response)
            if not as_json:
                info = response.agent
                click.echo(
                    f"removed agent {agent_id} (daemon {info.daemon_address}, node {info.node}; "
                    f"{response.kernels_forgotten} kernel records forgotten)"
                )
    if as_json:
        print_json([as_dict(r) for r in removed])


def list_agents(scaling_group: str, conn: Connection, as_json: bool) -> None:
    """Print the agents as a table or JSON."""
    with conn.stub() as stub:
        response = stub.ListAgents(
            mpb.ManagerListAgentsRequest(scaling_group=scaling_group), timeout=CALL_TIMEOUT
        )
    if as_json:
        print_json([as_dict(a) for a in response.agents])
        return
    rows = []
    for a in response.agents:
        info = a.info
        status = AGENT_STATUS.get(a.status, "?")
        if a.status == mpb.AGENT_STATUS_ALIVE and not info.healthy:
            status += " (unhealthy)"
        rows.append(
            [
                info.agent_id,
                status,
                a.daemon_address,
                a.node,
                info.scaling_group,
                info.backend,
                fraction(len(info.occupied.cores), len(info.capacity.cores)),
                fraction(info.occupied.memory_bytes, info.capacity.memory_bytes, bytes_=True),
                fraction(info.occupied.ports, info.capacity.ports),
                str(info.kernel_count),
            ]
        )
    click.echo(
        render_table(
            [
                "AGENT_ID",
                "STATUS",
                "DAEMON",
                "NODE",
                "SCALING_GROUP",
                "BACKEND",
                "CORES",
                "MEMORY",
                "PORTS",
                "KERNELS",
            ],
            rows,
        )
    )
