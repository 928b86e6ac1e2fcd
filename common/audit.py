"""The audit trail: an append-only JSON-lines file of every call and every kernel's life.

`AuditLog` writes one JSON object per line through the stdlib logging machinery:
a logger of its own (not propagating, so no other handler sees a line and no line
reaches the process's log) whose `QueueHandler` only enqueues, and a
`QueueListener` thread that encodes each entry and writes it through a
`RotatingFileHandler` (rotated by size: `audit.log.1` is the newest rotated part).
So the event loop never waits for the disk. The file is mode 0600, a directory
made for it 0700.

`AuditHook` is the call hook a server places outermost, so that it sees how every
call ended, refusals by authorization included: one line per call with `time`
(ISO 8601 UTC, when the call ended; a stream: when it ended), `server`, `caller`
(the principal, or whom authorization refused; null when nobody could be told),
`method`, `agent_id` and `kernel_id` (or `kernel_ids`) when the request has those
fields, `code` (the gRPC status name) and `duration` (seconds). `spawned` and
`terminated` are the lifecycle lines each side writes from where it learns of
kernels. Only those fields are ever written: never a request's env, argv, stdin,
labels, tokens or keys.

`last_entries` and `follow_entries` read a log back (`agenthost audit tail`).
Knows gRPC status codes, principals and request field names; nothing of agents,
kernels' records or servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from common.interceptors import CallHook
from common.limits import MAX_ID_LENGTH
from common.principal import CALLER, CALLER_NOTE, CallerNote

if TYPE_CHECKING:
    Ctx = grpc.aio.ServicerContext[Any, Any]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_BACKUPS = 5
MAX_REASON = 200  # characters of a termination reason written (backends' words)
MAX_KERNEL_IDS = 4096  # ids of one request written (the largest batch a daemon allows)


# ------------------------------------------------------------------- writing


class AuditLog:
    """One server's audit file: entries go through a queue to a writer thread.

    Opening and closing touch the disk: call them in a thread
    (`await AuditLog.open(...)`, `await log.aclose()`).
    """

    def __init__(self, path: Path, server: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.server = server
        _make_directory(path.parent)
        try:
            handler = _PrivateRotatingFile(path, maxBytes=max_bytes, backupCount=backups)
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot open the audit log {path}: {exc.strerror or exc}"
            ) from None
        handler.setFormatter(_JsonLines())
        self._handler = handler
        entries: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        # A logger of this file's own, never registered by name: a process may serve
        # several servers (agenthost up, tests), each with its own file.
        self._logger = logging.Logger(f"agenthost.audit.{server}", logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(_Enqueue(entries))
        self._listener = logging.handlers.QueueListener(entries, handler)
        self._listener.start()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        server: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> AuditLog:
        """The log at path (made 0600, its directory 0700 if new), its writer started."""
        return await asyncio.to_thread(cls, path, server, max_bytes, backups)

    def write(self, entry: dict[str, Any]) -> None:
        """Queue one line (time and server are added); never blocks on the disk."""
        if self._closed:
            return
        # makeRecord, not logger.info: no caller frame lookup, no message formatting.
        self._logger.handle(
            self._logger.makeRecord(self._logger.name, logging.INFO, "", 0, entry, (), None)
        )

    def call(
        self,
        method: str,
        caller: str,
        agent_id: str | None,
        kernel: str | list[str] | None,
        code: str,
        duration: float,
    ) -> None:
        """The line of one call, however it ended."""
        entry: dict[str, Any] = {
            "event": "call",
            "caller": caller or None,
            "method": method,
            "agent_id": agent_id,
        }
        entry["kernel_ids" if isinstance(kernel, list) else "kernel_id"] = kernel
        entry["code"] = code
        entry["duration"] = round(duration, 6)
        self.write(entry)

    def spawned(
        self,
        agent_id: str,
        kernel_id: str,
        uid: int | None,
        cores: Sequence[int],
        ports: Mapping[str, int],
    ) -> None:
        """A kernel started (created, or started again by a restart)."""
        self.write(
            {
                "event": "spawned",
                "caller": _current_caller(),
                "agent_id": agent_id,
                "kernel_id": kernel_id,
                "uid": uid,
                "cores": list(cores),
                "ports": dict(ports),
            }
        )

    def terminated(
        self,
        agent_id: str,
        kernel_id: str,
        exit_code: int | None,
        reason: str,
        end_reason: str,
    ) -> None:
        """A kernel ended: its exit code when known, the backend's words, and why in one word."""
        self.write(
            {
                "event": "terminated",
                "caller": _current_caller(),
                "agent_id": agent_id,
                "kernel_id": kernel_id,
                "exit_code": exit_code,
                "reason": reason[:MAX_REASON],
                "end_reason": end_reason,
            }
        )

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the file (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._listener.stop()
        self._handler.close()

    async def aclose(self) -> None:
        """close, in a thread."""
        await asyncio.to_thread(self.close)


def _current_caller() -> str | None:
    """The principal of the call during which a lifecycle event happened (None: none)."""
    principal = CALLER.get()
    return str(principal) if principal is not None else None


def _make_directory(directory: Path) -> None:
    """directory, made 0700 (with its missing parents) when it does not exist."""
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)  # whatever the umask


