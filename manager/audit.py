"""The manager's view of kernels' lives in its audit trail: `spawned` and `terminated`.

Read from the kernel table's change notifications (`manager/kernels.py`), so a
kernel is told once however the manager learns of it (its own create or destroy,
a registration, a heartbeat, a lost agent): added alive is spawned, with its
uid, cores and ports as its daemon reported them; turning TERMINATED, or
forgotten alive, is terminated, with its exit code and why. Only those fields:
never the spec's env, command or labels. Knows the kernel table; nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Callable

from common.audit import AuditLog
from common.kernel_events import EndReason
from manager.kernels import TERMINATED, ChangeKind, KernelChange, KernelTable


def audit_kernel_changes(table: KernelTable, audit: AuditLog) -> Callable[[], None]:
    """Write each kernel's spawn and end from now on into audit; returns how to stop."""

    def on_change(change: KernelChange) -> None:
        kernel = change.record.kernel
        if change.kind is ChangeKind.ADDED and kernel.state != TERMINATED:
            audit.spawned(
                kernel.agent_id,
                kernel.kernel_id,
                kernel.uid if kernel.HasField("uid") else None,
                kernel.allocated.cores,
                kernel.ports,
            )
        elif (change.kind is ChangeKind.STATE and kernel.state == TERMINATED) or (
            change.kind is ChangeKind.FORGOTTEN and change.previous_state != TERMINATED
        ):
            audit.terminated(
                kernel.agent_id,
                kernel.kernel_id,
                kernel.exit_code if kernel.HasField("exit_code") else None,
                kernel.status_message,
                kernel.end_reason or EndReason.LOST,  # forgotten alive: its agent was removed
            )

    return table.subscribe(on_change)
