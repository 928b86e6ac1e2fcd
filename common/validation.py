"""Checking requests at the edge, once, before any work starts.

`Validation` is the call hook every server runs after authorization: it looks the
request's message type up in one table and checks it against the bounds of
`common/limits.py` and the syntax rules of ids, env, ports and labels. The daemon
and the manager share the table, so the same request is judged the same way on
both. Every check is linear in the request's size. A refusal is
`INVALID_ARGUMENT` naming the field and the limit, and it quotes at most a short
prefix of what was sent. Knows protocol messages and limits; nothing of agents,
kernels or backends.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from common.errors import InvalidArgument
from common.formatting import format_bytes
from common.ids import ID_SYNTAX, is_valid_id
from common.interceptors import CallHook
from common.limits import (
    MAX_AGENTS_PER_DAEMON,
    MAX_ARGV_BYTES,
    MAX_ARGV_ITEMS,
    MAX_CORES,
    MAX_DELEGATED_KERNELS,
    MAX_DEVICE_KINDS,
    MAX_DEVICES,
    MAX_DURATION,
    MAX_ENV_BYTES,
    MAX_ENV_ENTRIES,
    MAX_GRACE,
    MAX_IMAGE,
    MAX_KERNELS_PER_MESSAGE,
    MAX_LABEL_KEY,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_LOG_BYTES,
    MAX_MEMORY,
    MAX_NETWORKS,
    MAX_PAGE_SIZE,
    MAX_PAGE_TOKEN,
    MAX_PORTS,
    MAX_SCALING_GROUPS,
    MAX_STATES,
    MAX_STDIN,
    MAX_TAIL_LINES,
    MAX_TIMEOUT,
    MIN_MEMORY,
    QUOTE,
    Limits,
)

if TYPE_CHECKING:
    import grpc

    Ctx = grpc.aio.ServicerContext[Any, Any]

PORT_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PORT_NAME_SYNTAX = "letters, digits and '_', not starting with a digit (it becomes PORT_<NAME>)"
LABEL_KEY_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_./-]*[A-Za-z0-9])?")
LABEL_KEY_SYNTAX = (
    f"1-{MAX_LABEL_KEY} characters of letters, digits, '_', '.', '-', '/', "
    "starting and ending with a letter or digit"
)


def quote(value: object) -> str:
    """value as shown back in an error: repr, cut to a short prefix when long."""
    text = value if isinstance(value, str | bytes) else str(value)
    if len(text) <= QUOTE:
        return repr(text)
    return f"{text[:QUOTE]!r}... ({len(text)} characters)"


# ------------------------------------------------------------ field checks


def check_id(field: str, value: str, required: bool = True) -> None:
    """An agent/kernel/network/group id: the common syntax (empty allowed if not required)."""
    if not value and not required:
        return
    if not is_valid_id(value):
        raise InvalidArgument(f"{field} {quote(value)} is not valid: {ID_SYNTAX}")


def check_seconds(field: str, value: float, maximum: float) -> None:
    """A finite, non-negative number of seconds up to maximum."""
    if not math.isfinite(value) or value < 0 or value > maximum:
        raise InvalidArgument(
            f"{field} must be a finite number of seconds from 0 to {int(maximum)}, not {value!r}"
        )


def check_count(field: str, count: int, maximum: int) -> None:
    """At most maximum items."""
    if count > maximum:
        raise InvalidArgument(f"{field}: {count} given, at most {maximum} allowed")


def check_text(field: str, value: str, maximum: int) -> None:
    """A string without NUL of at most maximum characters."""
    if len(value) > maximum:
        raise InvalidArgument(f"{field} {quote(value)} is longer than {maximum} characters")
    if "\0" in value:
        raise InvalidArgument(f"{field} {quote(value)} contains a NUL byte")


def check_argv(field: str, argv: Iterable[str], required: bool) -> None:
    """A command line: bounded count and size, no NUL, a non-empty program."""
    args = list(argv)
    if not args:
        if required:
            raise InvalidArgument(f"{field}: give the command to execute")
        return
    check_count(field, len(args), MAX_ARGV_ITEMS)
    total = 0
    for arg in args:
        total += len(arg.encode()) + 1
        if "\0" in arg:
            raise InvalidArgument(f"{field} contains a NUL byte (in {quote(arg)})")
    if total > MAX_ARGV_BYTES:
        raise InvalidArgument(
            f"{field}: {total} bytes in all, at most {MAX_ARGV_BYTES} "
            f"({format_bytes(MAX_ARGV_BYTES)}) allowed"
        )
    if not args[0]:
        raise InvalidArgument(f"{field}[0]: the program to run must not be empty")


def check_env(where: str, env: Mapping[str, str]) -> None:
    """Environment variables: bounded count and size; names a process can receive."""
    check_count(f"{where}env", len(env), MAX_ENV_ENTRIES)
    total = 0
    for key, value in env.items():
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise InvalidArgument(
                f"{where}env key {quote(key)} is not a valid environment variable name "
                "(non-empty, no '=' and no NUL byte)"
            )
        total += len(key.encode()) + len(value.encode()) + 2
    if total > MAX_ENV_BYTES:
        raise InvalidArgument(
            f"{where}env: {total} bytes in all, at most {MAX_ENV_BYTES} "
            f"({format_bytes(MAX_ENV_BYTES)}) allowed"
        )


def check_labels(where: str, labels: Mapping[str, str]) -> None:
    """Labels: bounded count and size, keys of the label syntax."""
    check_count(f"{where}labels", len(labels), MAX_LABELS)
    for key, value in labels.items():
        if len(key) > MAX_LABEL_KEY or not LABEL_KEY_RE.fullmatch(key):
            raise InvalidArgument(f"{where}label key {quote(key)} is not valid: {LABEL_KEY_SYNTAX}")
        check_text(f"{where}label {key!r}", value, MAX_LABEL_VALUE)


def spec_place(kernel_id: str, index: int | None = None) -> str:
    """How a message about one spec of a batch begins: by its kernel id when it has a
    valid one, else by its place in the batch (`kernels[2]: `)."""
    if is_valid_id(kernel_id):
        return f"kernel {kernel_id!r}: "
    return f"kernels[{index}]: " if index is not None else ""


def check_spec(spec: Any, index: int | None = None) -> None:
    """One KernelSpec."""
    where = spec_place(spec.kernel_id, index)
    check_id("kernel_id", spec.kernel_id, required=False)
    check_text(f"{where}image", spec.image, MAX_IMAGE)
    check_argv(f"{where}command", spec.command, required=False)
    check_env(where, spec.env)
    check_labels(where, spec.labels)
    check_count(f"{where}networks", len(spec.networks), MAX_NETWORKS)
    for network in spec.networks:
        check_id(f"{where}network", network)
    check_count(f"{where}ports", len(spec.ports), MAX_PORTS)
    exported: dict[str, str] = {}  # PORT_<NAME> -> the port name that takes it
    for port in spec.ports:
        if not PORT_NAME_RE.fullmatch(port.name):
            raise InvalidArgument(
                f"{where}port name {quote(port.name)} is not valid: {PORT_NAME_SYNTAX}"
            )
        upper = port.name.upper()
        if upper in exported:
            raise InvalidArgument(
                f"{where}port names {exported[upper]!r} and {port.name!r} both become PORT_{upper}"
            )
        exported[upper] = port.name
        if port.container_port > 65535:
            raise InvalidArgument(
                f"{where}port {port.name!r}: container_port {port.container_port} is outside "
                "0-65535"
            )
        if port.host_port > 65535:
            raise InvalidArgument(
                f"{where}port {port.name!r}: host_port {port.host_port} is outside 0-65535"
            )
    check_resources(where, spec.resources)


def check_resources(where: str, r: Any) -> None:
    """A ResourceRequest's amounts: within what any host could have."""
    check_count(f"{where}resources.cpu_count", r.cpu_count, MAX_CORES)
    check_count(f"{where}resources.cores", len(r.cores), MAX_CORES)
    for core in r.cores:
        if not 0 <= core < MAX_CORES:
            raise InvalidArgument(
                f"{where}resources.cores: core {core} is outside 0-{MAX_CORES - 1}"
            )
    if r.memory_bytes and not MIN_MEMORY <= r.memory_bytes <= MAX_MEMORY:
        raise InvalidArgument(
            f"{where}resources.memory_bytes: {r.memory_bytes} is below the "
            f"{format_bytes(MIN_MEMORY)} a kernel needs to run (0: no reservation)"
            if r.memory_bytes < MIN_MEMORY
            else f"{where}resources.memory_bytes: {r.memory_bytes} is more than any host has"
        )
    check_count(f"{where}resources.devices", len(r.devices), MAX_DEVICE_KINDS)
    for kind, count in r.devices.items():
        check_id(f"{where}resources.devices kind", kind)
        check_count(f"{where}resources.devices.{kind}", count, MAX_DEVICES)
    if not math.isfinite(r.cpu_quota) or not 0 <= r.cpu_quota <= MAX_CORES:
        raise InvalidArgument(
            f"{where}resources.cpu_quota must be a finite number from 0 to {MAX_CORES}, "
            f"not {r.cpu_quota!r}"
        )


