"""The manager's Prometheus metrics: its own registry, read from live state when scraped.

`ManagerCollector` reads, at scrape time and nothing before: agents by status
(the registry), kernels by state (the kernel table), groups by phase (the group
controller), scheduling decisions by outcome and their latency (the scheduler's
own record of each `reserve`), and routed-call latency by daemon (`daemon_id`
and `node`), method and status code (the daemon client's record of each call).
A scheduling outcome is `scheduled`, or the status code of the error that refused
it (FAILED_PRECONDITION: no agent of the group could ever fit; RESOURCE_EXHAUSTED:
every fitting agent is full; UNAVAILABLE: the fitting agents are LOST;
INVALID_ARGUMENT, NOT_FOUND: a bad or unknown pinned agent), from the one error
mapping. The RPC hook (`common/metrics.py`) times the manager's own calls by
method and code.

Knows the manager core, the group controller and Prometheus; nothing of gRPC
servers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from common.metrics import MetricsEndpoint, RpcMetrics, timings_family
from common.status import status_code_of
from manager.core import Manager
from manager.groups.controller import GroupController
from manager.registry import Liveness
from protos import agent_pb2 as pb

PREFIX = "agenthost_manager"
SCHEDULED = "scheduled"


class ManagerCollector:
    """Agents, kernels, groups, scheduling and routed calls, read at scrape."""

    def __init__(self, manager: Manager, groups: GroupController) -> None:
        self.manager = manager
        self.groups = groups

    def collect(self) -> Iterator[Metric]:
        """Every family, each from the part of the manager that owns it."""
        m = self.manager
        agents = GaugeMetricFamily(
            f"{PREFIX}_agents", "Agents known to the manager, by status", labels=["status"]
        )
        by_status = Counter(r.status for r in m.registry.list())
        for status in Liveness:
            agents.add_metric([status.value], float(by_status[status]))
        yield agents

        kernels = GaugeMetricFamily(
            f"{PREFIX}_kernels", "Kernels in the manager's table, by state", labels=["state"]
        )
        by_state: Counter[int] = Counter(int(r.kernel.state) for r in m.kernels.values())
        for value, name in _KERNEL_STATES.items():
            kernels.add_metric([name], float(by_state[value]))
        yield kernels

        groups = GaugeMetricFamily(f"{PREFIX}_groups", "Agent groups, by phase", labels=["phase"])
        for phase, count in self.groups.count_by_phase().items():
            groups.add_metric([phase], float(count))
        yield groups

        decisions = CounterMetricFamily(
            f"{PREFIX}_scheduling_decisions",
            "Scheduling decisions, by outcome: scheduled, or the status code that refused one",
            labels=["outcome"],
        )
        by_outcome: Counter[str] = Counter()
        for error, count in m.scheduler.decisions.items():
            by_outcome[SCHEDULED if error is None else status_code_of(error).name] += count
        by_outcome.setdefault(SCHEDULED, 0)
        for outcome, count in sorted(by_outcome.items()):
            decisions.add_metric([outcome], float(count))
        yield decisions

        yield timings_family(
            f"{PREFIX}_scheduling_duration_seconds",
            "Seconds one scheduling decision took",
            [],
            [([], m.scheduler.decision_timings)],
        )
        yield timings_family(
            f"{PREFIX}_routed_call_duration_seconds",
            "Seconds a call routed to a daemon took (from the first attempt to the answer; "
            "a stream: its whole life), by daemon, method and status code",
            ["daemon_id", "node", "method", "code"],
            ((list(key), timings) for key, timings in list(m.client.call_timings.items())),
        )


_KERNEL_STATES: dict[int, str] = {
    value: name.removeprefix("KERNEL_STATE_").lower()
    for name, value in pb.KernelState.items()
    if value != pb.KERNEL_STATE_UNSPECIFIED
}


class ManagerMetrics:
    """The manager's registry, its collector and the RPC hook."""

    def __init__(self, manager: Manager, groups: GroupController) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ManagerCollector(manager, groups))
        self.hook = RpcMetrics(self.registry, PREFIX)


async def serve_metrics(
    manager: Manager, groups: GroupController, listen: str
) -> tuple[RpcMetrics, MetricsEndpoint]:
    """The manager's RPC hook and its endpoint, serving on listen (OSError when it cannot)."""
    metrics = ManagerMetrics(manager, groups)
    return metrics.hook, await MetricsEndpoint.start(listen, metrics.registry)
