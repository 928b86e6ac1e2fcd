"""daemon/backends/logfiles.py: a log's tail costs what it returns; logs stay capped."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.backends import logfiles
from daemon.backends.logfiles import BLOCK, LogTail, read_tail, rotate, rotated


@dataclass(frozen=True)
class Tail:
    name: str
    content: bytes
    lines: int
    max_bytes: int
    expected: LogTail


TAILS = [
    Tail("last-line", b"a\nb\nc\n", 1, 100, LogTail(b"c\n", False)),
    Tail("last-two", b"a\nb\nc\n", 2, 100, LogTail(b"b\nc\n", False)),
    Tail("no-final-newline", b"a\nb\nc", 1, 100, LogTail(b"c", False)),
    Tail("more-lines-than-there-are", b"a\nb\n", 9, 100, LogTail(b"a\nb\n", False)),
    Tail("everything", b"a\nb\nc\n", 0, 100, LogTail(b"a\nb\nc\n", False)),
    Tail("everything-past-max-bytes", b"a\nb\nc\n", 0, 3, LogTail(b"\nc\n", True)),
    Tail(
        "one-long-line-past-max-bytes", b"x" * 500 + b"\n", 1, 10, LogTail(b"x" * 9 + b"\n", True)
    ),
    Tail("empty", b"", 3, 100, LogTail(b"", False)),
]


class TestReadTail:
    @pytest.mark.parametrize("case", TAILS, ids=[c.name for c in TAILS])
    def test_gives_the_last_lines_within_max_bytes(self, tmp_path: Path, case: Tail) -> None:
        path = tmp_path / "kernel.log"
        path.write_bytes(case.content)
        assert read_tail(path, case.lines, case.max_bytes) == case.expected

    def test_no_log_is_empty(self, tmp_path: Path) -> None:
        assert read_tail(tmp_path / "kernel.log", 5, 100) == LogTail(b"", False)

    def test_the_rotated_part_comes_first(self, tmp_path: Path) -> None:
        path = tmp_path / "kernel.log"
        rotated(path).write_bytes(b"old1\nold2\n")
        path.write_bytes(b"new1\n")
        assert read_tail(path, 2, 100).data == b"old2\nnew1\n"
        assert read_tail(path, 0, 100).data == b"old1\nold2\nnew1\n"

    def test_a_300mb_log_is_not_read_whole_for_tail_lines_1(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "kernel.log"
        with path.open("wb") as f:
            f.truncate(300 << 20)  # sparse: 300 MB of output, cheap to make
            f.seek(0, os.SEEK_END)
            f.write(b"\nthe last line\n")
        read = 0
        original = Path.open

        def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
            handle = original(self, *args, **kwargs)
            real_read = handle.read

            def counted(n: int = -1) -> bytes:
                nonlocal read
                data = real_read(n)
                read += len(data)
                return data

            handle.read = counted  # type: ignore[method-assign]
            return handle

        monkeypatch.setattr(Path, "open", counting_open)
        assert read_tail(path, 1, 1 << 20).data == b"the last line\n"
        assert read <= BLOCK


class TestRotate:
    def test_a_log_past_its_cap_moves_aside_and_the_writer_goes_on(self, tmp_path: Path) -> None:
        path = tmp_path / "kernel.log"
        writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(writer, b"x" * 2000)
            assert rotate(path, 1000)
            os.write(writer, b"after\n")
        finally:
            os.close(writer)
        assert path.read_bytes() == b"after\n"
        assert rotated(path).read_bytes() == b"x" * 2000
        assert not rotate(path, 1000)  # under the cap now

    def test_no_cap_means_no_rotation(self, tmp_path: Path) -> None:
        path = tmp_path / "kernel.log"
        path.write_bytes(b"x" * 5000)
        assert not rotate(path, 0)


class TestStream:
    async def test_streams_from_the_start_then_follows_until_the_kernel_ends(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(logfiles, "FOLLOW_INTERVAL", 0.01)
        path = tmp_path / "kernel.log"
        path.write_bytes(b"one\n")
        alive = True
        got: list[bytes] = []

        async def read() -> None:
            async for chunk in logfiles.stream(path, 0, True, lambda: alive):
                got.append(chunk)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.05)
        with path.open("ab") as f:
            f.write(b"two\n")
        await asyncio.sleep(0.05)
        alive = False
        await asyncio.wait_for(reader, 5)
        assert b"".join(got) == b"one\ntwo\n"

    async def test_without_follow_it_ends_at_the_end(self, tmp_path: Path) -> None:
        path = tmp_path / "kernel.log"
        path.write_bytes(b"a" * (3 * BLOCK + 5))
        chunks = [c async for c in logfiles.stream(path, 0, False, lambda: True)]
        assert b"".join(chunks) == b"a" * (3 * BLOCK + 5) and len(chunks) == 4

    async def test_tail_lines_start_near_the_end(self, tmp_path: Path) -> None:
        path = tmp_path / "kernel.log"
        path.write_bytes(b"1\n2\n3\n")
        chunks = [c async for c in logfiles.stream(path, 1, False, lambda: False)]
        assert b"".join(chunks) == b"3\n"