def check_states(field: str, states: Iterable[int], known: Iterable[int]) -> None:
    """A filter of kernel states: known values only, a handful at most."""
    values = list(states)
    check_count(field, len(values), MAX_STATES)
    valid = set(known)
    for value in values:
        if value not in valid:
            raise InvalidArgument(f"{field}: unknown kernel state {value}")


def check_page(request: Any) -> None:
    """page_size and page_token of a listing."""
    check_count("page_size", request.page_size, MAX_PAGE_SIZE)
    check_text("page_token", request.page_token, MAX_PAGE_TOKEN)


# ------------------------------------------------------------ the table

Check = Callable[[Any, Limits], None]


def _create_kernels(r: Any, limits: Limits) -> None:
    check_id("agent_id", r.agent_id, required=False)
    if not r.kernels:
        raise InvalidArgument("kernels: give at least one kernel spec")
    if len(r.kernels) > limits.max_batch:
        raise InvalidArgument(
            f"kernels: {len(r.kernels)} specs in one batch, at most {limits.max_batch} "
            "allowed (max_batch)"
        )
    seen: set[str] = set()
    for i, spec in enumerate(r.kernels):
        check_spec(spec, i)
        if spec.kernel_id:
            if spec.kernel_id in seen:
                raise InvalidArgument(
                    f"kernel ids repeat within the batch: {spec.kernel_id!r} is given twice"
                )
            seen.add(spec.kernel_id)


