"""The audit trail: an append-only JSON-lines file of every call and every kernel's life.

`AuditLog` writes one JSON object per line through the stdlib logging machinery:
a logger of its own (not propagating, so no other handler sees a line and no line
reaches the process's log) whose `QueueHandler` only enqueues, and a
`QueueListener` thread that, a few times a second, takes whatever is queued,
encodes it and writes it in one go through a `RotatingFileHandler` (rotated by
size: `audit.log.1` is the newest rotated part). So the event loop never waits for
the disk, nor wakes another thread per call. The file is mode 0600, a directory
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
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
WRITE_INTERVAL = 0.05  # seconds between the writer's rounds: lines reach the file this late


# ------------------------------------------------------------------- writing


class AuditLog:
    """One server's audit file: entries go through a queue to a writer thread.

    Opening and closing touch the disk: call them in a thread
    (`await AuditLog.open(...)`, `await log.aclose()`).
    """

    def __init__(self, path: Path, server: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.server = server
        try:
            _make_directory(path.parent)
            handler = _PrivateRotatingFile(path, maxBytes=max_bytes, backupCount=backups)
        except OSError as exc:
            raise OSError(f"cannot open the audit log {path}: {exc.strerror or exc}") from None
        handler.setFormatter(_JsonLines())
        self._handler = handler
        entries: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        # A logger of this file's own, never registered by name: a process may serve
        # several servers (agenthost up, tests), each with its own file.
        self._logger = logging.Logger(f"agenthost.audit.{server}", logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(_Enqueue(entries))
        self._listener = _BatchingListener(entries, handler, WRITE_INTERVAL)
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
        # Not logger.info: no caller frame lookup, no message formatting, no process
        # and thread names; the record carries the entry and the time only.
        self._logger.handle(_Entry(self._logger.name, entry))

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
        if not self._closed:
            # The fields as they are: the writer's thread makes the entry of them.
            fields = (method, caller, agent_id, kernel, code, duration)
            self._logger.handle(_Entry(self._logger.name, fields))

    def spawned(
        self,
        agent_id: str,
        kernel_id: str,
        uid: int | None,
        cores: Sequence[int],
        ports: Mapping[str, int],
    ) -> None:
        """A kernel started (created, or started again by a restart), by the caller of the
        call during which it happened, if any."""
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
        """A kernel ended: its exit code when known, the backend's words, and why in one word.

        No caller: an end is often seen by a watch or a reconcile, whose tasks carry
        the context of whatever call started them; the call that destroyed a kernel
        has a line of its own.
        """
        self.write(
            {
                "event": "terminated",
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


class _Entry(logging.LogRecord):
    """A record of one audit entry: what the queue, the writer and the handlers read.

    LogRecord's own constructor gathers what an audit line never holds (caller
    frame, process and thread names) and costs several times this one.
    """

    # The same for every entry: class attributes, not set per record.
    args = ()
    levelno = logging.INFO
    levelname = "INFO"
    exc_info = None
    exc_text = None
    stack_info = None

    def __init__(self, name: str, entry: dict[str, Any] | tuple[Any, ...]) -> None:
        self.name = name
        self.msg = entry
        self.created = time.time()


class _Batch(_Entry):
    """The entries the writer found queued at once, written with one write."""

    def __init__(self, name: str, entries: list[logging.LogRecord]) -> None:
        super().__init__(name, ())
        self.entries = entries


class _Enqueue(logging.handlers.QueueHandler):
    """Enqueue the record as it is: the entry is encoded in the writer's thread."""

    def handle(self, record: logging.LogRecord) -> bool:
        # The queue is thread-safe by itself: no handler lock, no filters to run.
        self.queue.put_nowait(record)
        return True

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _BatchingListener(logging.handlers.QueueListener):
    """Wakes every `interval` seconds and hands the handler all that was queued meanwhile.

    The writer never sleeps in the queue: a put is then a plain append (no wake-up
    of another thread per call), and the writer takes the interpreter lock and
    calls into the kernel a few times a second instead of once per line, so it
    barely competes with the event loop's thread. A line reaches the file within
    an interval; stopping writes everything queued.
    """

    MAX_BATCH = 4096

    def __init__(
        self, entries: queue.SimpleQueue[Any], handler: logging.Handler, interval: float
    ) -> None:
        super().__init__(entries, handler)
        self._entries = entries
        self._interval = interval
        self._wake = threading.Event()  # set by stop(): no waiting out the interval
        self._stop_met = False  # the stop sentinel came while draining a batch

    def enqueue_sentinel(self) -> None:
        super().enqueue_sentinel()
        self._wake.set()

    def dequeue(self, block: bool) -> Any:
        stop = logging.handlers.QueueListener._sentinel  # type: ignore[attr-defined]
        while not self._stop_met:
            batch: list[logging.LogRecord] = []
            while len(batch) < self.MAX_BATCH:
                try:
                    record = self._entries.get_nowait()
                except queue.Empty:
                    break
                if record is stop:
                    self._stop_met = True
                    break
                batch.append(record)
            if batch:
                return _Batch(batch[0].name, batch)
            if not self._stop_met:
                self._wake.wait(self._interval)
        return stop


