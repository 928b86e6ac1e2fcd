"""Exec in a local kernel: streamed output, stdin, a timeout and the exit code.

The command runs through the launcher in the kernel's context (its cores, its
memory cgroup or rlimit, its working directory and environment), in a session of
its own, so that on timeout its whole process group is killed. Output is yielded
as produced, stdout and stderr apart. Knows processes; nothing of agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from typing import Literal

from daemon.backends.base import ExecEvent, ExecExit, ExecOutput, LaunchSpec
from daemon.backends.local.handle import ProcessHandle
from daemon.backends.local.process import kernel_env, killpg, launch_plan, launcher_argv

CHUNK = 65536  # bytes read from a pipe at a time


async def run(
    handle: ProcessHandle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
) -> AsyncIterator[ExecEvent]:
    """Run argv in the kernel's context, yielding output chunks, then the ExecExit."""
    plan = launch_plan(launch, handle.cgroup, argv)
    proc = await asyncio.create_subprocess_exec(
        *launcher_argv(plan),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=kernel_env(launch),
        start_new_session=True,
    )
    queue: asyncio.Queue[ExecOutput | None] = asyncio.Queue()

    async def pump(stream: asyncio.StreamReader | None, name: Literal["stdout", "stderr"]) -> None:
        assert stream is not None
        while chunk := await stream.read(CHUNK):
            queue.put_nowait(ExecOutput(name, chunk))
        queue.put_nowait(None)

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if stdin:
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()

    tasks = [
        asyncio.create_task(pump(proc.stdout, "stdout")),
        asyncio.create_task(pump(proc.stderr, "stderr")),
        asyncio.create_task(feed()),
    ]
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
            killpg(proc.pid, signal.SIGKILL)
        code = await proc.wait()
        yield ExecExit(exit_code=128 - code if code < 0 else code, timed_out=timed_out)
    finally:
        if proc.returncode is None:
            killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        for task in tasks:
            task.cancel()
