"""Exec in a kernel's pod through the API's exec subresource: streamed output, stdin, timeout.

The session is the channel websocket (`v5.channel.k8s.io`, else v4) of the
official client, which blocks: it runs in a thread of its own that hands each
chunk to the loop as it arrives (stdout and stderr apart), so output is yielded
as produced. stdin is written, then its channel closed (v5; a v4 server has no
way to say "end of stdin"). The exit code comes from the error channel's
Status, as the kubelet writes it. On timeout, or when the caller stops reading,
the session is closed: the kubelet then ends the exec'd command (the stand-in's
and CRI runtimes' behaviour on a closed stream) and the result says it timed
out. Knows the exec protocol; nothing of agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL

from common.errors import AgentHostError, FailedPrecondition, Unavailable
from daemon.backends.base import ExecEvent, ExecExit, ExecOutput
from daemon.backends.kubernetes.api import KubeApi, Refusal
from daemon.backends.kubernetes.podstatus import CONTAINER

POLL = 0.1  # seconds between checks for a stop or the deadline while the command is quiet
STDIN_CHUNK = 65536  # bytes per stdin message
TIMED_OUT_CODE = 137  # what a timed-out command is reported as (its own code is never known)
CANNOT_START = 126  # a command the runtime could not start
NOT_FOUND = 127  # a command the runtime could not find

_Item = ExecEvent | BaseException


def exit_code(status_text: bytes) -> tuple[int, bytes]:
    """The exit code in the error channel's Status, and anything to show on stderr.

    A command that could not start is an error Status of the runtime; it is
    reported like a shell reports it (127 not found, 126 otherwise), its message
    on stderr.
    """
    try:
        status = json.loads(status_text)
    except ValueError:
        status = None
    if not isinstance(status, dict):
        raise ValueError(f"the exec ended without an exit status ({status_text[:200]!r})")
    if status.get("status") == "Success":
        return 0, b""
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                return int(cause["message"]), b""
    message = str(status.get("message") or "the command could not run")
    code = NOT_FOUND if "not found" in message or "no such file" in message else CANNOT_START
    return code, message.encode() + b"\n"


class _Session(threading.Thread):
    """One exec, read in its own thread, its events put on the loop's queue."""

    def __init__(
        self,
        api: KubeApi,
        pod: str,
        kernel_id: str,
        argv: list[str],
        stdin: bytes,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[_Item],
    ) -> None:
        super().__init__(name=f"kubernetes-exec {kernel_id}", daemon=True)
        self.api = api
        self.pod = pod
        self.kernel_id = kernel_id
        self.argv = argv
        self.stdin = stdin
        self.timeout = timeout
        self.loop = loop
        self.queue = queue
        self.stopped = threading.Event()

    def _put(self, item: _Item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def run(self) -> None:
        try:
            self._put(self._run())
        except AgentHostError as exc:
            self._put(exc)
        except Refusal as refusal:
            self._put(
                FailedPrecondition(
                    f"kernel {self.kernel_id!r}: its pod does not take an exec now: "
                    f"{refusal.message}"
                )
                if refusal.code in (400, 404)
                else refusal.domain_error(f"kernel {self.kernel_id!r}: exec")
            )
        except Exception as exc:  # the websocket broke in some other way
            self._put(self.api.unavailable("exec", exc))

    def _run(self) -> ExecExit:
        deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
        session = self.api.blocking(
            "exec",
            lambda: self.api.open_exec(self.pod, CONTAINER, self.argv, stdin=bool(self.stdin)),
        )
        try:
            if self.stdin:
                for start in range(0, len(self.stdin), STDIN_CHUNK):
                    session.write_stdin(self.stdin[start : start + STDIN_CHUNK])
                session.close_channel(0)
            while session.is_open():
                if self.stopped.is_set():
                    return ExecExit(exit_code=TIMED_OUT_CODE, timed_out=True)
                wait = POLL
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return ExecExit(exit_code=TIMED_OUT_CODE, timed_out=True)
                session.update(timeout=wait)
                self._forward(session)
            self._forward(session)
            code, message = self._exit(session.read_channel(ERROR_CHANNEL))
            if message:
                self._put(ExecOutput("stderr", message))
            return ExecExit(exit_code=code)
        finally:
            with contextlib.suppress(Exception):
                session.close()

    def _forward(self, session: Any) -> None:
        data = session.read_channel(STDOUT_CHANNEL)
        if data:
            self._put(ExecOutput("stdout", bytes(data)))
        data = session.read_channel(STDERR_CHANNEL)
        if data:
            self._put(ExecOutput("stderr", bytes(data)))

    def _exit(self, status_text: bytes) -> tuple[int, bytes]:
        try:
            return exit_code(status_text)
        except ValueError as exc:
            raise Unavailable(
                f"kubernetes API server at {self.api.url}: exec in kernel {self.kernel_id!r} "
                f"was cut: {exc}"
            ) from None


async def run(
    api: KubeApi, pod: str, kernel_id: str, argv: list[str], stdin: bytes, timeout: float
) -> AsyncIterator[ExecEvent]:
    """Run argv in the pod's kernel container, yielding output chunks, then the ExecExit."""
    queue: asyncio.Queue[_Item] = asyncio.Queue()
    session = _Session(api, pod, kernel_id, argv, stdin, timeout, asyncio.get_running_loop(), queue)
    session.start()
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if isinstance(item, ExecExit):
                return
    finally:
        session.stopped.set()  # the caller went away: close the session
