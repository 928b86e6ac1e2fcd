"""Exec in a local kernel: streamed output, stdin, a timeout and the exit code.

The command starts through the same launcher as the kernel, with the same plan:
the kernel's cgroups, cores, rlimits, working directory, uid and gid, and
environment; in a session of its own, so that on timeout its whole process
group is killed. It is spawned in a thread; its pipes and its exit (a pidfd)
are then read on the event loop. Output is yielded as produced, stdout and
stderr apart. A command that cannot start exits 127 with the reason on stderr.
Knows processes; nothing of agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Literal

from daemon.backends.base import ExecEvent, ExecExit, ExecOutput
from daemon.backends.local.launcher import Launcher, LaunchPlan
from daemon.backends.local.process import killpg, wait_child
from daemon.backends.local.spawn import spawn_piped

CHUNK = 65536  # bytes read from a pipe at a time


async def run(
    launcher: Launcher, plan: LaunchPlan, env: dict[str, str], stdin: bytes, timeout: float
) -> AsyncIterator[ExecEvent]:
    """Run plan, yielding output chunks, then the ExecExit."""
    piped = await asyncio.to_thread(spawn_piped, launcher, plan, env)
    loop = asyncio.get_running_loop()
    exited = asyncio.create_task(wait_child(piped.pid))
    queue: asyncio.Queue[ExecOutput | None] = asyncio.Queue()
    transports: list[asyncio.BaseTransport] = []
    readers: list[tuple[asyncio.StreamReader, Literal["stdout", "stderr"]]] = []
    files = [os.fdopen(fd, mode, 0) for fd, mode in ((piped.stdout, "rb"), (piped.stderr, "rb"))]
    stdin_file = os.fdopen(piped.stdin, "wb", 0)
    try:
        for file, name in zip(files, ("stdout", "stderr"), strict=True):
            reader = asyncio.StreamReader(limit=CHUNK)
            transport, _ = await loop.connect_read_pipe(_protocol_of(reader), file)
            transports.append(transport)
            readers.append((reader, name))  # type: ignore[arg-type]
        writer: asyncio.StreamWriter | None = None
        if stdin:
            wtransport, protocol = await loop.connect_write_pipe(
                asyncio.streams.FlowControlMixin, stdin_file
            )
            transports.append(wtransport)
            writer = asyncio.StreamWriter(wtransport, protocol, None, loop)
        else:
            stdin_file.close()
    except BaseException:
        for f in (*files, stdin_file):
            f.close()
        killpg(piped.pid, signal.SIGKILL)
        await asyncio.shield(exited)
        raise

    async def pump(reader: asyncio.StreamReader, name: Literal["stdout", "stderr"]) -> None:
        while chunk := await reader.read(CHUNK):
            queue.put_nowait(ExecOutput(name, chunk))
        queue.put_nowait(None)

    async def feed(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            writer.write(stdin)
            await writer.drain()
            writer.close()

    tasks = [asyncio.create_task(pump(reader, name)) for reader, name in readers]
    if writer is not None:
        tasks.append(asyncio.create_task(feed(writer)))
    deadline = time.monotonic() + timeout if timeout > 0 else None
    timed_out = False
    try:
        open_streams = 2
        while open_streams:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                timed_out = True
                break
            try:
                item = await asyncio.wait_for(queue.get(), timeout=remaining)
            except TimeoutError:
                timed_out = True
                break
            if item is None:
                open_streams -= 1
            else:
                yield item
        if timed_out:
            killpg(piped.pid, signal.SIGKILL)
        code = await asyncio.shield(exited)
        yield ExecExit(exit_code=128 - code if code < 0 else code, timed_out=timed_out)
    finally:
        if not exited.done():
            killpg(piped.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await asyncio.shield(exited)
        for task in tasks:
            task.cancel()
        for opened in transports:
            opened.close()


def _protocol_of(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)
