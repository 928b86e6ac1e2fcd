"""How client commands show the manager's messages: JSON dicts, states, fractions."""

from __future__ import annotations

import time
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from common.formatting import format_bytes
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

STATE_NAMES = {
    pb.KERNEL_STATE_PENDING: "pending",
    pb.KERNEL_STATE_RUNNING: "running",
    pb.KERNEL_STATE_TERMINATED: "terminated",
    pb.KERNEL_STATE_UNKNOWN: "unknown",
}
STATES_BY_NAME = {name: state for state, name in STATE_NAMES.items()}
AGENT_STATUS = {mpb.AGENT_STATUS_ALIVE: "ALIVE", mpb.AGENT_STATUS_LOST: "LOST"}


def as_dict(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, with the proto's own field names."""
    return MessageToDict(message, preserving_proto_field_name=True)


def kernel_state(kernel: pb.Kernel) -> str:
    """'running', or 'terminated (exit 3, exited)'."""
    state = STATE_NAMES.get(kernel.state, "?")
    if kernel.state == pb.KERNEL_STATE_TERMINATED:
        code = f"exit {kernel.exit_code}" if kernel.HasField("exit_code") else ""
        said = kernel.status_message
        end = (
            "" if not kernel.end_reason or said.startswith(kernel.end_reason) else kernel.end_reason
        )
        why = ", ".join(p for p in (code, end, said) if p)
        return f"{state} ({why})" if why else state
    return state


def event_line(event: pb.KernelEvent) -> str:
    """'12:00:01 terminated k1 (agent a1) exit 3, exited' for one watched event."""
    when = time.strftime("%H:%M:%S")
    kind = pb.KernelEventType.Name(event.type).removeprefix("KERNEL_EVENT_TYPE_").lower()
    if event.type == pb.KERNEL_EVENT_TYPE_SYNCED:
        return f"{when} synced"
    k = event.kernel
    line = f"{when} {kind} {k.kernel_id} (agent {k.agent_id})"
    if event.type == pb.KERNEL_EVENT_TYPE_TERMINATED:
        code = f"exit {event.exit_code}, " if event.HasField("exit_code") else ""
        line += f" {code}{event.reason or k.status_message}"
    return line + (" [now]" if event.initial else "")


def fraction(used: int, total: int, bytes_: bool = False) -> str:
    """'2/4', or '512MiB/2GiB'."""
    if bytes_:
        return f"{format_bytes(used) if used else '0'}/{format_bytes(total)}"
    return f"{used}/{total}"
