"""`docker exec` with streamed output, stdin, a timeout and the exit code.

Output is yielded as the engine delivers it (stdout and stderr apart). The
engine cannot kill an exec'd process, so on timeout the process tree is killed
by pid when the engine is local; a remote engine's process is left to finish and
the result says it timed out. Also the demultiplexing of a container's logs.
Knows the engine's exec and log framing; nothing of agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
from collections.abc import AsyncIterator
from typing import Any

import psutil
from aiodocker.exceptions import DockerError
from aiodocker.stream import Stream

from common.errors import AgentHostError, FailedPrecondition
from daemon.backends.base import ExecEvent, ExecExit, ExecOutput
from daemon.backends.docker.engine import Engine, is_not_found

HEADER = struct.Struct(">BxxxL")  # the engine's frame header: stream, size
SETTLE_ATTEMPTS = 250  # polls for an exec's exit code once its output ended
SETTLE_INTERVAL = 0.02
TIMED_OUT_CODE = 137  # reported when a timed-out process's own code cannot be had


def demultiplex(raw: bytes) -> bytes:
    """The payloads of the engine's framed stdout/stderr stream, in order."""
    out = bytearray()
    view = memoryview(raw)
    offset = 0
    while offset + HEADER.size <= len(view):
        _, size = HEADER.unpack_from(view, offset)
        offset += HEADER.size
        out += view[offset : offset + size]
        offset += size
    return bytes(out)


class Demultiplexer:
    """The engine's framed stream decoded piece by piece, as chunks arrive."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, raw: bytes) -> bytes:
        """The payload of every frame completed by raw (partial frames wait)."""
        self._pending += raw
        out = bytearray()
        offset = 0
        view = memoryview(self._pending)
        while offset + HEADER.size <= len(view):
            _, size = HEADER.unpack_from(view, offset)
            if offset + HEADER.size + size > len(view):
                break
            out += view[offset + HEADER.size : offset + HEADER.size + size]
            offset += HEADER.size + size
        view.release()
        del self._pending[:offset]
        return bytes(out)


async def run(
    engine: Engine,
    container_id: str,
    kernel_id: str,
    argv: list[str],
    stdin: bytes,
    timeout: float,
) -> AsyncIterator[ExecEvent]:
    """Run argv in the container, yielding output chunks, then the ExecExit."""
    container = engine.client.containers.container(container_id)
    try:
        with engine.call("exec"):
            exec_ = await container.exec(argv, stdout=True, stderr=True, stdin=bool(stdin))
    except DockerError as exc:
        if is_not_found(exc) or exc.status == 409:
            raise FailedPrecondition(
                f"kernel {kernel_id!r}: its container is not running ({exc.message})"
            ) from None
        raise AgentHostError(
            f"docker engine at {engine.url}: cannot exec in kernel {kernel_id!r}: {exc.message}"
        ) from None
    stream: Stream = exec_.start(detach=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else None
    timed_out = False
    try:
        with engine.call("exec"):
            await stream._init()
            if stdin:
                await stream.write_in(stdin)
                _close_stdin(stream)
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    with engine.call("exec output"):
                        message = await stream.read_out()
            except TimeoutError:
                timed_out = True
                break
            if message is None:
                break
            yield ExecOutput("stderr" if message.stream == 2 else "stdout", message.data)
    finally:
        await stream.close()
    if timed_out:
        await _kill(engine, exec_)
    yield ExecExit(exit_code=await _exit_code(engine, exec_, timed_out), timed_out=timed_out)


def _close_stdin(stream: Stream) -> None:
    """Half-close the hijacked connection: the process reads EOF after its stdin."""
    response = stream._resp
    transport = response.connection.transport if response and response.connection else None
    if transport is not None and transport.can_write_eof():
        transport.write_eof()


async def _inspect(engine: Engine, exec_: Any) -> dict[str, Any]:
    with engine.call("exec inspect"):
        info: dict[str, Any] = await exec_.inspect()
    return info


async def _kill(engine: Engine, exec_: Any) -> None:
    """End a timed-out exec'd process and its children (local engines only)."""
    if not engine.is_local:
        return
    pid = int((await _inspect(engine, exec_)).get("Pid") or 0)
    if pid <= 0:
        return
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


async def _exit_code(engine: Engine, exec_: Any, timed_out: bool) -> int:
    for _ in range(SETTLE_ATTEMPTS):
        info = await _inspect(engine, exec_)
        if not info.get("Running") and info.get("ExitCode") is not None:
            return int(info["ExitCode"])
        await asyncio.sleep(SETTLE_INTERVAL)
    return TIMED_OUT_CODE if timed_out else -1
