"""What a pod's status says about its kernel: started, failed to start, or ended and how.

Pure functions of the pod as the API server returns it (a JSON dict, `None`
when the pod is gone). The kernel is the pod's one container (`CONTAINER`):
`start_outcome` tells a create whether it may report the kernel running, or
why it cannot (an image that cannot be pulled, a command that cannot run, a
kubelet that refused the pod); `exit_of` says how a kernel ended (its exit code,
`OOMKilled`, a signal, an eviction, the pod deleted). No I/O.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from typing import Any

from common.errors import AgentHostError, FailedPrecondition, InvalidArgument, ResourceExhausted
from common.kernel_events import EndReason
from daemon.backends.base import Exit

JsonObject = dict[str, Any]

CONTAINER = "kernel"  # the one container of a kernel's pod

# Container waiting reasons that mean the kernel will not start without a change.
IMAGE_PROBLEMS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CANNOT_RUN = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
# Terminated reasons of a container whose command never ran.
START_FAILURES = ("StartError", "ContainerCannotRun")


@dataclass(frozen=True)
class StartOutcome:
    """A pod that is no longer starting: it runs (or ran), or error says why it cannot."""

    error: AgentHostError | None = None


def kernel_status(pod: JsonObject) -> JsonObject | None:
    """The status of the kernel's container, or None before the kubelet reported one."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            found: JsonObject = status
            return found
    return None


def _state(pod: JsonObject) -> tuple[str, JsonObject]:
    """The kernel container's state: ("running" | "terminated" | "waiting" | "", details)."""
    status = kernel_status(pod) or {}
    for kind in ("terminated", "running", "waiting"):
        details = (status.get("state") or {}).get(kind)
        if details is not None:
            return kind, details
    return "", {}


def _detail(details: JsonObject, fallback: str) -> str:
    reason = details.get("reason") or fallback
    message = details.get("message")
    return f"{reason}: {message}" if message else str(reason)


def start_outcome(pod: JsonObject | None, kernel_id: str, image: str) -> StartOutcome | None:
    """None while the pod is still starting; else whether its kernel started."""
    if pod is None:
        return StartOutcome(
            FailedPrecondition(f"kernel {kernel_id!r}: its pod was deleted while it started")
        )
    status = pod.get("status", {})
    kind, details = _state(pod)
    if kind == "running":
        return StartOutcome()
    if kind == "terminated":
        if details.get("reason") in START_FAILURES:
            return StartOutcome(
                InvalidArgument(
                    f"kernel {kernel_id!r} cannot start: {_detail(details, 'StartError')}"
                )
            )
        return StartOutcome()  # it ran, and has ended already: its exit is watched
    reason = details.get("reason", "")
    if kind == "waiting" and reason in IMAGE_PROBLEMS:
        return StartOutcome(
            FailedPrecondition(
                f"kernel {kernel_id!r}: image {image!r} cannot be pulled on node "
                f"{pod.get('spec', {}).get('nodeName')!r}: {_detail(details, reason)}"
            )
        )
    if kind == "waiting" and reason in CANNOT_RUN:
        return StartOutcome(
            InvalidArgument(f"kernel {kernel_id!r} cannot start: {_detail(details, reason)}")
        )
    if status.get("phase") == "Failed":  # refused by the kubelet before any container
        problem = _detail(status, "Failed")
        cause = str(status.get("reason") or "")
        if cause.startswith("OutOf") or cause == "NodePorts":
            return StartOutcome(
                ResourceExhausted(f"kernel {kernel_id!r}: the node refused its pod: {problem}")
            )
        return StartOutcome(
            FailedPrecondition(f"kernel {kernel_id!r}: the node refused its pod: {problem}")
        )
    return None


def pending_reason(pod: JsonObject | None) -> str:
    """Why a pod has not started yet, for a create that gave up waiting."""
    if pod is None:
        return "the pod is gone"
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return _detail(condition, "Unschedulable")
    kind, details = _state(pod)
    if kind == "waiting":
        return _detail(details, "waiting")
    if not pod.get("spec", {}).get("nodeName"):
        return "not scheduled to a node"
    return f"phase {status.get('phase', 'Pending')}"


def exit_of(pod: JsonObject | None) -> Exit | None:
    """How the kernel ended, or None while it runs (or has not started)."""
    if pod is None:
        return Exit(exit_code=None, reason="pod deleted", end=EndReason.LOST)
    kind, details = _state(pod)
    status = pod.get("status", {})
    if kind == "terminated":
        code = details.get("exitCode")
        code = code if isinstance(code, int) else None
        reason = details.get("reason")
        if reason == "OOMKilled":
            return Exit(exit_code=code or 137, reason="OOMKilled", end=EndReason.OOM_KILLED)
        if reason in START_FAILURES:
            return Exit(exit_code=code, reason=f"failed: {_detail(details, str(reason))}")
        if code is not None and code > 128:
            with contextlib.suppress(ValueError):
                return Exit(exit_code=code, reason=f"killed by {signal.Signals(code - 128).name}")
        return Exit(exit_code=code, reason="exited")
    if status.get("phase") in ("Failed", "Succeeded"):  # e.g. evicted: no container state
        return Exit(
            exit_code=None, reason=_detail(status, str(status["phase"])), end=EndReason.LOST
        )
    return None


def is_terminating(pod: JsonObject) -> bool:
    """True once someone asked for the pod's deletion."""
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))
