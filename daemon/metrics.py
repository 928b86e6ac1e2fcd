"""The daemon's Prometheus metrics: its own registry, read from live state when scraped.

`DaemonMetrics(runtime)` holds the daemon's `CollectorRegistry` with:

- `AgentCollector`, which reads every agent when Prometheus scrapes (nothing is
  kept in step with the agents, and their hot paths pay nothing): capacity,
  occupied and free cores, memory, devices (by kind) and ports from the same
  `Agent.status()` that `ListAgents` answers, so the two always agree (free is
  capacity minus occupied); health; kernels by state; and the agents' own
  `Timings` of reconcile passes and checkpoint writes.
- the RPC hook (`common/metrics.py`): latency by method, status code and the
  `agent_id` a request names (one of this daemon's, else ""), and its outcome
  callback, which counts kernel starts (each kernel of a `CreateKernels` that
  succeeded, each `RestartKernel` that did) and failures (each kernel of one that
  failed) per agent, the failure's reason being its status code's name from the
  one error mapping.

Every series of one agent carries `agent_id`. Knows the runtime's read side and
Prometheus; nothing of backends or of the servicer.
"""

from __future__ import annotations

import contextlib
from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from common.errors import AgentHostError
from common.metrics import MetricsEndpoint, RpcMetrics, timings_family
from daemon.kernels import KernelState
from daemon.runtime import AgentRuntime

AGENT = "agenthost_agent"  # per-agent series
DAEMON = "agenthost_daemon"  # the process's own (RPC latency)
STARTS = {"CreateKernels", "RestartKernel"}  # the calls that start kernels


class AgentCollector:
    """Every agent's capacity, occupancy, health, kernels and timings, read at scrape."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        """One family per series; each agent a sample labelled with its agent_id."""
        names = ("capacity", "occupied", "free")
        cores = {n: _gauge(f"{AGENT}_cores_{n}", f"Cores {n}", ["agent_id"]) for n in names}
        memory = {
            n: _gauge(f"{AGENT}_memory_{n}_bytes", f"Memory {n}, bytes", ["agent_id"])
            for n in names
        }
        devices = {
            n: _gauge(f"{AGENT}_devices_{n}", f"Devices {n}, by kind", ["agent_id", "kind"])
            for n in names
        }
        ports = {
            n: _gauge(f"{AGENT}_ports_{n}", f"Host ports of the range {n}", ["agent_id"])
            for n in names
        }
        healthy = _gauge(
            f"{AGENT}_healthy", "1 while the agent's backend answers, else 0", ["agent_id"]
        )
        kernels = _gauge(f"{AGENT}_kernels", "Kernels by state", ["agent_id", "state"])
        for agent in self.runtime.agents.values():
            status = agent.status()
            a: list[str] = [agent.id]
            cap, occ = status.capacity, status.occupied
            for family, total, used in (
                (cores, len(cap.cores), len(occ.cores)),
                (memory, cap.memory, occ.memory),
                (ports, status.ports_total, status.ports_used),
            ):
                _set(family, a, total, used)
            for kind in sorted(set(cap.devices) | set(occ.devices)):
                total, used = len(cap.devices.get(kind, ())), len(occ.devices.get(kind, ()))
                _set(devices, [agent.id, kind], total, used)
            healthy.add_metric(a, 1.0 if status.healthy else 0.0)
            states = Tally(k.state for k in agent.list_kernels())
            for state in KernelState:
                kernels.add_metric([agent.id, state.value], float(states[state]))
        for families in (cores, memory, devices, ports):
            yield from families.values()
        yield healthy
        yield kernels
        agents = self.runtime.agents.values()
        yield timings_family(
            f"{AGENT}_reconcile_duration_seconds",
            "Seconds one reconcile pass of the agent took",
            ["agent_id"],
            (([a.id], a.reconcile_timings) for a in agents),
        )
        yield timings_family(
            f"{AGENT}_checkpoint_write_duration_seconds",
            "Seconds one write of the agent's checkpoint took (write, fsync, rename)",
            ["agent_id"],
            (([a.id], a.checkpoint_timings) for a in agents),
        )


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


def _set(family: dict[str, GaugeMetricFamily], labels: list[str], total: int, used: int) -> None:
    family["capacity"].add_metric(labels, float(total))
    family["occupied"].add_metric(labels, float(used))
    family["free"].add_metric(labels, float(total - used))


class DaemonMetrics:
    """The daemon's registry, its collector, the RPC hook and the kernel counters."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(runtime))
        self.starts = Counter(
            f"{AGENT}_kernel_starts",
            "Kernels started (each kernel of a CreateKernels that succeeded, each RestartKernel "
            "that did)",
            ["agent_id"],
            registry=self.registry,
        )
        self.failures = Counter(
            f"{AGENT}_kernel_failures",
            "Kernels that failed to start, by reason: the status code of the failed "
            "CreateKernels or RestartKernel",
            ["agent_id", "reason"],
            registry=self.registry,
        )
        for agent_id in runtime.agents:  # every agent's series from the first scrape on
            self.starts.labels(agent_id)
        self.hook = RpcMetrics(
            self.registry, DAEMON, agent_label=self.named_agent, outcome=self.count_starts
        )

    def named_agent(self, request: Any) -> str:
        """The agent a request names, if it is one of this daemon's ("" otherwise: a
        label never takes a value the caller made up)."""
        agent_id = getattr(request, "agent_id", "")
        return agent_id if agent_id in self.runtime.agents else ""

    def count_starts(self, method: str, request: Any, code: str) -> None:
        """Count the kernels a finished CreateKernels or RestartKernel started or failed."""
        if method not in STARTS:
            return
        agent_id: str = ""  # where the call went (an empty agent_id: the default agent)
        with contextlib.suppress(AgentHostError):
            agent_id = self.runtime.get_agent(request.agent_id).id
        n = len(request.kernels) if method == "CreateKernels" else 1
        if code == "OK":
            self.starts.labels(agent_id).inc(n)
        else:
            self.failures.labels(agent_id, code).inc(n)


async def serve_metrics(runtime: AgentRuntime, listen: str) -> tuple[RpcMetrics, MetricsEndpoint]:
    """The daemon's RPC hook and its endpoint, serving on listen (OSError when it cannot)."""
    metrics = DaemonMetrics(runtime)
    return metrics.hook, await MetricsEndpoint.start(listen, metrics.registry)
