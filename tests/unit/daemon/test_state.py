"""daemon/state.py: the in-memory state keeps records, allocator and ports in step, and
the checkpointed state writes every change through, coalesced, before its caller goes on.

Round trips go through a temporary directory. A write can be held in its thread
(`GatedCheckpoint`) to see what a caller waits for and what joins the next write;
no test looks at the clock.
"""

from __future__ import annotations

import asyncio
import errno
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import AlreadyExists, NotFound, ResourceExhausted
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.checkpoint import SCHEMA_VERSION, Checkpoint
from daemon.kernels import AggregateKernelRegistry, Kernel, KernelSpec, KernelState, ServicePort
from daemon.ports import PortPool
from daemon.resources import Allocation, ResourceAllocator, ResourceRequest, ResourceSlice, total
from daemon.state import CheckpointedState, Durable, MemoryState, checkpointed

GIB = 1 << 30
SLICE = ResourceSlice(cores=(0, 1, 2, 3), memory=4 * GIB, devices={"cuda": ("0",)})
PORTS = (30000, 30009)


def kernel(kernel_id: str, cpus: int = 1, memory: int = GIB, ports: tuple[str, ...] = ()) -> Kernel:
    """A new (pending) record asking for cpus cores, memory and named ports."""
    spec = KernelSpec(
        kernel_id=KernelId(kernel_id),
        command=("sleep", "60"),
        resources=ResourceRequest(cpu_count=cpus, memory=memory),
        ports=tuple(ServicePort(name=name) for name in ports),
    )
    return Kernel(kernel_id=KernelId(kernel_id), agent_id=AgentId("a0"), backend="local", spec=spec)


def memory_state(aggregate: AggregateKernelRegistry | None = None) -> MemoryState:
    registry = (aggregate or AggregateKernelRegistry()).new_registry(AgentId("a0"))
    return MemoryState(registry, ResourceAllocator(SLICE), PortPool(*PORTS, is_free=lambda p: True))


