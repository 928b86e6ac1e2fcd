"""daemon/runtime.py: `get_agent`, the one routing rule, and the node-wide views.

The runtime is built around stand-in agents (routing never reaches a backend);
the config comes from a real TOML file, as the daemon reads it.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.errors import AgentHostError, InvalidArgument, NotFound, Unavailable
from common.ids import ID_SYNTAX, AgentId, KernelId
from daemon.agent import Agent
from daemon.config import AgentConfig, load_config
from daemon.kernels import AggregateKernelRegistry, Kernel, KernelRegistry, KernelSpec
from daemon.resources import HostCapacity
from daemon.runtime import AgentRuntime

HOST = HostCapacity(cores=(0, 1), memory=8 << 30)


@dataclass
class StandIn:
    """What the runtime asks of an agent, and nothing more."""

    id: AgentId
    registry: KernelRegistry
    scaling_group: str = "default"
    reconcile_error: AgentHostError | None = None
    reconciled: int = field(default=0)

    def status(self) -> tuple[str, str]:
        return (self.id, self.scaling_group)

    def list_kernels(self) -> list[Kernel]:
        return self.registry.ordered()

    async def reconcile(self) -> None:
        self.reconciled += 1
        if self.reconcile_error is not None:
            raise self.reconcile_error


def write_config(tmp_path: Path, ids: tuple[str, ...], default_agent: str | None) -> Path:
    path = tmp_path / "daemon.toml"
    daemon = f'default_agent = "{default_agent}"\n' if default_agent else ""
    agents = "".join(
        f'[[agents]]\nid = "{a}"\nport_range = [{30000 + 100 * i}, {30099 + 100 * i}]\n\n'
        for i, a in enumerate(ids)
    )
    path.write_text(
        textwrap.dedent(
            f"""\
            # the runtime's test daemon
            [daemon]
            allocation_mode = "shared"
            insecure = true
            state_dir = "{tmp_path / "state"}"
            {daemon}
            """
        )
        + agents
    )
    return path


def runtime(
    tmp_path: Path, ids: tuple[str, ...] = ("a0", "a1", "a2"), default_agent: str | None = None
) -> AgentRuntime:
    config = load_config(write_config(tmp_path, ids, default_agent), HOST)
    kernels = AggregateKernelRegistry()
    agents = {AgentId(a): StandIn(AgentId(a), kernels.new_registry(AgentId(a))) for a in ids}
    return AgentRuntime(config, agents, kernels, "test")  # type: ignore[arg-type]


def kernel(kernel_id: str, agent_id: str, created_at: float) -> Kernel:
    return Kernel(
        kernel_id=KernelId(kernel_id),
        agent_id=AgentId(agent_id),
        backend="local",
        spec=KernelSpec(kernel_id=KernelId(kernel_id)),
        created_at=created_at,
    )


@dataclass(frozen=True)
class Route:
    """get_agent(agent_id) on a daemon with `agents` gives `routed_to`, or raises `error`."""

    name: str
    agents: tuple[str, ...]
    agent_id: str
    default_agent: str | None = None
    routed_to: str | None = None
    error: type[AgentHostError] | None = None
    message: str = ""


ROUTES = [
    Route("named_agent", ("a0", "a1", "a2"), "a1", routed_to="a1"),
    Route("empty_id_with_one_agent", ("solo",), "", routed_to="solo"),
    Route("empty_id_with_a_default_agent", ("a0", "a1", "a2"), "", "a2", routed_to="a2"),
    Route("named_agent_besides_a_default", ("a0", "a1"), "a0", "a1", routed_to="a0"),
    Route(
        "empty_id_with_several_and_no_default",
        ("a0", "a1", "a2"),
        "",
        error=InvalidArgument,
        message="agent_id is required: this daemon has several agents (a0, a1, a2) "
        "and no default_agent",
    ),
    Route(
        "unknown_id_lists_the_available",
        ("a0", "a1", "a2"),
        "gpu9",
        error=NotFound,
        message="agent 'gpu9' not found on this daemon; available: a0, a1, a2",
    ),
    Route(
        "unknown_id_on_a_one_agent_daemon",
        ("solo",),
        "a0",
        error=NotFound,
        message="agent 'a0' not found on this daemon; available: solo",
    ),
    Route(
        "id_with_a_space_is_invalid",
        ("a0", "a1"),
        "a 0",
        error=InvalidArgument,
        message=f"agent_id 'a 0' is not valid: {ID_SYNTAX}",
    ),
    Route(
        "id_with_a_trailing_newline_is_invalid",
        ("a0",),
        "a0\n",
        error=InvalidArgument,
        message=f"agent_id 'a0\\n' is not valid: {ID_SYNTAX}",
    ),
    Route(
        "id_too_long_is_invalid",
        ("a0",),
        "a" * 64,
        error=InvalidArgument,
        message=f"agent_id '{'a' * 64}' is not valid: {ID_SYNTAX}",
    ),
]


class TestGetAgent:
    @pytest.mark.parametrize("case", ROUTES, ids=[c.name for c in ROUTES])
    def test_routes_or_refuses(self, tmp_path: Path, case: Route) -> None:
        rt = runtime(tmp_path, case.agents, case.default_agent)
        if case.error is None:
            assert rt.get_agent(case.agent_id) is rt.agents[AgentId(case.routed_to or "")]
            return
        with pytest.raises(case.error) as info:
            rt.get_agent(case.agent_id)
        assert type(info.value) is case.error
        assert str(info.value) == case.message

    def test_cases_are_distinct(self) -> None:
        assert len({(c.agents, c.agent_id, c.default_agent) for c in ROUTES}) == len(ROUTES)


class TestNodeWideViews:
    @pytest.fixture
    def rt(self, tmp_path: Path) -> AgentRuntime:
        rt = runtime(tmp_path)
        registries = {a: agent.registry for a, agent in rt.agents.items()}  # type: ignore[attr-defined]
        registries[AgentId("a1")].add(kernel("late", "a1", 3.0))
        registries[AgentId("a0")].add(kernel("second", "a0", 2.0))
        registries[AgentId("a1")].add(kernel("early", "a1", 1.0))
        registries[AgentId("a0")].add(kernel("first", "a0", 1.0))
        return rt

    def test_empty_id_lists_every_agents_kernels_by_agent_then_age(self, rt: AgentRuntime) -> None:
        assert [k.kernel_id for k in rt.list_kernels("")] == ["first", "second", "early", "late"]

    def test_an_agent_id_lists_that_agents_kernels_only(self, rt: AgentRuntime) -> None:
        assert [k.kernel_id for k in rt.list_kernels("a1")] == ["early", "late"]
        assert rt.list_kernels("a2") == []

    def test_listing_an_unknown_agent_is_not_found(self, rt: AgentRuntime) -> None:
        with pytest.raises(NotFound) as info:
            rt.list_kernels("a9")
        assert str(info.value) == "agent 'a9' not found on this daemon; available: a0, a1, a2"

    def test_agents_are_listed_in_configuration_order(self, rt: AgentRuntime) -> None:
        assert rt.list_agents() == [("a0", "default"), ("a1", "default"), ("a2", "default")]


class TestScalingGroup:
    async def test_is_written_to_that_agents_entry_then_applied(self, tmp_path: Path) -> None:
        rt = runtime(tmp_path)
        assert await rt.update_scaling_group("a1", "batch") == ("a1", "batch")
        assert rt.get_agent("a1").scaling_group == "batch"
        reread = load_config(rt.config.path, HOST)
        assert [a.scaling_group for a in reread.agents] == ["default", "batch", "default"]
        assert rt.config.path.read_text().startswith("# the runtime's test daemon\n")

    async def test_an_invalid_group_changes_nothing(self, tmp_path: Path) -> None:
        rt = runtime(tmp_path)
        before = rt.config.path.read_text()
        with pytest.raises(InvalidArgument) as info:
            await rt.update_scaling_group("a1", "no way")
        assert str(info.value) == f"scaling_group 'no way' is not valid: {ID_SYNTAX}"
        assert rt.get_agent("a1").scaling_group == "default"
        assert rt.config.path.read_text() == before

    async def test_an_unknown_agent_is_routed_first(self, tmp_path: Path) -> None:
        rt = runtime(tmp_path)
        with pytest.raises(NotFound):
            await rt.update_scaling_group("a9", "no way")


class TestReconcile:
    async def test_one_agent_failing_does_not_keep_the_others_from_their_pass(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        rt = runtime(tmp_path)
        failing = rt.agents[AgentId("a1")]
        failing.reconcile_error = Unavailable("docker engine does not answer")  # type: ignore[attr-defined]
        await rt.reconcile()
        assert [a.reconciled for a in rt.agents.values()] == [1, 1, 1]  # type: ignore[attr-defined]
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (logging.WARNING, "agent a1: reconcile failed: docker engine does not answer")
        ]

    async def test_agents_reconcile_together(self, tmp_path: Path) -> None:
        rt = runtime(tmp_path)
        inside = 0
        most = 0

        async def reconcile() -> None:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            inside -= 1

        for agent in rt.agents.values():
            agent.reconcile = reconcile  # type: ignore[method-assign]
        await rt.reconcile()
        assert most == 3  # so what their backends scan per pass, they scan once


@dataclass
class Built:
    """A stand-in for Agent.create: records that it ran, and can refuse."""

    ids: tuple[str, ...]
    refuse: str | None = None
    started: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    everyone: asyncio.Event = field(default_factory=asyncio.Event)

    async def create(
        self,
        config: AgentConfig,
        registry: KernelRegistry,
        state_dir: Path,
        identity: str,
        *shared: object,
    ) -> object:
        self.started.append(config.id)
        # Every agent gets here before any finishes: they are built at once.
        if len(self.started) == len(self.ids):
            self.everyone.set()
        await self.everyone.wait()
        if config.id == self.refuse:
            raise Unavailable(f"agent {config.id!r}: docker engine does not answer")
        built = self

        class Closing(StandIn):
            async def close(self, destroy_kernels: bool) -> None:
                built.closed.append(self.id)

        return Closing(config.id, registry)


class TestCreate:
    async def test_agents_are_built_at_once_with_their_directories(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = load_config(write_config(tmp_path, ("a0", "a1", "a2"), None), HOST)
        built = Built(("a0", "a1", "a2"))
        monkeypatch.setattr(Agent, "create", built.create)
        rt = await asyncio.wait_for(AgentRuntime.create(config), timeout=30)
        try:
            assert list(rt.agents) == ["a0", "a1", "a2"]
            assert sorted(built.started) == ["a0", "a1", "a2"]
            modes = {
                p: p.stat().st_mode & 0o777
                for p in (
                    config.state_dir,
                    config.kernels_dir,
                    *(a.kernels_dir for a in config.agents),
                )
            }
            assert modes[config.state_dir] == 0o700
            assert set(modes.values()) == {0o700, 0o711}
        finally:
            await rt.close()

    async def test_one_agent_that_cannot_be_built_closes_the_others_and_says_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        config = load_config(write_config(tmp_path, ("a0", "a1", "a2"), None), HOST)
        built = Built(("a0", "a1", "a2"), refuse="a1")
        monkeypatch.setattr(Agent, "create", built.create)
        with pytest.raises(Unavailable, match="agent 'a1': docker engine does not answer"):
            await asyncio.wait_for(AgentRuntime.create(config), timeout=30)
        assert sorted(built.closed) == ["a0", "a2"]
