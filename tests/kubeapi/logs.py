"""Container logs: an append-only buffer of timestamped lines per container instance.

Writers are the test (`write_log` hook) or a container's local main process; readers
are the `pods/{name}/log` handler, once (`tailLines`, `sinceSeconds`, `limitBytes`,
`timestamps`) or following new lines until the instance ends. Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def rfc3339_nano(when: datetime) -> str:
    """`2024-05-01T10:00:00.123456000Z`, the timestamp form of `timestamps=true`."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass(frozen=True)
class LogLine:
    """One line as the runtime recorded it."""

    time: datetime
    data: bytes

    def render(self, timestamps: bool) -> bytes:
        """The bytes a log reader gets for this line."""
        if not timestamps:
            return self.data
        return rfc3339_nano(self.time).encode() + b" " + self.data


class ContainerLog:
    """The log of one container instance; `close()` when the instance ends."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.closed = False
        self._changed = asyncio.Event()

    def write(self, data: bytes, when: datetime | None = None) -> None:
        """Append `data`, split into lines (a trailing partial line is a line of its own)."""
        stamp = when or datetime.now(UTC)
        for piece in data.splitlines(keepends=True):
            self.lines.append(LogLine(stamp, piece))
        self._wake()

    def close(self) -> None:
        """The instance ended: followers finish after draining."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def start_index(self, tail_lines: int | None, since_seconds: int | None) -> int:
        """Index of the first line a reader should get."""
        start = 0
        if since_seconds is not None:
            cutoff = datetime.now(UTC) - timedelta(seconds=since_seconds)
            start = next(
                (i for i, line in enumerate(self.lines) if line.time >= cutoff), len(self.lines)
            )
        if tail_lines is not None:
            start = max(start, len(self.lines) - tail_lines)
        return start

    async def follow(self, start: int) -> AsyncIterator[LogLine]:
        """Lines from `start` on, waiting for new ones until the log is closed."""
        index = start
        while True:
            while index < len(self.lines):
                yield self.lines[index]
                index += 1
            if self.closed:
                return
            await self._changed.wait()
