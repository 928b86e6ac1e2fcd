"""The manager's kernel table: indexes, holds that follow each record's state, occupancy."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from common.errors import InvalidArgument, NotFound
from common.ids import AgentId, KernelId
from manager.errors import KernelNotFound
from manager.kernels import KernelRecord, KernelTable, account
from manager.scheduler import Demand, Scheduler
from protos import agent_pb2 as pb

PENDING, RUNNING = pb.KERNEL_STATE_PENDING, pb.KERNEL_STATE_RUNNING
TERMINATED, UNKNOWN = pb.KERNEL_STATE_TERMINATED, pb.KERNEL_STATE_UNKNOWN
MIB = 1 << 20
ADDRESS = "127.0.0.1:7001"


def kernel(
    kernel_id: str, agent_id: str = "a0", state: int = RUNNING, memory: int = MIB
) -> pb.Kernel:
    return pb.Kernel(
        kernel_id=kernel_id,
        agent_id=agent_id,
        state=state,  # type: ignore[arg-type]
        allocated=pb.Resources(memory_bytes=memory),
    )


@pytest.fixture
def scheduler() -> Scheduler:
    s = Scheduler()
    for agent_id in ("a0", "a1"):
        s.upsert_agent(AgentId(agent_id), "default", Demand(memory=1 << 30), schedulable=True)
    return s


@pytest.fixture
def table(scheduler: Scheduler) -> KernelTable:
    return KernelTable(scheduler)


def held(scheduler: Scheduler, agent_id: str = "a0") -> int:
    """Memory the scheduler holds on agent_id."""
    return scheduler.usage(AgentId(agent_id)).memory


class TestIndexes:
    def test_added_kernels_are_found_by_id_and_by_agent(self, table: KernelTable) -> None:
        k1 = table.add(kernel("k1"), ADDRESS)
        k2 = table.add(kernel("k2", "a1"), ADDRESS)
        assert table[KernelId("k1")] is k1
        assert dict(table) == {"k1": k1, "k2": k2}
        assert table.on_agent(AgentId("a1")) == [k2]
        assert k1.daemon_address == ADDRESS

    def test_an_agent_without_kernels_has_none(self, table: KernelTable) -> None:
        assert table.on_agent(AgentId("nobody")) == []

    def test_forget_drops_both_indexes_and_the_hold(
        self, table: KernelTable, scheduler: Scheduler
    ) -> None:
        table.add(kernel("k1"), ADDRESS)
        table.forget(KernelId("k1"))
        table.forget(KernelId("k1"))
        assert len(table) == 0
        assert table.on_agent(AgentId("a0")) == []
        assert held(scheduler) == 0

    def test_restored_records_hold_only_while_not_terminated(self, scheduler: Scheduler) -> None:
        table = KernelTable(
            scheduler,
            [
                KernelRecord(kernel("k1", memory=MIB), ADDRESS),
                KernelRecord(kernel("k2", state=TERMINATED, memory=4 * MIB), ADDRESS),
                KernelRecord(kernel("k3", state=UNKNOWN, memory=2 * MIB), ADDRESS),
            ],
        )
        assert list(table) == ["k1", "k2", "k3"]
        assert held(scheduler) == 3 * MIB


@dataclass(frozen=True)
class LocateCase:
    name: str
    kernel_id: str
    agent_id: str
    error: type[Exception]
    message: str


LOCATE_CASES = [
    LocateCase("no kernel id", "", "", InvalidArgument, "kernel_id is required"),
    LocateCase(
        "an unknown kernel", "k9", "", KernelNotFound, "kernel 'k9' is not known to the manager"
    ),
    LocateCase(
        "the wrong agent",
        "k1",
        "a1",
        NotFound,
        "kernel 'k1' is on agent 'a0', not 'a1'",
    ),
]


class TestLocate:
    def test_a_known_kernel_is_found_with_or_without_its_agent(self, table: KernelTable) -> None:
        record = table.add(kernel("k1"), ADDRESS)
        assert table.locate("k1") is record
        assert table.locate("k1", "a0") is record

    @pytest.mark.parametrize("case", LOCATE_CASES, ids=[c.name for c in LOCATE_CASES])
    def test_a_bad_lookup_says_what_is_wrong(self, table: KernelTable, case: LocateCase) -> None:
        table.add(kernel("k1"), ADDRESS)
        with pytest.raises(case.error) as err:
            table.locate(case.kernel_id, case.agent_id)
        assert type(err.value) is case.error
        assert str(err.value) == case.message


@dataclass(frozen=True)
class HoldCase:
    name: str
    state: int
    holds: bool


HOLD_CASES = [
    HoldCase("pending holds", PENDING, True),
    HoldCase("running holds", RUNNING, True),
    HoldCase("unknown (agent lost) holds", UNKNOWN, True),
    HoldCase("terminated holds nothing", TERMINATED, False),
]


class TestHoldsFollowState:
    @pytest.mark.parametrize("case", HOLD_CASES, ids=[c.name for c in HOLD_CASES])
    def test_an_added_kernel_holds_what_its_daemon_allocated(
        self, table: KernelTable, scheduler: Scheduler, case: HoldCase
    ) -> None:
        record = table.add(kernel("k1", state=case.state), ADDRESS)
        assert record.holds_resources is case.holds
        assert held(scheduler) == (MIB if case.holds else 0)

    @pytest.mark.parametrize("case", HOLD_CASES, ids=[c.name for c in HOLD_CASES])
    def test_an_update_takes_the_daemons_word_and_rebalances_the_hold(
        self, table: KernelTable, scheduler: Scheduler, case: HoldCase
    ) -> None:
        record = table.add(kernel("k1"), ADDRESS)
        reported = kernel("k1", state=case.state, memory=3 * MIB)
        table.update(record, reported)
        assert record.kernel is reported
        assert held(scheduler) == (3 * MIB if case.holds else 0)

    def test_terminate_records_the_reason_and_releases(
        self, table: KernelTable, scheduler: Scheduler
    ) -> None:
        record = table.add(kernel("k1"), ADDRESS)
        table.terminate(record, "gone from its daemon")
        assert record.kernel.state == TERMINATED
        assert record.kernel.status_message == "gone from its daemon"
        assert record.kernel.finished_at > 0
        assert held(scheduler) == 0

    def test_terminate_keeps_a_finish_time_the_daemon_gave(self, table: KernelTable) -> None:
        record = table.add(kernel("k1"), ADDRESS)
        record.kernel.finished_at = 123.0
        table.terminate(record, "why")
        assert record.kernel.finished_at == 123.0

    def test_terminate_all_changes_only_the_agents_live_kernels(
        self, table: KernelTable, scheduler: Scheduler
    ) -> None:
        live = table.add(kernel("k1"), ADDRESS)
        table.add(kernel("k2", state=TERMINATED), ADDRESS)
        other = table.add(kernel("k3", "a1"), ADDRESS)
        assert table.terminate_all(AgentId("a0"), "its agent is no longer on its daemon") == [live]
        assert live.kernel.state == TERMINATED
        assert other.kernel.state == RUNNING
        assert (held(scheduler, "a0"), held(scheduler, "a1")) == (0, MIB)

    def test_mark_unknown_changes_live_kernels_and_keeps_their_holds(
        self, table: KernelTable, scheduler: Scheduler
    ) -> None:
        pending = table.add(kernel("k1", state=PENDING), ADDRESS)
        running = table.add(kernel("k2"), ADDRESS)
        table.add(kernel("k3", state=TERMINATED), ADDRESS)
        table.add(kernel("k4", state=UNKNOWN), ADDRESS)
        changed = table.mark_unknown(AgentId("a0"))
        assert sorted(r.kernel_id for r in changed) == ["k1", "k2"]
        assert pending.kernel.state == running.kernel.state == UNKNOWN
        assert held(scheduler) == 3 * MIB


def info(**occupied: object) -> pb.AgentInfo:
    return pb.AgentInfo(agent_id="a0", occupied=pb.Resources(**occupied), kernel_count=1)  # type: ignore[arg-type]


def cuda(*ids: str) -> dict[str, pb.DeviceIds]:
    return {"cuda": pb.DeviceIds(ids=ids)}


@dataclass(frozen=True)
class AccountCase:
    name: str
    sign: int
    before: pb.AgentInfo
    allocated: pb.Resources
    after: pb.AgentInfo


ACCOUNT_CASES = [
    AccountCase(
        "a create adds cores, memory, ports, devices and one kernel",
        +1,
        info(cores=[0], memory_bytes=MIB, ports=1, devices=cuda("0")),
        pb.Resources(cores=[2, 1], memory_bytes=2 * MIB, ports=2, devices=cuda("1")),
        pb.AgentInfo(
            agent_id="a0",
            occupied=pb.Resources(
                cores=[0, 1, 2], memory_bytes=3 * MIB, ports=3, devices=cuda("0", "1")
            ),
            kernel_count=2,
        ),
    ),
    AccountCase(
        "a destroy takes them away again",
        -1,
        info(cores=[0, 1, 2], memory_bytes=3 * MIB, ports=3, devices=cuda("0", "1")),
        pb.Resources(cores=[1, 2], memory_bytes=2 * MIB, ports=2, devices=cuda("1")),
        pb.AgentInfo(
            agent_id="a0",
            occupied=pb.Resources(cores=[0], memory_bytes=MIB, ports=1, devices=cuda("0")),
            kernel_count=0,
        ),
    ),
    AccountCase(
        "a destroy never goes below zero",
        -1,
        info(),
        pb.Resources(cores=[1], memory_bytes=MIB, ports=1),
        pb.AgentInfo(agent_id="a0", occupied=pb.Resources(), kernel_count=0),
    ),
]


class TestAccount:
    @pytest.mark.parametrize("case", ACCOUNT_CASES, ids=[c.name for c in ACCOUNT_CASES])
    def test_occupancy_shows_a_create_or_destroy_at_once(self, case: AccountCase) -> None:
        agent_info = pb.AgentInfo()
        agent_info.CopyFrom(case.before)
        account(agent_info, pb.Kernel(kernel_id="k1", allocated=case.allocated), case.sign)
        assert agent_info == case.after


class TestChangeNotifications:
    @pytest.fixture
    def seen(self, table: KernelTable) -> list[tuple[str, str, int, int]]:
        changes: list[tuple[str, str, int, int]] = []
        table.subscribe(
            lambda c: changes.append(
                (c.kind.value, c.record.kernel_id, c.previous_state, c.record.kernel.state)
            )
        )
        return changes

    def test_add_state_changes_and_forget_are_announced_once_each(
        self, table: KernelTable, seen: list[tuple[str, str, int, int]]
    ) -> None:
        record = table.add(kernel("k1", state=PENDING), ADDRESS)
        table.update(record, kernel("k1", state=PENDING))  # same state: nothing to say
        table.update(record, kernel("k1", state=RUNNING))
        table.mark_unknown(AgentId("a0"))
        table.terminate(record, "gone")
        table.forget(KernelId("k1"))
        table.forget(KernelId("k1"))
        assert seen == [
            ("added", "k1", 0, PENDING),
            ("state", "k1", PENDING, RUNNING),
            ("state", "k1", RUNNING, UNKNOWN),
            ("state", "k1", UNKNOWN, TERMINATED),
            ("forgotten", "k1", TERMINATED, TERMINATED),
        ]

    def test_a_state_changed_in_place_is_announced_by_the_next_update(
        self, table: KernelTable, seen: list[tuple[str, str, int, int]]
    ) -> None:
        record = table.add(kernel("k1"), ADDRESS)
        record.kernel.state = TERMINATED  # as the reconciler applies a heartbeat
        table.update(record, record.kernel)
        assert seen[-1] == ("state", "k1", RUNNING, TERMINATED)

    def test_restored_records_are_not_announced_and_unsubscribe_stops_calls(
        self, scheduler: Scheduler
    ) -> None:
        changes: list[object] = []
        table = KernelTable(scheduler, [KernelRecord(kernel("k1"), ADDRESS)])
        unsubscribe = table.subscribe(changes.append)
        assert changes == []
        unsubscribe()
        table.add(kernel("k2"), ADDRESS)
        assert changes == []

    def test_a_failing_subscriber_does_not_break_the_table(self, table: KernelTable) -> None:
        def broken(change: object) -> None:
            raise RuntimeError("bug")

        calls: list[object] = []
        table.subscribe(broken)
        table.subscribe(calls.append)
        table.add(kernel("k1"), ADDRESS)
        assert "k1" in table and len(calls) == 1


class TestSecrets:
    def test_a_kernels_token_never_enters_the_table(self, table: KernelTable) -> None:
        reported = kernel("k1")
        reported.spec.env.update({"AGENTHOST_TOKEN": "aht_a_b", "OTHER": "kept"})
        record = table.add(reported, ADDRESS)
        assert dict(record.kernel.spec.env) == {"AGENTHOST_TOKEN": "<redacted>", "OTHER": "kept"}
        again = kernel("k1")
        again.spec.env["AGENTHOST_TOKEN"] = "aht_a_b"
        table.update(record, again)
        assert record.kernel.spec.env["AGENTHOST_TOKEN"] == "<redacted>"
