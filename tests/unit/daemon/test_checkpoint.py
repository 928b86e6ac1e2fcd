"""daemon/checkpoint.py: round trips through a temporary directory, and every way a
state file can be unusable, each refused with the one thing the operator should do."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from common.ids import AgentId, KernelId
from daemon.checkpoint import SCHEMA_VERSION, Checkpoint, _checksum
from daemon.errors import CheckpointError
from daemon.kernels import Kernel, KernelSpec, KernelState, ServicePort
from daemon.resources import Allocation, ResourceRequest

GIB = 1 << 30


def kernel(kernel_id: str, **fields: Any) -> Kernel:
    spec = KernelSpec(
        kernel_id=KernelId(kernel_id),
        command=("python3", "-m", "http.server"),
        env={"A": "1"},
        resources=ResourceRequest(cpu_count=1, memory=GIB, devices={"cuda": 1}),
        ports=(ServicePort(name="http", container_port=8000),),
        labels={"team": "ml"},
    )
    return Kernel(
        kernel_id=KernelId(kernel_id),
        agent_id=AgentId("a0"),
        backend="local",
        spec=spec,
        **fields,
    )


KERNELS = [
    kernel(
        "k1",
        state=KernelState.RUNNING,
        allocation=Allocation(cores=(0,), memory=GIB, devices={"cuda": ("0",)}),
        ports={"http": 30000},
        handle={"version": 1, "pid": 4242, "start_time": 1234.5},
        memory_limit="cgroup",
    ),
    kernel("k2", state=KernelState.TERMINATED, exit_code=3, finished_at=99.0),
]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Checkpoint:
    return Checkpoint(tmp_path / "a0" / "state.json", "a0")


def rewrite(path: Path, change: Callable[[dict[str, Any]], None], *, reseal: bool) -> str:
    """Edit the saved document; reseal recomputes the checksum (a well-formed edit)."""
    doc = json.loads(path.read_text())
    change(doc)
    if reseal:
        payload = json.dumps(doc["kernels"], sort_keys=True, separators=(",", ":"))
        doc["checksum"] = _checksum(payload)
    return json.dumps(doc)


class TestRoundTrip:
    def test_saved_kernels_load_back_equal(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(KERNELS)
        assert checkpoint.load() == KERNELS

    def test_no_file_yet_is_no_kernels(self, checkpoint: Checkpoint) -> None:
        assert checkpoint.load() == []

    def test_saving_nothing_loads_nothing(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(KERNELS)
        checkpoint.save([])
        assert checkpoint.load() == []

    def test_file_carries_version_agent_and_checksum(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(KERNELS)
        doc = json.loads(checkpoint.path.read_text())
        assert doc["schema_version"] == SCHEMA_VERSION == 1
        assert doc["agent_id"] == "a0"
        assert doc["checksum"].startswith("sha256:")
        assert [k["kernel_id"] for k in doc["kernels"]] == ["k1", "k2"]

    def test_save_leaves_no_temporary_files(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(KERNELS)
        checkpoint.save(KERNELS[:1])
        assert [p.name for p in checkpoint.path.parent.iterdir()] == ["state.json"]

    def test_a_failed_save_keeps_the_previous_file(
        self, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        checkpoint.save(KERNELS)
        before = checkpoint.path.read_bytes()

        def broken_fsync(fd: int) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr("common.atomic_file.os.fsync", broken_fsync)
        with pytest.raises(OSError):
            checkpoint.save([])
        assert checkpoint.path.read_bytes() == before
        assert [p.name for p in checkpoint.path.parent.iterdir()] == ["state.json"]


class TestIncrementalEncoding:
    """encode() reuses a record's encoding while the record is the same object."""

    def test_a_changed_record_is_written_anew(self, checkpoint: Checkpoint) -> None:
        checkpoint.save(KERNELS)
        changed = KERNELS[0].model_copy(update={"ports": {"http": 30001}})
        checkpoint.save([changed, KERNELS[1]])
        assert checkpoint.load() == [changed, KERNELS[1]]

    def test_the_file_is_what_a_fresh_encoder_writes(self, checkpoint: Checkpoint) -> None:
        checkpoint.encode(KERNELS)  # fragments kept
        later = [KERNELS[1], KERNELS[0].model_copy(update={"state": KernelState.TERMINATED})]
        fresh = Checkpoint(checkpoint.path, "a0")
        assert checkpoint.encode(later) == fresh.encode(later)

    def test_the_checksum_is_over_the_compact_sorted_payload(self, checkpoint: Checkpoint) -> None:
        doc = json.loads(checkpoint.encode(KERNELS))
        payload = json.dumps(doc["kernels"], sort_keys=True, separators=(",", ":"))
        assert doc["checksum"] == _checksum(payload)

    def test_one_record_per_line(self, checkpoint: Checkpoint) -> None:
        lines = checkpoint.encode(KERNELS).splitlines()
        assert [
            json.loads(line.rstrip(","))["kernel_id"] for line in lines if line.startswith('{"')
        ] == [
            "k1",
            "k2",
        ]


