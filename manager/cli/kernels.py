"""`agenthost kernel create|ls|get|exec|logs|wait|watch|rm|prune`: kernels through the manager.

A thin layer: flags become requests, responses become tables (or `--json`).
How the manager is reached (address, TLS, token) is `connection.py`'s.
"""

from __future__ import annotations

import json
import sys
import time

import click
import grpc
from pydantic import ByteSize, TypeAdapter, ValidationError

from common.console import fail, print_json
from common.durations import DURATION_SYNTAX, parse_duration
from common.errors import InvalidArgument
from common.formatting import format_bytes, render_table
from common.limits import MAX_PAGE_SIZE, MAX_STDIN
from manager.cli.connection import CALL_TIMEOUT, Connection, connection_options, json_option
from manager.cli.render import STATES_BY_NAME, as_dict, event_line, kernel_state
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

CREATE_TIMEOUT = 180.0  # the manager's own create deadline to a daemon is 120 s
EXEC_DEADLINE = 24 * 3600.0  # an exec with no --timeout of its own


@click.group("kernel")
def kernel_group() -> None:
    """Create, list, inspect, run commands in and remove kernels through the manager."""


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint=what)
        out[key] = rest
    return out


def _memory(value: str, option: str = "--memory") -> int:
    if not value:
        return 0
    try:
        return int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError:
        raise click.BadParameter(
            f'{value!r} is not a memory size (e.g. "512MiB", "2GiB")', param_hint=option
        ) from None


def _delegate_limits(
    delegate: bool, cores: int | None, memory: str | None, kernels: int | None
) -> mpb.DelegateLimits | None:
    """The --delegate-* limits (None without --delegate); unset ones stay unset."""
    if not delegate:
        given = [
            f"--delegate-{name}"
            for name, value in (("cores", cores), ("memory", memory), ("kernels", kernels))
            if value is not None
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} only go with --delegate")
        return None
    limits = mpb.DelegateLimits()
    if cores is not None:
        limits.cores = cores
    if memory is not None:
        limits.memory_bytes = _memory(memory, "--delegate-memory")
    if kernels is not None:
        limits.kernels = kernels
    return limits


def _ports(values: tuple[str, ...]) -> list[pb.ServicePort]:
    ports = []
    for value in values:
        name, sep, inner = value.partition(":")
        if not name or (sep and not inner.isdigit()):
            raise click.BadParameter(
                f"{value!r} is not NAME or NAME:CONTAINER_PORT", param_hint="--port"
            )
        ports.append(pb.ServicePort(name=name, container_port=int(inner) if sep else 0))
    return ports


def _kernel_row(k: mpb.ManagedKernel) -> list[str]:
    kernel = k.kernel
    command = " ".join(kernel.spec.command)
    return [
        kernel.kernel_id,
        kernel.agent_id,
        k.daemon_address,
        kernel_state(kernel),
        str(len(kernel.allocated.cores)),
        format_bytes(kernel.allocated.memory_bytes) if kernel.allocated.memory_bytes else "-",
        ",".join(f"{n}={p}" for n, p in sorted(kernel.ports.items())) or "-",
        command if len(command) <= 40 else command[:37] + "...",
    ]


_KERNEL_HEADERS = [
    "KERNEL_ID",
    "AGENT_ID",
    "DAEMON",
    "STATE",
    "CORES",
    "MEMORY",
    "PORTS",
    "COMMAND",
]