class _JsonLines(logging.Formatter):
    """One JSON object per entry: time, server, then the entry's fields.

    A call's line (most lines) is put together from its fields, each string
    encoded by the json module's own escaping: several times cheaper than
    json.dumps of a dict, and the same JSON (the tests parse every line back).
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        head = f'{{"time":"{self._time(record.created)}","server":"{_server(record.name)}",'
        if isinstance(record.msg, tuple):
            return head + _call_fields(*record.msg)
        return head + json.dumps(record.msg, separators=(",", ":"), ensure_ascii=True)[1:]

    def _time(self, created: float) -> str:
        """created in ISO 8601 UTC to the microsecond (the seconds' part kept from the last)."""
        seconds, micros = divmod(round(created * 1_000_000), 1_000_000)
        if seconds != self._second:
            self._second = seconds
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{self._stamp}.{micros:06d}Z"


def _server(logger_name: str) -> str:
    return logger_name.rpartition(".")[2]


_quote = json.encoder.encode_basestring_ascii


def _string_or_null(value: str | None) -> str:
    return "null" if value is None else str(_quote(value))


def _call_fields(
    method: str,
    caller: str,
    agent_id: str | None,
    kernel: str | list[str] | None,
    code: str,
    duration: float,
) -> str:
    """The fields of one call's line (see `AuditLog.call`), closing the object."""
    if isinstance(kernel, list):
        kernel_field = '"kernel_ids":[' + ",".join(map(_quote, kernel)) + "]"
    else:
        kernel_field = '"kernel_id":' + _string_or_null(kernel)
    return (
        f'"event":"call","caller":{_string_or_null(caller or None)},"method":{_quote(method)},'
        f'"agent_id":{_string_or_null(agent_id)},{kernel_field},"code":{_quote(code)},'
        f'"duration":{round(duration, 6)!r}}}'
    )


class _PrivateRotatingFile(logging.handlers.RotatingFileHandler):
    """A rotating file whose every part is created mode 0600, written a batch at a time."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(
            self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        os.fchmod(fd, 0o600)
        return open(fd, "a", encoding="ascii")  # the handler closes it

    _failing = False  # the last write failed: said once, until one succeeds again

    def emit(self, record: logging.LogRecord) -> None:
        """Write a batch's lines; rotate before the line that would pass maxBytes."""
        entries = record.entries if isinstance(record, _Batch) else [record]
        try:
            lines = [self.format(entry) + "\n" for entry in entries]
            if self.stream is None:
                self.stream = self._open()
            size = self.stream.seek(0, os.SEEK_END)
            chunk: list[str] = []
            for line in lines:
                # ensure_ascii: characters are bytes. A line longer than maxBytes still
                # goes whole into a file of its own.
                if self.maxBytes > 0 and size > 0 and size + len(line) > self.maxBytes:
                    self.stream.write("".join(chunk))
                    self.stream.flush()
                    self.doRollover()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            self.stream.write("".join(chunk))
            self.stream.flush()
        except Exception:
            self.handleError(record)
            return
        if self._failing:
            self._failing = False
            log.warning("audit log %s: writing again", self.baseFilename)

    def close(self) -> None:
        """Close the file; lines a full disk kept out of it are lost (said when they were),
        never raised here: a server stopping on a full disk must still stop cleanly."""
        try:
            super().close()
        except OSError as exc:  # the buffered rest could not be written; the file is closed
            log.error("audit log %s: the last lines were not written: %s", self.baseFilename, exc)

    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk must not print a traceback per call: say it once per outage.
        if not self._failing:
            self._failing = True
            log.error("audit log %s: cannot write: %s", self.baseFilename, sys.exc_info()[1])


# ---------------------------------------------------------------------- calls


class _Call(CallerNote):
    """One call in flight: when it started, what it named; as the call's caller note,
    who it turned out to be."""

    __slots__ = ("agent_id", "context", "kernel", "started", "token")

    def __init__(self, context: Any, agent_id: str | None, kernel: str | list[str] | None) -> None:
        self.caller = ""
        self.started = time.monotonic()
        self.context = context
        self.agent_id = agent_id
        self.kernel = kernel
        self.token = CALLER_NOTE.set(self)


class AuditHook(CallHook):
    """Writes one line per call when it ends; placed outermost, it sees refusals too."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit

    def enter(self, method: str, request: Any, context: Ctx) -> Any:
        """Note the start, the ids the request names, and a slot for the caller."""
        try:
            agent_id, kernel = request_ids(request)
        except Exception:  # outside the error mapping: a fault here must not fail the call
            log.exception("audit: cannot read the ids of a %s request", method)
            agent_id, kernel = None, None
        return _Call(context, agent_id, kernel)

    def leave(self, method: str, state: Any) -> None:
        """Write the call's line (a stream's when it has ended)."""
        if state is None:
            return
        call: _Call = state
        # A stream's generator closed by the loop runs this in another context, where
        # there is nothing to undo. (Not contextlib.suppress: a microsecond a call.)
        try:  # noqa: SIM105
            CALLER_NOTE.reset(call.token)
        except ValueError:
            pass
        self.audit.call(
            method,
            call.caller,
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