class TestDirectorySync:
    def test_write_fsyncs_the_file_and_leaves_the_directory_to_sync(
        self, checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        synced: list[str] = []
        real = os.fsync

        def recording(fd: int) -> None:
            synced.append("directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
            real(fd)

        monkeypatch.setattr("common.atomic_file.os.fsync", recording)
        checkpoint.write(checkpoint.encode(KERNELS))
        assert synced == ["file"]
        checkpoint.sync()
        assert synced == ["file", "directory"]
        assert checkpoint.load() == KERNELS


@dataclass(frozen=True)
class Unusable:
    """A state file the checkpoint must refuse; {path} and {aside} are filled in."""

    name: str
    make: Callable[[Path], str]
    message: str


ASIDE = (
    "move it aside (mv {path} {path}.broken) to start agent 'a0' afresh; "
    "its kernels will then be ended"
)


def _cut_before_kernels(path: Path) -> str:
    text = path.read_text()
    return text[: text.index('"kernels"')]


def _edit_port(doc: dict[str, Any]) -> None:
    doc["kernels"][0]["ports"]["http"] = 30001


def _bad_state(doc: dict[str, Any]) -> None:
    doc["kernels"][1]["state"] = "exploded"


UNUSABLE = [
    Unusable(
        "truncated",
        _cut_before_kernels,
        "{path}: not valid JSON (Expecting property name enclosed in double quotes at line 5); "
        "the file is truncated or corrupt: {aside}",
    ),
    Unusable(
        "empty",
        lambda path: "",
        "{path}: not valid JSON (Expecting value at line 1); "
        "the file is truncated or corrupt: {aside}",
    ),
    Unusable(
        "corrupt_bytes",
        lambda path: "\x00\x17garbage",
        "{path}: not valid JSON (Expecting value at line 1); "
        "the file is truncated or corrupt: {aside}",
    ),
    Unusable(
        "not_an_object",
        lambda path: "[1, 2]",
        "{path}: not an agenthost checkpoint: {aside}",
    ),
    Unusable(
        "no_schema_version",
        lambda path: rewrite(path, lambda d: d.pop("schema_version"), reseal=False),
        "{path}: not an agenthost checkpoint: {aside}",
    ),
    Unusable(
        "checksum_mismatch",
        lambda path: rewrite(path, _edit_port, reseal=False),
        "{path}: checksum mismatch, the file is corrupt: {aside}",
    ),
    Unusable(
        "old_schema_version",
        lambda path: rewrite(path, lambda d: d.update(schema_version=0), reseal=False),
        "{path}: schema_version 0 cannot be read or migrated (this agenthost reads 1): {aside}",
    ),
    Unusable(
        "schema_version_not_a_number",
        lambda path: rewrite(path, lambda d: d.update(schema_version="1"), reseal=False),
        "{path}: schema_version '1' cannot be read or migrated (this agenthost reads 1): {aside}",
    ),
    Unusable(
        "newer_schema_version",
        lambda path: rewrite(path, lambda d: d.update(schema_version=2), reseal=False),
        "{path}: schema_version 2 was written by a newer agenthost (this one reads 1): "
        "run that newer agenthost, or {aside}",
    ),
    Unusable(
        "another_agents_file",
        lambda path: rewrite(path, lambda d: d.update(agent_id="a1"), reseal=False),
        "{path}: belongs to agent 'a1', not 'a0': {aside}",
    ),
    Unusable(
        "well_sealed_but_unreadable_record",
        lambda path: rewrite(path, _bad_state, reseal=True),
        "{path}: unreadable kernel record at kernels[1].state: Input should be 'pending', "
        "'running' or 'terminated': {aside}",
    ),
]


class TestUnusableFile:
    @pytest.mark.parametrize("case", UNUSABLE, ids=[c.name for c in UNUSABLE])
    def test_is_refused_with_what_to_do(self, checkpoint: Checkpoint, case: Unusable) -> None:
        checkpoint.save(KERNELS)
        checkpoint.path.write_text(case.make(checkpoint.path))
        path = checkpoint.path
        with pytest.raises(CheckpointError) as info:
            checkpoint.load()
        aside = ASIDE.format(path=path)
        assert str(info.value) == case.message.format(path=path, aside=aside)

    def test_refusal_changes_nothing_on_disk(self, checkpoint: Checkpoint) -> None:
        checkpoint.path.parent.mkdir(parents=True)
        checkpoint.path.write_text("{broken")
        with pytest.raises(CheckpointError):
            checkpoint.load()
        assert checkpoint.path.read_text() == "{broken"

    def test_moving_it_aside_as_told_starts_afresh(self, checkpoint: Checkpoint) -> None:
        checkpoint.path.parent.mkdir(parents=True)
        checkpoint.path.write_text("{broken")
        checkpoint.path.rename(checkpoint.path.with_name("state.json.broken"))
        assert checkpoint.load() == []