@kernel_group.command("create")
@click.option(
    "--agent", "agent_id", default="", help="pin to this agent (else the scheduler picks)"
)
@click.option("--scaling-group", default="", help="scaling group (default: the manager's default)")
@click.option("--id", "kernel_id", default="", help="kernel id (default: generated)")
@click.option("--cpus", type=click.IntRange(min=0), default=0, help="exclusive cores")
@click.option("--memory", default="", help='memory to reserve, e.g. "512MiB"')
@click.option("--device", multiple=True, help="devices by kind, KIND=COUNT (e.g. cuda=1)")
@click.option("--port", multiple=True, help="a named host port, NAME or NAME:CONTAINER_PORT")
@click.option("--env", multiple=True, help="environment variable K=V")
@click.option("--label", multiple=True, help="label K=V")
@click.option("--image", default="", help="image (container backends)")
@click.option(
    "--template",
    default="",
    help="start from this template; the other options (and COMMAND) override its fields",
)
@click.option(
    "--delegate",
    is_flag=True,
    help=(
        "give the kernel a token of its own (AGENTHOST_TOKEN, AGENTHOST_MANAGER, AGENTHOST_CA "
        "in its env) to create and manage kernels of its own, within the --delegate-* limits"
    ),
)
@click.option(
    "--delegate-cores",
    type=click.IntRange(min=0),
    default=None,
    help="cores the kernels it creates may reserve in all (default: its own --cpus)",
)
@click.option(
    "--delegate-memory",
    default=None,
    help='memory they may reserve in all, e.g. "1GiB" (default: its own --memory)',
)
@click.option(
    "--delegate-kernels",
    type=click.IntRange(min=0),
    default=None,
    help="how many kernels it may have at once, their descendants included (default: 1)",
)
@click.argument("command", nargs=-1)
@connection_options
@json_option
def kernel_create(
    template: str,
    delegate: bool,
    delegate_cores: int | None,
    delegate_memory: str | None,
    delegate_kernels: int | None,
    agent_id: str,
    scaling_group: str,
    kernel_id: str,
    cpus: int,
    memory: str,
    device: tuple[str, ...],
    port: tuple[str, ...],
    env: tuple[str, ...],
    label: tuple[str, ...],
    image: str,
    command: tuple[str, ...],
    conn: Connection,
    as_json: bool,
) -> None:
    """Create a kernel running COMMAND (give it after --) on an agent the manager picks.

    With --template, COMMAND is optional (the template's is used). With --delegate the
    kernel may create kernels itself, through the manager, in its own scaling group:
    the --delegate-* limits bound all of them together (and what they create in turn);
    they end when it ends."""
    if not command and not template:
        raise click.UsageError("give the COMMAND to run (after --), or --template")
    limits = _delegate_limits(delegate, delegate_cores, delegate_memory, delegate_kernels)
    devices = {}
    for kind, count in _pairs(device, "--device").items():
        if not count.isdigit():
            raise click.BadParameter(
                f"{kind}={count}: COUNT must be a number", param_hint="--device"
            )
        devices[kind] = int(count)
    spec = pb.KernelSpec(
        kernel_id=kernel_id,
        image=image,
        command=list(command),
        env=_pairs(env, "--env"),
        labels=_pairs(label, "--label"),
        ports=_ports(port),
        resources=pb.ResourceRequest(cpu_count=cpus, memory_bytes=_memory(memory), devices=devices),
    )
    with conn.stub() as stub:
        response = stub.CreateKernel(
            mpb.CreateKernelRequest(
                spec=spec,
                scaling_group=scaling_group,
                agent_id=agent_id,
                template=template,
                delegate=delegate,
                delegate_limits=limits,
            ),
            timeout=CREATE_TIMEOUT,
        )
    if as_json:
        print_json(as_dict(response.kernel))
        return
    click.echo(render_table(_KERNEL_HEADERS, [_kernel_row(response.kernel)]))


@kernel_group.command("ls")
@click.option("--agent", "agent_id", default="", help="only kernels of this agent")
@click.option("--scaling-group", default="", help="only kernels of this scaling group")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(list(STATES_BY_NAME)),
    help="only kernels in this state (repeatable)",
)
@click.option("--label", multiple=True, help="only kernels with this label K=V (repeatable)")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=0,
    help="list at most this many (the manager pages through the rest otherwise); 0: all",
)
@connection_options
@json_option
def kernel_ls(
    agent_id: str,
    scaling_group: str,
    states: tuple[str, ...],
    label: tuple[str, ...],
    limit: int,
    conn: Connection,
    as_json: bool,
) -> None:
    """List the kernels the manager knows, with the agent and daemon each is on."""
    request = mpb.ManagerListKernelsRequest(
        agent_id=agent_id,
        scaling_group=scaling_group,
        states=[STATES_BY_NAME[s] for s in states],
        labels=_pairs(label, "--label"),
    )
    kernels: list[mpb.ManagedKernel] = []
    with conn.stub() as stub:
        while True:
            request.page_size = min(limit - len(kernels), MAX_PAGE_SIZE) if limit else 0
            response = stub.ListKernels(request, timeout=CALL_TIMEOUT)
            kernels += response.kernels
            if not response.next_page_token or (limit and len(kernels) >= limit):
                break
            request.page_token = response.next_page_token
    if as_json:
        print_json([as_dict(k) for k in kernels])
        return
    click.echo(render_table(_KERNEL_HEADERS, [_kernel_row(k) for k in kernels]))