def _kernel_ref(r: Any, limits: Limits) -> None:
    check_id("agent_id", r.agent_id, required=False)
    if not r.kernel_id:
        raise InvalidArgument("kernel_id is required")
    check_id("kernel_id", r.kernel_id)


def _destroy(r: Any, limits: Limits) -> None:
    _kernel_ref(r, limits)
    check_seconds("grace_seconds", r.grace_seconds, MAX_GRACE)


def _logs(r: Any, limits: Limits) -> None:
    _kernel_ref(r, limits)
    check_count("tail_lines", r.tail_lines, MAX_TAIL_LINES)
    if hasattr(r, "max_bytes"):
        check_count("max_bytes", r.max_bytes, MAX_LOG_BYTES)


def _execute(r: Any, limits: Limits) -> None:
    _kernel_ref(r, limits)
    check_argv("argv", r.argv, required=True)
    if len(r.stdin) > MAX_STDIN:
        raise InvalidArgument(
            f"stdin: {format_bytes(len(r.stdin))} given, at most {format_bytes(MAX_STDIN)} "
            "in one Execute"
        )
    check_seconds("timeout", r.timeout, MAX_TIMEOUT)


def _wait(r: Any, limits: Limits) -> None:
    _kernel_ref(r, limits)
    check_seconds("timeout", r.timeout, MAX_TIMEOUT)


def _agent(r: Any, limits: Limits) -> None:
    check_id("agent_id", r.agent_id, required=False)


def _list_kernels(r: Any, limits: Limits) -> None:
    from protos import agent_pb2

    check_id("agent_id", r.agent_id, required=False)
    if hasattr(r, "scaling_group"):
        check_id("scaling_group", r.scaling_group, required=False)
    check_page(r)
    check_states("states", r.states, agent_pb2.KernelState.values())
    check_labels("", r.labels)


def _agent_and_name(field: str) -> Check:
    def check(r: Any, limits: Limits) -> None:
        check_id("agent_id", r.agent_id, required=False)
        check_id(field, getattr(r, field))

    return check


def _scaling_group(r: Any, limits: Limits) -> None:
    check_id("scaling_group", r.scaling_group, required=False)