class _Enqueue(logging.handlers.QueueHandler):
    """Enqueue the record as it is: the entry is encoded in the writer's thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _JsonLines(logging.Formatter):
    """One JSON object per record: time, server, then the entry's fields."""

    def format(self, record: logging.LogRecord) -> str:
        # The rotating handler formats each record twice (size check, then write).
        line: str | None = getattr(record, "audit_line", None)
        if line is None:
            when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="microseconds")
            server = record.name.rpartition(".")[2]
            entry = {"time": when.replace("+00:00", "Z"), "server": server, **record.msg}  # type: ignore[dict-item]
            line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True)
            record.audit_line = line
        return line


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating file whose every part is created mode 0600."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(
            self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.fchmod(fd, 0o600)
        return open(fd, "a", encoding="utf-8")  # the handler closes it

    _failing = False  # the last write failed: said once, until one succeeds again
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if self._failing and not self._failed_now:
            self._failing = False
            log.warning("audit log %s: writing again", self.baseFilename)

    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk must not print a traceback per call: say it once per outage.
        self._failed_now = True
        if not self._failing:
            self._failing = True
            log.error("audit log %s: cannot write: %s", self.baseFilename, sys.exc_info()[1])


# ---------------------------------------------------------------------- calls


@dataclass(slots=True)
class _Call:
    """One call in flight: when it started, what it named, who it turned out to be."""

    started: float
    context: Any
    agent_id: str | None
    kernel: str | list[str] | None
    note: CallerNote
    token: Any


class AuditHook(CallHook):
    """Writes one line per call when it ends; placed outermost, it sees refusals too."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Note the start, the ids the request names, and a slot for the caller."""
        note = CallerNote()
        try:
            agent_id, kernel = request_ids(request)
        except Exception:  # outside the error mapping: a fault here must not fail the call
            log.exception("audit: cannot read the ids of a %s request", method)
            agent_id, kernel = None, None
        return _Call(time.monotonic(), context, agent_id, kernel, note, CALLER_NOTE.set(note))

    def leave(self, method: str, state: Any) -> None:
        """Write the call's line (a stream's when it has ended)."""
        if state is None:
            return
        call: _Call = state
        with contextlib.suppress(ValueError):  # reset in another context: nothing to undo
            CALLER_NOTE.reset(call.token)
        self.audit.call(
            method,
            call.note.caller,
            call.agent_id,
            call.kernel,
            _code_name(call.context),
            time.monotonic() - call.started,
        )


def _code_name(context: Any) -> str:
    """How the call ended: the code set on context, else what is being raised through it.

    Called from the wrappers' `finally`: a cancelled call (the client went away,
    or its deadline passed) ends with CancelledError raised, no code set.
    """
    code = context.code()
    if code is not None:
        return code.name if isinstance(code, grpc.StatusCode) else _NAMES.get(code, str(code))
    raised = sys.exc_info()[1]
    if raised is None:
        return "OK"
    if isinstance(raised, asyncio.CancelledError | GeneratorExit):
        remaining = context.time_remaining()
        return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
    return "UNKNOWN"


_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class _IdFields:
    """Which fields of a request message name an agent or kernels."""

    agent_id: bool
    kernel_id: bool
    kernel_ids: bool  # repeated string
    spec: bool  # a KernelSpec (its kernel_id)
    specs: bool  # repeated KernelSpec (their kernel_ids)


_ID_FIELDS: dict[type, _IdFields] = {}


def request_ids(request: Any) -> tuple[str | None, str | list[str] | None]:
    """The agent_id and the kernel id (or, for a batch, ids) a request names.

    None where the message has no such field; ids longer than any valid one are cut.
    """
    kind = type(request)
    fields = _ID_FIELDS.get(kind)
    if fields is None:
        fields = _ID_FIELDS[kind] = _id_fields(request)
    agent_id = _short(request.agent_id) if fields.agent_id else None
    kernel: str | list[str] | None = None
    if fields.kernel_id:
        kernel = _short(request.kernel_id)
    elif fields.kernel_ids:
        kernel = [_short(k) for k in request.kernel_ids[:MAX_KERNEL_IDS]]
    elif fields.specs:
        kernel = [_short(s.kernel_id) for s in request.kernels[:MAX_KERNEL_IDS] if s.kernel_id]
    elif fields.spec:
        kernel = _short(request.spec.kernel_id) if request.HasField("spec") else ""
    return agent_id, kernel


