"""How a container ended, from its inspected State; the events filter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from common.kernel_events import EndReason
from daemon.backends.base import Exit
from daemon.backends.docker.events import event_filters, exit_from_state

OOM = EndReason.OOM_KILLED


@dataclass(frozen=True)
class Case:
    name: str
    state: dict[str, Any]
    expected: Exit


CASES = [
    Case("clean exit", {"ExitCode": 0}, Exit(0, "exited")),
    Case("exit code", {"ExitCode": 7}, Exit(7, "exited")),
    Case("oom", {"ExitCode": 137, "OOMKilled": True}, Exit(137, "OOMKilled", OOM)),
    Case("oom without code", {"ExitCode": 0, "OOMKilled": True}, Exit(137, "OOMKilled", OOM)),
    Case("sigkill", {"ExitCode": 137}, Exit(137, "killed by SIGKILL")),
    Case("sigterm", {"ExitCode": 143}, Exit(143, "killed by SIGTERM")),
    Case("not a signal", {"ExitCode": 200}, Exit(200, "exited")),
    Case("engine error", {"ExitCode": 127, "Error": "oci failed"}, Exit(127, "failed: oci failed")),
    Case("no code", {}, Exit(None, "exited")),
]


class TestExitFromState:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_exit(self, case: Case) -> None:
        assert exit_from_state(case.state) == case.expected


def test_filters_select_die_events_of_labelled_containers() -> None:
    assert event_filters(["a=1", "b=2"]) == {
        "type": ["container"],
        "event": ["die"],
        "label": ["a=1", "b=2"],
    }