def _create_kernel(r: Any, limits: Limits) -> None:
    check_id("agent_id", r.agent_id, required=False)
    check_id("scaling_group", r.scaling_group, required=False)
    check_spec(r.spec)
    if r.HasField("delegate_limits"):
        if not r.delegate:
            raise InvalidArgument(
                "delegate_limits: given without delegate (limits bound what a delegating "
                "kernel creates; set delegate too)"
            )
        asked = r.delegate_limits
        check_count("delegate_limits.cores", asked.cores, MAX_CORES)
        check_count("delegate_limits.kernels", asked.kernels, MAX_DELEGATED_KERNELS)
        if asked.memory_bytes > MAX_MEMORY:
            raise InvalidArgument(
                f"delegate_limits.memory_bytes: {asked.memory_bytes} is more than any host has"
            )


def _register_agents(r: Any, limits: Limits) -> None:
    check_text("daemon_address", r.daemon_address, 256)
    check_text("node", r.node, 256)
    check_text("daemon_id", r.daemon_id, 256)
    check_count("agents", len(r.agents), MAX_AGENTS_PER_DAEMON)
    check_count("kernels", len(r.kernels), MAX_KERNELS_PER_MESSAGE)
    check_seconds("heartbeat_interval", r.heartbeat_interval, 3600)


def _register_kernels(r: Any, limits: Limits) -> None:
    check_count("kernels", len(r.kernels), MAX_KERNELS_PER_MESSAGE)


def _create_token(r: Any, limits: Limits) -> None:
    check_id("name", r.name)
    check_count("scaling_groups", len(r.scaling_groups), MAX_SCALING_GROUPS)
    for group in r.scaling_groups:
        check_id("scaling group", group)
    check_seconds("expires_in", r.expires_in, MAX_DURATION)


def _revoke_token(r: Any, limits: Limits) -> None:
    check_text("token", r.token, 128)


def _remove_agent(r: Any, limits: Limits) -> None:
    check_id("agent_id", r.agent_id)


def _prune(r: Any, limits: Limits) -> None:
    check_seconds("older_than", r.older_than, MAX_DURATION)


CHECKS: dict[str, Check] = {
    "agenthost.v1.CreateKernelsRequest": _create_kernels,
    "agenthost.v1.DestroyKernelRequest": _destroy,
    "agenthost.v1.RestartKernelRequest": _kernel_ref,
    "agenthost.v1.GetKernelRequest": _kernel_ref,
    "agenthost.v1.GetKernelLogsRequest": _logs,
    "agenthost.v1.StreamKernelLogsRequest": _logs,
    "agenthost.v1.ListKernelsRequest": _list_kernels,
    "agenthost.v1.ExecuteRequest": _execute,
    "agenthost.v1.WaitKernelRequest": _wait,
    "agenthost.v1.WatchKernelsRequest": _agent,
    "agenthost.v1.UpdateScalingGroupRequest": _agent_and_name("scaling_group"),
    "agenthost.v1.CreateNetworkRequest": _agent_and_name("name"),
    "agenthost.v1.DestroyNetworkRequest": _agent_and_name("name"),
    "agenthost.v1.ManagerListAgentsRequest": _scaling_group,
    "agenthost.v1.ManagerListKernelsRequest": _list_kernels,
    "agenthost.v1.CreateKernelRequest": _create_kernel,
    "agenthost.v1.RegisterAgentsRequest": _register_agents,
    "agenthost.v1.RegisterKernelsRequest": _register_kernels,
    "agenthost.v1.CreateTokenRequest": _create_token,
    "agenthost.v1.RevokeTokenRequest": _revoke_token,
    "agenthost.v1.RemoveAgentRequest": _remove_agent,
    "agenthost.v1.PruneKernelsRequest": _prune,
}


DEFAULT_LIMITS = Limits()


def validate(request: Any, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check request by its message type (types without rules pass)."""
    descriptor = getattr(request, "DESCRIPTOR", None)
    check = CHECKS.get(descriptor.full_name) if descriptor is not None else None
    if check is not None:
        check(request, limits)


class Validation(CallHook):
    """The call hook that validates every request before its handler runs."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Refuse a request that breaks a rule, before any work starts."""
        validate(request, self.limits)
        return None
