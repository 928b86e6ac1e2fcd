"""How what daemons report reconciles the manager's kernel table.

A registration carries every kernel of the daemon: kernels the table has on those
agents and the daemon no longer has become TERMINATED, kernels the daemon has and
the table lacks are adopted. A heartbeat carries only kernel states and is applied
the same way, except that a kernel it names and the table lacks is returned as one
to adopt (the core fetches it from its daemon, then calls `adopt`). A delta
heartbeat names only the kernels that changed since the daemon's last acknowledged
one, and the ones it forgot: there a kernel left out is unchanged, not gone. Both use the
daemon's own clock (`taken_at` against a kernel's `created_at`), so a snapshot
taken before a create never terminates the new kernel, and a state only moves
forward (`moves_forward`). Kernels the manager is creating or destroying right now
are left alone: the daemon's word on them may predate the call in flight.

Pure: no awaits and no I/O; the caller saves what changed. Knows the kernel table
and protocol messages; nothing of agents' liveness, daemons, gRPC or storage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from common.ids import AgentId, KernelId
from manager.kernels import TERMINATED, UNKNOWN, KernelRecord, KernelTable, scrub_secrets
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

log = logging.getLogger(__name__)

GONE = "gone from its daemon"

# A kernel's life only moves forward: PENDING -> RUNNING -> TERMINATED. A snapshot
# saying otherwise was taken before what the manager already knows (e.g. before the
# create call returned) and is ignored. UNKNOWN (agent LOST) gives way to anything.
_PROGRESS: dict[int, int] = {
    pb.KERNEL_STATE_PENDING: 0,
    pb.KERNEL_STATE_RUNNING: 1,
    pb.KERNEL_STATE_TERMINATED: 2,
}


def moves_forward(current: int, reported: int) -> bool:
    """Whether a reported state may replace the current one."""
    if current == UNKNOWN:
        return True
    return _PROGRESS.get(reported, -1) >= _PROGRESS.get(current, -1)


@dataclass(frozen=True)
class Applied:
    """What one agent's heartbeat changed, and the kernels it named that the table lacks."""

    changed: list[KernelRecord]
    to_adopt: list[KernelId]


class Reconciler:
    """Applies daemons' reports to the table, leaving kernels in flight alone."""

    def __init__(self, table: KernelTable) -> None:
        self.table = table
        self.creating: set[KernelId] = set()
        self.destroying: set[KernelId] = set()
        self.adopting: set[KernelId] = set()  # being fetched after a heartbeat named them

    def busy(self, kernel_id: KernelId) -> bool:
        """Being created or destroyed: what a daemon reports of it may predate the call."""
        return kernel_id in self.creating or kernel_id in self.destroying

    def registration(
        self,
        agent_ids: Iterable[AgentId],
        reported: Iterable[pb.Kernel],
        taken_at: float,
        address: str,
    ) -> list[KernelRecord]:
        """Make the table's kernels of agent_ids match a daemon's full list; return changes."""
        theirs: dict[AgentId, dict[KernelId, pb.Kernel]] = {}
        for kernel in reported:
            theirs.setdefault(AgentId(kernel.agent_id), {})[KernelId(kernel.kernel_id)] = kernel
        changed = []
        for agent_id in agent_ids:
            on_daemon = theirs.get(agent_id, {})
            for record in self.table.on_agent(agent_id):
                if self.busy(record.kernel_id):
                    continue
                record.daemon_address = address
                reported_kernel = on_daemon.get(record.kernel_id)
                if reported_kernel is not None:
                    if moves_forward(record.kernel.state, reported_kernel.state):
                        self.table.update(record, reported_kernel)
                elif record.kernel.state != TERMINATED and record.kernel.created_at < taken_at:
                    self.table.terminate(record, GONE)
                changed.append(record)
            for kernel_id, kernel in on_daemon.items():
                known = self.table.get(kernel_id)
                if known is not None or self.busy(kernel_id):
                    if known is not None and known.agent_id != agent_id:
                        log.warning(
                            "kernel %s reported on agent %s is known on agent %s; not adopted",
                            kernel_id,
                            agent_id,
                            known.agent_id,
                        )
                    continue
                changed.append(self.table.add(kernel, address))
                log.info("adopted kernel %s on agent %s", kernel_id, agent_id)
        return changed

    def heartbeat(
        self,
        agent_id: AgentId,
        statuses: Iterable[mpb.KernelStatus],
        taken_at: float,
        removed: Iterable[str] = (),
        delta: bool = False,
    ) -> Applied:
        """Apply one agent's heartbeat kernel states.

        A full heartbeat names every kernel of the agent (one it leaves out is gone);
        a delta one names only the kernels that changed, and `removed` those the
        daemon forgot.
        """
        reported = {KernelId(s.kernel_id): s for s in statuses}
        changed = []
        if delta:
            records = [self.table[k] for k in reported if k in self.table]
            for kernel_id in removed:
                record = self.table.get(KernelId(kernel_id))
                if record is not None and record.agent_id == agent_id:
                    records.append(record)
        else:
            records = self.table.on_agent(agent_id)
        for record in records:
            if self.busy(record.kernel_id) or record.agent_id != agent_id:
                continue
            kernel = record.kernel
            status = reported.get(record.kernel_id)
            if status is None:
                if kernel.state != TERMINATED and kernel.created_at < taken_at:
                    self.table.terminate(record, GONE)
                    changed.append(record)
                continue
            if not moves_forward(kernel.state, status.state) or status.state == kernel.state:
                continue
            kernel.state = status.state
            kernel.status_message = status.status_message
            if status.HasField("exit_code"):
                kernel.exit_code = status.exit_code
            kernel.finished_at = status.finished_at
            kernel.end_reason = status.end_reason
            self.table.update(record, kernel)
            changed.append(record)
        to_adopt = [
            kernel_id
            for kernel_id in reported
            if kernel_id not in self.table
            and kernel_id not in self.adopting
            and not self.busy(kernel_id)
        ]
        return Applied(changed, to_adopt)

    def fetched(self, record: KernelRecord, kernel: pb.Kernel | None) -> bool:
        """Apply a GetKernel answer (None: the daemon has no such kernel); True if it changed."""
        if kernel is None:
            if record.kernel.state == TERMINATED or record.kernel_id in self.creating:
                return False
            self.table.terminate(record, GONE)
            return True
        if scrub_secrets(kernel) == record.kernel or record.kernel_id not in self.table:
            return False
        self.table.update(record, kernel)
        return True

    def adopt(self, kernel: pb.Kernel, address: str) -> KernelRecord | None:
        """Add a kernel fetched after a heartbeat named it, unless known or in flight by now."""
        kernel_id = KernelId(kernel.kernel_id)
        if kernel_id in self.table or self.busy(kernel_id):
            return None
        return self.table.add(kernel, address)
