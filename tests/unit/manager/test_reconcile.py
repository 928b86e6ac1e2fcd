"""Reconciling the kernel table with registrations, heartbeats and GetKernel answers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from common.ids import AgentId, KernelId
from manager.kernels import KernelTable
from manager.reconcile import GONE, Reconciler, moves_forward
from manager.scheduler import Demand, Scheduler
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

PENDING, RUNNING = pb.KERNEL_STATE_PENDING, pb.KERNEL_STATE_RUNNING
TERMINATED, UNKNOWN = pb.KERNEL_STATE_TERMINATED, pb.KERNEL_STATE_UNKNOWN
T0 = 1_000_000.0  # the daemon's clock
MIB = 1 << 20
OLD, NEW = "127.0.0.1:7001", "127.0.0.1:7002"


def kernel(
    kernel_id: str, agent_id: str = "a0", state: int = RUNNING, created: float = T0
) -> pb.Kernel:
    return pb.Kernel(
        kernel_id=kernel_id,
        agent_id=agent_id,
        state=state,  # type: ignore[arg-type]
        created_at=created,
        allocated=pb.Resources(memory_bytes=MIB),
    )


@pytest.fixture
def scheduler() -> Scheduler:
    s = Scheduler()
    for agent_id in ("a0", "a1"):
        s.upsert_agent(AgentId(agent_id), "default", Demand(memory=1 << 30), schedulable=True)
    return s


@pytest.fixture
def reconciler(scheduler: Scheduler) -> Reconciler:
    return Reconciler(KernelTable(scheduler))


def given(
    reconciler: Reconciler,
    known: list[pb.Kernel],
    creating: Iterable[str] = (),
    destroying: Iterable[str] = (),
    adopting: Iterable[str] = (),
) -> None:
    """The table holds known (reported from OLD); these kernels are in flight."""
    for k in known:
        reconciler.table.add(k, OLD)
    reconciler.creating |= {KernelId(k) for k in creating}
    reconciler.destroying |= {KernelId(k) for k in destroying}
    reconciler.adopting |= {KernelId(k) for k in adopting}


def states(reconciler: Reconciler) -> dict[str, tuple[str, int]]:
    return {k: (r.agent_id, r.kernel.state) for k, r in reconciler.table.items()}


class TestMovesForward:
    @pytest.mark.parametrize(
        ("current", "reported", "allowed"),
        [
            (PENDING, RUNNING, True),
            (RUNNING, TERMINATED, True),
            (PENDING, TERMINATED, True),
            (RUNNING, RUNNING, True),
            (RUNNING, PENDING, False),
            (TERMINATED, RUNNING, False),
            (TERMINATED, PENDING, False),
            (UNKNOWN, PENDING, True),
            (UNKNOWN, RUNNING, True),
            (RUNNING, UNKNOWN, False),
        ],
        ids=[
            "pending to running",
            "running to terminated",
            "pending to terminated",
            "same state",
            "running never back to pending",
            "terminated never runs again",
            "terminated never pending again",
            "unknown gives way to pending",
            "unknown gives way to running",
            "a known state never becomes unknown by report",
        ],
    )
    def test_a_state_only_moves_forward(self, current: int, reported: int, allowed: bool) -> None:
        assert moves_forward(current, reported) is allowed


@dataclass(frozen=True)
class RegistrationCase:
    name: str
    known: list[pb.Kernel]
    reported: list[pb.Kernel]
    after: dict[str, tuple[str, int]]
    changed: list[str]
    agent_ids: tuple[str, ...] = ("a0",)
    taken_at: float = T0 + 10
    creating: set[str] = field(default_factory=set)
    destroying: set[str] = field(default_factory=set)


REGISTRATION_CASES = [
    RegistrationCase(
        "a kernel the daemon has and the table lacks is adopted",
        known=[],
        reported=[kernel("k1"), kernel("k2", state=TERMINATED)],
        after={"k1": ("a0", RUNNING), "k2": ("a0", TERMINATED)},
        changed=["k1", "k2"],
    ),
    RegistrationCase(
        "a kernel the daemon no longer has is terminated",
        known=[kernel("k1"), kernel("k2")],
        reported=[kernel("k1")],
        after={"k1": ("a0", RUNNING), "k2": ("a0", TERMINATED)},
        changed=["k1", "k2"],
    ),
    RegistrationCase(
        "a snapshot older than the kernel does not terminate it",
        known=[kernel("k1", created=T0 + 50)],
        reported=[],
        taken_at=T0 + 40,
        after={"k1": ("a0", RUNNING)},
        changed=["k1"],
    ),
    RegistrationCase(
        "a later state is taken",
        known=[kernel("k1", state=PENDING)],
        reported=[kernel("k1", state=RUNNING)],
        after={"k1": ("a0", RUNNING)},
        changed=["k1"],
    ),
    RegistrationCase(
        "an earlier state is ignored",
        known=[kernel("k1", state=TERMINATED)],
        reported=[kernel("k1", state=RUNNING)],
        after={"k1": ("a0", TERMINATED)},
        changed=["k1"],
    ),
    RegistrationCase(
        "an unknown kernel takes the daemon's word",
        known=[kernel("k1", state=UNKNOWN)],
        reported=[kernel("k1", state=RUNNING)],
        after={"k1": ("a0", RUNNING)},
        changed=["k1"],
    ),
    RegistrationCase(
        "a kernel being created is left alone",
        known=[kernel("k1")],
        reported=[],
        creating={"k1"},
        after={"k1": ("a0", RUNNING)},
        changed=[],
    ),
    RegistrationCase(
        "a kernel being destroyed is not adopted again",
        known=[],
        reported=[kernel("k1")],
        destroying={"k1"},
        after={},
        changed=[],
    ),
    RegistrationCase(
        "a kernel known on another agent is not adopted",
        known=[kernel("k1", "a1")],
        reported=[kernel("k1", "a0")],
        after={"k1": ("a1", RUNNING)},
        changed=[],
    ),
    RegistrationCase(
        "agents the registration does not name are not touched",
        known=[kernel("k1", "a1")],
        reported=[kernel("k2", "a1")],
        after={"k1": ("a1", RUNNING)},
        changed=[],
    ),
]


class TestRegistration:
    @pytest.mark.parametrize("case", REGISTRATION_CASES, ids=[c.name for c in REGISTRATION_CASES])
    def test_the_table_matches_the_daemons_full_list(
        self, reconciler: Reconciler, case: RegistrationCase
    ) -> None:
        given(reconciler, case.known, case.creating, case.destroying)
        changed = reconciler.registration(
            [AgentId(a) for a in case.agent_ids], case.reported, case.taken_at, NEW
        )
        assert sorted(r.kernel_id for r in changed) == case.changed
        assert states(reconciler) == case.after

    def test_reconciled_kernels_are_reached_at_the_new_address(
        self, reconciler: Reconciler
    ) -> None:
        given(reconciler, [kernel("k1"), kernel("k2")])
        reconciler.registration([AgentId("a0")], [kernel("k1"), kernel("k3")], T0 + 10, NEW)
        assert {k: r.daemon_address for k, r in reconciler.table.items()} == {
            "k1": NEW,
            "k2": NEW,
            "k3": NEW,
        }

    def test_terminated_kernels_say_why_and_release_their_hold(
        self, reconciler: Reconciler, scheduler: Scheduler
    ) -> None:
        given(reconciler, [kernel("k1"), kernel("k2")])
        reconciler.registration([AgentId("a0")], [kernel("k1")], T0 + 10, NEW)
        assert reconciler.table[KernelId("k2")].kernel.status_message == GONE
        assert scheduler.usage(AgentId("a0")).memory == MIB

    def test_a_kernel_known_on_another_agent_is_logged(
        self, reconciler: Reconciler, caplog: pytest.LogCaptureFixture
    ) -> None:
        given(reconciler, [kernel("k1", "a1")])
        with caplog.at_level(logging.WARNING, logger="manager.reconcile"):
            reconciler.registration([AgentId("a0")], [kernel("k1", "a0")], T0 + 10, NEW)
        assert caplog.messages == [
            "kernel k1 reported on agent a0 is known on agent a1; not adopted"
        ]


def status(kernel_id: str, state: int, **fields: object) -> mpb.KernelStatus:
    return mpb.KernelStatus(kernel_id=kernel_id, state=state, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class HeartbeatCase:
    name: str
    known: list[pb.Kernel]
    reported: list[mpb.KernelStatus]
    after: dict[str, int]
    changed: list[str]
    to_adopt: list[str] = field(default_factory=list)
    taken_at: float = T0 + 20
    creating: set[str] = field(default_factory=set)
    adopting: set[str] = field(default_factory=set)


HEARTBEAT_CASES = [
    HeartbeatCase(
        "an exit is applied",
        known=[kernel("k1")],
        reported=[status("k1", TERMINATED)],
        after={"k1": TERMINATED},
        changed=["k1"],
    ),
    HeartbeatCase(
        "a kernel missing from the heartbeat is terminated",
        known=[kernel("k1"), kernel("k2", state=TERMINATED)],
        reported=[],
        after={"k1": TERMINATED, "k2": TERMINATED},
        changed=["k1"],
    ),
    HeartbeatCase(
        "a heartbeat older than the kernel does not terminate it",
        known=[kernel("k1", created=T0 + 50)],
        reported=[],
        after={"k1": RUNNING},
        changed=[],
    ),
    HeartbeatCase(
        "the same state changes nothing",
        known=[kernel("k1")],
        reported=[status("k1", RUNNING)],
        after={"k1": RUNNING},
        changed=[],
    ),
    HeartbeatCase(
        "an earlier state is ignored",
        known=[kernel("k1", state=TERMINATED)],
        reported=[status("k1", RUNNING)],
        after={"k1": TERMINATED},
        changed=[],
    ),
    HeartbeatCase(
        "an unknown kernel takes the daemon's word",
        known=[kernel("k1", state=UNKNOWN)],
        reported=[status("k1", RUNNING)],
        after={"k1": RUNNING},
        changed=["k1"],
    ),
    HeartbeatCase(
        "a kernel being created is left alone",
        known=[kernel("k1")],
        reported=[],
        creating={"k1"},
        after={"k1": RUNNING},
        changed=[],
    ),
    HeartbeatCase(
        "a kernel the table lacks is to be adopted",
        known=[],
        reported=[status("k9", RUNNING)],
        after={},
        changed=[],
        to_adopt=["k9"],
    ),
    HeartbeatCase(
        "a kernel already being adopted is not fetched twice",
        known=[],
        reported=[status("k9", RUNNING)],
        adopting={"k9"},
        after={},
        changed=[],
    ),
    HeartbeatCase(
        "a kernel being created is not adopted",
        known=[],
        reported=[status("k9", PENDING)],
        creating={"k9"},
        after={},
        changed=[],
    ),
]


class TestHeartbeat:
    @pytest.mark.parametrize("case", HEARTBEAT_CASES, ids=[c.name for c in HEARTBEAT_CASES])
    def test_reported_states_are_applied(self, reconciler: Reconciler, case: HeartbeatCase) -> None:
        given(reconciler, case.known, case.creating, adopting=case.adopting)
        applied = reconciler.heartbeat(AgentId("a0"), case.reported, case.taken_at)
        assert [r.kernel_id for r in applied.changed] == case.changed
        assert applied.to_adopt == case.to_adopt
        assert {k: s for k, (_, s) in states(reconciler).items()} == case.after

    def test_an_exit_carries_its_code_message_and_time_and_frees_the_hold(
        self, reconciler: Reconciler, scheduler: Scheduler
    ) -> None:
        given(reconciler, [kernel("k1")])
        reconciler.heartbeat(
            AgentId("a0"),
            [status("k1", TERMINATED, exit_code=3, status_message="exited", finished_at=T0 + 5)],
            T0 + 20,
        )
        k = reconciler.table[KernelId("k1")].kernel
        assert (k.exit_code, k.status_message, k.finished_at) == (3, "exited", T0 + 5)
        assert scheduler.usage(AgentId("a0")).memory == 0

    def test_no_exit_code_reported_leaves_none(self, reconciler: Reconciler) -> None:
        given(reconciler, [kernel("k1")])
        reconciler.heartbeat(AgentId("a0"), [status("k1", TERMINATED)], T0 + 20)
        assert not reconciler.table[KernelId("k1")].kernel.HasField("exit_code")

    def test_only_the_named_agents_kernels_are_reconciled(self, reconciler: Reconciler) -> None:
        given(reconciler, [kernel("k1", "a1")])
        applied = reconciler.heartbeat(AgentId("a0"), [], T0 + 20)
        assert applied.changed == []
        assert states(reconciler) == {"k1": ("a1", RUNNING)}


@dataclass(frozen=True)
class FetchCase:
    name: str
    known_state: int
    answer: pb.Kernel | None
    changed: bool
    after: int
    creating: bool = False


FETCH_CASES = [
    FetchCase(
        "the daemon's newer word is taken",
        RUNNING,
        kernel("k1", state=TERMINATED),
        True,
        TERMINATED,
    ),
    FetchCase("the daemon's word is taken even backwards", TERMINATED, kernel("k1"), True, RUNNING),
    FetchCase("the same kernel changes nothing", RUNNING, kernel("k1"), False, RUNNING),
    FetchCase("a kernel the daemon lacks is terminated", RUNNING, None, True, TERMINATED),
    FetchCase("a terminated kernel the daemon lacks stays", TERMINATED, None, False, TERMINATED),
    FetchCase(
        "a kernel still being created is not terminated", RUNNING, None, False, RUNNING, True
    ),
]


class TestFetched:
    @pytest.mark.parametrize("case", FETCH_CASES, ids=[c.name for c in FETCH_CASES])
    def test_a_get_kernel_answer_updates_the_record(
        self, reconciler: Reconciler, case: FetchCase
    ) -> None:
        given(
            reconciler, [kernel("k1", state=case.known_state)], {"k1"} if case.creating else set()
        )
        record = reconciler.table[KernelId("k1")]
        assert reconciler.fetched(record, case.answer) is case.changed
        assert record.kernel.state == case.after

    def test_an_answer_for_a_forgotten_kernel_changes_nothing(self, reconciler: Reconciler) -> None:
        given(reconciler, [kernel("k1")])
        record = reconciler.table[KernelId("k1")]
        reconciler.table.forget(KernelId("k1"))
        assert reconciler.fetched(record, kernel("k1", state=TERMINATED)) is False
        assert record.kernel.state == RUNNING


class TestAdopt:
    def test_a_fetched_kernel_is_added_and_holds(
        self, reconciler: Reconciler, scheduler: Scheduler
    ) -> None:
        record = reconciler.adopt(kernel("k9"), NEW)
        assert record is not None and record.daemon_address == NEW
        assert list(reconciler.table) == ["k9"]
        assert scheduler.usage(AgentId("a0")).memory == MIB

    @pytest.mark.parametrize(
        ("known", "creating", "destroying"),
        [(["k9"], set(), set()), ([], {"k9"}, set()), ([], set(), {"k9"})],
        ids=["known by now", "being created", "being destroyed"],
    )
    def test_a_kernel_known_or_in_flight_by_now_is_not_adopted(
        self, reconciler: Reconciler, known: list[str], creating: set[str], destroying: set[str]
    ) -> None:
        given(reconciler, [kernel(k, state=PENDING) for k in known], creating, destroying)
        assert reconciler.adopt(kernel("k9"), NEW) is None
        assert {k: s for k, (_, s) in states(reconciler).items()} == {k: PENDING for k in known}