@kernel_group.command("prune")
@click.option(
    "--older-than",
    default="0s",
    help=f"only kernels that ended at least this long ago ({DURATION_SYNTAX}); default: all",
)
@connection_options
def kernel_prune(older_than: str, conn: Connection) -> None:
    """Forget terminated kernels now (admin); the manager does so itself kernel_retention
    after they end."""
    try:
        seconds = parse_duration(older_than)
    except InvalidArgument as exc:
        fail([f"--older-than: {exc}"], 2)
    with conn.stub() as stub:
        response = stub.PruneKernels(
            mpb.PruneKernelsRequest(older_than=seconds), timeout=CALL_TIMEOUT
        )
    click.echo(f"pruned {len(response.kernel_ids)} terminated kernels")


@kernel_group.command("get")
@click.argument("kernel_id")
@connection_options
@json_option
def kernel_get(kernel_id: str, conn: Connection, as_json: bool) -> None:
    """Show one kernel as its daemon sees it now (the last known record while its agent is LOST)."""
    with conn.stub() as stub:
        response = stub.GetKernel(pb.GetKernelRequest(kernel_id=kernel_id), timeout=CALL_TIMEOUT)
    if as_json:
        print_json(as_dict(response.kernel))
        return
    managed = response.kernel
    k = managed.kernel
    a = k.allocated
    fields = [
        ("kernel_id", k.kernel_id),
        ("agent_id", k.agent_id),
        ("daemon", managed.daemon_address),
        ("node", managed.node),
        ("scaling_group", managed.scaling_group),
        ("state", kernel_state(k)),
        ("backend", f"{k.backend} ({k.backend_ref})" if k.backend_ref else k.backend),
        ("command", " ".join(k.spec.command)),
        ("image", k.spec.image or "-"),
        ("cores", ",".join(map(str, a.cores)) or "-"),
        ("memory", format_bytes(a.memory_bytes) if a.memory_bytes else "-"),
        ("memory_limit", k.memory_limit or "-"),
        ("devices", " ".join(f"{kind}:{','.join(d.ids)}" for kind, d in a.devices.items()) or "-"),
        ("ports", ", ".join(f"{n}={p}" for n, p in sorted(k.ports.items())) or "-"),
        ("env", ", ".join(f"{n}={v}" for n, v in sorted(k.spec.env.items())) or "-"),
        ("labels", ", ".join(f"{n}={v}" for n, v in sorted(k.spec.labels.items())) or "-"),
        ("created", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.created_at))),
    ]
    if managed.HasField("delegation"):
        fields.append(("delegation", _delegation_line(managed.delegation)))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name.ljust(width)}  {value}")


def _delegation_line(d: mpb.Delegation) -> str:
    limits = [f"{d.kernels} kernels", f"{d.cores} cores", f"{format_bytes(d.memory_bytes)} memory"]
    limits += [f"{n} {kind} devices" for kind, n in sorted(d.devices.items())]
    state = "active" if d.active else "ended"
    return f"{state}, in {d.scaling_group}: {', '.join(limits)} (token {d.token_id})"


@kernel_group.command("exec")
@click.argument("kernel_id")
@click.argument("argv", nargs=-1, required=True)
@click.option("--timeout", type=click.FloatRange(min=0), default=0, help="seconds; 0: none")
@click.option("--stdin", "send_stdin", is_flag=True, help="send this command's stdin to it")
@connection_options
def kernel_exec(
    kernel_id: str, argv: tuple[str, ...], timeout: float, send_stdin: bool, conn: Connection
) -> None:
    """Run ARGV (after --) inside a kernel, stream its output, exit with its exit code."""
    stdin = sys.stdin.buffer.read(MAX_STDIN + 1) if send_stdin else b""
    if len(stdin) > MAX_STDIN:
        fail(
            [
                f"--stdin: more than {format_bytes(MAX_STDIN)} given; an exec takes at most "
                f"{format_bytes(MAX_STDIN)} of stdin (pass larger input as a file in the kernel)"
            ],
            2,
        )
    request = pb.ExecuteRequest(kernel_id=kernel_id, argv=list(argv), stdin=stdin, timeout=timeout)
    exit_code = 1
    with conn.stub() as stub:
        call = stub.Execute(request, timeout=timeout + CALL_TIMEOUT if timeout else EXEC_DEADLINE)
        try:
            for message in call:
                which = message.WhichOneof("output")
                if which == "stdout":
                    sys.stdout.buffer.write(message.stdout)
                    sys.stdout.buffer.flush()
                elif which == "stderr":
                    sys.stderr.buffer.write(message.stderr)
                    sys.stderr.buffer.flush()
                elif which == "exit":
                    exit_code = message.exit.exit_code
                    if message.exit.timed_out:
                        click.echo(f"error: timed out after {timeout}s", err=True)
                        exit_code = 124
        except KeyboardInterrupt:
            call.cancel()
            raise SystemExit(130) from None
    raise SystemExit(128 - exit_code if exit_code < 0 else min(exit_code, 255))


