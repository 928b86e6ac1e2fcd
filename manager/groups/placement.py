"""Members placed by the scheduler and created in batches, one CreateKernels per agent.

`reserve` holds an agent for every request in one synchronous step (no await, so
concurrent groups never over-commit an agent), honouring a pinned agent, a
backend, and `spread` (members with the same spread key on distinct agents while
any other fits; else they share). `create` then calls each agent's daemon once
with its whole batch, all agents at once; a batch is created whole or not at all
(the daemon's rule), and a failed batch returns its reservations. `place` does
both and, for batches a daemon refused for room it did not have, tries other
agents (up to `CREATE_ATTEMPTS` in all). `pick_host_ports` chooses host ports of
an agent's range ahead of creation, for members whose peers must know them first.

Members are created for their group's owner, recorded in the kernel table and
written through like any kernel. Knows the manager's parts (registry, scheduler,
kernel table, client, store); nothing of groups' phases.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.errors import AgentHostError, FailedPrecondition, ResourceExhausted, Unavailable
from common.ids import AgentId, KernelId
from manager.core import CREATE_ATTEMPTS, Manager
from manager.kernels import KernelRecord, account
from manager.registry import AgentRecord
from manager.scheduler import Demand
from protos import agent_pb2 as pb

log = logging.getLogger(__name__)

Outcome = KernelRecord | AgentHostError


@dataclass
class Request:
    """One member to create."""

    spec: pb.KernelSpec  # with its kernel_id
    scaling_group: str
    agent_id: AgentId | None = None  # pinned
    backend: str = ""  # only agents of this backend; "" any
    spread: str = ""  # requests with the same key prefer distinct agents
    avoid: frozenset[AgentId] = frozenset()  # prefer other agents (e.g. its last one, LOST)
    tried: set[AgentId] = field(default_factory=set)  # agents that refused it for room

    @property
    def kernel_id(self) -> KernelId:
        """The kernel id it will have."""
        return KernelId(self.spec.kernel_id)


class Placer:
    """Places and creates members through the manager's parts."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def reserve(self, requests: Sequence[Request]) -> list[AgentRecord | AgentHostError]:
        """An agent held for each request (or why none could be), in one step."""
        m = self.manager
        chosen: dict[str, set[AgentId]] = {}
        out: list[AgentRecord | AgentHostError] = []
        for request in requests:
            demand = Demand.of_spec(request.spec)
            hard = set(request.tried)
            if request.backend:
                hard |= {
                    a.agent_id
                    for a in m.registry.list(request.scaling_group)
                    if a.info.backend != request.backend
                }
            soft = set(request.avoid) | chosen.get(request.spread, set())
            try:
                if request.agent_id is not None:
                    pinned = m.registry.get(request.agent_id)
                    if request.backend and pinned.info.backend != request.backend:
                        raise FailedPrecondition(
                            f"agent {pinned.agent_id!r} is a {pinned.info.backend} agent; the "
                            f"kernel runs on {request.backend} agents"
                        )
                    reservation = m.scheduler.reserve(
                        request.kernel_id, demand, request.scaling_group, pinned.agent_id
                    )
                else:
                    try:
                        reservation = m.scheduler.reserve(
                            request.kernel_id, demand, request.scaling_group, None, hard | soft
                        )
                    except AgentHostError:
                        if not soft - hard:
                            raise
                        reservation = m.scheduler.reserve(
                            request.kernel_id, demand, request.scaling_group, None, hard
                        )
            except AgentHostError as exc:
                out.append(exc)
                continue
            if request.spread:
                chosen.setdefault(request.spread, set()).add(reservation.agent_id)
            out.append(m.registry.get(reservation.agent_id))
        return out

    def release(self, requests: Sequence[Request]) -> None:
        """Return the reservations of requests that will not be created."""
        for request in requests:
            self.manager.scheduler.release(request.kernel_id)

    async def create(
        self,
        owner: str,
        requests: Sequence[Request],
        agents: Sequence[AgentRecord | AgentHostError],
    ) -> list[Outcome]:
        """Create the reserved requests, one CreateKernels per agent, all agents at once."""
        out: list[Outcome | None] = [
            agent if isinstance(agent, AgentHostError) else None for agent in agents
        ]
        batches: dict[AgentId, list[int]] = {}
        by_id: dict[AgentId, AgentRecord] = {}
        for i, agent in enumerate(agents):
            if isinstance(agent, AgentRecord):
                batches.setdefault(agent.agent_id, []).append(i)
                by_id[agent.agent_id] = agent
        results = await asyncio.gather(
            *(
                self._create_batch(owner, by_id[a], [requests[i] for i in idx])
                for a, idx in batches.items()
            )
        )
        created: list[KernelRecord] = []
        for (_, idx), result in zip(batches.items(), results, strict=True):
            for j, i in enumerate(idx):
                out[i] = result if isinstance(result, AgentHostError) else result[j]
            if not isinstance(result, AgentHostError):
                created += result
        if created:
            await self.manager.store.save_kernels(created)
        return [o if o is not None else Unavailable("not placed") for o in out]

    async def place(
        self, owner: str, requests: Sequence[Request], retry: bool = True
    ) -> list[Outcome]:
        """Reserve and create every request; with retry, refused batches try other agents."""
        outcomes: list[Outcome] = [Unavailable("not placed")] * len(requests)
        todo = list(range(len(requests)))
        for attempt in range(CREATE_ATTEMPTS if retry else 1):
            batch = [requests[i] for i in todo]
            results = await self.create(owner, batch, self.reserve(batch))
            again = []
            for i, result in zip(todo, results, strict=True):
                outcomes[i] = result
                request = requests[i]
                if (
                    isinstance(result, ResourceExhausted)
                    and request.agent_id is None
                    and attempt + 1 < CREATE_ATTEMPTS
                ):
                    held = self.manager.scheduler.held(request.kernel_id)
                    if held is None and request.kernel_id not in self.manager.kernels:
                        again.append(i)
            todo = again
            if not todo:
                break
        return outcomes

    async def _create_batch(
        self, owner: str, agent: AgentRecord, requests: list[Request]
    ) -> list[KernelRecord] | AgentHostError:
        m = self.manager
        ids = [r.kernel_id for r in requests]
        m.reconciler.creating.update(ids)
        handle = m.handle(agent)
        try:
            kernels = await handle.create_kernels([r.spec for r in requests])
        except AgentHostError as exc:
            self.release(requests)
            if isinstance(exc, ResourceExhausted):
                for r in requests:
                    r.tried.add(agent.agent_id)
            log.info("agent %s did not create %s: %s", agent.agent_id, ", ".join(ids), exc)
            return exc
        except BaseException:
            self.release(requests)
            raise
        finally:
            m.reconciler.creating.difference_update(ids)
        records = []
        for kernel in kernels:
            records.append(m.kernels.add(kernel, handle.address, owner=owner))
            account(agent.info, kernel, +1)
        log.info("kernels %s created on agent %s", ", ".join(ids), agent.agent_id)
        return records


def pick_host_ports(
    agent: AgentRecord, count: int, taken: set[int], rng: random.Random | None = None
) -> list[int]:
    """count host ports of agent's range that no known kernel holds and taken lacks.

    Chosen at random so that two managers' guesses or a port just released are
    unlikely; the daemon still refuses one bound on its host (RESOURCE_EXHAUSTED).
    """
    first, last = agent.info.port_range.start, agent.info.port_range.end
    free = [p for p in range(first, last + 1) if p not in taken]
    if len(free) < count:
        raise ResourceExhausted(
            f"agent {agent.agent_id!r} has {len(free)} free ports of {first}-{last}; {count} needed"
        )
    return (rng or random).sample(free, count)


def ports_held(manager: Manager, agent_id: AgentId) -> set[int]:
    """Host ports the kernels the manager knows on agent_id hold."""
    return {
        port
        for record in manager.kernels.on_agent(agent_id)
        if record.holds_resources
        for port in record.kernel.ports.values()
    }
