"""The exec websocket: the `v5.channel.k8s.io` / `v4.channel.k8s.io` remotecommand protocol.

Every websocket message is one channel byte then data: 0 stdin (client to server),
1 stdout, 2 stderr, 3 error (one JSON `Status` when the command ends), 4 resize
(`{"Width": w, "Height": h}`). v5 adds channel 255: `[255, n]` closes channel n (the
client closes stdin that way; v4 has no way to say "end of stdin" short of closing the
connection). The protocol is the first one the client offers that the server supports,
as the apiserver chooses; the official Python client offers v5 then v4.

The command runs as a local process (in a pty when `tty=true`; stderr is then bypassed,
as the kubelet does). Its exit code goes on the error channel as the kubelet writes it:
`{"status": "Success"}` or `NonZeroExitCode` with a cause `ExitCode` whose message is the
code. A command that cannot start is an `InternalError` Status worded as containerd
words it. This module knows nothing of pods or routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import secrets
import signal
import struct
import termios
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSMsgType, web

from tests.kubeapi.status import internal_error, success_status

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
SUPPORTED_PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


@dataclass(frozen=True)
class ExecOptions:
    """What the client asked for in the query string."""

    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def exit_status(code: int, command: tuple[str, ...]) -> dict[str, object]:
    """The error-channel Status for an exit code."""
    if code == 0:
        return success_status()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
        f"[{' '.join(command)}], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def start_failure(command: tuple[str, ...], error: OSError) -> dict[str, object]:
    """The Status containerd gives for a command that cannot be started."""
    what = error.strerror or str(error)
    if isinstance(error, FileNotFoundError):
        what = "executable file not found in $PATH"
    return internal_error(
        f"error executing command in container: failed to exec in container: failed to start "
        f'exec "{secrets.token_hex(32)}": OCI runtime exec failed: exec failed: unable to start '
        f'container process: exec: "{command[0]}": {what}: unknown'
    )


class ExecSession:
    """One exec: a local process wired to the channels of a prepared websocket."""

    def __init__(
        self, ws: web.WebSocketResponse, options: ExecOptions, env: dict[str, str], cwd: Path
    ) -> None:
        self.ws = ws
        self.options = options
        self.env = env
        self.cwd = cwd
        self.v5 = ws.ws_protocol == V5
        self.process: asyncio.subprocess.Process | None = None
        self._master: int | None = None

    async def _send(self, channel: int, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(bytes([channel]) + data)

    async def run(self) -> None:
        """Run the command to its end (or until the client goes away), then close."""
        opts = self.options
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        slave: int | None = None
        try:
            if opts.tty:
                self._master, slave = pty.openpty()
                stdin = stdout = stderr = slave
            else:
                stdin = pipe if opts.stdin else devnull
                stdout = pipe if opts.stdout else devnull
                stderr = pipe if opts.stderr else devnull
            self.process = await asyncio.create_subprocess_exec(
                *opts.command,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            await self._send(ERROR, json.dumps(start_failure(opts.command, exc)).encode())
            await self._finish()
            return
        finally:
            if slave is not None:
                os.close(slave)
        reader = asyncio.create_task(self._read_client())
        try:
            if self._master is not None:
                await self._pump_pty(self._master)
            else:
                await asyncio.gather(
                    self._pump(self.process.stdout, STDOUT), self._pump(self.process.stderr, STDERR)
                )
            code = await self.process.wait()
            exit_code = code if code >= 0 else 128 - code
            await self._send(ERROR, json.dumps(exit_status(exit_code, opts.command)).encode())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            await self._finish()

    async def _finish(self) -> None:
        self.kill()
        if self._master is not None:
            os.close(self._master)
            self._master = None
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()

    def kill(self) -> None:
        """Kill the command's process group if it still runs."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def _pump(self, stream: asyncio.StreamReader | None, channel: int) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            await self._send(channel, chunk)

    async def _pump_pty(self, master: int) -> None:
        while True:
            try:
                chunk = await asyncio.to_thread(os.read, master, 65536)
            except OSError:  # EIO once the child side is closed
                return
            if not chunk:
                return
            await self._send(STDOUT, chunk)

    def _close_stdin(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
        elif self._master is not None:
            with contextlib.suppress(OSError):
                os.write(self._master, b"\x04")  # EOF on a terminal is ^D

    async def _write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            await asyncio.to_thread(os.write, self._master, data)
        elif self.process is not None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(data)
                await self.process.stdin.drain()

    def _resize(self, data: bytes) -> None:
        try:
            size = json.loads(data)
            width, height = int(size["Width"]), int(size["Height"])
        except (ValueError, KeyError, TypeError):
            return
        if self._master is not None:
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    async def _read_client(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
            elif msg.type == WSMsgType.TEXT:
                data = msg.data.encode("utf-8")
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and self.options.stdin:
                await self._write_stdin(payload)
            elif channel == CLOSE and self.v5 and payload[:1] == bytes([STDIN]):
                self._close_stdin()
            elif channel == RESIZE:
                self._resize(payload)
        # The client closed the connection: nobody will read the output any more, so the
        # command ends here (the kubelet tears the session down the same way).
        self._close_stdin()
        self.kill()
