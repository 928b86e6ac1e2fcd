"""common/audit.py: the audit file (JSON lines, private, rotated by size), the call hook
through a real grpc.aio server (every way a call ends, refusals included), the ids a
request names, and reading a log back (last entries across rotated parts, following)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import json
import logging
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.audit import (
    AuditHook,
    AuditLog,
    follow_entries,
    last_entries,
    log_parts,
    request_ids,
)
from common.errors import NotFound, PermissionDenied, Unauthenticated
from common.interceptors import Authorization, ErrorMapping, HookedInterceptor
from common.principal import Principal
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from tests.servers import eventually

SERVICE = "test.Audit"


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The entries of one file, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = await AuditLog.open(tmp_path / "audit" / "audit.log", "daemon")
    yield log
    await log.aclose()


class TestAuditLog:
    async def test_a_line_is_one_json_object_with_time_and_server_first(
        self, audit: AuditLog
    ) -> None:
        audit.spawned("a0", "k1", 2000001, (0, 1), {"http": 30000})
        audit.terminated("a0", "k1", 137, "OOMKilled", "OOMKilled")
        await audit.aclose()
        spawned, ended = read_lines(audit.path)
        assert list(spawned)[:2] == ["time", "server"]
        assert (
            datetime.fromisoformat(spawned["time"].replace("Z", "+00:00")).utcoffset() is not None
        )
        assert spawned["time"].endswith("Z")
        assert {k: v for k, v in spawned.items() if k != "time"} == {
            "server": "daemon",
            "event": "spawned",
            "caller": None,
            "agent_id": "a0",
            "kernel_id": "k1",
            "uid": 2000001,
            "cores": [0, 1],
            "ports": {"http": 30000},
        }
        assert {k: v for k, v in ended.items() if k != "time"} == {
            "server": "daemon",
            "event": "terminated",
            "agent_id": "a0",
            "kernel_id": "k1",
            "exit_code": 137,
            "reason": "OOMKilled",
            "end_reason": "OOMKilled",
        }

    async def test_a_call_line_is_json_whatever_its_strings_hold(self, audit: AuditLog) -> None:
        audit.call("/s/Batch", "", None, ['k"1', "k\u00fc", "k\\"], "OK", 1.5e-7)
        audit.call("/s/Get", "token:a\nb", "a0", "k\x00\u2028", "NOT_FOUND", 2.0)
        await audit.aclose()
        batch, get = ({k: v for k, v in e.items() if k != "time"} for e in read_lines(audit.path))
        assert batch == {
            "server": "daemon",
            "event": "call",
            "caller": None,
            "method": "/s/Batch",
            "agent_id": None,
            "kernel_ids": ['k"1', "k\u00fc", "k\\"],
            "code": "OK",
            "duration": 0.0,
        }
        assert get == {
            "server": "daemon",
            "event": "call",
            "caller": "token:a\nb",
            "method": "/s/Get",
            "agent_id": "a0",
            "kernel_id": "k\x00\u2028",
            "code": "NOT_FOUND",
            "duration": 2.0,
        }
        assert audit.path.read_bytes().isascii()  # one entry per line, whatever it holds

    async def test_the_file_is_0600_and_a_directory_made_for_it_0700(self, tmp_path: Path) -> None:
        log = await AuditLog.open(tmp_path / "new" / "deeper" / "audit.log", "manager")
        await log.aclose()
        assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700

    @pytest.mark.parametrize("where", ["a-directory", "under-a-file"])
    async def test_a_path_that_cannot_be_opened_is_an_error_naming_it(
        self, tmp_path: Path, where: str
    ) -> None:
        (tmp_path / "a-directory").mkdir()
        (tmp_path / "a-file").write_text("")
        path = tmp_path / "a-directory" if where == "a-directory" else tmp_path / "a-file" / "x.log"
        with pytest.raises(OSError, match=f"^cannot open the audit log {path}: "):
            await AuditLog.open(path, "daemon")

    async def test_an_existing_file_is_appended_to_and_made_private(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        path.write_text('{"event":"earlier"}\n')
        path.chmod(0o644)
        log = await AuditLog.open(path, "daemon")
        log.terminated("a0", "k1", 0, "exited", "exited")
        await log.aclose()
        assert [e["event"] for e in read_lines(path)] == ["earlier", "terminated"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def test_it_rotates_by_size_keeping_backups_parts_each_private(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "audit.log"
        log = await AuditLog.open(path, "daemon", max_bytes=1000, backups=2)
        for i in range(60):
            log.terminated("a0", f"k{i}", 0, "exited", "exited")
        await log.aclose()
        assert log_parts(path) == [
            path.with_name("audit.log.2"),
            path.with_name("audit.log.1"),
            path,
        ]
        assert not path.with_name("audit.log.3").exists()
        for part in log_parts(path):
            assert part.stat().st_size <= 1000
            assert stat.S_IMODE(part.stat().st_mode) == 0o600
        kept = [e["kernel_id"] for part in log_parts(path) for e in read_lines(part)]
        assert kept == [f"k{i}" for i in range(60 - len(kept), 60)]  # the newest, in order

    async def test_closing_writes_everything_queued_in_order(self, audit: AuditLog) -> None:
        for i in range(5000):  # written in batches as the writer finds them queued
            audit.terminated("a0", f"k{i}", i, "exited", "exited")
        await audit.aclose()
        assert [e["exit_code"] for e in read_lines(audit.path)] == list(range(5000))

    async def test_lines_go_to_the_file_only_never_to_the_process_log(
        self, audit: AuditLog, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        audit.spawned("a0", "k1", None, (), {})
        await audit.aclose()
        assert len(read_lines(audit.path)) == 1
        assert caplog.records == []

    async def test_closing_twice_is_harmless_and_later_lines_are_dropped(
        self, audit: AuditLog
    ) -> None:
        await audit.aclose()
        await audit.aclose()
        audit.spawned("a0", "k1", None, (), {})
        assert read_lines(audit.path) == []

    async def test_writing_never_touches_the_disk_on_the_calling_thread(
        self, audit: AuditLog, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        written_on: set[str] = set()
        handler = audit._handler
        original = handler.emit

        def emit(record: logging.LogRecord) -> None:
            written_on.add(threading.current_thread().name)
            original(record)

        monkeypatch.setattr(handler, "emit", emit)
        audit.spawned("a0", "k1", None, (), {})
        await audit.aclose()
        assert written_on and threading.current_thread().name not in written_on

    async def test_a_full_disk_loses_lines_but_never_raises_not_even_on_close(
        self, audit: AuditLog, caplog: pytest.LogCaptureFixture
    ) -> None:
        audit.spawned("a0", "k1", None, (), {})
        await eventually(lambda: read_lines(audit.path))
        handler = audit._handler
        handler.acquire()
        try:  # the disk fills up under the open file
            handler.stream = io.TextIOWrapper(io.BufferedWriter(FullDisk()), encoding="ascii")
        finally:
            handler.release()
        for i in range(3):
            audit.spawned("a0", f"lost{i}", None, (), {})
        await audit.aclose()  # the buffered lines cannot be flushed: said, not raised
        assert [e["kernel_id"] for e in read_lines(audit.path)] == ["k1"]
        said = [r.getMessage() for r in caplog.records if r.name == "common.audit"]
        assert any("cannot write: [Errno 28]" in m for m in said), said
        assert any("the last lines were not written" in m for m in said), said


class FullDisk(io.RawIOBase):
    """A file on a full disk: every write fails with ENOSPC."""

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@dataclass(frozen=True)
class Ids:
    name: str
    request: Any
    agent_id: str | None
    kernel: str | list[str] | None


IDS = [
    Ids("kernel_call", pb.GetKernelRequest(agent_id="a0", kernel_id="k1"), "a0", "k1"),
    Ids("no_ids_at_all", pb.ListAgentsRequest(), None, None),
    Ids("agent_only", pb.ListKernelsRequest(agent_id="a1"), "a1", None),
    Ids(
        "batch_names_its_given_ids",
        pb.CreateKernelsRequest(
            agent_id="a0",
            kernels=[pb.KernelSpec(kernel_id="k1"), pb.KernelSpec(), pb.KernelSpec(kernel_id="k2")],
        ),
        "a0",
        ["k1", "k2"],
    ),
    Ids(
        "manager_create_names_its_spec_id",
        mpb.CreateKernelRequest(spec=pb.KernelSpec(kernel_id="k9", env={"SECRET": "x"})),
        "",
        "k9",
    ),
    Ids("manager_create_without_spec", mpb.CreateKernelRequest(), "", ""),
    Ids(
        "a_long_id_is_cut",
        pb.GetKernelRequest(kernel_id="k" * 5000),
        "",
        "k" * 63 + "...",
    ),
    Ids("not_a_message", b"raw", None, None),
]


class TestRequestIds:
    @pytest.mark.parametrize("case", IDS, ids=[c.name for c in IDS])
    def test_the_ids_a_request_names(self, case: Ids) -> None:
        assert request_ids(case.request) == (case.agent_id, case.kernel)


# ----------------------------------------------------------------- the hook


def policy(method: str, context: Any) -> Principal:
    """Callers name themselves in metadata (a test stand-in for certificates and tokens)."""
    who = dict(context.invocation_metadata() or ()).get("who")
    if who is None:
        raise Unauthenticated("say who you are")
    if who == "mallory":
        raise PermissionDenied("mallory may not", caller="user/mallory")
    return Principal(kind="certificate", role="user", name=who)


async def get(request: pb.GetKernelRequest, context: Any) -> pb.GetKernelResponse:
    if request.kernel_id == "missing":
        raise NotFound(f"kernel {request.kernel_id!r} not found")
    if request.kernel_id == "boom":
        raise RuntimeError("a bug")
    if request.kernel_id == "slow":
        await asyncio.sleep(30)
    return pb.GetKernelResponse(kernel=pb.Kernel(kernel_id=request.kernel_id))


async def watch(request: pb.WatchKernelsRequest, context: Any) -> AsyncIterator[pb.KernelEvent]:
    yield pb.KernelEvent()
    yield pb.KernelEvent()
    if request.agent_id == "forever":
        await asyncio.sleep(30)


HANDLER = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Get": grpc.unary_unary_rpc_method_handler(
            get,
            request_deserializer=pb.GetKernelRequest.FromString,
            response_serializer=pb.GetKernelResponse.SerializeToString,
        ),
        "Watch": grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=pb.WatchKernelsRequest.FromString,
            response_serializer=pb.KernelEvent.SerializeToString,
        ),
    },
)


@dataclass
class Served:
    channel: grpc.aio.Channel
    audit: AuditLog

    def get(self, kernel_id: str, who: str | None = "alice", timeout: float = 10) -> Any:
        metadata = (("who", who),) if who else ()
        return self.channel.unary_unary(
            f"/{SERVICE}/Get",
            request_serializer=pb.GetKernelRequest.SerializeToString,
            response_deserializer=pb.GetKernelResponse.FromString,
        )(
            pb.GetKernelRequest(agent_id="a0", kernel_id=kernel_id),
            timeout=timeout,
            metadata=metadata,
        )

    def watch(self, agent_id: str) -> Any:
        return self.channel.unary_stream(
            f"/{SERVICE}/Watch",
            request_serializer=pb.WatchKernelsRequest.SerializeToString,
            response_deserializer=pb.KernelEvent.FromString,
        )(pb.WatchKernelsRequest(agent_id=agent_id), timeout=10, metadata=(("who", "bob"),))

    async def lines(self, count: int) -> list[dict[str, Any]]:
        """The log's entries once it holds count of them."""

        def enough() -> list[dict[str, Any]] | None:
            found = read_lines(self.audit.path)
            return found if len(found) >= count else None

        return await eventually(enough)