class GatedCheckpoint(Checkpoint):
    """A real checkpoint that records every write and can hold writes in their thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "a0")
        self.writes: list[str] = []
        self.started = threading.Semaphore(0)
        self.finished = threading.Semaphore(0)
        self.gate = threading.Event()
        self.gate.set()

    def write(self, content: str) -> None:
        self.started.release()
        self.gate.wait(30)
        try:
            super().write(content)
            self.writes.append(content)
        finally:
            self.finished.release()

    def hold(self) -> None:
        """Hold every write that starts from now on in its thread, until `gate` is set."""
        self.gate.clear()
        while self.started.acquire(blocking=False):
            pass
        while self.finished.acquire(blocking=False):
            pass

    async def wait_started(self) -> None:
        """Until a write (since `hold`) has begun in its thread."""
        assert await asyncio.to_thread(self.started.acquire, True, 30)

    async def wait_finished(self) -> None:
        """Until a write (since `hold`) has ended."""
        assert await asyncio.to_thread(self.finished.acquire, True, 30)


def ids_in(content: str) -> list[str]:
    return [k["kernel_id"] for k in json.loads(content)["kernels"]]


@pytest.fixture
def checkpoint(tmp_path: Path) -> GatedCheckpoint:
    return GatedCheckpoint(tmp_path / "agents" / "a0" / "state.json")


@pytest.fixture
def state(checkpoint: GatedCheckpoint) -> CheckpointedState:
    return CheckpointedState(memory_state(), checkpoint)


def on_disk(state: CheckpointedState) -> list[Kernel]:
    """What a restarted daemon would read."""
    return Checkpoint(state.checkpoint.path, "a0").load()


def in_memory(state: CheckpointedState) -> list[Kernel]:
    """What the file should hold: every record but the pending ones."""
    return [k for k in state.kernels() if checkpointed(k)]


async def running(state: CheckpointedState, *kernels: Kernel) -> list[Kernel]:
    """Claim kernels and mark them running, as a create does; returns once written."""
    claimed = await state.claim(kernels)
    marked = [state.update(k.kernel_id, state=KernelState.RUNNING) for k in claimed]
    return [await m for m in marked]


# -------------------------------------------------------------- memory


class TestMemoryState:
    def test_claim_gives_each_record_its_resources_and_ports(self) -> None:
        state = memory_state()
        k1, k2 = state.claim([kernel("k1", 2, GIB, ("http",)), kernel("k2", 1, GIB)]).value
        assert (k1.allocation, k1.ports) == (Allocation(cores=(0, 1), memory=GIB), {"http": 30000})
        assert (k2.allocation, k2.ports) == (Allocation(cores=(2,), memory=GIB), {})
        assert state.get(KernelId("k1")) is k1
        assert state.occupied() == Allocation(cores=(0, 1, 2), memory=2 * GIB)
        assert (state.ports_used(), state.ports_total) == (1, 10)

    def test_claim_is_all_or_none(self) -> None:
        state = memory_state()
        with pytest.raises(ResourceExhausted) as info:
            state.claim([kernel("k1", 2, ports=("http",)), kernel("k2", 3)])
        assert str(info.value) == "3 cores requested, 2 of the agent's 4 are free"
        assert state.kernels() == []
        assert (state.occupied(), state.ports_used()) == (Allocation(), 0)

    def test_claim_of_an_id_another_agent_holds_takes_nothing(self) -> None:
        aggregate = AggregateKernelRegistry()
        aggregate.new_registry(AgentId("a1")).add(kernel("k2"))
        state = memory_state(aggregate)
        with pytest.raises(AlreadyExists) as info:
            state.claim([kernel("k1"), kernel("k2")])
        assert str(info.value) == "kernel 'k2' already exists on agent 'a1'"
        assert (state.kernels(), state.occupied()) == ([], Allocation())

    def test_terminate_records_the_end_and_releases_everything(self) -> None:
        state = memory_state()
        state.claim([kernel("k1", 2, ports=("http",))])
        ended = state.terminate(KernelId("k1"), 3, "exited", EndReason.EXITED).value
        assert (ended.state, ended.exit_code, ended.status_message) == (
            KernelState.TERMINATED,
            3,
            "exited",
        )
        assert (ended.allocation, ended.ports) == (Allocation(), {})
        assert (state.occupied(), state.ports_used(), state.alive_count()) == (Allocation(), 0, 0)
        assert state.get(KernelId("k1")) is ended

    def test_remove_releases_and_gives_the_last_form(self) -> None:
        state = memory_state()
        (claimed,) = state.claim([kernel("k1", ports=("http",))]).value
        assert state.remove(KernelId("k1")).value is claimed
        assert (state.find(KernelId("k1")), state.occupied(), state.ports_used()) == (
            None,
            Allocation(),
            0,
        )
        with pytest.raises(NotFound):
            state.remove(KernelId("k1"))

    def test_restore_holds_what_live_records_hold_and_nothing_for_ended_ones(self) -> None:
        live = kernel("k1").model_copy(
            update={
                "state": KernelState.RUNNING,
                "allocation": Allocation(cores=(3,), memory=GIB),
                "ports": {"http": 30005},
            }
        )
        ended = kernel("k2").ended(0, "exited", EndReason.EXITED)
        state = memory_state()
        state.restore([live, ended])
        assert state.kernels() == [live, ended]
        assert state.occupied() == Allocation(cores=(3,), memory=GIB)
        assert state.ports_used() == 1
        (fresh,) = state.claim([kernel("k3", 3)]).value
        assert fresh.allocation.cores == (0, 1, 2)

    def test_update_sets_fields_and_keeps_what_the_record_holds(self) -> None:
        state = memory_state()
        (claimed,) = state.claim([kernel("k1")]).value
        updated = state.update(KernelId("k1"), handle={"pid": 7}, backend_ref="pid 7").value
        assert (updated.handle, updated.backend_ref) == ({"pid": 7}, "pid 7")
        assert updated.allocation == claimed.allocation
        assert claimed.handle == {}  # what a reader was handed never changes

    async def test_awaiting_a_change_gives_its_result_at_once(self) -> None:
        state = memory_state()
        (claimed,) = await state.claim([kernel("k1")])
        assert await state.update(claimed.kernel_id, status_message="x") == state.get(
            KernelId("k1")
        )
        assert await state.load() == []
        await state.flush()

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["claim", "terminate", "remove", "update"]),
                st.integers(0, 5),
                st.integers(0, 3),
            ),
            max_size=30,
        )
    )
    def test_records_allocator_and_ports_never_disagree(
        self, ops: list[tuple[str, int, int]]
    ) -> None:
        state = memory_state()
        for op, index, size in ops:
            kernel_id = KernelId(f"k{index}")
            try:
                if op == "claim":
                    state.claim([kernel(kernel_id, size, size * GIB // 2, ("a", "b")[:size])])
                elif op == "terminate":
                    state.terminate(kernel_id, None, "vanished", EndReason.LOST)
                elif op == "remove":
                    state.remove(kernel_id)
                else:
                    state.update(kernel_id, status_message=f"note {size}")
            except (NotFound, AlreadyExists, ResourceExhausted):
                pass
            alive = [k for k in state.kernels() if k.alive]
            assert state.occupied() == total(k.allocation for k in alive)
            ports = [p for k in alive for p in k.ports.values()]
            assert state.ports_used() == len(ports) == len(set(ports))
            ended = [k for k in state.kernels() if not k.alive]
            assert all(k.allocation == Allocation() and not k.ports for k in ended)


# -------------------------------------------------------- write-through


@dataclass(frozen=True)
class Change:
    """One kind of change, made on a state holding running k1 (2 cores, port http) and k2."""

    name: str
    make: Callable[[CheckpointedState], Durable[Any]]
    on_disk: tuple[tuple[str, KernelState, str], ...]  # (kernel_id, state, status_message)


CHANGES = [
    Change(
        "update",
        lambda s: s.update(KernelId("k1"), status_message="restarted"),
        (("k1", KernelState.RUNNING, "restarted"), ("k2", KernelState.RUNNING, "")),
    ),
    Change(
        "terminate",
        lambda s: s.terminate(KernelId("k1"), 137, "OOMKilled", EndReason.OOM_KILLED),
        (("k1", KernelState.TERMINATED, "OOMKilled"), ("k2", KernelState.RUNNING, "")),
    ),
    Change(
        "remove",
        lambda s: s.remove(KernelId("k2")),
        (("k1", KernelState.RUNNING, ""),),
    ),
    Change(
        "back_to_pending_leaves_the_file",
        lambda s: s.update(KernelId("k1"), state=KernelState.PENDING),
        (("k2", KernelState.RUNNING, ""),),
    ),
    Change(
        "claim_and_run",
        lambda s: (
            s.claim([kernel("k3", ports=("ssh",))]),
            s.update(KernelId("k3"), state=KernelState.RUNNING),
        )[1],
        (
            ("k1", KernelState.RUNNING, ""),
            ("k2", KernelState.RUNNING, ""),
            ("k3", KernelState.RUNNING, ""),
        ),
    ),
]


class TestEveryChangeReachesTheFile:
    @pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
    async def test_once_awaited_the_file_holds_it(
        self, state: CheckpointedState, change: Change
    ) -> None:
        await running(state, kernel("k1", 2, ports=("http",)), kernel("k2"))
        await change.make(state)
        records = on_disk(state)
        assert [(k.kernel_id, k.state, k.status_message) for k in records] == list(change.on_disk)
        assert records == in_memory(state)

    @pytest.mark.parametrize("change", CHANGES, ids=[c.name for c in CHANGES])
    async def test_a_restart_restores_the_same_holdings(
        self, state: CheckpointedState, change: Change, tmp_path: Path
    ) -> None:
        await running(state, kernel("k1", 2, ports=("http",)), kernel("k2"))
        await change.make(state)
        again = CheckpointedState(memory_state(), Checkpoint(state.checkpoint.path, "a0"))
        await again.restore(await again.load())
        live = [k for k in state.kernels() if k.state is KernelState.RUNNING]
        assert again.occupied() == total(k.allocation for k in live)
        assert again.ports_used() == sum(len(k.ports) for k in live)

    async def test_claim_and_handle_of_a_pending_kernel_are_written_once_it_runs(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await state.restore([])
        (claimed,) = await state.claim([kernel("k1", ports=("http",))])
        await state.update(claimed.kernel_id, handle={"pid": 42}, backend_ref="pid 42")
        await state.remove(claimed.kernel_id)
        assert len(checkpoint.writes) == 1  # the restore; pending kernels are not on disk
        (k1,) = await running(state, kernel("k1", ports=("http",)))
        await state.update(k1.kernel_id, handle={"pid": 43})
        (record,) = on_disk(state)
        assert (record.allocation.cores, record.ports, record.handle) == (
            (0,),
            {"http": 30001},
            {"pid": 43},
        )

    async def test_restore_always_writes_so_a_new_agent_has_a_file(
        self, state: CheckpointedState
    ) -> None:
        assert await state.load() == []
        await state.restore([])
        doc = json.loads(state.checkpoint.path.read_text())
        assert (doc["schema_version"], doc["agent_id"], doc["kernels"]) == (1, "a0", [])


class TestFileFormat:
    async def test_reads_a_file_written_by_the_checkpoint_alone(
        self, state: CheckpointedState
    ) -> None:
        record = kernel("k1").model_copy(
            update={
                "state": KernelState.RUNNING,
                "allocation": Allocation(cores=(1,), memory=GIB),
                "ports": {"http": 30003},
            }
        )
        Checkpoint(state.checkpoint.path, "a0").save([record])
        await state.restore(await state.load())
        assert state.kernels() == [record]
        assert state.occupied() == Allocation(cores=(1,), memory=GIB)

    async def test_writes_schema_1_with_a_checksum_the_checkpoint_reads(
        self, state: CheckpointedState
    ) -> None:
        await running(state, kernel("k1"))
        doc = json.loads(state.checkpoint.path.read_text())
        assert doc["schema_version"] == SCHEMA_VERSION == 1
        assert doc["checksum"].startswith("sha256:")
        assert Checkpoint(state.checkpoint.path, "a0").load() == state.kernels()


# -------------------------------------------------------- coalescing


class TestCoalescing:
    async def test_changes_made_together_cost_one_write(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"), kernel("k2"), kernel("k3"))
        before = len(checkpoint.writes)
        changes = [
            state.terminate(KernelId(k), 0, "exited", EndReason.EXITED) for k in ("k1", "k2", "k3")
        ]
        await asyncio.gather(*changes)
        assert len(checkpoint.writes) == before + 1
        assert {k.state for k in on_disk(state)} == {KernelState.TERMINATED}

    async def test_changes_during_a_write_join_one_next_write_of_the_last_state(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"), kernel("k2"), kernel("k3"))
        before = len(checkpoint.writes)
        checkpoint.hold()
        first = asyncio.create_task(_awaited(state.remove(KernelId("k1"))))
        await checkpoint.wait_started()  # k1's removal is being written, held in its thread
        later = [
            asyncio.create_task(_awaited(state.remove(KernelId("k2")))),
            asyncio.create_task(_awaited(state.update(KernelId("k3"), status_message="one"))),
            asyncio.create_task(_awaited(state.update(KernelId("k3"), status_message="two"))),
        ]
        await asyncio.sleep(0)
        assert not first.done() and not any(t.done() for t in later)
        checkpoint.gate.set()
        await asyncio.gather(first, *later)
        assert [ids_in(c) for c in checkpoint.writes[before:]] == [["k2", "k3"], ["k3"]]
        (k3,) = on_disk(state)
        assert k3.status_message == "two"

    async def test_flush_with_nothing_due_writes_nothing(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"))
        before = len(checkpoint.writes)
        await state.flush()
        assert len(checkpoint.writes) == before

    async def test_a_change_nobody_awaits_is_written_all_the_same(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"))
        checkpoint.hold()
        state.terminate(KernelId("k1"), 0, "exited", EndReason.EXITED)
        await checkpoint.wait_started()
        checkpoint.gate.set()
        await checkpoint.wait_finished()
        assert on_disk(state)[0].state is KernelState.TERMINATED


async def _awaited(change: Durable[Any]) -> Any:
    return await change


# -------------------------------------------------------- durability


class TestDurability:
    async def test_an_awaited_change_returns_only_once_its_write_is_done(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"))
        checkpoint.hold()
        waiting = asyncio.create_task(
            _awaited(state.terminate(KernelId("k1"), 0, "exited", EndReason.EXITED))
        )
        await checkpoint.wait_started()
        await asyncio.sleep(0)
        assert not waiting.done()
        assert on_disk(state)[0].state is KernelState.RUNNING
        checkpoint.gate.set()
        ended = await waiting
        assert on_disk(state) == [ended]

    async def test_a_caller_that_gives_up_does_not_cancel_the_write_others_wait_for(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint
    ) -> None:
        await running(state, kernel("k1"), kernel("k2"))
        checkpoint.hold()
        impatient = asyncio.create_task(_awaited(state.remove(KernelId("k1"))))
        patient = asyncio.create_task(_awaited(state.remove(KernelId("k2"))))
        await checkpoint.wait_started()
        impatient.cancel()
        checkpoint.gate.set()
        await patient
        assert impatient.cancelled()
        assert on_disk(state) == []

    async def test_a_failed_write_is_raised_to_every_caller_and_keeps_the_previous_file(
        self, state: CheckpointedState, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await running(state, kernel("k1"), kernel("k2"))
        before = state.checkpoint.path.read_bytes()

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("common.atomic_file.os.fsync", no_space)
        results = await asyncio.gather(
            _awaited(state.terminate(KernelId("k1"), 0, "exited", EndReason.EXITED)),
            _awaited(state.remove(KernelId("k2"))),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [OSError, OSError]
        assert all(isinstance(r, OSError) and r.errno == errno.ENOSPC for r in results)
        assert state.checkpoint.path.read_bytes() == before
        assert [p.name for p in state.checkpoint.path.parent.iterdir()] == ["state.json"]

        monkeypatch.undo()
        await state.flush()  # the file lagged the memory: written again
        assert on_disk(state) == in_memory(state)
        assert [(k.kernel_id, k.state) for k in on_disk(state)] == [("k1", KernelState.TERMINATED)]

    async def test_after_a_failed_write_the_next_change_writes_everything(
        self, state: CheckpointedState, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        await running(state, kernel("k1"), kernel("k2"))

        def no_space(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr("common.atomic_file.os.fsync", no_space)
        with pytest.raises(OSError):
            await state.remove(KernelId("k1"))
        monkeypatch.undo()
        await state.update(KernelId("k2"), status_message="still here")
        assert [(k.kernel_id, k.status_message) for k in on_disk(state)] == [("k2", "still here")]


class TestDirectorySync:
    async def test_the_directory_is_fsynced_after_a_burst_and_flush_waits_for_it(
        self, state: CheckpointedState, checkpoint: GatedCheckpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        synced: list[int] = []  # how many writes had been made at each directory fsync
        monkeypatch.setattr(checkpoint, "sync", lambda: synced.append(len(checkpoint.writes)))
        await running(state, kernel("k1"), kernel("k2"))
        await state.flush()
        assert synced and synced[-1] == len(checkpoint.writes)

    async def test_a_directory_that_cannot_be_fsynced_fails_no_change(
        self,
        state: CheckpointedState,
        checkpoint: GatedCheckpoint,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        def broken() -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(checkpoint, "sync", broken)
        await running(state, kernel("k1"))
        await state.flush()
        assert [k.kernel_id for k in on_disk(state)] == ["k1"]
        assert "cannot fsync the directory of" in caplog.text


@pytest.fixture(autouse=True)
def _no_gate_left_closed(checkpoint: GatedCheckpoint) -> Iterator[None]:
    """A failing test must not leave a writer thread blocked."""
    yield
    checkpoint.gate.set()
