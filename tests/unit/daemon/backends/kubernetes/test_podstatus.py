"""What a pod's status says about its kernel: started, cannot start, ended and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from common.kernel_events import EndReason
from daemon.backends.base import Exit
from daemon.backends.kubernetes.podstatus import (
    StartOutcome,
    exit_of,
    pending_reason,
    start_outcome,
)


def pod(
    state: dict[str, Any] | None = None, phase: str = "Pending", **status: Any
) -> dict[str, Any]:
    """A pod whose kernel container is in state (none reported when None)."""
    body: dict[str, Any] = {"phase": phase, **status}
    if state is not None:
        body["containerStatuses"] = [{"name": "kernel", "state": state}]
    return {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": body}


def terminated(code: int, reason: str, message: str = "") -> dict[str, Any]:
    term: dict[str, Any] = {"exitCode": code, "reason": reason}
    if message:
        term["message"] = message
    return {"terminated": term}


@dataclass(frozen=True)
class StartCase:
    name: str
    pod: dict[str, Any] | None
    error: type[Exception] | None  # None: started
    message: str = ""


START = [
    StartCase("running", pod({"running": {}}, "Running"), None),
    StartCase("ran and ended already", pod(terminated(7, "Error"), "Failed"), None),
    StartCase(
        "command not found",
        pod(terminated(128, "StartError", "exec: no such file"), "Failed"),
        InvalidArgument,
        "kernel 'k' cannot start: StartError: exec: no such file",
    ),
    StartCase(
        "image pull",
        pod({"waiting": {"reason": "ErrImagePull", "message": "not found"}}),
        FailedPrecondition,
        "kernel 'k': image 'img' cannot be pulled on node 'n1': ErrImagePull: not found",
    ),
    StartCase(
        "bad config",
        pod({"waiting": {"reason": "CreateContainerConfigError", "message": "no secret"}}),
        InvalidArgument,
        "kernel 'k' cannot start: CreateContainerConfigError: no secret",
    ),
    StartCase(
        "no room on the node",
        pod(None, "Failed", reason="OutOfcpu", message="Node didn't have enough resource: cpu"),
        ResourceExhausted,
        "kernel 'k': the node refused its pod: OutOfcpu: Node didn't have enough resource: cpu",
    ),
    StartCase(
        "refused otherwise",
        pod(None, "Failed", reason="NodeAffinity", message="selector mismatch"),
        FailedPrecondition,
        "kernel 'k': the node refused its pod: NodeAffinity: selector mismatch",
    ),
    StartCase(
        "deleted",
        None,
        FailedPrecondition,
        "kernel 'k': its pod was deleted while it started",
    ),
]


class TestStartOutcome:
    @pytest.mark.parametrize("case", START, ids=[c.name for c in START])
    def test_outcome(self, case: StartCase) -> None:
        outcome = start_outcome(case.pod, "k", "img")
        assert outcome is not None
        if case.error is None:
            assert outcome == StartOutcome()
        else:
            assert type(outcome.error) is case.error
            assert str(outcome.error) == case.message

    def test_creating_is_still_starting(self) -> None:
        creating = pod({"waiting": {"reason": "ContainerCreating"}})
        assert start_outcome(creating, "k", "img") is None
        assert start_outcome(pod(), "k", "img") is None
        assert pending_reason(creating) == "ContainerCreating"

    def test_an_unschedulable_pod_says_why(self) -> None:
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available",
        }
        waiting = {"metadata": {}, "spec": {}, "status": {"conditions": [condition]}}
        assert pending_reason(waiting) == "Unschedulable: 0/3 nodes are available"


@dataclass(frozen=True)
class ExitCase:
    name: str
    pod: dict[str, Any] | None
    exit: Exit | None


EXITS = [
    ExitCase("running", pod({"running": {}}, "Running"), None),
    ExitCase("exit code", pod(terminated(7, "Error"), "Failed"), Exit(7, "exited")),
    ExitCase("success", pod(terminated(0, "Completed"), "Succeeded"), Exit(0, "exited")),
    ExitCase(
        "oom",
        pod(terminated(137, "OOMKilled"), "Failed"),
        Exit(137, "OOMKilled", EndReason.OOM_KILLED),
    ),
    ExitCase("signal", pod(terminated(143, "Error"), "Failed"), Exit(143, "killed by SIGTERM")),
    ExitCase(
        "evicted",
        pod(None, "Failed", reason="Evicted", message="low on memory"),
        Exit(None, "Evicted: low on memory", EndReason.LOST),
    ),
    ExitCase("deleted", None, Exit(None, "pod deleted", EndReason.LOST)),
]


class TestExitOf:
    @pytest.mark.parametrize("case", EXITS, ids=[c.name for c in EXITS])
    def test_exit(self, case: ExitCase) -> None:
        assert exit_of(case.pod) == case.exit
