"""The scheduler: policy choices, filters, exact errors, and no over-commit ever."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.ids import AgentId, KernelId
from manager.errors import AgentLost, AllAgentsBusy, BadRequest, NoAgentFits
from manager.scheduler import Demand, Scheduler
from protos import agent_pb2 as pb

GIB = 1 << 30


def agent(cores: int = 2, memory: int = 4 * GIB, ports: int = 10, **devices: int) -> Demand:
    return Demand(cores=cores, memory=memory, ports=ports, devices=devices)


def scheduler_with(policy: str = "spread", **agents: tuple[str, Demand]) -> Scheduler:
    s = Scheduler(policy)  # type: ignore[arg-type]
    for agent_id, (group, capacity) in agents.items():
        s.upsert_agent(AgentId(agent_id), group, capacity, schedulable=True)
    return s


class TestDemand:
    def test_of_spec_counts_cores_memory_ports_devices(self) -> None:
        spec = pb.KernelSpec(
            resources=pb.ResourceRequest(cpu_count=2, memory_bytes=GIB, devices={"cuda": 1}),
            ports=[pb.ServicePort(name="http"), pb.ServicePort(name="ssh")],
        )
        assert Demand.of_spec(spec) == Demand(cores=2, memory=GIB, ports=2, devices={"cuda": 1})

    def test_explicit_cores_count_as_cores(self) -> None:
        spec = pb.KernelSpec(resources=pb.ResourceRequest(cores=[3, 5]))
        assert Demand.of_spec(spec).cores == 2

    def test_of_resources_counts_ids(self) -> None:
        res = pb.Resources(
            cores=[0, 1, 2], memory_bytes=GIB, ports=4, devices={"cuda": pb.DeviceIds(ids=["0"])}
        )
        assert Demand.of_resources(res) == Demand(3, GIB, 4, {"cuda": 1})

    def test_describe(self) -> None:
        assert Demand(1, GIB, 2, {"cuda": 2}).describe() == (
            "1 core, 1GiB memory, 2 cuda devices, 2 ports"
        )
        assert Demand().describe() == "nothing exclusive"


@dataclass
class PickCase:
    name: str
    policy: str
    held: dict[str, Demand]  # agent -> demand already held there
    demand: Demand
    expected: str
    group: str = "default"
    agents: dict[str, tuple[str, Demand]] = field(
        default_factory=lambda: {
            "a0": ("default", agent()),
            "a1": ("default", agent()),
            "a2": ("batch", agent()),
        }
    )


PICK_CASES = [
    PickCase("spread: empty agents, first registered wins", "spread", {}, Demand(), "a0"),
    PickCase("spread: fewest kernels wins a tie", "spread", {"a0": Demand()}, Demand(), "a1"),
    PickCase(
        "spread: least loaded wins",
        "spread",
        {"a0": Demand(memory=GIB), "a1": Demand(memory=2 * GIB)},
        Demand(),
        "a0",
    ),
    PickCase(
        "spread: load is the largest fraction over dimensions",
        "spread",
        {"a0": Demand(cores=1), "a1": Demand(memory=GIB)},  # a0 50% cores, a1 25% memory
        Demand(),
        "a1",
    ),
    PickCase("pack: fuller agent wins", "pack", {"a1": Demand(cores=1)}, Demand(cores=1), "a1"),
    PickCase(
        "pack: skips the agent that no longer fits",
        "pack",
        {"a1": Demand(cores=2)},
        Demand(cores=1),
        "a0",
    ),
    PickCase("scaling group filters", "spread", {}, Demand(), "a2", group="batch"),
    PickCase(
        "devices must be free",
        "spread",
        {"g0": Demand(devices={"cuda": 1})},
        Demand(devices={"cuda": 1}),
        "g1",
        agents={
            "g0": ("default", agent(cuda=1)),
            "g1": ("default", agent(cuda=1)),
            "c0": ("default", agent()),
        },
    ),
    PickCase(
        "ports must be free",
        "spread",
        {"a0": Demand(ports=10)},
        Demand(ports=1),
        "a1",
    ),
]


class TestPick:
    @pytest.mark.parametrize("case", PICK_CASES, ids=[c.name for c in PICK_CASES])
    def test_pick(self, case: PickCase) -> None:
        s = scheduler_with(case.policy, **case.agents)
        for i, (agent_id, demand) in enumerate(case.held.items()):
            s.hold(KernelId(f"held{i}"), AgentId(agent_id), demand)
        reservation = s.reserve(KernelId("new"), case.demand, case.group)
        assert reservation.agent_id == case.expected

    def test_spread_round_robins_kernels_that_ask_nothing(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()))
        picks = [s.reserve(KernelId(f"k{i}"), Demand(), "default").agent_id for i in range(6)]
        assert picks == ["a0", "a1"] * 3

    def test_pack_fills_one_agent_then_the_next(self) -> None:
        s = scheduler_with("pack", a0=("default", agent()), a1=("default", agent()))
        picks = [
            s.reserve(KernelId(f"k{i}"), Demand(cores=1), "default").agent_id for i in range(4)
        ]
        assert picks == ["a0", "a0", "a1", "a1"]

    def test_lost_agent_is_skipped(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()))
        s.set_schedulable(AgentId("a0"), False)
        assert s.reserve(KernelId("k"), Demand(), "default").agent_id == "a1"

    def test_excluded_agents_are_skipped(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()))
        assert s.reserve(KernelId("k"), Demand(), "default", exclude=["a0"]).agent_id == "a1"

    def test_scaling_group_change_moves_the_agent(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()))
        s.set_scaling_group(AgentId("a1"), "batch")
        assert s.reserve(KernelId("k"), Demand(), "batch").agent_id == "a1"


@dataclass
class ErrorCase:
    name: str
    demand: Demand
    group: str
    error: type[Exception]
    message: str
    pinned: str | None = None


ERROR_CASES = [
    ErrorCase(
        "unknown scaling group",
        Demand(),
        "gpu",
        NoAgentFits,
        "no agent is in scaling group 'gpu'; groups: default (2 agents), batch (1 agent)",
    ),
    ErrorCase(
        "too big for any agent of the group",
        Demand(cores=3, memory=GIB),
        "default",
        NoAgentFits,
        "no agent of scaling group 'default' (2 agents) could ever fit 3 cores, 1GiB memory; "
        "the largest offer 2 cores, 4GiB memory",
    ),
    ErrorCase(
        "a device kind nobody has",
        Demand(devices={"cuda": 1}),
        "default",
        NoAgentFits,
        "no agent of scaling group 'default' (2 agents) could ever fit 1 cuda device; "
        "the largest offer 0 cuda devices",
    ),
    ErrorCase(
        "fits, but every fitting agent is full",
        Demand(cores=2),
        "default",
        AllAgentsBusy,
        "all 2 agents of scaling group 'default' that could fit 2 cores are busy right now: a0, a1",
    ),
    ErrorCase(
        "pinned agent too small",
        Demand(memory=8 * GIB),
        "",
        NoAgentFits,
        "agent 'a2' could never fit 8GiB memory: needs 8GiB memory (it has 4GiB memory)",
        pinned="a2",
    ),
    ErrorCase(
        "pinned agent busy",
        Demand(cores=2),
        "",
        AllAgentsBusy,
        "agent 'a0' is busy: 2 cores requested, short of 2 cores (1 core free)",
        pinned="a0",
    ),
    ErrorCase(
        "pinned agent unknown",
        Demand(),
        "",
        NoAgentFits,
        "agent 'zz' is not registered with the manager",
        pinned="zz",
    ),
]


class TestErrors:
    @pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
    def test_error_says_why(self, case: ErrorCase) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()), a2=("batch", agent()))
        s.hold(KernelId("h0"), AgentId("a0"), Demand(cores=1))
        s.hold(KernelId("h1"), AgentId("a1"), Demand(cores=1))
        pinned = AgentId(case.pinned) if case.pinned else None
        with pytest.raises(case.error) as err:
            s.reserve(KernelId("new"), case.demand, case.group, pinned)
        assert str(err.value) == case.message
        assert s.held(KernelId("new")) is None

    def test_fitting_agents_all_lost_is_unavailable(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent(cores=1)))
        s.set_schedulable(AgentId("a0"), False)
        with pytest.raises(AgentLost) as err:
            s.reserve(KernelId("k"), Demand(cores=2), "default")
        assert str(err.value) == (
            "the agents of scaling group 'default' that could fit 2 cores are LOST or unhealthy: a0"
        )

    def test_pinned_lost_agent_is_unavailable(self) -> None:
        s = scheduler_with(a0=("default", agent()))
        s.set_schedulable(AgentId("a0"), False)
        with pytest.raises(AgentLost):
            s.reserve(KernelId("k"), Demand(), "", AgentId("a0"))

    def test_a_kernel_reserves_once(self) -> None:
        s = scheduler_with(a0=("default", agent()))
        s.reserve(KernelId("k"), Demand(), "default")
        with pytest.raises(BadRequest):
            s.reserve(KernelId("k"), Demand(), "default")

    def test_unknown_policy_is_refused(self) -> None:
        with pytest.raises(BadRequest):
            Scheduler("random")  # type: ignore[arg-type]


class TestHolds:
    def test_release_returns_everything(self) -> None:
        s = scheduler_with(a0=("default", agent(cuda=2)))
        demand = Demand(cores=1, memory=GIB, ports=2, devices={"cuda": 1})
        s.reserve(KernelId("k"), demand, "default")
        assert s.usage(AgentId("a0")) == demand
        s.release(KernelId("k"))
        s.release(KernelId("k"))
        assert s.usage(AgentId("a0")) == Demand()

    def test_hold_replaces_a_reservation_with_what_was_allocated(self) -> None:
        s = scheduler_with(a0=("default", agent()))
        s.reserve(KernelId("k"), Demand(cores=2), "default")
        s.hold(KernelId("k"), AgentId("a0"), Demand(cores=1))
        assert s.usage(AgentId("a0")) == Demand(cores=1)

    def test_removed_agent_takes_its_holds_and_slot_is_reused(self) -> None:
        s = scheduler_with(a0=("default", agent()), a1=("default", agent()))
        s.reserve(KernelId("k"), Demand(cores=1), "default", AgentId("a0"))
        s.remove_agent(AgentId("a0"))
        assert s.held(KernelId("k")) is None and "a0" not in s
        s.upsert_agent(AgentId("a9"), "default", agent(), schedulable=True)
        assert s.usage(AgentId("a9")) == Demand() and len(s) == 2

    def test_grows_past_its_initial_size(self) -> None:
        s = Scheduler()
        for i in range(300):
            s.upsert_agent(AgentId(f"a{i}"), "default", agent(cores=1), schedulable=True)
        picked = {
            s.reserve(KernelId(f"k{i}"), Demand(cores=1), "default").agent_id for i in range(300)
        }
        assert len(picked) == 300
        with pytest.raises(AllAgentsBusy):
            s.reserve(KernelId("one-more"), Demand(cores=1), "default")


_demands = st.builds(
    Demand,
    cores=st.integers(0, 3),
    memory=st.sampled_from([0, GIB // 2, GIB, 2 * GIB]),
    ports=st.integers(0, 3),
    devices=st.dictionaries(st.just("cuda"), st.integers(0, 2), max_size=1),
)


class TestNeverOverCommits:
    @settings(max_examples=150, deadline=None)
    @given(
        policy=st.sampled_from(["spread", "pack"]),
        capacities=st.lists(
            st.builds(
                agent,
                cores=st.integers(0, 4),
                memory=st.sampled_from([GIB, 2 * GIB, 4 * GIB]),
                ports=st.integers(0, 5),
                cuda=st.integers(0, 2),
            ),
            min_size=1,
            max_size=5,
        ),
        steps=st.lists(st.tuples(st.booleans(), _demands, st.integers(0, 40)), max_size=60),
    )
    def test_holds_stay_within_capacity(
        self, policy: str, capacities: list[Demand], steps: list[tuple[bool, Demand, int]]
    ) -> None:
        s = Scheduler(policy)  # type: ignore[arg-type]
        for i, capacity in enumerate(capacities):
            s.upsert_agent(AgentId(f"a{i}"), "default", capacity, schedulable=True)
        live: list[KernelId] = []
        for n, (create, demand, victim) in enumerate(steps):
            if create or not live:
                try:
                    live.append(s.reserve(KernelId(f"k{n}"), demand, "default").kernel_id)
                except (NoAgentFits, AllAgentsBusy):
                    # Refused only when no agent had the room right now.
                    for i, capacity in enumerate(capacities):
                        used = s.usage(AgentId(f"a{i}"))
                        assert not _fits(capacity, used, demand)
            else:
                s.release(live.pop(victim % len(live)))
            for i, capacity in enumerate(capacities):
                used = s.usage(AgentId(f"a{i}"))
                assert used.cores <= capacity.cores
                assert used.memory <= capacity.memory
                assert used.ports <= capacity.ports
                assert used.devices.get("cuda", 0) <= capacity.devices.get("cuda", 0)
        for kernel_id in live:
            s.release(kernel_id)
        assert all(s.usage(AgentId(f"a{i}")) == Demand() for i in range(len(capacities)))


def _fits(capacity: Demand, used: Demand, demand: Demand) -> bool:
    return (
        capacity.cores - used.cores >= demand.cores
        and capacity.memory - used.memory >= demand.memory
        and capacity.ports - used.ports >= demand.ports
        and all(
            capacity.devices.get(k, 0) - used.devices.get(k, 0) >= n
            for k, n in demand.devices.items()
            if n
        )
    )
