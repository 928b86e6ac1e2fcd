"""Readiness probes, run from the manager: a TCP connect, or a command that exits 0.

`port`: connect to the member's node address and the host port of the named
port (what its peers will use). `exec`: the command runs inside the member
through its daemon's Execute, and must exit 0 within the probe's period. Each
probe answers None when ready, else why not, in words. Knows the client's agent
handle and sockets; nothing of groups' phases.
"""

from __future__ import annotations

import asyncio
import contextlib

from manager.client import AgentHandle
from manager.groups.document import Readiness

# One probe attempt never takes longer than this, whatever the period.
MAX_ATTEMPT_SECONDS = 5.0


async def tcp_accepts(host: str, port: int, timeout: float) -> str | None:
    """None if host:port accepts a TCP connection within timeout, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"{host}:{port} did not accept within {timeout:g}s"
    except OSError as exc:
        return f"{host}:{port} refused: {exc.strerror or exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def exec_succeeds(
    handle: AgentHandle, kernel_id: str, argv: list[str], timeout: float
) -> str | None:
    """None if argv exits 0 inside the kernel within timeout, else why not."""
    code: int | None = None
    try:
        async with asyncio.timeout(timeout + 1):
            async for message in handle.execute(kernel_id, argv, timeout=timeout):
                if message.HasField("exit"):
                    if message.exit.timed_out:
                        return f"{' '.join(argv)[:60]} timed out after {timeout:g}s"
                    code = message.exit.exit_code
    except TimeoutError:
        return f"{' '.join(argv)[:60]} did not finish within {timeout:g}s"
    except Exception as exc:  # the daemon's answer, in words: the next probe may succeed
        return f"{' '.join(argv)[:60]} could not run: {exc}"
    if code == 0:
        return None
    return f"{' '.join(argv)[:60]} exited with {code}"


async def probe(
    readiness: Readiness,
    handle: AgentHandle,
    kernel_id: str,
    host: str,
    ports: dict[str, int],
) -> str | None:
    """One attempt of readiness on a member: None when ready, else why not."""
    attempt = min(max(readiness.period, 0.5), MAX_ATTEMPT_SECONDS)
    if readiness.port is not None:
        port = ports.get(readiness.port)
        if not port:
            return f"port {readiness.port!r} has no host port"
        return await tcp_accepts(host, port, attempt)
    assert readiness.exec_ is not None
    return await exec_succeeds(handle, kernel_id, list(readiness.exec_), attempt)