def _id_fields(request: Any) -> _IdFields:
    descriptor = getattr(request, "DESCRIPTOR", None)
    if descriptor is None:
        return _IdFields(False, False, False, False, False)
    by_name = descriptor.fields_by_name

    def has(name: str, repeated: bool, message: str | None = None) -> bool:
        field = by_name.get(name)
        if field is None or _is_repeated(field) != repeated:
            return False
        if message is None:
            return bool(field.type == field.TYPE_STRING)
        return field.message_type is not None and field.message_type.name == message

    return _IdFields(
        agent_id=has("agent_id", False),
        kernel_id=has("kernel_id", False),
        kernel_ids=has("kernel_ids", True),
        spec=has("spec", False, "KernelSpec"),
        specs=has("kernels", True, "KernelSpec"),
    )


def _is_repeated(field: Any) -> bool:
    return bool(field.is_repeated)


def _short(value: str) -> str:
    return value if len(value) <= MAX_ID_LENGTH else value[:MAX_ID_LENGTH] + "..."


# -------------------------------------------------------------------- reading


def log_parts(path: Path) -> list[Path]:
    """The log's files that exist, oldest first: path.N ... path.1, path."""
    rotated = []
    n = 1
    while (part := path.with_name(f"{path.name}.{n}")).exists():
        rotated.append(part)
        n += 1
    return [*reversed(rotated), *([path] if path.exists() else [])]


def parse_line(line: bytes | str) -> dict[str, Any] | None:
    """The entry of one line, or None for a line that is not one (cut short, damaged)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def concerns_kernel(entry: Mapping[str, Any], kernel_id: str) -> bool:
    """The entry names kernel_id (as its kernel_id or among its kernel_ids)."""
    if entry.get("kernel_id") == kernel_id:
        return True
    ids = entry.get("kernel_ids")
    return isinstance(ids, list) and kernel_id in ids


@dataclass(frozen=True)
class Tail:
    """The last entries of a log, oldest first, and where the live file ended then."""

    entries: list[dict[str, Any]]
    offset: int  # bytes of the live file read: following starts there
    skipped: int  # lines that were not entries


def last_entries(path: Path, count: int, kernel_id: str | None = None) -> Tail:
    """The last count entries (naming kernel_id, if given) across the rotated parts."""
    found: list[dict[str, Any]] = []
    skipped = 0
    offset = _end_of_last_line(path)
    for part in reversed(log_parts(path)):
        if len(found) >= count:
            break
        end = offset if part == path else None
        for line in _lines_backwards(part, end):
            entry = parse_line(line)
            if entry is None:
                skipped += 1
                continue
            if kernel_id is None or concerns_kernel(entry, kernel_id):
                found.append(entry)
                if len(found) >= count:
                    break
    found.reverse()
    return Tail(found, offset, skipped)


def _end_of_last_line(path: Path, block: int = 1 << 16) -> int:
    """The byte just after the live file's last complete line (a line being written
    is left for following to read whole)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0
    with f:
        position = f.seek(0, os.SEEK_END)
        while position > 0:
            start = max(0, position - block)
            f.seek(start)
            newline = f.read(position - start).rfind(b"\n")
            if newline >= 0:
                return start + newline + 1
            position = start
    return 0


def _lines_backwards(path: Path, end: int | None = None, block: int = 1 << 16) -> Iterator[bytes]:
    """The non-empty lines of path before byte end, last first, read in blocks from the end."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        position = f.seek(0, os.SEEK_END) if end is None else end
        rest = b""
        while position > 0:
            start = max(0, position - block)
            f.seek(start)
            chunk = f.read(position - start) + rest
            position = start
            lines = chunk.split(b"\n")
            rest = lines[0]  # may continue in the block before
            for line in reversed(lines[1:]):
                if line:
                    yield line
        if rest:
            yield rest


def follow_entries(
    path: Path, offset: int, poll: float = 0.25, stop: Callable[[], bool] | None = None
) -> Iterator[dict[str, Any] | None]:
    """Entries appended to path from byte offset on, as they come, across rotations.

    Yields None for a line that is not an entry. A partly written line waits for
    its end. `stop()` returning true ends the loop (tests); otherwise it runs until
    interrupted.
    """
    handle = None
    inode = None
    pending = b""
    try:
        while stop is None or not stop():
            if handle is None:
                try:
                    handle = path.open("rb")
                except FileNotFoundError:
                    time.sleep(poll)
                    continue
                inode = os.fstat(handle.fileno()).st_ino
                handle.seek(offset)
            data = handle.read()
            if data:
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    if line:
                        yield parse_line(line)
                continue
            try:
                current = path.stat()
            except FileNotFoundError:
                current = None
            if current is not None and (current.st_ino != inode or current.st_size < handle.tell()):
                # Rotated (or replaced): what the old file held is read; the new one from 0.
                handle.close()
                handle, offset, pending = None, 0, b""
                continue
            time.sleep(poll)
    finally:
        if handle is not None:
            handle.close()
