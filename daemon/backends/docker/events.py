"""The engine's event stream, turned into one awaitable exit per container.

`ExitWatcher.wait(container_id)` returns the container's `Exit` once the engine
reports it died (exit code, or "OOMKilled" when the memory limit killed it). The
stream is opened on the first wait and is connected *before* the container is
inspected, so an exit that happens in between is never missed. When the stream
breaks (the engine went away) every pending wait fails with `Unavailable`; the
agent's reconcile loop waits again once the engine answers.
Knows containers and engine events; nothing of agents' slots, ports or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiodocker.exceptions import DockerError

from common.errors import AgentHostError, Unavailable
from common.kernel_events import EndReason
from daemon.backends.base import Exit
from daemon.backends.docker.engine import Engine, is_not_found

log = logging.getLogger(__name__)

# How long to look for the exit code of a container the engine said died but whose
# state is not final yet (it can lag the event by a moment).
SETTLE_ATTEMPTS = 50
SETTLE_INTERVAL = 0.02


def exit_from_state(state: Mapping[str, Any]) -> Exit:
    """How a container ended, from the `State` of its inspection."""
    code = state.get("ExitCode")
    if state.get("OOMKilled"):
        return Exit(exit_code=code or 137, reason="OOMKilled", end=EndReason.OOM_KILLED)
    if state.get("Error"):
        return Exit(exit_code=code, reason=f"failed: {state['Error']}")
    if isinstance(code, int) and code > 128:
        with contextlib.suppress(ValueError):
            return Exit(exit_code=code, reason=f"killed by {signal.Signals(code - 128).name}")
    return Exit(exit_code=code if isinstance(code, int) else None, reason="exited")


def event_filters(labels: Sequence[str]) -> dict[str, list[str]]:
    """The engine-side filter: die events of containers carrying every label in labels."""
    return {"type": ["container"], "event": ["die"], "label": list(labels)}


class ExitWatcher:
    """One event stream per engine client; one future per watched container."""

    def __init__(self, engine: Engine, labels: Sequence[str]) -> None:
        self.engine = engine
        self.filters = event_filters(labels)
        self._exits: dict[str, asyncio.Future[Exit]] = {}
        self._stream: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait(self, container_id: str) -> Exit:
        """Return when the container has ended; Unavailable when the engine is lost."""
        exit_ = self._exits.get(container_id)
        if exit_ is None or _failed(exit_):
            exit_ = asyncio.get_running_loop().create_future()
            self._exits[container_id] = exit_
            self._spawn(self._arm(container_id, exit_))
        return await asyncio.shield(exit_)

    def has_exited(self, container_id: str) -> bool:
        """True when the container ended by itself (its exit is known)."""
        exit_ = self._exits.get(container_id)
        return exit_ is not None and exit_.done() and not _failed(exit_)

    def forget(self, container_id: str) -> None:
        """Drop what is known of a removed container."""
        exit_ = self._exits.pop(container_id, None)
        if exit_ is not None and not exit_.done():
            exit_.cancel()

    async def close(self) -> None:
        """Stop the stream; pending waits are cancelled (the containers keep running)."""
        if self._stream is not None:
            self._stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream
        for task in list(self._tasks):
            task.cancel()
        for exit_ in self._exits.values():
            if not exit_.done():
                exit_.cancel()
        self._exits.clear()

    # ---------------------------------------------------------------- details

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arm(self, container_id: str, exit_: asyncio.Future[Exit]) -> None:
        try:
            await self._ensure_stream()
            state = await self._state(container_id)
        except Unavailable as exc:
            _fail(exit_, exc)
            return
        except AgentHostError as exc:  # the engine misbehaves: as good as lost for now
            _fail(exit_, Unavailable(str(exc)))
            return
        if state is None:
            _resolve(exit_, Exit(exit_code=None, reason="container removed", end=EndReason.LOST))
        elif not state.get("Running"):
            _resolve(exit_, exit_from_state(state))

    async def _ensure_stream(self) -> None:
        if self._stream is None or self._stream.done():
            self._connected.clear()
            self._stream = asyncio.create_task(self._run(), name="docker events")
        stream = self._stream
        connected = asyncio.create_task(self._connected.wait())
        try:
            await asyncio.wait({stream, connected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            connected.cancel()
        if not self._connected.is_set():
            raise Unavailable(
                f"docker engine at {self.engine.url} does not answer (event stream closed)"
            )

    async def _run(self) -> None:
        reason = "event stream closed"
        try:
            with self.engine.call("events"):
                async with self.engine.stream(
                    "events", params={"filters": json.dumps(self.filters)}
                ) as response:
                    try:
                        self._connected.set()
                        async for line in response.content:
                            if line.strip():
                                self._on_event(json.loads(line))
                    finally:
                        response.close()
        except Unavailable as exc:
            reason = str(exc)
        except (aiohttp.ClientError, DockerError, ValueError) as exc:
            reason = f"docker engine at {self.engine.url}: event stream failed: {exc}"
        finally:
            self._connected.clear()
            lost = Unavailable(reason)
            for exit_ in self._exits.values():
                _fail(exit_, lost)
            if reason != "event stream closed":
                log.warning("%s", reason)

    def _on_event(self, event: Mapping[str, Any]) -> None:
        container_id = event.get("id") or event.get("Actor", {}).get("ID", "")
        exit_ = self._exits.get(container_id)
        if exit_ is None or exit_.done():
            return
        attributes = event.get("Actor", {}).get("Attributes", {})
        self._spawn(self._settle(container_id, exit_, attributes.get("exitCode")))

    async def _settle(
        self, container_id: str, exit_: asyncio.Future[Exit], event_code: str | None
    ) -> None:
        """Read the final state (exit code, OOMKilled) of a container that died."""
        state: Mapping[str, Any] | None = None
        with contextlib.suppress(AgentHostError):
            for _ in range(SETTLE_ATTEMPTS):
                state = await self._state(container_id)
                if state is None or not state.get("Running"):
                    break
                await asyncio.sleep(SETTLE_INTERVAL)
        if state is not None and not state.get("Running"):
            _resolve(exit_, exit_from_state(state))
        else:
            code = int(event_code) if event_code and event_code.isdigit() else None
            _resolve(exit_, Exit(exit_code=code, reason="exited"))

    async def _state(self, container_id: str) -> Mapping[str, Any] | None:
        try:
            with self.engine.call("inspect"):
                info = await self.engine.get_json(f"containers/{container_id}/json")
        except DockerError as exc:
            if is_not_found(exc):
                return None
            raise AgentHostError(
                f"docker engine at {self.engine.url}: inspect {container_id}: {exc.message}"
            ) from None
        state: Mapping[str, Any] = info.get("State", {})
        return state


def _resolve(exit_: asyncio.Future[Exit], value: Exit) -> None:
    if not exit_.done():
        exit_.set_result(value)


def _failed(exit_: asyncio.Future[Exit]) -> bool:
    return exit_.done() and (exit_.cancelled() or exit_.exception() is not None)


def _fail(exit_: asyncio.Future[Exit], exc: BaseException) -> None:
    if not exit_.done():
        exit_.set_exception(exc)
        exit_.exception()  # retrieved: nobody may be waiting right now
