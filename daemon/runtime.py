"""`AgentRuntime`: every agent of the process, built whole before the server serves.

`get_agent` is the one routing function: every per-agent request goes through it.
The runtime also owns the aggregate kernel registry, the lifecycle hooks (attached
to its journal before any agent recovers), the reconcile loop and the
scaling-group write-back. Knows nothing of gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection, Mapping

from common.errors import AgentHostError, InvalidArgument, NotFound
from common.ids import ID_SYNTAX, AgentId, is_valid_id
from common.paging import R, rendered_page
from daemon.agent import Agent, AgentStatus
from daemon.config import DaemonConfig, set_scaling_group
from daemon.hooks import KernelHooks
from daemon.kernels import AggregateKernelRegistry, Kernel, KernelState
from daemon.resources import NodeCores
from daemon.state_dir import daemon_identity, prepare

log = logging.getLogger(__name__)


class AgentRuntime:
    """All agents of one daemon, keyed by agent_id."""

    def __init__(
        self,
        config: DaemonConfig,
        agents: Mapping[AgentId, Agent],
        kernels: AggregateKernelRegistry,
        identity: str,
        hooks: KernelHooks | None = None,
    ) -> None:
        self.config = config
        self.agents = dict(agents)
        self.kernels = kernels
        self.identity = identity
        self.hooks = hooks or KernelHooks()
        self._default: AgentId | None = (
            AgentId(config.daemon.default_agent)
            if config.daemon.default_agent
            else next(iter(self.agents))
            if len(self.agents) == 1
            else None
        )
        self._reconciler: asyncio.Task[None] | None = None

    @classmethod
    async def create(cls, config: DaemonConfig) -> AgentRuntime:
        """Build every agent at once (backends connected, checkpoints recovered), then reconcile.

        Agents are built concurrently: each one's checkpoint, backend and
        recovery are its own, and what backends share per daemon (the local
        backend's cgroup detection and /proc scan) is done once for all. If any
        agent cannot be built, the ones that were are closed (their kernels keep
        running) and the first error propagates: nothing half-started.
        """
        state_dir = config.state_dir
        await asyncio.to_thread(make_directories, config)
        identity = daemon_identity(state_dir)
        kernels = AggregateKernelRegistry()
        # Before any agent recovers: a kernel found gone at recovery is an end to hear of.
        hooks = KernelHooks(config.hooks, kernels.journal)
        node_cores = NodeCores()  # exclusive cores, across agents whose slices overlap
        registries = {a.id: kernels.new_registry(a.id) for a in config.agents}
        built = await asyncio.gather(
            *(
                Agent.create(
                    a,
                    registries[a.id],
                    state_dir,
                    identity,
                    node_cores,
                    config.daemon.kernel_retention,
                    hooks,
                )
                for a in config.agents
            ),
            return_exceptions=True,
        )
        failures = [b for b in built if isinstance(b, BaseException)]
        agents = {
            a.id: b
            for a, b in zip(config.agents, built, strict=True)
            if not isinstance(b, BaseException)
        }
        if failures:
            for agent in agents.values():
                with contextlib.suppress(Exception):
                    await agent.close(destroy_kernels=False)
            await hooks.close(config.daemon.shutdown_grace)
            raise failures[0]
        runtime = cls(config, agents, kernels, identity, hooks)
        runtime._reconciler = asyncio.create_task(runtime._reconcile_forever(), name="reconcile")
        return runtime

    def get_agent(self, agent_id: str) -> Agent:
        """The one routing function: resolve agent_id (empty means the default agent)."""
        if not agent_id:
            if self._default is None:
                raise InvalidArgument(
                    "agent_id is required: this daemon has several agents "
                    f"({', '.join(self.agents)}) and no default_agent"
                )
            return self.agents[self._default]
        agent = self.agents.get(AgentId(agent_id))
        if agent is None:
            if not is_valid_id(agent_id):
                raise InvalidArgument(f"agent_id {agent_id!r} is not valid: {ID_SYNTAX}")
            raise NotFound(
                f"agent {agent_id!r} not found on this daemon; available: {', '.join(self.agents)}"
            )
        return agent

    def list_agents(self) -> list[AgentStatus]:
        """Every agent's status, in configuration order."""
        return [agent.status() for agent in self.agents.values()]

    def list_kernels(self, agent_id: str) -> list[Kernel]:
        """One agent's kernels, or with an empty id every agent's (aggregate registry)."""
        if not agent_id:
            return self.kernels.list()
        return self.get_agent(agent_id).list_kernels()

    def list_kernels_page(
        self,
        agent_id: str,
        states: Collection[KernelState] | None,
        labels: Mapping[str, str],
        page_size: int,
        page_token: str,
        render: Callable[[Kernel], R],
    ) -> tuple[list[R], str]:
        """A page of list_kernels, in the states (None: any) and with the labels asked
        for, ordered by agent then age, each rendered (the page bounded in bytes too);
        and the next page's token."""
        position = {agent_id: i for i, agent_id in enumerate(self.agents)}
        chosen = (
            k
            for k in self.list_kernels(agent_id)
            if (states is None or k.state in states)
            and all(k.spec.labels.get(key) == value for key, value in labels.items())
        )
        return rendered_page(
            chosen,
            lambda k: (position.get(k.agent_id, -1), k.created_at, k.kernel_id),
            page_size,
            page_token,
            render,
        )

    async def update_scaling_group(self, agent_id: str, scaling_group: str) -> AgentStatus:
        """Persist the new scaling group into the config file, then apply it live."""
        agent = self.get_agent(agent_id)
        if not is_valid_id(scaling_group):
            raise InvalidArgument(f"scaling_group {scaling_group!r} is not valid: {ID_SYNTAX}")
        await asyncio.to_thread(
            set_scaling_group, self.config.path, agent.id, scaling_group, self.config.daemon.node
        )
        agent.scaling_group = scaling_group
        log.info("agent %s: scaling group is now %s", agent.id, scaling_group)
        return agent.status()

    async def reconcile(self) -> None:
        """One reconcile pass over every agent, all at once (they share the backends' scans)."""
        await asyncio.gather(*(self._reconcile(agent) for agent in self.agents.values()))

    async def _reconcile(self, agent: Agent) -> None:
        try:
            await agent.reconcile()
        except AgentHostError as exc:
            log.warning("agent %s: reconcile failed: %s", agent.id, exc)

    async def close(self, destroy_kernels: bool = False) -> None:
        """Stop reconciling; close every agent (destroying kernels only when asked); let
        the post hooks those ends started finish (shutdown_grace), cancel the rest."""
        if self._reconciler is not None:
            self._reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconciler
        await asyncio.gather(
            *(agent.close(destroy_kernels) for agent in self.agents.values()),
            return_exceptions=True,
        )
        await self.hooks.close(self.config.daemon.shutdown_grace)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:
                log.exception("reconcile pass failed")


def make_directories(config: DaemonConfig) -> None:
    """The state directory (0700: checkpoints are the daemon's user's alone) and the
    kernels directory with one per agent (0711: a kernel reaches its own directory by
    path, and can list none of them)."""
    prepare(config.state_dir)
    for directory in (config.kernels_dir, *(a.kernels_dir for a in config.agents)):
        directory.mkdir(parents=True, exist_ok=True, mode=0o711)
        directory.chmod(0o711)
    if os.geteuid() != 0:
        return  # kernels run as the daemon's user, who reaches them anyway
    for parent in config.kernels_dir.parents:
        if parent.stat().st_mode & 0o001 == 0:
            log.warning(
                "kernels_dir %s: %s is not searchable by other users (mode %o), so kernels "
                "running as uids of their own reach their directories only as their working "
                "directory, not by path ($HOME); set [daemon] kernels_dir elsewhere",
                config.kernels_dir,
                parent,
                parent.stat().st_mode & 0o777,
            )
            break
