"""How kernels end and how their lifecycle is told: one vocabulary for daemon, manager and CLI.

`EndReason` is the one word `WaitKernel`, `WatchKernels`, the audit trail and the
`Kernel.end_reason` field use for why a kernel terminated. `event_for` turns a
kernel record (a protocol `Kernel`) into the `KernelEvent` a watcher receives, and
`waited` into a `WaitKernelResponse`, so the daemon and the manager tell a
kernel's life the same way. Knows protocol messages only.
"""

from __future__ import annotations

from enum import StrEnum

from protos import agent_pb2 as pb


class EndReason(StrEnum):
    """Why a kernel terminated, in one word."""

    EXITED = "exited"  # by itself: any exit code, or a signal it did not get from us
    OOM_KILLED = "OOMKilled"  # the kernel's memory limit was hit
    DESTROYED = "destroyed"  # ended by a call (destroy, a failed restart)
    LOST = "lost"  # vanished, ended unobserved, or its agent went away


_EVENT_OF_STATE = {
    pb.KERNEL_STATE_PENDING: pb.KERNEL_EVENT_TYPE_CREATED,
    pb.KERNEL_STATE_RUNNING: pb.KERNEL_EVENT_TYPE_RUNNING,
    pb.KERNEL_STATE_TERMINATED: pb.KERNEL_EVENT_TYPE_TERMINATED,
    pb.KERNEL_STATE_UNKNOWN: pb.KERNEL_EVENT_TYPE_UNKNOWN,
}

SYNCED = pb.KernelEvent(type=pb.KERNEL_EVENT_TYPE_SYNCED)


def event_for(
    kernel: pb.Kernel, removed: bool = False, initial: bool = False, created: bool = False
) -> pb.KernelEvent:
    """The event telling that kernel is now in its state (or, removed, forgotten; or,
    created, new: already running when first heard of, RUNNING follows as its own event)."""
    if removed:
        kind = pb.KERNEL_EVENT_TYPE_REMOVED
    elif created:
        kind = pb.KERNEL_EVENT_TYPE_CREATED
    else:
        kind = _EVENT_OF_STATE[kernel.state]
    event = pb.KernelEvent(type=kind, kernel=kernel, initial=initial)
    if kernel.state == pb.KERNEL_STATE_TERMINATED:
        if kernel.HasField("exit_code"):
            event.exit_code = kernel.exit_code
        event.reason = kernel.end_reason
    return event


def waited(kernel: pb.Kernel) -> pb.WaitKernelResponse:
    """The answer to a wait for kernel: terminated (with code and reason) or not yet."""
    response = pb.WaitKernelResponse(kernel=kernel)
    if kernel.state == pb.KERNEL_STATE_TERMINATED:
        response.terminated = True
        if kernel.HasField("exit_code"):
            response.exit_code = kernel.exit_code
        response.reason = kernel.end_reason
    return response
