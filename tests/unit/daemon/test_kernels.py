"""daemon/kernels.py: per-agent registries and the aggregate view over them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from common.errors import AlreadyExists, NotFound
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.kernels import (
    AggregateKernelRegistry,
    Kernel,
    KernelRegistry,
    KernelSpec,
    KernelState,
)
from daemon.resources import Allocation


def kernel(kernel_id: str, agent_id: str = "a0", created_at: float = 0.0, **fields: Any) -> Kernel:
    return Kernel(
        kernel_id=KernelId(kernel_id),
        agent_id=AgentId(agent_id),
        backend="local",
        spec=KernelSpec(kernel_id=KernelId(kernel_id)),
        created_at=created_at,
        **fields,
    )


@pytest.fixture
def aggregate() -> AggregateKernelRegistry:
    return AggregateKernelRegistry()


@pytest.fixture
def a0(aggregate: AggregateKernelRegistry) -> KernelRegistry:
    return aggregate.new_registry(AgentId("a0"))


@pytest.fixture
def a1(aggregate: AggregateKernelRegistry) -> KernelRegistry:
    return aggregate.new_registry(AgentId("a1"))


class TestKernelIdsAreUniqueAcrossAgents:
    def test_id_held_by_another_agent_already_exists_naming_the_owner(
        self, a0: KernelRegistry, a1: KernelRegistry
    ) -> None:
        a0.add(kernel("k1"))
        with pytest.raises(AlreadyExists) as info:
            a1.add(kernel("k1", "a1"))
        assert str(info.value) == "kernel 'k1' already exists on agent 'a0'"
        assert "k1" not in a1

    def test_id_held_by_the_same_agent_already_exists(self, a0: KernelRegistry) -> None:
        first = kernel("k1")
        a0.add(first)
        with pytest.raises(AlreadyExists) as info:
            a0.add(kernel("k1"))
        assert str(info.value) == "kernel 'k1' already exists on agent 'a0'"
        assert a0.get(KernelId("k1")) is first

    def test_id_is_free_again_once_removed(self, a0: KernelRegistry, a1: KernelRegistry) -> None:
        a0.add(kernel("k1"))
        a0.remove(KernelId("k1"))
        a0.remove(KernelId("k1"))
        a1.add(kernel("k1", "a1"))
        assert "k1" in a1

    def test_an_agent_gets_one_registry(self, aggregate: AggregateKernelRegistry) -> None:
        aggregate.new_registry(AgentId("a0"))
        with pytest.raises(AlreadyExists) as info:
            aggregate.new_registry(AgentId("a0"))
        assert str(info.value) == "agent 'a0' already has a registry"


class TestKernelIsReachableOnlyThroughItsAgent:
    def test_get_through_the_owner(self, a0: KernelRegistry) -> None:
        k1 = kernel("k1")
        a0.add(k1)
        assert a0.get(KernelId("k1")) is k1

    def test_get_through_another_agent_is_not_found_naming_the_owner(
        self, a0: KernelRegistry, a1: KernelRegistry
    ) -> None:
        a0.add(kernel("k1"))
        with pytest.raises(NotFound) as info:
            a1.get(KernelId("k1"))
        assert str(info.value) == "kernel 'k1' not found on agent 'a1'; it belongs to agent 'a0'"

    def test_unknown_kernel_is_not_found(self, a0: KernelRegistry, a1: KernelRegistry) -> None:
        with pytest.raises(NotFound) as info:
            a0.get(KernelId("zz"))
        assert str(info.value) == "kernel 'zz' not found on agent 'a0'"


class TestAggregateIsAView:
    def test_a_kernel_added_to_a_registry_is_found_at_once(
        self, aggregate: AggregateKernelRegistry, a1: KernelRegistry
    ) -> None:
        k1 = kernel("k1", "a1")
        a1.add(k1)
        assert aggregate.find(KernelId("k1")) is k1
        assert aggregate.owner(KernelId("k1")) == "a1"

    def test_a_change_in_a_registry_shows_at_once(
        self, aggregate: AggregateKernelRegistry, a0: KernelRegistry
    ) -> None:
        a0.add(kernel("k1", state=KernelState.RUNNING))
        a0.replace(a0.get(KernelId("k1")).ended(0, "exited", EndReason.EXITED))
        found = aggregate.find(KernelId("k1"))
        assert found is not None and found.state is KernelState.TERMINATED
        a0.remove(KernelId("k1"))
        assert aggregate.find(KernelId("k1")) is None
        assert aggregate.owner(KernelId("k1")) is None
        assert aggregate.list() == []

    def test_lists_every_agents_kernels_by_agent_then_age(
        self, aggregate: AggregateKernelRegistry, a0: KernelRegistry, a1: KernelRegistry
    ) -> None:
        a1.add(kernel("late", "a1", created_at=3.0))
        a0.add(kernel("second", created_at=2.0))
        a1.add(kernel("early", "a1", created_at=1.0))
        a0.add(kernel("first", created_at=1.0))
        assert [k.kernel_id for k in aggregate.list()] == ["first", "second", "early", "late"]

    def test_list_holds_the_registries_own_objects(
        self, aggregate: AggregateKernelRegistry, a0: KernelRegistry
    ) -> None:
        k1 = kernel("k1")
        a0.add(k1)
        assert aggregate.list()[0] is k1

    def test_counts_live_kernels_per_agent(
        self, aggregate: AggregateKernelRegistry, a0: KernelRegistry, a1: KernelRegistry
    ) -> None:
        a0.add(kernel("k1", state=KernelState.RUNNING))
        a0.add(kernel("k2", state=KernelState.PENDING))
        a0.add(kernel("k3", state=KernelState.TERMINATED, exit_code=0))
        assert aggregate.counts() == {"a0": 2, "a1": 0}
        a0.replace(a0.get(KernelId("k1")).ended(None, "vanished", EndReason.LOST))
        assert aggregate.counts() == {"a0": 1, "a1": 0}


class TestKernelRegistry:
    def test_len_contains_and_iteration(self, a0: KernelRegistry) -> None:
        a0.add(kernel("k1"))
        a0.add(kernel("k2"))
        assert len(a0) == 2
        assert "k1" in a0 and "zz" not in a0
        assert sorted(k.kernel_id for k in a0) == ["k1", "k2"]

    def test_removing_while_iterating_is_safe(self, a0: KernelRegistry) -> None:
        for name in ("k1", "k2", "k3"):
            a0.add(kernel(name))
        for k in a0:
            a0.remove(k.kernel_id)
        assert len(a0) == 0

    def test_replace_swaps_a_record_in_keeping_its_place(self, a0: KernelRegistry) -> None:
        for name in ("k1", "k2", "k3"):
            a0.add(kernel(name))
        ended = a0.get(KernelId("k2")).ended(3, "exited", EndReason.EXITED)
        a0.replace(ended)
        assert [k.kernel_id for k in a0] == ["k1", "k2", "k3"]
        assert a0.get(KernelId("k2")) is ended

    def test_replace_of_a_record_it_does_not_hold_is_not_found(
        self, a0: KernelRegistry, a1: KernelRegistry
    ) -> None:
        a1.add(kernel("k1", "a1"))
        with pytest.raises(NotFound) as info:
            a0.replace(kernel("k1"))
        assert str(info.value) == "kernel 'k1' not found on agent 'a0'; it belongs to agent 'a1'"
        assert "k1" not in a0

    def test_only_unterminated_kernels_are_alive(self, a0: KernelRegistry) -> None:
        a0.add(kernel("k1", state=KernelState.PENDING))
        a0.add(kernel("k2", state=KernelState.TERMINATED))
        assert [k.alive for k in a0] == [True, False]
        assert a0.alive_count() == 1


class TestKernelRecord:
    def test_a_record_cannot_be_changed_in_place(self) -> None:
        record = kernel("k1", state=KernelState.RUNNING)
        with pytest.raises(ValidationError, match="Instance is frozen"):
            record.state = KernelState.TERMINATED  # type: ignore[misc]
        assert record.state is KernelState.RUNNING

    def test_ended_holds_nothing_and_says_how_it_ended(self) -> None:
        record = kernel(
            "k1",
            state=KernelState.RUNNING,
            allocation=Allocation(cores=(0,), memory=1 << 30),
            ports={"http": 30000},
        )
        ended = record.ended(137, "killed by SIGKILL", EndReason.EXITED)
        assert (ended.state, ended.exit_code, ended.status_message) == (
            KernelState.TERMINATED,
            137,
            "killed by SIGKILL",
        )
        assert (ended.allocation, ended.ports) == (Allocation(), {})
        assert ended.finished_at > 0 and not ended.alive
        assert record.state is KernelState.RUNNING and record.ports == {"http": 30000}
