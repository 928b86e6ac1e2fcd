"""A kernel's output file in its working directory: bounded reading, streaming, rotation.

Local kernels write `kernel.log` as they run; the docker backend keeps the output of
an ended container there. `read_tail` reads only the end it returns (backwards, a
block at a time), so the last line of a 300 MB log costs one block, and never more
than max_bytes. `stream` gives the output in chunks from the start (or from the last
lines), and with follow keeps going while the kernel lives. `rotate` caps a file a
process writes with O_APPEND: past max_bytes its content moves to `kernel.log.1`
(the previous one is dropped) and the file is truncated in place, so the writer goes
on at the new end; at most about twice max_bytes stays on disk, plus what is written
between two checks. Every function here does blocking I/O: call them in a thread
(`stream` does so itself). Knows files; nothing of kernels, agents or backends.

A kernel may own the directory its log lies in while the daemon reading or rotating
it is root: every file here is opened without following a symlink and used only if
it is a regular file, so a kernel cannot point the daemon at another file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BLOCK = 64 << 10
FOLLOW_INTERVAL = 0.25  # seconds between looks for new output while following


@dataclass(frozen=True)
class LogTail:
    """The end of a log, and whether more was there than returned."""

    data: bytes
    truncated: bool


def rotated(path: Path) -> Path:
    """Where the older part of path is kept after a rotation."""
    return path.with_name(path.name + ".1")


def open_regular(path: Path, writable: bool = False) -> BinaryIO | None:
    """path opened for reading (and writing) if it is a regular file; None if absent, a
    symlink, a fifo or a device (never blocks, never follows a link)."""
    mode = os.O_RDWR if writable else os.O_RDONLY
    try:
        fd = os.open(path, mode | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "r+b" if writable else "rb")


def read_tail(path: Path, lines: int, max_bytes: int) -> LogTail:
    """The last `lines` lines (0: everything kept) of path and its rotated part, at most
    the last max_bytes of them (`truncated` says so); empty when there is no log."""
    blocks: list[bytes] = []  # from the end backwards
    size = newlines = 0
    cut_short = False  # stopped reading before the start because max_bytes was reached
    for part in (path, rotated(path)):
        if (lines and newlines > lines) or cut_short:
            break
        f = open_regular(part)
        if f is None:
            continue
        with f:
            end = f.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - BLOCK)
                f.seek(start)
                block = f.read(end - start)
                end = start
                blocks.append(block)
                size += len(block)
                newlines += block.count(b"\n")
                if lines and newlines > lines:
                    break  # enough for the last `lines` lines, whatever ends the output
                if size > max_bytes:
                    cut_short = True
                    break
    data = b"".join(reversed(blocks))
    if lines:
        data = last_lines(data, lines)
    if len(data) > max_bytes:
        return LogTail(data[-max_bytes:], True)
    return LogTail(data, False)


def last_lines(data: bytes, n: int) -> bytes:
    """The last n lines of data (a final newline ends the last line)."""
    index = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(n):
        index = data.rfind(b"\n", 0, index)
        if index < 0:
            return data
    return data[index + 1 :]


async def stream(
    path: Path, tail_lines: int, follow: bool, alive: Callable[[], bool]
) -> AsyncIterator[bytes]:
    """path's content in chunks (from the start, or its last tail_lines lines); with
    follow, then what is appended until alive() is false and nothing more comes."""
    if tail_lines:
        start = await asyncio.to_thread(read_tail, path, tail_lines, 1 << 62)
        if start.data:
            yield start.data
        offset = await asyncio.to_thread(_size, path)
    else:
        async for chunk in _read_all(rotated(path)):
            yield chunk
        offset = 0
    while True:
        grew = False
        async for chunk in _read_all(path, offset):
            offset += len(chunk)
            grew = True
            yield chunk
        if not follow or (not grew and not alive()):
            return
        size = await asyncio.to_thread(_size, path)
        if size < offset:  # rotated under us: go on from the start of the fresh file
            offset = 0
        if not grew:
            await asyncio.sleep(FOLLOW_INTERVAL)


async def _read_all(path: Path, offset: int = 0) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open_regular, path)
    if f is None:
        return
    try:
        await asyncio.to_thread(f.seek, offset)
        while chunk := await asyncio.to_thread(f.read, BLOCK):
            yield chunk
    finally:
        f.close()


def _size(path: Path) -> int:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    return st.st_size if stat.S_ISREG(st.st_mode) else 0


def rotate(path: Path, max_bytes: int) -> bool:
    """Move path's content to its rotated part and truncate it, once it is past max_bytes.

    Copy-then-truncate keeps the writer's descriptor valid (it writes with O_APPEND).
    """
    if not max_bytes or _size(path) <= max_bytes:
        return False
    source = open_regular(path, writable=True)
    if source is None:
        return False
    with source:
        older = rotated(path)
        with contextlib.suppress(FileNotFoundError):
            older.unlink()  # a link the kernel left there goes, not what it points to
        fd = os.open(
            older, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        os.fchown(fd, *_owner(source.fileno()))
        with os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target)
        os.ftruncate(source.fileno(), 0)
    return True


def _owner(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_uid, st.st_gid
