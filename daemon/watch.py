"""Waiting for a kernel's end and watching kernels' lives: `WaitKernel`, `WatchKernels`.

Both read the kernel journal (`daemon/events.py`). A wait looks at the record and,
while the kernel lives, waits for the one journal event that ends it (a kernel
destroyed a moment before the wait is found among the recently forgotten, so a
wait racing a destroy still learns how it ended). A watch sends every kernel as it
is (the snapshot, `initial`), then `SYNCED`, then one event per change after the
snapshot's place in the journal; a watcher that falls further behind than the
journal keeps gets a fresh snapshot. Knows the runtime, the journal and protocol
messages; nothing of backends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from common.ids import KernelId
from common.kernel_events import SYNCED, event_for, waited
from daemon import convert
from daemon.agent import Agent
from daemon.events import KernelEvent
from daemon.kernels import Kernel, KernelState
from daemon.runtime import AgentRuntime
from protos import agent_pb2 as pb


async def wait_kernel(
    runtime: AgentRuntime, agent_id: str, kernel_id: str, timeout: float
) -> pb.WaitKernelResponse:
    """The kernel once it has terminated, or as it is when timeout (0: none) passes."""
    agent = runtime.get_agent(agent_id)
    journal = runtime.kernels.journal
    kernel = _current(agent, runtime, KernelId(kernel_id))
    if kernel.alive:
        ended = await journal.wait_end(kernel.kernel_id, timeout or None)
        kernel = ended if ended is not None else _current(agent, runtime, kernel.kernel_id)
    return waited(convert.kernel_to_proto(kernel))


async def watch_kernels(runtime: AgentRuntime, agent_id: str) -> AsyncIterator[pb.KernelEvent]:
    """Events of agent_id's kernels (every agent's for ""): snapshot, SYNCED, changes."""
    only = runtime.get_agent(agent_id).id if agent_id else None
    journal = runtime.kernels.journal
    while True:
        seq = journal.last_seq  # the snapshot's place: every later change follows it
        for kernel in runtime.list_kernels(agent_id):
            yield event_for(convert.kernel_to_proto(kernel), initial=True)
        yield SYNCED
        while (events := journal.since(seq)) is not None:
            for event in events:
                seq = event.seq
                if only is None or event.kernel.agent_id == only:
                    told = _told(event)
                    if told is not None:
                        yield told
            await journal.wait(seq)
        # Fell behind what the journal keeps: start over from a fresh snapshot.


def _current(agent: Agent, runtime: AgentRuntime, kernel_id: KernelId) -> Kernel:
    """The kernel's record on agent, live or forgotten lately; NotFound otherwise."""
    kernel = agent.state.find(kernel_id)
    if kernel is not None:
        return kernel
    gone = runtime.kernels.journal.removed(kernel_id)
    if gone is not None and gone.agent_id == agent.id:
        return gone
    return agent.get_kernel(kernel_id)  # raises NotFound naming where it is, if anywhere


def _told(event: KernelEvent) -> pb.KernelEvent | None:
    """The watcher's event for a journal event (None: nothing a watcher needs to hear)."""
    kernel = event.kernel
    if event.kind == "removed":
        return event_for(convert.kernel_to_proto(kernel), removed=True)
    if event.previous == kernel.state:
        return None  # the record changed, not the kernel's life
    if event.kind == "changed" and kernel.state is KernelState.PENDING:
        return None  # a restart stopping it: RUNNING follows once it is back
    return event_for(convert.kernel_to_proto(kernel))