@pytest.fixture
async def served(audit: AuditLog) -> AsyncIterator[Served]:
    """A real grpc.aio server with the hooks as the servers compose them, audit outermost."""
    server = grpc.aio.server(
        interceptors=[HookedInterceptor(AuditHook(audit), ErrorMapping(), Authorization(policy))]
    )
    server.add_generic_rpc_handlers((HANDLER,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Served(channel, audit)
    finally:
        await server.stop(0)


@dataclass(frozen=True)
class Ending:
    name: str
    kernel_id: str
    who: str | None
    caller: str | None
    code: str


ENDINGS = [
    Ending("success", "k1", "alice", "user/alice", "OK"),
    Ending("domain_error", "missing", "alice", "user/alice", "NOT_FOUND"),
    Ending("bug", "boom", "alice", "user/alice", "INTERNAL"),
    Ending("refused_names_whom_it_refused", "k1", "mallory", "user/mallory", "PERMISSION_DENIED"),
    Ending("unauthenticated_names_nobody", "k1", None, None, "UNAUTHENTICATED"),
]


class TestAuditHook:
    @pytest.mark.parametrize("case", ENDINGS, ids=[c.name for c in ENDINGS])
    async def test_one_line_per_call_with_caller_and_code(
        self, served: Served, case: Ending
    ) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await served.get(case.kernel_id, case.who)
        (line,) = await served.lines(1)
        assert {k: line[k] for k in ("event", "caller", "method", "agent_id", "kernel_id")} == {
            "event": "call",
            "caller": case.caller,
            "method": f"/{SERVICE}/Get",
            "agent_id": "a0",
            "kernel_id": case.kernel_id,
        }
        assert line["code"] == case.code
        assert line["duration"] >= 0

    async def test_a_call_past_its_deadline_is_deadline_exceeded(self, served: Served) -> None:
        with pytest.raises(grpc.aio.AioRpcError):
            await served.get("slow", timeout=0.2)
        (line,) = await served.lines(1)
        assert line["code"] == "DEADLINE_EXCEEDED"

    async def test_a_stream_is_written_when_it_ends(self, served: Served) -> None:
        call = served.watch("a0")
        assert len([m async for m in call]) == 2
        (line,) = await served.lines(1)
        assert (line["method"], line["caller"], line["agent_id"], line["code"]) == (
            f"/{SERVICE}/Watch",
            "user/bob",
            "a0",
            "OK",
        )
        assert "kernel_id" in line and line["kernel_id"] is None

    async def test_a_stream_the_client_cancels_is_written_cancelled(self, served: Served) -> None:
        call = served.watch("forever")
        await call.read()
        await asyncio.sleep(0.05)
        assert read_lines(served.audit.path) == []  # still going: nothing yet
        call.cancel()
        (line,) = await served.lines(1)
        assert line["code"] == "CANCELLED"


# ------------------------------------------------------------------- reading


def write_parts(path: Path, parts: list[list[dict[str, Any]]]) -> None:
    """Write a rotated log by hand: parts oldest first, the last one live."""
    names = [path.with_name(f"{path.name}.{n}") for n in range(len(parts) - 1, 0, -1)] + [path]
    for name, entries in zip(names, parts, strict=True):
        name.write_text("".join(json.dumps(e) + "\n" for e in entries))


def entry(n: int, kernel_id: str = "k1", **fields: Any) -> dict[str, Any]:
    return {"n": n, "event": "call", "kernel_id": kernel_id, **fields}


class TestLastEntries:
    def test_the_last_n_across_rotated_parts_oldest_first(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        write_parts(path, [[entry(1), entry(2)], [entry(3)], [entry(4), entry(5)]])
        assert [e["n"] for e in last_entries(path, 4).entries] == [2, 3, 4, 5]
        assert [e["n"] for e in last_entries(path, 100).entries] == [1, 2, 3, 4, 5]
        assert last_entries(path, 0).entries == []

    def test_only_the_kernels_lines_batches_included(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        write_parts(
            path,
            [
                [entry(1, "k1"), entry(2, "k2")],
                [
                    {"n": 3, "kernel_ids": ["k0", "k2"]},
                    entry(4, "k1"),
                    entry(5, "k2"),
                    {"n": 6},
                ],
            ],
        )
        assert [e["n"] for e in last_entries(path, 10, "k2").entries] == [2, 3, 5]
        assert [e["n"] for e in last_entries(path, 2, "k2").entries] == [3, 5]

    def test_a_damaged_line_is_skipped_and_counted(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        path.write_text('{"n": 1}\nnot json\n[1, 2]\n{"n": 2}\n')
        tail = last_entries(path, 10)
        assert [e["n"] for e in tail.entries] == [1, 2]
        assert tail.skipped == 2

    def test_a_line_being_written_is_left_for_following(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3, "par')
        tail = last_entries(path, 10)
        assert [e["n"] for e in tail.entries] == [1, 2]
        assert (tail.offset, tail.skipped) == (len('{"n": 1}\n{"n": 2}\n'), 0)

    def test_lines_longer_than_a_read_block_are_whole(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        write_parts(path, [[entry(i, "k" * 40, pad="x" * 30000) for i in range(10)]])
        assert [e["n"] for e in last_entries(path, 3).entries] == [7, 8, 9]

    def test_no_file_no_entries(self, tmp_path: Path) -> None:
        assert last_entries(tmp_path / "audit.log", 10).entries == []


class TestFollow:
    def test_new_lines_then_a_rotation_then_the_new_file(self, tmp_path: Path) -> None:
        path = tmp_path / "audit.log"
        path.write_text('{"n": 1}\n')
        got: list[Any] = []
        done = threading.Event()
        offset = path.stat().st_size

        def run() -> None:
            for e in follow_entries(path, offset, poll=0.01, stop=done.is_set):
                got.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            with path.open("a") as f:
                f.write('{"n": 2}\n{"n": 3, ')
                f.flush()
                wait_for(lambda: [e["n"] for e in got] == [2], what=got)
                f.write('"x": 0}\n{"n": 4}\n')
            path.rename(path.with_name("audit.log.1"))
            path.write_text('{"n": 5}\nbroken\n')
            wait_for(lambda: len(got) == 5, what=got)
        finally:
            done.set()
            thread.join(10)
        assert got[:4] == [{"n": 2}, {"n": 3, "x": 0}, {"n": 4}, {"n": 5}]
        assert got[4] is None  # a line that is not an entry


def wait_for(condition: Any, timeout: float = 10.0, what: Any = None) -> None:
    for _ in iterate(timeout):
        if condition():
            return
    raise AssertionError(f"condition not met: {what}")


def iterate(timeout: float) -> Iterator[None]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
        time.sleep(0.01)
