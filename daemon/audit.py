"""The daemon's kernel lifecycle in its audit trail: `spawned` and `terminated` lines.

Read from the kernel journal (`daemon/events.py`), which hears of every change
of a kernel record as it happens, whoever made it (a call, an exit seen by the
watch, reconcile): a kernel turning RUNNING (created, or started again by a
restart) is spawned, with its uid, cores and ports; one turning TERMINATED, or
forgotten while running, is terminated, with its exit code and why. Only those
fields: never the spec's env, command or labels. Knows kernel records and the
journal; nothing of gRPC or backends.
"""

from __future__ import annotations

from collections.abc import Callable

from common.audit import AuditLog
from common.kernel_events import EndReason
from daemon.events import KernelEvent, KernelJournal
from daemon.kernels import KernelState


def audit_kernel_events(journal: KernelJournal, audit: AuditLog) -> Callable[[], None]:
    """Write each kernel's spawn and end from now on into audit; returns how to stop."""

    def on_event(event: KernelEvent) -> None:
        kernel = event.kernel
        if event.kind != "removed" and kernel.state is KernelState.RUNNING:
            if event.previous is not KernelState.RUNNING:
                audit.spawned(
                    kernel.agent_id,
                    kernel.kernel_id,
                    kernel.uid,
                    kernel.allocation.cores,
                    kernel.ports,
                )
        elif event.ends and (event.kind != "removed" or event.previous is KernelState.RUNNING):
            audit.terminated(
                kernel.agent_id,
                kernel.kernel_id,
                kernel.exit_code,
                kernel.status_message,
                kernel.end_reason or EndReason.DESTROYED,  # forgotten running: the daemon ended it
            )

    return journal.subscribe(on_event)