@kernel_group.command("logs")
@click.argument("kernel_id")
@click.option("--tail", type=click.IntRange(min=0), default=0, help="last N lines; 0: all")
@click.option(
    "-f", "--follow", is_flag=True, help="keep printing what it writes until it ends (Ctrl-C stops)"
)
@connection_options
def kernel_logs(kernel_id: str, tail: int, follow: bool, conn: Connection) -> None:
    """Print what a kernel has written (streamed in chunks, however large)."""
    request = pb.StreamKernelLogsRequest(kernel_id=kernel_id, tail_lines=tail, follow=follow)
    with conn.stub() as stub:
        call = stub.StreamKernelLogs(request, timeout=None if follow else EXEC_DEADLINE)
        try:
            for chunk in call:
                sys.stdout.buffer.write(chunk.data)
                sys.stdout.buffer.flush()
        except KeyboardInterrupt:
            call.cancel()
            raise SystemExit(130) from None


@kernel_group.command("wait")
@click.argument("kernel_id")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=0,
    help="seconds at most; 0: no limit",
)
@connection_options
@json_option
def kernel_wait(kernel_id: str, timeout: float, conn: Connection, as_json: bool) -> None:
    """Wait until a kernel has terminated; exit with its exit code.

    Prints how it ended (exited, OOMKilled, destroyed or lost, with the exit code).
    Exits with the kernel's exit code (1 when it is not known), or 124 when the
    timeout passed first.
    """
    request = pb.WaitKernelRequest(kernel_id=kernel_id, timeout=timeout)
    with conn.stub() as stub:
        try:
            response = stub.WaitKernel(request, timeout=timeout + CALL_TIMEOUT if timeout else None)
        except KeyboardInterrupt:
            raise SystemExit(130) from None
    if as_json:
        print_json(as_dict(response))
    elif response.terminated:
        code = f" with exit code {response.exit_code}" if response.HasField("exit_code") else ""
        click.echo(f"{kernel_id}: {response.reason or 'terminated'}{code}")
    else:
        click.echo(f"{kernel_id}: still {kernel_state(response.kernel)} after {timeout:g}s")
    if not response.terminated:
        raise SystemExit(124)
    if not response.HasField("exit_code"):
        raise SystemExit(1)
    code = response.exit_code
    raise SystemExit(128 - code if code < 0 else min(code, 255))


@kernel_group.command("watch")
@click.option("--agent", "agent_id", default="", help="only kernels of this agent")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event and line")
@connection_options
def kernel_watch(agent_id: str, as_json: bool, conn: Connection) -> None:
    """Print kernels' lifecycle events as they happen (Ctrl-C stops).

    First every kernel you may see as it is now, then `synced`, then each change:
    created, running, terminated (with exit code and reason), removed, unknown.
    """
    request = pb.WatchKernelsRequest(agent_id=agent_id)
    with conn.stub() as stub:
        call = stub.WatchKernels(request, timeout=None)
        try:
            for event in call:
                if as_json:
                    click.echo(json.dumps(as_dict(event), sort_keys=True))
                else:
                    click.echo(event_line(event))
        except KeyboardInterrupt:
            call.cancel()
            raise SystemExit(130) from None


@kernel_group.command("rm")
@click.argument("kernel_ids", nargs=-1, required=True)
@click.option(
    "--grace", type=click.FloatRange(min=0), default=0, help="seconds to SIGKILL; 0: the agent's"
)
@connection_options
@json_option
def kernel_rm(kernel_ids: tuple[str, ...], grace: float, conn: Connection, as_json: bool) -> None:
    """Destroy kernels (on their agents) and forget them."""
    removed = []
    failed = False
    channel = conn.channel()
    stub = manager_pb2_grpc.ManagerServiceStub(channel)
    try:
        for kernel_id in kernel_ids:
            try:
                response = stub.DestroyKernel(
                    pb.DestroyKernelRequest(kernel_id=kernel_id, grace_seconds=grace),
                    timeout=CALL_TIMEOUT + grace,
                )
            except grpc.RpcError as exc:
                failed = True
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                click.echo(f"error: {kernel_id}: {details} ({code})", err=True)
                continue
            removed.append(response.kernel)
            if not as_json:
                k = response.kernel.kernel
                click.echo(f"removed {k.kernel_id} (agent {k.agent_id})")
    finally:
        channel.close()
    if as_json:
        print_json([as_dict(k) for k in removed])
    if failed:
        raise SystemExit(1)
